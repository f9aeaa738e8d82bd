"""KServe V2 (Triton) inference bodies: JSON tensors and the binary tensor data extension.

A V2 body is a JSON object whose ``inputs`` (requests) or ``outputs`` (responses) list tensors
as ``{"name", "datatype", "shape", "data"}``. With Triton's binary extension the JSON part is
followed by raw tensor bytes: the ``Inference-Header-Content-Length`` HTTP header gives the JSON
part's length and each binary tensor carries ``parameters.binary_data_size``, in order. BYTES
elements are 4-byte little-endian lengths followed by the bytes.

The proxy forwards bodies untouched; this module only decodes them for the collector, off the
request path. :func:`pack` / :func:`unpack` store a dict of tensors in the same layout (a
length-prefixed JSON header, then the raw bytes), so stored records need no pickle.

Example:
    >>> import numpy as np
    >>> body = b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1,2],"data":[1.5,2]}]}'
    >>> decode(body, None, "inputs")["x"]
    array([[1.5, 2. ]], dtype=float32)
    >>> unpack(pack({"x": np.arange(3, dtype=np.int64), "s": np.array([b"hi"], dtype=object)}))
    {'x': array([0, 1, 2]), 's': array([b'hi'], dtype=object)}
"""

from __future__ import annotations

import gzip
import json
import struct
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_), "UINT8": np.dtype(np.uint8), "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32), "UINT64": np.dtype(np.uint64), "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16), "INT32": np.dtype(np.int32), "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16), "FP32": np.dtype(np.float32), "FP64": np.dtype(np.float64),
}
NAMES = {dtype: name for name, dtype in DTYPES.items()}


class BodyError(ValueError):
    """A body that is not a valid V2 inference body; the message says what is wrong."""


def decompress(body: bytes, encoding: str | None) -> bytes:
    """Undo a ``Content-Encoding`` of gzip or deflate (tritonclient can compress both ways)."""
    if not encoding or encoding == "identity":
        return body
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    raise BodyError(f"unsupported Content-Encoding {encoding!r}")


def decode(body: bytes, header_length: int | None, key: str) -> dict[str, np.ndarray]:
    """The tensors of a V2 request (``key="inputs"``) or response (``key="outputs"``)."""
    if header_length is None:
        header_length = len(body)
    if not 0 <= header_length <= len(body):
        raise BodyError(f"Inference-Header-Content-Length {header_length} is outside the body "
                        f"({len(body)} bytes)")
    try:
        header = json.loads(body[:header_length])
    except ValueError as exc:
        raise BodyError(f"the JSON part is not valid JSON: {exc}") from exc
    if not isinstance(header, dict) or not isinstance(header.get(key), list):
        raise BodyError(f"no '{key}' list in the body")
    offset = header_length
    tensors: dict[str, np.ndarray] = {}
    for spec in header[key]:
        if not isinstance(spec, dict):
            raise BodyError(f"an entry of '{key}' is not an object")
        name, datatype, shape = spec.get("name"), spec.get("datatype"), spec.get("shape")
        size = (spec.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            chunk = body[offset:offset + int(size)]
            if len(chunk) != int(size):
                raise BodyError(f"tensor {name!r}: binary data ends after {len(chunk)} of "
                                f"{size} bytes")
            offset += int(size)
            tensors[str(name)] = _from_bytes(chunk, str(datatype), shape)
        elif "data" in spec:
            tensors[str(name)] = _from_json(spec["data"], str(datatype), shape)
    return tensors


def _shape(shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise BodyError(f"shape {shape!r} is not a list of non-negative integers")
    return tuple(shape)


def _from_bytes(chunk: bytes, datatype: str, shape: Any) -> np.ndarray:
    dims = _shape(shape)
    if datatype == "BYTES":
        return _split_bytes(chunk).reshape(dims)
    if datatype not in DTYPES:
        raise BodyError(f"unsupported datatype {datatype!r}")
    array = np.frombuffer(chunk, dtype=DTYPES[datatype].newbyteorder("<"))
    try:
        return array.reshape(dims)
    except ValueError as exc:
        raise BodyError(f"{array.size} {datatype} values do not fit shape {list(dims)}") from exc


def _from_json(data: Any, datatype: str, shape: Any) -> np.ndarray:
    dims = _shape(shape)
    if datatype == "BYTES":
        flat = np.asarray(data, dtype=object).ravel()
        array = np.array([v.encode() if isinstance(v, str) else v for v in flat], dtype=object)
    elif datatype in DTYPES:
        array = np.asarray(data, dtype=DTYPES[datatype]).ravel()
    else:
        raise BodyError(f"unsupported datatype {datatype!r}")
    try:
        return array.reshape(dims)
    except ValueError as exc:
        raise BodyError(f"{array.size} {datatype} values do not fit shape {list(dims)}") from exc


def _split_bytes(chunk: bytes) -> np.ndarray:
    items, offset = [], 0
    while offset < len(chunk):
        if offset + 4 > len(chunk):
            raise BodyError("BYTES tensor: truncated length prefix")
        (length,) = struct.unpack_from("<I", chunk, offset)
        offset += 4
        items.append(chunk[offset:offset + length])
        offset += length
    return np.array(items, dtype=object)


def _join_bytes(array: np.ndarray) -> bytes:
    parts = []
    for item in array.ravel():
        value = item.encode() if isinstance(item, str) else bytes(item)
        parts.append(struct.pack("<I", len(value)) + value)
    return b"".join(parts)


def pack(tensors: dict[str, np.ndarray]) -> bytes:
    """Tensors to bytes: 4-byte header length, JSON header, raw little-endian data."""
    specs, blobs = [], []
    for name, array in tensors.items():
        if array.dtype == object:
            datatype, blob = "BYTES", _join_bytes(array)
        elif array.dtype in NAMES:
            datatype = NAMES[array.dtype]
            blob = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
        else:
            raise BodyError(f"tensor {name!r}: unsupported dtype {array.dtype}")
        specs.append({"name": name, "datatype": datatype, "shape": list(array.shape),
                      "parameters": {"binary_data_size": len(blob)}})
        blobs.append(blob)
    header = json.dumps({"tensors": specs}).encode()
    return struct.pack("<I", len(header)) + header + b"".join(blobs)


def unpack(data: bytes) -> dict[str, np.ndarray]:
    """Inverse of :func:`pack`."""
    if len(data) < 4:
        raise BodyError("packed tensors: shorter than the 4-byte header length")
    (length,) = struct.unpack_from("<I", data)
    return decode(data[4:], length, "tensors")


def predicted_classes(outputs: bytes | None, classes: Sequence[str]) -> list[str | None]:
    """The class each row of a packed answer predicts: the argmax of its first output tensor,
    named by ``classes`` (the answering version's; ``None`` for an index beyond them). An
    undecodable or missing answer predicts nothing (``[]``).

    >>> predicted_classes(pack({"PROBS": np.array([[0.1, 0.9], [0.8, 0.2]])}), ["a", "b"])
    ['b', 'a']
    """
    if not outputs:
        return []
    try:
        scores = np.asarray(next(iter(unpack(outputs).values())))
    except (BodyError, StopIteration):
        return []
    if scores.dtype.kind not in "fiu":
        return []
    scores = scores.reshape(-1, scores.shape[-1]) if scores.ndim else scores.reshape(1, 1)
    return [classes[i] if i < len(classes) else None for i in scores.argmax(axis=1).tolist()]
