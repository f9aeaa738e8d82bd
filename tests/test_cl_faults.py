"""Faults in the CL loop, on real parts: the redis-server stopped mid-stream and started again
(no accepted record lost, from the ingest API's collector nor the proxy's), and an RQ worker
killed mid-job (the job is recorded failed, the champion stays, the next trigger works)."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from pathlib import Path

import redis
from sklearn.datasets import load_digits

from cl_server.api.app import service_record
from cl_server.collector.service import ServiceCollector, keys
from cl_server.config import parse_config
from cl_server.embedded.services import redis_process
from cl_server.loop import ServiceLoop
from cl_server.queue import JobConflict, JobQueue, WorkerSettings
from cl_server.runtime import worker_process
from cl_server.store import MongoStore
from plugin.proxy.collector import RequestCollector, ServedRequest
from plugin.serving.factory import make_adapter, routing_path
from plugin.serving.routing import RoutingTable
from plugin.serving.triton_server import TritonServer
from tests.test_queue import terminal, wait_for

DIGITS = """
name: digits
engine: {kind: triton, model_name: %(model)s, url: "%(url)s", model_repository: "%(repo)s"}
model: {template: mlp, template_params: {hidden: [64]}, input: {shape: [64]},
        classes: ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]}
cl: {strategy: {name: naive}, rehearsal: {kind: class_balanced, size: 300}, epochs: %(epochs)d,
     batch_size: 32, learning_rate: 0.003}
validation: {recent_holdout: 150, historical_per_class: 20,
             gates: {min_accuracy_gain: 0.0, max_class_drop: 0.3}}
triggers: {cooldown_s: 0, rules: [{kind: volume, new_labels: 1000000}]}
"""


def digit_records(classes: set[int], start: int) -> list[dict[str, object]]:
    x, y = load_digits(return_X_y=True)
    return [{"request_id": f"d{start + n}", "inputs": (x[i] / 16.0).tolist(), "label": str(y[i])}
            for n, i in enumerate(i for i in range(len(y)) if y[i] in classes)]


V2_REQUEST = b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [%d, 0, 1]}]}'
V2_RESPONSE = b'{"outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 2], "data": [0.2, 0.8]}]}'


# --- Redis stopped mid-stream -------------------------------------------------------------------

def test_redis_stopped_mid_stream_and_restarted_loses_no_accepted_record(
        store: MongoStore, tmp_path: Path) -> None:
    config = parse_config("name: tab\nengine: {kind: triton, model_name: tab}\n"
                          "model: {template: mlp, input: {shape: [3]}, classes: [a, b]}\n", env={})
    proc, url = redis_process(tmp_path / "data")
    proc.start()
    cache = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=1)
    ingest = ServiceCollector(config, cache, store, tmp_path / "spool")
    proxy = RequestCollector(url, "tab", "triton", spool_dir=tmp_path / "proxy-spool")
    loop = ServiceLoop(config, store, cache, JobQueue(store, cache, name="faults"),
                       collector=ingest)
    accepted: list[str] = []
    offered: list[str] = []
    phase = {"n": 0}
    stop = threading.Event()

    def stream() -> None:  # ingest batches and proxy records, without pause, across the outage
        while not stop.is_set():
            n = phase["n"]
            batch = [{"request_id": f"i{n}-{k}", "inputs": [n, k, 1.0]} for k in range(5)]
            result = ingest.ingest(batch)
            assert result.accepted == 5 and not result.rejected
            accepted.extend(r["request_id"] for r in batch)
            request_id = f"p{n}"
            proxy.offer(ServedRequest(request_id, 1, "champion", int(time.time() * 1000), 1.0,
                                      V2_REQUEST % n, None, None, V2_RESPONSE, None, None))
            offered.append(request_id)
            phase["n"] = n + 1
            time.sleep(0.005)

    thread = threading.Thread(target=stream, daemon=True)
    thread.start()
    try:
        wait_until(lambda: phase["n"] >= 100)
        proc.stop()  # SIGTERM: redis-server writes its snapshot and exits
        stopped_at = phase["n"]
        wait_until(lambda: phase["n"] >= stopped_at + 150)  # the callers never noticed
        assert ingest.writer.degraded and len(ingest.writer.spool) > 0
        restarted, again = redis_process(tmp_path / "data")
        assert again == url
        restarted.start()
        try:
            wait_until(lambda: phase["n"] >= stopped_at + 250)
            stop.set()
            thread.join(10)
            assert not thread.is_alive()
            loop.step()  # the loop replays what the ingest collector still holds
            assert not ingest.writer.degraded and len(ingest.writer.spool) == 0
            assert proxy.flush(timeout_s=20)
            wait_until(lambda: not proxy.writer.degraded)
            check = redis.Redis.from_url(url)
            entries = [fields[b"id"].decode() for _, fields in
                       check.xrange(keys("tab")["served"])]
            check.close()
        finally:
            restarted.stop()
    finally:
        stop.set()
        proxy.close(timeout_s=2)
        cache.close()
        if proc.running:
            proc.stop()
    from_ingest = [e for e in entries if e.startswith("i")]
    from_proxy = [e for e in entries if e.startswith("p")]
    assert from_ingest == accepted  # every accepted record, once each, in arrival order
    assert from_proxy == offered and proxy.dropped == 0
    assert ingest.writer.spooled > 0 and proxy.writer.spooled > 0  # the outage was real


def wait_until(condition: object, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# --- a worker killed mid-job --------------------------------------------------------------------

def test_a_worker_killed_mid_job_fails_the_job_keeps_the_champion_and_the_next_trigger_works(
        triton_server: TritonServer, store: MongoStore, store_uri: str, redis_url: str,
        tmp_path: Path) -> None:
    engine = {"model": f"faults_{uuid.uuid4().hex[:6]}", "url": triton_server.url,
              "repo": triton_server.repository}
    quick = parse_config(DIGITS % {**engine, "epochs": 10}, env={})
    slow = parse_config(DIGITS % {**engine, "epochs": 5000}, env={})  # killed while training
    adapter = make_adapter(quick, RoutingTable(routing_path(tmp_path, "digits")))
    cache = redis.Redis.from_url(redis_url)
    store.upsert_service(service_record(quick))
    queue = JobQueue(store, cache, name=f"q{uuid.uuid4().hex[:8]}", job_timeout_s=600)
    collector = ServiceCollector(quick, cache, store, tmp_path / "spool", seed=0)
    loop = ServiceLoop(quick, store, cache, queue)
    settings = WorkerSettings(redis_url, store_uri, store.db.name, queue.queue.name)
    worker = worker_process(settings, tmp_path / "run", 1)  # data dir: tmp_path
    worker.start()
    replacement = None
    try:
        collector.ingest(digit_records({0, 1, 2, 3, 4}, 0))
        loop.request_manual("first model", "test")
        first = wait_for(store, loop.step()["submitted"], terminal, timeout_s=180)
        assert first.status == "succeeded" and first.result["outcome"] == "deployed"
        assert store.get_service("digits").champion_version == 1 and adapter.current() == 1
        loop.step()  # sees the job end

        collector.ingest(digit_records({5, 6, 7, 8, 9}, 1000))
        store.upsert_service(service_record(slow))  # the champion stays 1
        loop.request_manual("new classes", "test")
        doomed_id = loop.step()["submitted"]
        wait_for(store, doomed_id, lambda j: any("scenario" in line.message
                                                 for line in store.job_logs(j.id)),
                 timeout_s=120)
        try:  # one update job per service at a time
            queue.submit("cl_update", {"service": "digits"}, service="digits")
            raise AssertionError("a second update job was accepted")
        except JobConflict as exc:
            assert doomed_id in str(exc)
        assert worker.pid is not None
        os.killpg(worker.pid, signal.SIGKILL)  # the worker and its work horse, mid-training
        wait_until(lambda: not worker.running)
        outcome = loop.step()
        doomed = store.get_job(doomed_id)
        assert doomed.status == "failed" and "worker lost" in (doomed.error or "")
        assert loop.job_id is None and outcome["submitted"] is None
        assert any("worker lost" in line.message for line in store.job_logs(doomed_id))
        assert store.get_service("digits").champion_version == 1
        assert [v.version for v in store.list_versions("digits")
                if v.status == "champion"] == [1]
        assert adapter.current() == 1 and adapter.loaded() == [1]  # Triton serves it still

        store.upsert_service(service_record(quick))
        replacement = worker_process(settings, tmp_path / "run2", 2)
        replacement.start()
        loop.request_manual("after the crash", "test")
        retry_id = loop.step()["submitted"]
        assert retry_id is not None and retry_id != doomed_id
        retry = wait_for(store, retry_id, terminal, timeout_s=180)
        assert retry.status == "succeeded" and retry.result["outcome"] == "deployed", retry.error
        assert retry.result["scenario"] == "nc"
        assert store.get_service("digits").champion_version == retry.result["version"]
        assert adapter.current() == retry.result["version"]
    finally:
        if replacement is not None:
            replacement.stop()
        worker.stop()
        cache.close()
