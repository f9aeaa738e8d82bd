"""Deep Partial Updating (Qu, Liu & Thiele): ship a few weights, chosen after a full update.

Starting from the weights the device holds, ``w`` (the deployed weights, or fresh random weights
regenerated on the device from a seed, see :class:`ReinitRule`):

1. **full update** ``w -> w^f`` with a normal optimizer, recording every step ``t``'s gradient
   ``g_t`` and weight change ``dw_t``;
2. **contributions** per weight: global ``0.5 * (w^f - w)^2`` (the weight's share of the
   second-order bound on the loss gap between partial and full updating), local
   ``-sum_t g_t * dw_t`` (its share of the loss decrease along the path); each is divided by
   its sum over all weights and they are mixed ``global_weight : 1 - global_weight``;
3. **mask**: the ``max(1, round(ratio * I))`` largest contributions over all parameter tensors
   together (``I`` = every parameter entry, biases included; ties to the lowest positions);
4. **rewind**: weights outside the mask get ``w`` back bit for bit, the masked keep ``w^f``;
5. **sparse fine-tuning** of the masked weights only: gradients outside the mask are zeroed and,
   after each step, the entries outside the mask are written back from ``w``, so they stay
   bit-identical whatever the optimizer does;
6. with ``validate``: the rewound model and the model after each fine-tuning epoch are
   candidates; the best is shipped only if its accuracy is strictly above the deployed model's,
   otherwise **no update** (nothing is shipped).

Buffers (batch-norm running statistics) are not parameters: they keep what training left and
are shipped whole when they changed (:attr:`PartialUpdate.delta` counts them).

Differences from the authors' code (github.com/zqu1992/DPU): there, only conv/linear weight
matrices are partially updated while biases and batch-norm parameters are trained and sent in
full, and the mask takes ``int(ratio * I)`` entries; here every parameter is in the mask, so
``ratio`` bounds all parameter bytes. Only the re-initialised model is tried when re-init is due
there; here a round whose re-initialised candidate does not pass validation falls back to a
partial update of the deployed weights (:func:`partial_update_round`).

Example:
    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    >>> deployed = {name: t.clone() for name, t in net.state_dict().items()}
    >>> x = torch.randn(256, 4); y = (x[:, 0] > 0).long()
    >>> batches = list(zip(x.split(32), y.split(32)))
    >>> accuracy = lambda model: float((model(x).argmax(1) == y).float().mean())
    >>> update = partial_update(net, deployed, batches, ratio=0.1, epochs_full=5,
    ...                         epochs_finetune=5, lr=0.01, validate=accuracy)
    >>> update.updated, update.masked, update.accuracy_after > update.accuracy_before
    (True, 11, True)
    >>> update.delta.changed <= 11 and update.delta.nbytes() < 0.2 * 4 * update.total
    True

References:
    Qu, Z., Liu, C., & Thiele, L. (2022). Deep Partial Updating: Towards communication efficient
    updating for on-device inference. ECCV 2022 (arXiv:2007.03071), Sect. 3 and Alg. 2.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from model_factory.sparse.delta import SparseDelta
from model_factory.sparse.selectors import k_for, topk_indices
from model_factory.strategies.base import CLStrategy
from model_factory.training import fit_experience

Batch = tuple[Tensor, Tensor]
Validate = Callable[[nn.Module], float]

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {"adam": torch.optim.Adam,
                                                      "sgd": torch.optim.SGD}


@dataclass(frozen=True)
class PartialUpdate:
    """The outcome of one partial update.

    ``state``: the weights to serve (a full state dict): the update applied, or the deployed
    weights when ``updated`` is false. ``delta``: what to ship (empty without an update);
    with ``reinit_seed`` set, the device first regenerates its weights with
    :func:`fresh_weights` from that seed and then applies ``delta``. ``mask``: per parameter
    name, the entries allowed to change (``masked`` of ``total`` parameter entries).
    ``accuracy_before`` / ``accuracy_after``: the deployed and the shipped model's validation
    accuracy (``None`` without ``validate``). ``seconds``: wall time of ``full``, ``select``
    (contributions and mask), ``finetune``, ``validate`` and ``total``.
    """

    updated: bool
    state: dict[str, Tensor]
    delta: SparseDelta
    mask: dict[str, Tensor]
    masked: int
    total: int
    reinit_seed: int | None
    accuracy_before: float | None
    accuracy_after: float | None
    reason: str
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def share_changed(self) -> float:
        """Share of all state entries (parameters and buffers) shipped."""
        return self.delta.changed / max(self.delta.total, 1)


def _network(model: Any) -> nn.Module:
    """The ``nn.Module`` of a model: a :class:`~model_factory.templates.Classifier`'s ``net``,
    or the module itself."""
    net = getattr(model, "net", model)
    if not isinstance(net, nn.Module):
        raise TypeError(f"expected an nn.Module or a model with a .net module (got "
                        f"{type(model).__name__})")
    return net


def fresh_weights(model: Any, seed: int) -> dict[str, Tensor]:
    """Random initial weights of ``model``'s architecture, the same for the same ``seed``.

    A copy of the network has ``reset_parameters()`` called on every submodule that has one,
    in module order, under a generator seeded with ``seed`` (the global RNG is left as it was);
    the device runs the same function, so a re-initialisation ships only the seed.

    Examples:
        >>> net = torch.nn.Linear(3, 2)
        >>> a, b = fresh_weights(net, 5), fresh_weights(net, 5)
        >>> torch.equal(a["weight"], b["weight"]), torch.equal(a["weight"], net.weight)
        (True, False)
    """
    clone = copy.deepcopy(_network(model))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in clone.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
    return {name: t.detach().clone() for name, t in clone.state_dict().items()}


class _PathContribution(CLStrategy):
    """Training hooks adding each step's ``-g_t * dw_t`` to the local contribution."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.params = dict(net.named_parameters())
        self.local = {name: torch.zeros_like(p) for name, p in self.params.items()}
        self._grads: dict[str, Tensor] = {}
        self._weights: dict[str, Tensor] = {}

    def before_step(self, model: nn.Module) -> None:
        self._grads = {name: p.grad.detach().clone() for name, p in self.params.items()
                       if p.grad is not None}
        self._weights = {name: self.params[name].detach().clone() for name in self._grads}

    def after_step(self, model: nn.Module) -> None:
        for name, grad in self._grads.items():
            step = self.params[name].detach() - self._weights[name]
            self.local[name].sub_(grad * step)


class _FrozenOutsideMask(CLStrategy):
    """Training hooks that let only masked entries move: gradients outside the mask are zeroed
    before the step and the entries outside the mask are restored from ``start`` after it."""

    def __init__(self, net: nn.Module, mask: Mapping[str, Tensor], start: Mapping[str, Tensor]):
        super().__init__()
        self.params = dict(net.named_parameters())
        self.mask = mask
        self.start = start

    def before_step(self, model: nn.Module) -> None:
        for name, p in self.params.items():
            if p.grad is not None:
                p.grad.mul_(self.mask[name])

    @torch.no_grad()
    def after_step(self, model: nn.Module) -> None:
        for name, p in self.params.items():
            p.copy_(torch.where(self.mask[name], p, self.start[name]))


class _Paced(CLStrategy):
    """``inner``'s hooks, then ``between_steps`` after each step."""

    def __init__(self, inner: CLStrategy, between_steps: Callable[[], None] | None):
        self.inner = inner
        self.between_steps = between_steps

    def before_experience(self, model: nn.Module) -> None:
        self.inner.before_experience(model)

    def penalty(self, model: nn.Module, inputs: Tensor, logits: Tensor) -> Tensor:
        return self.inner.penalty(model, inputs, logits)

    def before_step(self, model: nn.Module) -> None:
        self.inner.before_step(model)

    def after_step(self, model: nn.Module) -> None:
        self.inner.after_step(model)
        if self.between_steps is not None:
            self.between_steps()

    def after_experience(self, model: nn.Module, loader: Any) -> None:
        self.inner.after_experience(model, loader)


def contribution_mask(start: Mapping[str, Tensor], full: Mapping[str, Tensor],
                      local: Mapping[str, Tensor], ratio: float,
                      global_weight: float = 0.5) -> dict[str, Tensor]:
    """Step 2-3: the mask of the ``max(1, round(ratio * I))`` largest mixed contributions.

    Parameters:
        start: the parameters before the full update (``w``), by name.
        full: the parameters after it (``w^f``), same names and shapes.
        local: each weight's ``-sum_t g_t * dw_t`` along the full update.
        ratio: share of all entries to keep, in (0, 1].
        global_weight: weight of the normalised global contribution, in [0, 1]; the local one
            gets the rest (the authors use 0.5).

    Returns:
        A bool tensor per name, shaped as the parameter, with exactly ``max(1, round(ratio *
        I))`` true entries over all of them.

    Examples:
        >>> start = {"w": torch.zeros(4)}
        >>> full = {"w": torch.tensor([0.1, -2.0, 0.3, 0.0])}
        >>> local = {"w": torch.tensor([0.0, 0.5, 0.6, 0.0])}
        >>> contribution_mask(start, full, local, ratio=0.5)["w"].tolist()
        [False, True, True, False]
    """
    if not 0 <= global_weight <= 1:
        raise ValueError(f"global_weight must be in [0, 1] (got {global_weight})")
    names = list(start)
    global_part = torch.cat([(0.5 * (full[n].detach() - start[n]) ** 2).reshape(-1)
                             for n in names])
    local_part = torch.cat([local[n].reshape(-1) for n in names])
    score = torch.zeros_like(global_part)
    for weight, part in ((global_weight, global_part), (1 - global_weight, local_part)):
        total = float(part.sum())
        if weight and total:
            score += weight * part / total
    chosen = torch.zeros(score.numel(), dtype=torch.bool)
    chosen[topk_indices(score, k_for(score.numel(), ratio), magnitude=False)] = True
    mask, offset = {}, 0
    for n in names:
        size = start[n].numel()
        mask[n] = chosen[offset:offset + size].reshape(start[n].shape).to(start[n].device)
        offset += size
    return mask


def _check_training(train_batches: Sequence[Batch], ratio: float, epochs_full: int,
                    epochs_finetune: int, optimizer: str) -> None:
    if not train_batches:
        raise ValueError("partial_update needs at least one training batch")
    if not 0 < ratio <= 1:
        raise ValueError(f"ratio must be in (0, 1] (got {ratio})")
    if epochs_full < 1 or epochs_finetune < 0:
        raise ValueError(f"epochs_full must be >= 1 and epochs_finetune >= 0 (got "
                         f"{epochs_full}, {epochs_finetune})")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer '{optimizer}' (expected one of: "
                         f"{', '.join(OPTIMIZERS)})")


def partial_update(model: Any, deployed_state: Mapping[str, Tensor],
                   train_batches: Sequence[Batch], ratio: float, *, epochs_full: int = 5,
                   epochs_finetune: int = 5, lr: float = 1e-3, optimizer: str = "adam",
                   seed: int = 0, validate: Validate | None = None,
                   reinit_seed: int | None = None, global_weight: float = 0.5,
                   between_steps: Callable[[], None] | None = None) -> PartialUpdate:
    """One round of Deep Partial Updating (see the module doc).

    Parameters:
        model: an ``nn.Module`` or a model with a ``.net`` module (a ``Classifier``); it only
            provides the architecture, and holds ``result.state`` on return.
        deployed_state: the state dict the device serves now.
        train_batches: ``(inputs, targets)`` batches (class indices), one pass per epoch, in
            this order; cross-entropy loss.
        ratio: share ``k`` of the parameter entries to update, in (0, 1].
        epochs_full: passes of the full update (step 1).
        epochs_finetune: passes of sparse fine-tuning (0: ship the rewound weights).
        lr: step size of both phases; optimizer: ``adam`` or ``sgd``, fresh for each phase.
        seed: seeds the global RNG for training (dropout, if any).
        validate: the accuracy (higher is better) of a network in eval mode; with it, the
            best candidate is shipped only if it beats the deployed weights.
        reinit_seed: start from :func:`fresh_weights` of this seed instead of the deployed
            weights (a re-initialisation; see :class:`ReinitRule`).
        global_weight: mix of the global and the local contribution (0.5 as the authors).
        between_steps: called after every optimizer step of both phases (a scheduling
            governor paces the job there).
    """
    _check_training(train_batches, ratio, epochs_full, epochs_finetune, optimizer)
    with torch.random.fork_rng(devices=[]):  # training draws (dropout) leave the caller's RNG
        torch.manual_seed(seed)
        return _partial_update(_network(model), deployed_state, train_batches, ratio,
                               epochs_full, epochs_finetune, OPTIMIZERS[optimizer], lr,
                               validate, reinit_seed, global_weight, between_steps)


def _partial_update(net: nn.Module, deployed_state: Mapping[str, Tensor],
                    train_batches: Sequence[Batch], ratio: float, epochs_full: int,
                    epochs_finetune: int, optimizer: type[torch.optim.Optimizer], lr: float,
                    validate: Validate | None, reinit_seed: int | None,
                    global_weight: float,
                    between_steps: Callable[[], None] | None = None) -> PartialUpdate:
    seconds = dict.fromkeys(("full", "select", "finetune", "validate"), 0.0)
    began = time.perf_counter()
    deployed = {name: t.detach().clone() for name, t in deployed_state.items()}

    def score() -> float:
        assert validate is not None
        start_s = time.perf_counter()
        net.eval()
        with torch.no_grad():
            value = float(validate(net))
        seconds["validate"] += time.perf_counter() - start_s
        return value

    net.load_state_dict(deployed)
    before = score() if validate else None
    start_state = deployed if reinit_seed is None else fresh_weights(net, reinit_seed)
    net.load_state_dict(start_state)
    start = {name: p.detach().clone() for name, p in net.named_parameters()}

    tic = time.perf_counter()
    path = _PathContribution(net)
    fit_experience(net, train_batches, _Paced(path, between_steps),
                   optimizer(net.parameters(), lr=lr), epochs=epochs_full)
    seconds["full"] = time.perf_counter() - tic

    tic = time.perf_counter()
    full = {name: p.detach().clone() for name, p in net.named_parameters()}
    mask = contribution_mask(start, full, path.local, ratio, global_weight)
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(torch.where(mask[name], full[name], start[name]))
    seconds["select"] = time.perf_counter() - tic

    best_state = {name: t.detach().clone() for name, t in net.state_dict().items()}
    best = score() if validate else None
    frozen = _Paced(_FrozenOutsideMask(net, mask, start), between_steps)
    finetune = optimizer(net.parameters(), lr=lr)
    for _ in range(epochs_finetune):
        tic = time.perf_counter()
        fit_experience(net, train_batches, frozen, finetune, epochs=1)
        seconds["finetune"] += time.perf_counter() - tic
        tuned = score() if validate else None
        if tuned is None or best is None or tuned > best:
            best, best_state = tuned, {n: t.detach().clone() for n, t in net.state_dict().items()}

    masked = sum(int(m.sum()) for m in mask.values())
    total = sum(m.numel() for m in mask.values())
    if validate and before is not None and best is not None and best <= before:
        net.load_state_dict(deployed)
        seconds["total"] = time.perf_counter() - began
        return PartialUpdate(
            updated=False, state=deployed, delta=SparseDelta.between(deployed, deployed),
            mask=mask, masked=masked, total=total, reinit_seed=None, accuracy_before=before,
            accuracy_after=before, seconds=seconds,
            reason=f"no update: validation accuracy {best:.4f} does not improve on the "
                   f"deployed model's {before:.4f}")
    net.load_state_dict(best_state)
    net.eval()
    seconds["total"] = time.perf_counter() - began
    return PartialUpdate(
        updated=True, state=best_state, delta=SparseDelta.between(start_state, best_state),
        mask=mask, masked=masked, total=total, reinit_seed=reinit_seed,
        accuracy_before=before, accuracy_after=best, seconds=seconds,
        reason=f"{masked} of {total} parameter entries updated"
               + (f" from the re-initialisation of seed {reinit_seed}"
                  if reinit_seed is not None else ""))


@dataclass
class ReinitRule:
    """When to restart from fresh random weights: once the data seen has doubled since the
    last (re-)initialisation, the authors' rule (a model fine-tuned from ever older weights
    falls behind one trained from scratch on all the data).

    Parameters:
        samples_at_last: samples the deployed weights were trained from scratch on (or last
            re-initialised with).
        seed: the seed of the fresh weights (:func:`fresh_weights`); the only thing shipped.

    Examples:
        >>> rule = ReinitRule(samples_at_last=400)
        >>> rule.due(799), rule.due(800)
        (False, True)
    """

    samples_at_last: int
    seed: int = 0

    def due(self, samples_seen: int) -> bool:
        """True once ``samples_seen`` is at least twice :attr:`samples_at_last`."""
        return samples_seen >= 2 * self.samples_at_last


def partial_update_round(model: Any, deployed_state: Mapping[str, Tensor],
                         train_batches: Sequence[Batch], ratio: float, *, samples_seen: int,
                         rule: ReinitRule | None, **options: Any) -> PartialUpdate:
    """One update round with the re-initialisation rule: :func:`partial_update` from fresh
    weights when ``rule`` is due, else from the deployed weights.

    A re-initialised candidate that fails validation (``options["validate"]``) is dropped and
    the round falls back to a partial update of the deployed weights; a shipped
    re-initialisation moves ``rule.samples_at_last`` to ``samples_seen``. ``options`` are
    :func:`partial_update`'s keyword arguments.

    Give ``validate``: without it a due re-initialisation is always shipped, and at small
    ratios a fresh network with a few percent of its weights trained is far worse than the
    deployed one (MNIST-5k stream, MLP 400-400, ratio 0.005: test accuracy 0.46 after the
    first re-initialisation, about 0.87 without it).
    """
    if rule is not None and rule.due(samples_seen):
        update = partial_update(model, deployed_state, train_batches, ratio,
                                reinit_seed=rule.seed, **options)
        if update.updated:
            rule.samples_at_last = samples_seen
            return update
    return partial_update(model, deployed_state, train_batches, ratio, **options)
