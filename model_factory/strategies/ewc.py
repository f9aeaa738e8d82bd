"""Elastic Weight Consolidation (Kirkpatrick et al. 2017), separate and online (Schwarz et al.
2018)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model_factory.strategies.base import (
    Batch, CLStrategy, check_number, copy_params, pop_alias, register, reject_unknown)
from model_factory.strategies.importance import (
    merge_importance, on_model_device, per_sample_grad_mean, quadratic_penalty)

MODES = ("separate", "online")


@register
class EWC(CLStrategy):
    """Pull each parameter back to where past experiences left it, in proportion to its diagonal
    Fisher information: ``lambda/2 * sum_i F_i (theta_i - theta*_i)^2``.

    At the end of an experience, ``after_experience`` takes the anchor ``theta*`` (a copy of the
    parameters) and the diagonal empirical Fisher at ``theta*``::

        F_i = 1/N sum_n (d log p(y_n | x_n, theta) / d theta_i)^2

    over the experience's first ``N = min(fisher_samples, samples)`` samples, ``y_n`` the true
    label and ``p`` the softmax of the model's logits (the model in eval mode). Each sample's
    gradient is computed on its own (``torch.func.vmap``), not squared as a batch mean.

    ``separate`` keeps one (Fisher, anchor) pair per experience and sums their penalties
    (memory grows with the experiences); ``online`` keeps one: ``F = gamma * F_old + F_new``
    anchored at the latest parameters. Before the first experience ends the penalty is zero.
    Layers grown since (NC updates) are penalised on their old units only.

    Parameters:
        lambda_: strength, > 0 (config key ``lambda``; default 1.0).
        mode: ``"separate"`` (default) or ``"online"``.
        gamma: decay of the old Fisher in online mode, in (0, 1] (default 1.0; only online).
        fisher_samples: at most this many samples per experience estimate the Fisher, >= 1
            (default: all the loader yields).

    Examples:
        >>> import torch
        >>> from model_factory.strategies import make_strategy
        >>> from model_factory.training import fit_experience
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Linear(3, 2)
        >>> data = [(torch.randn(16, 3), torch.randint(0, 2, (16,)))]
        >>> ewc = make_strategy("ewc", **{"lambda": 100.0, "mode": "online", "gamma": 0.9})
        >>> x = data[0][0]
        >>> ewc.penalty(model, x, model(x)).item()
        0.0
        >>> _ = fit_experience(model, data, ewc, torch.optim.SGD(model.parameters(), lr=0.1))
        >>> ewc.penalty(model, x, model(x)).item()
        0.0
        >>> with torch.no_grad():
        ...     _ = model.bias.add_(1.0)
        >>> ewc.penalty(model, x, model(x)).item() > 0
        True

    References:
        Kirkpatrick, J. et al. (2017). Overcoming catastrophic forgetting in neural networks.
        PNAS, 114(13), 3521-3526.
        Schwarz, J. et al. (2018). Progress & Compress: A scalable framework for continual
        learning. ICML (online EWC).
    """

    name = "ewc"

    def __init__(self, *, lambda_: float | None = None, mode: str = "separate",
                 gamma: float = 1.0, fisher_samples: int | None = None, **params: Any):
        lambda_ = pop_alias(self.name, params, "lambda", "lambda_", lambda_, default=1.0)
        reject_unknown(self.name, params, ("lambda", "mode", "gamma", "fisher_samples"))
        self.lambda_ = check_number(self.name, "lambda", lambda_, "> 0", lambda v: v > 0)
        if mode not in MODES:
            raise ValueError(f"strategy 'ewc': mode must be one of {', '.join(MODES)} "
                             f"(got {mode!r})")
        self.mode = mode
        self.gamma = check_number(self.name, "gamma", gamma, "in (0, 1]", lambda g: 0 < g <= 1)
        if mode == "separate" and self.gamma != 1.0:
            raise ValueError(f"strategy 'ewc': gamma applies to mode 'online' only (got gamma "
                             f"{gamma} with mode 'separate')")
        if fisher_samples is not None and (isinstance(fisher_samples, bool) or not isinstance(
                fisher_samples, int) or fisher_samples < 1):
            raise ValueError(f"strategy 'ewc': fisher_samples must be an integer >= 1 or "
                             f"None for all (got {fisher_samples!r})")
        self.fisher_samples = fisher_samples
        # One (Fisher, anchor) per consolidated experience; at most one in online mode.
        self.consolidated: list[tuple[dict[str, Tensor], dict[str, Tensor]]] = []

    @classmethod
    def unit_test_params(cls) -> Iterator[dict[str, Any]]:
        yield {"lambda": 10.0}
        yield {"lambda_": 10.0, "mode": "online", "gamma": 0.9, "fisher_samples": 8}

    def before_experience(self, model: nn.Module) -> None:
        self.consolidated = [(on_model_device(model, fisher), on_model_device(model, anchor))
                             for fisher, anchor in self.consolidated]

    def penalty(self, model: nn.Module, inputs: Tensor, logits: Tensor) -> Tensor:
        if not self.consolidated:
            return logits.new_zeros(())
        return self.lambda_ / 2 * sum(quadratic_penalty(model, fisher, anchor)
                                      for fisher, anchor in self.consolidated)

    def after_experience(self, model: nn.Module, loader: Iterable[Batch]) -> None:
        fisher = per_sample_grad_mean(model, loader, F.cross_entropy, torch.square,
                                      self.fisher_samples)
        anchor = copy_params(model)
        if self.mode == "separate":
            self.consolidated.append((fisher, anchor))
        elif not self.consolidated:
            self.consolidated = [(fisher, anchor)]
        else:
            old_fisher, _ = self.consolidated[0]
            self.consolidated = [(merge_importance(old_fisher, fisher, keep=self.gamma, add=1.0),
                                  anchor)]

    def state_dict(self) -> dict[str, Tensor]:
        """``fisher.<k>.<parameter>`` and ``anchor.<k>.<parameter>`` for experience ``k``
        (``k`` is always 0 in online mode)."""
        state = {}
        for k, (fisher, anchor) in enumerate(self.consolidated):
            state |= {f"fisher.{k}.{name}": t for name, t in fisher.items()}
            state |= {f"anchor.{k}.{name}": t for name, t in anchor.items()}
        return state

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        groups: dict[int, tuple[dict[str, Tensor], dict[str, Tensor]]] = {}
        for key, tensor in state.items():
            kind, _, rest = key.partition(".")
            index, _, name = rest.partition(".")
            if kind not in ("fisher", "anchor") or not index.isdigit() or not name:
                raise ValueError(f"strategy 'ewc': unexpected state key '{key}'")
            fisher, anchor = groups.setdefault(int(index), ({}, {}))
            (fisher if kind == "fisher" else anchor)[name] = tensor
        if sorted(groups) != list(range(len(groups))) or any(
                fisher.keys() != anchor.keys() for fisher, anchor in groups.values()):
            raise ValueError("strategy 'ewc': state must hold a Fisher and an anchor for the "
                             f"same parameters of experiences 0..k (got {sorted(state)})")
        if self.mode == "online" and len(groups) > 1:
            raise ValueError(f"strategy 'ewc': online mode keeps one Fisher, the state holds "
                             f"{len(groups)} (saved in mode 'separate'?)")
        self.consolidated = [groups[k] for k in range(len(groups))]
