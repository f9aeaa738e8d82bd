"""The service validator: a challenger against the champion, gate by gate.

Both models are scored on two holdouts of labeled samples neither was trained on:

- **recent**: the latest labeled samples (does the challenger serve today's data better?);
- **historical**: up to ``historical_per_class`` older samples of every class (did it forget
  a class it used to know?).

Gates come from the service config (``validation.gates``):

| gate | passes when |
| --- | --- |
| ``min_accuracy_gain`` | challenger recent accuracy - champion recent accuracy >= the value |
| ``max_class_drop`` | no class of the historical holdout lost more accuracy than the value |
| ``max_p95_latency_increase`` | challenger p95 / champion p95 - 1 <= the value (when both are measured) |
| ``max_model_bytes`` | the challenger's weights take at most that many bytes (when set) |

Without a champion (the first version) the comparative gates pass with that said in their
detail. Labels are class *names*, so models with different output layers (new classes) compare
on the same footing; a class a model does not know counts as wrong for it.

Example:
    >>> import torch
    >>> from cl_server.config.schema import ValidationConfig
    >>> from model_factory.templates import Classifier
    >>> _ = torch.manual_seed(0)
    >>> x = torch.randn(40, 4); labels = ["a" if v > 0 else "b" for v in x[:, 0]]
    >>> champion = Classifier("mlp", (4,), ["a", "b"], params={"hidden": [8]}, seed=0)
    >>> challenger = Classifier("mlp", (4,), ["a", "b"], params={"hidden": [8]}, seed=1)
    >>> y = torch.tensor([0 if v == "a" else 1 for v in labels])
    >>> _ = challenger.fit(x, y, epochs=200, batch_size=40)
    >>> report = ServiceValidator(ValidationConfig()).validate(
    ...     challenger, champion, Holdout(x, labels), Holdout(x, labels))
    >>> [(g.name, g.passed) for g in report.gates][:2], report.passed
    ([('min_accuracy_gain', True), ('max_class_drop', True)], True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from cl_server.config.schema import ValidationConfig
from cl_server.store import GateResult
from model_factory.templates import Classifier


@dataclass(frozen=True)
class Holdout:
    """Labeled samples: ``inputs`` [N, *input_shape] and their class names."""

    inputs: torch.Tensor
    labels: Sequence[str]

    def __post_init__(self) -> None:
        if len(self.inputs) != len(self.labels):
            raise ValueError(f"holdout: {len(self.inputs)} inputs but {len(self.labels)} labels")


def score(model: Classifier, holdout: Holdout) -> dict[str, Any]:
    """Accuracy overall and per class (class name -> accuracy, count) on ``holdout``."""
    if len(holdout.labels) == 0:
        return {"accuracy": math.nan, "per_class": {}, "count": 0}
    predicted = [model.classes[i] for i in model.predict(holdout.inputs).labels.tolist()]
    hits: dict[str, list[int]] = {}
    for guess, truth in zip(predicted, holdout.labels, strict=True):
        hits.setdefault(truth, []).append(int(guess == truth))
    total = sum(sum(v) for v in hits.values())
    return {"accuracy": total / len(holdout.labels), "count": len(holdout.labels),
            "per_class": {c: {"accuracy": sum(v) / len(v), "count": len(v)}
                          for c, v in sorted(hits.items())}}


@dataclass
class ValidationReport:
    """Every gate's outcome and the scores behind them."""

    gates: list[GateResult]
    passed: bool
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def failed_gates(self) -> list[str]:
        return [g.name for g in self.gates if not g.passed]


class ServiceValidator:
    """Apply ``config.gates`` to a challenger (see the module doc)."""

    def __init__(self, config: ValidationConfig):
        self.config = config

    def validate(self, challenger: Classifier, champion: Classifier | None, recent: Holdout,
                 historical: Holdout, *, challenger_p95_ms: float | None = None,
                 champion_p95_ms: float | None = None) -> ValidationReport:
        gates_config = self.config.gates
        mine = {"recent": score(challenger, recent), "historical": score(challenger, historical)}
        theirs = None if champion is None else {"recent": score(champion, recent),
                                                "historical": score(champion, historical)}
        gates = [self._accuracy_gain(mine, theirs), self._class_drop(mine, theirs),
                 self._latency(challenger_p95_ms, champion_p95_ms)]
        size = challenger.size_bytes()
        limit = gates_config.max_model_bytes
        gates.append(GateResult(name="max_model_bytes", value=float(size),
                                threshold=None if limit is None else float(limit),
                                passed=limit is None or size <= limit,
                                detail="no limit set" if limit is None else
                                f"{size} bytes of weights (limit {limit})"))
        return ValidationReport(gates, all(g.passed for g in gates),
                                {"challenger": mine, "champion": theirs,
                                 "challenger_bytes": size,
                                 "latency_p95_ms": {"challenger": challenger_p95_ms,
                                                    "champion": champion_p95_ms}})

    def _accuracy_gain(self, mine: dict[str, Any], theirs: dict[str, Any] | None) -> GateResult:
        threshold = self.config.gates.min_accuracy_gain
        ours = mine["recent"]["accuracy"]
        if math.isnan(ours):
            return GateResult(name="min_accuracy_gain", value=None, threshold=threshold,
                              passed=False, detail="the recent holdout is empty")
        if theirs is None:
            return GateResult(name="min_accuracy_gain", value=None, threshold=threshold,
                              passed=True, detail=f"no champion yet; challenger recent accuracy "
                                                  f"{ours:.4f}")
        gain = ours - theirs["recent"]["accuracy"]
        return GateResult(name="min_accuracy_gain", value=gain, threshold=threshold,
                          passed=gain >= threshold,
                          detail=f"recent accuracy {ours:.4f} vs champion "
                                 f"{theirs['recent']['accuracy']:.4f}")

    def _class_drop(self, mine: dict[str, Any], theirs: dict[str, Any] | None) -> GateResult:
        threshold = self.config.gates.max_class_drop
        if theirs is None:
            return GateResult(name="max_class_drop", value=None, threshold=threshold,
                              passed=True, detail="no champion yet")
        drops = {c: stats["accuracy"] - mine["historical"]["per_class"].get(
                     c, {"accuracy": 0.0})["accuracy"]
                 for c, stats in theirs["historical"]["per_class"].items()}
        if not drops:
            return GateResult(name="max_class_drop", value=None, threshold=threshold,
                              passed=True, detail="the historical holdout is empty")
        worst = max(drops, key=lambda c: drops[c])
        return GateResult(name="max_class_drop", value=drops[worst], threshold=threshold,
                          passed=drops[worst] <= threshold,
                          detail=f"largest drop on class '{worst}': "
                                 f"{theirs['historical']['per_class'][worst]['accuracy']:.4f} -> "
                                 f"{mine['historical']['per_class'].get(worst, {'accuracy': 0.0})['accuracy']:.4f}")

    def _latency(self, challenger_ms: float | None, champion_ms: float | None) -> GateResult:
        threshold = self.config.gates.max_p95_latency_increase
        if challenger_ms is None or champion_ms is None or champion_ms <= 0:
            return GateResult(name="max_p95_latency_increase", value=None, threshold=threshold,
                              passed=True, detail="not measured for both versions")
        increase = challenger_ms / champion_ms - 1
        return GateResult(name="max_p95_latency_increase", value=increase, threshold=threshold,
                          passed=increase <= threshold,
                          detail=f"p95 {challenger_ms:.3f} ms vs champion {champion_ms:.3f} ms")


def best_passing(reports: Sequence[tuple[str, ValidationReport]]) -> str | None:
    """Of several challengers (name, report), the passing one with the best recent accuracy."""
    passing = [(name, r) for name, r in reports if r.passed]
    if not passing:
        return None
    return max(passing, key=lambda item: item[1].report["challenger"]["recent"]["accuracy"])[0]


def update_transfer(report: ValidationReport, n_classes: int) -> dict[str, float | None]:
    """ACC, BWT, FWT and forgetting of one update, from its validation scores.

    The update is read as two experiences: 0, what the champion learned before (scored on the
    historical holdout), and 1, this update's data (the recent holdout). Row 0 of the accuracy
    matrix is the champion, row 1 the challenger, so ``BWT = R[1][0] - R[0][0]`` (negative:
    the update forgot), ``FWT = R[0][1] - 1/n_classes`` (how well the old model already served
    the new data, against chance) and ``ACC`` is the challenger's mean over both. Values the
    holdouts cannot give (no champion, an empty holdout) are None; all are fractions.

    Example:
        >>> report = ValidationReport([], True, {
        ...     "champion": {"historical": {"accuracy": 0.9}, "recent": {"accuracy": 0.4}},
        ...     "challenger": {"historical": {"accuracy": 0.85}, "recent": {"accuracy": 0.95}}})
        >>> {k: round(v, 3) for k, v in update_transfer(report, 10).items()}
        {'acc': 0.9, 'bwt': -0.05, 'fwt': 0.3, 'forgetting': 0.05}
    """
    from evaluator.metrics import AccuracyMatrix, acc, bwt, forgetting, fwt

    def accuracy(side: str, holdout: str) -> float:
        scores = report.report.get(side) or {}
        value = (scores.get(holdout) or {}).get("accuracy")
        return math.nan if value is None else float(value)

    mine = [accuracy("challenger", "historical"), accuracy("challenger", "recent")]
    theirs = [accuracy("champion", "historical"), accuracy("champion", "recent")]
    measured = [a for a in mine if not math.isnan(a)]
    result: dict[str, float | None] = {
        "acc": sum(measured) / len(measured) if measured else None,
        "bwt": None, "fwt": None, "forgetting": None}
    R = AccuracyMatrix(2)
    for i, row in enumerate((theirs, mine)):
        for j, value in enumerate(row):
            if not math.isnan(value):
                R.record(i, j, value)
    for name, metric in (("acc", acc), ("bwt", bwt), ("forgetting", forgetting),
                         ("fwt", lambda m: fwt(m, b=[math.nan, 1 / max(1, n_classes)]))):
        try:
            result[name] = metric(R)
        except ValueError:  # an entry it needs was not measured: keep what the holdouts give
            pass
    return result
