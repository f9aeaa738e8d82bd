"""Feature-wise two-sample Kolmogorov-Smirnov tests of each window against the reference."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import JsonValue
from scipy import stats

from cl_server.drift.base import DriftDetector, DriftResult, register

CORRECTIONS = ("bh", "holm", "bonferroni")
PROJECTIONS = ("auto", "none", "pca")
TOP_FEATURES = 5
"""Features listed in a result's evidence, most drifted first."""


def correct_p_values(p_values: np.ndarray, method: str = "bh") -> np.ndarray:
    """p-values adjusted for testing them together; reject where the adjusted p < alpha.

    ``bh`` (Benjamini-Hochberg) bounds the false discovery rate; ``holm`` and ``bonferroni``
    bound the family-wise error rate (Holm is uniformly more powerful than Bonferroni).

    Parameters:
        p_values: raw p-values, shape ``(m,)``.
        method: ``bh``, ``holm`` or ``bonferroni``.

    Examples:
        >>> p = np.array([0.01, 0.04, 0.03, 0.005])
        >>> correct_p_values(p, "bonferroni").round(3).tolist()
        [0.04, 0.16, 0.12, 0.02]
        >>> correct_p_values(p, "holm").round(3).tolist()
        [0.03, 0.06, 0.06, 0.02]
        >>> correct_p_values(p, "bh").round(3).tolist()
        [0.02, 0.04, 0.04, 0.02]

    References:
        Benjamini, Y., Hochberg, Y. (1995). Controlling the false discovery rate: a practical and
        powerful approach to multiple testing. JRSS B, 57(1), 289-300.
        Holm, S. (1979). A simple sequentially rejective multiple test procedure. Scandinavian
        Journal of Statistics, 6(2), 65-70.
    """
    p_values = np.asarray(p_values, dtype=np.float64)
    m = len(p_values)
    if method == "bh":
        return stats.false_discovery_control(p_values, method="bh")
    if method == "bonferroni":
        return np.minimum(1.0, m * p_values)
    if method == "holm":
        order = np.argsort(p_values, kind="stable")
        stepped = np.maximum.accumulate((m - np.arange(m)) * p_values[order])
        adjusted = np.empty(m)
        adjusted[order] = np.minimum(1.0, stepped)
        return adjusted
    raise ValueError(f"unknown correction '{method}' (expected one of: {', '.join(CORRECTIONS)})")


@register
class KSDetector(DriftDetector):
    """Covariate drift: a two-sample KS test per feature of each window against the reference.

    Each window's features are compared one by one with the reference's
    (``scipy.stats.ks_2samp``, exact p-values at these sizes); the p-values are corrected for
    testing all features at once (``correction``) and the round alarms when any corrected
    p-value is below ``alpha``.

    - ``statistic``: the largest KS statistic over the tested features;
    - ``p_value``: the smallest corrected p-value;
    - ``magnitude``: the mean KS statistic over the tested features, in [0, 1]: 0 when every
      window marginal equals the reference's, 1 when every feature left the reference's range.
      Sampling noise alone gives about ``0.87 * sqrt(1/n + 1/window)``, ``n`` the reference
      samples tested (``reference_size``, half of it under PCA): 0.05 for the defaults, so
      compare magnitudes of one configuration, not across sizes.
    - ``evidence``: ``top_features`` (the ``TOP_FEATURES`` most drifted: index, statistic,
      corrected p-value), ``drifted_features`` (count below ``alpha``), ``features_tested``,
      ``space`` (``raw`` or ``pca``), ``correction``.

    Very high-dimensional inputs are projected before testing. With ``projection="auto"`` (the
    default), inputs with more than ``max_features`` (4096) features are projected onto their
    first ``pca_components`` principal components (``sklearn.decomposition.PCA``, fitted once on
    the reference) and the components are tested instead; up to 4096 features (MNIST's 784
    pixels, CIFAR's 3072 values, sentence embeddings) every raw feature is tested. Why raw up
    to there: BH adapts to how many features drifted, so testing many correlated features costs
    little power, and the raw test sees changes a projection hides. On MNIST (784 pixels,
    reference 1000, window 500, 5 shuffles) raw per-pixel tests caught 1.1x brightness,
    N(0, 10) pixel noise and a 1-pixel translation in 5/5, 5/5, 5/5 windows, 32 components in
    0/5, 0/5, 5/5, with no false alarm either way in 10 stationary windows. Why project beyond:
    the cost of a round and the reference's memory grow with the features (~0.13 s per round
    at 784; a 224 x 224 x 3 image has 150,528). ``projection="pca"`` forces the projection,
    ``"none"`` forbids it. The components are fitted on the first half of the reference and
    the windows are tested against the second half: tested against the very samples it was
    fitted to, PCA's spread on them exceeds its spread on any new sample, and every window
    would look drifted (784 features, 400 samples: 27 of 32 components did). Evidence then
    names principal components.

    Parameters:
        signal: ``inputs``.
        window: samples per round.
        alpha: significance level applied to the corrected p-values.
        reference_size: samples in the reference.
        params: ``correction`` (``bh`` default, ``holm``, ``bonferroni``); ``projection``
            (``auto`` default, ``none``, ``pca``); ``pca_components`` (32; capped at the feature
            count and half the reference size); ``max_features`` (4096; the ``auto`` threshold).

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> ks = KSDetector("inputs", window=200, reference_size=400)
        >>> ks.update(rng.normal(size=(600, 3)))[0].alarm
        False
        >>> shifted = rng.normal(size=(200, 3)) + [0.0, 0.0, 1.0]
        >>> result = ks.update(shifted)[0]
        >>> result.alarm, result.evidence["top_features"][0]["feature"]
        (True, 2)

    References:
        Rabanser, S., Günnemann, S., Lipton, Z. C. (2019). Failing loudly: an empirical study of
        methods for detecting dataset shift. NeurIPS 2019.
    """

    kind = "ks"

    @classmethod
    def accepted_params(cls) -> dict[str, Any]:
        return {"correction": "bh", "projection": "auto", "pca_components": 32,
                "max_features": 4096}

    def __init__(self, signal: str, **kwargs: Any):
        super().__init__(signal, **kwargs)
        if self.params["correction"] not in CORRECTIONS:
            raise ValueError(f"detector 'ks': unknown correction '{self.params['correction']}' "
                             f"(expected one of: {', '.join(CORRECTIONS)})")
        if self.params["projection"] not in PROJECTIONS:
            raise ValueError(f"detector 'ks': unknown projection '{self.params['projection']}' "
                             f"(expected one of: {', '.join(PROJECTIONS)})")
        for key in ("pca_components", "max_features"):
            if self.params[key] < 1:
                raise ValueError(f"detector 'ks': {key} must be at least 1 "
                                 f"(got {self.params[key]})")

    def _reset_model(self) -> None:
        self._pca: Any = None
        self._reference: np.ndarray | None = None

    def _fit_reference(self, reference: np.ndarray) -> None:
        n_features = reference.shape[1]
        projection = self.params["projection"]
        if projection == "pca" or (projection == "auto"
                                   and n_features > self.params["max_features"]):
            # Imported here: scikit-learn costs ~0.5 s to import and most inputs never need it.
            from sklearn.decomposition import PCA

            # Components fitted to a sample spread that sample more than new ones (with many
            # features and few samples, much more), which KS would report as drift: fit on one
            # half of the reference, test against the other half.
            fit, held_out = reference[: len(reference) // 2], reference[len(reference) // 2:]
            components = min(self.params["pca_components"], n_features, len(fit))
            self._pca = PCA(n_components=components, random_state=0).fit(fit)
            reference = self._pca.transform(held_out)
        self._reference = reference

    def _evaluate(self, window: np.ndarray) -> DriftResult:
        assert self._reference is not None
        tested = window if self._pca is None else self._pca.transform(window)
        test = stats.ks_2samp(self._reference, tested, axis=0)
        statistics = np.atleast_1d(test.statistic)
        corrected = correct_p_values(np.atleast_1d(test.pvalue), self.params["correction"])
        ranking = np.lexsort((-statistics, corrected))[:TOP_FEATURES]
        top: list[JsonValue] = [{"feature": int(j), "statistic": float(statistics[j]),
                                 "p_value": float(corrected[j])} for j in ranking]
        return self._result(
            statistic=statistics.max(), p_value=corrected.min(), magnitude=statistics.mean(),
            alarm=bool(corrected.min() < self.alpha),
            evidence={"top_features": top,
                      "drifted_features": int((corrected < self.alpha).sum()),
                      "features_tested": len(statistics),
                      "space": "raw" if self._pca is None else "pca",
                      "correction": self.params["correction"]})
