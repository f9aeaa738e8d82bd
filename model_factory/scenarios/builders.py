"""Seeded builders of NC, NI and NIC scenarios from offline data, and a registry by name.

Every builder is a pure function of its arguments: the same seed gives identical tensors, another
seed another split. All randomness flows from one ``numpy.random.default_rng(seed)`` (or seeds
derived from ``seed`` with ``numpy.random.SeedSequence``), drawn in a fixed order.

Splits are stratified: every class is split into train and test on its own, ``test_fraction`` of
its samples (at least one) going to test, so each experience sees the classes in their original
proportions. Experiences record the source row of every sample (``train_ids``/``test_ids``), and a
source row is never in a train split and a test split, whatever experience they belong to.

Builders (scenario names in :data:`SCENARIOS`, built with :func:`make_scenario`):

- :func:`split_classes` (NC): Split-MNIST style, disjoint class groups.
- :func:`new_instances` (NI): every class in every experience, experience ``k`` shifted by
  rotation, noise or pixel permutation of level ``k`` (:mod:`.transforms`).
- :func:`new_instances_and_classes` (NIC): a new class group per experience while the previous
  groups come back under the experience's shift; see :func:`nic_schedule`.
- :func:`text_domain_shift` (NI, text): Rotten Tomatoes snippets, then IMDB reviews.
- :func:`river_stream` (NI, tabular): consecutive chunks of a River synthetic stream with a
  concept drift.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch

from .base import Experience, Scenario, ScenarioKind
from .datasets import IMAGE_DATASETS, MOVIE_REVIEW_SOURCES, movie_reviews
from .streams import STREAMS, drifting_stream
from .transforms import SHIFT_KINDS, InputShift, ShiftKind, domain_shift

Pools = dict[int, tuple[np.ndarray, np.ndarray]]
"""Per class: (train positions, test positions) in the source data set."""

_SHIFT_ADJECTIVE = {"rotation": "rotated", "noise": "noisy", "permutation": "permuted"}
_SOURCE_ABBREVIATION = {"rotten_tomatoes": "rt", "imdb": "imdb"}


def _check_common(seed: int, n_experiences: int, test_fraction: float) -> None:
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    if n_experiences < 1:
        raise ValueError(f"n_experiences must be >= 1, got {n_experiences}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")


def _load_images(dataset: str) -> tuple[np.ndarray, np.ndarray]:
    if dataset not in IMAGE_DATASETS:
        raise ValueError(f"dataset must be one of {tuple(IMAGE_DATASETS)}, got {dataset!r}")
    return IMAGE_DATASETS[dataset]()


def _class_order(
    labels: np.ndarray, classes: Sequence[int] | None, shuffle: bool, rng: np.random.Generator
) -> tuple[int, ...]:
    """The classes to use, in scenario order; ``classes=None`` means every label present."""
    present = sorted(set(labels.tolist()))
    chosen = present if classes is None else [int(c) for c in classes]
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"classes must not repeat a label, got {list(chosen)}")
    unknown = sorted(set(chosen) - set(present))
    if unknown:
        raise ValueError(f"classes {unknown} are not labels of the data set (labels: {present})")
    if len(chosen) < 2:
        raise ValueError(f"classes must name at least 2 labels, got {list(chosen)}")
    return tuple(int(c) for c in rng.permutation(chosen)) if shuffle else tuple(chosen)


def _stratified_split(
    labels: np.ndarray,
    indices: np.ndarray,
    classes: Sequence[int],
    test_fraction: float,
    rng: np.random.Generator,
) -> Pools:
    """Split the ``indices`` of every class into disjoint, shuffled (train, test) positions."""
    pools: Pools = {}
    for c in classes:
        members = rng.permutation(indices[labels[indices] == c])
        if len(members) < 2:
            raise ValueError(
                f"class {c} has {len(members)} sample(s); a train/test split needs at least 2"
            )
        n_test = min(max(round(len(members) * test_fraction), 1), len(members) - 1)
        pools[c] = (members[n_test:], members[:n_test])
    return pools


def _chunks(positions: np.ndarray, n: int, what: str) -> list[np.ndarray]:
    """``positions`` cut into ``n`` consecutive near-equal non-empty parts."""
    if len(positions) < n:
        raise ValueError(
            f"{what} has {len(positions)} samples, too few for {n} parts: lower n_experiences"
        )
    return np.array_split(positions, n)


def _image_experience(
    index: int,
    x: np.ndarray,
    y: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    shift: InputShift | None,
    domain: str,
    rng: np.random.Generator,
) -> Experience:
    """Gather the rows (shuffled), apply ``shift`` to train and test in one call, and wrap."""
    train, test = rng.permutation(train), rng.permutation(test)
    inputs = torch.from_numpy(x[np.concatenate([train, test])])
    if shift is not None:
        # One call on train and test together: the noise shift draws independent noise per row.
        inputs = shift(inputs)
    return Experience(
        index=index,
        train_x=inputs[: len(train)],
        train_y=torch.from_numpy(y[train]),
        test_x=inputs[len(train) :],
        test_y=torch.from_numpy(y[test]),
        classes=tuple(sorted(set(y[train].tolist()))),
        domain=domain,
        train_ids=torch.from_numpy(train.astype(np.int64)),
        test_ids=torch.from_numpy(test.astype(np.int64)),
    )


def _image_scenario(
    name: str, kind: ScenarioKind, x: np.ndarray, y: np.ndarray, seed: int, exps: list[Experience]
) -> Scenario:
    return Scenario(
        name=name,
        kind=kind,
        experiences=tuple(exps),
        class_names=tuple(str(c) for c in range(int(y.max()) + 1)),
        input_shape=tuple(x.shape[1:]),
        input_kind="image",
        seed=seed,
    )


def split_classes(
    dataset: str = "mnist",
    *,
    n_experiences: int = 5,
    classes_per_experience: int | None = None,
    seed: int = 0,
    test_fraction: float = 0.2,
    shuffle_classes: bool = False,
    classes: Sequence[int] | None = None,
) -> Scenario:
    """NC scenario: each experience holds the train/test samples of its own group of classes.

    Parameters:
        dataset: ``"mnist"`` (5,000 images) or ``"digits"`` (1,797 images).
        n_experiences: number of class groups.
        classes_per_experience: classes per group; ``None`` splits all classes evenly (then
            ``n_experiences`` must divide their number). Given, the first
            ``n_experiences * classes_per_experience`` classes of the order are used.
        seed: seed of the split (and of the class order when shuffled).
        test_fraction: share of each class's samples held out for test.
        shuffle_classes: order the classes by a seeded permutation instead of ascending.
        classes: labels to use (default: all); at least 2.

    Labels keep their data-set value (experience 1 of Split-MNIST holds labels 2 and 3);
    ``class_names`` are ``"0" .. "9"``. Every experience's domain is the data set name.

    Examples:
        >>> sc = split_classes("digits", seed=0)
        >>> sc.name, sc.kind, [e.classes for e in sc.experiences]
        ('split-digits', 'nc', [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)])
        >>> [e.classes for e in split_classes("digits", n_experiences=2,
        ...                                   classes_per_experience=3).experiences]
        [(0, 1, 2), (3, 4, 5)]
        >>> split_classes("digits", n_experiences=3)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: n_experiences=3 does not divide the 10 classes; set classes_per_experience...
    """
    _check_common(seed, n_experiences, test_fraction)
    x, y = _load_images(dataset)
    rng = np.random.default_rng(seed)
    order = _class_order(y, classes, shuffle_classes, rng)
    if classes_per_experience is None:
        if len(order) % n_experiences:
            raise ValueError(
                f"n_experiences={n_experiences} does not divide the {len(order)} classes; "
                "set classes_per_experience or classes"
            )
        classes_per_experience = len(order) // n_experiences
    if classes_per_experience < 1 or n_experiences * classes_per_experience > len(order):
        raise ValueError(
            f"classes_per_experience={classes_per_experience} x n_experiences={n_experiences} "
            f"must be between 1 and the {len(order)} classes"
        )
    order = order[: n_experiences * classes_per_experience]
    pools = _stratified_split(y, np.arange(len(y)), order, test_fraction, rng)
    exps = []
    for k in range(n_experiences):
        group = order[k * classes_per_experience : (k + 1) * classes_per_experience]
        train = np.concatenate([pools[c][0] for c in group])
        test = np.concatenate([pools[c][1] for c in group])
        exps.append(_image_experience(k, x, y, train, test, None, dataset, rng))
    return _image_scenario(f"split-{dataset}", "nc", x, y, seed, exps)


def new_instances(
    dataset: str = "mnist",
    *,
    n_experiences: int = 5,
    transform: ShiftKind = "rotation",
    seed: int = 0,
    test_fraction: float = 0.2,
    rotation_step_deg: float = 30.0,
    noise_step_std: float = 0.1,
    share_instances: bool = False,
    classes: Sequence[int] | None = None,
) -> Scenario:
    """NI scenario: all classes in every experience, experience ``k`` under the level-``k`` shift.

    Experience 0 is the original data; experience ``k`` is rotated by ``k * rotation_step_deg``
    degrees, or has Gaussian noise of std ``k * noise_step_std`` added, or has its pixels
    shuffled by the ``k``-th fixed permutation (``transform``).

    Parameters:
        dataset: ``"mnist"`` or ``"digits"``.
        n_experiences: number of domains.
        transform: ``"rotation"``, ``"noise"`` or ``"permutation"``.
        seed: seed of the split, the noise and the permutations.
        test_fraction: share of each class held out for test.
        rotation_step_deg: degrees added per experience (rotation).
        noise_step_std: noise std added per experience, pixels in [0, 1] (noise).
        share_instances: ``False``: every class's train and test samples are cut into
            ``n_experiences`` disjoint parts, one per experience (new instances in the strict
            sense). ``True``: every experience shifts the whole split (the usual Permuted-MNIST
            protocol, ``n_experiences`` times the data).
        classes: labels to use (default: all); at least 2.

    Examples:
        >>> sc = new_instances("digits", n_experiences=3, transform="rotation", seed=0)
        >>> sc.name, sc.kind, [e.domain for e in sc.experiences]
        ('rotated-digits', 'ni', ['rotation=0deg', 'rotation=30deg', 'rotation=60deg'])
        >>> [e.classes == tuple(range(10)) for e in sc.experiences]
        [True, True, True]
        >>> new_instances("digits", classes=[3])
        Traceback (most recent call last):
        ...
        ValueError: classes must name at least 2 labels, got [3]
    """
    _check_common(seed, n_experiences, test_fraction)
    if transform not in SHIFT_KINDS:
        raise ValueError(f"transform must be one of {SHIFT_KINDS}, got {transform!r}")
    x, y = _load_images(dataset)
    rng = np.random.default_rng(seed)
    order = _class_order(y, classes, False, rng)
    pools = _stratified_split(y, np.arange(len(y)), order, test_fraction, rng)
    parts = {
        c: (
            _chunks(train, 1 if share_instances else n_experiences, f"class {c} (train)"),
            _chunks(test, 1 if share_instances else n_experiences, f"class {c} (test)"),
        )
        for c, (train, test) in pools.items()
    }
    exps = []
    for k in range(n_experiences):
        part = 0 if share_instances else k
        train = np.concatenate([parts[c][0][part] for c in order])
        test = np.concatenate([parts[c][1][part] for c in order])
        shift = domain_shift(
            transform,
            k,
            seed=seed,
            rotation_step_deg=rotation_step_deg,
            noise_step_std=noise_step_std,
        )
        exps.append(_image_experience(k, x, y, train, test, shift, shift.name, rng))
    return _image_scenario(f"{_SHIFT_ADJECTIVE[transform]}-{dataset}", "ni", x, y, seed, exps)


@dataclass(frozen=True)
class NICStep:
    """What experience ``index`` of an NIC scenario holds.

    Parameters:
        index: experience position.
        new_classes: classes first seen in this experience.
        revisited_classes: classes of earlier experiences that come back (new samples, and
            shifted like the whole experience).
    """

    index: int
    new_classes: tuple[int, ...]
    revisited_classes: tuple[int, ...]

    @property
    def classes(self) -> tuple[int, ...]:
        """All classes of the experience, sorted."""
        return tuple(sorted(self.new_classes + self.revisited_classes))


def nic_schedule(
    class_order: Sequence[int], n_experiences: int, revisit: int = 1
) -> tuple[NICStep, ...]:
    """The NIC schedule: which classes are new and which come back in every experience.

    The classes (in ``class_order``) are cut into ``n_experiences`` equal groups. Experience
    ``k`` introduces group ``k`` and revisits groups ``k - revisit .. k - 1`` (those that exist),
    and all its samples, new and revisited, are under the level-``k`` shift. A class of group
    ``g`` thus appears in experiences ``g .. min(g + revisit, n_experiences - 1)``, and its train
    and test samples are cut into that many disjoint parts, one per appearance, so every
    appearance brings new instances.

    Parameters:
        class_order: classes in order of introduction.
        n_experiences: number of experiences; must divide ``len(class_order)``.
        revisit: how many previous groups come back in each experience (>= 1;
            ``n_experiences - 1`` makes every known class come back every time).

    Examples:
        >>> for step in nic_schedule(range(10), 5):
        ...     print(step.index, step.new_classes, step.revisited_classes)
        0 (0, 1) ()
        1 (2, 3) (0, 1)
        2 (4, 5) (2, 3)
        3 (6, 7) (4, 5)
        4 (8, 9) (6, 7)
        >>> nic_schedule(range(6), 3, revisit=2)[2].classes
        (0, 1, 2, 3, 4, 5)
    """
    order = tuple(int(c) for c in class_order)
    if n_experiences < 2:
        raise ValueError(f"n_experiences must be >= 2 for NIC, got {n_experiences}")
    if len(order) % n_experiences:
        raise ValueError(f"n_experiences={n_experiences} does not divide the {len(order)} classes")
    if not 1 <= revisit < n_experiences:
        raise ValueError(f"revisit must be in 1 .. n_experiences - 1, got {revisit}")
    size = len(order) // n_experiences
    groups = [order[g * size : (g + 1) * size] for g in range(n_experiences)]
    return tuple(
        NICStep(
            index=k,
            new_classes=groups[k],
            revisited_classes=tuple(c for g in range(max(0, k - revisit), k) for c in groups[g]),
        )
        for k in range(n_experiences)
    )


def new_instances_and_classes(
    dataset: str = "mnist",
    *,
    n_experiences: int = 5,
    transform: ShiftKind = "rotation",
    seed: int = 0,
    test_fraction: float = 0.2,
    revisit: int = 1,
    rotation_step_deg: float = 30.0,
    noise_step_std: float = 0.1,
    shuffle_classes: bool = False,
    classes: Sequence[int] | None = None,
) -> Scenario:
    """NIC scenario following :func:`nic_schedule`: new classes every experience, known ones back
    under a new shift.

    Experience ``k`` holds the new group ``k`` and the ``revisit`` previous groups, all under the
    level-``k`` shift of :func:`new_instances` (experience 0: the original data). Its ``domain``
    is the shift's name.

    Parameters:
        dataset: ``"mnist"`` or ``"digits"``.
        n_experiences: number of experiences (>= 2); must divide the number of classes.
        transform: ``"rotation"``, ``"noise"`` or ``"permutation"``.
        seed: seed of the split, class order, noise and permutations.
        test_fraction: share of each class held out for test.
        revisit: previous class groups repeated per experience (see :func:`nic_schedule`).
        rotation_step_deg: degrees added per experience (rotation).
        noise_step_std: noise std added per experience (noise).
        shuffle_classes: introduce the classes in a seeded random order.
        classes: labels to use (default: all); at least 2.

    Examples:
        >>> sc = new_instances_and_classes("digits", seed=0)
        >>> sc.name, sc.kind, [e.classes for e in sc.experiences][:3]
        ('nic-digits', 'nic', [(0, 1), (0, 1, 2, 3), (2, 3, 4, 5)])
        >>> sc.experiences[1].domain
        'rotation=30deg'
    """
    _check_common(seed, n_experiences, test_fraction)
    if transform not in SHIFT_KINDS:
        raise ValueError(f"transform must be one of {SHIFT_KINDS}, got {transform!r}")
    x, y = _load_images(dataset)
    rng = np.random.default_rng(seed)
    order = _class_order(y, classes, shuffle_classes, rng)
    schedule = nic_schedule(order, n_experiences, revisit)
    appearances = {c: [s.index for s in schedule if c in s.classes] for c in order}
    pools = _stratified_split(y, np.arange(len(y)), order, test_fraction, rng)
    parts = {
        c: {
            k: (train_part, test_part)
            for k, train_part, test_part in zip(
                appearances[c],
                _chunks(pools[c][0], len(appearances[c]), f"class {c} (train)"),
                _chunks(pools[c][1], len(appearances[c]), f"class {c} (test)"),
                strict=True,
            )
        }
        for c in order
    }
    exps = []
    for step in schedule:
        shift = domain_shift(
            transform,
            step.index,
            seed=seed,
            rotation_step_deg=rotation_step_deg,
            noise_step_std=noise_step_std,
        )
        train = np.concatenate([parts[c][step.index][0] for c in step.classes])
        test = np.concatenate([parts[c][step.index][1] for c in step.classes])
        exps.append(_image_experience(step.index, x, y, train, test, shift, shift.name, rng))
    return _image_scenario(f"nic-{dataset}", "nic", x, y, seed, exps)


def text_domain_shift(
    *,
    seed: int = 0,
    n_per_domain: int | None = None,
    test_fraction: float = 0.2,
    order: Sequence[str] = ("rotten_tomatoes", "imdb"),
) -> Scenario:
    """NI text scenario: binary sentiment, one experience per review source.

    Rotten Tomatoes snippets (one sentence, lower-cased, tokenised) then IMDB reviews (full
    paragraphs, HTML breaks kept): the same task under a shift of style and length.

    Parameters:
        seed: seed of the sampling and of the split.
        n_per_domain: reviews drawn (without replacement) from each source; ``None`` takes all
            (8,530 Rotten Tomatoes, 24,904 IMDB).
        test_fraction: share of each class held out for test, per source.
        order: the sources in experience order.

    Inputs are ``list[str]``; labels 0 = negative, 1 = positive; ``domain`` is the source.

    Examples:
        >>> sc = text_domain_shift(seed=0, n_per_domain=50)
        >>> sc.name, [(e.domain, e.n_train, e.n_test) for e in sc.experiences]
        ('text-rt-imdb', [('rotten_tomatoes', 40, 10), ('imdb', 40, 10)])
        >>> isinstance(sc.experiences[0].train_x[0], str), sc.class_names
        (True, ('negative', 'positive'))
    """
    _check_common(seed, len(order), test_fraction)
    unknown = [s for s in order if s not in MOVIE_REVIEW_SOURCES]
    if unknown or len(set(order)) != len(order):
        raise ValueError(
            f"order must list distinct sources of {MOVIE_REVIEW_SOURCES}, got {tuple(order)}"
        )
    texts, labels, sources = movie_reviews()
    source_of = np.asarray(sources)
    rng = np.random.default_rng(seed)
    exps = []
    for k, source in enumerate(order):
        members = np.flatnonzero(source_of == source)
        if n_per_domain is not None:
            if not 4 <= n_per_domain <= len(members):
                raise ValueError(
                    f"n_per_domain must be in 4 .. {len(members)} (the reviews of {source}), "
                    f"got {n_per_domain}"
                )
            members = np.sort(rng.choice(members, n_per_domain, replace=False))
        pools = _stratified_split(labels, members, (0, 1), test_fraction, rng)
        train = rng.permutation(np.concatenate([pools[c][0] for c in (0, 1)]))
        test = rng.permutation(np.concatenate([pools[c][1] for c in (0, 1)]))
        exps.append(
            Experience(
                index=k,
                train_x=[texts[i] for i in train],
                train_y=torch.from_numpy(labels[train]),
                test_x=[texts[i] for i in test],
                test_y=torch.from_numpy(labels[test]),
                classes=(0, 1),
                domain=source,
                train_ids=torch.from_numpy(train.astype(np.int64)),
                test_ids=torch.from_numpy(test.astype(np.int64)),
            )
        )
    return Scenario(
        name="text-" + "-".join(_SOURCE_ABBREVIATION[s] for s in order),
        kind="ni",
        experiences=tuple(exps),
        class_names=("negative", "positive"),
        input_shape=(),
        input_kind="text",
        seed=seed,
    )


def river_stream(
    name: str = "sea",
    *,
    n_samples: int = 10_000,
    drift_at: int = 5_000,
    seed: int = 0,
    n_experiences: int = 5,
    test_fraction: float = 0.2,
    drift_width: int = 0,
    concepts: tuple[int, int] | None = None,
) -> Scenario:
    """NI tabular scenario: a River synthetic stream with one concept drift, cut into chunks.

    The stream comes from :func:`~.streams.drifting_stream`: concept ``concepts[0]`` until
    ``drift_at``, then ``concepts[1]`` (abrupt, ``drift_width=0``, or gradual). Experience ``k``
    is the ``k``-th of ``n_experiences`` consecutive near-equal chunks, split into train and test
    at random inside the chunk. Its domain names the concept, ``"sea:0"``, or
    ``"sea:0->3"`` for the chunk that holds the drift (samples ``drift_at +- drift_width / 2``).

    Parameters:
        name: stream family, one of :data:`STREAMS` (``sea``, ``agrawal``, ``hyperplane``,
            ``stagger``).
        n_samples: stream length (samples).
        drift_at: position of the drift (samples from the start), ``0 < drift_at < n_samples``.
        seed: seed of the streams and of the splits.
        n_experiences: number of chunks.
        test_fraction: share of every chunk held out for test.
        drift_width: 0 for an abrupt drift, else the width (samples) of a gradual one, at least
            :func:`~.streams.min_drift_width` (River overflows below).
        concepts: ``(before, after)`` concept ids; default per family (:data:`STREAMS`).

    Features are float32 ``[N, F]`` in stream order (train and test rows each sorted by
    position), columns in the generator's key order, unscaled (Agrawal's salary is ~1e5);
    labels 0/1. ``train_ids``/``test_ids`` are stream positions.

    Examples:
        >>> sc = river_stream("sea", n_samples=1000, drift_at=500, n_experiences=4, seed=1)
        >>> sc.input_shape, [e.domain for e in sc.experiences]
        ((3,), ['sea:0', 'sea:0', 'sea:3', 'sea:3'])
        >>> [e.domain for e in river_stream("sea", n_samples=1000, drift_at=600,
        ...                                 n_experiences=4).experiences]
        ['sea:0', 'sea:0', 'sea:0->3', 'sea:3']
    """
    _check_common(seed, n_experiences, test_fraction)
    if n_samples < 2 * n_experiences:
        raise ValueError(
            f"n_samples={n_samples} is too few for {n_experiences} experiences of >= 2 samples"
        )
    features, labels, (before, after) = drifting_stream(
        name,
        n_samples=n_samples,
        drift_at=drift_at,
        seed=seed,
        drift_width=drift_width,
        concepts=concepts,
    )
    rng = np.random.default_rng(seed)
    low, high = drift_at - drift_width / 2, drift_at + drift_width / 2
    exps = []
    for k, chunk in enumerate(_chunks(np.arange(n_samples), n_experiences, "the stream")):
        start, end = int(chunk[0]), int(chunk[-1]) + 1
        if end <= low:
            domain = f"{name}:{before}"
        elif start >= high:
            domain = f"{name}:{after}"
        else:
            domain = f"{name}:{before}->{after}"
        shuffled = rng.permutation(chunk)
        n_test = min(max(round(len(chunk) * test_fraction), 1), len(chunk) - 1)
        train, test = np.sort(shuffled[n_test:]), np.sort(shuffled[:n_test])
        exps.append(
            Experience(
                index=k,
                train_x=torch.from_numpy(features[train]),
                train_y=torch.from_numpy(labels[train]),
                test_x=torch.from_numpy(features[test]),
                test_y=torch.from_numpy(labels[test]),
                classes=tuple(sorted(set(labels[train].tolist()))),
                domain=domain,
                train_ids=torch.from_numpy(train),
                test_ids=torch.from_numpy(test),
            )
        )
    return Scenario(
        name=f"{name}-stream",
        kind="ni",
        experiences=tuple(exps),
        class_names=("0", "1"),
        input_shape=(features.shape[1],),
        input_kind="tabular",
        seed=seed,
    )


SCENARIOS: dict[str, Callable[..., Scenario]] = {
    **{f"split-{d}": partial(split_classes, dataset=d) for d in IMAGE_DATASETS},
    **{
        f"{_SHIFT_ADJECTIVE[t]}-{d}": partial(new_instances, dataset=d, transform=t)
        for d in IMAGE_DATASETS
        for t in SHIFT_KINDS
        if t != "permutation"
    },
    # The standard Permuted-MNIST protocol (van de Ven & Tolias 2019): every experience is the
    # whole dataset under a new fixed pixel permutation.
    **{
        f"permuted-{d}": partial(new_instances, dataset=d, transform="permutation",
                                 share_instances=True)
        for d in IMAGE_DATASETS
    },
    **{f"nic-{d}": partial(new_instances_and_classes, dataset=d) for d in IMAGE_DATASETS},
    "text-rt-imdb": partial(text_domain_shift, order=("rotten_tomatoes", "imdb")),
    **{f"{s}-stream": partial(river_stream, name=s) for s in STREAMS},
}
"""Scenario builders by name; the options a name fixes (``dataset``, ``transform``, ...) cannot be
overridden through :func:`make_scenario`."""


def make_scenario(name: str, /, **options: Any) -> Scenario:
    """Build a registered scenario by name, passing ``options`` to its builder.

    Parameters:
        name: a key of :data:`SCENARIOS` (``"split-mnist"``, ``"rotated-mnist"``,
            ``"permuted-mnist"``, ``"nic-mnist"``, ``"text-rt-imdb"``, ``"sea-stream"``, ...).
        options: keyword options of the builder (``seed``, ``n_experiences``, ...).

    Examples:
        >>> make_scenario("split-digits", seed=3).name
        'split-digits'
        >>> make_scenario("split-cifar")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: unknown scenario 'split-cifar'; known scenarios: agrawal-stream, ...
        >>> make_scenario("split-digits", dataset="mnist")
        Traceback (most recent call last):
        ...
        ValueError: scenario 'split-digits' fixes the options ['dataset']
    """
    if name not in SCENARIOS:
        raise ValueError(
            f"unknown scenario {name!r}; known scenarios: {', '.join(sorted(SCENARIOS))}"
        )
    builder = SCENARIOS[name]
    fixed = sorted(set(getattr(builder, "keywords", {})) & set(options))
    if fixed:
        raise ValueError(f"scenario {name!r} fixes the options {fixed}")
    return builder(**options)
