"""Sparse training with residual memory: each step applies only k entries per tensor.

Per step and parameter tensor (plain SGD accumulation)::

    accumulated = residual + lr * grad
    idx         = selector(accumulated, k)           # k = max(1, round(ratio * numel))
    w[idx]     -= accumulated[idx]                   # the only entries that change
    residual    = accumulated, zero at idx           # the rest waits for a later step

so nothing of the gradient is lost, only delayed (``applied + residual == accumulated``). The
optimizer keeps, per tensor, which entries actually changed since :meth:`mark`; an update job
ships the union over its steps (:meth:`changed_since_mark`). Momentum, weight decay and Adam are
not supported: their state would move every weight; the residual plays the role of memory.

Example:
    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> net = torch.nn.Linear(100, 2)
    >>> optimizer = SparseResidualSGD(net.named_parameters(), lr=0.1, ratio=0.05)
    >>> x, y = torch.randn(16, 100), torch.randint(0, 2, (16,))
    >>> optimizer.mark()
    >>> for _ in range(3):
    ...     optimizer.zero_grad()
    ...     torch.nn.functional.cross_entropy(net(x), y).backward()
    ...     _ = optimizer.step()
    >>> changed = optimizer.changed_since_mark()
    >>> sorted(changed), 10 <= len(changed["weight"]) <= 30, len(changed["bias"])
    (['bias', 'weight'], True, 2)
    >>> 0 < optimizer.stats["select_s"] < optimizer.stats["step_s"]
    True

References:
    Prapas, I., Derakhshan, B., Mahdiraji, A. R., & Markl, V. (2021). Continuous training and
    deployment of deep learning models. Datenbank-Spektrum, 21(3), 203-212 (sparse updates of
    proactive training, so that a deployment ships a fraction of the weights).
    Aji, A. F., & Heafield, K. (2017). Sparse communication for distributed gradient descent.
    EMNLP 2017 (top-k with the residual kept locally).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from model_factory.sparse.selectors import Selector, k_for, make_selector


class SparseResidualSGD(torch.optim.Optimizer):
    """SGD that applies ``k`` entries of ``residual + lr * grad`` per tensor and step.

    Parameters:
        params: parameters, or ``named_parameters()`` (names then key :meth:`changed_since_mark`),
            or parameter groups (each may set its own ``lr`` and ``ratio``).
        lr: step size (> 0).
        ratio: share of each tensor's entries applied per step, in (0, 1]; at least one entry.
        selector: a :data:`~model_factory.sparse.selectors.SELECTORS` name or a selector.
        seed: seeds a selector built from its name (random-k draws).

    ``stats`` (reset by :meth:`reset_stats`): ``steps``; ``selected`` (entries applied);
    ``select_s``, time in the selector; ``step_s``, time in ``step`` (selection included, the
    closure excluded); ``closure_s``, time in the closure (forward and backward) when one is
    passed. ``select_s / step_s`` is the selector's share of the update.
    """

    def __init__(self, params: Iterable[Any], lr: float, ratio: float,
                 selector: str | Selector = "topk", seed: int = 0):
        if not lr > 0:
            raise ValueError(f"lr must be > 0 (got {lr})")
        if not 0 < ratio <= 1:
            raise ValueError(f"ratio must be in (0, 1] (got {ratio})")
        super().__init__(params, {"lr": lr, "ratio": ratio})
        self.selector = make_selector(selector, seed) if isinstance(selector, str) else selector
        self.stats: dict[str, float] = {}
        self.reset_stats()

    def reset_stats(self) -> None:
        self.stats = {"steps": 0, "selected": 0, "select_s": 0.0, "step_s": 0.0,
                      "closure_s": 0.0}

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One sparse step; returns the closure's loss (``None`` without a closure)."""
        loss = None
        if closure is not None:
            start = time.perf_counter()
            with torch.enable_grad():
                loss = closure()
            self.stats["closure_s"] += time.perf_counter() - start
        start = time.perf_counter()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                self._sparse_step(param, group["lr"], group["ratio"])
        self.stats["steps"] += 1
        self.stats["step_s"] += time.perf_counter() - start
        return loss

    def _sparse_step(self, param: Tensor, lr: float, ratio: float) -> None:
        state = self.state[param]
        if not state:
            state["residual"] = torch.zeros_like(param, memory_format=torch.contiguous_format)
            state["changed"] = torch.zeros(param.shape, dtype=torch.bool, device=param.device)
        accumulated = state["residual"].add_(param.grad, alpha=lr).view(-1)
        start = time.perf_counter()
        index = self.selector.select(accumulated, k_for(accumulated.numel(), ratio))
        self.stats["select_s"] += time.perf_counter() - start
        weights = param.view(-1)
        before = weights[index]
        after = before - accumulated[index]
        weights[index] = after
        accumulated[index] = 0
        # Entries whose change rounds away (|step| below half an ulp of the weight) stay unchanged
        # and out of the set: it lists exactly the entries whose bits differ.
        state["changed"].view(-1)[index[after != before]] = True
        self.stats["selected"] += len(index)

    def mark(self) -> None:
        """Start a new update: forget which entries changed so far (the residual stays)."""
        for state in self.state.values():
            if "changed" in state:
                state["changed"].zero_()

    def _named_params(self) -> Iterable[tuple[str, Tensor]]:
        position = 0
        for group in self.param_groups:
            names = group.get("param_names")
            for i, param in enumerate(group["params"]):
                yield (names[i] if names else str(position)), param
                position += 1

    def changed_since_mark(self) -> dict[str, Tensor]:
        """Per parameter (by name, or by position as ``"0"``, ``"1"``, ...): the flat positions
        (int64, ascending) whose value changed since :meth:`mark` or since the optimizer was
        created; parameters never stepped have none."""
        out = {}
        for name, param in self._named_params():
            changed = self.state[param].get("changed") if param in self.state else None
            out[name] = (torch.nonzero(changed.view(-1)).squeeze(1) if changed is not None
                         else torch.empty(0, dtype=torch.int64, device=param.device))
        return out

    def changed_count(self) -> int:
        """Entries changed since :meth:`mark`, over all parameters."""
        return sum(int(state["changed"].sum()) for state in self.state.values()
                   if "changed" in state)

    def residual_norm(self) -> float:
        """L2 norm of everything accumulated but not applied yet (all parameters)."""
        return float(sum(float(state["residual"].float().pow(2).sum())
                         for state in self.state.values() if "residual" in state) ** 0.5)

    def state_dict(self) -> dict[str, Any]:
        """The optimizer's state (residuals, changed sets, groups) and the selector's state,
        tensors and plain values only (loadable with ``weights_only=True``)."""
        out = super().state_dict()
        out["selector"] = self.selector.state_dict()
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        selector_state = state_dict.pop("selector", {})
        super().load_state_dict(state_dict)
        self.selector.load_state_dict(selector_state)
        for state in self.state.values():
            if "changed" in state:  # the base class casts every tensor to the parameter's dtype
                state["changed"] = state["changed"].bool()
