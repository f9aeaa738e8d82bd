"""The governor of one running job: applies its policy before and between training steps.

The training loop calls :meth:`Governor.between_steps` after every optimizer step (the
``between_steps`` hook of :meth:`~model_factory.templates.Classifier.fit`); the job calls
:meth:`Governor.admit` before it takes its data. Pacing and pausing only ever happen between
two steps and only sleep, so a paced or paused job computes exactly what an unpaced one
computes with the same seed and the same number of threads.

Every change of state (``waiting``, ``running``, ``paced``, ``paused``) is a line of the job's
log with its reason and the signals that caused it; :meth:`Governor.summary` (also written to
the job's record as it runs, at most once a second, through ``record``) gives the totals the
job card shows: seconds waited, paced and paused, steps, the policy's state and the last
signals.

Example:
    >>> from cl_server.scheduling.policy import Immediate
    >>> from cl_server.scheduling.signals import Signals
    >>> class Quiet:
    ...     def read(self): return Signals(p95_ms=None)
    >>> governor = Governor(Immediate(), Quiet(), log=lambda message, level="INFO": None)
    >>> governor.admit()
    >>> for _ in range(3):
    ...     governor.between_steps()
    >>> governor.summary()["steps"], governor.summary()["state"]
    (3, 'running')
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from cl_server.scheduling.policy import Decision, Policy, SloAware
from cl_server.scheduling.signals import Signals, SignalSource

MAX_LOGGED = 200
"""State changes logged per job; later ones are counted, not logged."""
PAUSE_POLL_S = 0.1


class Governor:
    """Applies ``policy`` to one job (see the module doc).

    Parameters:
        policy: the scheduling policy.
        signals: where readings come from (:class:`~cl_server.scheduling.LiveSignals`).
        log: the job's log, ``log(message, level)``.
        check_cancelled: raises when the job was cancelled (called while waiting or paused).
        record: receives :meth:`summary` as the job runs (at most once per ``record_every_s``).
        read_every_s: least seconds between two signal readings during training.
        max_pause_s: a pause lasts at most this long; then one step runs.
        baseline_s: with an :class:`SloAware` policy without a target: seconds of readings
            before training whose median p95, times ``slo_ratio``, becomes the target.
        fallback_baseline: a p95 (ms) to use when those seconds had no traffic, e.g. the
            proxy's longer-window figure; None: the job runs unpaced.
        max_slowdown: the job's slowdown budget: seconds paced and paused never exceed
            ``max_slowdown - 1`` times the seconds it has trained, so it ends within
            ``max_slowdown`` times its training time whatever the signals say (a noisy or
            moved latency signal cannot starve it). None: no budget (the policy alone rules).
    """

    def __init__(self, policy: Policy, signals: SignalSource, *,
                 log: Callable[..., None], check_cancelled: Callable[[], None] = lambda: None,
                 record: Callable[[dict[str, Any]], None] | None = None,
                 read_every_s: float = 0.25, max_pause_s: float = 30.0,
                 baseline_s: float = 10.0, slo_ratio: float = 1.2,
                 fallback_baseline: Callable[[], float | None] | None = None,
                 limits: dict[str, Any] | None = None, max_slowdown: float | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 now: Callable[[], datetime] = datetime.now, record_every_s: float = 1.0):
        self.policy = policy
        self.signals = signals
        self.log = log
        self.check_cancelled = check_cancelled
        self.record = record
        self.read_every_s = read_every_s
        self.max_pause_s = max_pause_s
        self.baseline_s = baseline_s
        self.slo_ratio = slo_ratio
        self.fallback_baseline = fallback_baseline
        self.limits = dict(limits or {})
        if max_slowdown is not None and max_slowdown < 1:
            raise ValueError(f"max_slowdown must be >= 1 (got {max_slowdown})")
        self.max_slowdown = max_slowdown
        self.budget_overrides = 0
        self.clock = clock
        self.sleep = sleep
        self.now = now
        self.record_every_s = record_every_s
        self.state = "queued"
        self.steps = 0
        self.seconds = {"waited": 0.0, "paced": 0.0, "paused": 0.0, "training": 0.0}
        self.pauses = 0
        self.changes = 0
        self.baseline_ms: float | None = None
        self._last_signals: Signals | None = None
        self._read_at: float | None = None
        self._step_started: float | None = None
        self._recorded_at: float | None = None

    # -- readings ------------------------------------------------------------------------
    def _read(self, force: bool = False) -> Signals:
        now = self.clock()
        if force or self._last_signals is None or self._read_at is None \
                or now - self._read_at >= self.read_every_s:
            self._last_signals = self.signals.read()
            self._read_at = now
        return self._last_signals

    def _change(self, state: str, reason: str, signals: Signals | None) -> None:
        if state == self.state:
            return
        self.state = state
        self.changes += 1
        if self.changes <= MAX_LOGGED:
            detail = f" ({signals.describe()})" if signals is not None else ""
            self.log(f"scheduling [{self.policy.name}]: {state}: {reason}{detail}")
        elif self.changes == MAX_LOGGED + 1:
            self.log(f"scheduling: more than {MAX_LOGGED} state changes; later ones are "
                     "counted in the job's schedule, not logged")
        self._publish(force=True)

    def _publish(self, force: bool = False) -> None:
        if self.record is None:
            return
        now = self.clock()
        if force or self._recorded_at is None or now - self._recorded_at >= self.record_every_s:
            self._recorded_at = now
            self.record(self.summary())

    # -- the job's side ---------------------------------------------------------------------
    def admit(self) -> None:
        """Block until the policy lets the job train (checking for cancellation)."""
        if isinstance(self.policy, SloAware) and self.policy.target_ms is None:
            self._baseline(self.policy)
        while True:
            signals = self._read(force=True)
            decision = self.policy.admit(signals, self.now())
            if decision.action == "run":
                break
            self._change("waiting", decision.reason, signals)
            self._wait(decision.seconds, "waited")
        self._change("running", "admitted" if self.state == "queued" else
                     f"admitted after {self.seconds['waited']:.1f} s",
                     self._last_signals)
        self._step_started = self.clock()

    def _baseline(self, policy: SloAware) -> None:
        readings = []
        deadline = self.clock() + self.baseline_s
        while True:
            signals = self._read(force=True)
            if signals.p95_ms is not None and signals.requests > 0:
                readings.append(signals.p95_ms)
            if self.clock() >= deadline:
                break
            self.check_cancelled()
            self.sleep(min(self.read_every_s, max(0.0, deadline - self.clock())))
        source = f"the median of {len(readings)} readings over {self.baseline_s:g} s"
        if readings:
            self.baseline_ms = float(statistics.median(readings))
        elif self.fallback_baseline is not None:
            self.baseline_ms = self.fallback_baseline()
            source = "the proxy's longer-window figure (no traffic in the baseline seconds)"
        if self.baseline_ms is None:
            self.log("scheduling [slo-aware]: no inference latency before the job: no SLO "
                     "target, the job trains unpaced", "WARNING")
            return
        policy.set_target(round(self.baseline_ms * self.slo_ratio, 3), ratio=self.slo_ratio)
        self.log(f"scheduling [slo-aware]: inference p95 before the job {self.baseline_ms:g} "
                 f"ms ({source}); SLO p95 {policy.target_ms:g} ms "
                 f"({self.slo_ratio:g} x)")

    def _wait(self, seconds: float, bucket: str) -> None:
        start = self.clock()
        end = start + seconds
        try:
            while True:
                self.check_cancelled()
                left = end - self.clock()
                if left <= 0:
                    break
                self.sleep(min(left, 0.5))
        finally:  # a cancelled wait counts too
            self.seconds[bucket] += self.clock() - start
        self._publish()

    def between_steps(self) -> None:
        """Called after each training step: pace or pause as the policy says."""
        now = self.clock()
        if self._step_started is None:
            self._step_started = now
        step_s = max(0.0, now - self._step_started)
        self.steps += 1
        self.seconds["training"] += step_s
        signals = self._read()
        target = getattr(self.policy, "target_ms", None)
        decision: Decision = self.policy.after_step(step_s, signals)
        rebased = getattr(self.policy, "target_ms", None)
        if rebased != target and target is not None:
            self.log(f"scheduling [{self.policy.name}]: SLO re-based from {target:g} to "
                     f"{rebased:g} ms: the inference p95 stayed above it with the job at its "
                     f"least duty, so the job is not what slows inference ({signals.describe()})")
        allowance = self.allowance()
        holds = decision.action == "pause" or (decision.action == "pace" and decision.seconds > 0)
        if holds and allowance <= 0:
            self.budget_overrides += 1
            self._change("running", f"the slowdown budget is spent ({decision.reason}; paced "
                         f"and paused may not exceed {self.max_slowdown:g} - 1 x the training "
                         "time)", signals)
        elif decision.action == "pause":
            self._pause(decision, signals, min(self.max_pause_s, allowance))
        elif decision.action == "pace":  # seconds 0: paced, training on to its next sleep
            self._change("paced", decision.reason, signals)
            if decision.seconds > 0:
                if decision.seconds > allowance:
                    self.budget_overrides += 1  # a pace cut short by the budget
                start = self.clock()
                self.sleep(min(decision.seconds, allowance))
                self.seconds["paced"] += self.clock() - start
        else:
            self._change("running", decision.reason or "within the SLO", signals)
        self._publish()
        self._step_started = self.clock()

    def allowance(self) -> float:
        """Seconds the job may still be paced or paused within its slowdown budget."""
        if self.max_slowdown is None:
            return math.inf
        return ((self.max_slowdown - 1) * self.seconds["training"]
                - self.seconds["paced"] - self.seconds["paused"])

    def _pause(self, decision: Decision, signals: Signals, limit_s: float) -> None:
        self.pauses += 1
        self._change("paused", decision.reason, signals)
        start = self.clock()
        try:
            self._paused_until_resumed(start, limit_s)
        finally:
            self.seconds["paused"] += self.clock() - start

    def _paused_until_resumed(self, start: float, limit_s: float) -> None:
        deadline = start + limit_s
        while True:
            self.check_cancelled()
            left = deadline - self.clock()
            if left > 1e-6:
                self.sleep(min(PAUSE_POLL_S, left))
            signals = self._read(force=True)
            if self.policy.resume(signals):
                self._change("running", "resumed: the SLO holds again", signals)
                break
            if self.clock() >= deadline - 1e-6:
                if limit_s < self.max_pause_s:
                    self.budget_overrides += 1
                    reason = (f"resumed after {limit_s:.2f} s paused: the slowdown budget "
                              f"({self.max_slowdown:g} x the training time) is spent")
                else:
                    reason = (f"resumed for one step after {self.max_pause_s:g} s paused "
                              "(the job must finish)")
                self._change("running", reason, signals)
                break

    def summary(self) -> dict[str, Any]:
        """The job's schedule so far (JSON-ready)."""
        last = self._last_signals
        return {"policy": self.policy.name, "state": self.state, "steps": self.steps,
                **{f"{k}_s": round(v, 3) for k, v in self.seconds.items()},
                "pauses": self.pauses, "changes": self.changes,
                "max_slowdown": self.max_slowdown, "budget_overrides": self.budget_overrides,
                "baseline_p95_ms": self.baseline_ms, **self.policy.state(),
                **({"limits": self.limits} if self.limits else {}),
                "signals": last.as_dict() if last is not None else None}


def _threads() -> list[int]:
    """This process's thread ids (Linux), or just the process's own id."""
    try:
        return [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:
        return [0]


AUTOGROUP = Path("/proc/self/autogroup")
AUTOGROUP_ENABLED = Path("/proc/sys/kernel/sched_autogroup_enabled")
IDLE_NICE = 19


def autogroup_nice() -> int | None:
    """The niceness of this process's autogroup (Linux), or None where autogroups are off.

    With autogroups on (the default of most desktop and many server kernels), the CPU is
    shared first between sessions (each process started with ``setsid``, e.g. every
    server and worker the CLI starts, is one); a thread's own niceness or ``SCHED_IDLE`` only
    ranks it inside its session. Lowering a job's share against the inference server needs
    the autogroup's niceness too.
    """
    try:
        if AUTOGROUP_ENABLED.read_text().strip() == "0":
            return None
        fields = AUTOGROUP.read_text().split()  # "/autogroup-42 nice 0"
        return int(fields[fields.index("nice") + 1])
    except (OSError, ValueError, IndexError):
        return None


def set_autogroup_nice(nice: int) -> bool:
    """Set this process's autogroup niceness (0..19 needs no privilege); False where it
    cannot be set."""
    try:
        AUTOGROUP.write_text(str(nice))
    except OSError:
        return False
    return autogroup_nice() == nice


def apply_limits(threads: int | None, nice: int | None, idle: bool = False) -> dict[str, Any]:
    """Set this process's torch threads, niceness (only ever raised) and, with ``idle``, the
    Linux ``SCHED_IDLE`` policy (it runs only on CPU time nothing else wants); every existing
    thread of the process is changed (Linux applies both per thread; new threads inherit).
    Where autogroups are on, the process's autogroup is raised to ``nice`` too (19 with
    ``idle``): a thread's niceness or ``SCHED_IDLE`` ranks the job only inside its own
    session, while the CPU is shared first between sessions (see :func:`autogroup_nice`), so
    without it a job in a session of its own competes with the inference servers as an
    equal. The worker sets its session back after the job. Returns what now holds."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    applied: dict[str, Any] = {"threads": torch.get_num_threads()}
    if nice is not None and hasattr(os, "setpriority"):
        for tid in _threads():
            try:
                if os.getpriority(os.PRIO_PROCESS, tid) < nice:
                    os.setpriority(os.PRIO_PROCESS, tid, nice)
            except OSError:
                continue  # a thread that ended meanwhile
        applied["nice"] = os.getpriority(os.PRIO_PROCESS, 0)
    if idle and hasattr(os, "SCHED_IDLE"):
        for tid in _threads():
            try:
                os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
            except OSError:
                continue
        applied["sched"] = "idle" if os.sched_getscheduler(0) == os.SCHED_IDLE else "other"
    group_nice = IDLE_NICE if idle else nice
    group = autogroup_nice() if group_nice else None
    if group is not None:
        if group < group_nice and set_autogroup_nice(group_nice):
            group = group_nice
        applied["autogroup_nice"] = group
    return applied
