"""Binary weight patches: what changed between two versions of a model, small enough to ship to
replicas over thin links, and checked end to end.

A :class:`Patch` takes a model state (``name -> tensor``) from ``base_version`` to
``target_version``. Each changed tensor is either *sparse* (the flat indices whose bits changed
and their new values) or *full* (a new or reshaped tensor, e.g. a classifier head grown for new
classes); removed tensors are listed. Applying sets values (it never adds deltas), so the result
is bit-exact whatever the float arithmetic of the sender. A *snapshot* is the patch from the
empty state (``base_version`` 0, every tensor full).

Wire format (little-endian)::

    b"MCIP" | u16 format (1) | u16 header bytes | header (JSON, UTF-8) | body | sha256 (32 bytes)

The header names the versions, the model's metadata (template, classes...), the ``sha256`` of
the base and of the resulting state (:class:`StateDigest`) and, per tensor, its dtype, shape and
byte counts in the body. Per sparse tensor the body holds its indices, delta-encoded (first index,
then gaps) in the narrowest unsigned integer that holds them and zlib-compressed, then its
values as raw fp32, or fp16 for a patch made with ``values="fp16"`` (floating tensors only; the
resulting state is then the base with the fp16-rounded values, and ``target_sha256`` is that
state's).
The trailing sha256 covers every byte before it, so a corrupted patch is refused before use.

Sizes are reported two ways: as the DPU paper counts them, ``S_w * k * I + S_x(k) * I`` bits
(value bits per changed weight, plus the bits to say which ``k * I`` of the ``I`` weights
changed: ``log2(C(I, kI))``, an entropy bound), and as the real encoded bytes.

Example:
    >>> import torch
    >>> base = {"w": torch.zeros(1000), "b": torch.ones(3)}
    >>> target = {"w": base["w"].clone(), "b": base["b"].clone()}
    >>> target["w"][[3, 500, 999]] = torch.tensor([0.5, -1.0, 2.0])
    >>> patch = diff(base, target, base_version=1, target_version=2)
    >>> blob = encode(patch)
    >>> restored = apply(base, decode(blob))
    >>> state_sha256(restored) == state_sha256(target) == patch.target_sha256
    True
    >>> len(blob) < len(encode(snapshot(target, version=2))) / 5
    True
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

MAGIC = b"MCIP"
FORMAT_VERSION = 1
_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "float16": torch.float16, "float64": torch.float64,
    "bfloat16": torch.bfloat16, "int64": torch.int64, "int32": torch.int32,
    "int16": torch.int16, "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool}
_NAMES = {dtype: name for name, dtype in _DTYPES.items()}
_BITS_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}

State = dict[str, Tensor]
Values = Literal["fp32", "fp16"]


class PatchError(ValueError):
    """A patch that cannot be used: corrupt, malformed, or not for this state."""


@dataclass
class TensorChange:
    """How one tensor changes: ``indices`` (flat, sorted) and their new ``values``; or, with
    ``indices`` None, ``values`` is the whole new tensor."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    values: Tensor
    indices: Tensor | None = None

    @property
    def full(self) -> bool:
        return self.indices is None


@dataclass
class Patch:
    base_version: int
    target_version: int
    base_sha256: str
    target_sha256: str
    changes: list[TensorChange]
    removed: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    """Model metadata the receiver needs to rebuild the network (template, classes...)."""
    values: Values = "fp32"
    """How floating values travel: fp32, or fp16 (rounded by :func:`diff`)."""
    sequence: int = 0
    """Its place in the publisher's order (1, 2, ...): a rollback publishes an older model
    version as a newer patch, so receivers order patches by this, not by version."""

    @property
    def is_snapshot(self) -> bool:
        return self.base_version == 0

    def changed_weights(self) -> int:
        """Entries written by the patch (``k * I`` for a sparse update)."""
        return sum(int(c.values.numel()) for c in self.changes)


# -- the state checksum ------------------------------------------------------------------------

_BLOCK_BYTES = 256
_WORDS = _BLOCK_BYTES // 8
# A fixed odd constant per word position in a block, so that moving a word changes its hash.
_SALTS = (np.arange(1, _WORDS + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)) \
    | np.uint64(1)


def _bytes(tensor: Tensor) -> memoryview:
    flat = tensor.detach().contiguous().reshape(-1)
    if flat.dtype == torch.bfloat16:
        flat = flat.view(torch.int16)
    return memoryview(flat.numpy()).cast("B")


def _mix(words: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, elementwise (uint64, wrapping)."""
    words = words ^ (words >> np.uint64(30))
    words = words * np.uint64(0xBF58476D1CE4E5B9)
    words = words ^ (words >> np.uint64(27))
    words = words * np.uint64(0x94D049BB133111EB)
    return words ^ (words >> np.uint64(31))


def _blocks(tensor: Tensor, which: np.ndarray | None = None) -> np.ndarray:
    """The 64-bit hash of each 256-byte block of ``tensor``'s bytes (the last one zero-padded),
    or of the blocks numbered ``which``: the mixed words of a block, each salted by its
    position, summed."""
    raw = np.frombuffer(_bytes(tensor), dtype=np.uint8)
    count = max(1, -(-len(raw) // _BLOCK_BYTES))
    if len(raw) != count * _BLOCK_BYTES:  # a copy only for tensors not a whole number of blocks
        raw = np.concatenate([raw, np.zeros(count * _BLOCK_BYTES - len(raw), dtype=np.uint8)])
    words = raw.view(np.uint64).reshape(count, _WORDS)
    if which is not None:
        words = words[which]
    with np.errstate(over="ignore"):
        return _mix(words ^ _SALTS).sum(axis=1, dtype=np.uint64)


class StateDigest:
    """The checksum of a whole state, kept up to date as patches write into it.

    The state is cut, tensor by tensor, into 256-byte blocks; each block gets a 64-bit hash
    (its words mixed by splitmix64's finaliser, salted by position, summed); the checksum is the
    sha256 over, for each tensor by name, its name, dtype and shape and its blocks' hashes. A
    sparse patch changes few blocks, so :meth:`update` re-hashes only those: checking a patch of
    0.1% of an 11M-weight model costs milliseconds instead of hashing 44 MB. The block hash is
    not cryptographic (it catches corruption and mistakes, not an adversary); a patch's own
    bytes are covered by a real sha256 (:func:`decode`).
    """

    def __init__(self, state: State):
        self._meta = {name: (_NAMES[t.dtype], tuple(t.shape)) for name, t in state.items()}
        self._hashes = {name: _blocks(t) for name, t in state.items()}

    def update(self, state: State, patch: Patch) -> None:
        """Follow ``patch``, already applied to ``state``."""
        for name in patch.removed:
            self._meta.pop(name, None)
            self._hashes.pop(name, None)
        for change in patch.changes:
            tensor = state[change.name]
            if change.full or change.name not in self._hashes:
                self._meta[change.name] = (_NAMES[tensor.dtype], tuple(tensor.shape))
                self._hashes[change.name] = _blocks(tensor)
                continue
            assert change.indices is not None
            touched = np.unique(change.indices.numpy() * tensor.element_size() // _BLOCK_BYTES)
            self._hashes[change.name][touched] = _blocks(tensor, touched)

    def hexdigest(self) -> str:
        outer = hashlib.sha256()
        for name in sorted(self._hashes):
            dtype, shape = self._meta[name]
            outer.update(json.dumps([name, dtype, list(shape)]).encode())
            outer.update(self._hashes[name].tobytes())
        return outer.hexdigest()

    def copy(self) -> StateDigest:
        other = StateDigest({})
        other._meta = dict(self._meta)
        other._hashes = {name: hashes.copy() for name, hashes in self._hashes.items()}
        return other


def state_sha256(state: State) -> str:
    """The checksum of a whole state (see :class:`StateDigest`)."""
    return StateDigest(state).hexdigest()


# -- making and applying patches ---------------------------------------------------------------

def _changed(old: Tensor, new: Tensor) -> Tensor:
    """Flat indices whose bits differ (so -0.0 vs 0.0 and NaN payloads count as changes)."""
    view = _BITS_VIEW[old.element_size()]
    a, b = old.detach().reshape(-1), new.detach().reshape(-1)
    if a.dtype != torch.bool:
        a, b = a.view(view), b.view(view)
    return torch.nonzero(a != b, as_tuple=False).reshape(-1)


def diff(base: State, target: State, *, base_version: int, target_version: int,
         meta: dict[str, Any] | None = None, values: Values = "fp32") -> Patch:
    """The patch from ``base`` to ``target`` (only the entries whose bits changed). With
    ``values="fp16"`` the values of floating tensors are rounded to fp16, and the patch's
    ``target_sha256`` is of the state it actually produces."""
    changes = []
    for name in sorted(target):
        new = target[name].detach()
        old = base.get(name)
        if old is None or old.shape != new.shape or old.dtype != new.dtype:
            changes.append(TensorChange(name, tuple(new.shape), _NAMES[new.dtype],
                                        new.clone().reshape(-1)))
            continue
        indices = _changed(old, new)
        if len(indices):
            changes.append(TensorChange(name, tuple(new.shape), _NAMES[new.dtype],
                                        new.reshape(-1)[indices].clone(), indices))
    patch = Patch(base_version, target_version, state_sha256(base), "", changes,
                  sorted(set(base) - set(target)), dict(meta or {}), values)
    if values == "fp16":
        for change in patch.changes:
            if change.values.dtype in (torch.float32, torch.float64):
                change.values = change.values.to(torch.float16).to(change.values.dtype)
    patch.target_sha256 = state_sha256(apply(base, patch, check=False)) if values == "fp16" \
        else state_sha256(target)
    return patch


def snapshot(state: State, version: int, meta: dict[str, Any] | None = None) -> Patch:
    """The whole ``state`` as a patch from the empty state."""
    return diff({}, state, base_version=0, target_version=version, meta=meta)


def apply(state: State, patch: Patch, *, check: bool = True, inplace: bool = False,
          state_sha: str | None = None) -> State:
    """The state ``patch`` makes of ``state``; with ``check``, refuse a base or a result whose
    checksum differs from the patch's (:class:`PatchError`). ``state_sha``: the base's checksum
    when the caller knows it already (a replica verified it), so it is not computed again.
    ``inplace`` writes into the given tensors (the caller's own copy) instead of copying the
    changed ones."""
    if check and (state_sha or state_sha256(state)) != patch.base_sha256:
        raise PatchError(f"patch {patch.base_version}->{patch.target_version} is for another "
                         f"state (base checksum differs)")
    out: State = dict(state)
    for name in patch.removed:
        out.pop(name, None)
    for change in patch.changes:
        dtype = _DTYPES[change.dtype]
        if change.full:
            out[change.name] = change.values.to(dtype).reshape(change.shape).clone()
            continue
        current = out.get(change.name)
        if current is None or tuple(current.shape) != change.shape or current.dtype != dtype:
            raise PatchError(f"tensor '{change.name}': the patch expects {change.dtype} "
                             f"{list(change.shape)}, the state has "
                             f"{None if current is None else list(current.shape)}")
        tensor = current if inplace else current.clone()
        tensor.view(-1)[change.indices] = change.values.to(dtype)
        out[change.name] = tensor
    if check and state_sha256(out) != patch.target_sha256:
        raise PatchError(f"patch {patch.base_version}->{patch.target_version}: the result's "
                         f"checksum differs from the server's")
    return out


# -- the wire format ---------------------------------------------------------------------------

def _gap_width(gaps: np.ndarray) -> int:
    """Bytes per gap: the narrowest unsigned integer that holds the largest one."""
    top = int(gaps.max(initial=0))
    return next(width for width in (1, 2, 4, 8) if top < 1 << (8 * width))


def encode(patch: Patch) -> bytes:
    """The wire bytes of ``patch`` (see the module doc)."""
    body = bytearray()
    tensors = []
    for change in patch.changes:
        entry: dict[str, Any] = {"name": change.name, "shape": list(change.shape),
                                 "dtype": change.dtype, "count": int(change.values.numel())}
        if not change.full:
            assert change.indices is not None
            indices = change.indices.numpy().astype(np.int64)
            gaps = np.diff(indices, prepend=0)
            if len(gaps) and gaps[1:].min(initial=1) <= 0:
                raise ValueError(f"tensor '{change.name}': indices must be sorted and unique")
            width = _gap_width(gaps)
            packed = zlib.compress(gaps.astype(f"<u{width}").tobytes(), 6)
            entry["index_width"] = width
            entry["index_bytes"] = len(packed)
            body += packed
        stored = change.values.detach().reshape(-1)
        if patch.values == "fp16" and stored.dtype in (torch.float32, torch.float64):
            stored = stored.to(torch.float16)
        entry["value_dtype"] = _NAMES[stored.dtype]
        data = bytes(_bytes(stored))
        entry["value_bytes"] = len(data)
        body += data
        tensors.append(entry)
    header = json.dumps({"base_version": patch.base_version,
                         "target_version": patch.target_version,
                         "base_sha256": patch.base_sha256, "target_sha256": patch.target_sha256,
                         "sequence": patch.sequence, "removed": patch.removed,
                         "meta": patch.meta, "values": patch.values, "tensors": tensors},
                        separators=(",", ":")).encode()
    if len(header) > 0xFFFF:
        raise ValueError(f"patch header of {len(header)} bytes exceeds 65535 (too many tensors)")
    blob = MAGIC + struct.pack("<HH", FORMAT_VERSION, len(header)) + header + bytes(body)
    return blob + hashlib.sha256(blob).digest()


def decode(blob: bytes) -> Patch:
    """The patch in ``blob``; :class:`PatchError` naming what is wrong if it is not one."""
    if len(blob) < 8 + 32 or blob[:4] != MAGIC:
        raise PatchError("not a modelci-e patch (bad magic or too short)")
    content, trailer = blob[:-32], blob[-32:]
    if hashlib.sha256(content).digest() != trailer:
        raise PatchError("patch corrupt: its sha256 does not match its bytes")
    version, header_len = struct.unpack_from("<HH", content, 4)
    if version != FORMAT_VERSION:
        raise PatchError(f"patch format {version} is not supported (expected {FORMAT_VERSION})")
    try:
        header = json.loads(content[8:8 + header_len])
        offset = 8 + header_len
        changes = []
        for entry in header["tensors"]:
            dtype = _DTYPES[entry["value_dtype"]]
            count = int(entry["count"])
            indices = None
            if "index_bytes" in entry:
                packed = content[offset:offset + entry["index_bytes"]]
                offset += entry["index_bytes"]
                width = int(entry["index_width"])
                if width not in (1, 2, 4, 8):
                    raise PatchError(f"tensor '{entry['name']}': index width {width}")
                # Bounded: a crafted patch cannot inflate past what its count allows.
                raw_gaps = zlib.decompressobj().decompress(packed, count * width + 1)
                gaps = np.frombuffer(raw_gaps[:len(raw_gaps) // width * width],
                                     dtype=f"<u{width}")
                if len(gaps) != count:
                    raise PatchError(f"tensor '{entry['name']}': {len(gaps)} indices, "
                                     f"expected {count}")
                indices = torch.from_numpy(np.cumsum(gaps.astype(np.int64)))
            raw = content[offset:offset + entry["value_bytes"]]
            offset += entry["value_bytes"]
            view = torch.int16 if dtype == torch.bfloat16 else dtype
            values = torch.frombuffer(bytearray(raw), dtype=view) if raw else \
                torch.empty(0, dtype=view)
            if dtype == torch.bfloat16:
                values = values.view(torch.bfloat16)
            if values.numel() != count:
                raise PatchError(f"tensor '{entry['name']}': {values.numel()} values, "
                                 f"expected {count}")
            changes.append(TensorChange(entry["name"], tuple(entry["shape"]), entry["dtype"],
                                        values.to(_DTYPES[entry["dtype"]]), indices))
        if offset != len(content):
            raise PatchError(f"patch body has {len(content) - offset} bytes left over")
        return Patch(int(header["base_version"]), int(header["target_version"]),
                     header["base_sha256"], header["target_sha256"], changes,
                     list(header["removed"]), dict(header["meta"]),
                     "fp16" if header["values"] == "fp16" else "fp32", int(header["sequence"]))
    except PatchError:
        raise
    except (KeyError, ValueError, TypeError, zlib.error) as exc:
        raise PatchError(f"malformed patch: {type(exc).__name__}: {exc}") from None


def paper_bits(patch: Patch, value_bits: int = 32) -> float:
    """The patch's size as the DPU paper counts it: ``S_w * k * I + S_x(k) * I`` bits, with
    ``S_x(k) * I = log2(C(I, k * I))`` per tensor (which entries changed) and full tensors at
    ``S_w`` bits per entry."""
    bits = 0.0
    for change in patch.changes:
        k = int(change.values.numel())
        bits += value_bits * k
        if not change.full:
            total = math.prod(change.shape)
            bits += (math.lgamma(total + 1) - math.lgamma(k + 1)
                     - math.lgamma(total - k + 1)) / math.log(2)
    return bits
