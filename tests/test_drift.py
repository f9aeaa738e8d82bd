"""Drift detectors: one contract test that every registered detector passes on every signal it
can watch (so a new detector is tested the moment it is registered), then the specifics: the KS
multiple-test correction against scipy, chi-square with an unseen class, River's detectors on
River's synthetic concept-drift streams, parameter and input validation, the monitor's routing,
and the round trip of a result into the stored ``DriftEvent``.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from river import naive_bayes
from river.datasets import synth
from scipy import stats

from cl_server.config.schema import DETECTOR_SIGNALS, DetectorConfig, DriftConfig
from cl_server.config.schema import DETECTORS as CONFIG_KINDS
from cl_server.drift import (
    DETECTORS,
    DriftMonitor,
    DriftResult,
    make_detector,
    to_event,
)
from cl_server.drift.chi2 import ChiSquareDetector
from cl_server.drift.ks import KSDetector, correct_p_values
from cl_server.drift.streaming import RiverDetector
from cl_server.store.entities import DriftEvent

WINDOW, REFERENCE, ROUNDS, CHANGED_ROUNDS = 250, 500, 20, 5

# Alarms allowed in ROUNDS stationary rounds. ks and chi2 test at alpha = 0.01 (0.2 expected;
# 20 seeds gave at most 2 for ks, 1 for chi2). River's detectors run with River's defaults, whose
# false-alarm behaviour is their own: ADWIN, PageHinkley and HDDM (Hoeffding/McDiarmid bounds)
# gave none in 20 seeds; DDM at most 2; KSWIN tests at every sample at alpha = 0.005, so on a
# continuous stream (inputs) it flags about once per 700 samples (up to 9 rounds of 20), while
# its KS tests on 0/1 streams are conservative (none); EDDM at a 0.1 error rate alarms in about
# half of the rounds (10.5 of 20 on average, up to 16): use it for learners whose error falls.
FALSE_ALARMS = {"ks": 1, "chi2": 1, "adwin": 0, "page_hinkley": 0, "hddm_a": 0, "hddm_w": 0,
                "ddm": 2, "kswin": 10, "eddm": 16}
# Rounds after the change by which the first alarm must have come (0 = the first changed round).
DELAY_ROUNDS = 2
# KSWIN compares its latest stat_size samples with a sample of the window_size - stat_size
# before them: a change it misses in that short span is never seen. With River's defaults
# (100/30) it missed an error rate 0.1 -> 0.5 in 9 of 40 streams; 300/100 caught 40 of 40.
CONTRACT_PARAMS: dict[tuple[str, str], dict[str, Any]] = {
    ("kswin", "errors"): {"window_size": 300, "stat_size": 100}}

CASES = [pytest.param(kind, signal, id=f"{kind}-{signal}")
         for kind in sorted(DETECTORS) for signal in DETECTOR_SIGNALS[kind]]


def signal_stream(signal: str, n: int, changed: bool, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of ``signal``; ``changed`` shifts the distribution abruptly: inputs' mean by
    one standard deviation, class shares from uniform to skewed, the error rate 0.1 -> 0.5."""
    if signal == "inputs":
        return rng.normal(size=(n, 4)) + (1.0 if changed else 0.0)
    if signal == "predictions":
        return rng.choice(5, size=n, p=[0.4, 0.3, 0.1, 0.1, 0.1] if changed else None)
    return (rng.random(n) < (0.5 if changed else 0.1)).astype(np.int64)


def detector(kind: str, signal: str, **params: Any) -> Any:
    return DETECTORS[kind](signal, window=WINDOW, reference_size=REFERENCE,
                           params={**CONTRACT_PARAMS.get((kind, signal), {}), **params})


def feed(detector: Any, values: np.ndarray, batch: int) -> list[DriftResult]:
    return [r for start in range(0, len(values), batch)
            for r in detector.update(values[start:start + batch])]


def assert_well_formed(result: DriftResult, kind: str, signal: str) -> None:
    assert (result.detector, result.signal) == (kind, signal)
    assert isinstance(result.alarm, bool)
    assert isinstance(result.magnitude, float) and 0 <= result.magnitude < math.inf
    assert result.statistic is None or math.isfinite(result.statistic)
    assert result.p_value is None or 0 <= result.p_value <= 1
    json.dumps(result.evidence, allow_nan=False)


# --- contract: every registered detector, on every signal it can watch ------------------------

def test_registry_matches_the_config_schema() -> None:
    assert set(DETECTORS) == set(CONFIG_KINDS)
    for kind, cls in DETECTORS.items():
        assert cls.kind == kind


@pytest.mark.parametrize(("kind", "signal"), CASES)
def test_contract(kind: str, signal: str) -> None:
    rng = np.random.default_rng(1)
    values = np.concatenate([signal_stream(signal, REFERENCE + ROUNDS * WINDOW, False, rng),
                             signal_stream(signal, CHANGED_ROUNDS * WINDOW, True, rng)])
    first = detector(kind, signal)
    results = feed(first, values, batch=97)

    assert len(results) == ROUNDS + CHANGED_ROUNDS
    for i, result in enumerate(results):
        assert_well_formed(result, kind, signal)
        assert result.samples_seen == REFERENCE + (i + 1) * WINDOW
    stationary, changed = results[:ROUNDS], results[ROUNDS:]
    assert sum(r.alarm for r in stationary) <= FALSE_ALARMS[kind]
    assert any(r.alarm for r in changed[:DELAY_ROUNDS + 1])
    assert (np.mean([r.magnitude for r in changed])
            > np.mean([r.magnitude for r in stationary]))
    assert first.state()["rounds"] == len(results)
    assert first.state()["alarms"] == sum(r.alarm for r in results)

    # Same stream, other batching: the same results, to the last bit.
    assert feed(detector(kind, signal), values, batch=len(values)) == results


# --- KS ---------------------------------------------------------------------------------------

def test_corrections_by_hand_and_against_scipy() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.005])
    # Bonferroni: m * p. Holm: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03,
    # 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06.
    assert correct_p_values(p, "bonferroni") == pytest.approx([0.04, 0.16, 0.12, 0.02])
    assert correct_p_values(p, "holm") == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert correct_p_values(p, "bh") == pytest.approx(
        stats.false_discovery_control(p, method="bh"))
    # BH by hand: sorted p * m / rank = 0.02, 0.02, 0.04, 0.04 (already monotone).
    assert correct_p_values(p, "bh") == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert correct_p_values(np.array([0.7]), "holm") == pytest.approx([0.7])


@pytest.mark.parametrize("correction", ["bh", "holm", "bonferroni"])
def test_ks_result_matches_scipy(correction: str) -> None:
    rng = np.random.default_rng(3)
    reference = rng.normal(size=(300, 6))
    window = rng.normal(size=(100, 6)) + [0, 0, 0.5, 0, 0.25, 0]
    ks = KSDetector("inputs", window=100, reference_size=300, alpha=0.05,
                    params={"correction": correction})
    [result] = ks.update(np.concatenate([reference, window]))

    raw = [stats.ks_2samp(reference[:, j], window[:, j]) for j in range(6)]
    corrected = correct_p_values(np.array([t.pvalue for t in raw]), correction)
    statistics = np.array([t.statistic for t in raw])
    assert result.statistic == pytest.approx(statistics.max())
    assert result.p_value == pytest.approx(corrected.min())
    assert result.magnitude == pytest.approx(statistics.mean())
    assert result.alarm == (corrected.min() < 0.05)
    top = result.evidence["top_features"]
    assert [f["feature"] for f in top] == np.lexsort((-statistics, corrected))[:5].tolist()
    assert top[0]["feature"] == 2
    assert top[0]["p_value"] == pytest.approx(corrected[2])
    assert result.evidence["drifted_features"] == int((corrected < 0.05).sum())
    assert result.evidence["space"] == "raw"


def test_ks_tests_raw_features_up_to_max_features_then_reference_pca() -> None:
    rng = np.random.default_rng(4)
    mixing = rng.normal(size=(5, 784))

    def images(n: int, shift: float = 0.0) -> np.ndarray:
        latent = rng.normal(size=(n, 5)) + [shift, 0, 0, 0, 0]
        return latent @ mixing + 0.1 * rng.normal(size=(n, 784))

    raw = KSDetector("inputs", window=200, reference_size=400)
    projected = KSDetector("inputs", window=200, reference_size=400,
                           params={"max_features": 100})
    batch = np.concatenate([images(600), images(200, shift=1.0)])
    for ks, space, tested in [(raw, "raw", 784), (projected, "pca", 32)]:
        # PCA fitted and tested on the same samples would alarm on the stationary round.
        stationary, changed = ks.update(batch)
        assert not stationary.alarm and changed.alarm
        assert changed.evidence["space"] == space
        assert changed.evidence["features_tested"] == tested

    small = KSDetector("inputs", window=50, reference_size=20, params={"projection": "pca"})
    result = small.update(rng.normal(size=(70, 3)))[0]
    assert result.evidence["features_tested"] == 3  # capped at the feature count


# --- chi-square -------------------------------------------------------------------------------

def test_chi2_handles_a_class_unseen_in_the_reference() -> None:
    rng = np.random.default_rng(5)
    reference = rng.choice(3, size=600)
    chi2 = ChiSquareDetector("predictions", window=300, reference_size=600)
    chi2.update(reference)

    # One stray sample of class 3: reported, but not enough for an alarm.
    stray = np.concatenate([rng.choice(3, size=299), [3]])
    [result] = chi2.update(stray)
    assert result.evidence["unseen_classes"] == [3]
    assert result.evidence["unseen_share"] == pytest.approx(1 / 300)
    assert not result.alarm

    # The statistic is the homogeneity test of the smoothed 2 x 4 table.
    table = np.stack([np.bincount(reference, minlength=4), np.bincount(stray, minlength=4)]) + 0.5
    expected = stats.chi2_contingency(table, correction=False)
    assert result.statistic == pytest.approx(expected.statistic)
    assert result.p_value == pytest.approx(expected.pvalue)
    assert result.evidence["dof"] == 3
    shares = [np.bincount(reference, minlength=4) / 600, np.bincount(stray, minlength=4) / 300]
    assert result.magnitude == pytest.approx(0.5 * np.abs(shares[1] - shares[0]).sum())

    # A new class taking a third of the window: alarm, total variation distance about 1/3.
    [result] = chi2.update(np.concatenate([rng.choice(3, size=200), np.full(100, 3)]))
    assert result.alarm and result.evidence["unseen_share"] == pytest.approx(1 / 3)
    assert result.magnitude == pytest.approx(1 / 3, abs=0.05)
    assert result.evidence["classes"][0]["class"] == 3

    # Without smoothing the unseen class still has a positive expected count: no error.
    plain = ChiSquareDetector("predictions", window=10, reference_size=10,
                              params={"smoothing": 0.0})
    [result] = plain.update(np.r_[np.zeros(10, int), np.ones(10, int)])
    assert result.alarm and math.isfinite(result.statistic)


def test_chi2_with_a_single_class_everywhere_is_no_drift() -> None:
    chi2 = ChiSquareDetector("predictions", window=5, reference_size=5)
    [result] = chi2.update(np.zeros(10, dtype=int))
    assert (result.statistic, result.p_value, result.magnitude, result.alarm) == (0, 1, 0, False)


# --- River's detectors on River's concept-drift streams --------------------------------------

DRIFT_AT, STREAM_LENGTH = 3000, 5000
RIVER_KINDS = sorted(kind for kind, cls in DETECTORS.items() if issubclass(cls, RiverDetector))


@pytest.fixture(scope="module")
def served_errors() -> dict[str, np.ndarray]:
    """The 0/1 errors of a model trained on the first concept, then served frozen on a stream
    whose concept changes at DRIFT_AT (River's ConceptDriftStream, a 50-sample transition)."""
    generators = {
        "stagger": lambda concept, seed: synth.STAGGER(classification_function=concept,
                                                       seed=seed),
        "agrawal": lambda concept, seed: synth.Agrawal(classification_function=concept,
                                                       seed=seed),
    }
    errors = {}
    for name, generator in generators.items():
        model = naive_bayes.GaussianNB()
        for x, y in generator(0, 7).take(2000):
            model.learn_one(x, y)
        stream = synth.ConceptDriftStream(generator(0, 1), generator(2, 1), position=DRIFT_AT,
                                          width=50, seed=1)
        errors[name] = np.array([model.predict_one(x) != y
                                 for x, y in stream.take(STREAM_LENGTH)], dtype=np.int64)
    return errors


@pytest.mark.parametrize("stream", ["stagger", "agrawal"])
@pytest.mark.parametrize("kind", RIVER_KINDS)
def test_river_detectors_react_to_concept_drift(kind: str, stream: str,
                                                served_errors: dict[str, np.ndarray]) -> None:
    errors = served_errors[stream]
    assert errors[:DRIFT_AT].mean() < 0.15 and errors[DRIFT_AT:].mean() > 0.4
    ddm = DETECTORS[kind]("errors", window=250, reference_size=1000)
    results = ddm.update(errors)
    flagged = [p for r in results for p in r.evidence["drift_at"]]
    # Measured first flags after the drift (stagger/agrawal): ADWIN 3039/3071, KSWIN 3032/3074,
    # PageHinkley 3075/3130, DDM 3270/3102, EDDM 3070/3005, HDDM_A 3015/3038, HDDM_W 3016/3051.
    assert any(DRIFT_AT - 50 <= p < DRIFT_AT + 500 for p in flagged)
    round_of_drift = (DRIFT_AT - 1000) // 250
    assert any(r.alarm for r in results[round_of_drift:round_of_drift + 2])


# --- validation -------------------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "params", "message"), [
    ("adwin", {"deltaa": 0.1}, ("detector 'adwin' got unknown parameter 'deltaa' (accepted: "
                                "clock, delta, grace_period, max_buckets, min_window_length)")),
    ("kswin", {"window": [1, 2]}, "unknown parameter 'window'"),
    ("ks", {"pca": 3}, "(accepted: correction, max_features, pca_components, projection)"),
    ("chi2", {"alpha": 0.1}, "detector 'chi2' got unknown parameter 'alpha' (accepted: smoothing)"),
    ("adwin", {"delta": "small"}, "parameter 'delta' must be a number, got 'small'"),
    ("adwin", {"clock": 1.5}, "parameter 'clock' must be an integer"),
    ("hddm_a", {"two_sided_test": 1}, "parameter 'two_sided_test' must be a boolean"),
    ("kswin", {"window_size": 20, "stat_size": 30}, "River's KSWIN rejected params"),
    ("eddm", {"alpha": 0.5, "beta": 0.9}, "'alpha' must be greater or equal to 'beta'"),
    ("page_hinkley", {"mode": "sideways"}, "Invalid 'mode'"),
    ("ks", {"correction": "fdr"}, ("unknown correction 'fdr' (expected one of: bh, holm, "
                                   "bonferroni)")),
    ("ks", {"projection": "umap"}, "unknown projection 'umap'"),
    ("ks", {"pca_components": 0}, "pca_components must be at least 1"),
    ("chi2", {"smoothing": -1}, "smoothing must be >= 0"),
])
def test_bad_params_are_clear_errors(kind: str, params: dict[str, Any], message: str) -> None:
    signal = DETECTOR_SIGNALS[kind][-1]
    with pytest.raises(ValueError, match="^detector '" + kind) as error:
        DETECTORS[kind](signal, params=params)
    assert message in str(error.value)


def test_river_params_reach_river_and_config_builds_the_detector() -> None:
    config = DetectorConfig(kind="page_hinkley", signal="errors", window=40, alpha=0.05,
                            params={"threshold": 20, "mode": "up"})
    ph = make_detector(config, reference_size=60)
    assert (ph.window, ph.alpha, ph.reference_size) == (40, 0.05, 60)
    assert ph.params == {"min_instances": 30, "delta": 0.005, "threshold": 20,
                         "alpha": 0.9999, "mode": "up"}
    assert ph._river.threshold == 20 and ph._river.mode == "up"
    assert DETECTORS["kswin"]("errors").params["seed"] == 0
    with pytest.raises(ValueError, match="detector 'ddm' cannot watch 'inputs'"):
        DETECTORS["ddm"]("inputs")


@pytest.mark.parametrize(("signal", "values", "message"), [
    ("inputs", np.zeros((4, 2, 2)), "expected shape (n, d) or (n,), got (4, 2, 2)"),
    ("inputs", np.array([[1.0, np.nan, 0.0]]), ("NaN or infinite values (first at sample 0, "
                                                 "feature 1)")),
    ("inputs", np.array([[1.0, np.inf, 0.0]]), "NaN or infinite"),
    ("inputs", np.zeros((3, 2)), ("expected 3 features per sample (fixed by the first "
                                  "batch), got 2")),
    ("inputs", np.array([["a", "b", "c"]]), "expected a real-valued array, got dtype <U1"),
    ("inputs", [[1.0, 2.0, 3.0], [1.0]], "values do not form an array"),
    ("predictions", np.array([0.0, 1.0]), "expected integer class indices, got dtype float64"),
    ("predictions", np.array([[0, 1]]), "expected a 1-D array (n,), got shape (1, 2)"),
    ("predictions", np.array([0, -1]), "class indices must be >= 0 (got -1)"),
    ("errors", np.array([0, 1, 2, 3]), "errors must be 0 or 1, got [2, 3]"),
    ("errors", np.array([0.0, 1.0]), "expected 0/1 integers or booleans, got dtype float64"),
])
def test_bad_batches_are_rejected_and_change_nothing(signal: str, values: Any,
                                                     message: str) -> None:
    kind = {"inputs": "ks", "predictions": "chi2", "errors": "adwin"}[signal]
    rng = np.random.default_rng(6)
    good = signal_stream(signal, 30, False, rng)
    if signal == "inputs":
        good = good[:, :3]
    checked = DETECTORS[kind](signal, window=10, reference_size=20)
    untouched = DETECTORS[kind](signal, window=10, reference_size=20)
    checked.update(good[:25])
    untouched.update(good[:25])
    before = checked.state()
    with pytest.raises(ValueError, match=f"^detector '{kind}' on signal '{signal}': ") as error:
        checked.update(values)
    assert message in str(error.value)
    assert checked.state() == before
    assert checked.update(good[25:]) == untouched.update(good[25:])


def test_one_dimensional_inputs_and_booleans_are_accepted() -> None:
    ks = KSDetector("inputs", window=10, reference_size=10)
    assert ks.update(np.arange(20))[0].evidence["features_tested"] == 1
    adwin = DETECTORS["adwin"]("errors", window=10, reference_size=10)
    assert adwin.update(np.zeros(20, dtype=bool))[0].statistic == 0.0
    assert adwin.update(np.array([], dtype=np.int64)) == []


def test_reset_starts_a_new_reference() -> None:
    rng = np.random.default_rng(8)
    ks = KSDetector("inputs", window=50, reference_size=100)
    ks.update(rng.normal(size=(150, 2)))
    ks.reset()
    assert ks.state()["phase"] == "reference" and ks.samples_seen == 0
    assert ks.update(rng.normal(size=(100, 5)) + 3.0) == []  # a new feature count is fine now
    [result] = ks.update(rng.normal(size=(50, 5)) + 3.0)
    assert not result.alarm and result.samples_seen == 150


# --- monitor and events -----------------------------------------------------------------------

def monitor_config() -> DriftConfig:
    return DriftConfig(reference_size=100, detectors=[
        {"kind": "ks", "signal": "inputs", "window": 50},
        {"kind": "adwin", "signal": "inputs", "window": 50},
        {"kind": "chi2", "signal": "predictions", "window": 100},
        {"kind": "ddm", "signal": "errors", "window": 25},
        {"kind": "hddm_w", "signal": "errors", "window": 50},
    ])


def test_monitor_routes_batches_by_signal() -> None:
    rng = np.random.default_rng(9)
    monitor = DriftMonitor(monitor_config(), "digits")
    assert [d.name for d in monitor.detectors] == ["ks", "adwin", "chi2", "ddm", "hddm_w"]

    results = monitor.update("errors", signal_stream("errors", 150, False, rng))
    assert [r.detector for r in results] == ["ddm", "ddm", "hddm_w"]
    assert [s["samples_seen"] for s in monitor.state()] == [0, 0, 0, 150, 150]

    results = monitor.update("inputs", signal_stream("inputs", 150, False, rng))
    assert [r.detector for r in results] == ["ks", "adwin"]
    assert all(r.signal == "inputs" for r in results)
    assert monitor.update("predictions", signal_stream("predictions", 150, False, rng)) == []

    with pytest.raises(ValueError, match="service 'digits': unknown signal 'labels'"):
        monitor.update("labels", [1, 2])
    monitor.reset()
    assert {s["samples_seen"] for s in monitor.state()} == {0}


def test_monitor_updates_all_detectors_of_a_signal_or_none() -> None:
    rng = np.random.default_rng(10)
    monitor = DriftMonitor(monitor_config(), "digits")
    monitor.update("inputs", rng.normal(size=(30, 4)))
    ks, adwin = monitor.detectors[:2]
    ks.reset()  # ks would now take any feature count, adwin still expects 4
    with pytest.raises(ValueError, match="detector 'adwin' on signal 'inputs': expected 4"):
        monitor.update("inputs", rng.normal(size=(30, 6)))
    assert (ks.samples_seen, adwin.samples_seen) == (0, 30)


def test_results_round_trip_into_drift_events() -> None:
    rng = np.random.default_rng(11)
    monitor = DriftMonitor(monitor_config(), "digits")
    monitor.update("predictions", rng.choice(4, size=100))
    results = monitor.update("predictions", np.concatenate([rng.choice(4, size=50),
                                                            np.full(50, 5)]))
    [event] = monitor.to_events(results)
    [result] = results
    assert isinstance(event, DriftEvent) and event.service == "digits"
    for name in ("detector", "signal", "statistic", "p_value", "magnitude", "alarm", "evidence"):
        assert getattr(event, name) == getattr(result, name)
    assert event.alarm and event.evidence["unseen_classes"] == [5]
    assert DriftEvent.model_validate(event.document()) == event
    assert DriftEvent.model_validate_json(event.model_dump_json()) == event

    streaming = to_event("digits", DETECTORS["adwin"]("errors", window=10, reference_size=10)
                         .update(np.zeros(20, dtype=int))[0])
    assert streaming.p_value is None and streaming.statistic == 0.0
    assert DriftEvent.model_validate(streaming.document()) == streaming
