"""Synaptic Intelligence (Zenke, Poole & Ganguli 2017): importance from the training path."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from torch import Tensor, nn

from model_factory.strategies.base import (
    Batch, CLStrategy, check_number, copy_params, register, reject_unknown, trainable,
    zeros_like_params)
from model_factory.strategies.importance import (
    importance_state, leading, load_importance_state, merge_importance, on_model_device,
    quadratic_penalty)


@register
class SI(CLStrategy):
    """Weigh each parameter by how much its moves lowered the task loss while training, and
    pull it back to where past experiences left it: ``c * sum_k Omega_k (theta_k - theta*_k)^2``.

    During an experience every optimizer step adds to the path integral
    ``w_k += -g_k * (theta_k after - theta_k before)``, where ``g_k`` is the gradient of the
    task loss alone: ``before_step`` takes ``p.grad`` and removes this strategy's own penalty
    gradient ``2 c Omega_k (theta_k - theta*_k)``, scaled by d(loss)/d(penalty) as the backward
    pass saw it (a hook on the penalty tensor; 1 when the penalty is added to the loss once).
    At the end of the experience ``after_experience`` adds
    ``w_k / ((theta_k end - theta_k start)^2 + xi)`` to ``Omega_k`` (start: the parameters at
    ``before_experience``), resets ``w`` and anchors ``theta*`` at the end parameters.

    ``Omega`` is not clipped. An experience's term is non-negative when each step lowers the
    task loss along every coordinate, e.g. plain SGD on the first experience (``w = lr g^2``)
    or on a separable convex loss with a small step; with momentum, Adam, or a penalty that
    pulls a parameter against its task gradient, a term can be negative, as in the paper and
    common implementations. The penalty is zero before the first experience ends. Layers
    grown since (NC updates) are penalised on their old units only. The state is saved at
    experience boundaries: an unfinished path integral is not part of it.

    Parameters:
        c: strength of the penalty, > 0 (default 1.0).
        xi: damping of the importance denominator, > 0 (default 1e-3).

    Examples:
        >>> import torch
        >>> from model_factory.strategies import make_strategy
        >>> from model_factory.training import fit_experience
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Linear(3, 2)
        >>> data = [(torch.randn(16, 3), torch.randint(0, 2, (16,)))]
        >>> si = make_strategy("si", c=0.5, xi=0.1)
        >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> _ = fit_experience(model, data, si, optimizer, epochs=5)
        >>> all(bool((omega >= 0).all()) for omega in si.omega.values())
        True
        >>> x = data[0][0]
        >>> si.penalty(model, x, model(x)).item()
        0.0
        >>> with torch.no_grad():
        ...     _ = model.bias.add_(1.0)
        >>> si.penalty(model, x, model(x)).item() > 0
        True

    References:
        Zenke, F., Poole, B., & Ganguli, S. (2017). Continual learning through synaptic
        intelligence. ICML, PMLR 70, 3987-3995.
    """

    name = "si"

    def __init__(self, *, c: float = 1.0, xi: float = 1e-3, **params: Any):
        reject_unknown(self.name, params, ("c", "xi"))
        self.c = check_number(self.name, "c", c, "> 0", lambda v: v > 0)
        self.xi = check_number(self.name, "xi", xi, "> 0", lambda v: v > 0)
        self.omega: dict[str, Tensor] = {}
        self.anchor: dict[str, Tensor] = {}
        self._start: dict[str, Tensor] | None = None
        self._path: dict[str, Tensor] | None = None
        self._before: dict[str, tuple[Tensor, Tensor]] = {}
        self._penalty_weight: Tensor | None = None

    @classmethod
    def unit_test_params(cls) -> Iterator[dict[str, Any]]:
        yield {}
        yield {"c": 0.1, "xi": 0.1}

    def before_experience(self, model: nn.Module) -> None:
        self.omega = on_model_device(model, self.omega)
        self.anchor = on_model_device(model, self.anchor)
        self._start = copy_params(model)
        self._path = zeros_like_params(model)

    def penalty(self, model: nn.Module, inputs: Tensor, logits: Tensor) -> Tensor:
        if not self.omega:
            return logits.new_zeros(())
        penalty = self.c * quadratic_penalty(model, self.omega, self.anchor)
        if penalty.requires_grad:
            penalty.register_hook(self._add_penalty_weight)
        return penalty

    def _add_penalty_weight(self, weight: Tensor) -> None:
        # d(loss)/d(penalty): the weight with which this penalty's gradient went into p.grad.
        self._penalty_weight = weight if self._penalty_weight is None \
            else self._penalty_weight + weight

    def before_step(self, model: nn.Module) -> None:
        _, path = self._require_experience("before_step")
        self._before = {}
        for name, p in trainable(model):
            if p.grad is None or name not in path:
                continue
            task_grad = p.grad.detach().clone()
            if self._penalty_weight is not None and name in self.omega:
                index = leading(name, self.omega[name].shape, p)
                task_grad[index] -= (self._penalty_weight * 2 * self.c * self.omega[name]
                                     * (p.detach()[index] - self.anchor[name]))
            self._before[name] = (task_grad, p.detach().clone())
        self._penalty_weight = None

    def after_step(self, model: nn.Module) -> None:
        _, path = self._require_experience("after_step")
        for name, p in trainable(model):
            if name in self._before:
                task_grad, before = self._before[name]
                path[name] -= task_grad * (p.detach() - before)
        self._before = {}

    def after_experience(self, model: nn.Module, loader: Iterable[Batch]) -> None:
        start, path = self._require_experience("after_experience")
        end = copy_params(model)
        fresh = {name: w / ((end[name] - start[name]).square() + self.xi)
                 for name, w in path.items() if name in end}
        self.omega = merge_importance(self.omega, fresh, keep=1.0, add=1.0)
        self.anchor = end
        self._start = self._path = None

    def _require_experience(self, hook: str) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """The parameters at the start of the experience and the path integral so far."""
        if self._start is None or self._path is None:
            raise RuntimeError(f"strategy 'si': {hook} called outside an experience "
                               "(call before_experience first)")
        return self._start, self._path

    def state_dict(self) -> dict[str, Tensor]:
        """``omega.<parameter>`` and ``anchor.<parameter>`` (empty before the first
        experience ends)."""
        return importance_state(self.omega, self.anchor)

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.omega, self.anchor = load_importance_state(self.name, state)
