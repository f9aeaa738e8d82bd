"""Class-balanced rehearsal: an equal share of the memory for every class seen so far."""

from __future__ import annotations

from bisect import insort
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from model_factory.rehearsal.base import RehearsalBuffer, register
from model_factory.rehearsal.batch_checks import check_batch, check_like


@register
class ClassBalancedBuffer(RehearsalBuffer):
    """Share the memory equally among the classes seen so far, so that a rare class keeps as
    many samples as a frequent one; within a class, keep a reservoir sample of its stream.

    With ``k`` classes seen, class quotas are ``capacity // k``, and the ``capacity % k``
    remaining slots go one each to the classes with the smallest labels (so quotas depend only
    on the set of classes, not on the order they arrived in). Quotas matter only once the
    buffer is full: until then every offered sample is kept. Once full, a sample of class ``c``
    evicts a random sample of the largest class, the one furthest above its quota (ties: the
    smallest label), if that class exceeds its quota by at least two more than ``c`` does;
    otherwise it replaces a random sample of its own class with probability ``held / seen`` of
    that class (reservoir sampling within the class). So a new class takes its share from the
    largest classes; once every class has offered enough samples each holds exactly its
    quota (counts differ by at most one); a rare class keeps all its samples and the others
    share what it leaves, again within one of each other. With more classes than
    ``capacity``, classes beyond the first ``capacity`` labels have a quota of zero. Targets
    must be integer class labels of shape ``(n,)``.

    Parameters:
        capacity: most samples held (>= 1).
        seed: seed of the buffer's own generator (which samples are kept or evicted).

    Examples:
        >>> import torch
        >>> labels = torch.tensor([0] * 90 + [1] * 10 + [2] * 5)
        >>> buffer = ClassBalancedBuffer(capacity=12, seed=0)
        >>> buffer.add(torch.randn(105, 4), labels)
        >>> torch.bincount(buffer.tensors()[1]).tolist()
        [4, 4, 4]
        >>> buffer.add(torch.randn(3, 4), torch.tensor([3, 3, 3]))
        >>> torch.bincount(buffer.tensors()[1]).tolist()
        [3, 3, 3, 3]

    References:
        Chrysakis, A., & Moens, M.-F. (2020). Online continual learning from imbalanced data.
        ICML 2020 (class-balancing reservoir sampling).
        Prabhu, A., Torr, P. H. S., & Dokania, P. K. (2020). GDumb: a simple approach that
        questions our progress in continual learning. ECCV 2020 (balanced greedy memory).
    """

    name = "class_balanced"

    def __init__(self, capacity: int, seed: int = 0):
        super().__init__(capacity, seed)
        self._generator = torch.Generator().manual_seed(seed)
        self._inputs: Tensor | None = None
        self._targets: Tensor | None = None
        self._size = 0
        self._seen: dict[int, int] = {}
        self._slots: dict[int, list[int]] = {}
        self._quotas: dict[int, int] = {}

    @classmethod
    def unit_test_params(cls) -> Iterator[dict[str, Any]]:
        yield {"capacity": 50}
        yield {"capacity": 7}

    def add(self, inputs: Tensor, targets: Tensor) -> None:
        check_batch(inputs, targets)
        if (targets.dim() != 1 or targets.is_floating_point() or targets.is_complex()
                or targets.dtype == torch.bool):
            raise ValueError("a class-balanced buffer needs integer class labels of shape (n,), "
                             f"got {targets.dtype} of shape {tuple(targets.shape)}")
        inputs, targets = inputs.detach().cpu(), targets.detach().cpu()
        if self._inputs is None or self._targets is None:
            self._inputs = inputs.new_empty((self.capacity, *inputs.shape[1:]))
            self._targets = targets.new_empty((self.capacity,))
        check_like(self._inputs, inputs, "inputs")
        check_like(self._targets, targets, "targets")
        for i, label in enumerate(targets.tolist()):
            slot = self._place(label)
            if slot is not None:
                self._inputs[slot] = inputs[i]
                self._targets[slot] = targets[i]

    def _place(self, label: int) -> int | None:
        """The slot the next sample of class ``label`` goes to, or None if it is not kept."""
        if label not in self._seen:
            self._seen[label] = 0
            self._slots[label] = []
            self._quotas = _quotas(sorted(self._seen), self.capacity)
        self._seen[label] += 1
        own = self._slots[label]
        if self._size < self.capacity:
            slot = self._size
            self._size += 1
        else:
            donor = max(self._slots, key=lambda c: (self._excess(c), -c))
            if self._excess(donor) < self._excess(label) + 2:
                j = self._draw_below(self._seen[label])
                return own[j] if j < len(own) else None
            slot = self._slots[donor].pop(self._draw_below(len(self._slots[donor])))
        insort(own, slot)
        return slot

    def _excess(self, label: int) -> int:
        """Samples held beyond the class's quota (negative: below it)."""
        return len(self._slots[label]) - self._quotas[label]

    def _draw_below(self, n: int) -> int:
        return int(torch.randint(n, (1,), generator=self._generator))

    def __len__(self) -> int:
        return self._size

    def tensors(self) -> tuple[Tensor, Tensor]:
        if self._inputs is None or self._targets is None:
            return torch.empty(0), torch.empty(0, dtype=torch.long)
        return self._inputs[: self._size], self._targets[: self._size]

    def state_dict(self) -> dict[str, Tensor]:
        inputs, targets = self.tensors()
        classes = sorted(self._seen)
        return {"inputs": inputs.clone(), "targets": targets.clone(),
                "classes": torch.tensor(classes, dtype=torch.long),
                "class_seen": torch.tensor([self._seen[c] for c in classes], dtype=torch.long),
                "generator": self._generator.get_state()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        inputs, targets = state["inputs"], state["targets"]
        check_batch(inputs, targets)
        if inputs.shape[0] > self.capacity:
            raise ValueError(f"state holds {inputs.shape[0]} samples, more than the capacity "
                             f"{self.capacity}")
        seen = dict(zip(state["classes"].tolist(), state["class_seen"].tolist(), strict=True))
        held = targets.tolist()
        unknown = set(held) - set(seen)
        if unknown:
            raise ValueError(f"state holds samples of classes {sorted(unknown)} it never saw")
        self._generator.set_state(state["generator"])
        self._seen = seen
        self._quotas = _quotas(sorted(seen), self.capacity)
        # Slot lists are kept sorted, so they are rebuilt exactly from the held labels.
        self._slots = {c: [] for c in seen}
        for slot, label in enumerate(held):
            self._slots[label].append(slot)
        self._size = len(held)
        if not seen:
            self._inputs = self._targets = None
            return
        self._inputs = inputs.new_empty((self.capacity, *inputs.shape[1:]))
        self._targets = targets.new_empty((self.capacity,))
        self._inputs[: self._size] = inputs
        self._targets[: self._size] = targets


def _quotas(classes: list[int], capacity: int) -> dict[int, int]:
    """Equal shares of ``capacity``; the remainder goes to the smallest labels, one each."""
    if not classes:
        return {}
    share, remainder = divmod(capacity, len(classes))
    return {label: share + (rank < remainder) for rank, label in enumerate(classes)}
