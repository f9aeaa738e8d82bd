"""The whole CL loop on real parts: the embedded redis-server, the MongoDB-protocol store over
pymongo, an RQ worker process and the real tritonserver behind the serving adapter.

Digits (sklearn's 8x8) classes 0-4 train the first model (a manual trigger); served records of
classes 0-4 form the drift reference; then classes 5-9 appear in the traffic, labels arrive later
through the feedback path; the loop's drift alarm starts an update job that grows the model (NC),
validates it against the champion and deploys it on Triton. A second, manual update with too
few new samples is rejected by a strict gate. Every lineage record is checked, through the store
and the lineage API: drift event -> job -> challenger -> validation -> deployment / rejection.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import redis
from sklearn.datasets import load_digits

from cl_server.api import create_app
from cl_server.api.app import service_record
from cl_server.collector.service import ServiceCollector
from cl_server.config import parse_config
from cl_server.envelope.data import verify_query
from cl_server.loop import ServiceLoop
from cl_server.queue import JobQueue, WorkerSettings
from cl_server.runtime import worker_process
from cl_server.store import MongoStore
from plugin.serving.factory import make_adapter, routing_path
from plugin.serving.routing import RoutingTable
from plugin.serving.triton_server import TritonServer
from tests.test_queue import terminal, wait_for

YAML = """
name: digits-e2e
engine: {kind: triton, model_name: %(model)s, url: "%(url)s", model_repository: "%(repo)s"}
model: {template: mlp, template_params: {hidden: [64]}, input: {shape: [64]},
        classes: ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]}
drift:
  reference_size: 200
  detectors:
    - {kind: ks, signal: inputs, window: 100, alpha: 0.01}
    - {kind: chi2, signal: predictions, window: 100, alpha: 0.01}
triggers: {cooldown_s: 0, rules: [{kind: drift, min_detectors: 2}]}
cl: {strategy: {name: naive}, rehearsal: {kind: class_balanced, size: 300}, epochs: 15,
     batch_size: 32, learning_rate: 0.003, min_new_samples: %(min_new)s, label_wait_s: 60}
validation: {recent_holdout: 150, historical_per_class: 20,
             gates: {min_accuracy_gain: %(gain)s, max_class_drop: 0.2}}
"""

X, Y = load_digits(return_X_y=True)
ORDER = np.random.default_rng(0).permutation(len(Y))


def rows(classes: set[int]) -> list[int]:
    return [int(i) for i in ORDER if Y[i] in classes]


def test_drift_to_deployment_on_triton_with_the_whole_lineage(
        triton_server: TritonServer, store: MongoStore, store_uri: str, redis_url: str,
        tmp_path: Path, tokens: dict[str, str]) -> None:
    model = f"digits_{uuid.uuid4().hex[:6]}"
    fields = {"model": model, "url": triton_server.url, "repo": triton_server.repository}
    config = parse_config(YAML % {**fields, "gain": 0.0, "min_new": 400}, env={})
    cache = redis.Redis.from_url(redis_url)
    queue = JobQueue(store, cache, name=f"q{uuid.uuid4().hex[:8]}", job_timeout_s=300)
    app = create_app(config, store, cache, queue=queue)
    api = app.test_client()
    auth = {"Authorization": f"Bearer {tokens['viewer']}"}
    collector = ServiceCollector(config, cache, store, tmp_path / "spool", seed=0)
    loop = ServiceLoop(config, store, cache, queue)
    settings = WorkerSettings(redis_url, store_uri, store.db.name, queue.queue.name)
    worker = worker_process(settings, tmp_path / "data" / "run", 1)  # data dir: tmp/data
    worker.start()
    adapter = make_adapter(config, RoutingTable(routing_path(tmp_path / "data",
                                                             "digits-e2e")))
    try:
        old, new = rows({0, 1, 2, 3, 4}), rows({5, 6, 7, 8, 9})
        labeled = [{"request_id": f"L{i}", "inputs": (X[i] / 16).tolist(), "label": str(Y[i])}
                   for i in old[:600]]
        assert collector.ingest(labeled).accepted == 600
        loop.request_manual("first model", "test")
        first = wait_for(store, loop.step()["submitted"], terminal, timeout_s=180)
        assert first.status == "succeeded" and first.result["outcome"] == "deployed", first.error
        assert adapter.current() == 1 and store.get_service("digits-e2e").champion_version == 1

        def serve(indices: list[int], prefix: str) -> None:  # what the proxy would record
            answers = np.concatenate([adapter.infer(np.stack(
                [X[i] / 16 for i in indices[k:k + 100]]).astype(np.float32))
                for k in range(0, len(indices), 100)])  # the model's max batch is 256
            classes = store.get_version("digits-e2e", adapter.current()).classes
            records = [{"request_id": f"{prefix}{n}", "inputs": (X[i] / 16).tolist(),
                        "prediction": classes[int(np.argmax(a))]}
                       for n, (i, a) in enumerate(zip(indices, answers, strict=True))]
            assert collector.ingest(records).accepted == len(records)

        serve(old[600:900], "s")  # reference window and one calm window
        calm = loop.step()
        assert calm["alarms"] == [] and calm["submitted"] is None
        serve(new[:100], "n")  # classes 5-9 appear
        drifted = loop.step()
        assert drifted["alarms"] == ["chi2", "ks"] and drifted["submitted"] is not None
        feedback = [{"request_id": f"n{n}", "label": str(Y[i])} for n, i in enumerate(new[:100])]
        assert collector.label(feedback).labeled == 100  # labels arrive late, by request id:
        # the job waits for them (cl.min_new_samples)
        more = [{"request_id": f"M{i}", "inputs": (X[i] / 16).tolist(), "label": str(Y[i])}
                for i in new[100:600]]
        assert collector.ingest(more).accepted == 500
        job = wait_for(store, drifted["submitted"], terminal, timeout_s=240)
        assert job.status == "succeeded", job.error
        assert job.result["outcome"] == "deployed" and job.result["scenario"] == "nc"
        loop.step()
        assert loop.job_id is None

        # drift event -> job
        alarms = {e.id: e for e in store.list_drift_events("digits-e2e") if e.alarm}
        assert job.trigger["kind"] == "drift" and job.trigger["drift_event_ids"]
        assert set(job.trigger["drift_event_ids"]) <= set(alarms)
        assert {alarms[i].detector for i in job.trigger["drift_event_ids"]} == {"ks", "chi2"}
        # job -> challenger (data query re-runs to the same samples)
        v2 = store.get_version("digits-e2e", job.result["version"])
        assert v2.version == 2 and v2.job_id == job.id and v2.parent_version == 1
        assert v2.data_query and verify_query(store, v2.data_query)
        assert len(v2.classes) == 10
        # challenger -> validation -> deployment on Triton
        validation = store.get_validation(job.result["validation_id"])
        assert validation.passed and validation.challenger_version == 2
        assert validation.champion_version == 1
        deployment = [d for d in store.list_deployments("digits-e2e") if d.version == 2]
        assert len(deployment) == 1 and deployment[0].status == "succeeded"
        assert deployment[0].previous_version == 1 and "triton" in deployment[0].detail
        assert adapter.current() == 2 and 2 in adapter.loaded()
        served = adapter.infer(np.stack([X[i] / 16 for i in new[600:700]]).astype(np.float32))
        assert served.shape == (100, 10)
        truth = [v2.classes.index(str(Y[i])) for i in new[600:700]]
        assert float(np.mean(served.argmax(axis=1) == truth)) > 0.8  # it knows the new classes

        # a manual update under a strict gate: rejected, recorded, the champion stays
        strict = parse_config(YAML % {**fields, "gain": 0.5, "min_new": 1}, env={})
        store.upsert_service(service_record(strict))
        few = [{"request_id": f"F{i}", "inputs": (X[i] / 16).tolist(), "label": str(Y[i])}
               for i in new[700:760]]
        collector.ingest(few)
        loop.request_manual("check the gate", "test")
        rejected = wait_for(store, loop.step()["submitted"], terminal, timeout_s=180)
        assert rejected.status == "succeeded" and rejected.result["outcome"] == "rejected"
        assert rejected.result["failed_gates"] == ["min_accuracy_gain"]
        assert store.get_version("digits-e2e", 3).status == "rejected"
        assert adapter.current() == 2 and store.get_service("digits-e2e").champion_version == 2

        lineage = {n["version"]: n for n in api.get("/api/services/digits-e2e/lineage",
                                                     headers=auth).get_json()}
        assert sorted(lineage) == [1, 2, 3]
        assert lineage[2]["trigger"]["drift_event_ids"] == job.trigger["drift_event_ids"]
        assert lineage[2]["scenario"] == "nc" and lineage[2]["validation_passed"] is True
        assert [d["version"] for d in lineage[2]["deployments"]] == [2]
        assert lineage[3]["validation_passed"] is False
        assert lineage[3]["failed_gates"] == ["min_accuracy_gain"] and not lineage[3][
            "deployments"]
        assert lineage[3]["trigger"]["kind"] == "manual" and lineage[3]["parent_version"] == 2
    finally:
        worker.stop()
        cache.close()
