"""The trigger policy: each rule, cooldown, manual requests, de-duplication, priority, state."""

from __future__ import annotations

import json

import pytest

from cl_server.config.schema import TriggersConfig
from cl_server.triggers import PRIORITY, TriggerDecision, TriggerPolicy


def policy(*rules: dict, cooldown_s: float = 0.0, **kwargs) -> TriggerPolicy:
    config = TriggersConfig.model_validate({"cooldown_s": cooldown_s, "rules": list(rules)})
    return TriggerPolicy(config, **{"started_at": 0.0, **kwargs})


def run_job(p: TriggerPolicy, start: float, end: float, deployed: bool = True) -> None:
    p.job_started(now=start)
    assert p.decide(now=(start + end) / 2, running=True) is None
    p.job_finished(now=end, deployed=deployed)


TIME = {"kind": "time", "interval_s": 100}
DRIFT2 = {"kind": "drift", "min_detectors": 2}


# --- time ---------------------------------------------------------------------------------------

def test_time_counts_from_policy_start_then_from_last_job_start() -> None:
    p = policy(TIME, started_at=50.0)
    assert p.decide(now=149.9, running=False) is None
    d = p.decide(now=150.0, running=False)
    assert d.kind == "time" and d.at == 150.0
    assert "since the policy started" in d.reason and d.evidence["time"]["elapsed_s"] == 100.0
    run_job(p, 160.0, 170.0)
    assert p.decide(now=259.0, running=False) is None
    assert "since the last job start" in p.decide(now=260.0, running=False).reason


def test_started_at_defaults_to_first_call() -> None:
    p = TriggerPolicy(TriggersConfig.model_validate({"cooldown_s": 0, "rules": [TIME]}))
    p.observe_labels(1, now=1000.0)
    assert p.decide(now=1099.0, running=False) is None
    assert p.decide(now=1100.0, running=False).kind == "time"


# --- volume -------------------------------------------------------------------------------------

def test_volume_new_labels_since_last_job() -> None:
    p = policy({"kind": "volume", "new_labels": 50})
    p.observe_labels(49, now=1.0)
    assert p.decide(now=1.0, running=False) is None
    p.observe_labels(1, now=2.0)
    d = p.decide(now=2.0, running=False)
    assert d.kind == "volume" and d.evidence["volume"]["new_labels"] == 50
    assert "50 new labels" in d.reason
    p.job_started(now=3.0)
    p.observe_labels(49, now=4.0)
    assert p.decide(now=4.0, running=False) is None  # the counter restarted at the job start


def test_volume_growth_pct_math() -> None:
    p = policy({"kind": "volume", "growth_pct": 25}, labeled_total=200)
    p.observe_labels(49, now=1.0)  # 24.5 %
    assert p.decide(now=1.0, running=False) is None
    p.observe_labels(1, now=2.0)  # 50 / 200 = 25 %
    d = p.decide(now=2.0, running=False)
    assert d.kind == "volume"
    assert d.evidence["volume"]["growth_pct"] == pytest.approx(25.0)
    assert "grew 25.0% (200 -> 250)" in d.reason
    p.job_started(now=3.0)  # the base is now 250: 25 % more is 62.5 labels
    p.observe_labels(62, now=4.0)
    assert p.decide(now=4.0, running=False) is None
    p.observe_labels(1, now=5.0)
    assert p.decide(now=5.0, running=False).evidence["volume"]["labeled_at_last_job"] == 250


def test_volume_growth_waits_for_a_nonzero_base() -> None:
    p = policy({"kind": "volume", "growth_pct": 10})
    p.observe_labels(1000, now=1.0)
    assert p.decide(now=1.0, running=False) is None
    p.job_started(now=2.0)  # another rule (or a person) started a job: base 1000
    p.observe_labels(100, now=3.0)
    assert p.decide(now=3.0, running=False).kind == "volume"


def test_volume_rule_with_both_thresholds_fires_on_either() -> None:
    p = policy({"kind": "volume", "new_labels": 1000, "growth_pct": 10}, labeled_total=100)
    p.observe_labels(10, now=1.0)
    assert "grew" in p.decide(now=1.0, running=False).reason


def test_negative_label_count_is_refused() -> None:
    with pytest.raises(ValueError, match="count"):
        policy().observe_labels(-1, now=0.0)


# --- performance --------------------------------------------------------------------------------

PERF = {"kind": "performance", "threshold": 0.8, "window": 10}


def test_performance_needs_a_full_window() -> None:
    p = policy(PERF)
    p.observe_outcome([False] * 9, now=1.0)  # accuracy 0, but only 9 of 10
    assert p.decide(now=1.0, running=False) is None
    p.observe_outcome(False, now=2.0)
    d = p.decide(now=2.0, running=False)
    assert d.kind == "performance" and d.evidence["performance"]["value"] == 0.0


def test_performance_threshold_is_strict_and_uses_the_last_window() -> None:
    p = policy(PERF)
    p.observe_outcome([False] * 5 + [True] * 8 + [False] * 2, now=1.0)  # last 10: 8 right
    assert p.decide(now=1.0, running=False) is None  # 0.8 is not below 0.8
    p.observe_outcome(False, now=2.0)  # last 10: 7 right
    d = p.decide(now=2.0, running=False)
    assert d.evidence["performance"]["value"] == pytest.approx(0.7)
    assert "accuracy 0.700 over the last 10" in d.reason


def test_performance_fires_once_per_dip_and_rearms_after_a_refilled_window() -> None:
    p = policy(PERF)
    p.observe_outcome([False] * 10, now=1.0)
    assert p.decide(now=1.0, running=False).kind == "performance"
    p.observe_outcome([False] * 10, now=2.0)
    assert p.decide(now=2.0, running=False) is None  # same dip, job not started yet
    p.job_started(now=3.0)
    p.observe_outcome([False] * 20, now=4.0)  # outcomes of the old model during the job
    p.job_finished(now=5.0, deployed=False)
    assert p.state()["outcomes"] == [] and p.state()["performance_armed"]
    p.observe_outcome([False] * 9, now=6.0)
    assert p.decide(now=6.0, running=False) is None  # window not refilled yet
    p.observe_outcome(False, now=7.0)
    assert p.decide(now=7.0, running=False).kind == "performance"  # the job did not fix it


def test_performance_recovery_after_deploy_does_not_fire() -> None:
    p = policy(PERF)
    p.observe_outcome([False] * 10, now=1.0)
    assert p.decide(now=1.0, running=False) is not None
    run_job(p, 2.0, 3.0)
    p.observe_outcome([True] * 10, now=4.0)
    assert p.decide(now=4.0, running=False) is None
    assert p.state()["window_accuracy"] == 1.0


def test_outcomes_accept_any_iterable_of_truthy_values() -> None:
    p = policy(PERF)
    p.observe_outcome(iter([1, 0, 1]), now=1.0)
    p.observe_outcome((x > 0 for x in [1, -1]), now=1.0)
    assert p.state()["outcomes"] == [True, False, True, True, False]


# --- drift --------------------------------------------------------------------------------------

def test_drift_needs_min_distinct_detectors_in_one_round() -> None:
    p = policy(DRIFT2)
    p.observe_drift(["ks:inputs", "ks:inputs"], round_id=1, now=1.0)  # one detector, twice
    assert p.decide(now=1.0, running=False) is None
    p.observe_drift(["ks:inputs", "chi2:predictions"], round_id=2, now=2.0)
    d = p.decide(now=2.0, running=False)
    assert d.kind == "drift"
    assert d.evidence["drift"]["detectors"] == ["chi2:predictions", "ks:inputs"]
    assert d.evidence["drift"]["round_id"] == 2 and d.evidence["drift"]["min_detectors"] == 2


def test_long_drift_episode_yields_one_decision() -> None:
    p = policy(DRIFT2, cooldown_s=10.0)
    decisions = []
    for r in range(200):  # 200 alarm rounds, one a second, jobs take 5 s
        now = float(r)
        p.observe_drift(["ks:inputs", "adwin:errors"], round_id=r, now=now)
        if p.state()["last_job_start"] is not None and now == p.state()["last_job_start"] + 5:
            p.job_finished(now=now, deployed=True)
        running = p.state()["last_job_start"] is not None and now < p.state()["last_job_start"] + 5
        d = p.decide(now=now, running=running)
        if d is not None:
            decisions.append(d)
            p.job_started(now=now)
    assert [d.evidence["drift"]["round_id"] for d in decisions] == [0]


def test_drift_rearms_after_the_episode_ends_and_the_cooldown_passes() -> None:
    p = policy(DRIFT2, cooldown_s=100.0)
    alarms = ["ks:inputs", "chi2:predictions"]
    p.observe_drift(alarms, round_id=1, now=0.0)
    assert p.decide(now=0.0, running=False) is not None
    run_job(p, 0.0, 10.0)
    p.observe_drift(alarms, round_id=2, now=150.0)
    assert p.decide(now=150.0, running=False) is None  # still the first episode
    p.observe_drift(["ks:inputs"], round_id=3, now=160.0)  # episode ends
    assert p.decide(now=160.0, running=False) is None
    p.observe_drift(alarms, round_id=4, now=170.0)  # a new episode
    d = p.decide(now=170.0, running=False)
    assert d.kind == "drift" and d.evidence["drift"]["first_round_id"] == 4


def test_new_episode_within_cooldown_waits_for_it() -> None:
    p = policy(DRIFT2, cooldown_s=100.0)
    alarms = ["ks:inputs", "chi2:predictions"]
    p.observe_drift(alarms, round_id=1, now=0.0)
    assert p.decide(now=0.0, running=False) is not None
    run_job(p, 0.0, 10.0)
    p.observe_drift([], round_id=2, now=20.0)
    p.observe_drift(alarms, round_id=3, now=30.0)
    p.observe_drift(alarms, round_id=4, now=40.0)
    assert p.decide(now=40.0, running=False) is None  # cooldown until 100
    d = p.decide(now=100.0, running=False)
    assert d.kind == "drift"
    assert d.evidence["drift"]["first_round_id"] == 3 and d.evidence["drift"]["rounds"] == 2


def test_a_failed_job_leaves_its_open_drift_episode_to_fire_again_after_the_cooldown() -> None:
    p = policy(DRIFT2, cooldown_s=30.0)
    alarms = ["ks:inputs", "chi2:predictions"]
    p.observe_drift(alarms, round_id=1, now=0.0)
    assert p.decide(now=0.0, running=False) is not None
    p.job_started(now=0.0)
    p.job_finished(now=10.0, deployed=False, failed=True)  # e.g. its worker was killed
    p.observe_drift(alarms, round_id=2, now=20.0)  # the same episode goes on
    assert p.decide(now=20.0, running=False) is None  # cooldown until 30
    again = TriggerPolicy.from_state(p.config, json.loads(json.dumps(p.state())))
    d = again.decide(now=30.0, running=False)
    assert d.kind == "drift" and d.evidence["drift"]["first_round_id"] == 1
    assert d.evidence["drift"]["retry"] and "the job started for it failed" in d.reason
    again.job_started(now=30.0)
    again.job_finished(now=40.0, deployed=False)  # rejected: the episode has its answer
    again.observe_drift(alarms, round_id=3, now=100.0)
    assert again.decide(now=100.0, running=False) is None


def test_a_failed_job_after_the_episode_ended_fires_nothing() -> None:
    p = policy(DRIFT2)
    p.observe_drift(["ks:inputs", "chi2:predictions"], round_id=1, now=0.0)
    assert p.decide(now=0.0, running=False) is not None
    p.job_started(now=0.0)
    p.observe_drift([], round_id=2, now=5.0)  # the drift is over
    p.job_finished(now=10.0, deployed=False, failed=True)
    assert p.decide(now=11.0, running=False) is None


def test_alarm_during_a_running_job_is_pending_until_it_ends() -> None:
    p = policy(DRIFT2)
    p.job_started(now=0.0)
    p.observe_drift(["ks:inputs", "chi2:predictions"], round_id=1, now=5.0)
    assert p.decide(now=5.0, running=True) is None
    p.job_finished(now=8.0, deployed=True)
    assert p.decide(now=9.0, running=False).kind == "drift"


def test_a_job_started_after_an_alarm_covers_it() -> None:
    p = policy(DRIFT2, {"kind": "volume", "new_labels": 5}, cooldown_s=50.0)
    p.observe_drift(["ks:inputs", "chi2:predictions"], round_id=1, now=1.0)
    p.request_manual("scheduled", actor="ops", now=1.0)
    p.job_started(now=2.0)  # started from outside the policy (e.g. the API)
    p.job_finished(now=3.0, deployed=True)
    p.observe_drift(["ks:inputs", "chi2:predictions"], round_id=2, now=60.0)  # same episode
    assert p.decide(now=60.0, running=False) is None
    assert p.state()["manual"] is None


# --- cooldown, running, manual ------------------------------------------------------------------

def test_cooldown_blocks_automatic_decisions() -> None:
    p = policy({"kind": "volume", "new_labels": 1}, cooldown_s=30.0)
    p.job_started(now=100.0)
    p.job_finished(now=105.0, deployed=True)
    p.observe_labels(10, now=106.0)
    assert p.cooldown_left(now=106.0) == 24.0
    assert p.decide(now=129.9, running=False) is None
    assert p.decide(now=130.0, running=False).kind == "volume"
    assert p.state()["cooldown_until"] == 130.0


def test_no_automatic_decision_while_running() -> None:
    p = policy({"kind": "volume", "new_labels": 1})
    p.observe_labels(5, now=1.0)
    assert p.decide(now=1.0, running=True) is None
    assert p.decide(now=1.0, running=False) is not None


def test_paused_service_starts_only_manual_jobs_and_keeps_drift_pending() -> None:
    p = policy({"kind": "drift", "min_detectors": 1}, {"kind": "volume", "new_labels": 10})
    p.observe_drift(["ks"], round_id=1, now=1.0)
    p.observe_labels(10, now=1.0)
    assert p.decide(now=2.0, running=False, paused=True) is None
    p.request_manual("check it", actor="eve", now=3.0)
    d = p.decide(now=3.0, running=False, paused=True)
    assert d.kind == "manual" and d.evidence["fired"] == ["manual", "drift", "volume"]
    p.job_started(now=3.0)
    p.job_finished(now=4.0, deployed=True)
    p.observe_drift([], round_id=2, now=5.0)  # the episode the manual job covered ends
    p.observe_drift(["ks"], round_id=3, now=6.0)  # a new one begins while paused
    assert p.decide(now=7.0, running=False, paused=True) is None
    resumed = p.decide(now=8.0, running=False)
    assert resumed is not None and resumed.kind == "drift"


def test_manual_overrides_the_cooldown() -> None:
    p = policy(cooldown_s=1000.0)
    p.job_started(now=0.0)
    p.job_finished(now=1.0, deployed=True)
    p.request_manual("labels fixed", actor="alice", now=2.0)
    d = p.decide(now=2.0, running=False)
    assert d.kind == "manual" and d.reason == "manual request by alice: labels fixed"
    assert d.evidence["manual"]["actor"] == "alice"
    assert p.decide(now=3.0, running=False) is None  # served once


def test_manual_is_refused_while_running() -> None:
    p = policy()
    p.request_manual("now please", actor="bob", now=1.0)
    assert p.decide(now=2.0, running=True) is None
    refused = p.state()["refused"]
    assert refused["actor"] == "bob" and refused["why"] == "a job is running"
    assert refused["refused_at"] == 2.0
    assert p.decide(now=3.0, running=False) is None  # dropped, not deferred


def test_repeated_manual_requests_are_one_decision() -> None:
    p = policy()
    p.request_manual("first", actor="a", now=1.0)
    p.request_manual("second", actor="b", now=2.0)
    d = p.decide(now=3.0, running=False)
    assert d.evidence["manual"]["requests"] == 2 and d.evidence["manual"]["actor"] == "b"


# --- priority -----------------------------------------------------------------------------------

def test_priority_order_and_evidence_of_the_others() -> None:
    p = policy(TIME, {"kind": "volume", "new_labels": 1}, PERF, DRIFT2)
    p.observe_labels(3, now=1.0)
    p.observe_outcome([False] * 10, now=1.0)
    p.observe_drift(["a", "b"], round_id=7, now=1.0)
    p.request_manual("why not", actor="c", now=1.0)
    d = p.decide(now=200.0, running=False)
    assert list(PRIORITY) == ["manual", "drift", "performance", "volume", "time"]
    assert d.kind == "manual"
    assert d.evidence["fired"] == list(PRIORITY)
    assert set(d.evidence) == {"fired", *PRIORITY}
    assert d.reason.endswith("(also fired: drift, performance, volume, time)")


@pytest.mark.parametrize("present, expected", [
    ({"drift", "performance", "volume", "time"}, "drift"),
    ({"performance", "volume", "time"}, "performance"),
    ({"volume", "time"}, "volume"),
    ({"time"}, "time"),
])
def test_each_rank_beats_those_below(present: set[str], expected: str) -> None:
    p = policy(TIME, {"kind": "volume", "new_labels": 1}, PERF, DRIFT2)
    if "volume" in present:
        p.observe_labels(1, now=0.0)
    if "performance" in present:
        p.observe_outcome([False] * 10, now=0.0)
    if "drift" in present:
        p.observe_drift(["a", "b"], round_id=1, now=0.0)
    d = p.decide(now=100.0, running=False)
    assert d.kind == expected and set(d.evidence["fired"]) == present


def test_a_decision_consumes_every_edge_rule_that_fired() -> None:
    p = policy({"kind": "volume", "new_labels": 1}, PERF, DRIFT2)
    p.observe_outcome([False] * 10, now=0.0)
    p.observe_drift(["a", "b"], round_id=1, now=0.0)
    assert p.decide(now=0.0, running=False).kind == "drift"
    p.observe_labels(1, now=1.0)
    assert p.decide(now=1.0, running=False).evidence["fired"] == ["volume"]


def test_no_rules_never_fire() -> None:
    p = policy()
    p.observe_labels(10**6, now=0.0)
    p.observe_drift(["a", "b", "c"], round_id=1, now=0.0)
    assert p.decide(now=10**9, running=False) is None


# --- state --------------------------------------------------------------------------------------

def test_state_round_trip_keeps_behaviour() -> None:
    rules = (TIME, {"kind": "volume", "new_labels": 100, "growth_pct": 50}, PERF, DRIFT2)
    p = policy(*rules, cooldown_s=20.0, labeled_total=40)
    p.observe_drift(["a", "b"], round_id="r1", now=1.0)
    assert p.decide(now=1.0, running=False).kind == "drift"
    p.job_started(now=1.0)
    p.observe_drift(["a", "b"], round_id="r2", now=2.0)  # the episode goes on
    p.job_finished(now=3.0, deployed=True)
    p.observe_labels(15, now=4.0)
    p.observe_outcome([True, False, True], now=4.0)
    p.request_manual("check", actor="x", now=5.0)
    p.decide(now=5.0, running=True)  # refused, recorded

    state = json.loads(json.dumps(p.state()))
    config = TriggersConfig.model_validate({"cooldown_s": 20.0, "rules": list(rules)})
    q = TriggerPolicy.from_state(config, state)
    assert q.state() == p.state()

    for policy_ in (p, q):
        policy_.observe_drift(["a", "b"], round_id="r3", now=30.0)  # same episode: nothing
        assert policy_.decide(now=30.0, running=False) is None
        policy_.observe_labels(5, now=31.0)  # 20 / 40 = 50 %
        assert "grew 50.0% (40 -> 60)" in policy_.decide(now=31.0, running=False).reason
    assert q.state() == p.state()


def test_from_state_refuses_an_unknown_version() -> None:
    state = policy().state()
    state["version"] = 99
    with pytest.raises(ValueError, match="version 99"):
        TriggerPolicy.from_state(TriggersConfig(), state)


def test_decision_is_frozen_and_json_able() -> None:
    p = policy(TIME)
    d = p.decide(now=100.0, running=False)
    assert isinstance(d, TriggerDecision)
    with pytest.raises(AttributeError):
        d.kind = "manual"  # type: ignore[misc]
    assert json.loads(json.dumps(d.as_dict()))["kind"] == "time"
