"""When to start a CL update job: a service's trigger rules as pure decision logic.

The CL loop feeds a :class:`TriggerPolicy` what it observes (new labels, labeled predictions,
drift evaluation rounds, manual requests) and asks :meth:`TriggerPolicy.decide` whether an update
job should start now. The policy does no I/O and never reads the clock: every method takes
``now``, a time in seconds (any monotonic origin, e.g. ``time.time()``), so it is deterministic
and its state (:meth:`TriggerPolicy.state`) is a plain JSON object that survives a restart.

Example:
    >>> from cl_server.config.schema import TriggersConfig
    >>> policy = TriggerPolicy(TriggersConfig.model_validate({
    ...     "cooldown_s": 60, "rules": [{"kind": "volume", "new_labels": 100}]}), started_at=0.0)
    >>> policy.observe_labels(99, now=10.0)
    >>> policy.decide(now=11.0, running=False) is None
    True
    >>> policy.observe_labels(1, now=12.0)
    >>> decision = policy.decide(now=13.0, running=False)
    >>> decision.kind, decision.reason
    ('volume', '100 new labels since the last job (threshold 100)')
    >>> policy.job_started(now=13.0)
    >>> policy.observe_labels(500, now=20.0)
    >>> policy.decide(now=20.0, running=False) is None  # cooldown: 60 s after the last start
    True
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cl_server.config.schema import (
    DriftTrigger,
    PerformanceTrigger,
    TimeTrigger,
    TriggersConfig,
    VolumeTrigger,
)

TriggerKind = Literal["manual", "drift", "performance", "volume", "time"]

PRIORITY: tuple[TriggerKind, ...] = ("manual", "drift", "performance", "volume", "time")
"""Which rule names a decision when several fire at once, most important first."""

STATE_VERSION = 1


@dataclass(frozen=True)
class TriggerDecision:
    """A decision to start an update job now.

    Parameters:
        kind: The rule that decided (the most important of those that fired, see
            :data:`PRIORITY`).
        reason: One line for people, with the numbers that made the rule fire.
        evidence: JSON object: ``fired`` lists every rule kind that fired, in priority order;
            one entry per fired kind holds its numbers (``{"volume": {"new_labels": 120, ...}}``).
        at: When the decision was taken, seconds (the ``now`` given to ``decide``).

    Examples:
        >>> d = TriggerDecision("time", "3600 s since the policy started (interval 3600 s)",
        ...                     {"fired": ["time"], "time": {"elapsed_s": 3600.0}}, at=3600.0)
        >>> d.as_dict()["kind"], d.as_dict()["evidence"]["fired"]
        ('time', ['time'])
    """

    kind: TriggerKind
    reason: str
    evidence: dict[str, Any]
    at: float

    def as_dict(self) -> dict[str, Any]:
        """The decision as a JSON object (what a :class:`~cl_server.store.entities.Job` keeps
        as its ``trigger``)."""
        return {"kind": self.kind, "reason": self.reason, "evidence": self.evidence,
                "at": self.at}


@dataclass(frozen=True)
class _Fired:
    kind: TriggerKind
    reason: str
    evidence: dict[str, Any]


class TriggerPolicy:
    """Decides when a service's next CL update job starts, from what the CL loop observes.

    Rules (from ``config.rules``; several rules of one kind are each checked, the first that
    fires in config order speaks for its kind):

    - **time**: ``interval_s`` seconds have passed since the last job start, or since the policy
      started when no job has run yet.
    - **volume**: at least ``new_labels`` labeled samples arrived since the last job start, or
      the labeled data grew by at least ``growth_pct`` percent since then
      (``100 * new / labeled_at_last_job_start``). A rule setting both fires on either. Growth
      from an empty base is undefined, so the growth test waits until the base is non-zero:
      pass ``labeled_total`` (or also set ``new_labels``) for a service that starts from no
      stored labels.
    - **performance**: accuracy over the last ``window`` labeled outcomes is strictly below
      ``threshold``; never before ``window`` outcomes have been seen.
    - **drift**: at least ``min_detectors`` distinct detectors alarmed in one evaluation round
      (several drift rules act as one with the smallest ``min_detectors``).
    - **manual**: :meth:`request_manual` was called.

    When several fire at once the decision is named by :data:`PRIORITY` (manual > drift >
    performance > volume > time) and its evidence holds all of them.

    Cooldown and running jobs: no automatic decision is taken while a job is running nor within
    ``cooldown_s`` seconds of the last job start. A manual request overrides the cooldown but is
    refused while a job is running: it is dropped (not deferred) and recorded in
    ``state()["refused"]`` so the API or dashboard can say why.

    De-duplication:

    - **drift episodes**: consecutive rounds with at least ``min_detectors`` alarms form one
      episode, and an episode yields at most one job. A round with fewer alarms ends the
      episode; only the alarm rounds of a later episode can fire again (and only once the
      cooldown has passed). An alarm round waits (pending) while a job runs or the cooldown
      lasts, so a drift seen then still yields its one job afterwards, unless a job starts in
      the meantime: a job that starts after an alarm round covers it.
    - **performance dips**: once the performance rule has taken part in a decision it is
      disarmed; :meth:`job_finished` empties the outcome window and re-arms it. So it fires again
      only when the window has been refilled with outcomes observed after the job ended and
      their accuracy is still below the threshold (the job did not fix the dip).

    Volume and time are level rules: their counters restart at :meth:`job_started`, which the
    CL loop calls as soon as the job it decided on starts (or is queued). :meth:`job_finished`
    is called when it ends, whatever the outcome.

    Parameters:
        config: The service's ``triggers`` section.
        started_at: When the policy started, seconds; the time rule counts from it until the
            first job. ``None``: the ``now`` of the first call.
        labeled_total: Labeled samples the service already holds (the growth base until the
            first job), samples.

    Examples:
        >>> from cl_server.config.schema import TriggersConfig
        >>> policy = TriggerPolicy(TriggersConfig.model_validate({"cooldown_s": 600, "rules": [
        ...     {"kind": "drift", "min_detectors": 2}, {"kind": "time", "interval_s": 86400}]}),
        ...     started_at=0.0)
        >>> policy.observe_drift(["ks:inputs", "chi2:predictions"], round_id=1, now=100.0)
        >>> policy.decide(now=100.0, running=False).reason
        '2 detectors alarmed in round 1 (chi2:predictions, ks:inputs); 2 needed'
        >>> policy.job_started(now=100.0)
        >>> policy.job_finished(now=400.0, deployed=True)
        >>> policy.observe_drift(["ks:inputs", "chi2:predictions"], round_id=2, now=900.0)
        >>> policy.decide(now=900.0, running=False) is None  # same episode: no second job
        True
        >>> policy.request_manual("new camera firmware", actor="alice", now=950.0)
        >>> policy.decide(now=950.0, running=False).kind
        'manual'
    """

    def __init__(self, config: TriggersConfig, *, started_at: float | None = None,
                 labeled_total: int = 0) -> None:
        if labeled_total < 0:
            raise ValueError(f"labeled_total must be >= 0 (got {labeled_total})")
        self.config = config
        self._time = [r for r in config.rules if isinstance(r, TimeTrigger)]
        self._volume = [r for r in config.rules if isinstance(r, VolumeTrigger)]
        self._performance = [r for r in config.rules if isinstance(r, PerformanceTrigger)]
        drift = [r for r in config.rules if isinstance(r, DriftTrigger)]
        self._min_detectors = min((r.min_detectors for r in drift), default=None)
        self._window = max((r.window for r in self._performance), default=1)

        self._started_at = started_at
        self._last_job_start: float | None = None
        self._last_job_end: float | None = None
        self._last_deployed: bool | None = None
        self._jobs_started = 0
        self._labels_at_job = labeled_total
        self._labels_since_job = 0
        self._outcomes: deque[bool] = deque(maxlen=self._window)
        self._performance_armed = True
        self._drift_open = False
        self._drift_served = False
        self._drift_pending: dict[str, Any] | None = None
        self._drift_covered: dict[str, Any] | None = None  # the episode the last job answers
        self._manual: dict[str, Any] | None = None
        self._refused: dict[str, Any] | None = None

    # --- observations -------------------------------------------------------------------------

    def observe_labels(self, count: int, now: float) -> None:
        """``count`` new labeled samples arrived (feedback, annotator or ingest), samples."""
        if count < 0:
            raise ValueError(f"count must be >= 0 (got {count})")
        self._anchor(now)
        self._labels_since_job += count

    def observe_outcome(self, correct: bool | Iterable[bool], now: float) -> None:
        """Labeled predictions of the served model: ``True`` where the prediction was right.

        One bool or a sequence of them (oldest first); the window keeps the most recent ones.
        """
        self._anchor(now)
        values = correct if isinstance(correct, Iterable) else [correct]
        self._outcomes.extend(bool(v) for v in values)

    def observe_drift(self, alarms: Sequence[str], round_id: str | int, now: float) -> None:
        """One drift evaluation round; ``alarms`` names the detectors that alarmed in it.

        Names are counted once each (``["ks:inputs", "ks:inputs"]`` is one detector).
        """
        self._anchor(now)
        if self._min_detectors is None:
            return
        detectors = sorted(set(alarms))
        if len(detectors) < self._min_detectors:
            self._drift_open = False
            self._drift_served = False
            return
        self._drift_open = True
        if self._drift_served:
            return
        pending = self._drift_pending
        if pending is None:
            self._drift_pending = {"round_id": round_id, "detectors": detectors,
                                   "first_round_id": round_id, "rounds": 1, "since": now}
        else:
            pending.update(round_id=round_id, detectors=detectors, rounds=pending["rounds"] + 1)

    def request_manual(self, reason: str, actor: str, now: float) -> None:
        """A person asks for an update job; served by the next :meth:`decide` (see there)."""
        self._anchor(now)
        requests = 1 if self._manual is None else self._manual["requests"] + 1
        self._manual = {"reason": reason, "actor": actor, "requested_at": now,
                        "requests": requests}

    # --- jobs ---------------------------------------------------------------------------------

    def job_started(self, now: float) -> None:
        """An update job started (whatever asked for it): counters restart, cooldown begins.

        The job covers a pending drift episode and a pending manual request.
        """
        self._anchor(now)
        self._last_job_start = now
        self._jobs_started += 1
        self._labels_at_job += self._labels_since_job
        self._labels_since_job = 0
        if self._drift_pending is not None:
            self._drift_covered = self._drift_pending
        self._drift_pending = None
        self._drift_served = self._drift_open
        self._manual = None

    def job_finished(self, now: float, deployed: bool, failed: bool = False) -> None:
        """The update job ended; ``deployed`` says whether its model now serves, ``failed``
        whether it failed (an error, its worker lost) rather than ran to a decision.

        The outcome window is emptied and the performance rule re-armed: accuracy is judged
        again on a full window of outcomes observed from now on. A failed job did not answer
        the drift episode it covered: if that episode is still open, it fires again once the
        cooldown has passed (a rejected challenger did answer it; new data comes through the
        volume rule).
        """
        self._anchor(now)
        if failed and self._drift_open and self._drift_served and self._drift_covered:
            self._drift_served = False
            self._drift_pending = {**self._drift_covered, "retry": True}
        self._last_job_end = now
        self._last_deployed = deployed
        self._outcomes.clear()
        self._performance_armed = True

    # --- the decision -------------------------------------------------------------------------

    def decide(self, now: float, running: bool, paused: bool = False
               ) -> TriggerDecision | None:
        """Whether an update job should start at ``now``; ``running``: a job is running;
        ``paused``: the service is paused (only a manual request starts a job; what the other
        rules saw stays pending until it resumes).

        Returns ``None`` while a job runs (dropping a manual request, see the class), within the
        cooldown or while paused unless a manual request is pending, and when no rule fires. A returned decision
        consumes the drift episode and the performance dip that took part in it.
        """
        self._anchor(now)
        if running:
            if self._manual is not None:
                self._refused = {**self._manual, "refused_at": now, "why": "a job is running"}
                self._manual = None
            return None
        fired = [f for f in (self._fire_manual(), self._fire_drift(), self._fire_performance(),
                             self._fire_volume(), self._fire_time(now)) if f is not None]
        if not fired or (self._manual is None and (paused or self.cooldown_left(now) > 0)):
            return None
        primary = fired[0]
        evidence: dict[str, Any] = {"fired": [f.kind for f in fired]}
        evidence.update({f.kind: f.evidence for f in fired})
        reason = primary.reason
        if len(fired) > 1:
            reason += f" (also fired: {', '.join(f.kind for f in fired[1:])})"
        kinds = {f.kind for f in fired}
        if "drift" in kinds:
            self._drift_covered = self._drift_pending
            self._drift_pending = None
            self._drift_served = self._drift_open
        if "performance" in kinds:
            self._performance_armed = False
        if "manual" in kinds:
            self._manual = None
        return TriggerDecision(primary.kind, reason, evidence, at=now)

    def cooldown_left(self, now: float) -> float:
        """Seconds until automatic decisions are allowed again (0 when they are)."""
        if self._last_job_start is None:
            return 0.0
        return max(0.0, self._last_job_start + self.config.cooldown_s - now)

    def _fire_manual(self) -> _Fired | None:
        if self._manual is None:
            return None
        m = self._manual
        return _Fired("manual", f"manual request by {m['actor']}: {m['reason']}", dict(m))

    def _fire_drift(self) -> _Fired | None:
        pending = self._drift_pending
        if pending is None:
            return None
        names = pending["detectors"]
        reason = (f"{len(names)} detectors alarmed in round {pending['round_id']} "
                  f"({', '.join(names)}); {self._min_detectors} needed")
        if pending.get("retry"):
            reason += "; again, the job started for it failed"
        return _Fired("drift", reason, {**pending, "min_detectors": self._min_detectors})

    def _fire_performance(self) -> _Fired | None:
        if not self._performance_armed:
            return None
        outcomes = list(self._outcomes)
        for rule in self._performance:
            if len(outcomes) < rule.window:
                continue
            correct = sum(outcomes[-rule.window:])
            accuracy = correct / rule.window
            if accuracy < rule.threshold:
                reason = (f"accuracy {accuracy:.3f} over the last {rule.window} labeled outcomes "
                          f"is below {rule.threshold}")
                return _Fired("performance", reason, {
                    "metric": rule.metric, "value": accuracy, "threshold": rule.threshold,
                    "window": rule.window, "correct": correct})
        return None

    def _fire_volume(self) -> _Fired | None:
        new, base = self._labels_since_job, self._labels_at_job
        growth = 100.0 * new / base if base > 0 else None
        evidence = {"new_labels": new, "labeled_at_last_job": base, "growth_pct": growth}
        for rule in self._volume:
            if rule.new_labels is not None and new >= rule.new_labels:
                reason = f"{new} new labels since the last job (threshold {rule.new_labels})"
                return _Fired("volume", reason, {**evidence, "threshold_labels": rule.new_labels})
            if rule.growth_pct is not None and growth is not None and growth >= rule.growth_pct:
                reason = (f"labeled data grew {growth:.1f}% ({base} -> {base + new}) since the "
                          f"last job (threshold {rule.growth_pct}%)")
                return _Fired("volume", reason, {**evidence, "threshold_pct": rule.growth_pct})
        return None

    def _fire_time(self, now: float) -> _Fired | None:
        since = "the last job start" if self._last_job_start is not None else "the policy started"
        start = self._last_job_start if self._last_job_start is not None else self._started_at
        elapsed = now - start if start is not None else 0.0
        for rule in self._time:
            if elapsed >= rule.interval_s:
                reason = f"{elapsed:.0f} s since {since} (interval {rule.interval_s:.0f} s)"
                return _Fired("time", reason, {"elapsed_s": elapsed,
                                               "interval_s": rule.interval_s, "since": start})
        return None

    def _anchor(self, now: float) -> None:
        if self._started_at is None:
            self._started_at = now

    # --- persistence --------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The policy's state as a JSON object (for the API, the dashboard and restarts).

        ``labeled_total``, ``window_accuracy`` (``None`` before any outcome) and
        ``cooldown_until`` are derived, for display; :meth:`from_state` ignores them.
        """
        outcomes = list(self._outcomes)
        cooldown_until = (None if self._last_job_start is None
                          else self._last_job_start + self.config.cooldown_s)
        return {
            "version": STATE_VERSION,
            "started_at": self._started_at,
            "last_job_start": self._last_job_start,
            "last_job_end": self._last_job_end,
            "last_deployed": self._last_deployed,
            "jobs_started": self._jobs_started,
            "labels_at_job": self._labels_at_job,
            "labels_since_job": self._labels_since_job,
            "outcomes": outcomes,
            "performance_armed": self._performance_armed,
            "drift": {"open": self._drift_open, "served": self._drift_served,
                      "pending": None if self._drift_pending is None else dict(
                          self._drift_pending, detectors=list(self._drift_pending["detectors"])),
                      "covered": None if self._drift_covered is None else dict(
                          self._drift_covered, detectors=list(self._drift_covered["detectors"]))},
            "manual": None if self._manual is None else dict(self._manual),
            "refused": None if self._refused is None else dict(self._refused),
            "labeled_total": self._labels_at_job + self._labels_since_job,
            "window_accuracy": sum(outcomes) / len(outcomes) if outcomes else None,
            "cooldown_until": cooldown_until,
        }

    @classmethod
    def from_state(cls, config: TriggersConfig, state: dict[str, Any]) -> TriggerPolicy:
        """A policy continuing from ``state`` (a :meth:`state` result), under ``config``.

        The config may have changed since: the outcome window keeps the most recent outcomes
        that fit the new largest window.
        """
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported trigger policy state version {state.get('version')!r} "
                             f"(expected {STATE_VERSION})")
        policy = cls(config, started_at=state["started_at"], labeled_total=state["labels_at_job"])
        policy._last_job_start = state["last_job_start"]
        policy._last_job_end = state["last_job_end"]
        policy._last_deployed = state["last_deployed"]
        policy._jobs_started = state["jobs_started"]
        policy._labels_since_job = state["labels_since_job"]
        policy._outcomes.extend(bool(v) for v in state["outcomes"])
        policy._performance_armed = state["performance_armed"]
        drift = state["drift"]
        policy._drift_open = drift["open"]
        policy._drift_served = drift["served"]
        policy._drift_pending = None if drift["pending"] is None else dict(drift["pending"])
        policy._drift_covered = None if drift.get("covered") is None else dict(drift["covered"])
        policy._manual = None if state["manual"] is None else dict(state["manual"])
        policy._refused = None if state["refused"] is None else dict(state["refused"])
        return policy
