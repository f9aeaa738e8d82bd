"""Sparse updates: selectors, sparse training with residual memory, Deep Partial Updating.

Every registered selector runs through the same contract test; then the selectors' own math,
the residual identity and the changed-entry bookkeeping of :class:`SparseResidualSGD`, the
bit-exact guarantees of :func:`partial_update`, the re-initialisation rule, and an accuracy
sanity check on scikit-learn's digits.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from model_factory.scenarios.datasets import digits
from model_factory.sparse import (
    SELECTORS,
    ReinitRule,
    Selector,
    SparseDelta,
    SparseResidualSGD,
    dense_nbytes,
    fresh_weights,
    k_for,
    make_selector,
    partial_update,
    partial_update_round,
    topk_indices,
)
from model_factory.sparse.delta import changed_positions
from model_factory.sparse.dpu import _FrozenOutsideMask, contribution_mask
from model_factory.sparse.selectors import _PARTITION_ALL_BELOW, _torch_topk
from model_factory.templates import Classifier
from model_factory.training import fit_experience

CONTRACT_CASES = [pytest.param(cls, params, id=f"{name}-{params}")
                  for name, cls in sorted(SELECTORS.items()) for params in cls.unit_test_params()]
SIZES = [1, 3, 17, 1000, _PARTITION_ALL_BELOW + 4321]


def reference_topk(values: Tensor, k: int, magnitude: bool = True) -> list[int]:
    """A full sort by score descending, then by position; the first k, ascending."""
    scores = (values.abs() if magnitude else values).reshape(-1).double().numpy()
    order = np.lexsort((np.arange(len(scores)), -scores))
    return sorted(order[:k].tolist())


class RecordingSelector(Selector):
    """Top-k or random-k that remembers the positions it chose, per call."""

    name = "recording"

    def __init__(self, inner: Selector):
        super().__init__()
        self.inner = inner
        self.chosen: list[Tensor] = []

    def select(self, values: Tensor, k: int) -> Tensor:
        self.chosen.append(self.inner.select(values, k))
        return self.chosen[-1]


def saved_and_loaded(state: dict) -> dict:
    file = io.BytesIO()
    torch.save(state, file)
    file.seek(0)
    return torch.load(file, weights_only=True)


def small_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 24), nn.ReLU(), nn.Linear(24, 3))


def toy_batches(seed: int = 0, n: int = 192) -> list[tuple[Tensor, Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=generator)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    return list(zip(x.split(32), y.split(32), strict=True))


def toy_accuracy(batches: list[tuple[Tensor, Tensor]]) -> Callable[[nn.Module], float]:
    x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    return lambda net: float((net(x).argmax(1) == y).float().mean())


def state_of(net: nn.Module) -> dict[str, Tensor]:
    return {name: t.detach().clone() for name, t in net.state_dict().items()}


@pytest.fixture(scope="module")
def digit_split() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    x, y = digits()
    x, y = torch.tensor(np.asarray(x)), torch.tensor(np.asarray(y))
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order]
    return x[:1200], y[:1200], x[1200:], y[1200:]


# --- contract: every registered selector -----------------------------------------------------

@pytest.mark.parametrize(("cls", "params"), CONTRACT_CASES)
@pytest.mark.parametrize("numel", SIZES)
@pytest.mark.parametrize("ratio", [1.0, 0.01, 0.0001])
def test_selects_exactly_k_distinct_ascending_positions(cls: type[Selector], params: dict,
                                                        numel: int, ratio: float) -> None:
    selector = cls(**params)
    values = torch.randn(numel, generator=torch.Generator().manual_seed(numel))
    k = k_for(numel, ratio)
    assert k == min(numel, max(1, round(ratio * numel)))
    positions = selector.select(values, k)
    assert positions.dtype == torch.int64 and positions.shape == (k,)
    assert torch.equal(positions, torch.unique(positions))  # distinct and ascending
    assert 0 <= int(positions[0]) and int(positions[-1]) < numel


@pytest.mark.parametrize(("cls", "params"), CONTRACT_CASES)
def test_at_least_one_entry_per_tiny_tensor(cls: type[Selector], params: dict) -> None:
    for numel in (1, 2, 5):
        assert k_for(numel, 0.0001) == 1
        assert len(cls(**params).select(torch.randn(numel), k_for(numel, 0.0001))) == 1


@pytest.mark.parametrize(("cls", "params"), CONTRACT_CASES)
def test_same_seed_same_choice_and_state_round_trip(cls: type[Selector], params: dict) -> None:
    values = torch.randn(5000, generator=torch.Generator().manual_seed(1))
    first, second = cls(**params), cls(**params)
    assert torch.equal(first.select(values, 50), second.select(values, 50))
    saved = saved_and_loaded(first.state_dict())
    expected = first.select(values, 50)
    second.load_state_dict(saved)
    assert torch.equal(second.select(values, 50), expected)


@pytest.mark.parametrize(("cls", "params"), CONTRACT_CASES)
def test_rejects_k_out_of_range(cls: type[Selector], params: dict) -> None:
    for k in (0, 11):
        with pytest.raises(ValueError, match="k must be in 1..10"):
            cls(**params).select(torch.randn(10), k)


def test_registry_and_ratio_checks() -> None:
    assert set(SELECTORS) == {"topk", "randomk"}
    assert make_selector("topk").name == "topk"
    for ratio in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="ratio must be in"):
            k_for(100, ratio)


# --- top-k and random-k ----------------------------------------------------------------------

@pytest.mark.parametrize("numel", [10, 5000, _PARTITION_ALL_BELOW + 1, 100_000])
@pytest.mark.parametrize("k", [1, 7, 300])
@pytest.mark.parametrize("magnitude", [True, False])
def test_topk_picks_the_largest_with_ties_to_lowest_positions(numel: int, k: int,
                                                              magnitude: bool) -> None:
    k = min(k, numel)
    generator = torch.Generator().manual_seed(numel + k)
    # Few distinct values: many ties at the k-th place, in both code paths (sampled and not).
    values = torch.randint(-20, 21, (numel,), generator=generator).float() / 4
    expected = reference_topk(values, k, magnitude)
    assert topk_indices(values, k, magnitude).tolist() == expected
    assert _torch_topk(values, k, magnitude).tolist() == expected  # the non-CPU path


def test_topk_on_continuous_values_matches_torch_topk_set() -> None:
    values = torch.randn(400_000, generator=torch.Generator().manual_seed(3))
    for k in (40, 4000, 40_000):
        expected = torch.sort(torch.topk(values.abs(), k).indices).values
        assert torch.equal(make_selector("topk").select(values, k), expected)


def test_topk_accepts_any_shape_dtype_and_grad() -> None:
    weight = nn.Parameter(torch.tensor([[1.0, -4.0], [3.0, 0.5]]))
    assert topk_indices(weight, 2).tolist() == [1, 2]
    assert topk_indices(weight.detach().half(), 1).tolist() == [1]


def test_randomk_is_uniform_and_seed_dependent() -> None:
    for numel, k in ((20, 8), (200, 5)):  # a permutation and the draw-until-distinct path
        selector = make_selector("randomk", seed=0)
        counts = torch.zeros(numel)
        draws = 3000
        for _ in range(draws):
            counts[selector.select(torch.zeros(numel), k)] += 1
        expected = draws * k / numel
        assert float((counts - expected).abs().max()) < 5 * expected ** 0.5
    values = torch.zeros(10_000)
    assert not torch.equal(make_selector("randomk", seed=0).select(values, 100),
                           make_selector("randomk", seed=1).select(values, 100))


# --- sparse training with residual memory ----------------------------------------------------

def one_backward(net: nn.Module, batch: tuple[Tensor, Tensor]) -> None:
    net.zero_grad()
    nn.functional.cross_entropy(net(batch[0]), batch[1]).backward()


@pytest.mark.parametrize("selector", sorted(SELECTORS))
@pytest.mark.parametrize("ratio", [0.01, 0.001, 0.0001])
def test_residual_identity_and_no_change_outside_the_selection(selector: str,
                                                               ratio: float) -> None:
    net = small_net()
    recorder = RecordingSelector(make_selector(selector, seed=1))
    optimizer = SparseResidualSGD(net.named_parameters(), lr=0.3, ratio=ratio,
                                  selector=recorder)
    for batch in toy_batches(n=96):
        one_backward(net, batch)
        before = {n: p.detach().clone() for n, p in net.named_parameters()}
        residual_before = {n: optimizer.state[p]["residual"].clone() if p in optimizer.state
                           else torch.zeros_like(p) for n, p in net.named_parameters()}
        accumulated = {n: residual_before[n].add(p.grad, alpha=0.3)
                       for n, p in net.named_parameters()}
        recorder.chosen.clear()
        optimizer.step()
        for (name, p), chosen in zip(net.named_parameters(), recorder.chosen, strict=True):
            assert len(chosen) == k_for(p.numel(), ratio)
            selected = torch.zeros(p.numel(), dtype=torch.bool)
            selected[chosen] = True
            selected = selected.reshape(p.shape)
            residual = optimizer.state[p]["residual"]
            applied = before[name] - p.detach()
            torch.testing.assert_close(applied + residual, accumulated[name], rtol=0,
                                       atol=1e-6)
            assert torch.equal(p.detach()[~selected], before[name][~selected])
            assert torch.equal(residual[~selected], accumulated[name][~selected])
            assert not residual[selected].any()


def test_changed_since_mark_is_the_bitwise_diff_of_the_weights() -> None:
    net = small_net()
    optimizer = SparseResidualSGD(net.named_parameters(), lr=0.2, ratio=0.05)
    batches = toy_batches()
    for batch in batches[:2]:
        one_backward(net, batch)
        optimizer.step()
    optimizer.mark()
    assert optimizer.changed_count() == 0
    marked = state_of(net)
    for batch in batches * 2:
        one_backward(net, batch)
        optimizer.step()
    changed = optimizer.changed_since_mark()
    for name, p in net.named_parameters():
        assert torch.equal(changed[name], changed_positions(marked[name], p.detach()))
    delta = SparseDelta.between(marked, state_of(net))
    assert delta.changed == optimizer.changed_count() > 0
    assert all(torch.equal(delta.positions[n], changed[n]) for n in delta.positions)


def test_changed_keys_by_position_without_names() -> None:
    net = small_net()
    optimizer = SparseResidualSGD(net.parameters(), lr=0.1, ratio=0.1)
    one_backward(net, toy_batches()[0])
    optimizer.step()
    assert sorted(optimizer.changed_since_mark()) == ["0", "1", "2", "3"]


@pytest.mark.parametrize("selector", sorted(SELECTORS))
def test_state_dict_resumes_exactly(selector: str) -> None:
    batches = toy_batches()
    net = small_net()
    optimizer = SparseResidualSGD(net.named_parameters(), lr=0.2, ratio=0.05,
                                  selector=selector, seed=4)
    for batch in batches[:3]:
        one_backward(net, batch)
        optimizer.step()
    saved_net, saved_optimizer = state_of(net), saved_and_loaded(optimizer.state_dict())
    assert optimizer.residual_norm() > 0
    for batch in batches[3:]:
        one_backward(net, batch)
        optimizer.step()

    resumed = small_net(seed=9)
    resumed.load_state_dict(saved_net)
    other = SparseResidualSGD(resumed.named_parameters(), lr=0.2, ratio=0.05,
                              selector=selector, seed=123)
    other.load_state_dict(saved_optimizer)
    assert all(state["changed"].dtype == torch.bool for state in other.state.values())
    for batch in batches[3:]:
        one_backward(resumed, batch)
        other.step()
    for name, tensor in state_of(net).items():
        assert torch.equal(resumed.state_dict()[name], tensor)
    assert optimizer.changed_count() == other.changed_count()


def test_stats_time_selection_within_the_step() -> None:
    net = small_net()
    optimizer = SparseResidualSGD(net.parameters(), lr=0.1, ratio=0.1)
    batch = toy_batches()[0]

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(net(batch[0]), batch[1])
        loss.backward()
        return loss

    for _ in range(3):
        assert optimizer.step(closure) is not None
    stats = optimizer.stats
    per_step = sum(k_for(p.numel(), 0.1) for p in net.parameters())
    assert stats["steps"] == 3 and stats["selected"] == 3 * per_step
    assert 0 < stats["select_s"] < stats["step_s"] and stats["closure_s"] > 0
    optimizer.reset_stats()
    assert optimizer.stats["steps"] == 0


def test_rejects_bad_settings() -> None:
    params = small_net().parameters()
    with pytest.raises(ValueError, match="lr must be > 0"):
        SparseResidualSGD(params, lr=0.0, ratio=0.1)
    with pytest.raises(ValueError, match="ratio must be in"):
        SparseResidualSGD(small_net().parameters(), lr=0.1, ratio=0.0)
    with pytest.raises(ValueError, match="unknown selector"):
        SparseResidualSGD(small_net().parameters(), lr=0.1, ratio=0.1, selector="bottomk")


def test_classifier_fit_trains_with_a_given_optimizer(digit_split) -> None:
    x_train, y_train, x_test, y_test = digit_split
    model = Classifier("mlp", (1, 8, 8), [str(c) for c in range(10)],
                       params={"hidden": [64]}, seed=0)
    own_state = model._optimizer.state_dict()
    sparse = SparseResidualSGD(model.net.named_parameters(), lr=0.5, ratio=0.01)
    before = state_of(model.net)
    report = model.fit(x_train, y_train, epochs=10, batch_size=32, optimizer=sparse)
    steps = report["batches"]
    assert sparse.stats["steps"] == steps == 380
    per_step = sum(k_for(p.numel(), 0.01) for p in model.net.parameters())
    delta = SparseDelta.between(before, state_of(model.net))
    assert delta.changed == sparse.changed_count() <= steps * per_step
    assert model._optimizer.state_dict() == own_state  # the model's own Adam never stepped
    accuracy = model.accuracy(x_test, y_test)
    assert accuracy > 0.9  # measured 0.958 (dense Adam, same epochs: 0.936)


# --- Deep Partial Updating -------------------------------------------------------------------

def assert_unmasked_equal(state: dict[str, Tensor], reference: dict[str, Tensor],
                          mask: dict[str, Tensor]) -> None:
    for name, keep in mask.items():
        assert torch.equal(state[name][~keep], reference[name][~keep]), name


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
@pytest.mark.parametrize("ratio", [0.01, 0.05, 0.1])
def test_dpu_leaves_unmasked_weights_bit_identical(optimizer: str, ratio: float) -> None:
    net, batches = small_net(), toy_batches()
    deployed = state_of(net)
    update = partial_update(net, deployed, batches, ratio, epochs_full=3, epochs_finetune=3,
                            lr=0.05, optimizer=optimizer)
    assert update.updated and update.reinit_seed is None
    total = sum(p.numel() for p in net.parameters())
    assert update.total == total
    assert update.masked == max(1, round(ratio * total))
    assert sum(int(m.sum()) for m in update.mask.values()) == update.masked
    assert_unmasked_equal(update.state, deployed, update.mask)
    assert_unmasked_equal(state_of(net), deployed, update.mask)
    assert 0 < update.delta.changed <= update.masked
    for name, positions in update.delta.positions.items():
        assert bool(update.mask[name].reshape(-1)[positions].all())
    rebuilt = update.delta.apply(deployed)
    assert all(torch.equal(rebuilt[n], update.state[n]) for n in deployed)
    assert set(update.seconds) == {"full", "select", "finetune", "validate", "total"}


def test_sparse_finetuning_moves_only_masked_weights() -> None:
    net, batches = small_net(), toy_batches()
    start = {n: p.detach().clone() for n, p in net.named_parameters()}
    generator = torch.Generator().manual_seed(0)
    mask = {n: torch.rand(p.shape, generator=generator) < 0.2 for n, p in net.named_parameters()}
    # Adam with weight decay would move every weight; the hooks keep the rest in place.
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05, weight_decay=0.1)
    fit_experience(net, batches, _FrozenOutsideMask(net, mask, start), optimizer, epochs=3)
    for name, p in net.named_parameters():
        assert torch.equal(p.detach()[~mask[name]], start[name][~mask[name]])
        assert bool((p.detach()[mask[name]] != start[name][mask[name]]).all())


def test_contribution_mask_mixes_normalised_global_and_local() -> None:
    start = {"a": torch.zeros(4), "b": torch.zeros(2)}
    full = {"a": torch.tensor([3.0, 0.0, 0.0, 1.0]), "b": torch.tensor([0.0, 2.0])}
    local = {"a": torch.tensor([0.0, 5.0, 0.0, 0.0]), "b": torch.tensor([0.0, 1.0])}
    only_global = contribution_mask(start, full, local, ratio=0.34, global_weight=1.0)
    assert only_global["a"].tolist() == [True, False, False, False]
    assert only_global["b"].tolist() == [False, True]
    only_local = contribution_mask(start, full, local, ratio=0.17, global_weight=0.0)
    assert only_local["a"].tolist() == [False, True, False, False]
    assert not only_local["b"].any()
    # Mixed: global shares 4.5/7, 0/7, 0, 0.5/7 and 2/7; local 0, 5/6, 0, 0 and 1/6.
    mixed = contribution_mask(start, full, local, ratio=0.5)
    assert mixed["a"].tolist() == [True, True, False, False]
    assert mixed["b"].tolist() == [False, True]
    tiny = contribution_mask(start, full, local, ratio=0.0001)
    assert sum(int(m.sum()) for m in tiny.values()) == 1


def test_no_update_when_validation_does_not_improve() -> None:
    net, batches = small_net(), toy_batches()
    deployed = state_of(net)
    update = partial_update(net, deployed, batches, 0.1, epochs_full=2, epochs_finetune=2,
                            lr=0.05, validate=lambda _: 0.5)
    assert not update.updated and update.reason.startswith("no update")
    assert update.delta.changed == 0 and update.delta.nbytes() == 0
    assert update.accuracy_before == update.accuracy_after == 0.5
    for name, tensor in deployed.items():
        assert torch.equal(update.state[name], tensor)
        assert torch.equal(net.state_dict()[name], tensor)


def test_validated_update_ships_the_best_candidate() -> None:
    net, batches = small_net(), toy_batches()
    deployed, accuracy = state_of(net), toy_accuracy(batches)
    update = partial_update(net, deployed, batches, 0.1, epochs_full=5, epochs_finetune=3,
                            lr=0.05, validate=accuracy)
    assert update.updated
    assert update.accuracy_after > update.accuracy_before
    assert update.accuracy_after == pytest.approx(accuracy(net.eval()))


def test_fresh_weights_are_reproducible_and_leave_the_global_rng() -> None:
    net = small_net()
    torch.manual_seed(5)
    expected_draw = torch.rand(3)
    torch.manual_seed(5)
    first = fresh_weights(net, seed=11)
    assert torch.equal(torch.rand(3), expected_draw)
    second = fresh_weights(net, seed=11)
    assert all(torch.equal(first[n], second[n]) for n in first)
    assert not torch.equal(first["0.weight"], net.state_dict()["0.weight"])
    assert not torch.equal(fresh_weights(net, seed=12)["0.weight"], first["0.weight"])


def test_reinit_rule_triggers_when_the_data_has_doubled() -> None:
    rule = ReinitRule(samples_at_last=400, seed=3)
    assert [rule.due(n) for n in (400, 799, 800, 1200)] == [False, False, True, True]
    net, batches = small_net(), toy_batches()
    deployed = state_of(net)
    options = {"epochs_full": 2, "epochs_finetune": 1, "lr": 0.05}

    not_due = partial_update_round(net, deployed, batches, 0.1, samples_seen=799, rule=rule,
                                   **options)
    assert not_due.reinit_seed is None and rule.samples_at_last == 400
    assert_unmasked_equal(not_due.state, deployed, not_due.mask)

    due = partial_update_round(net, deployed, batches, 0.1, samples_seen=800, rule=rule,
                               **options)
    assert due.updated and due.reinit_seed == 3 and rule.samples_at_last == 800
    fresh = fresh_weights(net, 3)
    assert_unmasked_equal(due.state, fresh, due.mask)  # the device regenerates these
    rebuilt = due.delta.apply(fresh)
    assert all(torch.equal(rebuilt[n], due.state[n]) for n in fresh)
    assert not rule.due(1599) and rule.due(1600)


def test_rejected_reinit_falls_back_to_updating_the_deployed_weights() -> None:
    net, batches = small_net(), toy_batches()
    deployed = state_of(net)
    rule = ReinitRule(samples_at_last=100, seed=7)

    def prefers_deployed_start(model: nn.Module) -> float:
        # Small moves from the deployed weights score best, the far fresh start worst.
        gap = sum(float((model.state_dict()[n] - deployed[n]).abs().sum()) for n in deployed)
        return 0.5 if gap == 0 else 0.6 if gap < 10 else 0.4

    update = partial_update_round(net, deployed, batches, 0.05, samples_seen=1000, rule=rule,
                                  epochs_full=2, epochs_finetune=1, lr=0.01,
                                  validate=prefers_deployed_start)
    assert update.updated and update.reinit_seed is None
    assert rule.samples_at_last == 100  # the re-initialisation was not shipped
    assert_unmasked_equal(update.state, deployed, update.mask)


def test_partial_update_checks_its_arguments() -> None:
    net, batches = small_net(), toy_batches()
    deployed = state_of(net)
    with pytest.raises(ValueError, match="at least one training batch"):
        partial_update(net, deployed, [], 0.1)
    with pytest.raises(ValueError, match="ratio must be in"):
        partial_update(net, deployed, batches, 0.0)
    with pytest.raises(ValueError, match="unknown optimizer"):
        partial_update(net, deployed, batches, 0.1, optimizer="lbfgs")
    with pytest.raises(TypeError, match="nn.Module"):
        partial_update(object(), deployed, batches, 0.1)


def test_dpu_on_a_classifier_reaches_a_reasonable_accuracy(digit_split) -> None:
    x_train, y_train, x_test, y_test = digit_split
    model = Classifier("mlp", (1, 8, 8), [str(c) for c in range(10)],
                       params={"hidden": [64]}, seed=0)
    deployed = state_of(model.net)
    batches = list(zip(x_train.split(32), y_train.split(32), strict=True))
    x_val, y_val = x_train[:300], y_train[:300]
    update = partial_update(model, deployed, batches, 0.1, epochs_full=10, epochs_finetune=10,
                            lr=0.01, validate=lambda net: float(
                                (net(x_val).argmax(1) == y_val).float().mean()))
    assert update.updated and update.masked == round(0.1 * model.parameter_count())
    assert_unmasked_equal(state_of(model.net), deployed, update.mask)
    assert model.accuracy(x_test, y_test) > 0.9  # measured 0.95 (10% of the weights moved)


# --- what an update ships --------------------------------------------------------------------

def test_sparse_delta_bytes_and_exact_rebuild() -> None:
    old = {"big": torch.zeros(100_000), "small": torch.zeros(1000), "count": torch.tensor(3)}
    new = {name: t.clone() for name, t in old.items()}
    new["big"][[1, 99_999]] = torch.tensor([1.5, -0.0])  # -0.0 differs from 0.0 bitwise
    new["small"][:900] = 1.0
    delta = SparseDelta.between(old, new)
    assert delta.changed == 902 and delta.total == 101_001
    # big: 2 values + the gaps 1 and 99,998 as 1- and 3-byte varints; small: 900 values + a
    # 125-byte bitmap (900 one-byte gaps would take more).
    assert delta.nbytes() == (2 * 4 + 1 + 3) + (900 * 4 + 125)
    assert dense_nbytes(new) == 101_000 * 4 + 8
    rebuilt = delta.apply(old)
    assert all(torch.equal(rebuilt[n], new[n]) for n in new)
    assert str(rebuilt["big"][99_999].item()) == "-0.0" and float(old["big"].sum()) == 0
    with pytest.raises(ValueError, match="differ in their tensors"):
        SparseDelta.between(old, {"big": new["big"]})
