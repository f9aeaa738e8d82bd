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
   for the scenario switch's offline-retrain rule) in the same round as the alarm that caused it; a job the loop started is followed
   until it ends (``job_finished``), and while it runs no other starts.

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
from cl_server.collector.service import keys
from cl_server.config import ServiceConfig
from cl_server.drift import DriftMonitor
from cl_server.queue import JobQueue
from cl_server.store import Store
from cl_server.store.entities import TERMINAL_JOB_STATES
from cl_server.triggers import TriggerPolicy

log = logging.getLogger(__name__)

READ_COUNT = 5000


class ServiceLoop:
    """See the module doc. ``clock`` returns seconds (``time.time`` by default)."""

    def __init__(self, config: ServiceConfig, store: Store, cache: redis.Redis, queue: JobQueue,
                 *, clock: Callable[[], float] = time.time, interval_s: float = 0.5):
        self.config = config
        self.service = config.name
        self.store = store
        self.cache = cache
        self.queue = queue
        self.clock = clock
        self.interval_s = interval_s
        self.keys = keys(config.name)
        self.state_key = f"modelci:{config.name}:loop"
        self.monitor = DriftMonitor(config.drift, config.name)
        self.cursors = {"served": "0-0", "labeled": "0-0"}
        self.job_id: str | None = None
        self.rounds = 0
        self._version_classes: dict[int, list[str]] = {}
        self._last_magnitude: float | None = None
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
        results = self._served(now) + self._labeled(now)
        if results:
            self.rounds += 1
            self.store.add_drift_events(self.monitor.to_events(results))
            alarms = sorted({r.detector for r in results if r.alarm})
            input_alarms = [r.magnitude for r in results if r.alarm and r.signal == "inputs"]
            if input_alarms:  # the scenario switch's "drift too large" rule is about inputs
                self._last_magnitude = max(input_alarms)
            self.policy.observe_drift(alarms, self.rounds, now)
        running = self._follow_job(now)
        submitted = None
        decision = self.policy.decide(now, running)
        if decision is not None:
            params: dict[str, Any] = {"service": self.service}
            if decision.kind == "drift" and self._last_magnitude is not None:
                params["drift_magnitude"] = round(float(self._last_magnitude), 6)
            job = self.queue.submit("cl_update", params, service=self.service,
                                    trigger=json.loads(json.dumps(decision.as_dict())))
            self.policy.job_started(now)
            self.job_id = submitted = job.id
            log.info("service %s: %s -> job %s", self.service, decision.reason, job.id)
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
        if not fields.get(b"outputs"):
            return []
        try:
            scores = np.asarray(next(iter(kserve.unpack(fields[b"outputs"]).values())))
        except (kserve.BodyError, StopIteration):
            return []
        scores = scores.reshape(-1, scores.shape[-1]) if scores.ndim else scores.reshape(1, 1)
        version_classes = self._classes_of(int(fields.get(b"version", b"0") or 0))
        out = []
        for index in scores.argmax(axis=1).tolist():
            name = version_classes[index] if index < len(version_classes) else None
            if name in classes:
                out.append(classes.index(name))
        return out

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
            return False
        job = self.store.get_job(self.job_id)
        if job is None or job.status in TERMINAL_JOB_STATES:
            deployed = bool(job and job.result and job.result.get("outcome") == "deployed")
            self.policy.job_finished(now, deployed)
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


def _rows(packed: bytes | None, sample_shape: tuple[int, ...]) -> np.ndarray | None:
    """The input rows of a served record as ``[n, features]``: a record from the ingest API
    holds one sample (the model input's shape), one from the proxy a batch."""
    if not packed:
        return None
    try:
        tensors = kserve.unpack(packed)
    except kserve.BodyError:
        return None
    if not tensors:
        return None
    array = np.asarray(next(iter(tensors.values())))
    if array.dtype == object:
        return None  # texts: drift on text inputs needs their embeddings
    if array.shape == sample_shape or array.ndim == 0:
        return array.astype(np.float64).reshape(1, -1)
    return array.astype(np.float64).reshape(array.shape[0], -1)
