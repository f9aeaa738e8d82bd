"""The worker side of the queue: an RQ worker whose jobs record their life in the store.

``modelci-e worker`` calls :func:`run_worker`; any number of workers on any machine may serve the
same queue as long as they reach the same Redis and store. Each RQ job calls :func:`run_job` in a
forked work horse, which opens its own store connection (pymongo clients must not cross a fork).
"""

from __future__ import annotations

import logging
import socket
import traceback
import uuid
from dataclasses import dataclass
from typing import Any

import redis
from rq import Queue, Worker, get_current_job
from rq.job import Job as RQJob

from cl_server.queue.kinds import KINDS, JobCancelled
from cl_server.scheduling.governor import autogroup_nice, set_autogroup_nice
from cl_server.scheduling.placement import served_queues
from cl_server.store import MongoStore, Store, utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerSettings:
    cache_url: str
    store_uri: str
    database: str
    queue: str
    labels: tuple[str, ...] = ()
    """The worker's labels: it also serves the queues of jobs placed on them."""


_settings: WorkerSettings | None = None
_home_priority: int | None = None
"""The niceness of the worker's autogroup when it started (a job may raise it, see
:func:`~cl_server.scheduling.governor.apply_limits`; it is set back after every job)."""


def _restore_priority() -> None:
    if _home_priority is not None and autogroup_nice() != _home_priority:
        set_autogroup_nice(_home_priority)


def _configured() -> WorkerSettings:
    if _settings is None:
        raise RuntimeError("run_job outside a modelci-e worker (no store configured)")
    return _settings


class _RunningJob:
    """The :class:`~cl_server.queue.kinds.JobContext` of one running job."""

    def __init__(self, job_id: str, store: Store, cache: redis.Redis):
        self.job_id = job_id
        self.store = store
        self.cache = cache

    def log(self, message: str, level: str = "INFO") -> None:
        self.store.append_job_logs(self.job_id, [(level, message)])

    def check_cancelled(self) -> None:
        job = self.store.get_job(self.job_id)
        if job is None or job.cancel_requested or job.status != "running":
            raise JobCancelled(self.job_id)


def run_job(job_id: str) -> dict[str, Any] | None:
    """Run the stored job ``job_id`` (called by RQ inside the work horse)."""
    settings = _configured()
    store = MongoStore(settings.store_uri, settings.database)
    cache = redis.Redis.from_url(settings.cache_url)
    try:
        current = get_current_job()
        worker_name = current.worker_name if current and current.worker_name else None
        job = store.transition_job(job_id, "running", ["queued"], started_at=utcnow(),
                                   worker=worker_name or socket.gethostname())
        if job is None:
            log.info("job %s is no longer queued (cancelled?): not running it", job_id)
            return None
        ctx = _RunningJob(job_id, store, cache)
        ctx.log(f"started {job.kind} on {socket.gethostname()}")
        try:
            spec = KINDS.get(job.kind)
            if spec is None:
                raise LookupError(f"this worker has no job kind '{job.kind}' (it has: "
                                  f"{', '.join(sorted(KINDS))}); is it an older version?")
            try:
                result = spec.run(ctx, spec.params.model_validate(job.params))
            finally:  # before the job's end is recorded: whoever waits on it finds it back
                _restore_priority()
        except JobCancelled:
            now = store.get_job(job_id)
            if now is not None and now.status not in ("running", "cancelled"):
                ctx.log(f"stopped: the job is {now.status} ({now.error})", "WARNING")
                return None
            ctx.log("stopped: cancellation requested", "WARNING")
            store.transition_job(job_id, "cancelled", ["running"], finished_at=utcnow())
            return None
        except Exception as exc:
            ctx.log("".join(traceback.format_exception(exc)).rstrip(), "ERROR")
            store.transition_job(job_id, "failed", ["running"], finished_at=utcnow(),
                                 error=f"{type(exc).__name__}: {exc}")
            raise
        # The last line goes in before the terminal state: whoever sees the job finished
        # (the dashboard's log view, a client waiting on it) has its whole log to read.
        now = store.get_job(job_id)
        if now is None or now.status != "running":
            ctx.log("finished after it was cancelled; result discarded", "WARNING")
            return None
        ctx.log("succeeded")
        if store.transition_job(job_id, "succeeded", ["running"], finished_at=utcnow(),
                                result=result) is None:
            ctx.log("finished after it was cancelled; result discarded", "WARNING")
            return None
        return result
    finally:
        store.close()
        cache.close()


def _record_end(job_id: str, status: str, error: str | None) -> None:
    settings = _configured()
    store = MongoStore(settings.store_uri, settings.database)
    try:
        job = store.get_job(job_id)
        if job is None or job.status not in ("queued", "running"):
            return  # run_job recorded its end
        if error:  # the log first, then the terminal state (see run_job)
            store.append_job_logs(job_id, [("ERROR", error)])
        store.transition_job(job_id, status, ["queued", "running"],  # type: ignore
                             finished_at=utcnow(), error=error)
    finally:
        store.close()


def on_rq_failure(job: RQJob, connection: redis.Redis, exc_type: type[BaseException],
                  exc: BaseException, tb: Any) -> None:
    """RQ failure callback: covers what :func:`run_job` cannot (timeout, killed work horse)."""
    _restore_priority()
    _record_end(job.id, "failed", f"{exc_type.__name__}: {exc}")


def on_rq_stopped(job: RQJob, connection: redis.Redis) -> None:
    """RQ stopped callback: the work horse was stopped by a stop-job command."""
    _restore_priority()
    _record_end(job.id, "cancelled", None)


def run_worker(settings: WorkerSettings, name: str | None = None, burst: bool = False) -> None:
    """Serve the queue (and first the labelled queues of ``settings.labels``) until SIGTERM
    (warm: finish the job) or a second SIGTERM (cold)."""
    global _settings, _home_priority
    _settings = settings
    _home_priority = autogroup_nice()
    store = MongoStore(settings.store_uri, settings.database)
    store.ping()
    store.close()
    connection = redis.Redis.from_url(settings.cache_url)
    queues = [Queue(name, connection=connection)
              for name in served_queues(settings.queue, settings.labels)]
    worker = Worker(queues, connection=connection,
                    name=name or f"modelci-{socket.gethostname()}-{uuid.uuid4().hex[:8]}")
    worker.work(burst=burst, with_scheduler=False, logging_level="INFO")
