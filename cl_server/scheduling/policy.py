"""Scheduling policies: when an update job may start, and how fast it may train.

A policy answers three questions, asked by the :class:`~cl_server.scheduling.Governor` of a job:

- :meth:`Policy.admit`, before training: ``run`` or ``wait`` (seconds until it asks again);
- :meth:`Policy.after_step`, after each training step (``step_s`` seconds of work): ``run``
  on, ``pace`` (sleep ``seconds`` first) or ``pause`` (stop until :meth:`Policy.resume`);
- :meth:`Policy.resume`, while paused: whether the job may go on.

Policies (``scheduling.policy``):

- :class:`Immediate`: start at once, never slow down (the baseline);
- :class:`SloAware`: keep the inference p95 latency within ``target_ms``. A job waits to
  start while the SLO is already broken, at most ``max_wait_s`` (then it starts at
  ``min_duty``). The job trains a share ``duty`` of the wall time: once it has trained
  ``duty x quantum_s`` since its last sleep, it sleeps ``trained x (1 - duty) / duty``
  (chunks, not a sleep after every step: see :data:`PACE_QUANTUM_S`). Decisions follow
  the *level*: the median of the readings taken since the duty last changed (at most
  ``window_s`` seconds of them; one reading is the p95 of about a hundred requests and
  moves by 10-25% with nothing training, the median of a few does not, and readings from
  before a change do not judge it). Every
  ``adjust_every_s``: a level above the target halves the duty (at least ``min_duty``); a
  level below 90% of it adds 0.1 (additive increase, multiplicative decrease; in between the
  duty holds). A reading above 1.5 times the target while the level is above the target
  pauses the job until a reading is back within the target (at most ``max_pause_s``, then one
  step runs). A relative SLO (``ratio`` x a baseline measured before the job) is re-based to
  ``ratio`` x the level when the level stays above it for three periods at ``min_duty``: the
  job then barely trains, so what slows inference is something else (the baseline moved).
  With no latency signal (no traffic) the duty is kept;
- :class:`OffPeak`: start only inside local-time windows; a started job finishes.

Example:
    >>> from cl_server.scheduling.signals import Signals
    >>> policy = SloAware(target_ms=10.0, start_duty=0.5, clock=iter(range(100)).__next__)
    >>> policy.after_step(0.1, Signals(p95_ms=8.0, requests=50)).action  # within: paced
    'pace'
    >>> policy.after_step(0.1, Signals(p95_ms=20.0, requests=50)).action  # level 14 > 10
    'pause'
    >>> policy.resume(Signals(p95_ms=9.0, requests=50))
    True
"""

from __future__ import annotations

import statistics
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from cl_server.scheduling.signals import Signals

MIN_REQUESTS = 5
"""A latency reading over fewer requests is no signal (its p95 is one or two requests)."""
PAUSE_FACTOR = 1.5
RAISE_BELOW = 0.9
RAISE_STEP = 0.1
MAX_PACE_S = 5.0
PACE_QUANTUM_S = 0.2
"""A paced job sleeps once it has trained ``duty x PACE_QUANTUM_S`` seconds since its last
sleep, for what that training owes, not after every step: measured beside the served LeNet-5
(2 cores, a one-thread LeNet-5 job at duty 0.5), sleeping after every 3 ms step raised the
inference p95 1.33-1.51x, more than not pacing at all (1.00-1.23x), and made each step ~30%
slower (cold caches); 0.2 s chunks gave 0.95-1.20x."""
FLOOR_PERIODS = 3
"""Periods at ``min_duty`` with the level still above a relative SLO before it is re-based."""


@dataclass(frozen=True)
class Decision:
    """What the job does next; ``seconds``: how long to wait (``wait``) or sleep (``pace``)."""

    action: Literal["run", "wait", "pace", "pause"]
    seconds: float = 0.0
    reason: str = ""


class Policy(ABC):
    name: str = ""

    def admit(self, signals: Signals, now: datetime) -> Decision:
        return Decision("run", reason="admitted")

    @abstractmethod
    def after_step(self, step_s: float, signals: Signals) -> Decision: ...

    def resume(self, signals: Signals) -> bool:
        return True

    def state(self) -> dict[str, Any]:
        """What the job card shows of the policy's state."""
        return {}


class Immediate(Policy):
    """Train at full speed at once."""

    name = "immediate"

    def after_step(self, step_s: float, signals: Signals) -> Decision:
        return Decision("run")


def _usable(signals: Signals) -> float | None:
    if signals.p95_ms is None or signals.requests < MIN_REQUESTS:
        return None
    return signals.p95_ms


class SloAware(Policy):
    """Pace the job so that inference p95 stays within ``target_ms`` (see the module doc).

    ``target_ms`` may be set later (:meth:`set_target`, from a baseline measured before the
    job trains); until then the job trains at ``duty``.
    """

    name = "slo-aware"

    def __init__(self, target_ms: float | None = None, *, min_duty: float = 0.05,
                 start_duty: float = 1.0, window_s: float = 5.0, adjust_every_s: float = 1.5,
                 max_wait_s: float = 30.0, quantum_s: float = PACE_QUANTUM_S,
                 clock: Callable[[], float] = time.monotonic):
        if not 0 < min_duty <= start_duty <= 1:
            raise ValueError(f"need 0 < min_duty <= start_duty <= 1 (got {min_duty}, "
                             f"{start_duty})")
        self.target_ms = target_ms
        self.min_duty = min_duty
        self.duty = start_duty
        self.window_s = window_s
        self.adjust_every_s = adjust_every_s
        self.max_wait_s = max_wait_s
        self.quantum_s = quantum_s
        self.clock = clock
        self._unslept = 0.0  # seconds trained since the last sleep (paced)
        self._waiting_since: float | None = None
        self._adjusted: float | None = None
        self._recent: deque[tuple[float, float]] = deque()
        self.level_ms: float | None = None
        self.ratio: float | None = None
        self.rebaselines = 0
        self._at_floor = 0
        self.breaches = 0
        self.readings = 0

    def set_target(self, target_ms: float, ratio: float | None = None) -> None:
        """Set the SLO; ``ratio``: it is that multiple of a measured baseline (a relative
        SLO, which may be re-based, see :meth:`after_step`)."""
        self.target_ms = target_ms
        self.ratio = ratio

    def admit(self, signals: Signals, now: datetime) -> Decision:
        p95 = _usable(signals)
        if self.target_ms is not None and p95 is not None and p95 > self.target_ms:
            now = self.clock()
            if self._waiting_since is None:
                self._waiting_since = now
            if now - self._waiting_since < self.max_wait_s:
                return Decision("wait", 0.5, f"inference p95 {p95:g} ms is above the SLO "
                                f"{self.target_ms:g} ms before the job trains")
            self.duty = self.min_duty
            return Decision("run", reason=f"admitted at the least duty after {self.max_wait_s:g} "
                            "s with the SLO still broken (the job must finish)")
        return Decision("run", reason="admitted" if self.target_ms is not None else
                        "admitted with no SLO target (no latency baseline): unpaced")

    def _level(self, p95: float, now: float) -> float:
        """The median of the readings since the last change of duty (at most ``window_s``
        seconds of them), this one included."""
        self._recent.append((now, p95))
        while now - self._recent[0][0] > self.window_s:
            self._recent.popleft()
        self.level_ms = statistics.median(value for _, value in self._recent)
        return self.level_ms

    def _set_duty(self, duty: float, now: float) -> None:
        self.duty = duty
        self._adjusted = now
        self._recent.clear()  # judge the new duty by readings taken under it

    def after_step(self, step_s: float, signals: Signals) -> Decision:
        p95 = _usable(signals)
        if self.target_ms is not None and p95 is not None:
            self.readings += 1
            now = self.clock()
            if self._adjusted is None:
                self._adjusted = now  # the first reading starts the first period
            level = self._level(p95, now)
            due = now - self._adjusted >= self.adjust_every_s
            if level > self.target_ms:
                self.breaches += 1
                if due:
                    self._at_floor = self._at_floor + 1 if self.duty <= self.min_duty else 0
                    if self._at_floor >= FLOOR_PERIODS and self.ratio is not None:
                        # The job barely trains and inference is still slower than the SLO
                        # allows: the baseline moved (other load, other traffic), not because
                        # of the job. The SLO follows: ratio x this level.
                        self.target_ms = round(level * self.ratio, 3)
                        self.rebaselines += 1
                        self._at_floor = 0
                    self._set_duty(max(self.min_duty, self.duty / 2), now)
                if p95 > PAUSE_FACTOR * self.target_ms:
                    return Decision("pause", reason=f"inference p95 {p95:g} ms > "
                                    f"{PAUSE_FACTOR:g} x SLO {self.target_ms:g} ms (level "
                                    f"{level:g} ms)")
            elif due:
                self._at_floor = 0
                if level < RAISE_BELOW * self.target_ms and self.duty < 1:
                    self._set_duty(min(1.0, self.duty + RAISE_STEP), now)
        if self.target_ms is None or self.duty >= 1:
            self._unslept = 0.0
            return Decision("run")
        # Sleep in chunks (PACE_QUANTUM_S): what the training since the last sleep owes.
        self._unslept += step_s
        pause = 0.0
        if self._unslept >= self.quantum_s * self.duty:
            pause = min(MAX_PACE_S, self._unslept * (1 - self.duty) / self.duty)
            self._unslept = 0.0
        level_text = f", level {self.level_ms:g} ms" if self.level_ms is not None else ""
        return Decision("pace", pause, f"duty {self.duty:.2f}{level_text}")

    def resume(self, signals: Signals) -> bool:
        p95 = _usable(signals)
        return self.target_ms is None or p95 is None or p95 <= self.target_ms

    def state(self) -> dict[str, Any]:
        return {"slo_p95_ms": self.target_ms, "duty": round(self.duty, 3),
                "level_p95_ms": None if self.level_ms is None else round(self.level_ms, 3),
                "rebaselines": self.rebaselines,
                "readings": self.readings, "breaches": self.breaches}


def _minutes(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


class OffPeak(Policy):
    """Start only inside the local-time ``windows`` (``"HH:MM-HH:MM"``, may wrap midnight).

    Example:
        >>> policy = OffPeak(["22:00-06:00"])
        >>> policy.admit(None, datetime(2026, 1, 1, 23, 30)).action
        'run'
        >>> decision = policy.admit(None, datetime(2026, 1, 1, 21, 0))
        >>> decision.action, decision.seconds
        ('wait', 60.0)
    """

    name = "off-peak"

    def __init__(self, windows: Sequence[str], *, recheck_s: float = 60.0):
        if not windows:
            raise ValueError("off-peak needs at least one window")
        self.windows = [(_minutes(w.split("-")[0]), _minutes(w.split("-")[1]), w)
                        for w in windows]
        self.recheck_s = recheck_s

    def open_window(self, now: datetime) -> str | None:
        minute = now.hour * 60 + now.minute
        for start, end, text in self.windows:
            inside = start <= minute < end if start < end else minute >= start or minute < end
            if inside:
                return text
        return None

    def next_start(self, now: datetime) -> datetime:
        base = now.replace(second=0, microsecond=0)
        starts = []
        for start, _, _ in self.windows:
            at = base.replace(hour=start // 60, minute=start % 60)
            starts.append(at if at > now else at + timedelta(days=1))
        return min(starts)

    def admit(self, signals: Signals | None, now: datetime) -> Decision:
        window = self.open_window(now)
        if window is not None:
            return Decision("run", reason=f"inside the off-peak window {window}")
        until = (self.next_start(now) - now).total_seconds()
        return Decision("wait", float(min(self.recheck_s, max(1.0, until))),
                        f"outside the off-peak windows; the next opens at "
                        f"{self.next_start(now):%H:%M}")

    def after_step(self, step_s: float, signals: Signals) -> Decision:
        return Decision("run")

    def state(self) -> dict[str, Any]:
        return {"windows": [text for _, _, text in self.windows]}
