"""CL scenarios: every registered scenario passes one contract; each builder its own checks.

The contract (parametrized over ``SCENARIOS``): the name round-trips, no source sample and no
input content is in a train and a test split, the same seed gives identical tensors and another
seed another split, and ``offline()`` holds every training sample.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from model_factory.scenarios import (
    SCENARIOS,
    STREAMS,
    Experience,
    PixelPermutation,
    Rotation,
    Scenario,
    digits,
    make_scenario,
    mnist_5k,
    movie_reviews,
    new_instances,
    new_instances_and_classes,
    nic_schedule,
    river_stream,
    split_classes,
    text_domain_shift,
)
from model_factory.scenarios.datasets import package_file

# Small options keep the contract fast; image scenarios run on their defaults.
SMALL_OPTIONS: dict[str, dict] = {
    "text-rt-imdb": {"n_per_domain": 60},
    **{f"{name}-stream": {"n_samples": 600, "drift_at": 300} for name in STREAMS},
}


def build(name: str, seed: int) -> Scenario:
    return make_scenario(name, seed=seed, **SMALL_OPTIONS.get(name, {}))


def row_hashes(inputs) -> set[str]:
    if isinstance(inputs, torch.Tensor):
        rows = [row.tobytes() for row in inputs.reshape(len(inputs), -1).numpy()]
    else:
        rows = [text.encode() for text in inputs]
    return {hashlib.sha1(row).hexdigest() for row in rows}


def same_inputs(a, b) -> bool:
    return torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b


# --- the contract, over every registered scenario ---------------------------------------------


@pytest.fixture(scope="module", params=sorted(SCENARIOS))
def built(request: pytest.FixtureRequest) -> tuple[str, Scenario]:
    return request.param, build(request.param, seed=0)


def test_name_kind_and_labels(built: tuple[str, Scenario]) -> None:
    name, scenario = built
    assert scenario.name == name
    assert scenario.kind in {"ni", "nc", "nic"}
    assert [exp.index for exp in scenario.experiences] == list(range(len(scenario.experiences)))
    for exp in scenario.experiences:
        assert exp.n_train > 0 and exp.n_test > 0
        assert exp.train_y.dtype == torch.int64
        assert set(exp.train_y.tolist()) == set(exp.classes)
        assert set(exp.test_y.tolist()) <= set(exp.classes)
        if scenario.input_kind == "text":
            assert isinstance(exp.train_x, list) and isinstance(exp.train_x[0], str)
        else:
            assert exp.train_x.dtype == torch.float32
            assert tuple(exp.train_x.shape[1:]) == scenario.input_shape


def test_train_and_test_are_disjoint(built: tuple[str, Scenario]) -> None:
    _, scenario = built
    train_ids = torch.cat([exp.train_ids for exp in scenario.experiences])
    test_ids = torch.cat([exp.test_ids for exp in scenario.experiences])
    assert not set(train_ids.tolist()) & set(test_ids.tolist())
    for exp in scenario.experiences:
        assert len(set(exp.train_ids.tolist())) == exp.n_train
        assert len(set(exp.test_ids.tolist())) == exp.n_test
    if scenario.input_kind != "tabular":
        train_rows = set().union(*(row_hashes(exp.train_x) for exp in scenario.experiences))
        test_rows = set().union(*(row_hashes(exp.test_x) for exp in scenario.experiences))
        assert not train_rows & test_rows


def test_same_seed_same_tensors_other_seed_other_split(built: tuple[str, Scenario]) -> None:
    name, first = built
    again, other = build(name, seed=0), build(name, seed=1)
    for a, b, c in zip(first.experiences, again.experiences, other.experiences, strict=True):
        assert same_inputs(a.train_x, b.train_x) and same_inputs(a.test_x, b.test_x)
        assert torch.equal(a.train_y, b.train_y) and torch.equal(a.test_y, b.test_y)
        assert torch.equal(a.train_ids, b.train_ids) and a.domain == b.domain
        assert not same_inputs(a.train_x, c.train_x)
        assert set(a.train_ids.tolist()) != set(c.train_ids.tolist())


def test_offline_holds_all_training_data(built: tuple[str, Scenario]) -> None:
    _, scenario = built
    offline = scenario.offline()
    assert offline.kind == "offline" and len(offline.experiences) == 1
    merged = offline.experiences[0]
    exps = scenario.experiences
    assert merged.n_train == sum(exp.n_train for exp in exps)
    assert merged.n_test == sum(exp.n_test for exp in exps)
    assert torch.equal(merged.train_ids, torch.cat([exp.train_ids for exp in exps]))
    assert merged.classes == tuple(sorted(set().union(*(exp.classes for exp in exps))))
    assert row_hashes(merged.train_x) == set().union(*(row_hashes(e.train_x) for e in exps))
    assert offline.offline() is offline


# --- data sets ----------------------------------------------------------------------------------


def test_image_datasets_facts() -> None:
    x, y = mnist_5k()
    assert x.shape == (5000, 1, 28, 28) and x.dtype == np.float32
    assert x.min() == 0.0 and x.max() == 1.0
    assert np.bincount(y).tolist() == [500] * 10
    dx, dy = digits()
    assert dx.shape == (1797, 1, 8, 8) and dx.min() == 0.0 and dx.max() == 1.0
    assert sorted(set(dy.tolist())) == list(range(10))
    assert mnist_5k() is mnist_5k()
    with pytest.raises(ValueError, match="read-only"):
        x[0, 0, 0, 0] = 1.0


def test_movie_reviews_facts() -> None:
    texts, labels, sources = movie_reviews()
    assert len(texts) == len(labels) == len(sources) == 33_434
    assert len(set(texts)) == len(texts)
    counts = {s: sources.count(s) for s in set(sources)}
    assert counts == {"rotten_tomatoes": 8_530, "imdb": 24_904}
    assert set(labels.tolist()) == {0, 1}


def test_missing_package_file_is_a_clear_error() -> None:
    with pytest.raises(FileNotFoundError, match="no_such_package.*install no-such-package"):
        package_file("no_such_package", "data.csv", install="no-such-package")


# --- NC -----------------------------------------------------------------------------------------


def test_split_mnist_holds_its_classes_per_experience() -> None:
    scenario = split_classes("mnist", seed=0)
    assert [exp.classes for exp in scenario.experiences] == [
        (0, 1),
        (2, 3),
        (4, 5),
        (6, 7),
        (8, 9),
    ]
    assert scenario.class_names == tuple(str(c) for c in range(10))
    for exp in scenario.experiences:
        assert set(exp.train_y.tolist()) == set(exp.test_y.tolist()) == set(exp.classes)
    assert sum(exp.n_train + exp.n_test for exp in scenario.experiences) == 5000


def test_shuffled_class_order_is_seeded() -> None:
    def order(seed: int) -> list[tuple[int, ...]]:
        return [
            e.classes for e in split_classes("digits", seed=seed, shuffle_classes=True).experiences
        ]

    assert order(4) == order(4)
    assert order(4) != order(5)
    assert sorted(c for group in order(4) for c in group) == list(range(10))


def test_classes_per_experience_uses_a_prefix_of_the_order() -> None:
    scenario = split_classes("digits", n_experiences=3, classes_per_experience=2)
    assert [exp.classes for exp in scenario.experiences] == [(0, 1), (2, 3), (4, 5)]


# --- NI -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("transform", ["rotation", "noise", "permutation"])
def test_ni_has_all_classes_and_shifted_inputs(transform: str) -> None:
    scenario = new_instances("mnist", n_experiences=4, transform=transform, seed=0)
    originals, _ = mnist_5k()
    for exp in scenario.experiences:
        assert exp.classes == tuple(range(10))
        original = torch.from_numpy(originals[exp.train_ids.numpy()])
        if exp.index == 0:
            assert torch.equal(exp.train_x, original)
        else:
            assert not torch.equal(exp.train_x, original)
    train_ids = [set(exp.train_ids.tolist()) for exp in scenario.experiences]
    assert all(not a & b for i, a in enumerate(train_ids) for b in train_ids[i + 1 :])


def test_rotation_is_exact_at_zero_and_matches_rot90() -> None:
    images = torch.from_numpy(mnist_5k()[0][:16].copy())
    assert torch.equal(Rotation(0.0)(images), images)
    assert torch.allclose(Rotation(90.0)(images), torch.rot90(images, 1, (-2, -1)), atol=1e-5)
    scenario = new_instances("digits", n_experiences=3, rotation_step_deg=0.0)
    for exp in scenario.experiences:
        assert torch.equal(exp.train_x, torch.from_numpy(digits()[0][exp.train_ids.numpy()]))


def test_noise_grows_with_the_experience_and_stays_in_range() -> None:
    scenario = new_instances("digits", n_experiences=4, transform="noise", noise_step_std=0.1)
    originals = digits()[0]
    spread = []
    for exp in scenario.experiences:
        assert exp.train_x.min() >= 0 and exp.train_x.max() <= 1
        delta = exp.train_x - torch.from_numpy(originals[exp.train_ids.numpy()])
        spread.append(float(delta.std()))
    assert spread[0] == 0.0
    assert spread == sorted(spread) and len(set(spread)) == 4


def test_permutation_is_one_fixed_shuffle_per_experience() -> None:
    scenario = new_instances("digits", n_experiences=3, transform="permutation", seed=7)
    originals = torch.from_numpy(digits()[0].copy())
    for exp in scenario.experiences:
        order = PixelPermutation(exp.index, seed=7).permutation(64)
        for x, ids in ((exp.train_x, exp.train_ids), (exp.test_x, exp.test_ids)):
            assert torch.equal(x.flatten(1), originals[ids].flatten(1)[:, order])
    assert scenario.experiences[-1].domain == "permutation-2"


def test_shared_instances_repeat_the_split_under_every_shift() -> None:
    scenario = new_instances("digits", n_experiences=3, share_instances=True)
    ids = [sorted(exp.train_ids.tolist()) for exp in scenario.experiences]
    assert ids[0] == ids[1] == ids[2]


# --- NIC ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("revisit", [1, 2, 4])
def test_nic_follows_the_documented_schedule(revisit: int) -> None:
    scenario = new_instances_and_classes("mnist", n_experiences=5, revisit=revisit, seed=0)
    schedule = nic_schedule(range(10), 5, revisit)
    seen: set[int] = set()
    appearances: dict[int, list[set[int]]] = {}
    for exp, step in zip(scenario.experiences, schedule, strict=True):
        assert exp.classes == step.classes
        assert exp.domain == f"rotation={30 * exp.index}deg"
        assert not set(step.new_classes) & seen
        assert set(step.revisited_classes) <= seen
        assert bool(step.revisited_classes) == (exp.index > 0)
        seen |= set(step.new_classes)
        for c in exp.classes:
            appearances.setdefault(c, []).append(set(exp.train_ids[exp.train_y == c].tolist()))
    assert seen == set(range(10))
    for c, parts in appearances.items():
        assert len(parts) == min(c // 2 + revisit, 4) - c // 2 + 1
        assert sum(len(p) for p in parts) == len(set().union(*parts))  # new instances each time


def test_nic_schedule_revisiting_everything_is_cumulative() -> None:
    steps = nic_schedule(range(6), 3, revisit=2)
    assert [s.classes for s in steps] == [(0, 1), (0, 1, 2, 3), (0, 1, 2, 3, 4, 5)]


# --- text ---------------------------------------------------------------------------------------


def test_text_experiences_come_from_the_two_sources() -> None:
    scenario = text_domain_shift(seed=0, n_per_domain=100)
    _, _, sources = movie_reviews()
    assert [exp.domain for exp in scenario.experiences] == ["rotten_tomatoes", "imdb"]
    for exp in scenario.experiences:
        assert exp.n_train + exp.n_test == 100
        ids = torch.cat([exp.train_ids, exp.test_ids]).tolist()
        assert {sources[i] for i in ids} == {exp.domain}
        assert exp.classes == (0, 1)
    rt, imdb = scenario.experiences
    assert np.mean([len(t) for t in rt.train_x]) < np.mean([len(t) for t in imdb.train_x])


# --- River streams ------------------------------------------------------------------------------


SEA_THRESHOLD = {0: 8.0, 3: 9.5}


def test_stream_drift_at_a_chunk_boundary_follows_both_concepts() -> None:
    scenario = river_stream("sea", n_samples=1000, drift_at=500, n_experiences=4, seed=2)
    assert [exp.domain for exp in scenario.experiences] == ["sea:0", "sea:0", "sea:3", "sea:3"]
    for exp in scenario.experiences:
        assert torch.equal(exp.train_ids, exp.train_ids.sort().values)  # stream order kept
        concept = 0 if exp.domain == "sea:0" else 3
        expected = (exp.train_x[:, 0] + exp.train_x[:, 1] > SEA_THRESHOLD[concept]).long()
        assert torch.equal(exp.train_y, expected)
    chunks = [torch.cat([e.train_ids, e.test_ids]) for e in scenario.experiences]
    assert [(int(c.min()), int(c.max())) for c in chunks] == [
        (0, 249),
        (250, 499),
        (500, 749),
        (750, 999),
    ]


def test_stream_drift_inside_a_chunk_is_the_mixed_experience() -> None:
    scenario = river_stream("sea", n_samples=1000, drift_at=620, n_experiences=4, seed=2)
    assert [exp.domain for exp in scenario.experiences] == ["sea:0", "sea:0", "sea:0->3", "sea:3"]
    mixed = scenario.experiences[2]
    before = mixed.train_ids < 620
    sums = mixed.train_x[:, 0] + mixed.train_x[:, 1]
    assert torch.equal(mixed.train_y[before], (sums[before] > 8.0).long())
    assert torch.equal(mixed.train_y[~before], (sums[~before] > 9.5).long())


def test_gradual_stream_drift_marks_the_chunks_it_overlaps() -> None:
    scenario = river_stream(
        "stagger", n_samples=1200, drift_at=600, drift_width=200, n_experiences=6, seed=0
    )
    assert [exp.domain for exp in scenario.experiences] == [
        "stagger:0",
        "stagger:0",
        "stagger:0->1",
        "stagger:0->1",
        "stagger:1",
        "stagger:1",
    ]
    with pytest.raises(ValueError, match="drift_width"):
        river_stream("sea", n_samples=20_000, drift_at=10_000, drift_width=50)


# --- bad input ----------------------------------------------------------------------------------


def test_unknown_scenario_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown scenario 'split-cifar'.*split-mnist"):
        make_scenario("split-cifar")
    with pytest.raises(ValueError, match="fixes the options \\['transform'\\]"):
        make_scenario("rotated-mnist", transform="noise")


@pytest.mark.parametrize(
    ("build_bad", "option"),
    [
        (lambda: split_classes("digits", n_experiences=3), "n_experiences"),
        (lambda: new_instances_and_classes("digits", n_experiences=4), "n_experiences"),
        (
            lambda: split_classes("digits", n_experiences=4, classes_per_experience=3),
            "classes_per_experience",
        ),
        (lambda: new_instances("digits", n_experiences=200), "n_experiences"),
        (lambda: new_instances("mnist", classes=[3]), "classes"),
        (lambda: split_classes("mnist", classes=[7]), "classes"),
        (lambda: new_instances_and_classes("digits", revisit=0), "revisit"),
        (lambda: split_classes("cifar"), "dataset"),
        (lambda: new_instances("digits", transform="blur"), "transform"),
        (lambda: split_classes("digits", test_fraction=1.0), "test_fraction"),
        (lambda: split_classes("digits", seed=-1), "seed"),
        (lambda: text_domain_shift(n_per_domain=10**6), "n_per_domain"),
        (lambda: river_stream("sea", n_samples=6, n_experiences=5, drift_at=3), "n_samples"),
        (lambda: river_stream("sea", n_samples=100, drift_at=100), "drift_at"),
        (lambda: river_stream("sea", concepts=(0, 7)), "concepts"),
        (lambda: river_stream("electricity"), "name"),
    ],
)
def test_bad_options_raise_naming_the_option(build_bad, option: str) -> None:
    with pytest.raises(ValueError, match=option):
        build_bad()


def _experience(index: int, labels: list[int], value: float, test_value: float) -> Experience:
    y = torch.tensor(labels)
    return Experience(
        index,
        torch.full((len(y), 2), float(value)),
        y,
        torch.full((len(y), 2), float(test_value)),
        y,
        tuple(sorted(set(labels))),
        "d",
    )


def test_empty_experience_is_refused() -> None:
    with pytest.raises(ValueError, match="experience 0: test split is empty"):
        Experience(
            0,
            torch.zeros(2, 2),
            torch.tensor([0, 1]),
            torch.zeros(0, 2),
            torch.zeros(0, dtype=torch.int64),
            (0, 1),
            "d",
        )
    with pytest.raises(ValueError, match="has no experience"):
        Scenario("s", "ni", (), ("a", "b"), (2,), "tabular", 0)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: Scenario(
                "s", "ni", (_experience(0, [0, 2], 1, 2),), ("a", "b"), (2,), "image", 0
            ),
            "labels outside class_names",
        ),
        (
            lambda: Scenario(
                "s", "ni", (_experience(0, [0, 1], 1, 1),), ("a", "b"), (2,), "image", 0
            ),
            "in a train and a test split",
        ),
        (
            lambda: Scenario(
                "s",
                "nc",
                (_experience(0, [0, 1], 1, 2), _experience(1, [1], 3, 4)),
                ("a", "b"),
                (2,),
                "image",
                0,
            ),
            "share classes",
        ),
        (
            lambda: Scenario(
                "s",
                "ni",
                (_experience(0, [0, 1], 1, 2), _experience(1, [1], 3, 4)),
                ("a", "b"),
                (2,),
                "image",
                0,
            ),
            "same classes in every experience",
        ),
        (
            lambda: Scenario(
                "s",
                "offline",
                (_experience(0, [0, 1], 1, 2), _experience(1, [0, 1], 3, 4)),
                ("a", "b"),
                (2,),
                "image",
                0,
            ),
            "exactly one experience",
        ),
        (
            lambda: Scenario("s", "ni", (_experience(0, [0, 1], 1, 2),), ("a",), (2,), "image", 0),
            "at least 2 classes",
        ),
        (
            lambda: Scenario(
                "s", "ni", (_experience(0, [0, 1], 1, 2),), ("a", "b"), (3,), "image", 0
            ),
            "input_shape",
        ),
        (
            lambda: Scenario(
                "s", "xx", (_experience(0, [0, 1], 1, 2),), ("a", "b"), (2,), "image", 0
            ),
            "kind must be one of",
        ),
        (
            lambda: Experience(
                0,
                torch.zeros(2, 2),
                torch.tensor([0, 1]),
                torch.ones(1, 2),
                torch.tensor([0]),
                (0, 1, 2),
                "d",
            ),
            "classes",
        ),
        (
            lambda: Experience(
                0,
                torch.zeros(2, 2, dtype=torch.float64),
                torch.tensor([0, 1]),
                torch.ones(1, 2),
                torch.tensor([0]),
                (0, 1),
                "d",
            ),
            "float32",
        ),
    ],
)
def test_invalid_scenarios_raise_naming_the_problem(make, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_leak_by_source_id_is_refused_even_for_tabular_rows() -> None:
    ids = torch.tensor([0, 1])
    exp = Experience(
        0,
        torch.zeros(2, 2),
        torch.tensor([0, 1]),
        torch.ones(2, 2),
        torch.tensor([0, 1]),
        (0, 1),
        "d",
        train_ids=ids,
        test_ids=ids + 1,
    )
    with pytest.raises(ValueError, match="source ids are in a train and a test split"):
        Scenario("s", "ni", (exp,), ("a", "b"), (2,), "tabular", 0)
