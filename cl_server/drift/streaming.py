"""Streaming detectors: River's change detectors, fed one scalar per sample, reported per window.

River's detectors look at a stream of numbers one at a time and raise ``drift_detected`` at the
sample where they see a change (then restart on their own). Here each is wrapped in the common
contract: every sample goes to River in order, the reference samples included (they warm the
detector up: ADWIN's window, DDM's minimum error rate; a flag raised while the reference fills
is not reported, the reference being assumed in-distribution), and each window of ``window``
samples gives one result that alarms when River flagged drift anywhere in it.

The scalar fed to River:

- ``errors``: the 0/1 error itself.
- ``inputs``: the reference rank of the sample's distance to the reference, see
  :class:`ReferenceRank`: a number in [0, 1], uniform while the inputs look like the reference.

Every streaming result has the same fields:

- ``statistic``: the window mean of the scalar (the window's error rate for ``errors``);
- ``p_value``: ``None`` (River's detectors are sequential rules, not tests);
- ``magnitude``: ``|window mean - reference mean|`` of the scalar: the error-rate change for
  ``errors`` (0.1 -> 0.5 gives 0.4), at most 0.5 for ``inputs`` (the reference mean rank is 0.5);
- ``evidence``: ``drift_at`` (stream positions, 0-based and counting the reference, where River
  flagged drift; at most ``MAX_POSITIONS``), ``drifts`` (their count), ``reference_mean``,
  ``window_mean``, and ``warnings`` (samples in River's warning zone) for the binary detectors.

``params`` go to River's constructor; the accepted names are those of River's constructor, so a
misspelled one is a ``ValueError`` listing them. The config's ``alpha`` is not passed on: River's
own thresholds (ADWIN ``delta``, KSWIN ``alpha``, DDM ``drift_threshold``...) are set through
``params`` (PageHinkley's ``alpha`` is a forgetting factor, not a significance level).
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import numpy as np
from pydantic import JsonValue
from river.base import DriftDetector as RiverDriftDetector
from river.drift import ADWIN, KSWIN, PageHinkley
from river.drift.binary import DDM, EDDM, HDDMA, HDDMW

from cl_server.drift.base import DriftDetector, DriftResult, register

MAX_POSITIONS = 20
"""Drift positions listed in a result's evidence."""


class ReferenceRank:
    """One number per input vector: where its distance to the reference falls among the
    reference's own distances.

    The distance is the mean squared standardized deviation from the reference mean,
    ``mean_j ((x_j - mean_j) / std_j) ** 2`` (features constant in the reference are measured
    in raw units), and the rank is its mid-rank among the reference samples' distances, divided
    by the reference size. Why this scalar: it reacts to a shift of the mean in any direction and
    to a change of spread (a first principal component or a row mean is blind to shifts
    orthogonal to it), and the rank makes it distribution-free: uniform on [0, 1] (mean 0.5) while
    inputs look like the reference, bounded like an error stream, so River's defaults, tuned for
    [0, 1] streams, keep their false-alarm behaviour whatever the scale of the features.
    Being one number, it misses changes that keep distances alike: on MNIST, windows holding
    only digits 0-4 left it unchanged while the feature-wise ``ks`` detector alarmed; prefer
    ``ks`` for inputs and these detectors for errors.

    Parameters:
        reference: the reference inputs, ``(n, d)``.

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> rank = ReferenceRank(rng.normal(size=(1000, 4)))
        >>> round(float(rank(rng.normal(size=(1000, 4))).mean()), 2)
        0.51
        >>> round(float(rank(rng.normal(size=(1000, 4)) + 1.0).mean()), 2)
        0.78
    """

    def __init__(self, reference: np.ndarray):
        self.mean = reference.mean(axis=0)
        spread = reference.std(axis=0)
        self.scale = np.where(spread > 0, spread, 1.0)
        self._sorted = np.sort(self._distance(reference))

    def _distance(self, inputs: np.ndarray) -> np.ndarray:
        return np.mean(((inputs - self.mean) / self.scale) ** 2, axis=1)

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        """Ranks in [0, 1], shape ``(n,)``, of inputs ``(n, d)``."""
        distance = self._distance(inputs)
        below = np.searchsorted(self._sorted, distance, side="left")
        not_above = np.searchsorted(self._sorted, distance, side="right")
        return (below + not_above) / (2 * len(self._sorted))


class RiverDetector(DriftDetector):
    """Base of the River wrappers (see the module docstring); subclasses name the River class.

    Parameters:
        signal: ``errors``, or ``inputs`` for ADWIN, KSWIN and PageHinkley.
        window: samples per reported round.
        alpha: unused (River's thresholds are ``params``); kept for the common constructor.
        reference_size: samples in the reference (fed to River as a warm-up).
        params: keyword arguments of the River class's constructor.
    """

    river_class: ClassVar[type[RiverDriftDetector]]
    defaults: ClassVar[dict[str, Any]] = {}
    """Defaults that differ from River's (a seed, for reproducible results)."""
    excluded: ClassVar[tuple[str, ...]] = ()
    """River constructor arguments not settable from the config."""

    @classmethod
    def accepted_params(cls) -> dict[str, Any]:
        signature = inspect.signature(cls.river_class.__init__)
        accepted = {name: p.default for name, p in signature.parameters.items()
                    if name != "self" and name not in cls.excluded}
        return {**accepted, **cls.defaults}

    def _reset_model(self) -> None:
        try:
            self._river = self.river_class(**self.params)
        except (TypeError, ValueError) as error:
            raise ValueError(f"detector '{self.kind}': River's {self.river_class.__name__} "
                             f"rejected params {self.params}: {error}") from None
        self._rank: ReferenceRank | None = None
        self._reference_mean = 0.0

    def _scalars(self, values: np.ndarray) -> list[float]:
        if self.signal == "inputs":
            assert self._rank is not None
            return self._rank(values).tolist()
        return values.astype(np.float64).tolist()

    def _fit_reference(self, reference: np.ndarray) -> None:
        if self.signal == "inputs":
            self._rank = ReferenceRank(reference)
        scalars = self._scalars(reference)
        self._reference_mean = float(np.mean(scalars))
        for x in scalars:
            self._river.update(x)

    def _evaluate(self, window: np.ndarray) -> DriftResult:
        scalars = self._scalars(window)
        first = self.samples_seen - len(scalars)
        river = self._river
        drift_at: list[int] = []
        warnings = 0
        for i, x in enumerate(scalars):
            river.update(x)
            if river.drift_detected:
                drift_at.append(first + i)
            warnings += bool(getattr(river, "warning_detected", False))
        window_mean = float(np.mean(scalars))
        evidence: dict[str, JsonValue] = {
            "drift_at": drift_at[:MAX_POSITIONS], "drifts": len(drift_at),
            "reference_mean": self._reference_mean, "window_mean": window_mean}
        if hasattr(river, "warning_detected"):
            evidence["warnings"] = warnings
        return self._result(statistic=window_mean, p_value=None,
                            magnitude=abs(window_mean - self._reference_mean),
                            alarm=bool(drift_at), evidence=evidence)


@register
class ADWINDetector(RiverDetector):
    """ADWIN: adaptive windowing; alarms when two sub-windows of its window differ in mean.

    Parameters: see :class:`RiverDetector`; ``params`` are River ``ADWIN``'s (``delta`` = 0.002,
    ``clock``, ``max_buckets``, ``min_window_length``, ``grace_period``).

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> adwin = ADWINDetector("errors", window=500, reference_size=1000)
        >>> [r.alarm for r in adwin.update(rng.random(2000) < 0.1)]
        [False, False]
        >>> [r.alarm for r in adwin.update(rng.random(500) < 0.5)]
        [True]

    References:
        Bifet, A., Gavaldà, R. (2007). Learning from time-changing data with adaptive windowing.
        SIAM International Conference on Data Mining, 443-448.
    """

    kind = "adwin"
    river_class = ADWIN


@register
class KSWINDetector(RiverDetector):
    """KSWIN: a KS test between the latest ``stat_size`` samples and a sample of older ones.

    ``seed`` defaults to 0 (River's default, ``None``, would make results irreproducible);
    River's ``window`` argument (pre-collected data) is not settable. KSWIN tests at every
    sample (~0.8 ms each), the slowest of these detectors.

    Parameters: see :class:`RiverDetector`; ``params`` are River ``KSWIN``'s (``alpha`` = 0.005,
    ``window_size`` = 100, ``stat_size`` = 30, ``seed`` = 0).

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> kswin = KSWINDetector("inputs", window=200, reference_size=400)
        >>> _ = kswin.update(rng.normal(size=(400, 2)))
        >>> kswin.update(rng.normal(size=(200, 2)) + 2.0)[0].alarm
        True

    References:
        Raab, C., Heusinger, M., Schleif, F.-M. (2020). Reactive soft prototype computing for
        concept drift streams. Neurocomputing, 416, 340-351.
    """

    kind = "kswin"
    river_class = KSWIN
    defaults: ClassVar[dict[str, Any]] = {"seed": 0}
    excluded = ("window",)


@register
class PageHinkleyDetector(RiverDetector):
    """Page-Hinkley: a cumulative sum of deviations from the running mean against a threshold.

    Parameters: see :class:`RiverDetector`; ``params`` are River ``PageHinkley``'s
    (``min_instances`` = 30, ``delta`` = 0.005, ``threshold`` = 50, ``alpha`` = 0.9999 (a
    forgetting factor), ``mode`` = ``both``).

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> ph = PageHinkleyDetector("errors", window=500, reference_size=1000)
        >>> _ = ph.update(rng.random(1000) < 0.1)
        >>> ph.update(rng.random(500) < 0.5)[0].alarm
        True

    References:
        Page, E. S. (1954). Continuous inspection schemes. Biometrika, 41(1/2), 100-115.
    """

    kind = "page_hinkley"
    river_class = PageHinkley


@register
class DDMDetector(RiverDetector):
    """DDM: alarms when the error rate rises ``drift_threshold`` deviations above its minimum.

    Parameters: see :class:`RiverDetector`; ``params`` are River ``binary.DDM``'s
    (``warm_start`` = 30, ``warning_threshold`` = 2, ``drift_threshold`` = 3).

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> ddm = DDMDetector("errors", window=500, reference_size=1000)
        >>> _ = ddm.update(rng.random(1000) < 0.1)
        >>> ddm.update(rng.random(500) < 0.5)[0].alarm
        True

    References:
        Gama, J., Medas, P., Castillo, G., Rodrigues, P. (2004). Learning with drift detection.
        SBIA 2004, 286-295.
    """

    kind = "ddm"
    river_class = DDM


@register
class EDDMDetector(RiverDetector):
    """EDDM: alarms when the distance between consecutive errors shrinks below its maximum.

    Parameters: see :class:`RiverDetector`; ``params`` are River ``binary.EDDM``'s
    (``warm_start`` = 30, ``alpha`` = 0.95 (warning level), ``beta`` = 0.9 (drift level)).

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> eddm = EDDMDetector("errors", window=500, reference_size=1000)
        >>> _ = eddm.update(rng.random(1000) < 0.1)
        >>> eddm.update(rng.random(500) < 0.5)[0].alarm
        True

    References:
        Baena-García, M., del Campo-Ávila, J., Fidalgo, R., Bifet, A., Gavaldà, R.,
        Morales-Bueno, R. (2006). Early drift detection method. Fourth International Workshop on
        Knowledge Discovery from Data Streams.
    """

    kind = "eddm"
    river_class = EDDM


@register
class HDDMADetector(RiverDetector):
    """HDDM_A: Hoeffding's bound on the difference between the running and a past error mean.

    Parameters: see :class:`RiverDetector`; ``params`` are River ``binary.HDDMA``'s
    (``drift_confidence`` = 0.001, ``warning_confidence`` = 0.005, ``two_sided_test`` = False).

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> hddm = HDDMADetector("errors", window=500, reference_size=1000)
        >>> _ = hddm.update(rng.random(1000) < 0.1)
        >>> hddm.update(rng.random(500) < 0.5)[0].alarm
        True

    References:
        Frías-Blanco, I., del Campo-Ávila, J., Ramos-Jiménez, G., Morales-Bueno, R.,
        Ortiz-Díaz, A., Caballero-Mota, Y. (2015). Online and non-parametric drift detection
        methods based on Hoeffding's bounds. IEEE TKDE, 27(3), 810-823.
    """

    kind = "hddm_a"
    river_class = HDDMA


@register
class HDDMWDetector(RiverDetector):
    """HDDM_W: McDiarmid's bound on exponentially weighted error means.

    Parameters: see :class:`RiverDetector`; ``params`` are River ``binary.HDDMW``'s
    (``drift_confidence`` = 0.001, ``warning_confidence`` = 0.005, ``lambda_val`` = 0.05,
    ``two_sided_test`` = False).

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> hddm = HDDMWDetector("errors", window=500, reference_size=1000)
        >>> _ = hddm.update(rng.random(1000) < 0.1)
        >>> hddm.update(rng.random(500) < 0.5)[0].alarm
        True

    References:
        Frías-Blanco, I. et al. (2015), see :class:`HDDMADetector`.
    """

    kind = "hddm_w"
    river_class = HDDMW
