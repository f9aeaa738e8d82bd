"""The CL loss library: each strategy against hand-computed values, then one contract test that
every registered strategy passes (so a new one is tested the moment it is registered)."""

from __future__ import annotations

import io
import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model_factory.strategies import STRATEGIES, CLStrategy, make_strategy
from model_factory.strategies.ewc import EWC
from model_factory.strategies.lwf import LwF
from model_factory.strategies.mas import MAS
from model_factory.strategies.si import SI
from model_factory.training import fit_experience

X = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0], [1.0, 1.0, 1.0], [-2.0, 0.5, 0.0]],
                 dtype=torch.float64)
Y = torch.tensor([0, 1, 1, 0])
EXP1 = [(X[:2], Y[:2])]
EXP2 = [(X[2:], Y[2:])]


def linear(out_features: int = 2, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(3, out_features).double()


def params_of(model: nn.Module) -> dict[str, Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def shift(model: nn.Module, seed: int, scale: float = 0.3) -> None:
    """Move every parameter by a random offset."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator, dtype=p.dtype))


def quadratic(importance: dict[str, Tensor], anchor: dict[str, Tensor], model: nn.Module) -> float:
    current = params_of(model)
    return sum(float((importance[n] * (current[n] - anchor[n]).square()).sum())
               for n in importance)


def linear_fisher(model: nn.Linear, x: Tensor, y: Tensor) -> dict[str, Tensor]:
    """Closed form for softmax(Wx + b): d(-log p_y)/dW = (p - e_y) x^T, d/db = p - e_y."""
    with torch.no_grad():
        error = torch.softmax(model(x), dim=1) - F.one_hot(y, model.out_features).double()
    return {"weight": (error[:, :, None] * x[:, None, :]).square().mean(0),
            "bias": error.square().mean(0)}


def penalty_of(strategy: CLStrategy, model: nn.Module, x: Tensor = X) -> float:
    return strategy.penalty(model, x, model(x)).item()


# -- EWC ---------------------------------------------------------------------------------------
def test_ewc_penalty_is_half_lambda_fisher_weighted_distance() -> None:
    model = linear()
    ewc = EWC(lambda_=3.0)
    assert penalty_of(ewc, model) == 0.0
    ewc.after_experience(model, [(X[:2], Y[:2]), (X[2:], Y[2:])])
    fisher, anchor = linear_fisher(model, X, Y), params_of(model)
    assert penalty_of(ewc, model) == 0.0
    shift(model, seed=1)
    assert penalty_of(ewc, model) == pytest.approx(3.0 / 2 * quadratic(fisher, anchor, model),
                                                   rel=1e-12)


def test_ewc_fisher_matches_per_sample_autograd_on_a_hidden_layer() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    ewc = EWC(lambda_=1.0, fisher_samples=3)
    ewc.after_experience(model, [(X[:2], Y[:2]), (X[2:], Y[2:])])
    expected = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    for x, y in zip(X[:3], Y[:3], strict=True):  # fisher_samples=3: the first three samples only
        loss = F.cross_entropy(model(x[None]), y[None])
        for (name, _), g in zip(model.named_parameters(),
                                torch.autograd.grad(loss, list(model.parameters())), strict=True):
            expected[name] += g.square() / 3
    fisher, _ = ewc.consolidated[0]
    for name in expected:
        torch.testing.assert_close(fisher[name], expected[name])


def test_ewc_separate_mode_sums_one_penalty_per_experience() -> None:
    model = linear()
    ewc = EWC(lambda_=2.0)
    ewc.after_experience(model, EXP1)
    fisher1, anchor1 = linear_fisher(model, *EXP1[0]), params_of(model)
    shift(model, seed=1)
    ewc.after_experience(model, EXP2)
    fisher2, anchor2 = linear_fisher(model, *EXP2[0]), params_of(model)
    shift(model, seed=2)
    assert len(ewc.consolidated) == 2
    expected = quadratic(fisher1, anchor1, model) + quadratic(fisher2, anchor2, model)
    assert penalty_of(ewc, model) == pytest.approx(2.0 / 2 * expected, rel=1e-12)


def test_ewc_online_mode_decays_the_old_fisher_with_gamma() -> None:
    model = linear()
    ewc = EWC(lambda_=2.0, mode="online", gamma=0.5)
    ewc.after_experience(model, EXP1)
    fisher1 = linear_fisher(model, *EXP1[0])
    shift(model, seed=1)
    ewc.after_experience(model, EXP2)
    fisher2, anchor2 = linear_fisher(model, *EXP2[0]), params_of(model)
    shift(model, seed=2)
    assert len(ewc.consolidated) == 1
    merged = {n: 0.5 * fisher1[n] + fisher2[n] for n in fisher1}
    assert penalty_of(ewc, model) == pytest.approx(quadratic(merged, anchor2, model), rel=1e-12)


def test_ewc_needs_samples_to_estimate_the_fisher() -> None:
    with pytest.raises(ValueError, match="loader is empty"):
        EWC().after_experience(linear(), [])


# -- SI ----------------------------------------------------------------------------------------
def task_grad(model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Tensor]:
    loss = F.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    return {name: g for (name, _), g in zip(model.named_parameters(), grads, strict=True)}


def test_si_importance_of_one_sgd_step() -> None:
    model, lr, xi = linear(), 0.1, 0.01
    g = task_grad(model, *EXP1[0])
    si = SI(c=1.0, xi=xi)
    fit_experience(model, EXP1, si, torch.optim.SGD(model.parameters(), lr=lr))
    for name, grad in g.items():  # w = -g * step = lr g^2; Omega = w / (step^2 + xi)
        step = -lr * grad
        torch.testing.assert_close(si.omega[name], -grad * step / (step.square() + xi))
    assert penalty_of(si, model) == 0.0


def test_si_path_integral_uses_the_task_gradient_not_the_penalty_gradient() -> None:
    model, lr, c, xi = linear(), 0.1, 2.0, 0.01
    si = SI(c=c, xi=xi)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    fit_experience(model, EXP1, si, optimizer)
    omega1, anchor1 = dict(si.omega), params_of(model)
    shift(model, seed=1)  # away from the anchor: the penalty has a gradient
    start = params_of(model)
    g_task = task_grad(model, *EXP2[0])
    fit_experience(model, EXP2, si, optimizer)
    for name, grad in g_task.items():
        step = -lr * (grad + 2 * c * omega1[name] * (start[name] - anchor1[name]))
        expected = omega1[name] - grad * step / (step.square() + xi)
        torch.testing.assert_close(si.omega[name], expected)


def test_si_importance_is_non_negative_and_accumulates_on_a_convex_problem() -> None:
    # Separable least squares: loss = mean_k (w_k - y_k)^2 with one-hot inputs, plain SGD with
    # a step small enough that no coordinate overshoots, so each step lowers each coordinate's
    # task loss and every path-integral term is >= 0.
    torch.manual_seed(0)
    model = nn.Linear(3, 1, bias=False).double()
    eye = torch.eye(3, dtype=torch.float64)
    si = SI(c=1.0, xi=0.1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for targets in ([1.0, 2.0, -1.0], [-1.0, 0.0, 2.0]):
        previous = dict(si.omega)
        data = [(eye, torch.tensor(targets, dtype=torch.float64)[:, None])]
        fit_experience(model, data, si, optimizer, epochs=20, loss_fn=F.mse_loss)
        assert (si.omega["weight"] > 0).all()
        if previous:
            assert (si.omega["weight"] >= previous["weight"]).all()
            assert (si.omega["weight"] > previous["weight"]).any()


def test_si_penalty_is_zero_at_the_anchor_and_linear_in_c() -> None:
    model = linear()
    si = SI(c=1.0)
    fit_experience(model, EXP1, si, torch.optim.SGD(model.parameters(), lr=0.1), epochs=3)
    assert penalty_of(si, model) == 0.0
    stronger = SI(c=3.0)
    stronger.load_state_dict(si.state_dict())
    shift(model, seed=1)
    assert penalty_of(si, model) > 0
    assert penalty_of(stronger, model) == pytest.approx(3 * penalty_of(si, model), rel=1e-12)
    assert penalty_of(si, model) == pytest.approx(quadratic(si.omega, si.anchor, model),
                                                  rel=1e-12)


def test_si_hooks_outside_an_experience_are_an_error() -> None:
    with pytest.raises(RuntimeError, match="before_experience"):
        SI().before_step(linear())


# -- LwF ---------------------------------------------------------------------------------------
def distillation(old_logits: Tensor, new_logits: Tensor, alpha: float, t: float) -> float:
    p = torch.softmax(old_logits / t, dim=1)
    q = torch.softmax(new_logits / t, dim=1)
    return alpha * t**2 * float((p * (p.log() - q.log())).sum(dim=1).mean())


def test_lwf_penalty_is_t_squared_kl_to_the_old_outputs() -> None:
    model = linear()
    lwf = LwF(alpha=0.7, temperature=2.0)
    assert penalty_of(lwf, model) == 0.0
    lwf.after_experience(model, EXP1)
    old_logits = model(X).detach()
    assert penalty_of(lwf, model) == 0.0
    shift(model, seed=1)
    expected = distillation(old_logits, model(X).detach(), alpha=0.7, t=2.0)
    assert expected > 0
    assert penalty_of(lwf, model) == pytest.approx(expected, rel=1e-12)


def test_lwf_distils_the_old_units_of_a_grown_head_and_reloads_into_it() -> None:
    model = linear()
    lwf = LwF(alpha=1.0, temperature=3.0)
    lwf.after_experience(model, EXP1)
    old_logits = model(X).detach()
    grown = linear(out_features=4, seed=5)  # two more classes
    with torch.no_grad():
        grown.weight[:2] = model.weight
        grown.bias[:2] = model.bias
    assert penalty_of(lwf, grown) == 0.0
    shift(grown, seed=1)
    expected = distillation(old_logits, grown(X).detach()[:, :2], alpha=1.0, t=3.0)
    assert penalty_of(lwf, grown) == pytest.approx(expected, rel=1e-12)

    buffer = io.BytesIO()
    torch.save(lwf.state_dict(), buffer)
    buffer.seek(0)
    restored = LwF(alpha=1.0, temperature=3.0)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    # Rebuilt on the grown model, with the stored two-unit head.
    assert penalty_of(restored, grown) == pytest.approx(expected, rel=1e-12)
    assert restored.old_model is not None and restored.old_model(X).shape == (4, 2)


def test_lwf_rejects_a_model_with_fewer_outputs() -> None:
    lwf = LwF()
    lwf.after_experience(linear(out_features=3), EXP1)
    with pytest.raises(ValueError, match="2 output units, fewer than the 3"):
        penalty_of(lwf, linear())


# -- MAS ---------------------------------------------------------------------------------------
def linear_mas_importance(model: nn.Linear, x: Tensor) -> dict[str, Tensor]:
    """For f(x) = Wx + b: d||f||^2/dW = 2 f x^T, d||f||^2/db = 2 f."""
    with torch.no_grad():
        f = model(x)
    return {"weight": (2 * f[:, :, None] * x[:, None, :]).abs().mean(0),
            "bias": (2 * f).abs().mean(0)}


def test_mas_importance_is_the_mean_absolute_gradient_of_the_squared_output_norm() -> None:
    model = linear()
    mas = MAS(lambda_=0.5)
    mas.after_experience(model, [(X[:2], Y[:2]), (X[2:], Y[2:])])
    expected, anchor = linear_mas_importance(model, X), params_of(model)
    for name in expected:
        torch.testing.assert_close(mas.omega[name], expected[name])
    assert penalty_of(mas, model) == 0.0
    shift(model, seed=1)
    assert penalty_of(mas, model) == pytest.approx(0.5 * quadratic(expected, anchor, model),
                                                   rel=1e-12)


def test_mas_merges_importance_with_alpha() -> None:
    model = linear()
    mas = MAS(alpha=0.25)
    mas.after_experience(model, EXP1)
    omega1 = linear_mas_importance(model, EXP1[0][0])
    shift(model, seed=1)
    mas.after_experience(model, EXP2)
    omega2, anchor2 = linear_mas_importance(model, EXP2[0][0]), params_of(model)
    for name in omega1:
        torch.testing.assert_close(mas.omega[name], 0.25 * omega1[name] + 0.75 * omega2[name])
    torch.testing.assert_close(mas.anchor["weight"], anchor2["weight"])


def test_quadratic_penalty_covers_the_old_units_of_a_grown_head() -> None:
    model = linear()
    mas = MAS(alpha=0.5)
    mas.after_experience(model, EXP1)
    omega1, anchor1 = linear_mas_importance(model, EXP1[0][0]), params_of(model)
    grown = linear(out_features=3, seed=5)
    with torch.no_grad():
        grown.weight[:2] = model.weight
        grown.bias[:2] = model.bias
        grown.weight[2] += 1.0  # the new unit is free
    assert penalty_of(mas, grown) == 0.0
    shift(grown, seed=1)
    old_units = {n: p.detach()[:2] for n, p in grown.named_parameters()}
    expected = sum(float((omega1[n] * (old_units[n] - anchor1[n]).square()).sum())
                   for n in omega1)
    assert penalty_of(mas, grown) == pytest.approx(expected, rel=1e-12)
    mas.after_experience(grown, EXP2)  # the old importance is zero-padded to the new shape
    omega2 = linear_mas_importance(grown, EXP2[0][0])
    padded = torch.zeros(3, 3, dtype=torch.float64)
    padded[:2] = omega1["weight"]
    torch.testing.assert_close(mas.omega["weight"], 0.5 * padded + 0.5 * omega2["weight"])


# -- every registered strategy -----------------------------------------------------------------
CASES = [pytest.param(name, params, id=f"{name}-{i}")
         for name, cls in sorted(STRATEGIES.items())
         for i, params in enumerate(cls.unit_test_params())]


def experiences() -> list[list[tuple[Tensor, Tensor]]]:
    """Two experiences of 32 samples in batches of 8: classes {0, 1}, then {1, 2} shifted."""
    generator = torch.Generator().manual_seed(0)
    out = []
    for first_class, offset in ((0, 0.0), (1, 2.0)):
        x = torch.randn(32, 4, generator=generator) + offset
        y = (x[:, 0] > offset).long() + first_class
        out.append([(x[i:i + 8], y[i:i + 8]) for i in range(0, 32, 8)])
    return out


@pytest.mark.parametrize("name, params", CASES)
def test_strategy_contract(name: str, params: dict) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    strategy = make_strategy(name, **params)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    for loader in experiences():
        stats = fit_experience(model, loader, strategy, optimizer, epochs=2)
        assert stats["epochs"] == 2 and stats["batches"] == 8
        assert math.isfinite(stats["final_loss"])
        assert math.isfinite(stats["mean_penalty"]) and stats["mean_penalty"] >= 0
    shift(model, seed=3, scale=0.1)
    x = loader[0][0]
    penalty = strategy.penalty(model, x, model(x))
    assert penalty.shape == () and torch.isfinite(penalty) and penalty.item() >= 0

    state = strategy.state_dict()
    assert all(type(t) is Tensor for t in state.values())
    if state:  # a strategy that remembers something penalises a model that moved
        assert penalty.item() > 0
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    fresh = make_strategy(name, **params)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert fresh.penalty(model, x, model(x)).item() == pytest.approx(penalty.item(), rel=1e-6)


@pytest.mark.parametrize("name, params", CASES)
def test_unknown_parameters_are_named(name: str, params: dict) -> None:
    with pytest.raises(ValueError, match="bogus_knob"):
        make_strategy(name, **params, bogus_knob=1)


def test_unknown_strategy_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown strategy 'nope'") as error:
        make_strategy("nope")
    for name in ("naive", "ewc", "si", "lwf", "mas"):
        assert name in str(error.value)


@pytest.mark.parametrize("name, params, message", [
    ("ewc", {"lambda": 0.0}, "lambda must be > 0"),
    ("ewc", {"lambda_": -1.0}, "lambda must be > 0"),
    ("ewc", {"lambda": float("nan")}, "lambda must be > 0"),
    ("ewc", {"lambda": 1.0, "lambda_": 1.0}, "give 'lambda' or 'lambda_', not both"),
    ("ewc", {"mode": "offline"}, "mode must be one of separate, online"),
    ("ewc", {"mode": "online", "gamma": 0.0}, "gamma must be in (0, 1]"),
    ("ewc", {"mode": "online", "gamma": 1.5}, "gamma must be in (0, 1]"),
    ("ewc", {"gamma": 0.5}, "gamma applies to mode 'online' only"),
    ("ewc", {"fisher_samples": 0}, "fisher_samples must be an integer >= 1"),
    ("si", {"c": 0.0}, "c must be > 0"),
    ("si", {"xi": -0.1}, "xi must be > 0"),
    ("lwf", {"alpha": 0.0}, "alpha must be > 0"),
    ("lwf", {"temperature": 0.0}, "temperature must be > 0"),
    ("mas", {"lambda": "big"}, "lambda must be > 0"),
    ("mas", {"alpha": 1.0}, "alpha must be in [0, 1)"),
])
def test_bad_parameter_values_are_named_with_their_range(name: str, params: dict,
                                                         message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        make_strategy(name, **params)


# -- the training loop -------------------------------------------------------------------------
def test_fit_experience_stops_on_a_non_finite_loss_before_stepping() -> None:
    model = linear()
    nan_inputs = torch.full_like(X, float("nan"))
    before = params_of(model)
    with pytest.raises(ValueError, match=r"non-finite loss at epoch 0, batch 1: task loss nan"):
        fit_experience(model, [(X, Y), (nan_inputs, Y)], EWC(),
                       torch.optim.SGD(model.parameters(), lr=0.1))
    after = params_of(model)  # the first batch stepped, the NaN one did not
    assert all(torch.isfinite(p).all() for p in after.values())
    assert any(not torch.equal(before[n], after[n]) for n in before)
