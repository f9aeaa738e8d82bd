"""Proactive training against full retraining on a stream (Prapas et al. 2021, Sect. 5 setting).

A deployed model is first trained on an initial chunk (``epochs`` epochs; it is also the
history every method starts from). Then data arrives in ``updates`` chunks. Before each chunk is
learned, the current model is tested on it (prequential accuracy); then

- ``proactive`` (Algorithm 1) keeps training the same model, stateful: one step per ``t`` new
  samples, each batch topped up to ``b`` with samples drawn from all history;
- ``full-retrain`` trains a fresh model from scratch on all data so far for ``epochs`` epochs;
- ``online`` is proactive with ``t = b`` (new data only);

and both are tested on a fixed held-out test set. Cost is counted as training samples processed
(forward + backward) and as wall time, per update.

Example:
    >>> result = run_stream(StreamSettings(updates=3, samples_per_update=64, epochs=1,
    ...                                    dataset="digits", batch_size=32, trigger=16))
    >>> [len(r.sample_cost) for r in result.values()], sorted(result)
    ([3, 3, 3], ['full-retrain', 'online', 'proactive'])
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from model_factory.proactive import History, proactive_step_batches
from model_factory.scenarios.datasets import digits, mnist_5k
from model_factory.templates import Classifier, prebatched


@dataclass(frozen=True)
class StreamSettings:
    dataset: str = "mnist"
    updates: int = 10
    samples_per_update: int = 400
    test_size: int = 600
    epochs: int = 5
    batch_size: int = 32
    trigger: int = 10
    learning_rate: float = 1e-3
    hidden: tuple[int, ...] = (400, 400)
    seed: int = 0


@dataclass
class StreamResult:
    """Per update: prequential accuracy, test accuracy, samples processed, wall seconds."""

    prequential: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    sample_cost: list[int] = field(default_factory=list)
    wall_s: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        return {"final_accuracy": self.test_accuracy[-1],
                "mean_prequential": float(np.mean(self.prequential[1:] or self.prequential)),
                "total_samples": float(sum(self.sample_cost)),
                "total_wall_s": float(sum(self.wall_s)),
                "cost_last_over_first": self.sample_cost[-1] / self.sample_cost[0],
                "wall_last_over_first": self.wall_s[-1] / self.wall_s[0]}


def stream_data(dataset: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The shuffled stream of ``dataset`` (``mnist``: MNIST-5k, ``digits``: sklearn's 8x8):
    inputs (float32, pixels in [0, 1]) and class indices, in the order ``seed`` gives."""
    loader = {"mnist": mnist_5k, "digits": digits}.get(dataset)
    if loader is None:
        raise ValueError(f"unknown dataset '{dataset}' (expected mnist or digits)")
    x, y = loader()
    x, y = torch.tensor(np.asarray(x), dtype=torch.float32), torch.tensor(np.asarray(y))
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    return x[order], y[order].long()


def run_stream(settings: StreamSettings) -> dict[str, StreamResult]:
    """Run proactive, online and full retraining over the same stream; see the module doc."""
    x, y = stream_data(settings.dataset, settings.seed)
    needed = (settings.updates + 1) * settings.samples_per_update + settings.test_size
    if needed > len(x):
        raise ValueError(f"1 + {settings.updates} chunks x {settings.samples_per_update} samples + "
                         f"{settings.test_size} test samples need {needed}; the dataset has "
                         f"{len(x)}")
    if not 1 <= settings.trigger <= settings.batch_size:
        raise ValueError(f"trigger must be in [1, batch_size={settings.batch_size}] "
                         f"(got {settings.trigger})")
    test_x, test_y = x[: settings.test_size], y[: settings.test_size]
    stream_x, stream_y = x[settings.test_size:needed], y[settings.test_size:needed]
    classes = [str(c) for c in range(int(y.max()) + 1)]
    shape = tuple(x.shape[1:])

    def new_model() -> Classifier:
        return Classifier("mlp", shape, classes, params={"hidden": list(settings.hidden)},
                          seed=settings.seed, learning_rate=settings.learning_rate)

    n = settings.samples_per_update
    initial = new_model()
    initial.fit(stream_x[:n], stream_y[:n], epochs=settings.epochs,
                batch_size=settings.batch_size)
    results = {name: StreamResult() for name in ("proactive", "online", "full-retrain")}
    models = {name: Classifier.from_state(initial.state()) for name in ("proactive", "online")}
    histories = {"proactive": History(), "online": History()}
    for history in histories.values():
        history.append(stream_x[:n], stream_y[:n])
    full_model = initial
    generator = torch.Generator().manual_seed(settings.seed)
    for update in range(1, settings.updates + 1):
        chunk_x, chunk_y = stream_x[update * n:(update + 1) * n], stream_y[update * n:(update + 1)
                                                                             * n]
        for name in ("proactive", "online"):
            model, result = models[name], results[name]
            result.prequential.append(model.accuracy(chunk_x, chunk_y))
            trigger = settings.trigger if name == "proactive" else settings.batch_size
            batches = list(proactive_step_batches(chunk_x, chunk_y, trigger, settings.batch_size,
                                                  generator, history=histories[name]))
            start = time.perf_counter()
            model.fit(chunk_x, chunk_y, loader=prebatched((bx, by) for bx, by, _ in batches))
            result.wall_s.append(time.perf_counter() - start)
            result.sample_cost.append(sum(len(bx) for bx, _, _ in batches))
            result.test_accuracy.append(model.accuracy(test_x, test_y))
        result = results["full-retrain"]
        result.prequential.append(full_model.accuracy(chunk_x, chunk_y))
        seen_x, seen_y = stream_x[: (update + 1) * n], stream_y[: (update + 1) * n]
        full_model = new_model()
        start = time.perf_counter()
        full_model.fit(seen_x, seen_y, epochs=settings.epochs, batch_size=settings.batch_size)
        result.wall_s.append(time.perf_counter() - start)
        result.sample_cost.append(settings.epochs * len(seen_x))
        result.test_accuracy.append(full_model.accuracy(test_x, test_y))
    return results
