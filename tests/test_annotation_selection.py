"""Active-learning selection and the labeling budget (real redis-server for the budget)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import redis

from cl_server.annotation.budget import LabelingBudget
from cl_server.annotation.selection import (
    SELECTORS,
    Candidate,
    make_selector,
    probabilities,
    uncertainty,
)


def ids(chosen: list[Candidate]) -> list[str]:
    return [c.request_id for c in chosen]


def test_probabilities_keep_a_distribution_and_softmax_logits() -> None:
    assert probabilities(np.array([0.2, 0.3, 0.5])).tolist() == [0.2, 0.3, 0.5]
    p = probabilities(np.array([2.0, -1.0, 0.5]))  # logits
    assert p.sum() == pytest.approx(1.0) and p.argmax() == 0 and (p > 0).all()
    assert p[0] / p[2] == pytest.approx(np.exp(1.5))


def test_the_three_uncertainty_measures_rank_as_defined() -> None:
    # "close": two classes nearly tied; "flat": no class sure, but a clear top.
    close, flat = np.array([0.50, 0.49, 0.01]), np.array([0.40, 0.30, 0.30])
    pool = [Candidate("close", close), Candidate("flat", flat),
            Candidate("sure", np.array([0.98, 0.01, 0.01])), Candidate("unknown", None)]
    assert ids(make_selector("least-confidence").select(pool, 1)) == ["flat"]  # 0.6 > 0.5
    assert ids(make_selector("margin").select(pool, 1)) == ["close"]  # 0.01 < 0.10
    assert ids(make_selector("entropy").select(pool, 1)) == ["flat"]
    assert uncertainty(flat, "entropy") == pytest.approx(-(0.4 * np.log(0.4)
                                                          + 2 * 0.3 * np.log(0.3)))
    for measure in ("least-confidence", "margin", "entropy"):
        ranked = ids(make_selector(measure).select(pool, 10))
        assert ranked[-2:] == ["sure", "unknown"]  # an unknown answer is the least useful
        assert len(ranked) == 4


def test_random_is_reproducible_and_bounded() -> None:
    pool = [Candidate(str(i)) for i in range(50)]
    first = ids(make_selector("random", seed=3).select(pool, 10))
    assert first == ids(make_selector("random", seed=3).select(pool, 10))
    assert len(set(first)) == 10 and first != [str(i) for i in range(10)]
    assert len(make_selector("random", seed=3).select(pool, 500)) == 50
    assert make_selector("random").select(pool, 0) == []


def test_class_balanced_gives_a_rare_class_its_share() -> None:
    rng = np.random.default_rng(0)
    common = [Candidate(f"c{i}", rng.dirichlet([5, 1, 1]), predicted="0") for i in range(90)]
    rare = [Candidate(f"r{i}", rng.dirichlet([1, 1, 5]), predicted="7") for i in range(10)]
    chosen = make_selector("class-balanced").select(common + rare, 10)
    assert sum(c.predicted == "7" for c in chosen) == 5
    assert sum(c.predicted == "0" for c in chosen) == 5
    # Within a class, the least confident first.
    picked = [c for c in chosen if c.predicted == "0"]
    worst = sorted(common, key=lambda c: probabilities(c.scores).max())[:5]
    assert ids(picked) == ids(worst)
    # A class with fewer candidates than its share leaves the rest to the others.
    chosen = make_selector("class-balanced").select(common + rare[:2], 10)
    assert sum(c.predicted == "7" for c in chosen) == 2 and len(chosen) == 10


def test_drift_focused_takes_the_drifted_window_first() -> None:
    pool = [Candidate(f"s{i}", np.array([0.5 + i / 100, 0.5 - i / 100]), served_ms=1000 * i)
            for i in range(20)]
    chosen = make_selector("drift-focused", drift_window=(12_000, 15_000)).select(pool, 6)
    assert ids(chosen[:4]) == ["s12", "s13", "s14", "s15"]  # inside, most uncertain first
    assert ids(chosen[4:]) == ["s0", "s1"]  # then the rest by uncertainty
    assert ids(make_selector("drift-focused").select(pool, 2)) == ["s0", "s1"]


def test_unknown_names_are_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown selection strategy 'smart'.*entropy"):
        make_selector("smart")
    with pytest.raises(ValueError, match="unknown uncertainty measure"):
        uncertainty(np.array([0.5, 0.5]), "variance")
    assert all(make_selector(name).select([], 3) == [] for name in SELECTORS)


def test_budget_slides_per_hour_and_per_day_and_pays_once(redis_url: str) -> None:
    cache = redis.Redis.from_url(redis_url)
    clock = {"t": 1_000_000.0}
    budget = LabelingBudget(cache, "svc-budget", per_hour=5, per_day=8,
                            clock=lambda: clock["t"])
    assert budget.spend([f"a{i}" for i in range(3)]) == ["a0", "a1", "a2"]
    assert budget.spend(["a2", "a3", "a4", "a5"]) == ["a3", "a4"]  # a2 is paid; 2 left
    assert budget.available() == 0 and budget.sent("a4") and not budget.sent("a5")
    clock["t"] += 3601  # an hour later the hour window is free, the day holds 5 of 8
    assert budget.available() == 3
    assert budget.spend([f"b{i}" for i in range(5)]) == ["b0", "b1", "b2"]
    clock["t"] += 3600
    assert budget.available() == 0  # the day's 8 are spent
    clock["t"] += 24 * 3600
    assert budget.available() == 5
    with pytest.raises(ValueError):
        LabelingBudget(cache, "svc-budget", per_hour=-1)
    cache.close()


def test_budget_holds_under_racing_spenders(redis_url: str) -> None:
    cache = redis.Redis.from_url(redis_url)
    budget = LabelingBudget(cache, "svc-race", per_hour=50)
    granted: list[list[str]] = []

    def spender(n: int) -> None:
        mine = LabelingBudget(redis.Redis.from_url(redis_url), "svc-race", per_hour=50)
        granted.append(mine.spend([f"{n}-{i}" for i in range(30)]))

    threads = [threading.Thread(target=spender, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(len(g) for g in granted) == 50 and budget.available() == 0
    cache.close()
