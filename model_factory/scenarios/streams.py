"""River synthetic streams with one concept drift, generated offline into arrays.

A stream family (:data:`STREAMS`) picks its concept by an integer: SEA's threshold variant,
Agrawal's and STAGGER's classification function, or a random hyperplane. :func:`drifting_stream`
draws ``drift_at`` samples from one concept and the rest from another, either switching at once
(abrupt) or through River's ``ConceptDriftStream`` (gradual: the probability of the new concept
is a sigmoid of the position, 0.5 at ``drift_at``, going from about 12 % to 88 % over
``drift_width`` samples).

River's ``ConceptDriftStream`` evaluates ``math.exp(4 * (drift_at - t) / width)`` from ``t = 1``
on, which overflows once the exponent passes ``log(float max) ~ 709.78``; the usual rule of
thumb "width >= 50" is not enough past ``drift_at ~ 8,900``. Widths under :func:`min_drift_width`
(about ``drift_at / 177``: 30 at ``drift_at=5,000``, 58 at 10,000, one above the first width
that works) are refused here rather than failing inside River.

References:
    W. N. Street, Y. Kim. A streaming ensemble algorithm (SEA) for large-scale classification.
    KDD 2001. R. Agrawal et al. Database mining: a performance perspective. IEEE TKDE 1993.
    J. C. Schlimmer, R. H. Granger. Incremental learning from noisy data. Machine Learning 1986.
"""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


def derive_seed(*entropy: int) -> int:
    """A 32-bit seed drawn from ``entropy`` (``numpy.random.SeedSequence``).

    Examples:
        >>> derive_seed(0, 1) == derive_seed(0, 1) != derive_seed(0, 2)
        True
    """
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


@dataclass(frozen=True)
class StreamGenerator:
    """A River synthetic data set family whose concept is chosen by an integer.

    Parameters:
        make: ``(concept, seed) -> river data set`` (an iterable of ``(x: dict, y)``).
        concepts: the valid concept ids.
        default_concepts: concepts before and after the drift when none are given.
        description: what a concept is.
    """

    make: Callable[[int, int], Any]
    concepts: range
    default_concepts: tuple[int, int]
    description: str


def _synth() -> Any:
    # river takes about a second to import; only the stream scenarios need it.
    from river.datasets import synth

    return synth


STREAMS: dict[str, StreamGenerator] = {
    "sea": StreamGenerator(
        lambda c, s: _synth().SEA(variant=c, seed=s),
        range(4),
        (0, 3),
        "SEA variant: y = x0 + x1 > 8, 9, 7 or 9.5 (3 features uniform in [0, 10])",
    ),
    "agrawal": StreamGenerator(
        lambda c, s: _synth().Agrawal(classification_function=c, seed=s),
        range(10),
        (0, 2),
        "Agrawal classification function (9 loan-applicant features)",
    ),
    "hyperplane": StreamGenerator(
        lambda c, s: _synth().Hyperplane(seed=derive_seed(s, c)),
        range(2**31),
        (0, 1),
        "random hyperplane in [0, 1]^10 (5 % label noise); every segment draws its own",
    ),
    "stagger": StreamGenerator(
        lambda c, s: _synth().STAGGER(classification_function=c, seed=s),
        range(3),
        (0, 1),
        "STAGGER rule over size, colour, shape (3 categorical codes)",
    ),
}
"""River stream families by name."""


def min_drift_width(drift_at: int) -> int:
    """Narrowest gradual drift (samples) River's ``ConceptDriftStream`` computes at ``drift_at``.

    Examples:
        >>> min_drift_width(5_000), min_drift_width(10_000)
        (30, 58)
    """
    return math.ceil(4 * (drift_at - 1) / math.log(sys.float_info.max)) + 1


def drifting_stream(
    name: str,
    *,
    n_samples: int,
    drift_at: int,
    seed: int,
    drift_width: int = 0,
    concepts: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Generate ``n_samples`` of stream ``name`` with a drift from ``concepts[0]`` to ``[1]``.

    Parameters:
        name: a key of :data:`STREAMS`.
        n_samples: stream length (samples).
        drift_at: position of the drift, ``0 < drift_at < n_samples``; with ``drift_width=0``
            samples ``0 .. drift_at - 1`` are of the old concept and the rest of the new one.
        seed: seed of both concepts' generators and of the mixing (derived per use).
        drift_width: 0 (abrupt) or the width (samples) of a gradual drift,
            ``>= min_drift_width(drift_at)``.
        concepts: ``(before, after)``; default ``STREAMS[name].default_concepts``.

    Returns:
        ``(features, labels, (before, after))``: float32 ``[n_samples, F]`` in stream order with
        columns in the generator's key order, int64 ``[n_samples]`` (0/1), the concepts used.

    Examples:
        >>> x, y, concepts = drifting_stream("sea", n_samples=100, drift_at=50, seed=0)
        >>> x.shape, x.dtype, concepts
        ((100, 3), dtype('float32'), (0, 3))
        >>> bool(((x[:50, 0] + x[:50, 1] > 8) == y[:50]).all())
        True
        >>> drifting_stream("sea", n_samples=100, drift_at=50, seed=0, drift_width=-1)
        Traceback (most recent call last):
        ...
        ValueError: drift_width must be 0 (abrupt) or >= 2 for drift_at=50, got -1
    """
    if name not in STREAMS:
        raise ValueError(f"name must be one of {tuple(STREAMS)}, got {name!r}")
    generator = STREAMS[name]
    before, after = concepts if concepts is not None else generator.default_concepts
    for concept in (before, after):
        if concept not in generator.concepts:
            raise ValueError(f"concepts of {name} must be in {generator.concepts}, got {concept}")
    if not 0 < drift_at < n_samples:
        raise ValueError(f"drift_at must be in 1 .. n_samples - 1, got {drift_at}")
    if drift_width < 0 or 0 < drift_width < min_drift_width(drift_at):
        raise ValueError(
            f"drift_width must be 0 (abrupt) or >= {min_drift_width(drift_at)} for "
            f"drift_at={drift_at}, got {drift_width}"
        )
    old = generator.make(before, derive_seed(seed, 0))
    new = generator.make(after, derive_seed(seed, 1))
    if drift_width == 0:
        rows = list(itertools.chain(old.take(drift_at), new.take(n_samples - drift_at)))
    else:
        mixed = _synth().ConceptDriftStream(
            old, new, position=drift_at, width=drift_width, seed=derive_seed(seed, 2)
        )
        rows = list(mixed.take(n_samples))
    features = np.array([[float(v) for v in x.values()] for x, _ in rows], dtype=np.float32)
    labels = np.array([int(label) for _, label in rows], dtype=np.int64)
    return features, labels, (before, after)
