"""Interference-aware scheduling: policies, the governor pacing real training, placement.

The SLO test closes a real loop: a real training run (a Lightning fit of an MLP on sklearn's
digits) is paced by the governor, and the latency signal it reads is synthetic but caused by
that training: a sampler thread measures the share of the last second this process spent on
the CPU and turns it into an inference p95 (idle latency times 1 + 2 x busy share, i.e. 3x idle
at full speed, as the paper measured; the SLO is 2x idle). Unpaced, the signal breaks the SLO;
paced, it stays within it while the training still finishes.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Self

import pytest
import redis
import torch
from sklearn.datasets import load_digits

from cl_server.config import parse_config
from cl_server.config.loader import ConfigError
from cl_server.scheduling import Governor, Immediate, OffPeak, Signals, SloAware
from cl_server.scheduling.factory import champion_p95, make_policy, process_limits
from cl_server.scheduling.policy import Decision
from model_factory.sparse import partial_update
from model_factory.templates import Classifier
from plugin.proxy.metrics import publish_latency

IDLE_MS = 10.0
ROOT = Path(__file__).resolve().parents[1]


def quiet_log(message: str, level: str = "INFO") -> None:
    pass


class Scripted:
    """Readings from a list (the last one repeats)."""

    def __init__(self, values: list[float | None]):
        self.values = deque(values)

    def read(self) -> Signals:
        value = self.values.popleft() if len(self.values) > 1 else self.values[0]
        return Signals(p95_ms=value, requests=50 if value is not None else 0)


class Background:
    """A thread running ``_run`` for the duration of a ``with`` block (``_stop`` ends it)."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class CpuCausedLatency(Background):
    """A synthetic p95 caused by this process's CPU use over the last second (see the module
    doc); a thread samples it every 50 ms and keeps every reading."""

    def __init__(self, idle_ms: float = IDLE_MS, window_s: float = 1.0):
        super().__init__()
        self.idle_ms = idle_ms
        self.window_s = window_s
        self.samples: deque[tuple[float, float]] = deque()
        self.readings: list[tuple[float, float]] = []
        self.current = idle_ms

    def _run(self) -> None:
        while not self._stop.is_set():
            now, cpu = time.monotonic(), time.process_time()
            self.samples.append((now, cpu))
            while len(self.samples) > 2 and now - self.samples[1][0] >= self.window_s:
                self.samples.popleft()
            first_t, first_cpu = self.samples[0]
            if now - first_t > 0.2:
                busy = min(1.0, max(0.0, (cpu - first_cpu) / (now - first_t)))
                self.current = self.idle_ms * (1 + 2 * busy)
                self.readings.append((now, self.current))
            self._stop.wait(0.05)

    def read(self) -> Signals:
        return Signals(p95_ms=round(self.current, 3), requests=100)


def digits_model() -> tuple[Classifier, torch.Tensor, torch.Tensor]:
    x, y = load_digits(return_X_y=True)
    inputs = torch.tensor(x / 16.0, dtype=torch.float32)
    model = Classifier("mlp", (64,), [str(c) for c in range(10)],
                       params={"hidden": [256, 256]}, seed=3)
    return model, inputs, torch.tensor(y)


@pytest.fixture
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- policies --------------------------------------------------------------------------------

def test_slo_aware_follows_the_level_of_its_readings_not_one_reading() -> None:
    clock = {"t": 0.0}
    policy = SloAware(target_ms=10.0, min_duty=0.1, start_duty=0.5, window_s=5.0,
                      adjust_every_s=1.5, clock=lambda: clock["t"])

    def feed(p95: float | None, seconds: float = 0.25, requests: int = 50) -> Decision:
        decision = Decision("run")
        for _ in range(round(seconds / 0.25)):  # a reading every quarter second
            clock["t"] += 0.25
            decision = policy.after_step(0.2, Signals(p95_ms=p95, requests=requests))
        return decision

    feed(8.0, 2.0)  # below 90% of the SLO for 1.5 s: +0.1
    assert policy.duty == pytest.approx(0.6)
    feed(13.0)  # one noisy reading: the median of the period stays at 8
    decision = feed(8.0, 1.25)
    assert policy.duty == pytest.approx(0.7) and decision.action == "pace"
    assert decision.seconds == pytest.approx(0.2 * 0.3 / 0.7)
    feed(9.5, 1.5)  # within the SLO but above 90% of it: the duty holds
    assert policy.duty == pytest.approx(0.7)
    # Readings at the same duty keep counting (up to window_s): it halves once most of them
    # are above the SLO.
    feed(12.0, 1.5)
    assert policy.duty == pytest.approx(0.7)
    feed(12.0, 0.5)
    assert policy.duty == pytest.approx(0.35) and policy.level_ms == 12.0
    feed(12.0, 4.5)
    assert policy.duty == 0.1  # never below min_duty
    feed(8.0, 3.25)  # each period judged on its own readings: +0.1 twice
    assert policy.level_ms == 8.0 and policy.duty == pytest.approx(0.3)
    # A reading above 1.5x the SLO pauses only when the level is above the SLO too.
    assert feed(16.0).action == "pace"  # the period's median: 8
    decision = feed(16.0, 1.0)
    assert decision.action == "pause" and "level 16 ms" in decision.reason
    assert not policy.resume(Signals(p95_ms=11.0, requests=50))
    assert policy.resume(Signals(p95_ms=10.0, requests=50))
    assert policy.resume(Signals(p95_ms=None))  # no traffic: nothing to protect
    # Too few requests, or none, are no signal: the duty is kept.
    before, breaches = policy.duty, policy.breaches
    feed(500.0, 2.0, requests=2)
    feed(None, 2.0, requests=0)
    assert policy.duty == before and policy.breaches == breaches
    assert policy.state()["level_p95_ms"] == 16.0


def test_short_steps_are_paced_in_chunks_not_after_every_step() -> None:
    """Steps of 3 ms at duty 0.5: a sleep once 0.1 s (duty x the 0.2 s quantum) was trained,
    of what that training owes; in between the job is paced but trains on."""
    policy = SloAware(target_ms=10.0, start_duty=0.5, clock=iter(range(10_000)).__next__)
    decisions = [policy.after_step(0.003, Signals(p95_ms=9.5, requests=50))
                 for _ in range(1000)]
    assert {d.action for d in decisions} == {"pace"} and policy.duty == 0.5
    sleeps = [d.seconds for d in decisions if d.seconds > 0]
    assert len(sleeps) == 29  # 3 s trained in chunks of 34 steps (0.102 s)
    assert all(s == pytest.approx(0.102) for s in sleeps)
    assert sum(sleeps) == pytest.approx(1000 * 0.003, abs=0.11)  # duty 0.5: as long as trained
    assert all(d.reason.startswith("duty 0.50") for d in decisions)


def test_a_relative_slo_follows_a_baseline_that_moved_without_the_job() -> None:
    clock = {"t": 0.0}

    def feed(policy: SloAware, p95: float, seconds: float) -> None:
        for _ in range(round(seconds / 0.25)):
            clock["t"] += 0.25
            policy.after_step(0.2, Signals(p95_ms=p95, requests=50))

    relative = SloAware(min_duty=0.25, adjust_every_s=1.5, clock=lambda: clock["t"])
    relative.set_target(6.0, ratio=1.2)  # measured 5 ms before the job
    feed(relative, 8.0, 4.5)  # 1 -> 0.5 -> 0.25: the least duty
    assert relative.duty == 0.25 and relative.target_ms == 6.0
    feed(relative, 8.0, 4.5)  # three periods at the least duty, still 8 ms: not the job
    assert relative.target_ms == pytest.approx(9.6) and relative.state()["rebaselines"] == 1
    feed(relative, 8.0, 3.0)  # 8 < 0.9 x 9.6: the job speeds up again
    assert relative.duty == pytest.approx(0.45)
    # An absolute SLO is a contract: it never moves.
    absolute = SloAware(6.0, min_duty=0.25, adjust_every_s=1.5, clock=lambda: clock["t"])
    feed(absolute, 8.0, 15.0)
    assert absolute.target_ms == 6.0 and absolute.duty == 0.25
    assert absolute.state()["rebaselines"] == 0


def test_slo_aware_starts_at_full_duty_and_never_paces_within_the_slo() -> None:
    policy = SloAware(target_ms=10.0, clock=iter(range(100)).__next__)
    decisions = [policy.after_step(0.1, Signals(p95_ms=9.0, requests=50)) for _ in range(20)]
    assert {d.action for d in decisions} == {"run"} and policy.duty == 1.0


def test_slo_aware_admission_waits_while_the_slo_is_already_broken() -> None:
    clock = {"t": 0.0}
    policy = SloAware(target_ms=10.0, min_duty=0.1, max_wait_s=30,
                      clock=lambda: clock["t"])
    now = datetime(2026, 1, 1, 12)
    assert policy.admit(Signals(p95_ms=14.0, requests=50), now).action == "wait"
    assert policy.admit(Signals(p95_ms=9.0, requests=50), now).action == "run"
    # An SLO that stays broken holds the job at most max_wait_s; it then starts slowly.
    clock["t"] = 29.0
    assert policy.admit(Signals(p95_ms=14.0, requests=50), now).action == "wait"
    clock["t"] = 30.0
    late = policy.admit(Signals(p95_ms=14.0, requests=50), now)
    assert late.action == "run" and "after 30 s" in late.reason and policy.duty == 0.1
    assert "no SLO target" in SloAware().admit(Signals(p95_ms=9.0, requests=50), now).reason


def test_off_peak_windows_wrap_midnight() -> None:
    policy = OffPeak(["22:00-06:00", "12:30-13:00"])
    assert policy.admit(None, datetime(2026, 1, 1, 23, 59)).action == "run"
    assert policy.admit(None, datetime(2026, 1, 2, 5, 59)).action == "run"
    assert policy.admit(None, datetime(2026, 1, 1, 12, 45)).action == "run"
    late = policy.admit(None, datetime(2026, 1, 1, 6, 0))
    assert late.action == "wait" and "12:30" in late.reason
    assert policy.next_start(datetime(2026, 1, 1, 13, 0)) == datetime(2026, 1, 1, 22, 0)
    assert policy.next_start(datetime(2026, 1, 1, 22, 30)) == datetime(2026, 1, 2, 12, 30)


BASE = """
name: svc
engine: {kind: triton, url: "http://127.0.0.1:8000", model_name: svc}
model: {template: mlp, input: {shape: [4]}, classes: ["a", "b"]}
"""


def test_scheduling_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"scheduling.off_peak_windows\[0\]: '25:00-01:00' "
                       "is not a time window HH:MM-HH:MM"):
        parse_config(BASE + "scheduling: {policy: off-peak, off_peak_windows: ['25:00-01:00']}",
                     env={})
    with pytest.raises(ConfigError, match="scheduling.off_peak_windows: policy off-peak needs "
                       "at least one window"):
        parse_config(BASE + "scheduling: {policy: off-peak}", env={})
    with pytest.raises(ConfigError, match="scheduling.policy: unknown scheduling policy 'slo'"):
        parse_config(BASE + "scheduling: {policy: slo}", env={})
    with pytest.raises(ConfigError, match=r"scheduling.worker_labels\[0\]"):
        parse_config(BASE + "scheduling: {worker_labels: ['GPU!']}", env={})
    config = parse_config(BASE + "scheduling: {policy: slo-aware, slo: {p95_ms: 40}}", env={})
    policy = make_policy(config.scheduling)
    assert isinstance(policy, SloAware) and policy.target_ms == 40
    threads, nice, idle = process_limits(config.scheduling)
    assert nice == 19 and not idle and threads is not None and threads >= 1
    assert policy.max_wait_s == config.scheduling.max_pause_s
    assert isinstance(make_policy(parse_config(BASE, env={}).scheduling), Immediate)


def test_champion_p95_reads_the_proxys_longer_window_figure(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    publish_latency(client, "svc-p95", {3: {"p50_ms": 2.0, "p95_ms": 7.5, "p99_ms": 9.0,
                                            "count": 500, "rps": 50.0}})
    assert champion_p95(client, "svc-p95", 3) == 7.5
    assert champion_p95(client, "svc-p95", 4) is None
    assert champion_p95(client, "svc-p95", None) is None
    client.close()
    assert process_limits(parse_config(BASE, env={}).scheduling) == (None, None, False)


# -- the governor ---------------------------------------------------------------------------

def train_paced(governor: Governor | None, epochs: int = 6) -> tuple[Classifier, float]:
    model, x, y = digits_model()
    start = time.monotonic()
    if governor is not None:
        governor.admit()
    model.fit(x, y, epochs=epochs, batch_size=32,
              between_steps=governor.between_steps if governor else None)
    return model, time.monotonic() - start


def within(readings: list[tuple[float, float]], start: float, end: float, slo: float
           ) -> float:
    window = [value for at, value in readings if start <= at <= end]
    assert len(window) >= 10, "too few readings to judge"
    return sum(value <= slo for value in window) / len(window)


def test_slo_aware_governor_keeps_a_cpu_caused_latency_within_the_slo(one_thread: None
                                                                       ) -> None:
    slo = 2 * IDLE_MS
    # Epochs by this machine's speed: about 5 s of unpaced training, 4 s' worth paced.
    _, three_s = train_paced(None, epochs=3)
    alone_epochs = max(10, math.ceil(5.0 / (three_s / 3)))
    paced_epochs = max(6, math.ceil(4.0 / (three_s / 3)))
    # Unpaced, the training breaks the SLO most of the time (the test can fail).
    with CpuCausedLatency() as signal:
        time.sleep(1.2)  # a quiet second: the signal reads idle
        begin = time.monotonic()
        _, alone_s = train_paced(None, epochs=alone_epochs)
        unpaced = within(signal.readings, begin + 1.0, time.monotonic(), slo)
    assert unpaced < 0.5, f"unpaced training kept the SLO {unpaced:.0%} of the time"

    with CpuCausedLatency() as signal:
        time.sleep(1.2)
        governor = Governor(SloAware(slo, min_duty=0.05), signal, log=quiet_log,
                            read_every_s=0.1)
        begin = time.monotonic()
        _, paced_s = train_paced(governor, epochs=paced_epochs)
        # The policy starts at full speed and halves its duty every 1.5 s while the level
        # of its readings is above the SLO: judged once it had time to find its duty.
        kept = within(signal.readings, begin + 4.0, time.monotonic(), slo)
    summary = governor.summary()
    assert summary["steps"] == paced_epochs * 57  # every step ran: 1797 samples / 32 a batch
    assert summary["paced_s"] > 0 and summary["breaches"] >= 1
    assert kept >= 0.9, f"paced training kept the SLO only {kept:.0%} of the time"
    # It finishes, at a bounded cost per epoch: the SLO (2x idle) allows a duty of about 0.5,
    # which AIMD holds between about 0.25 and 0.5 (2-4x the time, plus the first halvings);
    # held at min_duty it would take 20x.
    assert paced_s / paced_epochs < 6 * alone_s / alone_epochs


def test_pauses_and_pacing_leave_the_trained_weights_bit_identical(one_thread: None) -> None:
    reference, _ = train_paced(None, epochs=2)
    # High readings pause the job twice, then pacing; every state change is logged.
    lines: list[str] = []
    source = Scripted([5.0, 20.0, 20.0, 5.0] + [9.0] * 20 + [30.0] * 25 + [8.0] + [9.0])
    governor = Governor(SloAware(10.0), source, log=lambda m, level="INFO": lines.append(m),
                        read_every_s=0.0)
    paused, _ = train_paced(governor, epochs=2)
    assert governor.pauses >= 2 and governor.seconds["paused"] > 0
    assert any("paused" in line for line in lines) and any("resumed" in line for line in lines)
    for name, tensor in reference.net.state_dict().items():
        assert torch.equal(tensor, paused.net.state_dict()[name]), name


def test_partial_update_paced_equals_unpaced(one_thread: None) -> None:
    model, x, y = digits_model()
    deployed = {k: v.clone() for k, v in model.net.state_dict().items()}
    batches = [(x[i:i + 64], y[i:i + 64]) for i in range(0, 640, 64)]
    plain = partial_update(Classifier.from_state(model.state()), deployed, batches, 0.05,
                           epochs_full=1, epochs_finetune=1, seed=1)
    governor = Governor(SloAware(10.0), Scripted([30.0, 5.0, 9.0]), log=quiet_log,
                        read_every_s=0.0)
    paced = partial_update(Classifier.from_state(model.state()), deployed, batches, 0.05,
                           epochs_full=1, epochs_finetune=1, seed=1,
                           between_steps=governor.between_steps)
    assert governor.steps == 20 and governor.pauses == 1
    for name, tensor in plain.state.items():
        assert torch.equal(tensor, paced.state[name]), name


def run_steps(governor: Governor, clock: dict[str, float], steps: int, step_s: float
              ) -> list[tuple[float, float]]:
    """``steps`` training steps of ``step_s`` on a fake clock; (training, held) seconds after
    each."""
    governor.admit()
    account = []
    for _ in range(steps):
        clock["t"] += step_s
        governor.between_steps()
        held = governor.seconds["paced"] + governor.seconds["paused"]
        account.append((governor.seconds["training"], held))
    return account


@pytest.mark.parametrize("budget", [2.0, 1.5])
def test_the_slowdown_budget_bounds_pacing_and_pauses_whatever_the_signal(budget: float
                                                                          ) -> None:
    """A latency that stays far above the SLO (inference slowed by something else) would hold
    the job at its least duty and in pauses; the budget keeps its wall time within
    ``budget`` x its training time, at every step."""
    def governed(max_slowdown: float | None) -> tuple[Governor, list[tuple[float, float]]]:
        clock = {"t": 0.0}
        governor = Governor(SloAware(10.0, min_duty=0.05, clock=lambda: clock["t"]),
                            Scripted([100.0]), log=quiet_log, read_every_s=0.0,
                            max_pause_s=2.0, max_slowdown=max_slowdown,
                            clock=lambda: clock["t"],
                            sleep=lambda s: clock.__setitem__("t", clock["t"] + s))
        return governor, run_steps(governor, clock, 200, 0.05)

    unbounded, account = governed(None)
    training, held = account[-1]
    assert held > 10 * training  # without a budget the job barely trains (the test can fail)
    assert unbounded.summary()["budget_overrides"] == 0

    bounded, account = governed(budget)
    for training, held in account:
        assert held <= (budget - 1) * training + 1e-9, (training, held)
    training, held = account[-1]
    assert held >= (budget - 1) * training - 0.06  # the budget is used, not wasted
    summary = bounded.summary()
    assert summary["max_slowdown"] == budget and summary["budget_overrides"] > 0
    assert summary["pauses"] >= 1 and summary["steps"] == 200


def test_slo_aware_limits_lower_the_jobs_session_too(tmp_path: Path) -> None:
    """The job's niceness also goes to its autogroup (the CPU is shared between sessions
    first); run in a session of its own, as a worker's job is."""
    code = ("import json; from cl_server.scheduling.governor import apply_limits, "
            "autogroup_nice\n"
            "before = autogroup_nice(); limits = apply_limits(1, 10)\n"
            "print(json.dumps({'before': before, 'after': autogroup_nice(), 'limits': limits}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True, start_new_session=True, cwd=ROOT)
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["limits"]["threads"] == 1 and seen["limits"]["nice"] == 10
    if seen["before"] is None:  # autogroups off: nothing to lower
        assert "autogroup_nice" not in seen["limits"]
    else:
        assert seen["before"] == 0 and seen["after"] == 10
        assert seen["limits"]["autogroup_nice"] == 10


def test_governor_waits_for_the_off_peak_window_and_stops_when_cancelled() -> None:
    clock = {"t": 0.0}
    times = iter([datetime(2026, 1, 1, 21, 58), datetime(2026, 1, 1, 21, 59),
                  datetime(2026, 1, 1, 22, 0)])

    def sleep(seconds: float) -> None:
        clock["t"] += seconds

    recorded: list[dict] = []
    governor = Governor(OffPeak(["22:00-23:00"], recheck_s=60), Scripted([None]),
                        log=quiet_log, clock=lambda: clock["t"], sleep=sleep,
                        now=lambda: next(times), record=recorded.append)
    governor.admit()
    assert governor.seconds["waited"] == 120 and governor.state == "running"
    assert [r["state"] for r in recorded][:1] == ["waiting"] and recorded[-1]["state"] == \
        "running"

    class Cancelled(Exception):
        pass

    def cancel() -> None:
        raise Cancelled

    stuck = Governor(OffPeak(["22:00-23:00"]), Scripted([None]), log=quiet_log,
                     check_cancelled=cancel, clock=lambda: clock["t"], sleep=sleep,
                     now=lambda: datetime(2026, 1, 1, 8, 0))
    with pytest.raises(Cancelled):
        stuck.admit()


def test_relative_slo_takes_its_target_from_the_baseline() -> None:
    clock = {"t": 0.0}
    source = Scripted([8.0, 12.0, 10.0, 10.0, 11.0, 9.0])
    lines: list[str] = []
    governor = Governor(SloAware(), source, log=lambda m, level="INFO": lines.append(m),
                        baseline_s=1.0, read_every_s=0.25, slo_ratio=1.2,
                        clock=lambda: clock["t"],
                        sleep=lambda s: clock.__setitem__("t", clock["t"] + s))
    governor.admit()
    assert governor.baseline_ms == 10.0  # the median of 8, 12, 10, 10, 11
    assert governor.policy.target_ms == 12.0
    assert any("SLO p95 12 ms (1.2 x)" in line for line in lines)
    quiet = Governor(SloAware(), Scripted([None]), log=lambda m, level="INFO": lines.append(m),
                     baseline_s=0.5, clock=lambda: clock["t"],
                     sleep=lambda s: clock.__setitem__("t", clock["t"] + s),
                     fallback_baseline=lambda: 20.0)
    quiet.admit()
    assert quiet.policy.target_ms == 24.0
