"""The plain training loop of one experience with a CL strategy's hooks (no Lightning).

Tests and the profiler train with :func:`fit_experience`; the Lightning template calls the same
hooks in the same order (see :mod:`model_factory.strategies.base`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model_factory.strategies.base import Batch, CLStrategy


def fit_experience(model: nn.Module, loader: Iterable[Batch], strategy: CLStrategy,
                   optimizer: torch.optim.Optimizer, epochs: int = 1,
                   loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy
                   ) -> dict[str, float]:
    """Train ``model`` on one experience: ``epochs`` passes over ``loader`` minimising
    ``loss_fn(logits, targets) + strategy.penalty(...)``, then ``strategy.after_experience``.

    The model is put in training mode. Each batch: ``zero_grad``, forward, loss, a check that
    the loss is finite, ``backward``, ``before_step``, ``optimizer.step``, ``after_step``.
    A NaN or infinite loss raises ``ValueError("non-finite loss at epoch E, batch B: ...")``
    (``E`` and ``B`` counted from 0) before any step is taken with it.

    Returns ``epochs``, ``batches`` (over all epochs), ``final_loss`` (mean total loss,
    task + penalty, over the last epoch's batches) and ``mean_penalty`` (over all batches).

    Examples:
        >>> import torch
        >>> from model_factory.strategies import make_strategy
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Linear(3, 2)
        >>> data = [(torch.randn(8, 3), torch.randint(0, 2, (8,))) for _ in range(4)]
        >>> stats = fit_experience(model, data, make_strategy("naive"),
        ...                        torch.optim.SGD(model.parameters(), lr=0.1), epochs=2)
        >>> stats["epochs"], stats["batches"], stats["mean_penalty"]
        (2, 8, 0.0)
        >>> bad = [(torch.full((8, 3), float("nan")), torch.zeros(8, dtype=torch.long))]
        >>> fit_experience(model, bad, make_strategy("naive"),  # doctest: +ELLIPSIS
        ...                torch.optim.SGD(model.parameters(), lr=0.1))
        Traceback (most recent call last):
        ...
        ValueError: non-finite loss at epoch 0, batch 0: task loss nan, penalty 0 ...
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1 (got {epochs!r})")
    model.train()
    strategy.before_experience(model)
    batches = 0
    penalty_sum = 0.0
    for epoch in range(epochs):
        epoch_loss = 0.0
        epoch_batches = 0
        for batch, (inputs, targets) in enumerate(loader):
            optimizer.zero_grad()
            logits = model(inputs)
            task = loss_fn(logits, targets)
            penalty = strategy.penalty(model, inputs, logits)
            loss = task + penalty
            value = float(loss.detach())
            if not math.isfinite(value):
                raise ValueError(f"non-finite loss at epoch {epoch}, batch {batch}: task loss "
                                 f"{float(task.detach()):.4g}, penalty "
                                 f"{float(penalty.detach()):.4g} (check the inputs and the "
                                 "learning rate)")
            loss.backward()
            strategy.before_step(model)
            optimizer.step()
            strategy.after_step(model)
            epoch_loss += value
            epoch_batches += 1
            penalty_sum += float(penalty.detach())
        if epoch_batches == 0:
            raise ValueError("the loader yielded no batch: nothing to train on")
        batches += epoch_batches
    strategy.after_experience(model, loader)
    return {"epochs": epochs, "batches": batches, "final_loss": epoch_loss / epoch_batches,
            "mean_penalty": penalty_sum / batches}
