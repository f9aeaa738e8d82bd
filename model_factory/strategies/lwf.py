"""Learning without Forgetting (Li & Hoiem 2017): distil the previous model's outputs."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model_factory.strategies.base import (
    Batch, CLStrategy, check_number, register, reject_unknown)

_PREFIX = "old_model."


@register
class LwF(CLStrategy):
    """Keep the model's outputs on new data close to those of the model as it was after the last
    experience: ``alpha * T^2 * KL(softmax(old / T) || softmax(new / T))``.

    ``after_experience`` keeps a frozen deep copy of the model (eval mode, no gradients). On
    each batch the copy computes the old logits of the same inputs; the KL divergence between
    the two temperature-softened distributions is summed over the old model's ``K`` output
    units and averaged over the batch (logits of shape ``[N, C]``). When the model has grown
    more output units since (NC updates), only its first ``K`` are distilled. The ``T^2``
    factor keeps the gradient's scale independent of the temperature (Hinton et al. 2015).
    The penalty is zero before the first experience ends.

    ``state_dict()`` holds the old model's ``state_dict()`` under ``old_model.``. A strategy
    built from a config knows no architecture, so ``load_state_dict`` keeps the tensors and the
    next ``penalty`` call rebuilds the old model from them: a deep copy of the current model
    whose parameters and buffers are replaced by the stored tensors (replaced, not copied into,
    so a head stored before the model grew keeps its old shape). The model must have the same
    parameter and buffer names as the stored one.

    Parameters:
        alpha: weight of the distillation term, > 0 (default 1.0).
        temperature: softmax temperature ``T``, > 0 (default 2.0, as in the paper).

    Examples:
        >>> import torch
        >>> from model_factory.strategies import make_strategy
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Linear(3, 2)
        >>> x = torch.randn(4, 3)
        >>> lwf = make_strategy("lwf", alpha=1.0, temperature=2.0)
        >>> lwf.after_experience(model, [(x, torch.zeros(4, dtype=torch.long))])
        >>> lwf.penalty(model, x, model(x)).item()
        0.0
        >>> grown = nn.Linear(3, 3)  # one more class; its first two units are the old ones
        >>> with torch.no_grad():
        ...     _ = grown.weight[:2].copy_(model.weight), grown.bias[:2].copy_(model.bias)
        >>> lwf.penalty(grown, x, grown(x)).item()
        0.0
        >>> with torch.no_grad():
        ...     _ = grown.bias[0].add_(1.0)
        >>> lwf.penalty(grown, x, grown(x)).item() > 0
        True

    References:
        Li, Z., & Hoiem, D. (2017). Learning without Forgetting. IEEE TPAMI, 40(12),
        2935-2947.
        Hinton, G., Vinyals, O., & Dean, J. (2015). Distilling the knowledge in a neural
        network. arXiv:1503.02531.
    """

    name = "lwf"

    def __init__(self, *, alpha: float = 1.0, temperature: float = 2.0, **params: Any):
        reject_unknown(self.name, params, ("alpha", "temperature"))
        self.alpha = check_number(self.name, "alpha", alpha, "> 0", lambda v: v > 0)
        self.temperature = check_number(self.name, "temperature", temperature, "> 0",
                                        lambda v: v > 0)
        self.old_model: nn.Module | None = None
        self._loaded: dict[str, Tensor] = {}  # loaded, not yet rebuilt into ``old_model``

    @classmethod
    def unit_test_params(cls) -> Iterator[dict[str, Any]]:
        yield {}
        yield {"alpha": 0.5, "temperature": 1.0}

    def penalty(self, model: nn.Module, inputs: Tensor, logits: Tensor) -> Tensor:
        if self.old_model is None and self._loaded:
            self.old_model = _rebuild(model, self._loaded)
            self._loaded = {}
        if self.old_model is None:
            return logits.new_zeros(())
        with torch.no_grad():
            old_logits = self.old_model(inputs)
        units = old_logits.shape[-1]
        if logits.shape[-1] < units:
            raise ValueError(f"strategy 'lwf': the model has {logits.shape[-1]} output units, "
                             f"fewer than the {units} of the old model")
        t = self.temperature
        divergence = F.kl_div(F.log_softmax(logits[..., :units] / t, dim=-1),
                              F.log_softmax(old_logits / t, dim=-1),
                              reduction="batchmean", log_target=True)
        return self.alpha * t**2 * divergence

    def after_experience(self, model: nn.Module, loader: Iterable[Batch]) -> None:
        self.old_model = _frozen_copy(model)
        self._loaded = {}

    def state_dict(self) -> dict[str, Tensor]:
        """``old_model.<key>`` for every entry of the old model's ``state_dict()`` (empty before
        the first experience ends)."""
        tensors = self._loaded if self.old_model is None else self.old_model.state_dict()
        return {_PREFIX + key: t for key, t in tensors.items()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        wrong = sorted(key for key in state if not key.startswith(_PREFIX))
        if wrong:
            raise ValueError(f"strategy 'lwf': unexpected state keys {wrong} (expected "
                             f"'{_PREFIX}<key>')")
        self._loaded = {key[len(_PREFIX):]: t for key, t in state.items()}
        self.old_model = None


def _frozen_copy(model: nn.Module) -> nn.Module:
    old = copy.deepcopy(model).eval().requires_grad_(False)
    for p in old.parameters():
        p.grad = None
    return old


def _rebuild(model: nn.Module, state: dict[str, Tensor]) -> nn.Module:
    """A frozen copy of ``model`` holding ``state``'s tensors in place of its own (any shape)."""
    expected = set(model.state_dict())
    if expected != set(state):
        raise ValueError("strategy 'lwf': the stored old model does not fit this model (keys "
                         f"only stored: {sorted(set(state) - expected)}, only in the model: "
                         f"{sorted(expected - set(state))})")
    old = _frozen_copy(model)
    for key, tensor in state.items():
        owner_name, _, leaf = key.rpartition(".")
        owner = old.get_submodule(owner_name)
        current = getattr(owner, leaf)
        if isinstance(current, nn.Parameter):
            setattr(owner, leaf, nn.Parameter(tensor.to(current.device), requires_grad=False))
        else:
            setattr(owner, leaf, tensor.to(current.device))
    return old
