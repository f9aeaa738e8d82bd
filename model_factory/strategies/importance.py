"""Per-parameter importance, shared by the quadratic-penalty strategies (EWC, SI, MAS).

Each of them keeps an importance ``omega`` and an anchor ``theta*`` per trainable parameter (by
name, as :func:`~model_factory.strategies.base.trainable` yields them) and penalises
``sum_i omega_i (theta_i - theta*_i)^2``. Importance and anchors are taken at the end of an
experience; when a class-incremental update then grows a layer (a head with more output units),
only the leading block of the grown parameter (the old units) is penalised, and a merge of an
old and a new importance zero-pads the old one: new units start with no importance.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from model_factory.strategies.base import Batch, trainable

# Per-sample gradients held at once, in floats (256 MiB in float32): bounds the memory of
# ``per_sample_grad_mean`` for large models (ResNet-18: 11.2M parameters -> 5 samples at once).
_PER_SAMPLE_FLOATS = 2**26
_MAX_CHUNK = 64


def leading(name: str, shape: torch.Size, param: Tensor) -> tuple[slice, ...]:
    """The index of the block of ``param`` that a tensor of ``shape`` taken earlier covers.

    Raises ``ValueError`` when ``param`` has another number of dimensions or shrank.

    Examples:
        >>> leading("head.weight", torch.Size([2, 3]), torch.zeros(4, 3))
        (slice(0, 2, None), slice(0, 3, None))
    """
    if param.dim() != len(shape) or any(s > n for s, n in zip(shape, param.shape, strict=True)):
        raise ValueError(f"parameter '{name}' changed shape from {tuple(shape)} to "
                         f"{tuple(param.shape)}; only growth (e.g. more output units) is "
                         "supported")
    return tuple(slice(0, s) for s in shape)


def on_model_device(model: nn.Module, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """``tensors`` (by parameter name) moved to the device of the model's parameter of that name,
    so that state loaded on the CPU is not copied to the accelerator at every batch."""
    devices = {name: p.device for name, p in model.named_parameters()}
    return {name: t.to(devices.get(name, t.device)) for name, t in tensors.items()}


def quadratic_penalty(model: nn.Module, importance: dict[str, Tensor],
                      anchor: dict[str, Tensor]) -> Tensor:
    """``sum_i importance_i (theta_i - anchor_i)^2`` over the model's trainable parameters that
    have an importance (a scalar tensor; parameters added since are free).

    Examples:
        >>> model = nn.Linear(1, 1, bias=False)
        >>> with torch.no_grad():
        ...     _ = model.weight.fill_(3.0)
        >>> quadratic_penalty(model, {"weight": torch.tensor([[0.5]])},
        ...                   {"weight": torch.tensor([[1.0]])}).item()
        2.0
    """
    total: Tensor | None = None
    for name, param in trainable(model):
        if name not in importance:
            continue
        omega = importance[name].to(param.device)
        theta = param[leading(name, omega.shape, param)]
        term = (omega * (theta - anchor[name].to(param.device)).square()).sum()
        total = term if total is None else total + term
    if total is None:
        raise ValueError(f"none of the model's trainable parameters has an importance "
                         f"(importance is kept for: {', '.join(sorted(importance))})")
    return total


def merge_importance(old: dict[str, Tensor], new: dict[str, Tensor], keep: float,
                     add: float) -> dict[str, Tensor]:
    """``keep * old + add * new`` per parameter of ``new``; an ``old`` tensor smaller than its
    ``new`` one (a grown layer) is zero-padded, one missing counts as zero.

    Examples:
        >>> merge_importance({"w": torch.ones(1)}, {"w": torch.ones(2)}, keep=0.5, add=1.0)
        {'w': tensor([1.5000, 1.0000])}
    """
    merged = {}
    for name, fresh in new.items():
        out = add * fresh
        if name in old:
            out[leading(name, old[name].shape, fresh)] += keep * old[name].to(fresh.device)
        merged[name] = out
    return merged


def per_sample_grad_mean(model: nn.Module, loader: Iterable[Batch],
                         sample_loss: Callable[[Tensor, Tensor], Tensor],
                         transform: Callable[[Tensor], Tensor],
                         max_samples: int | None = None) -> dict[str, Tensor]:
    """``mean_n transform(d sample_loss(model(x_n), y_n) / d theta)`` per trainable parameter.

    The gradient is taken for each sample on its own (``torch.func.vmap`` over ``grad``), so a
    non-linear ``transform`` (square, absolute value) is applied per sample, not to a batch
    mean. ``sample_loss`` gets the model's output for one sample with a batch axis of 1 (shape
    ``[1, C]``) and that sample's target (shape ``[1]``). The model runs in eval mode (dropout
    off, batch-norm on its running statistics) at its current parameters, and is put back in
    the mode it was in. ``max_samples``: use only the first that many samples ``loader`` yields
    (all by default).

    Examples:
        >>> model = nn.Linear(1, 1, bias=False)
        >>> with torch.no_grad():
        ...     _ = model.weight.fill_(2.0)
        >>> data = [(torch.tensor([[1.0], [3.0]]), torch.zeros(2))]
        >>> per_sample_grad_mean(model, data, lambda out, y: out.square().sum(), torch.abs)
        {'weight': tensor([[20.]])}
    """
    params = {name: p.detach() for name, p in trainable(model)}
    if not params:
        raise ValueError("the model has no trainable parameters")
    buffers = dict(model.named_buffers())

    def loss_of_one(params: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        output = functional_call(model, (params, buffers), (x.unsqueeze(0),))
        return sample_loss(output, y.unsqueeze(0))

    per_sample = vmap(grad(loss_of_one), in_dims=(None, 0, 0))
    size = sum(p.numel() for p in params.values())
    chunk = max(1, min(_MAX_CHUNK, _PER_SAMPLE_FLOATS // size))
    total = {name: torch.zeros_like(p) for name, p in params.items()}
    seen = 0
    was_training = model.training
    model.eval()
    try:
        for inputs, targets in loader:
            take = len(inputs) if max_samples is None else min(len(inputs), max_samples - seen)
            for start in range(0, take, chunk):
                stop = min(start + chunk, take)
                grads = per_sample(params, inputs[start:stop], targets[start:stop])
                for name, g in grads.items():
                    total[name] += transform(g).sum(dim=0)
            seen += take
            if max_samples is not None and seen >= max_samples:
                break
    finally:
        model.train(was_training)
    if seen == 0:
        raise ValueError("no samples to estimate the importance from: the loader is empty")
    return {name: t / seen for name, t in total.items()}


def importance_state(omega: dict[str, Tensor], anchor: dict[str, Tensor]) -> dict[str, Tensor]:
    """``omega.<parameter>`` and ``anchor.<parameter>``: the state of SI and MAS."""
    return ({f"omega.{name}": t for name, t in omega.items()}
            | {f"anchor.{name}": t for name, t in anchor.items()})


def load_importance_state(strategy: str, state: dict[str, Tensor]
                          ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """``(omega, anchor)`` back from :func:`importance_state`; a ``ValueError`` for any other
    key or when they do not cover the same parameters."""
    omega: dict[str, Tensor] = {}
    anchor: dict[str, Tensor] = {}
    for key, tensor in state.items():
        kind, _, name = key.partition(".")
        if kind not in ("omega", "anchor") or not name:
            raise ValueError(f"strategy '{strategy}': unexpected state key '{key}'")
        (omega if kind == "omega" else anchor)[name] = tensor
    if omega.keys() != anchor.keys():
        raise ValueError(f"strategy '{strategy}': state must hold omega and anchor for the "
                         f"same parameters (got {sorted(state)})")
    return omega, anchor
