"""The one contract of every drift detector: batches of one signal in, evaluation rounds out.

A detector watches one signal of a served model (config ``drift.detectors[].signal``):

- ``inputs``: float array ``(n, d)``: feature vectors, embeddings or logits (1-D means ``d = 1``);
- ``predictions``: integer class indices ``(n,)``, ``>= 0``;
- ``errors``: ``(n,)`` 0/1 integers or booleans, 1 = the served prediction was wrong.

The first ``reference_size`` samples are the reference (what "no drift" looks like). After it,
every ``window`` samples complete one evaluation round, and each round gives one
:class:`DriftResult`; a call to :meth:`DriftDetector.update` therefore returns 0, 1 or more
results, and the results do not depend on how the stream was cut into batches. The reference
stays until :meth:`DriftDetector.reset` (call it once a new model serves: its signals form a new
reference). A batch is checked whole before anything is stored, so a rejected batch leaves the
detector as it was.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from pydantic import JsonValue

from cl_server.config.schema import DETECTOR_SIGNALS, DetectorConfig
from cl_server.store.entities import DriftEvent

DETECTORS: dict[str, type[DriftDetector]] = {}


def register(cls: type[DriftDetector]) -> type[DriftDetector]:
    """Class decorator: make a detector available by its ``kind`` (config ``drift.detectors[].kind``)."""
    if cls.kind in DETECTORS:
        raise ValueError(f"detector '{cls.kind}' is registered twice")
    DETECTORS[cls.kind] = cls
    return cls


@dataclass(frozen=True)
class DriftResult:
    """One evaluation round of one detector.

    Parameters:
        detector: the detector kind (``ks``, ``adwin``, ...).
        signal: the signal watched (``inputs``, ``predictions``, ``errors``).
        statistic: the test statistic of the round (its meaning is the detector's), or ``None``.
        p_value: the round's p-value (after multiple-test correction where several tests run),
            or ``None`` for detectors without one.
        magnitude: how far the round is from the reference, ``>= 0``; defined per detector.
        alarm: whether the detector flags drift in this round.
        evidence: JSON-able details (top drifted features, class shares, drift positions...).
        samples_seen: samples the detector had received when the round closed, reference included.
    """

    detector: str
    signal: str
    statistic: float | None
    p_value: float | None
    magnitude: float
    alarm: bool
    evidence: dict[str, JsonValue] = field(default_factory=dict)
    samples_seen: int = 0


def to_event(service: str, result: DriftResult) -> DriftEvent:
    """The stored record of one round (collection ``drift_events``).

    Examples:
        >>> result = DriftResult("chi2", "predictions", 12.5, 0.002, 0.3, True, {"dof": 4}, 1500)
        >>> event = to_event("digits", result)
        >>> event.service, event.detector, event.alarm, event.evidence
        ('digits', 'chi2', True, {'dof': 4})
    """
    return DriftEvent(service=service, detector=result.detector, signal=result.signal,
                      statistic=result.statistic, p_value=result.p_value,
                      magnitude=result.magnitude, alarm=result.alarm,
                      evidence=dict(result.evidence))


class DriftDetector(ABC):
    """Drift detection on one signal: a reference, then one result per ``window`` samples.

    Subclasses implement :meth:`_fit_reference` (learn what "no drift" looks like from the
    reference samples) and :meth:`_evaluate` (judge one full window); this class checks the
    batches, cuts the stream into the reference and the windows, and counts.

    Parameters:
        signal: the signal watched; must be one the detector kind can watch
            (:data:`cl_server.config.schema.DETECTOR_SIGNALS`).
        window: samples per evaluation round (>= 2).
        alpha: significance level of the statistical tests (ks, chi2), in (0, 1).
        reference_size: samples in the reference (>= 2).
        params: detector-specific parameters (config ``params``); the accepted names and their
            defaults are :meth:`accepted_params`. An unknown name is a ``ValueError``.
    """

    kind: ClassVar[str]

    def __init__(self, signal: str, *, window: int = 500, alpha: float = 0.01,
                 reference_size: int = 1000, params: Mapping[str, Any] | None = None):
        allowed = DETECTOR_SIGNALS[self.kind]
        if signal not in allowed:
            raise ValueError(f"detector '{self.kind}' cannot watch '{signal}' "
                             f"(it watches: {', '.join(allowed)})")
        if window < 2:
            raise ValueError(f"detector '{self.kind}': window must be at least 2 (got {window})")
        if reference_size < 2:
            raise ValueError(f"detector '{self.kind}': reference_size must be at least 2 "
                             f"(got {reference_size})")
        if not 0 < alpha < 1:
            raise ValueError(f"detector '{self.kind}': alpha must be in (0, 1) (got {alpha})")
        self.signal = signal
        self.window = window
        self.alpha = alpha
        self.reference_size = reference_size
        self.params = self._checked_params(dict(params or {}))
        self.reset()

    @classmethod
    def from_config(cls, config: DetectorConfig, reference_size: int) -> DriftDetector:
        """The detector a config entry describes (``reference_size`` is ``drift.reference_size``)."""
        return cls(config.signal, window=config.window, alpha=config.alpha,
                   reference_size=reference_size, params=config.params)

    @classmethod
    def accepted_params(cls) -> dict[str, Any]:
        """The parameter names this detector accepts, with their defaults."""
        return {}

    @property
    def name(self) -> str:
        """The detector's name in events and logs: its kind."""
        return self.kind

    def reset(self) -> None:
        """Forget everything: the next ``reference_size`` samples form a new reference."""
        self.samples_seen = 0
        self.rounds = 0
        self.alarms = 0
        self._n_features: int | None = None
        self._monitoring = False
        self._pending: list[np.ndarray] = []
        self._pending_count = 0
        self._reset_model()

    def state(self) -> dict[str, JsonValue]:
        """A JSON-able snapshot: configuration, phase and counters."""
        return {"detector": self.kind, "signal": self.signal, "window": self.window,
                "alpha": self.alpha, "reference_size": self.reference_size,
                "params": dict(self.params), "samples_seen": self.samples_seen,
                "phase": "monitoring" if self._monitoring else "reference",
                "pending": self._pending_count, "rounds": self.rounds, "alarms": self.alarms}

    def check(self, values: Any) -> np.ndarray:
        """``values`` as a clean array for this detector's signal, or a ``ValueError``.

        Nothing is stored: a caller feeding several detectors can check every one first.
        Returns float64 ``(n, d)`` for ``inputs``, int64 ``(n,)`` otherwise.
        """
        try:
            array = np.asarray(values)
        except ValueError as error:
            raise self._bad(f"values do not form an array ({error})") from None
        if self.signal == "inputs":
            return self._checked_inputs(array)
        if array.ndim != 1:
            raise self._bad(f"expected a 1-D array (n,), got shape {array.shape}")
        if self.signal == "predictions":
            if array.dtype.kind not in "iu":
                raise self._bad(f"expected integer class indices, got dtype {array.dtype}")
            if array.size and array.min() < 0:
                raise self._bad(f"class indices must be >= 0 (got {array.min()})")
        else:
            if array.dtype.kind not in "iub":
                raise self._bad(f"expected 0/1 integers or booleans, got dtype {array.dtype}")
            if array.size and not np.isin(array, (0, 1)).all():
                raise self._bad("errors must be 0 or 1, got "
                                f"{sorted(set(array[~np.isin(array, (0, 1))].tolist()))[:5]}")
        return array.astype(np.int64)

    def update(self, values: Any) -> list[DriftResult]:
        """Add a batch of the watched signal; one result per evaluation round it completes."""
        batch = self.check(values)
        if self.signal == "inputs" and self._n_features is None and len(batch):
            self._n_features = batch.shape[1]
        results: list[DriftResult] = []
        start = 0
        while start < len(batch):
            target = self.window if self._monitoring else self.reference_size
            part = batch[start:start + target - self._pending_count]
            start += len(part)
            self.samples_seen += len(part)
            self._pending.append(part)
            self._pending_count += len(part)
            if self._pending_count < target:
                continue
            full = np.concatenate(self._pending)
            self._pending, self._pending_count = [], 0
            if not self._monitoring:
                self._fit_reference(full)
                self._monitoring = True
                continue
            result = self._evaluate(full)
            self.rounds += 1
            self.alarms += result.alarm
            results.append(result)
        return results

    @abstractmethod
    def _reset_model(self) -> None:
        """Drop what was learned from the reference and the windows."""

    @abstractmethod
    def _fit_reference(self, reference: np.ndarray) -> None:
        """Learn the reference: ``reference_size`` checked samples."""

    @abstractmethod
    def _evaluate(self, window: np.ndarray) -> DriftResult:
        """Judge one window of ``window`` checked samples (build the result with :meth:`_result`)."""

    def _result(self, statistic: float | None, p_value: float | None, magnitude: float,
                alarm: bool, evidence: dict[str, JsonValue]) -> DriftResult:
        return DriftResult(
            detector=self.kind, signal=self.signal,
            statistic=None if statistic is None else float(statistic),
            p_value=None if p_value is None else float(p_value),
            magnitude=float(magnitude), alarm=bool(alarm), evidence=evidence,
            samples_seen=self.samples_seen)

    def _bad(self, what: str) -> ValueError:
        return ValueError(f"detector '{self.kind}' on signal '{self.signal}': {what}")

    def _checked_inputs(self, array: np.ndarray) -> np.ndarray:
        if array.dtype.kind not in "fiu":
            raise self._bad(f"expected a real-valued array, got dtype {array.dtype}")
        if array.ndim == 1:
            array = array[:, None]
        if array.ndim != 2:
            raise self._bad(f"expected shape (n, d) or (n,), got {array.shape}; flatten each "
                            "sample first (values.reshape(len(values), -1))")
        if self._n_features is not None and array.shape[1] != self._n_features:
            raise self._bad(f"expected {self._n_features} features per sample (fixed by the "
                            f"first batch), got {array.shape[1]}")
        array = array.astype(np.float64)
        if not np.isfinite(array).all():
            bad = np.argwhere(~np.isfinite(array))[0]
            raise self._bad(f"contains NaN or infinite values (first at sample {bad[0]}, "
                            f"feature {bad[1]})")
        return array

    def _checked_params(self, params: dict[str, Any]) -> dict[str, Any]:
        accepted = self.accepted_params()
        unknown = sorted(set(params) - set(accepted))
        if unknown:
            raise ValueError(f"detector '{self.kind}' got unknown parameter "
                             f"'{unknown[0]}' (accepted: {', '.join(sorted(accepted)) or 'none'})")
        for key, value in params.items():
            expected = _expected_type(accepted[key])
            if expected is not None and not _is_instance(value, expected):
                raise ValueError(f"detector '{self.kind}': parameter '{key}' must be "
                                 f"{expected}, got {value!r}")
        return {**accepted, **params}


def _expected_type(default: Any) -> str | None:
    """What a parameter must be, judged from its default; ``None`` where anything goes."""
    if isinstance(default, bool):
        return "a boolean"
    if isinstance(default, int):
        return "an integer"
    if isinstance(default, float):
        return "a number"
    if isinstance(default, str):
        return "a string"
    return None


def _is_instance(value: Any, expected: str) -> bool:
    if expected == "a boolean":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if expected == "an integer":
        return isinstance(value, int)
    if expected == "a number":
        return isinstance(value, int | float) and math.isfinite(value)
    return isinstance(value, str)
