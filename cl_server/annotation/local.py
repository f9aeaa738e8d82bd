"""Annotation tasks kept in the cache: the backend of ``annotator.kind: simulated``.

For deployments and demos without Label Studio: the same operations as
:class:`~cl_server.annotation.label_studio.LabelStudioBackend`, with the tasks in Redis
(under ``modelci:annotation:local:``), so the annotation loop, the simulated annotator and
the tests run one code path whichever backend holds the tasks.

Keys (``{p}``: the project id): ``projects`` (hash: title -> id), ``{p}:spec`` (the project's
classes and kind, JSON), ``{p}:tasks`` (hash: task id -> task JSON), ``{p}:byrequest`` (hash:
request id -> task id), ``{p}:open`` (sorted set of unannotated task ids), ``{p}:done``
(sorted set: task id by completion number, the cursor), ``{p}:annotations`` (hash).

Example:
    >>> import tempfile, redis
    >>> from cl_server.embedded import EmbeddedServices
    >>> with EmbeddedServices(tempfile.mkdtemp(), cache=True, store=False) as svc:
    ...     backend = LocalBackend(redis.Redis.from_url(svc.endpoints.cache_url))
    ...     project = backend.ensure_project(ProjectSpec("s", "s", ("a", "b"), "values"))
    ...     ids = backend.import_tasks(project, [TaskIn("r1", {"values": "1 2"}, "a", 0.9)])
    ...     _ = backend.annotate(project, ids["r1"], "b")
    ...     done, cursor = backend.completed(project, None)
    ...     [(t.request_id, t.label) for t in done], backend.completed(project, cursor)[0]
    ([('r1', 'b')], [])
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import datetime, timezone

import redis

from cl_server.annotation.backend import (AnnotatorError, AnnotatorUnavailable, CompletedTask,
                                          OpenTask, ProjectSpec, TaskIn)

PREFIX = "modelci:annotation:local"


class LocalBackend:
    """See the module doc."""

    name = "local"

    def __init__(self, cache: redis.Redis):
        self.cache = cache

    def _key(self, project: str, part: str) -> str:
        return f"{PREFIX}:{project}:{part}"

    def _guard(self) -> None:
        try:
            self.cache.ping()
        except redis.RedisError as exc:
            raise AnnotatorUnavailable(f"the cache holding the tasks is unreachable: {exc}"
                                       ) from None

    def ensure_project(self, spec: ProjectSpec) -> str:
        self._guard()
        project = self.cache.hget(f"{PREFIX}:projects", spec.title)
        if project is None:
            new = str(self.cache.incr(f"{PREFIX}:project_seq"))
            if self.cache.hsetnx(f"{PREFIX}:projects", spec.title, new):
                project = new.encode()
            else:
                project = self.cache.hget(f"{PREFIX}:projects", spec.title)
        pid = project.decode() if isinstance(project, bytes) else str(project)
        stored = self.cache.get(self._key(pid, "spec"))
        classes = list(json.loads(stored)["classes"]) if stored else []
        classes += [c for c in spec.classes if c not in classes]
        self.cache.set(self._key(pid, "spec"), json.dumps({"classes": classes,
                                                            "kind": spec.kind}))
        return pid

    def choices(self, project: str) -> list[str]:
        """The project's label choices."""
        stored = self.cache.get(self._key(project, "spec"))
        return list(json.loads(stored)["classes"]) if stored else []

    def import_tasks(self, project: str, tasks: Sequence[TaskIn]) -> dict[str, str]:
        self._guard()
        if not self.cache.exists(self._key(project, "spec")):
            raise AnnotatorError(f"no project {project}")
        ids: dict[str, str] = {}
        for task in tasks:
            existing = self.cache.hget(self._key(project, "byrequest"), task.request_id)
            if existing is not None:
                ids[task.request_id] = existing.decode()
                continue
            task_id = str(self.cache.incr(self._key(project, "task_seq")))
            record = {"request_id": task.request_id, "data": dict(task.data),
                      "prediction": task.prediction, "score": task.score,
                      "model_version": task.model_version, "served_ms": task.served_ms}
            with self.cache.pipeline() as pipe:
                pipe.hset(self._key(project, "tasks"), task_id, json.dumps(record))
                pipe.hset(self._key(project, "byrequest"), task.request_id, task_id)
                pipe.zadd(self._key(project, "open"), {task_id: int(task_id)})
                pipe.execute()
            ids[task.request_id] = task_id
        return ids

    def find_tasks(self, project: str, request_ids: Sequence[str]) -> dict[str, str]:
        self._guard()
        if not request_ids:
            return {}
        found = self.cache.hmget(self._key(project, "byrequest"), list(request_ids))
        return {rid: tid.decode() for rid, tid in zip(request_ids, found, strict=True)
                if tid is not None}

    def completed(self, project: str, after: str | None, limit: int = 500
                  ) -> tuple[list[CompletedTask], str | None]:
        self._guard()
        start = f"({int(after)}" if after is not None else "-inf"
        rows = self.cache.zrangebyscore(self._key(project, "done"), start, "+inf", start=0,
                                        num=limit, withscores=True)
        if not rows:
            return [], after
        notes = self.cache.hmget(self._key(project, "annotations"), [r[0] for r in rows])
        done = []
        for (task_id, _), note in zip(rows, notes, strict=True):
            annotation = json.loads(note)
            done.append(CompletedTask(task_id.decode(), annotation["request_id"],
                                      annotation["label"], annotation["id"],
                                      annotation["completed_at"], annotation.get("annotator")))
        return done, str(int(rows[-1][1]))

    def open_tasks(self, project: str, limit: int = 100) -> list[OpenTask]:
        self._guard()
        task_ids = self.cache.zrange(self._key(project, "open"), 0, limit - 1)
        if not task_ids:
            return []
        records = self.cache.hmget(self._key(project, "tasks"), task_ids)
        opened = []
        for task_id, raw in zip(task_ids, records, strict=True):
            record = json.loads(raw)
            opened.append(OpenTask(task_id.decode(), record["request_id"],
                                   record.get("prediction"), record.get("data") or {}))
        return opened

    def annotate(self, project: str, task_id: str, label: str,
                 lead_time_s: float | None = None) -> str:
        self._guard()
        raw = self.cache.hget(self._key(project, "tasks"), task_id)
        if raw is None:
            raise AnnotatorError(f"no task {task_id} in project {project}")
        if not self.cache.zrem(self._key(project, "open"), task_id):
            raise AnnotatorError(f"task {task_id} already has an annotation")
        seq = int(self.cache.incr(self._key(project, "done_seq")))
        stamp = datetime.fromtimestamp(time.time(), timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%S.%fZ")
        note = {"id": str(seq), "request_id": json.loads(raw)["request_id"], "label": label,
                "completed_at": stamp, "lead_time_s": lead_time_s}
        with self.cache.pipeline() as pipe:
            pipe.hset(self._key(project, "annotations"), task_id, json.dumps(note))
            pipe.zadd(self._key(project, "done"), {task_id: seq})
            pipe.execute()
        return str(seq)

    def close(self) -> None:
        pass
