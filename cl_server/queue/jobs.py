"""The job queue: RQ over the cache's Redis, with the job's record of truth in the store.

:meth:`JobQueue.submit` writes a :class:`~cl_server.store.Job` (status ``queued``) and enqueues an
RQ job with the same id; a worker (:mod:`cl_server.queue.worker`) moves it to ``running`` and then
``succeeded`` / ``failed``, streaming its log lines into the store. :meth:`JobQueue.cancel`
removes a queued job from the queue, or stops a running one (RQ's stop-job command kills the
work horse), and records ``cancelled``. Every status change is a compare-and-swap in the store,
so a job that finishes while it is being cancelled ends in exactly one terminal state.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from pydantic import JsonValue, ValidationError
from rq import Callback, Queue, Worker
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job as RQJob

from cl_server.json_numbers import integral_floats_as_ints
from cl_server.queue.kinds import KINDS
from cl_server.store import Job, Store, utcnow
from cl_server.store.entities import TERMINAL_JOB_STATES

log = logging.getLogger(__name__)


class JobRejected(ValueError):
    """A submission that cannot be queued: unknown kind or invalid parameters."""

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.details = details or []


class JobConflict(RuntimeError):
    """The job is not in a state that allows the operation (e.g. cancelling a finished job)."""


class JobQueue:
    """Submit and cancel jobs.

    Parameters:
        store: where job records live.
        cache: the Redis connection RQ uses.
        name: the RQ queue name.
        job_timeout_s: RQ kills a job running longer than this.
    """

    def __init__(self, store: Store, cache: redis.Redis, name: str = "modelci",
                 job_timeout_s: float = 3600.0):
        self.store = store
        self.cache = cache
        self.queue = Queue(name, connection=cache)
        self.job_timeout_s = job_timeout_s

    def submit(self, kind: str, params: dict[str, JsonValue] | None = None,
               service: str | None = None, trigger: dict[str, JsonValue] | None = None) -> Job:
        """Validate and queue a job; raise :class:`JobRejected` for a bad kind or parameters."""
        spec = KINDS.get(kind)
        if spec is None:
            raise JobRejected(f"unknown job kind '{kind}' (expected one of: "
                              f"{', '.join(sorted(KINDS))})")
        try:
            checked = spec.params.model_validate(
                integral_floats_as_ints(params or {}, spec.params), strict=True)
        except ValidationError as exc:
            details = [{"path": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
                       for e in exc.errors(include_url=False)]
            raise JobRejected(f"invalid parameters for job kind '{kind}'", details) from None
        job = self.store.add_job(Job(kind=kind, service=service, trigger=trigger,
                                     params=checked.model_dump(mode="json")))
        try:
            self.queue.enqueue(
                "cl_server.queue.worker.run_job", job.id, job_id=job.id,
                job_timeout=int(self.job_timeout_s), result_ttl=3600, failure_ttl=86400,
                on_failure=Callback("cl_server.queue.worker.on_rq_failure"),
                on_stopped=Callback("cl_server.queue.worker.on_rq_stopped"),
                description=f"{kind} {job.id}")
        except redis.RedisError as exc:
            self.store.transition_job(job.id, "failed", ["queued"], finished_at=utcnow(),
                                      error=f"could not enqueue: {exc}")
            raise
        return job

    def cancel(self, job_id: str, actor: str | None = None) -> Job:
        """Cancel a queued or running job; raise :class:`JobConflict` if it already ended."""
        job = self.store.get_job(job_id)
        if job is None:
            raise KeyError(job_id)
        if job.status in ("queued", "running"):
            self.store.append_job_logs(job_id, [("WARNING", f"cancel requested by "
                                                            f"{actor or 'an operator'}")])
        done = self.store.transition_job(job_id, "cancelled", ["queued"], finished_at=utcnow(),
                                         cancel_requested=True)
        if done is not None:
            try:
                RQJob.fetch(job_id, connection=self.cache).cancel()
            except (NoSuchJobError, InvalidJobOperation):
                pass  # already picked up: the worker sees 'cancelled' and does not run it
            return done
        done = self.store.transition_job(job_id, "cancelled", ["running"], finished_at=utcnow(),
                                         cancel_requested=True)
        if done is not None:
            try:
                send_stop_job_command(self.cache, job_id)
            except (NoSuchJobError, InvalidJobOperation):
                log.info("job %s was not executing in a worker any more", job_id)
            return done
        current = self.store.get_job(job_id)
        state = current.status if current else "unknown"
        raise JobConflict(f"job {job_id} is {state}; only queued or running jobs can be "
                          "cancelled")

    def depth(self) -> int:
        """Jobs waiting in the queue."""
        return self.queue.count

    def worker_count(self) -> int:
        """Workers currently serving this queue."""
        return Worker.count(queue=self.queue)


__all__ = ["JobConflict", "JobQueue", "JobRejected", "TERMINAL_JOB_STATES"]
