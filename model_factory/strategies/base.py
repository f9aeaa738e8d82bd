"""The one interface of every CL strategy (EWC, SI, LwF, MAS, ...): hooks around training.

A strategy never owns the training loop. The loop (a Lightning template's ``training_step`` or
:func:`model_factory.training.fit_experience`) calls, for each experience (a batch of new data)::

    strategy.before_experience(model)
    for inputs, targets in loader:
        logits = model(inputs)
        loss = task_loss(logits, targets) + strategy.penalty(model, inputs, logits)
        loss.backward()
        strategy.before_step(model)        # gradients are there, parameters not yet changed
        optimizer.step()
        strategy.after_step(model)         # parameters changed
    strategy.after_experience(model, loader)   # consolidate (Fisher, importance, old model...)

The base class is naive fine-tuning: every hook a no-op, a zero penalty. A strategy's state
(importances, anchors, old model weights) lives in ``state_dict()`` as tensors only, so a
stateful CL job can save it and load it with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

Batch = tuple[Tensor, Tensor]

STRATEGIES: dict[str, type[CLStrategy]] = {}


def register(cls: type[CLStrategy]) -> type[CLStrategy]:
    """Class decorator: make a strategy available by its ``name`` (config ``cl.strategy.name``)."""
    if cls.name in STRATEGIES:
        raise ValueError(f"strategy '{cls.name}' is registered twice")
    STRATEGIES[cls.name] = cls
    return cls


def trainable(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """The parameters a strategy regularises: those that require gradients, by name."""
    return ((name, p) for name, p in model.named_parameters() if p.requires_grad)


@register
class CLStrategy:
    """Naive fine-tuning: the baseline every CL strategy improves on. No penalty, no state."""

    name: ClassVar[str] = "naive"

    def __init__(self, **params: Any):
        if params:
            raise ValueError(f"strategy '{self.name}' takes no parameters "
                             f"(got: {', '.join(sorted(params))})")

    @classmethod
    def unit_test_params(cls) -> Iterator[dict[str, Any]]:
        """Parameter sets the generic contract test runs this strategy with."""
        yield {}

    def before_experience(self, model: nn.Module) -> None:
        """Called before training on a new experience."""

    def penalty(self, model: nn.Module, inputs: Tensor, logits: Tensor) -> Tensor:
        """Regularisation added to the task loss for this batch (a scalar tensor)."""
        return logits.new_zeros(())

    def before_step(self, model: nn.Module) -> None:
        """Called after ``backward()``, before the optimizer step (gradients available)."""

    def after_step(self, model: nn.Module) -> None:
        """Called after the optimizer step."""

    def after_experience(self, model: nn.Module, loader: Iterable[Batch]) -> None:
        """Called once training on an experience ends; ``loader`` yields its data again."""

    def state_dict(self) -> dict[str, Tensor]:
        """The strategy's state, tensors only (loadable with ``weights_only=True``)."""
        return {}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if state:
            raise ValueError(f"strategy '{self.name}' has no state (got: {sorted(state)})")


def make_strategy(name: str, **params: Any) -> CLStrategy:
    """Build a registered strategy; a clear error names an unknown one."""
    try:
        cls = STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy '{name}' (expected one of: "
                         f"{', '.join(sorted(STRATEGIES))})") from None
    return cls(**params)


def copy_params(model: nn.Module) -> dict[str, Tensor]:
    """Detached copies of the trainable parameters, by name."""
    return {name: p.detach().clone() for name, p in trainable(model)}


def zeros_like_params(model: nn.Module) -> dict[str, Tensor]:
    return {name: torch.zeros_like(p) for name, p in trainable(model)}


def reject_unknown(strategy: str, unknown: Mapping[str, Any], known: Iterable[str]) -> None:
    """Raise a ``ValueError`` naming every parameter in ``unknown`` (those a strategy does not
    take), next to the ones it does."""
    if unknown:
        raise ValueError(f"strategy '{strategy}' got unknown parameter(s): "
                         f"{', '.join(sorted(unknown))} (known: {', '.join(known)})")


def check_number(strategy: str, name: str, value: Any, allowed: str,
                 ok: Callable[[float], bool]) -> float:
    """``value`` as a float if it is a finite real number for which ``ok`` holds; otherwise a
    ``ValueError`` naming the parameter and its ``allowed`` range (e.g. ``"> 0"``).

    Examples:
        >>> check_number("ewc", "gamma", 0.5, "in (0, 1]", lambda g: 0 < g <= 1)
        0.5
        >>> check_number("ewc", "gamma", 2, "in (0, 1]", lambda g: 0 < g <= 1)
        Traceback (most recent call last):
        ...
        ValueError: strategy 'ewc': gamma must be in (0, 1] (got 2)
    """
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or not ok(float(value))):
        raise ValueError(f"strategy '{strategy}': {name} must be {allowed} (got {value!r})")
    return float(value)


def pop_alias(strategy: str, params: dict[str, Any], alias: str, name: str, value: Any,
              default: Any) -> Any:
    """The value of parameter ``name``, given as a keyword or, from a config, as ``alias``
    (e.g. ``lambda``, a reserved word in Python); ``alias`` is removed from ``params``."""
    if alias in params:
        if value is not None:
            raise ValueError(f"strategy '{strategy}': give '{alias}' or '{name}', not both")
        return params.pop(alias)
    return default if value is None else value
