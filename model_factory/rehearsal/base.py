"""The one interface of every rehearsal buffer: a bounded store of past (input, target) pairs.

Buffers hold tensors on the CPU. ``add`` takes a batch; ``sample`` draws without replacement with
an explicit ``torch.Generator`` so that every draw is reproducible from a seed. ``state_dict``
holds tensors only (loadable with ``weights_only=True``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any, ClassVar

from torch import Tensor

BUFFERS: dict[str, type[RehearsalBuffer]] = {}


def register(cls: type[RehearsalBuffer]) -> type[RehearsalBuffer]:
    """Class decorator: make a buffer available by its ``name`` (config ``cl.rehearsal.kind``)."""
    if cls.name in BUFFERS:
        raise ValueError(f"buffer '{cls.name}' is registered twice")
    BUFFERS[cls.name] = cls
    return cls


class RehearsalBuffer(ABC):
    """A bounded memory of past samples.

    Parameters:
        capacity: most samples held (>= 1).
        seed: seed of the buffer's own random choices (which sample to keep or evict).
    """

    name: ClassVar[str]

    def __init__(self, capacity: int, seed: int = 0):
        if capacity < 1:
            raise ValueError(f"buffer capacity must be at least 1 (got {capacity})")
        self.capacity = capacity
        self.seed = seed

    @classmethod
    def unit_test_params(cls) -> Iterator[dict[str, Any]]:
        """Parameter sets the generic contract test runs this buffer with."""
        yield {"capacity": 50}

    @abstractmethod
    def add(self, inputs: Tensor, targets: Tensor) -> None:
        """Offer a batch (first dimension = samples); the buffer decides what it keeps."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def tensors(self) -> tuple[Tensor, Tensor]:
        """Everything held: ``(inputs, targets)``."""

    def sample(self, n: int, generator: Any) -> tuple[Tensor, Tensor]:
        """``min(n, len(self))`` samples drawn uniformly without replacement."""
        import torch

        inputs, targets = self.tensors()
        take = min(n, len(self))
        index = torch.randperm(len(self), generator=generator)[:take]
        return inputs[index], targets[index]

    @abstractmethod
    def state_dict(self) -> dict[str, Tensor]: ...

    @abstractmethod
    def load_state_dict(self, state: dict[str, Tensor]) -> None: ...
