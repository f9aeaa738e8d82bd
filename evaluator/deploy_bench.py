"""What a deployment costs: full updates against sparse (top-k / random-k with residual memory)
and Deep Partial Updating, on the proactive-training stream, in accuracy and in bytes shipped.

The stream is :mod:`evaluator.stream_bench`'s: MNIST-5k shuffled, an initial chunk the first
model is trained on (``initial_epochs`` epochs, Adam), then ``updates`` chunks of
``samples_per_update``. Before each chunk is learned, the *deployed* model is tested on it
(prequential accuracy); then each method trains on the chunk (proactive batches: ``trigger``
new samples topped up to ``batch_size`` from all history) and deploys:

- ``full``: Adam on every weight over the proactive batches (the stream benchmark's
  proactive training; ModelCI-e's default: the whole model ships);
- ``full-warm``: Adam on every weight for ``warm_epochs`` passes over all data seen so far,
  warm-started from the deployed model: the dense counterpart of DPU's training;
- ``topk:R`` / ``randomk:R``: :class:`~model_factory.sparse.SparseResidualSGD` over the
  proactive batches, ``R`` of each tensor per step (step size :func:`sparse_learning_rate`),
  the residual kept across updates; the update ships the union of the entries its steps
  changed;
- ``dpu:K``: :func:`~model_factory.sparse.partial_update_round` over all data seen
  (``warm_epochs`` passes of full update, then as many of fine-tuning): contribution mask of
  ``K`` of the weights, rewind, sparse fine-tuning, re-initialisation when the data doubled, no
  update when it does not beat the deployed model on a validation split.

Each deployment is the real patch (:mod:`plugin.replica.patch`) from the deployed state to the
new one: bytes per update as encoded and as the DPU paper counts them, and the time a replica
takes to decode it, apply it in place and verify the checksum. The ResNet-18-like model (about
11M parameters) is measured for size and apply time only, on one update of random inputs.

Example:
    >>> result = run_deploy_bench(DeploySettings.quick())
    >>> sorted(result["streams"]["mlp"]), result["streams"]["mlp"]["full"]["updates"]
    (['dpu:0.05', 'dpu:0.05@q8', 'full', 'topk:0.01'], 3)
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from evaluator.stream_bench import stream_data
from model_factory.proactive import History, proactive_step_batches
from model_factory.sparse import ReinitRule, SparseResidualSGD, partial_update_round
from model_factory.strategies.base import CLStrategy
from model_factory.templates import Classifier
from model_factory.training import fit_experience
from plugin.replica.patch import StateDigest, apply, decode, diff, encode, paper_bits

METHODS = ("full", "full-warm", "topk:0.01", "topk:0.001", "topk:0.0001", "randomk:0.01",
           "dpu:0.0075", "dpu:0.01", "dpu:0.01@fp16", "dpu:0.01@q8", "dpu:0.02@q8", "dpu:0.05",
           "dpu:0.1")
TARGET_SHARE = 0.01
"""The issue's target: at most 1% of a full update's bytes..."""
TARGET_POINTS = 0.5
"""...at a final accuracy no more than 0.5 point below full updating."""


@dataclass(frozen=True)
class DeploySettings:
    dataset: str = "mnist"
    templates: tuple[str, ...] = ("mlp", "lenet5")
    methods: tuple[str, ...] = METHODS
    updates: int = 10
    samples_per_update: int = 400
    test_size: int = 500
    validation_size: int = 100
    initial_epochs: int = 5
    epochs: int = 1
    """Passes over each update's proactive batches (full, top-k, random-k)."""
    warm_epochs: int = 5
    """Passes over all data seen (full-warm; DPU: for its full update and its fine-tuning)."""
    batch_size: int = 32
    trigger: int = 10
    learning_rate: float = 1e-3
    hidden: tuple[int, ...] = (400, 400)
    values: str = "fp32"
    """How patches carry weights unless a method names its own (``dpu:0.01@q8``): fp32, fp16
    or q8 (:mod:`plugin.replica.patch`; the deployed model then holds the weights as they
    arrive, and its accuracy is measured so)."""
    resnet: bool = True
    seed: int = 0
    seeds: tuple[int, ...] = ()
    """Run every stream once per seed (data order, initial model, training) and report means;
    empty: ``seed`` alone."""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def quick(cls) -> DeploySettings:
        """A CI-sized run: sklearn digits, the MLP, four methods, three updates, no ResNet."""
        return cls(dataset="digits", templates=("mlp",), methods=("full", "topk:0.01",
                                                                  "dpu:0.05", "dpu:0.05@q8"),
                   updates=3, samples_per_update=200, test_size=300, validation_size=100,
                   initial_epochs=5, warm_epochs=2, hidden=(64,), resnet=False)


def _state(net: nn.Module) -> dict[str, Tensor]:
    return {name: t.detach().clone() for name, t in net.state_dict().items()}


def _accuracy(net: nn.Module, x: Tensor, y: Tensor) -> float:
    net.eval()
    with torch.inference_mode():
        return float((net(x).argmax(1) == y).float().mean())


def _replica_apply_ms(deployed: dict[str, Tensor], blob: bytes) -> dict[str, float]:
    """A replica's work on one patch (:class:`~plugin.replica.agent.ReplicaAgent`): decode, apply
    in place, update the state checksum for the blocks written and compare it (ms)."""
    copy = {name: t.clone() for name, t in deployed.items()}
    digest = StateDigest(copy)  # a replica keeps it from the previous patch
    start = time.perf_counter()
    patch = decode(blob)
    decoded = time.perf_counter()
    result = apply(copy, patch, check=False, inplace=True)
    applied = time.perf_counter()
    if patch.rebuilds:
        digest = StateDigest(result)
    else:
        digest.update(result, patch)
    if digest.hexdigest() != patch.target_sha256:
        raise AssertionError("the benchmark's own patch did not verify")
    done = time.perf_counter()
    return {"decode_ms": (decoded - start) * 1e3, "apply_ms": (applied - decoded) * 1e3,
            "verify_ms": (done - applied) * 1e3, "total_ms": (done - start) * 1e3}


VALUES = ("fp32", "fp16", "q8")


def _method(name: str, default_values: str = "fp32") -> tuple[str, float, str]:
    """``KIND[:RATIO][@VALUES]`` as (kind, ratio, values)."""
    spec, _, values = name.partition("@")
    kind, _, ratio = spec.partition(":")
    dense = kind in ("full", "full-warm")
    if kind not in ("full", "full-warm", "topk", "randomk", "dpu") or dense == bool(ratio):
        raise ValueError(f"unknown method '{name}' (expected full, full-warm, topk:R, "
                         f"randomk:R or dpu:K, each optionally @fp32, @fp16 or @q8)")
    if values and values not in VALUES:
        raise ValueError(f"method '{name}': unknown values '{values}' (expected "
                         f"{', '.join(VALUES)})")
    try:
        share = float(ratio or 1.0)
    except ValueError:
        raise ValueError(f"method '{name}': '{ratio}' is not a number") from None
    if not 0 < share <= 1:
        raise ValueError(f"method '{name}': the ratio must be in (0, 1]")
    return kind, share, values or default_values


SPARSE_BASE_LR = {"mlp": 0.3}
"""SGD step size of sparse training at 1% per step, per template (0.03 for the others: the
convolutional networks diverge at the MLP's; tuned on the MNIST-5k stream)."""


def sparse_learning_rate(ratio: float, template: str = "mlp") -> float:
    """SGD step size for sparse training at ``ratio`` per step: sparser steps apply each
    selected entry less often, so they take larger steps (for the MLP: 0.3 at 1%, 0.53 at
    0.1%, 0.95 at 0.01%)."""
    return min(1.0, SPARSE_BASE_LR.get(template, 0.03) * (0.01 / ratio) ** 0.25)


def _shuffled(x: Tensor, y: Tensor, batch_size: int, generator: torch.Generator,
              epochs: int) -> list[tuple[Tensor, Tensor]]:
    batches = []
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        batches += [(x[order[i:i + batch_size]], y[order[i:i + batch_size]])
                    for i in range(0, len(x), batch_size)]
    return batches


def run_stream_method(settings: DeploySettings, template: str, method: str) -> dict[str, Any]:
    """One method over the stream with one template (see the module doc)."""
    kind, ratio, values = _method(method, settings.values)
    x, y = stream_data(settings.dataset, settings.seed)
    n, tests, vals = settings.samples_per_update, settings.test_size, settings.validation_size
    test_x, test_y = x[:tests], y[:tests]
    val_x, val_y = x[tests:tests + vals], y[tests:tests + vals]
    stream_x, stream_y = x[tests + vals:], y[tests + vals:]
    if len(stream_x) < (settings.updates + 1) * n:
        raise ValueError(f"the {settings.dataset} stream holds {len(stream_x)} samples; "
                         f"{settings.updates + 1} chunks of {n} need more")
    classes = [str(c) for c in range(int(y.max()) + 1)]
    params = {"hidden": list(settings.hidden)} if template == "mlp" else {}
    model = Classifier(template, tuple(x.shape[1:]), classes, params=params,
                       seed=settings.seed, learning_rate=settings.learning_rate)
    torch.manual_seed(settings.seed)
    model.fit(stream_x[:n], stream_y[:n], epochs=settings.initial_epochs,
              batch_size=settings.batch_size)
    net = model.net
    deployed = _state(net)
    history = History()
    history.append(stream_x[:n], stream_y[:n])
    generator = torch.Generator().manual_seed(settings.seed + 1)
    adam = torch.optim.Adam(net.parameters(), lr=settings.learning_rate)
    sparse = SparseResidualSGD(net.named_parameters(), lr=sparse_learning_rate(ratio, template),
                               ratio=ratio, selector=kind, seed=settings.seed) \
        if kind in ("topk", "randomk") else None
    rule = ReinitRule(samples_at_last=n, seed=settings.seed)
    meta = {"template": template, "input_shape": list(x.shape[1:]), "classes": classes,
            "params": params}
    dense_bytes = len(encode(diff({}, deployed, base_version=0, target_version=1, meta=meta)))
    rows: list[dict[str, Any]] = []
    for update in range(1, settings.updates + 1):
        chunk_x, chunk_y = stream_x[update * n:(update + 1) * n], stream_y[update * n:(update + 1)
                                                                             * n]
        net.load_state_dict(deployed)
        prequential = _accuracy(net, chunk_x, chunk_y)
        seen_x, seen_y = stream_x[:(update + 1) * n], stream_y[:(update + 1) * n]
        start = time.perf_counter()
        shipped, reinit = True, None
        if kind == "dpu":
            batches = _shuffled(seen_x, seen_y, settings.batch_size, generator, 1)
            outcome = partial_update_round(
                net, deployed, batches, ratio, samples_seen=len(seen_x), rule=rule,
                epochs_full=settings.warm_epochs, epochs_finetune=settings.warm_epochs,
                lr=settings.learning_rate, seed=settings.seed + update,
                validate=lambda candidate: _accuracy(candidate, val_x, val_y))
            new_state, shipped = outcome.state, outcome.updated
            reinit = outcome.reinit_seed if shipped else None
        elif kind == "full-warm":
            batches = _shuffled(seen_x, seen_y, settings.batch_size, generator,
                                settings.warm_epochs)
            fit_experience(net, batches, CLStrategy(), adam)
            new_state = _state(net)
        else:
            batches = [(bx, by) for bx, by, _ in proactive_step_batches(
                chunk_x, chunk_y, settings.trigger, settings.batch_size, generator,
                history=history)]
            optimizer = adam if sparse is None else sparse
            fit_experience(net, batches, CLStrategy(), optimizer, epochs=settings.epochs)
            new_state = _state(net)
        if kind in ("dpu", "full-warm"):  # the proactive methods append as they step
            history.append(chunk_x, chunk_y)
        train_s = time.perf_counter() - start
        patch = diff(deployed, new_state, base_version=update, target_version=update + 1,
                     meta=meta, values=values, reinit=reinit)  # type: ignore[arg-type]
        blob = encode(patch)
        replica = _replica_apply_ms(deployed, blob)
        deployed = apply(deployed, patch, check=False)
        net.load_state_dict(deployed)
        rows.append({"update": update, "prequential": prequential,
                     "test_accuracy": _accuracy(net, test_x, test_y), "train_s": train_s,
                     "bytes": len(blob),
                     "paper_bytes": paper_bits(patch) / 8,
                     "changed": patch.changed_weights(), "shipped": shipped,
                     "reinit": reinit is not None, **replica})
    total = sum(int(t.numel()) for t in deployed.values())
    return {"method": method, "template": template, "seed": settings.seed,
            "updates": len(rows), "shipped": sum(bool(r["shipped"]) for r in rows),
            "weights": total, "dense_bytes": dense_bytes,
            "final_accuracy": rows[-1]["test_accuracy"],
            "mean_prequential": float(np.mean([r["prequential"] for r in rows])),
            "bytes_per_update": float(np.mean([r["bytes"] for r in rows])),
            "total_bytes": int(sum(r["bytes"] for r in rows)),
            "paper_bytes_per_update": float(np.mean([r["paper_bytes"] for r in rows])),
            "share_of_dense": float(np.mean([r["bytes"] for r in rows])) / dense_bytes,
            "changed_share": float(np.mean([r["changed"] for r in rows])) / total,
            "train_s_per_update": float(np.mean([r["train_s"] for r in rows])),
            "apply_ms": float(np.median([r["total_ms"] for r in rows])),
            "rows": rows}


_MEANS = ("final_accuracy", "mean_prequential", "bytes_per_update", "paper_bytes_per_update",
          "share_of_dense", "changed_share", "train_s_per_update", "apply_ms", "shipped")


def _over_seeds(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One method's runs over several seeds: the means of the summary figures, the spread of
    the final accuracy, each seed's summary, and the first seed's rows (for the plots)."""
    if len(runs) == 1:
        return {**runs[0], "seeds": [runs[0]["seed"]], "final_accuracy_sd": 0.0}
    out = dict(runs[0])
    for key in _MEANS:
        out[key] = float(np.mean([run[key] for run in runs]))
    out["total_bytes"] = int(np.mean([run["total_bytes"] for run in runs]))
    out["final_accuracy_sd"] = float(np.std([run["final_accuracy"] for run in runs], ddof=1))
    out["seeds"] = [run["seed"] for run in runs]
    out["per_seed"] = [{key: run[key] for key in ("seed", *_MEANS)} for run in runs]
    return out


def resnet_sizes(settings: DeploySettings) -> dict[str, Any]:
    """Patch bytes and replica apply time on the ~11M-parameter ResNet-18-like model after one
    update on random 3x32x32 inputs (size, not accuracy): four Adam steps for the dense
    methods and DPU's phases, one step for top-k and random-k (so ``topk:0.001`` is a patch of
    0.1% of the weights)."""
    torch.manual_seed(settings.seed)
    model = Classifier("resnet18", (3, 32, 32), [str(c) for c in range(10)], seed=settings.seed)
    net = model.net
    start_state = _state(net)
    generator = torch.Generator().manual_seed(settings.seed)
    batches = [(torch.randn(16, 3, 32, 32, generator=generator),
                torch.randint(0, 10, (16,), generator=generator)) for _ in range(4)]
    dense = len(encode(diff({}, start_state, base_version=0, target_version=1)))
    out: dict[str, Any] = {"weights": sum(int(t.numel()) for t in start_state.values()),
                           "dense_bytes": dense, "methods": {}}
    for method in settings.methods:
        kind, ratio, values = _method(method, settings.values)
        net.load_state_dict(start_state)
        begin = time.perf_counter()
        if kind == "dpu":
            new_state = partial_update_round(net, start_state, batches, ratio, samples_seen=0,
                                             rule=None, epochs_full=1, epochs_finetune=1,
                                             lr=settings.learning_rate).state
        else:
            optimizer: torch.optim.Optimizer = torch.optim.Adam(
                net.parameters(), lr=settings.learning_rate) if kind in ("full", "full-warm") \
                else \
                SparseResidualSGD(net.named_parameters(),
                                  lr=sparse_learning_rate(ratio, "resnet18"),
                                  ratio=ratio, selector=kind, seed=settings.seed)
            # One sparse step: the patch then holds R of the weights exactly.
            fit_experience(net, batches if kind in ("full", "full-warm") else batches[:1],
                           CLStrategy(), optimizer)
            new_state = _state(net)
        train_s = time.perf_counter() - begin
        patch = diff(start_state, new_state, base_version=1, target_version=2,
                     values=values)  # type: ignore[arg-type]
        blob = encode(patch)
        timings = [_replica_apply_ms(start_state, blob) for _ in range(5)]
        out["methods"][method] = {
            "bytes": len(blob), "paper_bytes": paper_bits(patch) / 8,
            "changed": patch.changed_weights(), "share_of_dense": len(blob) / dense,
            "train_s": train_s,
            **{key: float(np.median([t[key] for t in timings])) for key in timings[0]}}
    return out


def run_deploy_bench(settings: DeploySettings) -> dict[str, Any]:
    """Every method on every template's stream, and the ResNet sizes (see the module doc)."""
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    for method in settings.methods:
        _method(method)  # a bad name fails before any training
    seeds = settings.seeds or (settings.seed,)
    streams = {template: {method: _over_seeds([
        run_stream_method(replace(settings, seed=seed), template, method) for seed in seeds])
        for method in settings.methods} for template in settings.templates}
    return {"settings": asdict(settings), "streams": streams, "target": target_check(streams),
            "resnet18": resnet_sizes(settings) if settings.resnet else None,
            "load_average": list(os.getloadavg())}


def target_check(streams: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per template, the methods that ship at most :data:`TARGET_SHARE` of ``full``'s bytes per
    update at a final accuracy at most :data:`TARGET_POINTS` below ``full``'s, and each such
    method's standing against ``full-warm`` (the dense update with DPU's training budget)."""
    out: dict[str, Any] = {}
    for template, runs in streams.items():
        full = runs.get("full")
        if full is None:
            continue
        warm = runs.get("full-warm")
        rows = []
        for method, run in runs.items():
            share = run["bytes_per_update"] / full["bytes_per_update"]
            points = 100 * (run["final_accuracy"] - full["final_accuracy"])
            if method == "full" or share > TARGET_SHARE:
                continue
            rows.append({"method": method, "share_of_full": share, "points_vs_full": points,
                         "points_vs_full_warm": None if warm is None else
                         100 * (run["final_accuracy"] - warm["final_accuracy"]),
                         "met": points >= -TARGET_POINTS})
        out[template] = {"within_bytes": rows, "met_by": [r["method"] for r in rows if r["met"]]}
    return out


def write_plots(result: dict[str, Any], out_dir: Any) -> list[Any]:
    """Accuracy against bytes per update, and prequential accuracy per update (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for template, methods in result["streams"].items():
        figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
        for method, run in methods.items():
            left.errorbar(run["bytes_per_update"], 100 * run["final_accuracy"],
                          yerr=100 * run.get("final_accuracy_sd", 0.0), fmt="o", capsize=3,
                          label=method)
            right.plot([r["update"] for r in run["rows"]],
                       [100 * r["prequential"] for r in run["rows"]], marker="o", label=method)
        if "full" in methods:
            left.axvline(TARGET_SHARE * methods["full"]["bytes_per_update"], color="grey",
                         linestyle="--", linewidth=1)
            left.text(TARGET_SHARE * methods["full"]["bytes_per_update"] * 1.1,
                      left.get_ylim()[0], "1% of full", color="grey", fontsize=8,
                      va="bottom")
        left.set_xscale("log")
        left.set_xlabel("bytes per update (log)")
        seeds = len(next(iter(methods.values())).get("seeds", [0]))
        left.set_ylabel("final test accuracy (%)" + (f", mean ± sd of {seeds} seeds"
                                                     if seeds > 1 else ""))
        right.set_xlabel("update")
        right.set_ylabel("prequential accuracy (%)" + (", first seed" if seeds > 1 else ""))
        right.legend(fontsize=7)
        figure.suptitle(f"{template}: accuracy against bytes shipped")
        figure.tight_layout()
        path = out_dir / f"deploy-{template}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        paths.append(path)
    return paths
