"""Memory Aware Synapses (Aljundi et al. 2018): importance from the sensitivity of the outputs."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from model_factory.strategies.base import (
    Batch, CLStrategy, check_number, copy_params, pop_alias, register, reject_unknown)
from model_factory.strategies.importance import (
    importance_state, load_importance_state, merge_importance, on_model_device,
    per_sample_grad_mean, quadratic_penalty)


@register
class MAS(CLStrategy):
    """Pull back the parameters to which the model's outputs are most sensitive, without labels:
    ``lambda * sum_i Omega_i (theta_i - theta*_i)^2``.

    At the end of an experience ``after_experience`` measures, at the current parameters, the
    unsupervised importance of the paper::

        Omega_new_i = 1/N sum_n | d ||f(x_n)||_2^2 / d theta_i |

    over the experience's ``N`` samples, ``f(x)`` the model's output vector (the logits, no
    softmax) in eval mode, each sample's gradient computed on its own. The first experience
    sets ``Omega = Omega_new``; each later one ``Omega = alpha * Omega + (1 - alpha) *
    Omega_new``. The anchor ``theta*`` is the parameters at the end of the latest experience.
    The penalty is zero before the first experience ends. Layers grown since (NC updates) are
    penalised on their old units only.

    Parameters:
        lambda_: strength, > 0 (config key ``lambda``; default 1.0).
        alpha: weight of the old importance when a new one is merged in, in [0, 1)
            (default 0.5).

    Examples:
        >>> import torch
        >>> from model_factory.strategies import make_strategy
        >>> from model_factory.training import fit_experience
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Linear(3, 2)
        >>> data = [(torch.randn(16, 3), torch.randint(0, 2, (16,)))]
        >>> mas = make_strategy("mas", **{"lambda": 1.0, "alpha": 0.5})
        >>> _ = fit_experience(model, data, mas, torch.optim.SGD(model.parameters(), lr=0.1))
        >>> sorted(mas.omega), mas.omega["weight"].shape
        (['bias', 'weight'], torch.Size([2, 3]))
        >>> x = data[0][0]
        >>> mas.penalty(model, x, model(x)).item()
        0.0
        >>> with torch.no_grad():
        ...     _ = model.weight.add_(0.5)
        >>> mas.penalty(model, x, model(x)).item() > 0
        True

    References:
        Aljundi, R., Babiloni, F., Elhoseiny, M., Rohrbach, M., & Tuytelaars, T. (2018).
        Memory Aware Synapses: Learning what (not) to forget. ECCV, 139-154.
    """

    name = "mas"

    def __init__(self, *, lambda_: float | None = None, alpha: float = 0.5, **params: Any):
        lambda_ = pop_alias(self.name, params, "lambda", "lambda_", lambda_, default=1.0)
        reject_unknown(self.name, params, ("lambda", "alpha"))
        self.lambda_ = check_number(self.name, "lambda", lambda_, "> 0", lambda v: v > 0)
        self.alpha = check_number(self.name, "alpha", alpha, "in [0, 1)", lambda a: 0 <= a < 1)
        self.omega: dict[str, Tensor] = {}
        self.anchor: dict[str, Tensor] = {}

    @classmethod
    def unit_test_params(cls) -> Iterator[dict[str, Any]]:
        yield {"lambda": 1.0}
        yield {"lambda_": 2.0, "alpha": 0.0}

    def before_experience(self, model: nn.Module) -> None:
        self.omega = on_model_device(model, self.omega)
        self.anchor = on_model_device(model, self.anchor)

    def penalty(self, model: nn.Module, inputs: Tensor, logits: Tensor) -> Tensor:
        if not self.omega:
            return logits.new_zeros(())
        return self.lambda_ * quadratic_penalty(model, self.omega, self.anchor)

    def after_experience(self, model: nn.Module, loader: Iterable[Batch]) -> None:
        fresh = per_sample_grad_mean(model, loader, _squared_norm, torch.abs)
        self.omega = fresh if not self.omega else merge_importance(
            self.omega, fresh, keep=self.alpha, add=1 - self.alpha)
        self.anchor = copy_params(model)

    def state_dict(self) -> dict[str, Tensor]:
        """``omega.<parameter>`` and ``anchor.<parameter>`` (empty before the first
        experience ends)."""
        return importance_state(self.omega, self.anchor)

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.omega, self.anchor = load_importance_state(self.name, state)


def _squared_norm(output: Tensor, target: Tensor) -> Tensor:
    """``||f(x)||_2^2`` of one sample's output; MAS needs no label."""
    return output.square().sum()
