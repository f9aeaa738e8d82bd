"""Reservoir sampling (Vitter's Algorithm R): a uniform sample of everything offered so far."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from model_factory.rehearsal.base import RehearsalBuffer, register
from model_factory.rehearsal.batch_checks import check_batch, check_like


@register
class ReservoirBuffer(RehearsalBuffer):
    """Keep a uniform random sample of the stream: after ``n`` offered samples, each one is held
    with probability ``capacity / n``, whatever the order or batching of the stream.

    Algorithm R: the ``k``-th sample offered (``k`` counted from 0) fills a free slot while
    ``k < capacity``; afterwards it draws ``j`` uniformly from ``0..k`` and replaces slot ``j``
    if ``j < capacity``. One uniform number is drawn per offered sample from the buffer's own
    ``torch.Generator``, so a stream offered in one batch or in many gives the same buffer.

    Parameters:
        capacity: most samples held (>= 1).
        seed: seed of the buffer's own generator (which samples are kept).

    Examples:
        >>> import torch
        >>> buffer = ReservoirBuffer(capacity=5, seed=0)
        >>> buffer.add(torch.arange(100.0).unsqueeze(1), torch.zeros(100, dtype=torch.long))
        >>> len(buffer), buffer.seen
        (5, 100)
        >>> inputs, targets = buffer.tensors()
        >>> inputs.shape
        torch.Size([5, 1])
        >>> restored = ReservoirBuffer(capacity=5)
        >>> restored.load_state_dict(buffer.state_dict())
        >>> torch.equal(restored.tensors()[0], inputs)
        True

    References:
        Vitter, J. S. (1985). Random sampling with a reservoir. ACM Transactions on
        Mathematical Software, 11(1), 37-57.
    """

    name = "reservoir"

    def __init__(self, capacity: int, seed: int = 0):
        super().__init__(capacity, seed)
        self.seen = 0
        self._generator = torch.Generator().manual_seed(seed)
        self._inputs: Tensor | None = None
        self._targets: Tensor | None = None

    @classmethod
    def unit_test_params(cls) -> Iterator[dict[str, Any]]:
        yield {"capacity": 50}
        yield {"capacity": 1}

    def add(self, inputs: Tensor, targets: Tensor) -> None:
        check_batch(inputs, targets)
        inputs, targets = inputs.detach().cpu(), targets.detach().cpu()
        if self._inputs is None or self._targets is None:
            self._inputs = inputs.new_empty((self.capacity, *inputs.shape[1:]))
            self._targets = targets.new_empty((self.capacity, *targets.shape[1:]))
        check_like(self._inputs, inputs, "inputs")
        check_like(self._targets, targets, "targets")
        n = inputs.shape[0]
        if n == 0:
            return
        position = self.seen + torch.arange(n, dtype=torch.float64)
        draw = torch.rand(n, generator=self._generator, dtype=torch.float64)
        slot = torch.where(position < self.capacity, position,
                           torch.floor(draw * (position + 1))).long()
        kept = torch.nonzero(slot < self.capacity).squeeze(1)
        # Several samples of one batch may land on the same slot: the latest one wins, as if
        # they had been offered one at a time.
        latest = _last_per_slot(slot[kept], kept)
        self._inputs[slot[latest]] = inputs[latest]
        self._targets[slot[latest]] = targets[latest]
        self.seen += n

    def __len__(self) -> int:
        return min(self.seen, self.capacity)

    def tensors(self) -> tuple[Tensor, Tensor]:
        if self._inputs is None or self._targets is None:
            return torch.empty(0), torch.empty(0, dtype=torch.long)
        return self._inputs[: len(self)], self._targets[: len(self)]

    def state_dict(self) -> dict[str, Tensor]:
        inputs, targets = self.tensors()
        return {"inputs": inputs.clone(), "targets": targets.clone(),
                "seen": torch.tensor(self.seen, dtype=torch.long),
                "generator": self._generator.get_state()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        seen = int(state["seen"])
        inputs, targets = state["inputs"], state["targets"]
        check_batch(inputs, targets)
        if inputs.shape[0] != min(seen, self.capacity):
            raise ValueError(f"state holds {inputs.shape[0]} samples, but a reservoir of "
                             f"capacity {self.capacity} that has seen {seen} holds "
                             f"{min(seen, self.capacity)}")
        self._generator.set_state(state["generator"])
        self.seen = seen
        if seen == 0:
            self._inputs = self._targets = None
            return
        self._inputs = inputs.new_empty((self.capacity, *inputs.shape[1:]))
        self._targets = targets.new_empty((self.capacity, *targets.shape[1:]))
        self._inputs[: inputs.shape[0]] = inputs
        self._targets[: targets.shape[0]] = targets


def _last_per_slot(slot: Tensor, index: Tensor) -> Tensor:
    """Of ``index`` (increasing), the last entry for each distinct value of ``slot``."""
    if slot.numel() == 0:
        return index
    distinct, group = torch.unique(slot, return_inverse=True)
    last = torch.full((distinct.numel(),), -1, dtype=torch.long)
    last.scatter_reduce_(0, group, index, reduce="amax")
    return last
