"""Proactive training (Prapas et al. 2021, Algorithm 1): each SGD step on ``t`` new samples plus
``b - t`` samples drawn uniformly from all the data seen before them.

This module only composes the mini-batches; the training loop takes one optimiser step per
batch. ``t`` is the trigger size and ``b`` the batch size: ``t = b`` is online training (new
data only), and a small ``t`` leans on history, like mini-batch SGD over everything seen.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from model_factory.rehearsal.batch_checks import check_batch, check_like


class History:
    """Every ``(input, target)`` sample appended so far, kept in arrival order, unbounded.

    Storage grows by doubling, so appending is amortised O(samples appended).

    Parameters:
        None: a history starts empty; :meth:`append` adds samples.

    Examples:
        >>> import torch
        >>> history = History()
        >>> history.append(torch.arange(6.0).unsqueeze(1), torch.zeros(6, dtype=torch.long))
        >>> len(history)
        6
        >>> inputs, _ = history.sample(4, torch.Generator().manual_seed(0))
        >>> inputs.shape, len(set(inputs.flatten().tolist()))
        (torch.Size([4, 1]), 4)

    References:
        Prapas, I., Derakhshan, B., Mahdiraji, A. R., & Markl, V. (2021). Continuous training
        and deployment of deep learning models. Datenbank-Spektrum, 21(3), 203-212.
    """

    def __init__(self) -> None:
        self._inputs: Tensor | None = None
        self._targets: Tensor | None = None
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def append(self, inputs: Tensor, targets: Tensor) -> None:
        """Add a batch (first dimension = samples) at the end."""
        check_batch(inputs, targets)
        inputs, targets = inputs.detach(), targets.detach()
        if self._inputs is None or self._targets is None:
            self._inputs = inputs.new_empty((0, *inputs.shape[1:]))
            self._targets = targets.new_empty((0, *targets.shape[1:]))
        check_like(self._inputs, inputs, "inputs")
        check_like(self._targets, targets, "targets")
        end = self._size + inputs.shape[0]
        if end > self._inputs.shape[0]:
            room = max(end, 2 * self._inputs.shape[0])
            self._inputs = _grown(self._inputs, self._size, room)
            self._targets = _grown(self._targets, self._size, room)
        self._inputs[self._size:end] = inputs
        self._targets[self._size:end] = targets
        self._size = end

    def tensors(self) -> tuple[Tensor, Tensor]:
        """Everything appended: ``(inputs, targets)``, oldest first."""
        if self._inputs is None or self._targets is None:
            return torch.empty(0), torch.empty(0, dtype=torch.long)
        return self._inputs[: self._size], self._targets[: self._size]

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``min(n, len(self))`` samples drawn uniformly without replacement."""
        inputs, targets = self.tensors()
        index = torch.randperm(self._size, generator=generator)[: min(n, self._size)]
        return inputs[index.to(inputs.device)], targets[index.to(targets.device)]


def _grown(held: Tensor, used: int, rows: int) -> Tensor:
    bigger = held.new_empty((rows, *held.shape[1:]))
    bigger[:used] = held[:used]
    return bigger


def proactive_batch(new_inputs: Tensor, new_targets: Tensor, history: History, batch_size: int,
                    generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """One proactive-training mini-batch: the ``t`` new samples, then ``b - t`` from history.

    The historical part is drawn uniformly without replacement from ``history`` (all data seen
    before these new samples); while history holds fewer than ``b - t`` samples, all of it is
    used and the batch is smaller than ``b``. ``history`` is not changed: append the new samples
    after the training step (as :func:`proactive_step_batches` does).

    Parameters:
        new_inputs: the ``t`` new samples, shape ``(t, ...)``, ``1 <= t <= batch_size``.
        new_targets: their targets, shape ``(t, ...)``.
        history: the data seen so far.
        batch_size: ``b``, samples per step.
        generator: source of the historical draw.

    Returns:
        ``(inputs, targets)``: the first ``t`` rows are the new samples.

    Examples:
        >>> import torch
        >>> history = History()
        >>> history.append(torch.zeros(100, 3), torch.zeros(100, dtype=torch.long))
        >>> inputs, targets = proactive_batch(torch.ones(4, 3), torch.ones(4, dtype=torch.long),
        ...                                   history, 16, torch.Generator().manual_seed(0))
        >>> inputs.shape, int(targets.sum())
        (torch.Size([16, 3]), 4)

    References:
        Prapas, I., Derakhshan, B., Mahdiraji, A. R., & Markl, V. (2021). Continuous training
        and deployment of deep learning models. Datenbank-Spektrum, 21(3), 203-212.
        Algorithm 1.
    """
    check_batch(new_inputs, new_targets)
    t = new_inputs.shape[0]
    if not 1 <= t <= batch_size:
        raise ValueError(f"a proactive step takes 1 to batch_size={batch_size} new samples "
                         f"(got {t})")
    if batch_size == t or len(history) == 0:
        return new_inputs, new_targets
    old_inputs, old_targets = history.sample(batch_size - t, generator)
    return (torch.cat([new_inputs, old_inputs.to(new_inputs.device)]),
            torch.cat([new_targets, old_targets.to(new_targets.device)]))


def proactive_step_batches(stream_inputs: Tensor, stream_targets: Tensor, trigger_size: int,
                           batch_size: int, generator: torch.Generator,
                           history: History | None = None
                           ) -> Iterator[tuple[Tensor, Tensor, int]]:
    """Walk a stream in order, ``t`` new samples per step, composing each step's batch.

    Each chunk of ``t`` consecutive stream samples (the last one may be shorter) becomes one
    :func:`proactive_batch`; the chunk is appended to ``history`` only when the consumer asks
    for the next batch, i.e. after it took its training step, so history never holds the
    samples being learned at composition time.

    Parameters:
        stream_inputs: the new data in arrival order, shape ``(n, ...)``.
        stream_targets: their targets, shape ``(n, ...)``.
        trigger_size: ``t``, new samples per step, ``1 <= t <= batch_size``.
        batch_size: ``b``, samples per step; ``t = b`` is online training.
        generator: source of the historical draws.
        history: data seen before the stream (for instance the champion's training data);
            a new empty :class:`History` if not given. It grows by each chunk after its step.

    Yields:
        ``(inputs, targets, n_new)``: the first ``n_new`` rows are the step's new samples.

    Examples:
        >>> import torch
        >>> steps = proactive_step_batches(torch.arange(10.0), torch.arange(10), trigger_size=4,
        ...                                batch_size=6, generator=torch.Generator().manual_seed(0))
        >>> [(len(inputs), n_new) for inputs, _, n_new in steps]
        [(4, 4), (6, 4), (6, 2)]

    References:
        Prapas, I., Derakhshan, B., Mahdiraji, A. R., & Markl, V. (2021). Continuous training
        and deployment of deep learning models. Datenbank-Spektrum, 21(3), 203-212.
        Algorithm 1.
    """
    check_batch(stream_inputs, stream_targets)
    if not 1 <= trigger_size <= batch_size:
        raise ValueError(f"trigger_size must be in 1..batch_size={batch_size} (got {trigger_size})")
    history = History() if history is None else history
    if stream_inputs.shape[0] == 0:
        return
    for new_inputs, new_targets in zip(stream_inputs.split(trigger_size),
                                       stream_targets.split(trigger_size), strict=True):
        inputs, targets = proactive_batch(new_inputs, new_targets, history, batch_size, generator)
        yield inputs, targets, new_inputs.shape[0]
        history.append(new_inputs, new_targets)
