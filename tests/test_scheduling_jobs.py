"""Scheduling of real jobs in real RQ worker processes (embedded Redis and store).

- Placement: a service whose jobs need the label ``gpu`` has them on the ``@gpu`` queue; a plain
  worker leaves them, a worker started with ``--labels gpu`` runs them.
- A ``cl_update`` job under ``slo-aware`` is held, paused and resumed by the latency figures
  published in Redis (as the proxy publishes them), logs each decision, keeps its schedule on
  the job record, and trains exactly the weights an ``immediate`` job trains with the same seed.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import torch

from cl_server.api.app import service_record
from cl_server.collector.service import ServiceCollector
from cl_server.config import parse_config
from cl_server.queue import JobQueue, WorkerSettings
from cl_server.runtime import worker_process
from cl_server.store import MongoStore
from model_factory.templates import Classifier
from plugin.proxy.metrics import publish_recent_latency
from tests.test_cl_update_job import feed
from tests.test_queue import terminal, wait_for
from tests.test_scheduling import Background


def test_jobs_go_to_the_worker_with_the_labels_their_service_needs(
        store: MongoStore, store_uri: str, redis_url: str, tmp_path: Path) -> None:
    cache = redis.Redis.from_url(redis_url)
    base = f"q{uuid.uuid4().hex[:8]}"
    queue = JobQueue(store, cache, name=base, job_timeout_s=60,
                     placement={"svc-gpu": ["gpu"], "svc-any": []})
    plain = worker_process(WorkerSettings(redis_url, store_uri, store.db.name, base),
                           tmp_path / "run", 1)
    labelled = worker_process(WorkerSettings(redis_url, store_uri, store.db.name, base,
                                             ("gpu",)), tmp_path / "run", 2)
    plain.start()
    try:
        placed = queue.submit("healthcheck", {"hold_s": 0.1}, service="svc-gpu")
        anywhere = queue.submit("healthcheck", {"hold_s": 0.1}, service="svc-any")
        assert placed.queue == f"{base}@gpu" and anywhere.queue == base
        done = wait_for(store, anywhere.id, terminal)
        assert done.status == "succeeded" and "-1-" in (done.worker or "")
        time.sleep(1.0)  # the plain worker is idle and still leaves the placed job alone
        assert store.get_job(placed.id).status == "queued"
        assert queue.depth() == 1
        warnings = [line.message for line in store.job_logs(placed.id)
                    if line.level == "WARNING"]
        assert warnings and "no worker labelled gpu serves queue" in warnings[0]
        labelled.start()
        done = wait_for(store, placed.id, terminal)
        assert done.status == "succeeded" and "-2-" in (done.worker or "")
        # A labelled worker also takes the jobs any worker may run.
        plain.stop()
        later = queue.submit("healthcheck", {}, service="svc-any")
        assert "-2-" in (wait_for(store, later.id, terminal).worker or "")
    finally:
        plain.stop()
        labelled.stop()
        cache.close()


CONFIG = """
name: digits
engine: {kind: triton, model_name: digits}
model: {template: mlp, template_params: {hidden: [128]}, input: {shape: [64]},
        classes: ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]}
cl: {strategy: {name: naive}, epochs: 20, batch_size: 32, learning_rate: 0.003}
validation: {recent_holdout: 150, historical_per_class: 20}
scheduling: {policy: POLICY, threads: 1, slo: {p95_ms: 10}, max_pause_s: 20}
"""


def session_nice(pid: int) -> int | None:
    """The niceness of ``pid``'s autogroup (None: autogroups off)."""
    if Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "0":
        return None
    fields = Path(f"/proc/{pid}/autogroup").read_text().split()
    return int(fields[fields.index("nice") + 1])


class Flapping(Background):
    """Publishes the service's recent latency like the proxy, alternating above 1.5x the SLO
    for ``high_s`` (long enough for the policy's level to rise: a pause) and within it for
    ``low_s`` (a resume), every 0.1 s."""

    def __init__(self, client: redis.Redis, service: str, high_s: float = 1.2,
                 low_s: float = 0.6):
        super().__init__()
        self.client, self.service, self.high_s, self.low_s = client, service, high_s, low_s

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.is_set():
            high = (time.monotonic() - start) % (self.high_s + self.low_s) < self.high_s
            publish_recent_latency(self.client, self.service, {
                "p50_ms": 4.0, "p95_ms": 40.0 if high else 6.0, "p99_ms": 50.0, "count": 60})
            self._stop.wait(0.1)


@pytest.fixture
def digits_worker(store: MongoStore, store_uri: str, redis_url: str, tmp_path: Path
                  ) -> Iterator[tuple[JobQueue, redis.Redis, int]]:
    cache = redis.Redis.from_url(redis_url)
    queue = JobQueue(store, cache, name=f"q{uuid.uuid4().hex[:8]}", job_timeout_s=300)
    config = parse_config(CONFIG.replace("POLICY", "immediate"), env={})
    store.upsert_service(service_record(config))
    feed(ServiceCollector(config, cache, store, tmp_path / "spool", seed=0), set(range(10)), 0)
    proc = worker_process(WorkerSettings(redis_url, store_uri, store.db.name, queue.queue.name),
                          tmp_path / "run", 1)
    proc.start()
    try:
        assert proc.pid is not None
        yield queue, cache, proc.pid
    finally:
        proc.stop()
        cache.close()


def test_slo_aware_job_pauses_resumes_and_trains_the_same_weights(
        digits_worker: tuple[JobQueue, redis.Redis, int], store: MongoStore) -> None:
    queue, cache, worker_pid = digits_worker
    params = {"service": "digits", "seed": 4, "deploy": False}
    plain = queue.submit("cl_update", params, service="digits")
    plain = wait_for(store, plain.id, terminal, timeout_s=180)
    assert plain.status == "succeeded", plain.error
    assert plain.schedule is not None and plain.schedule["policy"] == "immediate"
    assert plain.schedule["pauses"] == 0 and plain.schedule["paced_s"] == 0

    # Idle priority (opt-in): SCHED_IDLE threads and, where autogroups are on, the worker's
    # session at nice 19 while the job runs, then back.
    store.upsert_service(service_record(parse_config(
        CONFIG.replace("POLICY", "slo-aware, idle_priority: true"), env={})))
    group_before = session_nice(worker_pid)
    with Flapping(cache, "digits"):
        paced = queue.submit("cl_update", params, service="digits")
        paced = wait_for(store, paced.id, terminal, timeout_s=240)
    assert paced.status == "succeeded", paced.error
    schedule = paced.schedule
    assert schedule["policy"] == "slo-aware" and schedule["slo_p95_ms"] == 10
    assert schedule["pauses"] >= 1 and schedule["paused_s"] > 0
    assert schedule["limits"] == {"threads": 1, "nice": 19, "sched": "idle", **(
        {} if group_before is None else {"autogroup_nice": 19})}
    assert session_nice(worker_pid) == group_before  # the worker's session is back
    assert schedule["state"] in ("running", "paced") and schedule["steps"] > 0
    assert schedule["signals"]["queue_depth"] == 0  # the job's own queue, read live
    log = [line.message for line in store.job_logs(paced.id)]
    assert any("scheduling [slo-aware]: paused: inference p95 40 ms" in m for m in log)
    assert any("scheduling [slo-aware]: running: resumed" in m for m in log)

    first = Classifier.load(Path(store.get_version("digits", plain.result["version"])
                                 .artifact_uri))
    second = Classifier.load(Path(store.get_version("digits", paced.result["version"])
                                  .artifact_uri))
    assert plain.result["version"] != paced.result["version"]
    for name, tensor in first.net.state_dict().items():
        assert torch.equal(tensor, second.net.state_dict()[name]), name
