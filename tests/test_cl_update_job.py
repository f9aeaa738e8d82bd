"""The ``cl_update`` job in a real RQ worker process, on the embedded Redis and store.

Digits (sklearn's 8x8, offline) arrive through the collector with their labels: classes 0-4
first (the first version), then 5-9 (new classes: NC). Each job's lineage is checked: version
-> job, data query (re-run: same digest), validation gates, deployment. A strict gate rejects a
challenger and leaves the champion; a tampered champion artifact fails the job.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sklearn.datasets import load_digits
from werkzeug.serving import make_server

from cl_server.api.app import create_app, service_record
from cl_server.auth import ensure_admin
from cl_server.collector.service import ServiceCollector
from cl_server.config import parse_config
from cl_server.config.schema import StrategyConfig
from cl_server.envelope.data import verify_query
from cl_server.queue import JobQueue, WorkerSettings
from cl_server.runtime import worker_process
from cl_server.store import Job, MongoStore
from tests.test_queue import terminal, wait_for

CONFIG = parse_config("""
name: digits
engine: {kind: triton, model_name: digits}
model: {template: mlp, template_params: {hidden: [64]}, input: {shape: [64]},
        classes: ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]}
cl:
  strategy: {name: naive}
  rehearsal: {kind: class_balanced, size: 300}
  epochs: 15
  batch_size: 32
  learning_rate: 0.003
validation:
  recent_holdout: 150
  historical_per_class: 20
  gates: {min_accuracy_gain: 0.0, max_class_drop: 0.2}
""", env={})


@pytest.fixture
def setup(store: MongoStore, store_uri: str, redis_url: str, tmp_path: Path
          ) -> Iterator[tuple[JobQueue, ServiceCollector]]:
    cache = redis.Redis.from_url(redis_url)
    store.upsert_service(service_record(CONFIG))
    queue = JobQueue(store, cache, name=f"q{uuid.uuid4().hex[:8]}", job_timeout_s=300)
    collector = ServiceCollector(CONFIG, cache, store, tmp_path / "spool", seed=0)
    settings = WorkerSettings(redis_url, store_uri, store.db.name, queue.queue.name)
    proc = worker_process(settings, tmp_path / "run", 1)
    proc.start()
    try:
        yield queue, collector
    finally:
        proc.stop()
        cache.close()


def feed(collector: ServiceCollector, classes: set[int], start: int) -> int:
    x, y = load_digits(return_X_y=True)
    rows = [i for i in range(len(y)) if y[i] in classes]
    records = [{"request_id": f"d{start + n}", "inputs": (x[i] / 16.0).tolist(),
                "label": str(y[i])} for n, i in enumerate(rows)]
    outcome = collector.ingest(records)
    assert outcome.accepted == len(records) and not outcome.rejected
    return start + len(records)


def run_update(queue: JobQueue, store: MongoStore, **params: object) -> Job:
    job = queue.submit("cl_update", {"service": "digits", **params}, service="digits",
                       trigger={"kind": "manual", "user": "test"})
    return wait_for(store, job.id, terminal, timeout_s=180)


def test_versions_come_from_jobs_with_their_whole_lineage(
        setup: tuple[JobQueue, ServiceCollector], store: MongoStore, redis_url: str) -> None:
    queue, collector = setup
    next_id = feed(collector, {0, 1, 2, 3, 4}, 0)

    first = run_update(queue, store)
    assert first.status == "succeeded", first.error
    assert first.result["outcome"] == "deployed" and first.result["scenario"] == "retrain"
    v1 = store.get_version("digits", 1)
    assert v1 is not None and v1.job_id == first.id and v1.status == "champion"
    assert v1.classes == ["0", "1", "2", "3", "4"] and v1.parent_version is None
    assert v1.data_query is not None and verify_query(store, v1.data_query)
    assert v1.data_query.sample_count == len(store.run_data_query(v1.data_query))
    assert Path(v1.artifact_uri or "").is_file() and v1.artifact_sha256
    assert store.get_service("digits").champion_version == 1

    feed(collector, {5, 6, 7, 8, 9}, next_id)
    second = run_update(queue, store)
    assert second.status == "succeeded", second.error
    assert second.result["scenario"] == "nc" and second.result["outcome"] == "deployed"
    v2 = store.get_version("digits", 2)
    assert v2.parent_version == 1 and v2.base_version == 1 and v2.job_id == second.id
    assert sorted(v2.classes) == [str(c) for c in range(10)]
    assert v2.metrics["new_samples"] > 0 and v2.metrics["history_samples"] > 0
    assert v2.metrics["recent_accuracy"] > v2.metrics["champion_recent_accuracy"]
    # What the model card shows: data per class (new vs rehearsal), settings, transfer.
    assert set(v2.metrics["new_per_class"]) == {"5", "6", "7", "8", "9"}
    assert sum(v2.metrics["new_per_class"].values()) == v2.metrics["new_samples"]
    assert sum(v2.metrics["history_per_class"].values()) == v2.metrics["history_samples"]
    assert v2.metrics["hyperparameters"]["epochs"] > 0
    validation = store.get_validation(v2.metrics["validation_id"])
    transfer, scores = v2.metrics["transfer"], validation.report
    assert transfer["bwt"] == pytest.approx(scores["challenger"]["historical"]["accuracy"]
                                            - scores["champion"]["historical"]["accuracy"])
    assert transfer["forgetting"] == pytest.approx(-transfer["bwt"])  # two experiences
    assert transfer["fwt"] == pytest.approx(scores["champion"]["recent"]["accuracy"] - 0.1)
    assert 0.5 < transfer["acc"] <= 1
    assert validation.passed and validation.challenger_version == 2
    assert {g.name for g in validation.gates} == {"min_accuracy_gain", "max_class_drop",
                                                  "max_p95_latency_increase",
                                                  "max_model_bytes"}
    deployments = store.list_deployments("digits")
    assert [(d.version, d.previous_version) for d in
            sorted(deployments, key=lambda d: d.version)] == [(1, None), (2, 1)]
    assert store.get_version("digits", 1).status == "retired"
    logs = " ".join(line.message for line in store.job_logs(second.id))
    assert "output layer grown for new classes" in logs and "scenario nc" in logs

    # The same lineage through the API, and the data query re-run.
    cache = redis.Redis.from_url(redis_url)
    client = create_app(CONFIG, store, cache).test_client()
    headers = {"Authorization": f"Bearer {ensure_admin(store)}"}
    nodes = client.get("/api/services/digits/lineage", headers=headers).get_json()
    assert [(n["version"], n["parent_version"], n["status"], n["scenario"]) for n in nodes] == [
        (1, None, "retired", "retrain"), (2, 1, "champion", "nc")]
    assert nodes[1]["trigger"] == {"kind": "manual", "user": "test"}
    assert nodes[1]["validation_passed"] is True and nodes[1]["failed_gates"] == []
    assert [d["previous_version"] for d in nodes[1]["deployments"]] == [1]
    check = client.post("/api/services/digits/versions/2/data-query/verify", headers=headers)
    assert check.status_code == 200 and check.get_json()["matches"] is True
    cache.close()


def test_a_failed_gate_rejects_and_the_champion_stays(
        setup: tuple[JobQueue, ServiceCollector], store: MongoStore) -> None:
    queue, collector = setup
    next_id = feed(collector, {0, 1, 2}, 0)
    assert run_update(queue, store).status == "succeeded"
    service = store.get_service("digits")
    strict = dict(service.config)
    strict["validation"] = {**strict["validation"],
                            "gates": {**strict["validation"]["gates"], "min_accuracy_gain": 0.9}}
    store.update_service("digits", config=strict)
    feed(collector, {0, 1, 2}, next_id)  # more of the same: no 0.9 gain possible
    job = run_update(queue, store)
    assert job.status == "succeeded", job.error
    assert job.result["outcome"] == "rejected"
    assert job.result["failed_gates"] == ["min_accuracy_gain"]
    assert store.get_version("digits", 2).status == "rejected"
    assert store.get_service("digits").champion_version == 1
    assert [d.version for d in store.list_deployments("digits")] == [1]


def test_a_tampered_champion_artifact_fails_the_job(
        setup: tuple[JobQueue, ServiceCollector], store: MongoStore) -> None:
    queue, collector = setup
    next_id = feed(collector, {0, 1}, 0)
    assert run_update(queue, store).status == "succeeded"
    artifact = Path(store.get_version("digits", 1).artifact_uri or "")
    artifact.write_bytes(artifact.read_bytes() + b"tampered")
    feed(collector, {2}, next_id)
    job = run_update(queue, store)
    assert job.status == "failed" and "does not match its recorded sha256" in (job.error or "")
    assert store.get_service("digits").champion_version == 1
    assert len(store.list_versions("digits")) == 1


def test_a_job_without_new_data_fails_with_the_reason(
        setup: tuple[JobQueue, ServiceCollector], store: MongoStore) -> None:
    queue, _ = setup
    job = run_update(queue, store)
    assert job.status == "failed" and "no labeled samples yet" in (job.error or "")


def test_rollback_by_api_returns_to_an_earlier_version(
        setup: tuple[JobQueue, ServiceCollector], store: MongoStore, redis_url: str) -> None:
    queue, collector = setup
    next_id = feed(collector, {0, 1}, 0)
    assert run_update(queue, store).result["outcome"] == "deployed"
    feed(collector, {2, 3}, next_id)
    assert run_update(queue, store).result["outcome"] == "deployed"
    cache = redis.Redis.from_url(redis_url)
    client = create_app(CONFIG, store, cache).test_client()
    headers = {"Authorization": f"Bearer {ensure_admin(store)}"}
    answer = client.post("/api/services/digits/rollback", json={"version": 1}, headers=headers)
    assert answer.status_code == 200, answer.get_json()
    event = answer.get_json()
    assert (event["action"], event["version"], event["previous_version"]) == ("rollback", 1, 2)
    assert store.get_service("digits").champion_version == 1
    assert store.get_version("digits", 2).status == "rolled_back"
    assert store.get_version("digits", 1).status == "champion"
    again = client.post("/api/services/digits/rollback", json={"version": 1}, headers=headers)
    assert again.status_code == 409 and "already the champion" in again.get_json()["error"][
        "message"]
    missing = client.post("/api/services/digits/rollback", json={"version": 9}, headers=headers)
    assert missing.status_code == 404
    cache.close()


def test_rollback_and_the_data_query_check_from_the_cli(setup: tuple[JobQueue, ServiceCollector], store: MongoStore,
                               redis_url: str) -> None:
    queue, collector = setup
    next_id = feed(collector, {0, 1}, 0)
    run_update(queue, store)
    feed(collector, {2}, next_id)
    run_update(queue, store)
    cache = redis.Redis.from_url(redis_url)
    app = create_app(CONFIG, store, cache)
    token = ensure_admin(store)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    env = {**os.environ, "MODELCI_TOKEN": token or "", "OMP_NUM_THREADS": "1"}
    try:
        done = subprocess.run([sys.executable, "-m", "plugin.cli", "rollback", "--url", url,
                               "--service", "digits", "--to", "1"], env=env,
                              capture_output=True, text=True, timeout=120, check=False)
        refused = subprocess.run([sys.executable, "-m", "plugin.cli", "rollback", "--url", url,
                                  "--service", "digits", "--to", "7"], env=env,
                                 capture_output=True, text=True, timeout=120, check=False)
        query = [sys.executable, "-m", "plugin.cli", "data-query", "--url", url, "--service",
                 "digits", "--version", "2"]
        same = subprocess.run(query, env=env, capture_output=True, text=True, timeout=120,
                              check=False)
        v2 = store.get_version("digits", 2)
        one = store.run_data_query(v2.data_query)[5]
        store.db["labeled_samples"].delete_one({"_id": one.id})  # a training sample is lost
        changed = subprocess.run(query, env=env, capture_output=True, text=True, timeout=120,
                                 check=False)
    finally:
        server.shutdown()
        cache.close()
    assert done.returncode == 0, done.stderr
    assert "digits: version 1 is the champion again (was 2)" in done.stdout
    assert refused.returncode == 1 and "rollback refused (HTTP 404)" in refused.stderr
    assert store.get_service("digits").champion_version == 1
    assert same.returncode == 0, same.stderr
    assert "version 2: the query returns exactly the same samples" in same.stdout
    assert f"{v2.data_query.sample_count} samples, sha256 of their ids {v2.data_query.digest}" \
        in same.stdout and '"split": "train"' in same.stdout
    assert changed.returncode == 1
    assert "the query no longer returns exactly the samples" in changed.stderr


def test_several_challengers_compete_and_the_best_passing_one_is_deployed(
        setup: tuple[JobQueue, ServiceCollector], store: MongoStore) -> None:
    queue, collector = setup
    store.upsert_service(service_record(CONFIG.model_copy(update={"cl": CONFIG.cl.model_copy(
        update={"challengers": [StrategyConfig(name="ewc"),
                                StrategyConfig(name="full-retrain")]})})))
    next_id = feed(collector, {0, 1, 2, 3, 4}, 0)
    run_update(queue, store)  # the first version (three from-scratch contenders)
    feed(collector, {5, 6, 7, 8, 9}, next_id)
    job = run_update(queue, store)
    assert job.status == "succeeded", job.error
    contenders = job.result["challengers"]
    assert [c["strategy"] for c in contenders] == ["naive", "ewc", "full-retrain"]
    passing = [c for c in contenders if c["passed"]]
    best = max(passing, key=lambda c: c["recent_accuracy"])
    assert job.result["version"] == best["version"] and job.result["outcome"] == "deployed"
    assert store.get_service("digits").champion_version == best["version"]
    for other in contenders:
        version = store.get_version("digits", other["version"])
        assert version.job_id == job.id and version.metrics["strategy"] == other["strategy"]
        assert store.get_validation(version.metrics["validation_id"]).passed == other["passed"]
        if other is not best:
            assert version.status == "rejected"
            assert version.metrics.get("lost_to") == (best["version"] if other["passed"]
                                                      else None)
    logs = " ".join(line.message for line in store.job_logs(job.id))
    assert f"version {best['version']} goes on" in logs


def test_partial_and_sparse_deployment_modes_change_few_weights(
        setup: tuple[JobQueue, ServiceCollector], store: MongoStore) -> None:
    from model_factory.templates.artifact import read_state

    queue, collector = setup
    next_id = feed(collector, {0, 1, 2, 3, 4}, 0)
    assert run_update(queue, store).result["outcome"] == "deployed"  # v1: every weight

    def weights(version: int) -> dict:
        return read_state(store.get_version("digits", version).artifact_uri)["weights"]

    def changed_share(a: int, b: int) -> float:
        old, new = weights(a), weights(b)
        changed = sum(int((old[k] != new[k]).sum()) for k in old)
        return changed / sum(t.numel() for t in old.values())

    for version, mode, ratio in ((2, "partial", 0.05), (3, "sparse", 0.002), (4, "sparse", 0.002)):
        store.upsert_service(service_record(CONFIG.model_copy(update={
            "deployment": CONFIG.deployment.model_copy(update={"mode": mode, "ratio": ratio})})))
        next_id = feed(collector, {0, 1, 2, 3, 4}, next_id)  # more of the same classes: NI
        job = run_update(queue, store)
        assert job.status == "succeeded", job.error
        record = store.get_version("digits", version)
        assert record.metrics["train"]["deploy_mode"] == mode
        parent = record.parent_version
        share = changed_share(parent, version)
        if mode == "partial":
            assert 0 < share <= ratio + 1e-9  # the mask: ratio of the weights, the rest rewound
        else:  # each step changes ratio of each tensor; the job ships the union of its steps
            assert 0 < share < 0.5
        if mode == "sparse":
            assert Path(record.artifact_uri).with_suffix(".residual.pt").is_file()
        logs = " ".join(line.message for line in store.job_logs(job.id))
        assert f"({mode} update)" in logs or "partial update:" in logs
