"""The CL loop of one service: collector streams -> drift detectors and triggers -> update jobs.

:meth:`ServiceLoop.step` does one round, and the server runs it every ``interval_s`` seconds
on a thread (:meth:`ServiceLoop.start`):

1. new served records (``modelci:{s}:served``, read with a cursor) feed the drift detectors
   watching ``inputs`` and ``predictions``; shadow answers are left out;
2. new labeled samples (``modelci:{s}:labeled``) count as new labels for the volume rule, give
   right/wrong outcomes for the performance rule and the ``errors`` detectors;
3. every detector evaluation is stored as a :class:`~cl_server.store.DriftEvent` (statistic,
   p-value, magnitude: the drift time series), alarms with their evidence;
4. the :class:`~cl_server.triggers.TriggerPolicy` decides; a decision submits a ``cl_update``
   job with the decision as its trigger (and the largest magnitude of an alarm on the inputs,
   for the scenario switch's offline-retrain rule) in the same round as the alarm that caused
   it; the trigger names the alarm events (``drift_event_ids``). While the service is
   paused (``PATCH /api/services/{s}``) only a manual request starts a job; drift and the
   other rules stay pending until it resumes. The service's update job is
   followed until it ends (``job_finished``), whoever submitted it (the loop, the API), and
   while it is queued or running no other starts. Once a job that answered a drift or
   learned new classes deployed, the drift detectors start over: the new model's inputs and
   answers form their new references;
5. served records the API's collector spooled while Redis was unreachable are replayed as
   soon as it answers again (``collector``), even if no new ingest call comes;
6. a job whose worker died is recorded ``failed`` (:meth:`JobQueue.fail_abandoned`), which
   ends it for the loop too: the champion stays and the next trigger starts a new job.

The stream cursors and the policy's state are saved in the Redis hash ``modelci:{s}:loop``
after each round, so a restarted server resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import redis

from cl_server.collector import kserve
from cl_server.collector.service import ServiceCollector, keys
from cl_server.config import ServiceConfig
from cl_server.drift import DriftMonitor
from cl_server.drift.text import text_descriptors
from cl_server.queue import JobConflict, JobQueue
from cl_server.store import Store
from cl_server.store.entities import TERMINAL_JOB_STATES
from cl_server.triggers import TriggerPolicy

log = logging.getLogger(__name__)

READ_COUNT = 5000
MAX_LINKED_EVENTS = 100
"""Alarm events a drift-triggered job's trigger names at most (the first ones of the episode)."""


class ServiceLoop:
    """See the module doc. ``clock`` returns seconds (``time.time`` by default)."""

    def __init__(self, config: ServiceConfig, store: Store, cache: redis.Redis, queue: JobQueue,
                 *, clock: Callable[[], float] = time.time, interval_s: float = 0.5,
                 collector: ServiceCollector | None = None):
        self.config = config
        self.service = config.name
        self.store = store
        self.cache = cache
        self.queue = queue
        self.clock = clock
        self.interval_s = interval_s
        self.collector = collector
        self.keys = keys(config.name)
        self.state_key = f"modelci:{config.name}:loop"
        self.monitor = DriftMonitor(config.drift, config.name)
        self.cursors = {"served": "0-0", "labeled": "0-0"}
        self.job_id: str | None = None
        self.rounds = 0
        self._version_classes: dict[int, list[str]] = {}
        self._last_magnitude: float | None = None
        self._alarm_events: list[str] = []  # alarm events since the last job start
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        saved = self.cache.hgetall(self.state_key)
        if saved:
            self.cursors = json.loads(saved[b"cursors"])
            self.job_id = saved.get(b"job_id", b"").decode() or None
            self.policy = TriggerPolicy.from_state(config.triggers, json.loads(saved[b"policy"]))
        else:
            self.policy = TriggerPolicy(config.triggers)

    # -- one round -------------------------------------------------------------------------

    def step(self) -> dict[str, Any]:
        """One round (see the module doc); returns what happened, for logs and tests."""
        now = self.clock()
        if self.collector is not None and self.collector.writer.degraded:
            replayed = self.collector.writer.recover()
            if replayed:
                log.info("service %s: %d spooled records replayed", self.service, replayed)
        self.queue.fail_abandoned(self.service)
        running = self._follow_job(now)  # first: a deployment resets the detectors
        results = self._served(now) + self._labeled(now)
        if results:
            self.rounds += 1
            events = self.monitor.to_events(results)
            self.store.add_drift_events(events)
            alarm_ids = [e.id for e in events if e.alarm]
            if alarm_ids and len(self._alarm_events) < MAX_LINKED_EVENTS:
                self._alarm_events += alarm_ids[:MAX_LINKED_EVENTS - len(self._alarm_events)]
            elif not alarm_ids and self.policy.state()["drift"]["pending"] is None:
                self._alarm_events = []  # a calm round with nothing pending: episode over
            alarms = sorted({r.detector for r in results if r.alarm})
            input_alarms = [r.magnitude for r in results if r.alarm and r.signal == "inputs"]
            if input_alarms:  # the scenario switch's "drift too large" rule is about inputs
                self._last_magnitude = max(input_alarms)
            self.policy.observe_drift(alarms, self.rounds, now)
        submitted = None
        service = self.store.get_service(self.service)
        decision = self.policy.decide(now, running,
                                      paused=service is not None and service.status == "paused")
        if decision is not None:
            params: dict[str, Any] = {"service": self.service}
            trigger = json.loads(json.dumps(decision.as_dict()))
            if "drift" in trigger["evidence"].get("fired", []):
                trigger["drift_event_ids"] = list(self._alarm_events)  # the lineage's first link
                if self._last_magnitude is not None:
                    params["drift_magnitude"] = round(float(self._last_magnitude), 6)
            try:
                job = self.queue.submit("cl_update", params, service=self.service,
                                        trigger=trigger)
            except JobConflict as exc:  # submitted elsewhere since _follow_job: follow it
                log.info("service %s: %s", self.service, exc)
                self._follow_job(now)
            else:
                self.job_id = submitted = job.id
                log.info("service %s: %s -> job %s", self.service, decision.reason, job.id)
            self.policy.job_started(now)
            self._alarm_events = []
        self._save()
        return {"drift_results": len(results), "alarms": sorted({r.detector for r in results
                                                                if r.alarm}),
                "submitted": submitted}

    def request_manual(self, reason: str, actor: str) -> None:
        """A manual update request (the API's); the next round decides on it."""
        self.policy.request_manual(reason, actor, self.clock())

    def _served(self, now: float) -> list[Any]:
        entries = self._read("served")
        inputs, predictions = [], []
        for fields in entries:
            if fields.get(b"role") == b"shadow":
                continue
            rows = _rows(fields.get(b"inputs"), tuple(self.config.model.input.shape))
            if rows is not None:
                inputs.append(rows)
            predicted = self._predictions(fields)
            predictions += predicted
        results = []
        if inputs and self._watches("inputs"):
            width = inputs[0].shape[1]
            batch = np.concatenate([r for r in inputs if r.shape[1] == width])
            results += self.monitor.update("inputs", batch)
        if predictions and self._watches("predictions"):
            results += self.monitor.update("predictions", np.asarray(predictions))
        return results

    def _labeled(self, now: float) -> list[Any]:
        entries = self._read("labeled")
        if not entries:
            return []
        self.policy.observe_labels(len(entries), now)
        outcomes = [fields[b"prediction"] == fields[b"label"] for fields in entries
                    if fields.get(b"prediction")]
        if not outcomes:
            return []
        self.policy.observe_outcome(outcomes, now)
        if not self._watches("errors"):
            return []
        return self.monitor.update("errors", np.asarray([0 if ok else 1 for ok in outcomes]))

    def _predictions(self, fields: dict[bytes, bytes]) -> list[int]:
        classes = self.config.model.classes
        if fields.get(b"prediction"):
            name = fields[b"prediction"].decode()
            return [classes.index(name)] if name in classes else []
        version_classes = self._classes_of(int(fields.get(b"version", b"0") or 0))
        return [classes.index(name) for name in
                kserve.predicted_classes(fields.get(b"outputs"), version_classes)
                if name in classes]

    def _classes_of(self, version: int) -> list[str]:
        if version not in self._version_classes:
            record = self.store.get_version(self.service, version) if version else None
            self._version_classes[version] = list(record.classes) if record and \
                record.classes else list(self.config.model.classes)
        return self._version_classes[version]

    def _watches(self, signal: str) -> bool:
        return any(d.signal == signal for d in self.config.drift.detectors)

    def _read(self, name: str) -> list[dict[bytes, bytes]]:
        answer = self.cache.xread({self.keys[name]: self.cursors[name]}, count=READ_COUNT)
        if not answer:
            return []
        entries = answer[0][1]
        self.cursors[name] = entries[-1][0].decode()
        return [fields for _, fields in entries]

    def _follow_job(self, now: float) -> bool:
        if self.job_id is None:
            other = self.queue.active(self.service)
            if other is None:
                return False
            log.info("service %s: following update job %s (%s)", self.service, other.id,
                     (other.trigger or {}).get("kind", "submitted elsewhere"))
            self.job_id = other.id  # from the API: it covers what is pending
            self.policy.job_started(now)
        job = self.store.get_job(self.job_id)
        if job is None or job.status in TERMINAL_JOB_STATES:
            deployed = bool(job and job.result and job.result.get("outcome") == "deployed")
            unanswered = job is None or job.status == "failed" or bool(
                job.result and job.result.get("outcome") == "skipped")  # no data to learn from
            self.policy.job_finished(now, deployed, failed=unanswered)
            if deployed and _adapted(job):  # the model now fits the new data: new references
                self.monitor.reset()
            self._version_classes.clear()
            self.job_id = None
            return False
        return True

    def _save(self) -> None:
        self.cache.hset(self.state_key, mapping={
            "cursors": json.dumps(self.cursors), "job_id": self.job_id or "",
            "policy": json.dumps(self.policy.state())})

    # -- on a thread -----------------------------------------------------------------------

    def start(self) -> ServiceLoop:
        self._thread = threading.Thread(target=self._run, name=f"cl-loop-{self.service}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.step()
            except Exception:  # the loop outlives one bad round; it is logged
                log.exception("service %s: CL loop round failed", self.service)


def _adapted(job: Any) -> bool:
    """Whether a deployed job adapted the model to changed data: it answered a drift alarm or
    learned new classes. Then the detectors start over; after an update on the same data
    (volume, time) they keep their references, so a drift that begins meanwhile still shows."""
    scenario = (job.result or {}).get("scenario")
    return (job.trigger or {}).get("kind") == "drift" or scenario in ("nc", "nic")


def _rows(packed: bytes | None, sample_shape: tuple[int, ...]) -> np.ndarray | None:
    """The input rows of a served record as ``[n, features]``: a record from the ingest API
    holds one sample (the model input's shape), one from the proxy a batch; texts become rows
    of their descriptors."""
    if not packed:
        return None
    try:
        tensors = kserve.unpack(packed)
    except kserve.BodyError:
        return None
    if not tensors:
        return None
    array = np.asarray(next(iter(tensors.values())))
    if array.dtype == object:  # texts: their surface descriptors (cl_server.drift.text)
        return text_descriptors(array.reshape(-1))
    if array.shape == sample_shape or array.ndim == 0:
        return array.astype(np.float64).reshape(1, -1)
    return array.astype(np.float64).reshape(array.shape[0], -1)
