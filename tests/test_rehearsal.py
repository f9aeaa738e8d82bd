"""Rehearsal buffers, replay batches and proactive-training batches.

Every registered buffer runs through the same contract test with each of its
``unit_test_params()``; the algorithm-specific tests check the sampling statistics.
Samples carry their stream position in input column 0, so held samples can be identified.
"""

from __future__ import annotations

import io

import pytest
import torch
from scipy.stats import chisquare

from cl_server.config.schema import BUFFERS as CONFIG_KINDS
from model_factory.proactive import History, proactive_batch, proactive_step_batches
from model_factory.rehearsal import BUFFERS, RehearsalBuffer, make_buffer
from model_factory.rehearsal.class_balanced import ClassBalancedBuffer
from model_factory.rehearsal.mixing import mixed_batches
from model_factory.rehearsal.reservoir import ReservoirBuffer

CONTRACT_CASES = [pytest.param(cls, params, id=f"{name}-{params}")
                  for name, cls in sorted(BUFFERS.items()) for params in cls.unit_test_params()]


def stream(n: int, start: int = 0, n_classes: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` samples numbered ``start..start+n-1`` (input column 0), labels cycling classes."""
    ids = torch.arange(start, start + n)
    return torch.stack([ids.float(), -ids.float()], dim=1), ids % n_classes


def ids_of(inputs: torch.Tensor) -> list[int]:
    return inputs[:, 0].long().tolist()


def offer(buffer: RehearsalBuffer, sizes: list[int], start: int = 0) -> int:
    """Offer consecutive batches of the given sizes; returns the next sample number."""
    for size in sizes:
        buffer.add(*stream(size, start))
        start += size
    return start


def saved_and_loaded(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    file = io.BytesIO()
    torch.save(state, file)
    file.seek(0)
    return torch.load(file, weights_only=True)


# --- contract: every registered buffer -------------------------------------------------------

def test_every_config_kind_but_none_is_registered() -> None:
    assert set(CONFIG_KINDS) - {"none"} == set(BUFFERS)


@pytest.mark.parametrize(("cls", "params"), CONTRACT_CASES)
def test_holds_min_of_capacity_and_offered(cls: type[RehearsalBuffer], params: dict) -> None:
    buffer = cls(**params)
    assert len(buffer) == 0
    offered = 0
    for size in [1, 3, 0, 17, 40, 100, 1]:
        buffer.add(*stream(size, offered))
        offered += size
        inputs, targets = buffer.tensors()
        assert len(buffer) == len(inputs) == len(targets) == min(buffer.capacity, offered)
        held = ids_of(inputs)
        assert len(set(held)) == len(held)
        assert set(held) <= set(range(offered))
        assert torch.equal(targets, torch.tensor(held) % 5)


@pytest.mark.parametrize(("cls", "params"), CONTRACT_CASES)
def test_sample_is_distinct_held_and_reproducible(cls: type[RehearsalBuffer],
                                                  params: dict) -> None:
    buffer = cls(**params)
    offer(buffer, [30, 70])
    held = set(ids_of(buffer.tensors()[0]))
    for n in [1, len(buffer) // 2, len(buffer), len(buffer) + 5]:
        inputs, targets = buffer.sample(n, torch.Generator().manual_seed(7))
        drawn = ids_of(inputs)
        assert len(drawn) == len(targets) == min(n, len(buffer))
        assert len(set(drawn)) == len(drawn)
        assert set(drawn) <= held
        again, _ = buffer.sample(n, torch.Generator().manual_seed(7))
        assert torch.equal(inputs, again)


@pytest.mark.parametrize(("cls", "params"), CONTRACT_CASES)
def test_same_seed_same_contents(cls: type[RehearsalBuffer], params: dict) -> None:
    first, second = cls(**params, seed=3), cls(**params, seed=3)
    offer(first, [25, 80])
    offer(second, [25, 80])
    assert all(torch.equal(a, b) for a, b in zip(first.tensors(), second.tensors(), strict=True))


@pytest.mark.parametrize("offered_before", [0, 20, 200])
@pytest.mark.parametrize(("cls", "params"), CONTRACT_CASES)
def test_state_round_trip_continues_identically(cls: type[RehearsalBuffer], params: dict,
                                                offered_before: int) -> None:
    original = cls(**params, seed=11)
    start = offer(original, [offered_before])
    restored = cls(**params, seed=12345)
    restored.load_state_dict(saved_and_loaded(original.state_dict()))
    assert len(restored) == len(original)
    for buffer in (original, restored):
        offer(buffer, [13, 150, 1], start)
    assert len(restored) == len(original)
    for a, b in zip(original.tensors(), restored.tensors(), strict=True):
        assert torch.equal(a, b)
    draws = [buffer.sample(5, torch.Generator().manual_seed(1))[0]
             for buffer in (original, restored)]
    assert torch.equal(*draws)


@pytest.mark.parametrize(("cls", "params"), CONTRACT_CASES)
def test_rejects_bad_capacity_and_mismatched_batches(cls: type[RehearsalBuffer],
                                                     params: dict) -> None:
    for capacity in (0, -3):
        with pytest.raises(ValueError, match="capacity must be at least 1"):
            cls(**{**params, "capacity": capacity})
    buffer = cls(**params)
    inputs, targets = stream(10)
    with pytest.raises(ValueError, match="differ in length: 10 inputs, 9 targets"):
        buffer.add(inputs, targets[:9])
    buffer.add(inputs, targets)
    with pytest.raises(ValueError, match="do not match the held inputs"):
        buffer.add(torch.zeros(4, 3), targets[:4])


def test_make_buffer() -> None:
    buffer = make_buffer("class_balanced", capacity=12, seed=4)
    assert isinstance(buffer, ClassBalancedBuffer)
    assert (buffer.capacity, buffer.seed) == (12, 4)
    with pytest.raises(ValueError, match="'none' means no rehearsal"):
        make_buffer("none", capacity=12)
    with pytest.raises(ValueError, match="known: class_balanced, reservoir"):
        make_buffer("herding", capacity=12)


# --- reservoir ----------------------------------------------------------------------------

def test_reservoir_keeps_every_sample_with_equal_probability() -> None:
    runs, length, capacity = 2000, 100, 10
    inclusions = torch.zeros(length)
    for seed in range(runs):
        buffer = ReservoirBuffer(capacity, seed=seed)
        offer(buffer, [4, 9, 27, 60])  # several batches, one of them crossing the capacity
        inclusions[ids_of(buffer.tensors()[0])] += 1
    assert inclusions.sum() == runs * capacity
    expected = torch.full((length,), runs * capacity / length)
    assert chisquare(inclusions.numpy(), expected.numpy()).pvalue > 0.001


def test_reservoir_does_not_depend_on_batching() -> None:
    whole, one_by_one = ReservoirBuffer(8, seed=5), ReservoirBuffer(8, seed=5)
    offer(whole, [300])
    offer(one_by_one, [1] * 300)
    assert torch.equal(whole.tensors()[0], one_by_one.tensors()[0])
    assert whole.seen == one_by_one.seen == 300


# --- class balanced -----------------------------------------------------------------------

def imbalanced(order: str) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.tensor([0] * 900 + [1] * 100 + [2] * 50)
    if order == "shuffled":
        labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]
    return torch.arange(len(labels)).float().unsqueeze(1), labels


@pytest.mark.parametrize("order", ["by_class", "shuffled"])
@pytest.mark.parametrize("capacity", [30, 31, 100, 150])
def test_class_balanced_equalises_imbalanced_classes(order: str, capacity: int) -> None:
    buffer = ClassBalancedBuffer(capacity, seed=1)
    inputs, labels = imbalanced(order)
    for part in range(0, len(labels), 64):
        buffer.add(inputs[part:part + 64], labels[part:part + 64])
    counts = torch.bincount(buffer.tensors()[1], minlength=3)
    assert counts.sum() == capacity
    assert counts.max() - counts.min() <= 1
    assert counts.tolist() == sorted(counts.tolist(), reverse=True)  # remainder: small labels


def test_class_balanced_new_class_takes_from_largest() -> None:
    buffer = ClassBalancedBuffer(12, seed=0)
    buffer.add(torch.zeros(20, 1), torch.tensor([0] * 18 + [1] * 2))
    assert torch.bincount(buffer.tensors()[1]).tolist() == [10, 2]
    buffer.add(torch.zeros(2, 1), torch.tensor([2, 2]))
    assert torch.bincount(buffer.tensors()[1]).tolist() == [8, 2, 2]


def test_class_balanced_rare_class_keeps_all_its_samples() -> None:
    buffer = ClassBalancedBuffer(30, seed=0)
    inputs, labels = imbalanced("shuffled")
    keep = (labels != 2) | (torch.cumsum(labels == 2, 0) <= 3)
    buffer.add(inputs[keep], labels[keep])
    counts = torch.bincount(buffer.tensors()[1]).tolist()
    assert counts[2] == 3 and sorted(counts[:2]) == [13, 14]


def test_class_balanced_is_a_reservoir_within_a_class() -> None:
    runs, length, capacity = 1000, 50, 10
    inclusions = torch.zeros(length)
    for seed in range(runs):
        buffer = ClassBalancedBuffer(capacity, seed=seed)
        buffer.add(torch.arange(length).float().unsqueeze(1), torch.zeros(length, dtype=torch.long))
        inclusions[ids_of(buffer.tensors()[0])] += 1
    expected = torch.full((length,), runs * capacity / length)
    assert chisquare(inclusions.numpy(), expected.numpy()).pvalue > 0.001


def test_class_balanced_needs_integer_labels() -> None:
    with pytest.raises(ValueError, match="integer class labels"):
        ClassBalancedBuffer(5).add(torch.zeros(3, 2), torch.zeros(3))


# --- replay batches -----------------------------------------------------------------------

def filled_buffer(n: int) -> ReservoirBuffer:
    buffer = ReservoirBuffer(capacity=max(n, 1))
    if n:
        offer(buffer, [n])
    return buffer


@pytest.mark.parametrize(("batch_size", "replay_ratio", "stored"), [
    (8, 0.25, 30), (10, 0.5, 30), (10, 0.5, 3), (16, 0.0, 30), (5, 0.5, 0), (1, 0.0, 30)])
def test_mixed_batches_composition(batch_size: int, replay_ratio: float, stored: int) -> None:
    buffer = filled_buffer(stored)
    held = set(ids_of(buffer.tensors()[0])) if stored else set()
    new_inputs, new_targets = stream(53, start=1000)
    n_replay = round(batch_size * replay_ratio)
    seen_new: list[int] = []
    batches = list(mixed_batches(new_inputs, new_targets, buffer, batch_size, replay_ratio,
                                 torch.Generator().manual_seed(0)))
    for k, (inputs, targets, n_new) in enumerate(batches):
        ids = ids_of(inputs)
        assert len(ids) == len(targets) == n_new + min(n_replay, stored)
        assert torch.equal(targets, torch.tensor(ids) % 5)
        assert all(i >= 1000 for i in ids[:n_new])
        assert set(ids[n_new:]) <= held and len(set(ids[n_new:])) == len(ids) - n_new
        if k < len(batches) - 1:
            assert n_new == batch_size - n_replay
        seen_new += ids[:n_new]
    assert sorted(seen_new) == list(range(1000, 1053))


def test_mixed_batches_are_reproducible() -> None:
    buffer = filled_buffer(30)
    new_inputs, new_targets = stream(40, start=1000)

    def epoch(seed: int) -> list[torch.Tensor]:
        return [inputs for inputs, _, _ in mixed_batches(new_inputs, new_targets, buffer, 8, 0.5,
                                                         torch.Generator().manual_seed(seed))]

    assert all(torch.equal(a, b) for a, b in zip(epoch(3), epoch(3), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(epoch(3), epoch(4), strict=True))


@pytest.mark.parametrize(("batch_size", "replay_ratio"), [(8, 1.0), (8, -0.1), (10, 0.99), (0, 0)])
def test_mixed_batches_rejects_settings_without_new_samples(batch_size: int,
                                                            replay_ratio: float) -> None:
    inputs, targets = stream(4)
    with pytest.raises(ValueError):
        next(mixed_batches(inputs, targets, filled_buffer(5), batch_size, replay_ratio,
                           torch.Generator()))


# --- proactive training -------------------------------------------------------------------

@pytest.mark.parametrize(("t", "b"), [(8, 32), (5, 12), (1, 4), (16, 16)])
def test_proactive_batches_follow_algorithm_1(t: int, b: int) -> None:
    n = 103
    stream_inputs, stream_targets = stream(n)
    history = History()
    start = 0
    for inputs, targets, n_new in proactive_step_batches(stream_inputs, stream_targets, t, b,
                                                         torch.Generator().manual_seed(0),
                                                         history):
        assert len(history) == start  # the previous chunks, none of the current one
        assert n_new == min(t, n - start)
        ids = ids_of(inputs)
        assert ids[:n_new] == list(range(start, start + n_new))
        old = ids[n_new:]
        assert len(old) == min(b - n_new, start)
        assert len(set(old)) == len(old) and all(i < start for i in old)
        assert torch.equal(targets, torch.tensor(ids) % 5)
        if start >= b - t:
            assert len(ids) == b
        start += n_new
    assert start == len(history) == n
    assert torch.equal(history.tensors()[0], stream_inputs)


def test_online_training_has_no_history_samples() -> None:
    inputs, targets = stream(40)
    pre = History()
    pre.append(*stream(100, start=1000))
    for batch_inputs, _, n_new in proactive_step_batches(inputs, targets, 8, 8, torch.Generator(),
                                                         pre):
        assert len(batch_inputs) == n_new == 8
        assert all(i < 1000 for i in ids_of(batch_inputs))


def test_proactive_starts_from_a_given_history() -> None:
    history = History()
    history.append(*stream(50, start=1000))
    inputs, _, n_new = next(proactive_step_batches(*stream(10), 4, 16, torch.Generator(), history))
    assert (len(inputs), n_new) == (16, 4)
    assert all(i >= 1000 for i in ids_of(inputs)[4:])


def test_proactive_is_reproducible() -> None:
    def steps(seed: int) -> list[torch.Tensor]:
        return [inputs for inputs, _, _ in proactive_step_batches(
            *stream(60), 6, 20, torch.Generator().manual_seed(seed))]

    assert all(torch.equal(a, b) for a, b in zip(steps(2), steps(2), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(steps(2), steps(5), strict=True))


def test_proactive_rejects_bad_trigger_sizes() -> None:
    inputs, targets = stream(10)
    for t, b in [(0, 8), (9, 8)]:
        with pytest.raises(ValueError, match="trigger_size"):
            next(proactive_step_batches(inputs, targets, t, b, torch.Generator()))
    with pytest.raises(ValueError, match="1 to batch_size=4 new samples"):
        proactive_batch(inputs, targets, History(), 4, torch.Generator())
    with pytest.raises(ValueError, match="differ in length"):
        History().append(inputs, targets[:3])
