"""The CL profiler: run strategies over a scenario and seeds, measure accuracy matrices and cost.

For every (strategy, seed) the model is trained experience by experience; after each experience
it is tested on every experience's test set, filling R[i][j] (Lopez-Paz & Ranzato 2017). From R
come ACC, BWT, FWT (against a randomly initialised model) and forgetting; next to them the cost:
training wall time, peak RSS, model bytes, stored samples, and the efficiency metrics of
Díaz-Rodríguez et al. 2018: model size efficiency (MS) and samples storage size efficiency
(SSS, stored samples against the scenario's training samples).

Strategies:
- ``naive``, ``ewc``, ``si``, ``lwf``, ``mas``: the CL loss library, fine-tuning on each experience.
- ``replay``: fine-tuning with a class-balanced rehearsal buffer mixed into every batch.
- ``proactive``: Algorithm 1 of Prapas et al. 2021 over the stream of training samples: batches
  of t new samples plus b - t drawn from all history, new data appended after each step; one
  pass over each experience (one step per t new samples), whatever ``epochs`` says.
- ``full-retrain``: a fresh model trained from scratch on all data seen so far (the reference).

Class-incremental scenarios start the model with the first experience's classes and ``grow`` it
when new ones appear (one head, no task labels at test time: the hard setting of van de Ven &
Tolias 2019).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from evaluator.metrics import (
    AccuracyMatrix,
    acc,
    bwt,
    forgetting,
    fwt,
    model_size_efficiency,
    peak_rss_bytes,
    samples_storage_efficiency,
)
from model_factory.proactive import History, proactive_step_batches
from model_factory.rehearsal import make_buffer
from model_factory.rehearsal.mixing import mixed_batches
from model_factory.scenarios import Scenario
from model_factory.strategies import STRATEGIES, make_strategy
from model_factory.templates import Classifier, prebatched

PROFILER_STRATEGIES = ("naive", "ewc", "si", "lwf", "mas", "replay", "proactive", "full-retrain")


@dataclass(frozen=True)
class BenchSettings:
    """How each strategy is trained (the same for all, so that they are comparable)."""

    template: str = "mlp"
    template_params: dict[str, Any] = field(default_factory=lambda: {"hidden": [400, 400]})
    epochs: int = 2
    batch_size: int = 128
    learning_rate: float = 1e-3
    buffer_size: int = 500
    replay_ratio: float = 0.5
    proactive_trigger: int = 32
    strategy_params: dict[str, dict[str, Any]] = field(default_factory=lambda: {
        "ewc": {"lambda": 5000.0}, "si": {"c": 50.0, "xi": 0.1}, "lwf": {"alpha": 1.0,
                                                                         "temperature": 2.0},
        "mas": {"lambda": 1.0}})


@dataclass
class RunResult:
    """One strategy on one seed."""

    strategy: str
    seed: int
    matrix: AccuracyMatrix
    baseline: list[float]
    train_s: float
    peak_rss_bytes: int
    model_bytes: int
    stored_samples: int
    model_bytes_per_experience: list[int]
    stored_per_experience: list[int]
    train_samples: int

    def summary(self) -> dict[str, float]:
        r = self.matrix
        return {"acc": acc(r), "bwt": bwt(r), "fwt": fwt(r, self.baseline),
                "forgetting": forgetting(r),
                "ms": model_size_efficiency(self.model_bytes_per_experience),
                "sss": samples_storage_efficiency(self.stored_per_experience,
                                                  self.train_samples),
                "train_s": self.train_s,
                "peak_rss_mb": self.peak_rss_bytes / 2**20, "model_mb": self.model_bytes / 2**20,
                "stored_samples": float(self.stored_samples)}


def _class_index(scenario: Scenario) -> list[str]:
    return [str(c) for c in scenario.class_names]


def embed_text(scenario: Scenario) -> Scenario:
    """A text scenario with every text replaced by its frozen MiniLM sentence embedding [384]
    (the ``text-minilm`` template trains a head on them); other scenarios unchanged."""
    if scenario.input_kind != "text":
        return scenario
    from model_factory.templates.text import SentenceEncoder

    encoder = SentenceEncoder()
    experiences = tuple(replace(e, train_x=encoder.encode(e.train_x),
                                test_x=encoder.encode(e.test_x)) for e in scenario.experiences)
    return replace(scenario, experiences=experiences, input_kind="tabular",
                   input_shape=(encoder.dimension,))


def run_strategy(scenario: Scenario, strategy: str, seed: int, settings: BenchSettings,
                 on_experience: Callable[[int], None] | None = None) -> RunResult:
    """Train ``strategy`` through ``scenario`` and return its accuracy matrix and costs.

    Text scenarios train the ``text-minilm`` head on frozen sentence embeddings."""
    if strategy not in PROFILER_STRATEGIES:
        raise ValueError(f"unknown strategy '{strategy}' (expected one of: "
                         f"{', '.join(PROFILER_STRATEGIES)})")
    if scenario.input_kind == "text":
        scenario = embed_text(scenario)
        settings = replace(settings, template="text-minilm", template_params={},
                           learning_rate=max(settings.learning_rate, 1e-2))
    torch.manual_seed(seed)
    names = _class_index(scenario)
    experiences = scenario.experiences
    incremental = scenario.kind in ("nc", "nic")
    first_classes = sorted({int(c) for c in experiences[0].classes}) if incremental else list(
        range(len(names)))

    def new_model() -> Classifier:
        known = first_classes if incremental else list(range(len(names)))
        return Classifier(settings.template, scenario.input_shape, [names[c] for c in known],
                          params=settings.template_params, seed=seed,
                          learning_rate=settings.learning_rate)

    model = new_model()
    # Output unit of each class index (classes are added in the order they appear).
    unit = {c: i for i, c in enumerate(first_classes if incremental else range(len(names)))}
    baseline_model = Classifier(settings.template, scenario.input_shape, names,
                                params=settings.template_params, seed=seed + 10_000)
    baseline = [baseline_model.accuracy(e.test_x, e.test_y) for e in experiences]

    cl = None
    if strategy in STRATEGIES:
        cl = make_strategy(strategy, **settings.strategy_params.get(strategy, {}))
    buffer = make_buffer("class_balanced", settings.buffer_size, seed) if strategy == "replay" \
        else None
    generator = torch.Generator().manual_seed(seed)
    history = History()
    seen_x: list[torch.Tensor] = []
    seen_y: list[torch.Tensor] = []

    def stored_now() -> int:
        """Training samples the strategy keeps (rehearsal memory, history or all data)."""
        return {"replay": len(buffer) if buffer is not None else 0, "proactive": len(history),
                "full-retrain": sum(len(x) for x in seen_x)}.get(strategy, 0)
    matrix = AccuracyMatrix(len(experiences))
    train_s = 0.0
    sizes: list[int] = []
    stored_counts: list[int] = []
    for i, experience in enumerate(experiences):
        for c in sorted({int(c) for c in experience.classes}):
            if c not in unit:
                unit[c] = len(unit)
                model.grow([names[c]])
        targets = torch.tensor([unit[int(c)] for c in experience.train_y])
        start = time.perf_counter()
        if strategy == "full-retrain":
            seen_x.append(experience.train_x)
            seen_y.append(targets)
            model = new_model()
            if incremental:
                model.grow([names[c] for c in sorted(unit, key=unit.get)][model.num_classes:])
            model.fit(torch.cat(seen_x), torch.cat(seen_y), epochs=settings.epochs,
                      batch_size=settings.batch_size)
        elif strategy == "replay":
            assert buffer is not None
            for _ in range(settings.epochs):  # fresh replay draws every epoch
                loader = prebatched((bx, by) for bx, by, _ in mixed_batches(
                    experience.train_x, targets, buffer, settings.batch_size,
                    settings.replay_ratio, generator))
                model.fit(experience.train_x, targets, loader=loader, epochs=1)
            buffer.add(experience.train_x, targets)
        elif strategy == "proactive":
            # Algorithm 1 is one pass over the stream: one step per t new samples.
            steps = proactive_step_batches(experience.train_x, targets,
                                           settings.proactive_trigger, settings.batch_size,
                                           generator, history=history)
            model.fit(experience.train_x, targets,
                      loader=prebatched((bx, by) for bx, by, _ in steps), epochs=1)
        else:
            model.fit(experience.train_x, targets, strategy=cl, epochs=settings.epochs,
                      batch_size=settings.batch_size)
        train_s += time.perf_counter() - start
        sizes.append(model.size_bytes())
        stored_counts.append(stored_now())
        for j, test in enumerate(experiences):
            labels = torch.tensor([unit.get(int(c), -1) for c in test.test_y])
            predicted = model.predict(test.test_x).labels
            matrix.record(i, j, float((predicted == labels).float().mean()))
        if on_experience:
            on_experience(i)
    return RunResult(strategy, seed, matrix, baseline, train_s, peak_rss_bytes(),
                     model.size_bytes(), stored_now(), sizes, stored_counts,
                     sum(len(e.train_x) for e in experiences))


def aggregate(results: Sequence[RunResult]) -> dict[str, dict[str, tuple[float, float]]]:
    """Mean and standard deviation of each summary metric, per strategy."""
    table: dict[str, dict[str, tuple[float, float]]] = {}
    for name in dict.fromkeys(r.strategy for r in results):
        rows = [r.summary() for r in results if r.strategy == name]
        table[name] = {key: (float(np.mean([row[key] for row in rows])),
                             float(np.std([row[key] for row in rows])) if len(rows) > 1
                             else math.nan)
                       for key in rows[0]}
    return table
