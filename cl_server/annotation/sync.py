"""The annotation loop of one service: served samples out to annotators, their labels back in.

Every ``annotator.sync_every_s`` seconds (and at once when Label Studio's webhook calls),
:meth:`AnnotationSync.sync` runs:

1. **push**: the served records since the last round join a pool of unlabeled candidates
   (the newest ``annotator.pool_size``; shadow answers and batches of several samples left
   out). The selector (``annotator.selection``, :mod:`.selection`) ranks the pool with the
   champion's answers, the labeling budget (:class:`.budget.LabelingBudget`) grants what it
   allows (and, with ``annotator.max_open_tasks``, what the places left among the open tasks
   allow), and the granted samples become tasks: what an annotator sees (:mod:`.render`),
   the request id, and the champion's answer as a pre-annotation. They wait in the
   *outbox* (the cache) until the backend has them: a backend that cannot be reached leaves
   them there, and the next round delivers them first; no new sample is selected while the
   outbox is not empty. Before each import the backend is asked which of them it already
   holds (an import whose answer was lost), so no task is created twice.
2. **pull**: completed tasks since the saved cursor. Each task counts once (the ids pulled
   are kept); its label goes through :meth:`ServiceCollector.label` with source
   ``annotator``: joined to the served record, stored as a labeled sample, appended to the
   labeled stream the CL loop reads (a request labeled elsewhere first counts once). A label
   outside the service's classes is rejected and reported, or, with
   ``annotator.accept_new_classes``, added to the service (``on_new_classes``) and kept. A
   skipped task (no choice) is counted. The cursor advances only once the labels are stored.

State (Redis, ``{s}`` the service): ``modelci:{s}:annotation:state`` (project, cursor,
counters, last error), ``:outbox`` (hash: request id -> task), ``:tasks`` (hash: request id
-> task id), ``:pulled`` (set of task ids), ``:rejected`` (list of the last
:data:`REJECTED_KEPT` rejections, JSON).

Example (the ``simulated`` backend; ``tests/test_annotation_sync.py`` runs Label Studio):
    >>> import tempfile, redis
    >>> from pathlib import Path
    >>> from cl_server.annotation.local import LocalBackend
    >>> from cl_server.config import parse_config
    >>> from cl_server.collector.service import ServiceCollector
    >>> from cl_server.embedded import EmbeddedServices
    >>> from cl_server.store import MongoStore
    >>> config = parse_config("name: doc\\nengine: {kind: triton, model_name: m}\\n"
    ...     "model: {template: mlp, input: {shape: [2]}, classes: [a, b]}\\n"
    ...     "annotator: {kind: simulated, budget_per_hour: 1}")
    >>> with EmbeddedServices(tempfile.mkdtemp(), cache=True, store=True) as svc:
    ...     cache = redis.Redis.from_url(svc.endpoints.cache_url)
    ...     store = MongoStore(svc.endpoints.store_uri)
    ...     collector = ServiceCollector(config, cache, store, Path(tempfile.mkdtemp()))
    ...     _ = collector.ingest([{"request_id": "r1", "inputs": [0, 1], "confidences": [.9, .1]},
    ...                           {"request_id": "r2", "inputs": [1, 0], "confidences": [.5, .5]}])
    ...     backend = LocalBackend(cache)
    ...     sync = AnnotationSync(config, backend, collector, store, cache)
    ...     sync.push().sent  # budget 1: the least confident
    ...     task = backend.open_tasks(sync.project())[0]
    ...     _ = backend.annotate(sync.project(), task.task_id, "b")
    ...     sync.pull().labeled, sync.pull().labeled, collector.class_counts()
    ...     store.close()
    ['r2']
    (1, 0, {'b': 1})
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
import redis

from cl_server.annotation.backend import (AnnotationBackend, AnnotatorError,
                                          AnnotatorUnavailable, ProjectSpec, TaskIn)
from cl_server.annotation.budget import LabelingBudget
from cl_server.annotation.render import render, task_kind
from cl_server.annotation.selection import Candidate, make_selector, probabilities
from cl_server.collector import kserve
from cl_server.collector.service import ServiceCollector, keys
from cl_server.config import ServiceConfig
from cl_server.store import Store, utcnow

log = logging.getLogger(__name__)

READ_COUNT = 5000
PULL_PAGE = 500
REJECTED_KEPT = 1000
DRIFT_LOOKBACK_S = 60.0
"""drift-focused: samples served from this many seconds before the last drift alarm on."""


@dataclass
class PushReport:
    pooled: int = 0
    selected: int = 0
    sent: list[str] = field(default_factory=list)
    already_there: int = 0
    queued: int = 0
    error: str | None = None


@dataclass
class PullReport:
    completed: int = 0
    labeled: int = 0
    duplicates: int = 0
    skipped: int = 0
    rejected: int = 0
    unknown: int = 0
    new_classes: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class _Pooled:
    candidate: Candidate
    inputs: bytes
    version: int


class AnnotationSync:
    """See the module doc.

    Parameters:
        config: the service config (``annotator``, ``model.input``, classes).
        backend: where tasks live (Label Studio, or the cache for ``simulated``).
        collector: the service's collector (labels go in through it).
        store / cache: the durable store (versions, drift alarms) and Redis.
        on_new_classes: called with classes an annotation introduced when
            ``annotator.accept_new_classes`` holds; it must add them to ``collector``.
        webhook: (URL, headers) the backend calls when an annotation is made, if it can
            (Label Studio); polling pulls everything anyway.
        clock: seconds (``time.time``).
    """

    def __init__(self, config: ServiceConfig, backend: AnnotationBackend,
                 collector: ServiceCollector, store: Store, cache: redis.Redis, *,
                 on_new_classes: Callable[[list[str]], None] | None = None,
                 webhook: tuple[str, dict[str, str]] | None = None,
                 clock: Callable[[], float] = time.time):
        self.config = config
        self.settings = config.annotator
        self.service = config.name
        self.backend = backend
        self.collector = collector
        self.store = store
        self.cache = cache
        self.on_new_classes = on_new_classes
        self.webhook = webhook
        self._webhook_id: str | None = None
        self.clock = clock
        self.kind = task_kind(config.model.input.kind)
        self.budget = LabelingBudget(cache, config.name, self.settings.budget_per_hour,
                                     self.settings.budget_per_day, clock=clock)
        base = f"modelci:{config.name}:annotation"
        self.keys = {part: f"{base}:{part}" for part in
                     ("state", "outbox", "tasks", "pulled", "rejected")}
        self.stream_keys = keys(config.name)
        self.pool: OrderedDict[str, _Pooled] = OrderedDict()
        self._served_cursor: str | None = None
        self._project: str | None = None
        self._project_classes: tuple[str, ...] = ()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the project -----------------------------------------------------------------------

    def spec(self) -> ProjectSpec:
        classes = tuple(self.config.model.classes) + tuple(
            sorted(c for c in self.collector.classes if c not in self.config.model.classes))
        return ProjectSpec(self.service, self.settings.project or f"modelci-e: {self.service}",
                           classes, self.kind, self.config.description or "")

    def project(self) -> str:
        """The backend's project id (found or created on first use, and again when the
        service's classes grew)."""
        spec = self.spec()
        if self._project is None or spec.classes != self._project_classes:
            self._project = self.backend.ensure_project(spec)
            self._project_classes = spec.classes
            self.cache.hset(self.keys["state"], "project", self._project)
        register = getattr(self.backend, "register_webhook", None)
        if self.webhook is not None and self._webhook_id is None and register is not None:
            url, headers = self.webhook
            try:
                self._webhook_id = register(self._project, url, headers)
            except AnnotatorError as exc:  # polling still pulls everything: keep going
                log.warning("service %s: the annotator's webhook to %s was refused: %s",
                            self.service, url, exc)
                self._webhook_id = "refused"
        return self._project

    # -- push ------------------------------------------------------------------------------

    def push(self) -> PushReport:
        """Pool the new served records, deliver the outbox, select and send what the budget
        allows (see the module doc)."""
        with self._lock:
            report = PushReport()
            try:
                report.pooled = self._refill()
                project = self.project()
                waiting = self._outbox()
                if waiting:
                    report.already_there += self._deliver(project, waiting)
                chosen = self._choose(project)
                report.selected = len(chosen)
                granted = set(self.budget.spend([c.candidate.request_id for c in chosen]))
                tasks = [self._task(p) for p in chosen if p.candidate.request_id in granted]
                for task in tasks:
                    self.pool.pop(task.request_id, None)
                if tasks:
                    self.cache.hset(self.keys["outbox"], mapping={
                        t.request_id: json.dumps(asdict(t)) for t in tasks})
                    report.already_there += self._deliver(project, tasks)
                report.sent = [t.request_id for t in tasks]
            except (AnnotatorUnavailable, AnnotatorError) as exc:
                report.error = str(exc)
            report.queued = int(self.cache.hlen(self.keys["outbox"]))
            self._record("push", report.error, sent=len(report.sent))
            return report

    def _refill(self) -> int:
        """Add the served records since the last call to the pool; returns how many."""
        stream = self.stream_keys["served"]
        if self._served_cursor is None:  # (re)start: the newest pool_size records
            newest = self.cache.xrevrange(stream, count=self.settings.pool_size)
            entries = list(reversed(newest))
        else:
            answer = self.cache.xread({stream: self._served_cursor}, count=READ_COUNT)
            entries = answer[0][1] if answer else []
        if entries:
            self._served_cursor = entries[-1][0].decode()
        elif self._served_cursor is None:
            self._served_cursor = "0-0"
        added = 0
        for _, fields in entries:
            pooled = self._pooled(fields)
            if pooled is not None:
                self.pool[pooled.candidate.request_id] = pooled
                self.pool.move_to_end(pooled.candidate.request_id)
                added += 1
        while len(self.pool) > self.settings.pool_size:
            self.pool.popitem(last=False)
        return added

    def _pooled(self, fields: dict[bytes, bytes]) -> _Pooled | None:
        if fields.get(b"role") == b"shadow" or not fields.get(b"inputs"):
            return None
        try:
            inputs = next(iter(kserve.unpack(fields[b"inputs"]).values()))
        except (kserve.BodyError, StopIteration):
            return None
        shape = tuple(self.config.model.input.shape)
        if np.asarray(inputs).shape != shape and (np.ndim(inputs) == 0 or
                                                  np.shape(inputs)[0] != 1):
            return None  # a batch of several samples: one label would not fit them all
        version = int(fields.get(b"version", b"0") or 0)
        scores = None
        if fields.get(b"outputs"):
            try:
                first = next(iter(kserve.unpack(fields[b"outputs"]).values()))
                row = np.asarray(first, dtype=np.float64).reshape(-1)
                scores = row if row.size else None
            except (kserve.BodyError, StopIteration, ValueError, TypeError):
                scores = None
        predicted = fields.get(b"prediction", b"").decode() or None
        if predicted is None and scores is not None:
            if version:
                predicted = self.collector.predicted_class({"outputs": fields[b"outputs"]},
                                                           version)
            else:  # no version named (an ingested record): the service's classes
                index = int(np.argmax(scores))
                classes = self.config.model.classes
                predicted = classes[index] if index < len(classes) else None
        return _Pooled(Candidate(fields[b"id"].decode(), scores,
                                 int(fields.get(b"ts_ms", b"0") or 0), predicted),
                       bytes(fields[b"inputs"]), version)

    def _choose(self, project: str) -> list[_Pooled]:
        if self.cache.hlen(self.keys["outbox"]):
            return []  # deliver what waits before choosing more
        available = self.budget.available()
        cap = self.settings.max_open_tasks
        if cap is not None and available > 0 and self.pool:
            # Asked of the backend, not counted here: a task a person deleted frees its place.
            available = min(available, cap - len(self.backend.open_tasks(project, cap)))
        if available <= 0 or not self.pool:
            return []
        ids = list(self.pool)
        labeled = self.cache.smismember(self.stream_keys["labeled_ids"], ids)
        tasked = self.cache.hmget(self.keys["tasks"], ids)
        sent = self.budget.sent_many(ids)
        eligible = []
        for rid, done, task, paid in zip(ids, labeled, tasked, sent, strict=True):
            if done or task is not None:
                self.pool.pop(rid)  # labeled elsewhere, or a task already: not a candidate
            elif not paid:
                eligible.append(self.pool[rid])
        selector = make_selector(self.settings.selection, drift_window=self._drift_window())
        by_id = {p.candidate.request_id: p for p in eligible}
        chosen = selector.select([p.candidate for p in eligible], available)
        return [by_id[c.request_id] for c in chosen]

    def _drift_window(self) -> tuple[int, int] | None:
        if self.settings.selection != "drift-focused":
            return None
        alarms = self.store.list_drift_events(self.service, alarms_only=True, limit=1,
                                              newest=True)
        if not alarms:
            return None
        start = alarms[-1].created_at - timedelta(seconds=DRIFT_LOOKBACK_S)
        return int(start.timestamp() * 1000), 2 ** 62

    def _task(self, pooled: _Pooled) -> TaskIn:
        candidate = pooled.candidate
        inputs = np.asarray(next(iter(kserve.unpack(pooled.inputs).values())))
        shape = tuple(self.config.model.input.shape)
        sample = inputs if inputs.shape == shape else inputs[0]
        score = None
        if candidate.scores is not None:
            score = round(float(np.max(probabilities(candidate.scores))), 6)
        return TaskIn(candidate.request_id, render(sample, self.kind), candidate.predicted,
                      score, pooled.version or None, candidate.served_ms)

    def _outbox(self) -> list[TaskIn]:
        raw = self.cache.hgetall(self.keys["outbox"])
        tasks = [TaskIn(**json.loads(value)) for value in raw.values()]  # type: ignore[union-attr]
        return sorted(tasks, key=lambda t: (t.served_ms, t.request_id))

    def _deliver(self, project: str, tasks: list[TaskIn]) -> int:
        """Import ``tasks`` the backend does not hold yet; returns how many it held."""
        held = self.backend.find_tasks(project, [t.request_id for t in tasks])
        created = self.backend.import_tasks(project,
                                            [t for t in tasks if t.request_id not in held])
        mapping = {**held, **created}
        if mapping:
            self.cache.hset(self.keys["tasks"], mapping=mapping)
        delivered = [t.request_id for t in tasks if t.request_id in mapping]
        if delivered:
            self.cache.hdel(self.keys["outbox"], *delivered)
        return len(held)

    # -- pull ------------------------------------------------------------------------------

    def pull(self) -> PullReport:
        """Labels of the tasks completed since the cursor into the collector."""
        with self._lock:
            report = PullReport()
            try:
                project = self.project()
                cursor = self._state("cursor")
                while True:
                    done, after = self.backend.completed(project, cursor, PULL_PAGE)
                    self._take(done, report)
                    moved = after != cursor
                    cursor = after
                    if cursor is not None:
                        self.cache.hset(self.keys["state"], "cursor", cursor)
                    if len(done) < PULL_PAGE or not moved:
                        break
            except (AnnotatorUnavailable, AnnotatorError) as exc:
                report.error = str(exc)
            self._record("pull", report.error, labeled=report.labeled)
            for name in ("completed", "labeled", "duplicates", "skipped", "rejected",
                         "unknown"):
                if getattr(report, name):
                    self.cache.hincrby(self.keys["state"], f"{name}_total",
                                       getattr(report, name))
            return report

    def _take(self, done: list[Any], report: PullReport) -> None:
        if not done:
            return
        seen = self.cache.smismember(self.keys["pulled"], [t.task_id for t in done])
        fresh = [t for t, was in zip(done, seen, strict=True) if not was]
        if not fresh:
            return
        report.completed += len(fresh)
        labels, rejections = [], []
        unknown_classes = sorted({t.label for t in fresh if t.label is not None
                                  and t.label not in self.collector.classes})
        if unknown_classes and self.settings.accept_new_classes and self.on_new_classes:
            self.on_new_classes(unknown_classes)
            report.new_classes += unknown_classes
        for task in fresh:
            if task.label is None:
                report.skipped += 1
            elif task.request_id in ("", "None"):
                rejections.append(self._rejection(task, "the task holds no request_id"))
            elif task.label not in self.collector.classes:
                rejections.append(self._rejection(
                    task, f"label '{task.label}' is not one of the service's classes"))
            else:
                labels.append({"request_id": task.request_id, "label": task.label})
        result = self.collector.label(labels, source="annotator") if labels else None
        if result is not None:
            report.labeled += result.labeled
            report.duplicates += result.duplicates
            report.unknown += len(result.unknown_ids)
            unknown = set(result.unknown_ids)
            rejections += [self._rejection(t, "the served request is no longer in the cache "
                                           "(past collector.retention_days)")
                           for t in fresh if t.request_id in unknown]
            for error in result.rejected:
                task = next(t for t in fresh if t.request_id == labels[error.index]["request_id"])
                rejections.append(self._rejection(task, error.message))
        report.rejected += len(rejections)
        with self.cache.pipeline(transaction=False) as pipe:
            pipe.sadd(self.keys["pulled"], *[t.task_id for t in fresh])
            for rejection in rejections:
                pipe.lpush(self.keys["rejected"], json.dumps(rejection))
            pipe.ltrim(self.keys["rejected"], 0, REJECTED_KEPT - 1)
            pipe.execute()
        if rejections:
            log.warning("service %s: %d annotations rejected, e.g. task %s: %s", self.service,
                        len(rejections), rejections[0]["task_id"], rejections[0]["reason"])

    def _rejection(self, task: Any, reason: str) -> dict[str, Any]:
        return {"task_id": task.task_id, "request_id": task.request_id, "label": task.label,
                "annotation_id": task.annotation_id, "reason": reason,
                "at": utcnow().isoformat()}

    # -- state -----------------------------------------------------------------------------

    def _state(self, name: str) -> str | None:
        value = self.cache.hget(self.keys["state"], name)
        return value.decode() if value is not None else None

    def _record(self, what: str, error: str | None, **counts: int) -> None:
        now = utcnow().isoformat()
        fields = {f"last_{what}_at": now, f"last_{what}_error": error or ""}
        if error:
            log.warning("service %s: annotation %s failed: %s", self.service, what, error)
        self.cache.hset(self.keys["state"], mapping=fields)
        for name, value in counts.items():
            if value:
                self.cache.hincrby(self.keys["state"], f"{what}_{name}_total", value)

    def sync(self) -> tuple[PushReport, PullReport]:
        """One round: push, then pull."""
        return self.push(), self.pull()

    def status(self) -> dict[str, Any]:
        """What the loop did so far, for the API and the dashboard."""
        raw = {k.decode(): v.decode() for k, v in
               self.cache.hgetall(self.keys["state"]).items()}  # type: ignore[union-attr]
        counters = {k: int(v) for k, v in raw.items() if k.endswith("_total")}
        rejected = [json.loads(r) for r in self.cache.lrange(self.keys["rejected"], 0, 19)]
        return {
            "backend": self.backend.name, "project": raw.get("project"),
            "selection": self.settings.selection,
            "budget": {"per_hour": self.settings.budget_per_hour,
                       "per_day": self.settings.budget_per_day,
                       "available": self.budget.available()},
            "pool": len(self.pool), "outbox": int(self.cache.hlen(self.keys["outbox"])),
            "tasks": int(self.cache.hlen(self.keys["tasks"])),
            "sent": counters.get("push_sent_total", 0),
            "labeled": counters.get("labeled_total", 0),
            "completed": counters.get("completed_total", 0),
            "duplicates": counters.get("duplicates_total", 0),
            "skipped": counters.get("skipped_total", 0),
            "rejected": counters.get("rejected_total", 0),
            "unknown": counters.get("unknown_total", 0),
            "last_push_at": raw.get("last_push_at"), "last_pull_at": raw.get("last_pull_at"),
            "last_error": raw.get("last_push_error") or raw.get("last_pull_error") or None,
            "recent_rejections": rejected}

    # -- on a thread -----------------------------------------------------------------------

    def wake(self) -> None:
        """Sync now (the webhook calls it) instead of at the next period."""
        self._wake.set()

    def start(self) -> AnnotationSync:
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"annotation-{self.service}")
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.backend.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync()
            except Exception:  # the loop outlives one bad round (store or cache down)
                log.exception("service %s: annotation round failed", self.service)
            self._wake.wait(self.settings.sync_every_s)
            self._wake.clear()
