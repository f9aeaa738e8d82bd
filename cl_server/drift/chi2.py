"""Prior drift: a chi-square test of the window's predicted-class counts against the reference's."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import JsonValue
from scipy import stats

from cl_server.drift.base import DriftDetector, DriftResult, register

TOP_CLASSES = 5
"""Classes listed in a result's evidence, largest share change first."""


@register
class ChiSquareDetector(DriftDetector):
    """Label (prior) drift seen through the model's predictions: a chi-square test of homogeneity.

    Each round builds the 2 x K table of predicted-class counts (reference row, window row) over
    the K classes predicted in the reference or the window, and tests whether both rows share
    one class distribution (``scipy.stats.chi2_contingency``, no Yates correction). The
    reference counts are a sample too, so a homogeneity test is used rather than a
    goodness-of-fit test that would treat the reference shares as exact and alarm too often.

    Classes unseen in the reference are kept: every cell gets a pseudo-count ``smoothing``
    (0.5 by default, the Haldane-Anscombe correction) before the test, so a class absent from
    one row still has positive expected counts and a class seen once or twice moves the
    statistic by a bounded amount instead of dominating it. Smoothing only enters the test;
    shares and the magnitude use the raw counts. The evidence reports the unseen classes and
    their share of the window (the signal of a new-class (NC) scenario).

    - ``statistic``: the chi-square statistic; ``p_value``: its p-value (1 when one class only);
    - ``magnitude``: the total variation distance between the window's and the reference's class
      shares, ``0.5 * sum(|window share - reference share|)``, in [0, 1];
    - ``evidence``: ``classes`` (the ``TOP_CLASSES`` largest share changes), ``unseen_classes``,
      ``unseen_share``, ``dof``.

    Parameters:
        signal: ``predictions``.
        window: samples per round.
        alpha: significance level.
        reference_size: samples in the reference.
        params: ``smoothing`` (pseudo-count added to every cell, >= 0; 0.5 by default).

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> chi2 = ChiSquareDetector("predictions", window=300, reference_size=600)
        >>> chi2.update(rng.choice(3, size=900))[0].alarm
        False
        >>> result = chi2.update(rng.choice(4, size=300, p=[0.2, 0.2, 0.2, 0.4]))[0]
        >>> result.alarm, result.evidence["unseen_classes"]
        (True, [3])

    References:
        Pearson, K. (1900). On the criterion that a given system of deviations from the probable
        in the case of a correlated system of variables is such that it can be reasonably
        supposed to have arisen from random sampling. Philosophical Magazine, 50(302), 157-175.
        Lipton, Z. C., Wang, Y.-X., Smola, A. (2018). Detecting and correcting for label shift
        with black box predictors. ICML 2018.
    """

    kind = "chi2"

    @classmethod
    def accepted_params(cls) -> dict[str, Any]:
        return {"smoothing": 0.5}

    def __init__(self, signal: str, **kwargs: Any):
        super().__init__(signal, **kwargs)
        if self.params["smoothing"] < 0:
            raise ValueError(f"detector 'chi2': smoothing must be >= 0 "
                             f"(got {self.params['smoothing']})")

    def _reset_model(self) -> None:
        self._classes = np.zeros(0, dtype=np.int64)
        self._counts = np.zeros(0, dtype=np.int64)

    def _fit_reference(self, reference: np.ndarray) -> None:
        # Counts per distinct class (not np.bincount): memory follows the classes predicted, not
        # the largest index.
        self._classes, self._counts = np.unique(reference, return_counts=True)

    def _evaluate(self, window: np.ndarray) -> DriftResult:
        window_classes, window_counts = np.unique(window, return_counts=True)
        classes = np.union1d(self._classes, window_classes)
        reference = np.zeros(len(classes), dtype=np.int64)
        reference[np.searchsorted(classes, self._classes)] = self._counts
        current = np.zeros(len(classes), dtype=np.int64)
        current[np.searchsorted(classes, window_classes)] = window_counts
        if len(classes) < 2:
            statistic, p_value, dof = 0.0, 1.0, 0
        else:
            table = np.stack([reference, current]) + self.params["smoothing"]
            statistic, p_value, dof, _ = stats.chi2_contingency(table, correction=False)
        reference_share = reference / reference.sum()
        window_share = current / current.sum()
        change = np.abs(window_share - reference_share)
        unseen = reference == 0
        top: list[JsonValue] = [
            {"class": int(classes[i]), "reference_share": float(reference_share[i]),
             "window_share": float(window_share[i])}
            for i in np.argsort(-change, kind="stable")[:TOP_CLASSES] if change[i] > 0]
        return self._result(
            statistic=statistic, p_value=p_value, magnitude=0.5 * change.sum(),
            alarm=p_value < self.alpha,
            evidence={"classes": top, "unseen_classes": classes[unseen].tolist(),
                      "unseen_share": float(window_share[unseen].sum()), "dof": int(dof)})
