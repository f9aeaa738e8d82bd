"""Choosing what to label: how much of labeling everything a 10% budget buys; and how fast the
annotation loop syncs with a real Label Studio (:mod:`evaluator.annotation_sync_bench`).

The annotation loop (:mod:`cl_server.annotation`) sends a budget of served samples to people to
label; a selector (:mod:`cl_server.annotation.selection`) decides which. This benchmark measures
the target "with a budget of 10% of the collected samples, uncertainty selection recovers at
least 90% of the accuracy gain of labeling everything" on a new-classes (NC) scenario.

**Selection** (:func:`run_selection_bench`), per seed, MNIST-5k split by class without overlap:

- the champion learns a labeled set of classes 0-4 (``train_per_class`` of each). As in the
  service, it predicts the classes it has seen: its output layer has 5 units and an update
  grows it for the new classes its labels hold, keeping the learned weights
  (:func:`cl_server.envelope.train.train`, as a ``cl_update`` job does);
- the pool is the served, unlabeled stream: ``pool_per_class`` samples of each of the 10
  classes; the test set (``test_per_class`` of each class) is never in the pool;
- arms: ``none`` (the champion as it is), ``all`` (every pool sample labeled) and one arm per
  selector with ``round(budget * pool)`` labels, spent in ``rounds`` rounds. Each round scores
  the samples not chosen yet with the current model's class probabilities, takes its share of
  the budget with the selector, and updates.

The update is the CL envelope's own training code (:func:`~cl_server.envelope.train.train`)
on a config with naive fine-tuning, ``cl.mode: stateful`` and a class-balanced rehearsal buffer
over the history, half of each batch replayed from it; the same for every arm, ``all``
included. ``update`` says where it starts:

- ``champion`` (the default): from the champion (weights and optimizer state), on all the
  labels chosen so far, the 0-4 set as history. The final model of every arm is then "the
  champion plus one update on that arm's labels": the arms differ only in which labels they
  got, and ``all`` is one update on the whole pool;
- ``current``: from the previous round's model, on the round's new labels, the 0-4 set and the
  earlier rounds' labels as history, as successive ``cl_update`` jobs do; ``all`` then labels
  the pool in ``rounds`` chunks in served order.

Each update runs ``epochs`` passes, or more to make at least ``min_steps`` optimizer steps: a
250-label set would otherwise get 24 steps, and the budget arms would lose to under-training,
not to their labels. With the MLP, labeling everything scores 92.9% after 300 steps, 94.0% after
800, 94.3% after 1,000 and 94.0% after 3,000 (3 seeds): 800 is converged within the noise. The
default model is LeNet-5, the demo image service's (``all``: 95.3% after 800 steps, 96.0% after
1,600); ``--template mlp`` runs the MLP (docs/benchmarks.md has both).

The gain recovered by an arm is ``(acc(arm) - acc(none)) / (acc(all) - acc(none))``, per seed.

``drift-focused`` is left out: with the drifted window set to the whole pool it ranks exactly
as ``least-confidence``, and this scenario has no served-time window to focus on.

Example:
    >>> recovered_gain(0.88, none=0.48, every=0.92)
    0.909
    >>> round_sizes(250, 5), round_sizes(7, 3)
    ([50, 50, 50, 50, 50], [3, 2, 2])
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cl_server.annotation.selection import UNCERTAINTY, Candidate, make_selector
from cl_server.config.schema import ServiceConfig
from cl_server.envelope.train import REPLAY_RATIO, Training, starting_model, train
from evaluator.annotation_sync_bench import SyncBenchSettings, run_sync_bench, sync_report_lines
from model_factory.scenarios.datasets import mnist_5k
from model_factory.templates import Classifier

CLASSES = [str(c) for c in range(10)]
OLD_CLASSES, NEW_CLASSES = CLASSES[:5], CLASSES[5:]
SELECTION_ARMS = ("random", "least-confidence", "margin", "entropy", "class-balanced")
UPDATES = {"champion": "the CL envelope's train() from the champion (stateful) on all labels "
                       "so far, the 0-4 set as history",
           "current": "the CL envelope's train() from the current model (stateful) on the "
                      "round's new labels, the 0-4 set and earlier labels as history"}


@dataclass(frozen=True)
class SelectionBenchSettings:
    """The selection benchmark (see the module doc); the defaults are the documented run."""

    budget: float = 0.10
    """Share of the pool labeled by each selector arm."""
    rounds: int = 5
    seeds: int = 3
    template: str = "lenet5"
    """The demo image service's model; ``mlp`` is the 784-``hidden`` MLP."""
    hidden: tuple[int, ...] = (400, 400)
    """Hidden layers of the ``mlp`` template (ignored for ``lenet5``)."""
    selectors: tuple[str, ...] = SELECTION_ARMS
    train_per_class: int = 150
    """Labeled samples of each old class (0-4) the champion learns."""
    pool_per_class: int = 250
    """Served, unlabeled samples of each class (0-9) in the pool."""
    test_per_class: int = 100
    champion_epochs: int = 10
    epochs: int = 3
    """``cl.epochs`` of an update (the service default)."""
    min_steps: int = 800
    """Optimizer steps an update makes at least (more epochs for a small labeled set)."""
    batch_size: int = 64
    learning_rate: float = 1e-3
    rehearsal_size: int = 500
    update: str = "champion"
    """Where an update starts: ``champion`` or ``current`` (see the module doc)."""
    target: float = 0.90
    """Gain an uncertainty selector must recover (the annotation loop's target)."""

    @classmethod
    def quick(cls) -> SelectionBenchSettings:
        """A CI-sized run: one seed, a 600-sample pool, a smaller MLP and fewer steps."""
        return cls(seeds=1, template="mlp", hidden=(128,), train_per_class=60, pool_per_class=60,
                   test_per_class=50, champion_epochs=10, min_steps=200, rounds=3)

    @property
    def pool_size(self) -> int:
        return self.pool_per_class * len(CLASSES)

    @property
    def labels(self) -> int:
        """Labels each selector arm gets: ``round(budget * pool)``."""
        return round(self.budget * self.pool_size)


@dataclass(frozen=True)
class AnnotationBenchSettings:
    """``modelci-e bench annotation``: one part per section of the report (None: skipped)."""

    selection: SelectionBenchSettings | None = field(default_factory=SelectionBenchSettings)
    sync: SyncBenchSettings | None = field(default_factory=SyncBenchSettings)


def recovered_gain(accuracy: float, none: float, every: float) -> float:
    """Share of the gain of labeling everything an arm recovers, rounded to 3 decimals.

    ``(accuracy - none) / (every - none)``; NaN when labeling everything gains nothing.

    >>> recovered_gain(0.5, none=0.5, every=0.9), recovered_gain(0.95, none=0.5, every=0.9)
    (0.0, 1.125)
    """
    if not every > none:
        return math.nan
    return round((accuracy - none) / (every - none), 3)


def round_sizes(labels: int, rounds: int) -> list[int]:
    """Labels spent in each round: as even as possible, the remainder in the first rounds."""
    return [labels // rounds + (1 if i < labels % rounds else 0) for i in range(rounds)]


@dataclass
class _Split:
    """One seed's data: the champion's labeled set, the pool and the test set."""

    train_x: Tensor
    train_y: list[str]
    pool_x: Tensor
    pool_y: list[str]
    test_x: Tensor
    test_y: np.ndarray  # class names


def _split(settings: SelectionBenchSettings, seed: int) -> _Split:
    x, y = mnist_5k()
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "pool": [], "test": []}
    for label in range(len(CLASSES)):
        rows = rng.permutation(np.flatnonzero(y == label))
        test, rows = rows[:settings.test_per_class], rows[settings.test_per_class:]
        pool, rows = rows[:settings.pool_per_class], rows[settings.pool_per_class:]
        if len(pool) < settings.pool_per_class or (
                label < len(OLD_CLASSES) and len(rows) < settings.train_per_class):
            raise ValueError(f"MNIST-5k has 500 samples per class: {settings.test_per_class} "
                             f"test + {settings.pool_per_class} pool + "
                             f"{settings.train_per_class} training do not fit")
        parts["test"].append(test)
        parts["pool"].append(pool)
        if label < len(OLD_CLASSES):
            parts["train"].append(rows[:settings.train_per_class])
    # the served stream arrives shuffled; so does the labeled set
    rows = {name: rng.permutation(np.concatenate(chunks)) for name, chunks in parts.items()}
    inputs = {name: torch.tensor(np.asarray(x[r]), dtype=torch.float32)
              for name, r in rows.items()}
    names = {name: [CLASSES[int(label)] for label in y[r]] for name, r in rows.items()}
    return _Split(inputs["train"], names["train"], inputs["pool"], names["pool"],
                  inputs["test"], np.array(names["test"]))


def _service_config(settings: SelectionBenchSettings) -> ServiceConfig:
    """The service config whose CL envelope every update runs."""
    params = {"hidden": list(settings.hidden)} if settings.template == "mlp" else {}
    return ServiceConfig.model_validate({
        "name": "annotation-bench",
        "engine": {"kind": "triton", "model_name": "mnist"},
        "model": {"template": settings.template, "template_params": params,
                  "input": {"shape": [1, 28, 28], "kind": "image"}, "classes": CLASSES},
        "cl": {"strategy": {"name": "naive"}, "mode": "stateful",
               "rehearsal": {"kind": "class_balanced", "size": settings.rehearsal_size},
               "epochs": settings.epochs, "batch_size": settings.batch_size,
               "learning_rate": settings.learning_rate}})


def update_epochs(labels: int, settings: SelectionBenchSettings) -> int:
    """``cl.epochs`` for an update on ``labels`` samples: ``epochs``, or more for at least
    ``min_steps`` steps (each batch holds ``batch_size * (1 - REPLAY_RATIO)`` new samples).

    >>> update_epochs(2500, SelectionBenchSettings()), update_epochs(50, SelectionBenchSettings())
    (11, 400)
    """
    new_per_batch = settings.batch_size - round(settings.batch_size * REPLAY_RATIO)
    batches = math.ceil(labels / new_per_batch)
    return max(settings.epochs, math.ceil(settings.min_steps / batches))


def _evaluate(model: Classifier, split: _Split) -> dict[str, Any]:
    predicted = np.array(model.classes)[model.predict(split.test_x).labels.numpy()]
    correct = predicted == split.test_y
    per_class = {c: float(correct[split.test_y == c].mean()) for c in CLASSES}
    return {"accuracy": float(correct.mean()), "per_class": per_class,
            "old_accuracy": float(np.mean([per_class[c] for c in OLD_CLASSES])),
            "new_accuracy": float(np.mean([per_class[c] for c in NEW_CLASSES]))}


class _Updater:
    """Runs the CL envelope's update on a labeled set (see the module doc)."""

    def __init__(self, settings: SelectionBenchSettings, champion: Classifier, split: _Split,
                 seed: int):
        self.settings, self.champion, self.split, self.seed = settings, champion, split, seed
        self.config = _service_config(settings)

    def __call__(self, current: Classifier, chosen: list[int], picked: int) -> Classifier:
        """The model after an update, ``chosen``: every label so far, the last ``picked`` of
        them new this round. ``champion``: from the champion on all of ``chosen``;
        ``current``: from ``current`` on the new ones, the earlier ones joining the history."""
        if self.settings.update == "champion":
            start, new, earlier = self.champion, chosen, []
        else:
            start, new, earlier = current, chosen[len(chosen) - picked:], \
                chosen[:len(chosen) - picked]
        cl = self.config.cl.model_copy(update={"epochs": update_epochs(len(new),
                                                                       self.settings)})
        config = self.config.model_copy(update={"cl": cl})
        model = starting_model(config, start, "nc", self.seed, OLD_CLASSES)
        data = Training(self.split.pool_x[new], [self.split.pool_y[i] for i in new],
                        torch.cat([self.split.train_x, self.split.pool_x[earlier]]),
                        self.split.train_y + [self.split.pool_y[i] for i in earlier])
        train(model, config, data, "nc", self.seed, log=lambda _: None,
              check_cancelled=lambda: None)
        return model


def _candidates(model: Classifier, split: _Split, rows: list[int]) -> list[Candidate]:
    confidences = model.predict(split.pool_x[rows]).confidences.double().numpy()
    return [Candidate(str(row), scores, predicted=model.classes[int(scores.argmax())])
            for row, scores in zip(rows, confidences, strict=True)]


def _selector_arm(name: str, settings: SelectionBenchSettings, split: _Split,
                  update: _Updater, seed: int) -> dict[str, Any]:
    model, chosen, rounds = update.champion, [], []
    start = time.perf_counter()
    select_s = 0.0
    for number, size in enumerate(round_sizes(settings.labels, settings.rounds)):
        begin = time.perf_counter()
        taken = set(chosen)
        candidates = _candidates(model, split, [i for i in range(len(split.pool_y))
                                                if i not in taken])
        picked = [int(c.request_id) for c in
                  make_selector(name, seed=seed * 1000 + number).select(candidates, size)]
        select_s += time.perf_counter() - begin
        chosen += picked
        model = update(model, chosen, len(picked))
        rounds.append({"labels": len(chosen), "accuracy": _evaluate(model, split)["accuracy"],
                       "new_class_share": _new_share(split, picked)})
    return {**_evaluate(model, split), "labels": len(chosen), "rounds": rounds,
            "new_class_share": _new_share(split, chosen),
            "wall_s": time.perf_counter() - start, "select_s": select_s}


def _label_everything(settings: SelectionBenchSettings, split: _Split,
                      update: _Updater) -> dict[str, Any]:
    """The ``all`` arm: one update on the whole pool from the champion, or (``current``) the
    pool labeled in ``rounds`` chunks in served order, each fine-tuning the model before."""
    start = time.perf_counter()
    chunks = [len(split.pool_y)] if settings.update == "champion" else \
        round_sizes(len(split.pool_y), settings.rounds)
    model, labeled = update.champion, 0
    for size in chunks:
        labeled += size
        model = update(model, list(range(labeled)), size)
    every = list(range(labeled))
    return {**_evaluate(model, split), "labels": labeled,
            "new_class_share": _new_share(split, every), "wall_s": time.perf_counter() - start,
            "select_s": 0.0}


def _new_share(split: _Split, rows: list[int]) -> float:
    return float(np.mean([split.pool_y[i] in NEW_CLASSES for i in rows])) if rows else 0.0


def _run_seed(settings: SelectionBenchSettings, seed: int,
              progress: Callable[[str], None]) -> dict[str, Any]:
    split = _split(settings, seed)
    params = {"hidden": list(settings.hidden)} if settings.template == "mlp" else {}
    champion = Classifier(settings.template, (1, 28, 28), OLD_CLASSES, params=params, seed=seed,
                          learning_rate=settings.learning_rate)
    start = time.perf_counter()
    champion.fit(split.train_x, torch.tensor([OLD_CLASSES.index(c) for c in split.train_y]),
                 epochs=settings.champion_epochs, batch_size=settings.batch_size)
    arms: dict[str, dict[str, Any]] = {
        "none": {**_evaluate(champion, split), "labels": 0, "new_class_share": 0.0,
                 "wall_s": time.perf_counter() - start, "select_s": 0.0}}
    update = _Updater(settings, champion, split, seed)
    progress(f"seed {seed}: all")
    arms["all"] = _label_everything(settings, split, update)
    for name in settings.selectors:
        progress(f"seed {seed}: {name}")
        arms[name] = _selector_arm(name, settings, split, update, seed)
    for arm in arms.values():
        arm["recovered_gain"] = recovered_gain(arm["accuracy"], arms["none"]["accuracy"],
                                               arms["all"]["accuracy"])
    return {"seed": seed, "arms": arms}


def _summary(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for arm in runs[0]["arms"]:
        rows = [run["arms"][arm] for run in runs]
        stats = {key: {"mean": float(np.mean([r[key] for r in rows])),
                       "min": float(np.min([r[key] for r in rows]))}
                 for key in ("accuracy", "recovered_gain", "old_accuracy", "new_accuracy",
                             "new_class_share", "wall_s")}
        curve = None
        if "rounds" in rows[0]:
            curve = [{"labels": step["labels"],
                      "accuracy": float(np.mean([r["rounds"][i]["accuracy"] for r in rows])),
                      "min": float(np.min([r["rounds"][i]["accuracy"] for r in rows])),
                      "max": float(np.max([r["rounds"][i]["accuracy"] for r in rows]))}
                     for i, step in enumerate(rows[0]["rounds"])]
        out[arm] = {**stats, "labels": rows[0]["labels"], "curve": curve}
    return out


def run_selection_bench(settings: SelectionBenchSettings,
                        progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Every arm on every seed; per-seed figures, their mean and min, and the target verdict."""
    if not 0 < settings.budget <= 1 or settings.labels < settings.rounds:
        raise ValueError(f"a budget of {settings.budget:g} of a {settings.pool_size}-sample pool "
                         f"is {settings.labels} labels: at least one per round "
                         f"({settings.rounds}) is needed")
    unknown = [s for s in settings.selectors if s not in SELECTION_ARMS]
    if unknown:
        raise ValueError(f"unknown selector(s) {', '.join(unknown)} (expected some of: "
                         f"{', '.join(SELECTION_ARMS)})")
    if settings.update not in UPDATES:
        raise ValueError(f"unknown update '{settings.update}' (expected one of: "
                         f"{', '.join(UPDATES)})")
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    start = time.perf_counter()
    runs = [_run_seed(settings, seed, progress) for seed in range(settings.seeds)]
    summary = _summary(runs)
    verdicts = {name: {"mean": summary[name]["recovered_gain"]["mean"],
                       "min": summary[name]["recovered_gain"]["min"],
                       "passed": summary[name]["recovered_gain"]["mean"] >= settings.target}
                for name in UNCERTAINTY if name in summary}
    return {"settings": asdict(settings), "pool": settings.pool_size,
            "budget_labels": settings.labels,
            "round_labels": round_sizes(settings.labels, settings.rounds),
            "update": UPDATES[settings.update] + (
                f"; naive, class-balanced rehearsal buffer of {settings.rehearsal_size}, "
                f"half of each batch replayed, max({settings.epochs} epochs, "
                f"{settings.min_steps} steps)"),
            "summary": summary, "runs": runs,
            "target": {"gain": settings.target, "selectors": verdicts,
                       "met_by": [name for name, v in verdicts.items() if v["passed"]]},
            "wall_s": time.perf_counter() - start}


def run_annotation_bench(settings: AnnotationBenchSettings,
                         progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Every part of the annotation benchmark that ``settings`` asks for, one key per part."""
    result: dict[str, Any] = {"cpus": os.cpu_count(), "load_average_before":
                              list(os.getloadavg())}
    if settings.selection is not None:
        result["selection"] = run_selection_bench(settings.selection, progress)
    if settings.sync is not None:
        progress(f"syncing {settings.sync.samples} annotations with a real Label Studio")
        result["sync"] = run_sync_bench(settings.sync)
    result["load_average"] = list(os.getloadavg())
    return result


def _pct(stats: dict[str, float]) -> str:
    return f"{100 * stats['mean']:.1f} ({100 * stats['min']:.1f})"


def _gain(stats: dict[str, float]) -> str:
    return "-" if math.isnan(stats["mean"]) else f"{stats['mean']:.3f} ({stats['min']:.3f})"


SELECTION_COLUMNS = ("arm", "labels", "accuracy %", "gain recovered", "old classes %",
                     "new classes %", "new-class labels %", "wall s per seed")


def selection_rows(selection: dict[str, Any]) -> list[list[str]]:
    """The selection table, one row per arm: mean (min over seeds)."""
    rows = []
    for arm, stats in selection["summary"].items():
        rows.append([arm, f"{stats['labels']:,}", _pct(stats["accuracy"]),
                     _gain(stats["recovered_gain"]), _pct(stats["old_accuracy"]),
                     _pct(stats["new_accuracy"]), f"{100 * stats['new_class_share']['mean']:.0f}",
                     f"{stats['wall_s']['mean']:.1f}"])
    return rows


def target_line(selection: dict[str, Any]) -> str:
    """The target's verdict, per uncertainty selector."""
    target = selection["target"]
    parts = [f"{name} {'PASS' if v['passed'] else 'FAIL'} ({v['mean']:.3f}, min {v['min']:.3f})"
             for name, v in target["selectors"].items()]
    return (f"Target: an uncertainty selector recovers >= {target['gain']:.2f} of the gain of "
            f"labeling everything with {selection['budget_labels']} labels "
            f"({100 * selection['settings']['budget']:g}% of {selection['pool']:,}), mean over "
            f"seeds: " + "; ".join(parts) + ".")


def _selection_markdown(selection: dict[str, Any]) -> str:
    s = selection["settings"]
    lines = ["## Selection", "",
             (f"MNIST-5k, new classes: the champion ({s['template']}) learns classes 0-4 "
              f"({s['train_per_class']} labeled per class); the pool is {selection['pool']:,} "
              f"served samples of classes 0-9; the test set {10 * s['test_per_class']:,} "
              f"samples of 0-9 outside the pool. Selector arms label "
              f"{selection['budget_labels']} samples in {s['rounds']} rounds of "
              f"{', '.join(map(str, selection['round_labels']))}. Update: "
              f"{selection['update']}. {s['seeds']} seed(s): mean (min)."), "",
             "| " + " | ".join(SELECTION_COLUMNS) + " |",
             "|---|" + "---:|" * (len(SELECTION_COLUMNS) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in selection_rows(selection)]
    lines += ["", target_line(selection)]
    return "\n".join(lines)


def plot_selection(selection: dict[str, Any], path: Path) -> Path:
    """Test accuracy against labels spent for each selector (mean over seeds, min-max band),
    with ``none`` and ``all`` as horizontal lines; the gain recovered per arm beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = selection["summary"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4),
                                         gridspec_kw={"width_ratios": [3, 2]})
    colors: dict[str, str] = {}
    for arm, stats in summary.items():
        if stats["curve"] is None:
            continue
        labels = [0] + [p["labels"] for p in stats["curve"]]
        mean = [summary["none"]["accuracy"]["mean"]] + [p["accuracy"] for p in stats["curve"]]
        line, = left.plot(labels, [100 * a for a in mean], marker="o", label=arm)
        colors[arm] = line.get_color()
        left.fill_between(labels[1:], [100 * p["min"] for p in stats["curve"]],
                          [100 * p["max"] for p in stats["curve"]], color=line.get_color(),
                          alpha=0.12)
    for arm, style in (("all", "--"), ("none", ":")):
        left.axhline(100 * summary[arm]["accuracy"]["mean"], color="black", linestyle=style,
                     label=f"{arm} ({summary[arm]['labels']:,} labels)")
    none, every = summary["none"]["accuracy"]["mean"], summary["all"]["accuracy"]["mean"]
    left.axhline(100 * (none + selection["target"]["gain"] * (every - none)), color="red",
                 linestyle="-.", linewidth=0.8, label=f"{selection['target']['gain']:.0%} of "
                 "the gain")
    left.set_xlabel("labels spent")
    left.set_ylabel("test accuracy, classes 0-9 (%)")
    left.grid(alpha=0.3)
    left.legend(fontsize=7)
    arms = list(colors)
    right.bar(arms, [summary[a]["recovered_gain"]["mean"] for a in arms],
              color=[colors[a] for a in arms], label="mean")
    right.scatter(arms, [summary[a]["recovered_gain"]["min"] for a in arms], color="black",
                  zorder=3, label="min over seeds")
    right.axhline(selection["target"]["gain"], color="red", linestyle="-.", linewidth=0.8)
    right.set_ylabel("gain recovered")
    right.tick_params(axis="x", rotation=30, labelsize=8)
    right.set_ylim(0, max(1.05, max(summary[a]["recovered_gain"]["mean"] for a in arms) + 0.05))
    right.legend(fontsize=7)
    s = selection["settings"]
    figure.suptitle(f"MNIST-5k new classes, {s['template']}: {selection['budget_labels']} "
                    f"labels of {selection['pool']:,} in {s['rounds']} rounds, "
                    f"{s['seeds']} seed(s)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def write_report(result: dict[str, Any], out_dir: Path) -> list[Path]:
    """``annotation.md`` (one section per part run), ``annotation.json`` and a plot per part
    (``annotation-selection.png``) in ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sections = [f"# Annotation benchmark\n\n{result['cpus']} CPUs; load average before "
                f"{', '.join(f'{x:.2f}' for x in result['load_average_before'])}, after "
                f"{', '.join(f'{x:.2f}' for x in result['load_average'])}."]
    paths = []
    if "selection" in result:
        sections.append(_selection_markdown(result["selection"]))
        paths.append(plot_selection(result["selection"], out_dir / "annotation-selection.png"))
    if "sync" in result:
        sections.append("\n".join(sync_report_lines(result["sync"])))
    markdown = out_dir / "annotation.md"
    markdown.write_text("\n\n".join(sections) + "\n")
    data = out_dir / "annotation.json"
    data.write_text(json.dumps(result, indent=2))
    return [markdown, data, *paths]
