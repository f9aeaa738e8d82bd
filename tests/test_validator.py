"""The service validator's gates on models whose answers are known exactly."""

from __future__ import annotations

import pytest
import torch

from cl_server.config.schema import ValidationConfig
from evaluator.validator import Holdout, ServiceValidator, best_passing, score
from model_factory.templates import Classifier

CLASSES = ["a", "b", "c"]


def constant(answer: str, classes: list[str] = CLASSES) -> Classifier:
    """A model that always answers ``answer`` (zero weights, a one-hot output bias)."""
    model = Classifier("mlp", (2,), classes, params={"hidden": [4]}, seed=0)
    with torch.no_grad():
        for name, tensor in model.net.named_parameters():
            tensor.zero_()
        last_bias = [t for n, t in model.net.named_parameters() if n.endswith("bias")][-1]
        last_bias[classes.index(answer)] = 10.0
    return model


def holdout(labels: list[str]) -> Holdout:
    return Holdout(torch.zeros(len(labels), 2), labels)


def gates(config: dict[str, object] | None = None) -> ServiceValidator:
    return ServiceValidator(ValidationConfig.model_validate({"gates": config or {}}))


def test_score_counts_per_class_by_name() -> None:
    result = score(constant("b"), holdout(["a", "b", "b", "c"]))
    assert result["accuracy"] == 0.5 and result["count"] == 4
    assert result["per_class"] == {"a": {"accuracy": 0.0, "count": 1},
                                   "b": {"accuracy": 1.0, "count": 2},
                                   "c": {"accuracy": 0.0, "count": 1}}


def test_accuracy_gain_gate_compares_on_the_recent_holdout() -> None:
    recent = holdout(["b", "b", "b", "a"])
    report = gates({"min_accuracy_gain": 0.1}).validate(constant("b"), constant("a"), recent,
                                                        holdout([]))
    gain = report.gates[0]
    assert gain.name == "min_accuracy_gain" and gain.passed
    assert gain.value == pytest.approx(0.75 - 0.25)
    worse = gates({"min_accuracy_gain": 0.0}).validate(constant("a"), constant("b"), recent,
                                                       holdout([]))
    assert not worse.passed and worse.failed_gates == ["min_accuracy_gain"]
    assert worse.gates[0].value == pytest.approx(-0.5)


def test_class_drop_gate_names_the_forgotten_class() -> None:
    historical = holdout(["a", "a", "c", "c"])
    report = gates({"max_class_drop": 0.05, "min_accuracy_gain": -1}).validate(
        constant("a"), constant("c"), holdout(["a"]), historical)
    drop = next(g for g in report.gates if g.name == "max_class_drop")
    assert not drop.passed and drop.value == pytest.approx(1.0)
    assert "class 'c'" in drop.detail and report.failed_gates == ["max_class_drop"]


def test_a_class_the_challenger_does_not_know_counts_as_forgotten() -> None:
    champion = constant("c")
    challenger = constant("a", classes=["a", "b"])  # lost class c entirely
    report = gates({"min_accuracy_gain": -1}).validate(challenger, champion, holdout(["a"]),
                                                       holdout(["c", "c"]))
    assert report.failed_gates == ["max_class_drop"]


def test_latency_and_size_gates() -> None:
    args = (constant("a"), constant("a"), holdout(["a"]), holdout(["a"]))
    slow = gates({"max_p95_latency_increase": 0.2}).validate(*args, challenger_p95_ms=13.0,
                                                             champion_p95_ms=10.0)
    assert slow.failed_gates == ["max_p95_latency_increase"]
    assert slow.gates[2].value == pytest.approx(0.3)
    unmeasured = gates().validate(*args)
    assert unmeasured.passed and unmeasured.gates[2].detail == "not measured for both versions"
    too_big = gates({"max_model_bytes": 10}).validate(*args)
    assert too_big.failed_gates == ["max_model_bytes"]
    assert too_big.gates[3].value == constant("a").size_bytes()


def test_first_version_passes_comparative_gates_but_needs_recent_data() -> None:
    first = gates().validate(constant("a"), None, holdout(["a", "b"]), holdout([]))
    assert first.passed and "no champion yet" in first.gates[0].detail
    empty = gates().validate(constant("a"), None, holdout([]), holdout([]))
    assert empty.failed_gates == ["min_accuracy_gain"]
    assert empty.gates[0].detail == "the recent holdout is empty"


def test_best_passing_challenger_wins() -> None:
    recent = holdout(["b", "b", "c"])
    validator = gates({"min_accuracy_gain": -1, "max_class_drop": 1})
    reports = [(name, validator.validate(constant(name), constant("a"), recent, holdout([])))
               for name in ("a", "b", "c")]
    assert best_passing(reports) == "b"
    assert best_passing([]) is None


def test_holdout_lengths_must_match() -> None:
    with pytest.raises(ValueError, match="3 inputs but 2 labels"):
        Holdout(torch.zeros(3, 2), ["a", "b"])
