"""Train a challenger the way the service config says (the "CL envelope").

- The starting point: the champion (``cl.mode: stateful``, weights carried over) or a fresh
  model of the configured template (``stateless``, and always for an offline ``retrain``).
- New classes in the data (NC / NIC) grow the output layer, keeping the learned weights.
- The data: the new samples, mixed with samples replayed from a rehearsal buffer
  (``cl.rehearsal``, filled from the history) when there is history; ``retrain`` trains on
  history and new data together. ``cl.max_samples`` caps what one job trains on (the newest
  new samples first).
- The strategy (``cl.strategy``): EWC, SI, LwF and MAS first consolidate on the history with
  the champion's weights (Fisher / importances / the old model), then regularise training on
  the new data; ``proactive`` walks the new data with Algorithm 1 of Prapas et al. (t new +
  b - t from history per step); ``full-retrain`` always retrains from scratch.

- The deployment mode (``deployment.mode``), when the challenger continues from the champion
  with the same layers: ``sparse`` trains with top-k sparse steps and residual memory
  (:class:`~model_factory.sparse.SparseResidualSGD`, ``deployment.ratio`` of each tensor per
  step; the residual carries over from the champion's job), so the update changes few weights;
  ``partial`` runs Deep Partial Updating (:func:`~model_factory.sparse.partial_update`: a full
  update, then only ``deployment.ratio`` of the weights kept, rewound elsewhere to the
  champion's, and fine-tuned). Otherwise (a fresh model, new classes) every weight trains and
  the log says so.

A non-finite loss stops the job with an error naming the epoch and batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from cl_server.config.schema import ServiceConfig
from cl_server.envelope.embeddings import network_input_shape
from model_factory.proactive import History, proactive_step_batches
from model_factory.rehearsal import make_buffer
from model_factory.rehearsal.mixing import mixed_batches
from model_factory.sparse import SparseResidualSGD, partial_update
from model_factory.strategies import STRATEGIES, make_strategy
from model_factory.templates import Classifier, prebatched

REPLAY_RATIO = 0.5


@dataclass
class Training:
    """What the job trains on: inputs ``[N, ...]`` and label names, new and history."""

    new_x: torch.Tensor
    new_labels: list[str]
    history_x: torch.Tensor
    history_labels: list[str]


def continues_from_champion(config: ServiceConfig, champion: Classifier | None,
                            scenario: str) -> bool:
    """Whether the challenger starts from the champion's weights (else from fresh ones)."""
    return not (champion is None or config.cl.mode == "stateless" or scenario == "retrain"
                or config.cl.strategy.name == "full-retrain")


def starting_model(config: ServiceConfig, champion: Classifier | None, scenario: str,
                   seed: int, classes_seen: list[str]) -> Classifier:
    """The champion to continue from, or a fresh model knowing ``classes_seen``."""
    if continues_from_champion(config, champion, scenario):
        assert champion is not None
        return Classifier.from_state(champion.state(include_optimizer=True))
    return Classifier(config.model.template, network_input_shape(config.model), classes_seen,
                      params=dict(config.model.template_params), seed=seed,
                      learning_rate=config.cl.learning_rate)


def train(model: Classifier, config: ServiceConfig, data: Training, scenario: str, seed: int,
          log: Callable[[str], None], check_cancelled: Callable[[], None],
          deployed: Mapping[str, torch.Tensor] | None = None,
          residual: dict[str, Any] | None = None,
          between_steps: Callable[[], None] | None = None) -> dict[str, Any]:
    """Train ``model`` in place; returns training statistics (seconds, samples, loss, the
    deployment mode used and, for ``sparse``, the residual to keep for the next job).
    ``deployed``: the champion's weights when ``model`` continues from them; ``residual``: the
    champion job's sparse residual; ``between_steps``: called after every optimizer step (the
    job's scheduling governor)."""
    cl = config.cl
    present = set(data.history_labels) | set(data.new_labels)
    unseen = [c for c in config.model.classes if c in present and c not in model.classes]
    if unseen:
        model.grow(unseen)
        log(f"output layer grown for new classes: {', '.join(unseen)}")
    index = {c: i for i, c in enumerate(model.classes)}
    generator = torch.Generator().manual_seed(seed)
    new_x, new_labels = data.new_x, data.new_labels
    if len(new_x) > cl.max_samples:
        new_x, new_labels = new_x[-cl.max_samples:], new_labels[-cl.max_samples:]
    new_y = torch.tensor([index[c] for c in new_labels], dtype=torch.long)
    hist_y = torch.tensor([index[c] for c in data.history_labels], dtype=torch.long)
    retrain = scenario == "retrain" or cl.strategy.name == "full-retrain"
    if retrain:
        new_x, new_y = torch.cat([data.history_x, new_x]), torch.cat([hist_y, new_y])
        keep = min(len(new_x), cl.max_samples)
        new_x, new_y = new_x[-keep:], new_y[-keep:]
    if len(new_x) == 0:
        raise ValueError("no training samples: no new labeled data since the champion")

    name = cl.strategy.name
    strategy = make_strategy(name, **dict(cl.strategy.params)) if name in STRATEGIES else None
    history_ready = len(data.history_x) > 0 and not retrain
    if strategy is not None and history_ready and name != "naive":
        # Consolidate on what the champion learned before (Fisher, importances, old model).
        strategy.after_experience(model.net, prebatched(
            (data.history_x[i:i + cl.batch_size], hist_y[i:i + cl.batch_size])
            for i in range(0, len(data.history_x), cl.batch_size)))
    buffer = None
    if history_ready and cl.rehearsal.kind != "none" and cl.rehearsal.size > 0 \
            and name != "proactive":
        buffer = make_buffer(cl.rehearsal.kind, cl.rehearsal.size, seed)
        buffer.add(data.history_x, hist_y)
    batches: list[tuple[torch.Tensor, torch.Tensor]] = []
    for _ in range(cl.epochs):  # fresh shuffles and replay draws every epoch
        if name == "proactive" and history_ready:
            history = History()
            history.append(data.history_x, hist_y)
            batches += [(x, y) for x, y, _ in proactive_step_batches(
                new_x, new_y, max(1, cl.batch_size // 4), cl.batch_size, generator,
                history=history)]
        elif buffer is not None:
            batches += [(x, y) for x, y, _ in mixed_batches(new_x, new_y, buffer,
                                                           cl.batch_size, REPLAY_RATIO,
                                                           generator)]
        else:
            order = torch.randperm(len(new_x), generator=generator)
            batches += [(new_x[order[i:i + cl.batch_size]], new_y[order[i:i + cl.batch_size]])
                        for i in range(0, len(new_x), cl.batch_size)]
    check_cancelled()
    mode = _deploy_mode(config, model, deployed, log)
    extra: dict[str, Any] = {"deploy_mode": mode}
    if mode == "partial":
        assert deployed is not None
        update = partial_update(model, deployed, batches, config.deployment.ratio,
                                epochs_full=1, epochs_finetune=1, lr=cl.learning_rate,
                                seed=seed, between_steps=between_steps)
        stats = {"wall_s": update.seconds["total"], "mean_loss": None}  # DPU reports no loss
        log(f"partial update: {update.reason}" + ("" if strategy is None or name == "naive"
            else f" (plain cross-entropy: the {name} penalty does not apply to partial updates)"))
    else:
        optimizer = None
        if mode == "sparse":
            optimizer = SparseResidualSGD(model.net.named_parameters(),
                                          lr=config.deployment.sparse_learning_rate,
                                          ratio=config.deployment.ratio, selector="topk",
                                          seed=seed)
            if residual is not None:
                optimizer.load_state_dict(residual)
        # One fit over every epoch's batches: the strategy sees one experience (hooks run once).
        stats = model.fit(new_x, new_y, strategy=strategy, loader=prebatched(batches),
                          optimizer=optimizer, between_steps=between_steps)
        if optimizer is not None:
            extra["residual"] = optimizer.state_dict()
    check_cancelled()
    loss = stats["mean_loss"]
    log(f"trained {cl.epochs} epochs, {len(batches)} batches, "
        f"{sum(len(x) for x, _ in batches)} samples ({mode} update)"
        + ("" if loss is None else f": mean loss {loss:.4f}"))
    return {"seconds": stats["wall_s"], "batches": float(len(batches)),
            "samples": float(sum(len(x) for x, _ in batches)), "loss": stats["mean_loss"],
            **extra}


def _deploy_mode(config: ServiceConfig, model: Classifier,
                 deployed: Mapping[str, torch.Tensor] | None,
                 log: Callable[[str], None]) -> str:
    """``deployment.mode`` when the model continues from the champion's layers, else full."""
    mode = config.deployment.mode
    if mode == "full":
        return mode
    current = model.net.state_dict()
    if deployed is None or set(deployed) != set(current) or any(
            deployed[name].shape != current[name].shape for name in current):
        log(f"deployment mode {mode} needs the champion's layers unchanged (a first version, a "
            f"retrain or new classes change them): this update trains every weight")
        return "full"
    return mode
