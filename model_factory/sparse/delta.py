"""What a sparse update ships: the entries of a state dict whose bits changed, and its bytes.

:meth:`SparseDelta.between` compares two state dicts bit for bit (so ``-0.0`` vs ``0.0`` or a
NaN payload counts as a change); :meth:`SparseDelta.apply` rebuilds the new state dict from the
old one exactly. :meth:`SparseDelta.nbytes` counts what would go over the wire, per tensor the
new values plus their positions, coded the cheaper of two ways: the gaps between positions as
varints (one byte per gap below 128) or a bitmap (one bit per entry). Names, shapes and
framing are not counted; :func:`dense_nbytes` is the full update to compare with.

Example:
    >>> import torch
    >>> old = {"w": torch.zeros(1000), "b": torch.zeros(3)}
    >>> new = {"w": old["w"].clone(), "b": torch.tensor([0.0, 1.0, 0.0])}
    >>> new["w"][[5, 700]] = 2.0
    >>> delta = SparseDelta.between(old, new)
    >>> delta.changed, delta.total, delta.nbytes(), dense_nbytes(new)
    (3, 1003, 16, 4012)
    >>> all(torch.equal(delta.apply(old)[name], new[name]) for name in new)
    True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

_BITS_AS_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _bits(tensor: Tensor) -> Tensor:
    """The tensor reinterpreted as integers of the same width (a bitwise view)."""
    if tensor.dtype == torch.bool or not (tensor.is_floating_point() or tensor.is_complex()):
        return tensor
    return tensor.contiguous().view(_BITS_AS_INT[tensor.element_size()])


def changed_positions(old: Tensor, new: Tensor) -> Tensor:
    """Flat positions (int64, ascending) where ``new`` differs bitwise from ``old``.

    Examples:
        >>> changed_positions(torch.tensor([0.0, 1.0, 2.0]), torch.tensor([-0.0, 1.0, 3.0]))
        tensor([0, 2])
    """
    if old.shape != new.shape or old.dtype != new.dtype:
        raise ValueError(f"cannot compare a {old.dtype} {tuple(old.shape)} tensor with a "
                         f"{new.dtype} {tuple(new.shape)} one")
    return torch.nonzero(_bits(old).reshape(-1) != _bits(new).reshape(-1)).squeeze(1)


def position_nbytes(positions: Tensor, numel: int) -> int:
    """Bytes of ascending flat ``positions`` in a tensor of ``numel`` entries, coded the cheaper
    way: the gaps between them as LEB128 varints (7 bits a byte: a gap below 128 takes one byte,
    below 16,384 two), or a bitmap of one bit per entry.

    Examples:
        >>> position_nbytes(torch.tensor([3, 100, 300]), 100_000)  # gaps 3, 97, 200
        4
        >>> position_nbytes(torch.arange(0, 1000, 2), 1000)  # 500 one-byte gaps; bitmap smaller
        125
    """
    if len(positions) == 0:
        return 0
    gaps = torch.diff(positions, prepend=positions.new_zeros(1)).double()
    bits = torch.floor(torch.log2(gaps.clamp(min=1))) + 1
    varint = int(torch.ceil(bits / 7).sum())
    return min(varint, math.ceil(numel / 8))


@dataclass(frozen=True)
class SparseDelta:
    """Per tensor name: the flat ``positions`` (int64, ascending) that changed and their new
    ``values`` (the tensor's dtype); ``numel`` of every tensor, changed or not."""

    positions: dict[str, Tensor]
    values: dict[str, Tensor]
    numel: dict[str, int]

    @classmethod
    def between(cls, old: Mapping[str, Tensor], new: Mapping[str, Tensor]) -> SparseDelta:
        """The entries of ``new`` whose bits differ from ``old`` (same names, shapes, dtypes)."""
        if set(old) != set(new):
            raise ValueError(f"state dicts differ in their tensors: only old "
                             f"{sorted(set(old) - set(new))}, only new {sorted(set(new) - set(old))}")
        positions, values, numel = {}, {}, {}
        for name, tensor in new.items():
            changed = changed_positions(old[name].detach(), tensor.detach())
            numel[name] = tensor.numel()
            if len(changed):
                positions[name] = changed
                values[name] = tensor.detach().reshape(-1)[changed].clone()
        return cls(positions, values, numel)

    @property
    def changed(self) -> int:
        """Entries that changed, over all tensors."""
        return sum(len(p) for p in self.positions.values())

    @property
    def total(self) -> int:
        """Entries of all tensors."""
        return sum(self.numel.values())

    def nbytes(self) -> int:
        """Bytes shipped: new values plus positions per tensor (see the module doc)."""
        return sum(self.values[name].numel() * self.values[name].element_size()
                   + position_nbytes(positions, self.numel[name])
                   for name, positions in self.positions.items())

    def apply(self, old: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """A new state dict: ``old`` with the changed entries replaced (``old`` is not changed)."""
        out = {}
        for name, tensor in old.items():
            tensor = tensor.detach().clone()
            if name in self.positions:
                tensor.view(-1)[self.positions[name]] = self.values[name]
            out[name] = tensor
        return out


def dense_nbytes(state: Mapping[str, Tensor]) -> int:
    """Bytes of shipping every tensor of ``state`` in full."""
    return sum(t.numel() * t.element_size() for t in state.values())
