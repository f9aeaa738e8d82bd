"""Which served samples go to the annotators: active-learning selectors.

Labels are the bottleneck of continual learning in production; a labeling budget is best
spent on the samples the champion is least sure of, or on the window that drifted. A
:class:`Selector` picks ``k`` of the unlabeled :class:`Candidate` samples:

- ``random``: uniformly (the baseline);
- ``least-confidence``: highest ``1 - p(top class)``;
- ``margin``: smallest ``p(top) - p(second)``;
- ``entropy``: highest ``-sum p log p`` (natural log);
- ``class-balanced``: round robin over the champion's predicted classes (rarest first), the
  most uncertain (least confidence) first within a class, so that a new or rare class gets
  labels even while a common class is served far more often;
- ``drift-focused``: the samples served inside the drifted window first (most uncertain
  first), then the rest by uncertainty.

Scores use the answer's class probabilities: an answer whose rows already are probabilities
(non-negative, summing to 1) is used as it is, logits go through a softmax
(:func:`probabilities`). Ties are broken by the candidates' order (the oldest first), so a
selection is reproducible.

Example:
    >>> import numpy as np
    >>> pool = [Candidate("a", np.array([0.9, 0.1])), Candidate("b", np.array([0.55, 0.45])),
    ...         Candidate("c", np.array([0.7, 0.3]))]
    >>> [c.request_id for c in make_selector("margin").select(pool, 2)]
    ['b', 'c']
    >>> [c.request_id for c in make_selector("entropy").select(pool, 1)]
    ['b']
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from cl_server.config.schema import SELECTION_STRATEGIES as SELECTORS

UNCERTAINTY = ("least-confidence", "margin", "entropy")


@dataclass(frozen=True)
class Candidate:
    """One served, unlabeled sample.

    ``scores``: the champion's answer for it (probabilities or logits, one per class; None:
    not known, least informative). ``served_ms``: when it was served (Unix ms).
    ``predicted``: the class the champion answered.
    """

    request_id: str
    scores: np.ndarray | None = None
    served_ms: int = 0
    predicted: str | None = None


def probabilities(scores: np.ndarray) -> np.ndarray:
    """Class probabilities of one answer: itself when it is a distribution, else a softmax.

    >>> probabilities(np.array([0.25, 0.75])).tolist()
    [0.25, 0.75]
    >>> [round(p, 3) for p in probabilities(np.array([1.0, 2.0])).tolist()]  # logits
    [0.269, 0.731]
    """
    values = np.asarray(scores, dtype=np.float64).ravel()
    if values.size and (values >= 0).all() and abs(values.sum() - 1.0) < 1e-3:
        return values
    shifted = np.exp(values - values.max()) if values.size else values
    return shifted / shifted.sum() if values.size else values


def uncertainty(scores: np.ndarray | None, measure: str) -> float:
    """How unsure an answer is by ``measure`` (higher: more unsure; an unknown answer: -inf).

    >>> uncertainty(np.array([0.5, 0.5]), "margin") > uncertainty(np.array([0.9, 0.1]), "margin")
    True
    """
    if scores is None or np.asarray(scores).size == 0:
        return float("-inf")
    p = np.sort(probabilities(scores))[::-1]
    if measure == "least-confidence":
        return float(1.0 - p[0])
    if measure == "margin":
        return float(-(p[0] - (p[1] if p.size > 1 else 0.0)))
    if measure == "entropy":
        nonzero = p[p > 0]
        return float(-(nonzero * np.log(nonzero)).sum())
    raise ValueError(f"unknown uncertainty measure '{measure}' (expected one of "
                     f"{', '.join(UNCERTAINTY)})")


class Selector(Protocol):
    name: str

    def select(self, candidates: Sequence[Candidate], k: int) -> list[Candidate]:
        """At most ``k`` of ``candidates``, the first to label first."""
        ...


def _by_uncertainty(candidates: Sequence[Candidate], measure: str) -> list[Candidate]:
    order = sorted(range(len(candidates)),
                   key=lambda i: (-uncertainty(candidates[i].scores, measure), i))
    return [candidates[i] for i in order]


@dataclass
class RandomSelector:
    seed: int | None = None
    name: str = "random"

    def select(self, candidates: Sequence[Candidate], k: int) -> list[Candidate]:
        k = max(0, min(k, len(candidates)))
        return random.Random(self.seed).sample(list(candidates), k)


@dataclass
class UncertaintySelector:
    measure: str = "least-confidence"

    def __post_init__(self) -> None:
        uncertainty(np.array([1.0]), self.measure)  # an unknown measure fails here

    @property
    def name(self) -> str:
        return self.measure

    def select(self, candidates: Sequence[Candidate], k: int) -> list[Candidate]:
        return _by_uncertainty(candidates, self.measure)[:max(0, k)]


@dataclass
class ClassBalancedSelector:
    measure: str = "least-confidence"
    name: str = "class-balanced"

    def select(self, candidates: Sequence[Candidate], k: int) -> list[Candidate]:
        groups: dict[str | None, list[Candidate]] = {}
        for candidate in _by_uncertainty(candidates, self.measure):
            groups.setdefault(candidate.predicted, []).append(candidate)
        # the rarest predicted class first: it is the one a busy class would crowd out
        queues = sorted(groups.values(), key=lambda group: len(group))
        chosen: list[Candidate] = []
        depth = 0
        while len(chosen) < k and any(depth < len(q) for q in queues):
            for queue in queues:
                if depth < len(queue) and len(chosen) < k:
                    chosen.append(queue[depth])
            depth += 1
        return chosen


@dataclass
class DriftFocusedSelector:
    """Samples served in ``[start_ms, end_ms]`` (the window a detector flagged) first."""

    start_ms: int | None = None
    end_ms: int | None = None
    measure: str = "least-confidence"
    name: str = "drift-focused"

    def select(self, candidates: Sequence[Candidate], k: int) -> list[Candidate]:
        ranked = _by_uncertainty(candidates, self.measure)
        if self.start_ms is None:
            return ranked[:max(0, k)]
        end = self.end_ms if self.end_ms is not None else 2 ** 62
        inside = [c for c in ranked if self.start_ms <= c.served_ms <= end]
        outside = [c for c in ranked if not self.start_ms <= c.served_ms <= end]
        return (inside + outside)[:max(0, k)]


def make_selector(name: str, *, seed: int | None = None, drift_window: tuple[int, int] |
                  None = None) -> Selector:
    """The selector called ``name`` (one of :data:`SELECTORS`)."""
    if name == "random":
        return RandomSelector(seed)
    if name in UNCERTAINTY:
        return UncertaintySelector(name)
    if name == "class-balanced":
        return ClassBalancedSelector()
    if name == "drift-focused":
        start, end = drift_window if drift_window else (None, None)
        return DriftFocusedSelector(start, end)
    raise ValueError(f"unknown selection strategy '{name}' (expected one of "
                     f"{', '.join(SELECTORS)})")
