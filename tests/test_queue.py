"""The job queue with a real RQ worker process on the embedded redis-server and store."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from cl_server.queue import JobConflict, JobQueue, JobRejected, WorkerSettings
from cl_server.runtime import worker_process
from cl_server.store import Job, MongoStore


@pytest.fixture
def queue(store: MongoStore, redis_url: str) -> Iterator[JobQueue]:
    cache = redis.Redis.from_url(redis_url)
    yield JobQueue(store, cache, name=f"q{uuid.uuid4().hex[:8]}", job_timeout_s=60)
    cache.close()


@pytest.fixture
def worker(queue: JobQueue, store: MongoStore, store_uri: str, redis_url: str,
           tmp_path: Path) -> Iterator[None]:
    settings = WorkerSettings(redis_url, store_uri, store.db.name, queue.queue.name)
    proc = worker_process(settings, tmp_path, 1)
    proc.start()
    try:
        yield
    finally:
        proc.stop()


def wait_for(store: MongoStore, job_id: str, done: Callable[[Job], bool],
             timeout_s: float = 60.0) -> Job:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = store.get_job(job_id)
        if job is not None and done(job):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not reach the state in {timeout_s} s: "
                         f"{store.get_job(job_id)}")


def terminal(job: Job) -> bool:
    return job.status in ("succeeded", "failed", "cancelled")


def test_job_runs_in_a_worker_process(queue: JobQueue, store: MongoStore, worker: None) -> None:
    job = queue.submit("healthcheck", {"hold_s": 0.2})
    assert job.status == "queued"
    done = wait_for(store, job.id, terminal)
    assert done.status == "succeeded", done.error
    assert done.result["held_s"] == 0.2 and done.result["store_rtt_s"] > 0
    assert done.worker and done.worker.startswith("modelci-embedded-1-")
    assert done.started_at >= done.created_at and done.finished_at >= done.started_at
    messages = [line.message for line in store.job_logs(job.id)]
    assert messages[0].startswith("started healthcheck") and messages[-1] == "succeeded"


def test_failing_job_is_failed_with_reason(queue: JobQueue, store: MongoStore,
                                           worker: None) -> None:
    job = queue.submit("healthcheck", {"fail": True})
    done = wait_for(store, job.id, terminal)
    assert done.status == "failed"
    assert done.error == "RuntimeError: failed on request (fail=true)"
    errors = [line for line in store.job_logs(job.id) if line.level == "ERROR"]
    assert errors and "Traceback" in errors[0].message
    after = queue.submit("healthcheck")
    assert wait_for(store, after.id, terminal).status == "succeeded"


def test_cancel_running_job_stops_it(queue: JobQueue, store: MongoStore, worker: None) -> None:
    job = queue.submit("healthcheck", {"hold_s": 60})
    wait_for(store, job.id, lambda j: j.status == "running" and len(store.job_logs(j.id)) >= 2)
    start = time.monotonic()
    cancelled = queue.cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.cancel_requested
    time.sleep(1.0)
    final = store.get_job(job.id)
    assert final.status == "cancelled" and final.result is None
    assert time.monotonic() - start < 30
    with pytest.raises(JobConflict, match="is cancelled"):
        queue.cancel(job.id)
    follow_up = queue.submit("healthcheck")
    assert wait_for(store, follow_up.id, terminal).status == "succeeded"


def test_cancel_queued_job_never_runs(queue: JobQueue, store: MongoStore, worker: None) -> None:
    blocker = queue.submit("healthcheck", {"hold_s": 60})
    waiting = queue.submit("healthcheck")
    wait_for(store, blocker.id, lambda j: j.status == "running")
    assert store.get_job(waiting.id).status == "queued"
    assert queue.cancel(waiting.id).status == "cancelled"
    assert queue.depth() == 0
    queue.cancel(blocker.id)
    probe = queue.submit("healthcheck")
    assert wait_for(store, probe.id, terminal).status == "succeeded"
    final = store.get_job(waiting.id)
    assert final.status == "cancelled" and final.started_at is None
    assert [line.message for line in store.job_logs(waiting.id)] == [
        "cancel requested by an operator"]


def test_cancel_finished_job_conflicts(queue: JobQueue, store: MongoStore, worker: None) -> None:
    job = queue.submit("healthcheck")
    wait_for(store, job.id, terminal)
    with pytest.raises(JobConflict, match="is succeeded"):
        queue.cancel(job.id)
    with pytest.raises(KeyError):
        queue.cancel("0" * 32)


def test_bad_submissions_queue_nothing(queue: JobQueue, store: MongoStore) -> None:
    with pytest.raises(JobRejected, match="unknown job kind 'train'"):
        queue.submit("train")
    with pytest.raises(JobRejected) as caught:
        queue.submit("healthcheck", {"hold_s": "soon", "x": 1})
    assert {d["path"] for d in caught.value.details} == {"hold_s", "x"}
    assert store.list_jobs() == [] and queue.depth() == 0


def test_job_ids_unique_across_submissions(queue: JobQueue) -> None:
    ids = {queue.submit("healthcheck").id for _ in range(20)}
    assert len(ids) == 20 and queue.depth() == 20


def test_job_of_a_kind_the_worker_lacks_fails_clearly(queue: JobQueue, store: MongoStore,
                                                      worker: None) -> None:
    job = store.add_job(Job(kind="retired-kind"))
    queue.queue.enqueue("cl_server.queue.worker.run_job", job.id, job_id=job.id)
    done = wait_for(store, job.id, terminal)
    assert done.status == "failed"
    assert done.error.startswith("LookupError: this worker has no job kind 'retired-kind'")


def test_integral_json_numbers_are_integers_for_integer_parameters(queue: JobQueue) -> None:
    job = queue.submit("cl_update", {"service": "svc", "seed": 3.0, "drift_magnitude": 1})
    assert job.params["seed"] == 3 and isinstance(job.params["seed"], int)
    with pytest.raises(JobRejected, match="invalid parameters"):
        queue.submit("cl_update", {"service": "svc", "seed": 3.5})


def test_update_jobs_of_one_service_run_one_at_a_time_whatever_their_kind(
        queue: JobQueue, store: MongoStore) -> None:
    first = queue.submit("cl_update", {"service": "svc-a"})  # no worker: it stays queued
    assert first.service == "svc-a"  # taken from the parameters
    with pytest.raises(JobConflict, match=f"cl_update job {first.id} \\(queued\\)"):
        queue.submit("cl_promote", {"service": "svc-a", "version": 2})
    with pytest.raises(JobConflict):
        queue.submit("cl_update", {"service": "svc-a"}, service="svc-a")
    other = queue.submit("cl_update", {"service": "svc-b"})  # another service is free
    assert queue.active("svc-a").id == first.id and queue.active("svc-b").id == other.id
    queue.submit("healthcheck", {})  # not an update job: never held back
    queue.cancel(first.id)
    assert queue.active("svc-a") is None
    assert queue.submit("cl_promote", {"service": "svc-a", "version": 2}).kind == "cl_promote"
