"""Binary weight patches: what changed between two versions of a model, small enough to ship to
replicas over thin links, and checked end to end.

A :class:`Patch` takes a model state (``name -> tensor``) from ``base_version`` to
``target_version``. Each changed tensor is either *sparse* (the flat indices whose bits changed
and their new values) or *full* (a new or reshaped tensor, e.g. a classifier head grown for new
classes); removed tensors are listed. Applying sets values, so the result is bit-exact whatever
the float arithmetic of the sender; a ``q8`` patch (below) adds int8-coded differences in
float32, which is as exact on every IEEE machine. A *snapshot* is the patch from the empty state
(``base_version`` 0, every tensor full).

Wire format 2 (little-endian)::

    b"MCIP" | u16 format (2) | u8 packing | u32 packed bytes | u32 unpacked bytes
    | packed section | raw values | sha256 (32 bytes)

The packed section is stored as is, deflated or lzma'd (raw LZMA2), whichever is smallest, and
unpacks to::

    u32 header bytes | header (JSON) | base sha256 (32) | target sha256 (32)
    | index gaps (LEB128) | q8 tensors (f32 scale, int8 codes)

The header names the versions, the publication's sequence, the model's metadata (template,
classes...), removed tensors, the seed of a re-initialisation (``reinit``: the changes then
apply to :func:`fresh_state`, the fresh weights that seed gives, so Deep Partial Updating's
restart ships a seed, not the model) and, per changed tensor, ``[name, shape, dtype, count, layout,
codec]`` (layout ``s`` sparse or ``f`` full; codec the dtype its values travel in, or ``q8``).
The two checksums are of the base and of the resulting state (:class:`StateDigest`). Each sparse
tensor's indices are its first index then the gaps between them, as LEB128 varints (one byte
for a gap under 128), all tensors in one stream, so one compressor sees every index. Values
travel raw after the packed section (fp32 values do not compress), except q8 codes, which are
packed. ``values`` picks how floating values travel:

- ``fp32``: as they are (bit-exact);
- ``fp16``: rounded to fp16 (half the value bytes); the resulting state is the base with the
  rounded values, and ``target_sha256`` is that state's;
- ``q8``: each sparse float32 tensor's *differences* as int8 codes with one float32 scale per
  tensor (the largest difference / 127); an entry becomes ``old + code * scale`` and entries
  whose code is 0 are not sent. A quarter of the value bytes; the error per entry is at most
  half a scale step, so large changes travel almost exactly and the smallest are dropped.
  Whole (new or reshaped) tensors travel fp32.

The trailing sha256 covers every byte before it, so a corrupted patch is refused before use;
a packed section that claims to unpack to more than its packing can yield is refused before it
is unpacked. :func:`decode` also reads format 1 (a JSON header, zlib'd fixed-width gaps per
tensor), which earlier releases wrote.

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
import lzma
import math
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

MAGIC = b"MCIP"
FORMAT_VERSION = 2
_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "float16": torch.float16, "float64": torch.float64,
    "bfloat16": torch.bfloat16, "int64": torch.int64, "int32": torch.int32,
    "int16": torch.int16, "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool}
_NAMES = {dtype: name for name, dtype in _DTYPES.items()}
_BITS_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}

State = dict[str, Tensor]
Values = Literal["fp32", "fp16", "q8"]


class PatchError(ValueError):
    """A patch that cannot be used: corrupt, malformed, or not for this state."""


@dataclass
class TensorChange:
    """How one tensor changes: ``indices`` (flat, sorted) and their new ``values``; or, with
    ``indices`` None, ``values`` is the whole new tensor. With ``scale`` set (a ``q8`` patch's
    sparse float32 tensors), ``values`` are int8 codes of the change instead: each entry
    becomes ``old + code * scale``, in float32 arithmetic on both sides."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    values: Tensor
    indices: Tensor | None = None
    scale: float | None = None

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
    """How floating values travel: fp32, fp16 (rounded by :func:`diff`) or q8 (sparse float32
    changes as int8 codes of the difference, see :func:`diff`)."""
    sequence: int = 0
    """Its place in the publisher's order (1, 2, ...): a rollback publishes an older model
    version as a newer patch, so receivers order patches by this, not by version."""
    reinit: int | None = None
    """A re-initialisation (Deep Partial Updating's rule): the receiver regenerates the
    model's initial weights from this seed (:func:`fresh_state` of ``meta``) and applies the
    changes to those, so a restart from fresh weights ships a seed, not the whole model."""

    @property
    def is_snapshot(self) -> bool:
        return self.base_version == 0

    @property
    def rebuilds(self) -> bool:
        """Whether a receiver must rebuild the state (and its digest) rather than write into
        the one it holds: new or reshaped tensors, removed ones, or fresh weights (``reinit``);
        :meth:`StateDigest.update` follows only the other patches."""
        return any(c.full for c in self.changes) or bool(self.removed) \
            or self.reinit is not None

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


def fresh_state(meta: dict[str, Any], seed: int) -> State:
    """The initial weights a re-initialisation patch starts from: the network ``meta`` names
    (template, input shape, classes, params), built and then reset
    (:func:`~model_factory.sparse.fresh_weights`) under ``seed``; the same on every machine
    with the same torch."""
    from model_factory.sparse import fresh_weights
    from model_factory.templates.networks import build_network

    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = build_network(meta["template"], meta["input_shape"], len(meta["classes"]),
                                **meta.get("params", {}))
        return fresh_weights(net, seed)
    except (KeyError, TypeError, ValueError) as exc:
        raise PatchError(f"re-initialisation: the patch's model metadata does not name a "
                         f"network ({type(exc).__name__}: {exc})") from None


def diff(base: State, target: State, *, base_version: int, target_version: int,
         meta: dict[str, Any] | None = None, values: Values = "fp32",
         reinit: int | None = None) -> Patch:
    """The patch from ``base`` to ``target`` (only the entries whose bits changed). With
    ``values="fp16"`` the values of floating tensors are rounded to fp16, and the patch's
    ``target_sha256`` is of the state it actually produces. With ``reinit`` (a seed), the
    changes are from :func:`fresh_state` of ``meta`` and that seed instead of from ``base``
    (which the patch still names: receivers apply patches in order)."""
    base_sha = state_sha256(base)
    if reinit is not None:
        base = fresh_state(dict(meta or {}), reinit)
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
    if values == "q8":
        changes = [change for change in map(lambda c: _quantized(base, c), changes)
                   if change.values.numel() or change.full]
    patch = Patch(base_version, target_version, base_sha, "", changes,
                  sorted(set(base) - set(target)), dict(meta or {}), values, reinit=reinit)
    if values == "fp16":
        for change in patch.changes:
            if change.values.dtype in (torch.float32, torch.float64):
                change.values = change.values.to(torch.float16).to(change.values.dtype)
                if not change.full:  # entries the rounding leaves as they were: not sent
                    assert change.indices is not None
                    old = base[change.name].detach().reshape(-1)[change.indices]
                    keep = _changed(old, change.values)
                    change.values, change.indices = change.values[keep], change.indices[keep]
        patch.changes = [c for c in patch.changes if c.full or c.values.numel()]
    patch.target_sha256 = state_sha256(_apply_changes(base, patch, inplace=False)) \
        if values != "fp32" else state_sha256(target)
    return patch


def _quantized(base: State, change: TensorChange) -> TensorChange:
    """``change`` with its values as int8 codes of the difference (``scale`` = the largest
    absolute difference / 127, round to nearest); entries whose code is 0 are dropped. Whole
    tensors, non-float32 ones and non-finite differences keep exact values."""
    if change.full or change.dtype != "float32":
        return change
    assert change.indices is not None
    old = base[change.name].detach().reshape(-1)[change.indices]
    delta = change.values - old
    top = float(delta.abs().max()) if len(delta) else 0.0
    scale = torch.tensor(top / 127, dtype=torch.float32)
    if not math.isfinite(top) or float(scale) == 0.0 or not math.isfinite(float(scale)):
        return change
    codes = torch.round(delta / scale).clamp_(-127, 127).to(torch.int8)
    keep = codes != 0
    return TensorChange(change.name, change.shape, change.dtype, codes[keep],
                        change.indices[keep], float(scale))


def snapshot(state: State, version: int, meta: dict[str, Any] | None = None) -> Patch:
    """The whole ``state`` as a patch from the empty state."""
    return diff({}, state, base_version=0, target_version=version, meta=meta)


def apply(state: State, patch: Patch, *, check: bool = True, inplace: bool = False,
          state_sha: str | None = None) -> State:
    """The state ``patch`` makes of ``state``; with ``check``, refuse a base or a result whose
    checksum differs from the patch's (:class:`PatchError`). ``state_sha``: the base's checksum
    when the caller knows it already (a replica verified it), so it is not computed again.
    ``inplace`` writes into the given tensors (the caller's own copy) instead of copying the
    changed ones; a re-initialisation patch (``reinit``) starts from fresh weights instead,
    never from ``state``'s tensors."""
    if check and (state_sha or state_sha256(state)) != patch.base_sha256:
        raise PatchError(f"patch {patch.base_version}->{patch.target_version} is for another "
                         f"state (base checksum differs)")
    if patch.reinit is not None:
        state, inplace = fresh_state(patch.meta, patch.reinit), True
    out = _apply_changes(state, patch, inplace=inplace)
    if check and state_sha256(out) != patch.target_sha256:
        raise PatchError(f"patch {patch.base_version}->{patch.target_version}: the result's "
                         f"checksum differs from the server's")
    return out


def _apply_changes(state: State, patch: Patch, *, inplace: bool) -> State:
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
        if change.scale is not None:
            if dtype != torch.float32:
                raise PatchError(f"tensor '{change.name}': q8 codes for a {change.dtype} tensor")
            flat = tensor.view(-1)
            flat[change.indices] = flat[change.indices] + change.values.to(torch.float32) \
                * torch.tensor(change.scale, dtype=torch.float32)
        else:
            tensor.view(-1)[change.indices] = change.values.to(dtype)
        out[change.name] = tensor
    return out


# -- the wire format ---------------------------------------------------------------------------

_HEAD = struct.Struct("<4sHBII")  # magic, format, packing, packed bytes, unpacked bytes
_STORED, _ZLIB, _LZMA = 0, 1, 2
_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]
_LZMA_LIMIT = 1 << 20
"""lzma is tried only on packed sections up to 1 MiB (it is slow on large ones), and a decoder
refuses an lzma section that claims more."""
_ZLIB_RATIO = 1032
"""Deflate's largest expansion: a zlib section claiming more than this times its size is
refused before it is inflated."""
_MAX_VARINT = 10


def _varints(numbers: np.ndarray) -> bytes:
    """LEB128: 7 bits per byte, low bits first, the top bit set on all but a number's last byte
    (vectorised)."""
    numbers = numbers.astype(np.uint64)
    top = int(numbers.max(initial=0))
    if top < 0x80:  # every number one byte (gaps under 128: the common case)
        return numbers.astype(np.uint8).tobytes()
    lengths = np.ones(len(numbers), dtype=np.int64)
    for shift in range(7, top.bit_length(), 7):
        lengths += numbers >= np.uint64(1 << shift)
    ends = np.cumsum(lengths)
    out = np.empty(int(ends[-1]) if len(numbers) else 0, dtype=np.uint8)
    starts = ends - lengths
    for j in range(int(lengths.max(initial=0))):
        live = lengths > j
        low = (numbers[live] >> np.uint64(7 * j)) & np.uint64(0x7F)
        more = (lengths[live] > j + 1).astype(np.uint64) << np.uint64(7)
        out[starts[live] + j] = (low | more).astype(np.uint8)
    return out.tobytes()


def _read_varints(data: np.ndarray, count: int) -> tuple[np.ndarray, int]:
    """The first ``count`` LEB128 numbers of ``data`` (uint8) and the bytes they took."""
    if count == 0:
        return np.zeros(0, dtype=np.uint64), 0
    head = data[:count]
    if len(head) == count and int(head.max()) < 0x80:  # every number one byte (gaps < 128)
        return head.astype(np.uint64), count
    ends = np.flatnonzero(data[:count * _MAX_VARINT] < 0x80)[:count]
    if len(ends) < count:
        raise PatchError(f"index data ends after {len(ends)} of {count} numbers")
    used = int(ends[-1]) + 1
    starts = np.concatenate([[0], ends[:-1] + 1])
    if int((ends - starts).max()) >= _MAX_VARINT - 1:
        raise PatchError("index data holds a number longer than 64 bits")
    owner = np.zeros(used, dtype=np.int64)  # which number each byte belongs to
    owner[starts[1:]] = 1
    owner = np.cumsum(owner)
    shifts = ((np.arange(used) - starts[owner]) * 7).astype(np.uint64)
    parts = (data[:used] & np.uint8(0x7F)).astype(np.uint64) << shifts
    return np.bitwise_or.reduceat(parts, starts), used


def _pack(section: bytes) -> tuple[int, bytes]:
    """The smallest of the section stored, deflated and (up to 1 MiB) lzma'd."""
    options = [(_STORED, section),
               (_ZLIB, zlib.compress(section, 9 if len(section) <= _LZMA_LIMIT else 6))]
    if len(section) <= _LZMA_LIMIT:
        options.append((_LZMA, lzma.compress(section, format=lzma.FORMAT_RAW,
                                             filters=_LZMA_FILTERS)))
    return min(options, key=lambda option: len(option[1]))


def _unpack(packing: int, packed: bytes, size: int) -> bytes:
    if packing == _STORED:
        section = packed
    elif packing == _ZLIB:
        if size > _ZLIB_RATIO * len(packed) + 64:
            raise PatchError(f"packed section claims {size} bytes from {len(packed)}")
        section = zlib.decompressobj().decompress(packed, size)
    elif packing == _LZMA:
        if size > _LZMA_LIMIT:
            raise PatchError(f"lzma section claims {size} bytes (at most {_LZMA_LIMIT})")
        section = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=_LZMA_FILTERS).decompress(
            packed, size)
    else:
        raise PatchError(f"unknown packing {packing}")
    if len(section) != size:
        raise PatchError(f"packed section holds {len(section)} bytes, expected {size}")
    return section


def _stored_values(patch: Patch, change: TensorChange) -> Tensor:
    stored = change.values.detach().reshape(-1)
    if patch.values == "fp16" and stored.dtype in (torch.float32, torch.float64):
        stored = stored.to(torch.float16)
    return stored


def encode(patch: Patch) -> bytes:
    """The wire bytes of ``patch`` (see the module doc)."""
    tensors, indices, codes, raw = [], bytearray(), bytearray(), bytearray()
    for change in patch.changes:
        if change.full:
            layout = "f"
        else:
            assert change.indices is not None
            layout = "s"
            flat = change.indices.numpy().astype(np.int64)
            gaps = np.diff(flat, prepend=0)
            if len(gaps) and (gaps[0] < 0 or gaps[1:].min(initial=1) <= 0):
                raise ValueError(f"tensor '{change.name}': indices must be sorted and unique")
            indices += _varints(gaps)
        if change.scale is not None:
            codec = "q8"
            codes += struct.pack("<f", change.scale)
            codes += change.values.to(torch.int8).numpy().tobytes()
        else:
            stored = _stored_values(patch, change)
            codec = _NAMES[stored.dtype]
            raw += _bytes(stored)
        tensors.append([change.name, list(change.shape), change.dtype,
                        int(change.values.numel()), layout, codec])
    header = json.dumps({"base_version": patch.base_version,
                         "target_version": patch.target_version, "sequence": patch.sequence,
                         "values": patch.values, "removed": patch.removed, "meta": patch.meta,
                         "tensors": tensors,
                         **({} if patch.reinit is None else {"reinit": patch.reinit})},
                        separators=(",", ":")).encode()
    section = (struct.pack("<I", len(header)) + header + bytes.fromhex(patch.base_sha256 or
                                                                        "0" * 64)
               + bytes.fromhex(patch.target_sha256 or "0" * 64) + bytes(indices) + bytes(codes))
    packing, packed = _pack(section)
    blob = _HEAD.pack(MAGIC, FORMAT_VERSION, packing, len(packed), len(section)) + packed \
        + bytes(raw)
    return blob + hashlib.sha256(blob).digest()


def decode(blob: bytes) -> Patch:
    """The patch in ``blob``; :class:`PatchError` naming what is wrong if it is not one.
    Reads format 2 and the format 1 of earlier releases (patches kept in a patch log)."""
    if len(blob) < 8 + 32 or blob[:4] != MAGIC:
        raise PatchError("not a modelci-e patch (bad magic or too short)")
    content, trailer = blob[:-32], blob[-32:]
    if hashlib.sha256(content).digest() != trailer:
        raise PatchError("patch corrupt: its sha256 does not match its bytes")
    (version,) = struct.unpack_from("<H", content, 4)
    if version == 1:
        return _decode_v1(content)
    if version != FORMAT_VERSION:
        raise PatchError(f"patch format {version} is not supported (expected 1 or "
                         f"{FORMAT_VERSION})")
    try:
        return _decode_v2(content)
    except PatchError:
        raise
    except (KeyError, ValueError, TypeError, IndexError, struct.error, zlib.error,
            lzma.LZMAError) as exc:
        raise PatchError(f"malformed patch: {type(exc).__name__}: {exc}") from None


def _decode_v2(content: bytes) -> Patch:
    _, _, packing, packed_len, size = _HEAD.unpack_from(content)
    start = _HEAD.size
    if start + packed_len > len(content):
        raise PatchError(f"packed section of {packed_len} bytes overruns the patch")
    section = _unpack(packing, content[start:start + packed_len], size)
    raw, raw_at = memoryview(content)[start + packed_len:], 0
    (header_len,) = struct.unpack_from("<I", section)
    header = json.loads(section[4:4 + header_len])
    at = 4 + header_len
    base_sha, target_sha = section[at:at + 32].hex(), section[at + 32:at + 64].hex()
    at += 64
    entries = header["tensors"]
    for name, shape, _, count, layout, _ in entries:
        size_of = math.prod(int(s) for s in shape)
        if layout not in ("s", "f"):
            raise PatchError(f"tensor '{name}': unknown layout '{layout}'")
        if int(count) < 0 or int(count) > size_of or (layout == "f" and count != size_of):
            raise PatchError(f"tensor '{name}': {count} values for shape {list(shape)}")
    sparse = [entry for entry in entries if entry[4] == "s"]
    counts = [int(entry[3]) for entry in sparse]
    stream = np.frombuffer(section, dtype=np.uint8, offset=at)
    gaps, used = _read_varints(stream, sum(counts))
    at += used
    starts = np.cumsum([0, *counts])
    changes: list[TensorChange] = []
    which = 0  # sparse tensors read so far
    for name, shape, dtype_name, count, layout, codec in entries:
        count, shape, dtype = int(count), tuple(int(s) for s in shape), _DTYPES[dtype_name]
        size_of = math.prod(shape)
        indices = None
        if layout == "s":
            tensor_gaps = gaps[starts[which]:starts[which + 1]].astype(np.int64)
            which += 1
            if count and ((tensor_gaps[1:] <= 0).any() or tensor_gaps[0] < 0
                          or (tensor_gaps >= size_of).any()
                          or float(tensor_gaps.sum(dtype=np.float64)) >= size_of):
                raise PatchError(f"tensor '{name}': indices out of order or beyond its "
                                 f"{size_of} entries")
            flat = np.cumsum(tensor_gaps)
            indices = torch.from_numpy(flat)
        scale = None
        if codec == "q8":
            if dtype != torch.float32:
                raise PatchError(f"tensor '{name}': q8 values for a {dtype_name} tensor")
            (scale,) = struct.unpack_from("<f", section, at)
            data = section[at + 4:at + 4 + count]
            at += 4 + count
            values = torch.frombuffer(bytearray(data), dtype=torch.int8) if count else \
                torch.empty(0, dtype=torch.int8)
        else:
            stored = _DTYPES[codec]
            view = torch.int16 if stored == torch.bfloat16 else stored
            nbytes = count * torch.empty(0, dtype=view).element_size()
            data = raw[raw_at:raw_at + nbytes]
            raw_at += nbytes
            values = torch.frombuffer(bytearray(data), dtype=view) if nbytes else \
                torch.empty(0, dtype=view)
            if stored == torch.bfloat16:
                values = values.view(torch.bfloat16)
            values = values.to(dtype)
        if values.numel() != count:
            raise PatchError(f"tensor '{name}': {values.numel()} values, expected {count}")
        changes.append(TensorChange(name, shape, dtype_name, values, indices, scale))
    if at != len(section) or raw_at != len(raw):
        raise PatchError(f"patch has {len(section) - at + len(raw) - raw_at} bytes left over")
    values_kind = header["values"]
    if values_kind not in ("fp32", "fp16", "q8"):
        raise PatchError(f"unknown values '{values_kind}'")
    reinit = header.get("reinit")
    if reinit is not None and (not isinstance(reinit, int) or isinstance(reinit, bool)):
        raise PatchError(f"re-initialisation seed {reinit!r} is not an integer")
    return Patch(int(header["base_version"]), int(header["target_version"]), base_sha,
                 target_sha, changes, list(header["removed"]), dict(header["meta"]),
                 values_kind, int(header["sequence"]), reinit)


def _decode_v1(content: bytes) -> Patch:
    """Format 1: a JSON header, then per tensor its zlib'd fixed-width index gaps and raw
    values (earlier releases wrote it; patch logs may still hold such patches)."""
    _, header_len = struct.unpack_from("<HH", content, 4)
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


def paper_bits(patch: Patch, value_bits: int | None = None) -> float:
    """The patch's size as the DPU paper counts it: ``S_w * k * I + S_x(k) * I`` bits, with
    ``S_x(k) * I = log2(C(I, k * I))`` per tensor (which entries changed) and full tensors at
    ``S_w`` bits per entry. ``S_w``: ``value_bits``, else as the patch carries them (32 for
    fp32, 16 for fp16 floats, 8 for q8 codes plus a 32-bit scale per tensor)."""
    bits = 0.0
    for change in patch.changes:
        k = int(change.values.numel())
        if value_bits is not None:
            bits += value_bits * k
        elif change.scale is not None:
            bits += 8 * k + 32
        elif patch.values == "fp16" and change.dtype in ("float32", "float64"):
            bits += 16 * k
        else:
            bits += 8 * _DTYPES[change.dtype].itemsize * k
        if not change.full:
            total = math.prod(change.shape)
            bits += (math.lgamma(total + 1) - math.lgamma(k + 1)
                     - math.lgamma(total - k + 1)) / math.log(2)
    return bits
