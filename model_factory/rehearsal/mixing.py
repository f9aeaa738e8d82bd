"""Replay mini-batches: every new sample once per epoch, each batch topped up from a buffer."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from model_factory.rehearsal.base import RehearsalBuffer
from model_factory.rehearsal.batch_checks import check_batch


def mixed_batches(new_inputs: Tensor, new_targets: Tensor, buffer: RehearsalBuffer,
                  batch_size: int, replay_ratio: float,
                  generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor, int]]:
    """One epoch of mini-batches mixing new samples with samples replayed from ``buffer``.

    Each batch holds ``n_replay = round(batch_size * replay_ratio)`` stored samples (Python's
    ``round``, half to even), or all of the buffer if it holds fewer, and up to
    ``batch_size - n_replay`` new samples. The new samples are shuffled with ``generator`` and
    each appears in exactly one batch; the last batch may hold fewer new samples (but still
    ``n_replay`` stored ones). Stored samples are drawn afresh for every batch, without
    replacement within a batch (:meth:`RehearsalBuffer.sample`), so they may recur across
    batches. The buffer is only read: adding the new samples to it is the caller's decision.

    Parameters:
        new_inputs: new samples, shape ``(n, ...)``.
        new_targets: their targets, shape ``(n, ...)``.
        buffer: the rehearsal buffer to replay from (may be empty).
        batch_size: samples per batch (new + stored), >= 1.
        replay_ratio: share of each batch taken from the buffer, in ``[0, 1)``; it must leave
            room for at least one new sample per batch.
        generator: source of the shuffle and of the replay draws (reproducible from its seed).

    Yields:
        ``(inputs, targets, n_new)``: the first ``n_new`` rows are new samples, the rest stored.

    Examples:
        >>> import torch
        >>> from model_factory.rehearsal.reservoir import ReservoirBuffer
        >>> buffer = ReservoirBuffer(capacity=20)
        >>> buffer.add(torch.zeros(20, 2), torch.zeros(20, dtype=torch.long))
        >>> batches = list(mixed_batches(torch.ones(10, 2), torch.ones(10, dtype=torch.long),
        ...                              buffer, batch_size=8, replay_ratio=0.25,
        ...                              generator=torch.Generator().manual_seed(0)))
        >>> [(len(inputs), n_new) for inputs, _, n_new in batches]
        [(8, 6), (6, 4)]

    References:
        Chaudhry, A., Rohrbach, M., Elhoseiny, M., Ajanthan, T., Dokania, P. K., Torr, P. H. S.,
        & Ranzato, M. (2019). On tiny episodic memories in continual learning. arXiv:1902.10486
        (experience replay: each new mini-batch joined by one drawn from the memory).
    """
    check_batch(new_inputs, new_targets)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1 (got {batch_size})")
    if not 0.0 <= replay_ratio < 1.0:
        raise ValueError(f"replay_ratio must be in [0, 1) (got {replay_ratio})")
    n_replay = round(batch_size * replay_ratio)
    n_new = batch_size - n_replay
    if n_new < 1:
        raise ValueError(f"replay_ratio {replay_ratio} leaves no room for new samples in a batch "
                         f"of {batch_size}")
    order = torch.randperm(new_inputs.shape[0], generator=generator, device="cpu")
    for chunk in order.split(n_new):
        chunk = chunk.to(new_inputs.device)
        inputs, targets = new_inputs[chunk], new_targets[chunk]
        if n_replay and len(buffer):
            stored_inputs, stored_targets = buffer.sample(n_replay, generator)
            inputs = torch.cat([inputs, stored_inputs.to(inputs.device)])
            targets = torch.cat([targets, stored_targets.to(targets.device)])
        yield inputs, targets, len(chunk)
