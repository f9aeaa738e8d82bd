"""The scenario switch: each rule, its exact thresholds, calibration retrains, bad input."""

from __future__ import annotations

import pytest

from cl_server.config.schema import ScenarioRules
from cl_server.scenario_switch import NIC_DRIFT_FRACTION, ScenarioChoice, ScenarioSwitch

KNOWN = {"a", "b"}


def choose(new_labels: dict[str, int], drift: float | None = None, update: int = 1,
           **rules) -> ScenarioChoice:
    return ScenarioSwitch(ScenarioRules(**rules)).choose(KNOWN, new_labels, drift, update)


def test_known_classes_only_is_the_default() -> None:
    c = choose({"a": 30, "b": 70}, drift=0.2)
    assert (c.scenario, c.unseen_classes, c.unseen_share) == ("ni", (), 0.0)
    assert "default 'ni'" in c.reason
    assert choose({"a": 1}, default="nic").scenario == "nic"


def test_retrain_at_the_drift_magnitude_inclusive() -> None:
    assert choose({"a": 10}, drift=0.4999).scenario == "ni"
    c = choose({"a": 10}, drift=0.5)
    assert c.scenario == "retrain" and "0.5 >= 0.5" in c.reason


def test_retrain_beats_new_classes() -> None:
    c = choose({"c": 10}, drift=0.9)
    assert c.scenario == "retrain" and c.unseen_classes == ("c",) and c.unseen_share == 1.0


@pytest.mark.parametrize("update, expected", [(1, "ni"), (2, "ni"), (3, "retrain"), (4, "ni"),
                                              (6, "retrain")])
def test_retrain_every_nth_update(update: int, expected: str) -> None:
    assert choose({"a": 10}, update=update, retrain_every=3).scenario == expected


def test_retrain_every_zero_never_calibrates() -> None:
    assert all(choose({"a": 1}, update=n).scenario == "ni" for n in range(1, 50))


def test_nc_when_unseen_share_is_above_the_threshold() -> None:
    c = choose({"a": 5, "c": 80, "d": 15})
    assert c.scenario == "nc" and c.unseen_classes == ("c", "d")
    assert c.unseen_share == pytest.approx(0.95)
    assert "95.0% of 100 new labels in unseen classes (c, d) > 5.0%" in c.reason


def test_unseen_share_at_the_threshold_is_noise() -> None:
    c = choose({"a": 19, "c": 1})  # exactly 5 %
    assert c.unseen_share == 0.05
    assert c.scenario == "ni" and c.unseen_classes == ("c",)
    assert "treated as noise" in c.reason
    assert choose({"a": 18, "c": 2}).scenario == "nc"  # 10 % > 5 %


def test_nic_needs_known_class_data_and_drift() -> None:
    nic_drift = NIC_DRIFT_FRACTION * 0.5
    c = choose({"a": 50, "c": 50}, drift=nic_drift)
    assert c.scenario == "nic" and "known classes drifted" in c.reason
    assert choose({"a": 50, "c": 50}, drift=nic_drift - 1e-9).scenario == "nc"  # too little drift
    assert choose({"a": 50, "c": 50}, drift=None).scenario == "nc"  # no drift measured


def test_nic_threshold_on_the_known_share_is_strict() -> None:
    drift = 0.3
    assert choose({"a": 1, "c": 19}, drift=drift).scenario == "nc"  # known share exactly 5 %
    assert choose({"a": 2, "c": 18}, drift=drift).scenario == "nic"  # 10 %


def test_nic_follows_the_configured_retrain_magnitude() -> None:
    labels = {"a": 50, "c": 50}
    assert choose(labels, drift=0.9, retrain_drift_magnitude=2.0).scenario == "nc"
    assert choose(labels, drift=1.0, retrain_drift_magnitude=2.0).scenario == "nic"


def test_zero_counts_are_ignored() -> None:
    c = choose({"a": 10, "c": 0})
    assert c.unseen_classes == () and c.scenario == "ni"


def test_no_known_classes_is_all_new() -> None:
    c = ScenarioSwitch(ScenarioRules()).choose(set(), {"x": 3}, None, 1)
    assert c.scenario == "nc" and c.unseen_share == 1.0


@pytest.mark.parametrize("labels", [{}, {"a": 0}, {"a": 0, "c": 0}])
def test_no_new_labels_is_an_error(labels: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="no new labeled samples"):
        choose(labels)


def test_bad_counts_and_update_numbers_are_errors() -> None:
    with pytest.raises(ValueError, match="negative new-label counts for classes: c"):
        choose({"a": 5, "c": -1})
    with pytest.raises(ValueError, match="counts from 1"):
        choose({"a": 5}, update=0)


def test_choice_is_frozen_and_json_able() -> None:
    c = choose({"a": 1, "c": 9})
    with pytest.raises(AttributeError):
        c.scenario = "ni"  # type: ignore[misc]
    assert c.as_dict() == {"scenario": "nc", "reason": c.reason, "unseen_classes": ["c"],
                           "unseen_share": 0.9}
