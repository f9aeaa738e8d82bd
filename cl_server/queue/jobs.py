"""The job queue: RQ over the cache's Redis, with the job's record of truth in the store.

:meth:`JobQueue.submit` writes a :class:`~cl_server.store.Job` (status ``queued``) and enqueues an
RQ job with the same id; a worker (:mod:`cl_server.queue.worker`) moves it to ``running`` and then
``succeeded`` / ``failed``, streaming its log lines into the store. :meth:`JobQueue.cancel`
removes a queued job from the queue, or stops a running one (RQ's stop-job command kills the
work horse), and records ``cancelled``. Every status change is a compare-and-swap in the store,
so a job that finishes while it is being cancelled ends in exactly one terminal state.

Exclusive kinds (the CL update and promotion jobs) run one at a time per service: submitting
one while another is queued or running raises :class:`JobConflict`.

A worker that dies mid-job (killed, its machine lost) cannot record the end of its job.
:meth:`JobQueue.fail_abandoned`, called by the CL loop every round and before every exclusive
submission, finds such jobs and records them ``failed`` with the reason:

- the worker that runs it is no longer registered in Redis;
- the worker is registered on this host but its process is gone (a killed worker's
  registration outlives it until its heartbeat expires);
- RQ's heartbeat for the job expired (a worker on another host stopped answering).

Placement: a service whose ``scheduling.worker_labels`` name labels has its jobs put on the
queue of those labels (:mod:`cl_server.scheduling.placement`), which only workers started with
every one of them serve (``modelci-e worker --labels gpu``). The job's record names its queue.

A job declared failed this way cannot deploy any more: the job checks its status before it
changes the champion (:meth:`~cl_server.queue.kinds.JobContext.check_cancelled`).
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any

import psutil
import redis
from pydantic import JsonValue, ValidationError
from rq import Callback, Queue, Worker
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job as RQJob
from rq.registry import StartedJobRegistry

from cl_server.json_numbers import integral_floats_as_ints
from cl_server.queue.kinds import KINDS, JobKind
from cl_server.scheduling.placement import labels_of, queue_name
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
        placement: service name -> the worker labels its jobs need (empty: any worker).
    """

    def __init__(self, store: Store, cache: redis.Redis, name: str = "modelci",
                 job_timeout_s: float = 3600.0,
                 placement: Mapping[str, Sequence[str]] | None = None):
        self.store = store
        self.cache = cache
        self.queue = Queue(name, connection=cache)
        self.job_timeout_s = job_timeout_s
        self.placement = {service: tuple(labels) for service, labels in
                          (placement or {}).items() if labels}
        self._queues = {name: self.queue}

    def queue_for(self, service: str | None) -> Queue:
        """The RQ queue of ``service``'s jobs (by its placement labels)."""
        name = queue_name(self.queue.name, self.placement.get(service or "", ()))
        if name not in self._queues:
            self._queues[name] = Queue(name, connection=self.cache)
        return self._queues[name]

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
        params_json = checked.model_dump(mode="json")
        if service is None and isinstance(params_json.get("service"), str):
            service = params_json["service"]
        queue = self.queue_for(service)
        record = Job(kind=kind, service=service, trigger=trigger, params=params_json,
                     queue=queue.name)
        if spec.exclusive and service is not None:
            with self.cache.lock(f"modelci:queue:submit:{service}", timeout=30,
                                 blocking_timeout=30):
                self._refuse_second(spec, service)
                job = self.store.add_job(record)
        else:
            job = self.store.add_job(record)
        if queue is not self.queue and Worker.count(queue=queue) == 0:
            self.store.append_job_logs(job.id, [("WARNING", (
                f"no worker labelled {', '.join(labels_of(queue.name))} serves queue "
                f"{queue.name} now: the job waits for one (modelci-e worker --labels "
                f"{','.join(labels_of(queue.name))})"))])
        try:
            queue.enqueue(
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

    def _refuse_second(self, spec: JobKind, service: str) -> None:
        self.fail_abandoned(service)
        other = self.active(service)
        if other is not None:
            raise JobConflict(
                f"service '{service}' already has {other.kind} job {other.id} ({other.status}); "
                f"{spec.name} jobs run one at a time per service with the other update jobs: "
                f"wait for it or cancel it")

    def active(self, service: str) -> Job | None:
        """The queued or running job of an exclusive kind (an update job) for ``service``."""
        for status in ("running", "queued"):
            jobs = [j for j in self.store.list_jobs(service=service, status=status, limit=1000)
                    if j.kind in KINDS and KINDS[j.kind].exclusive]
            if jobs:
                return jobs[-1]
        return None

    def fail_abandoned(self, service: str | None = None) -> list[Job]:
        """Record ``failed`` for running jobs whose worker died (see the module doc); returns
        them."""
        failed = []
        for job in self.store.list_jobs(service=service, status="running", limit=1000):
            why = self._abandoned(job)
            if why is None:
                continue
            done = self.store.transition_job(job.id, "failed", ["running"],
                                             finished_at=utcnow(), error=why)
            if done is not None:
                self.store.append_job_logs(job.id, [("ERROR", why)])
                log.warning("job %s: %s", job.id, why)
                failed.append(done)
        return failed

    def _abandoned(self, job: Job) -> str | None:
        if not job.worker:
            return None  # between the status change and the worker's name: still starting
        worker = Worker.find_by_key(Worker.redis_worker_namespace_prefix + job.worker,
                                    connection=self.cache)
        if worker is None:
            return f"worker lost: {job.worker} is no longer registered"
        if worker.hostname == socket.gethostname() and worker.pid \
                and not psutil.pid_exists(worker.pid):
            worker.register_death()
            return f"worker lost: {job.worker} (pid {worker.pid}) is no longer running"
        registry = StartedJobRegistry(job.queue or self.queue.name, connection=self.cache)
        if job.id in registry.get_expired_job_ids(time.time()):
            return f"worker lost: no heartbeat from {job.worker} for job {job.id}"
        return None

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
        """Jobs waiting in the queue and in the labelled queues of the placed services."""
        for service in self.placement:
            self.queue_for(service)
        return sum(queue.count for queue in self._queues.values())

    def worker_count(self) -> int:
        """Workers currently serving the unlabelled queue."""
        return Worker.count(queue=self.queue)


__all__ = ["JobConflict", "JobQueue", "JobRejected", "TERMINAL_JOB_STATES"]
