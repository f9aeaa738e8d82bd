"""Live stages of a challenger on real parts: the real tritonserver, the request-collecting proxy,
the embedded Redis and store, an RQ worker process.

A shadow stage (mirrored traffic: agreement, then accuracy on labels that come back) and a
canary stage (a share of the traffic) pass and the challenger is promoted; a shadow stage that
gets no traffic fails its gate, the challenger is unloaded and rejected, the champion stays;
manual approval holds a passing challenger until an engineer approves (a ``cl_promote`` job)
or rejects it.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import requests
from sklearn.datasets import load_digits

from cl_server.api import create_app
from cl_server.api.app import service_record
from cl_server.collector.service import ServiceCollector
from cl_server.config import ServiceConfig, parse_config
from cl_server.queue import JobQueue, WorkerSettings
from cl_server.runtime import worker_process
from cl_server.store import DataQuery, Job, MongoStore
from plugin.proxy.app import InferenceProxy
from plugin.proxy.collector import RequestCollector
from plugin.proxy.runner import ProxyThread
from plugin.serving.factory import make_adapter, routing_path
from plugin.serving.routing import RoutingTable
from plugin.serving.triton_server import TritonServer
from tests.test_queue import terminal, wait_for

YAML = """
name: digits-live
engine: {kind: triton, model_name: %(model)s, url: "%(url)s", model_repository: "%(repo)s"}
model: {template: mlp, template_params: {hidden: [64]}, input: {shape: [64]},
        classes: ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]}
cl: {strategy: {name: naive}, rehearsal: {kind: class_balanced, size: 300}, epochs: 15,
     batch_size: 32, learning_rate: 0.003}
validation:
  recent_holdout: 100
  historical_per_class: 20
  gates: {min_accuracy_gain: 0.0, max_class_drop: 0.5, max_live_accuracy_drop: 0.1}
  shadow_requests: %(shadow)s
  min_live_labels: 20
  stage_timeout_s: %(timeout)s
  manual_approval: %(approval)s
deployment: {rollout: %(rollout)s, canary: {share: 0.5, min_requests: 30}}
"""

X, Y = load_digits(return_X_y=True)
ORDER = [int(i) for i in np.random.default_rng(0).permutation(len(Y))]


class Live:
    """A service on Triton behind the proxy, with a worker; ``traffic()`` sends labeled
    requests of every class through the proxy until stopped."""

    def __init__(self, triton: TritonServer, store: MongoStore, store_uri: str, redis_url: str,
                 root: Path):
        self.fields = {"model": f"live_{uuid.uuid4().hex[:6]}", "url": triton.url,
                       "repo": triton.repository}
        self.store = store
        self.cache = redis.Redis.from_url(redis_url)
        self.queue = JobQueue(store, self.cache, name=f"q{uuid.uuid4().hex[:8]}",
                              job_timeout_s=300)
        self.config = self.configure()
        self.collector = ServiceCollector(self.config, self.cache, store, root / "spool",
                                          seed=0)
        self.worker = worker_process(WorkerSettings(redis_url, store_uri, store.db.name,
                                                    self.queue.queue.name),
                                     root / "data" / "run", 1)
        self.adapter = make_adapter(self.config, RoutingTable(routing_path(root / "data",
                                                                           "digits-live")))
        self.proxy = ProxyThread(InferenceProxy(
            "triton", triton.url, self.fields["model"], "digits-live", self.adapter.routing,
            RequestCollector(redis_url, "digits-live", "triton", spool_dir=root / "pspool")))
        self.sent = 0

    def configure(self, shadow: int = 0, rollout: str = "direct", approval: bool = False,
                  timeout: float = 120) -> ServiceConfig:
        self.config = parse_config(YAML % {**self.fields, "shadow": shadow, "rollout": rollout,
                                           "approval": str(approval).lower(),
                                           "timeout": timeout}, env={})
        self.store.upsert_service(service_record(self.config))
        return self.config

    def feed(self, indices: list[int], prefix: str) -> None:
        records = [{"request_id": f"{prefix}{i}", "inputs": (X[i] / 16).tolist(),
                    "label": str(Y[i])} for i in indices]
        assert self.collector.ingest(records).accepted == len(records)

    def update(self) -> Job:
        job = self.queue.submit("cl_update", {"service": "digits-live"}, service="digits-live")
        return wait_for(self.store, job.id, terminal, timeout_s=240)

    def traffic(self, stop: threading.Event) -> None:
        session = requests.Session()
        url = f"{self.proxy.url}/v2/models/{self.fields['model']}/infer"
        pending: list[dict[str, str]] = []
        n = 0
        while not stop.is_set():
            index = ORDER[n % len(ORDER)]
            request_id = f"t{n}"
            body = {"inputs": [{"name": "INPUT__0", "shape": [1, 64], "datatype": "FP32",
                                "data": (X[index] / 16).tolist()}]}
            answer = session.post(url, json=body, headers={"X-Request-Id": request_id},
                                  timeout=10)
            assert answer.status_code == 200, answer.text
            pending.append({"request_id": request_id, "label": str(Y[index])})
            n += 1
            if len(pending) >= 10:  # labels come back a little later, by request id
                time.sleep(0.1)
                result = self.collector.label(pending)
                pending = [p for p in pending if p["request_id"] in result.unknown_ids]
            time.sleep(0.01)
        self.sent = n

    def close(self) -> None:
        self.proxy.close()
        self.worker.stop()
        self.cache.close()


@pytest.fixture
def live(triton_server: TritonServer, store: MongoStore, store_uri: str, redis_url: str,
         tmp_path: Path) -> Iterator[Live]:
    service = Live(triton_server, store, store_uri, redis_url, tmp_path)
    service.worker.start()
    service.proxy.start()
    try:
        service.feed([i for i in ORDER if Y[i] < 5][:400], "a")
        first = service.update()  # the first version: no champion, no live stages
        assert first.result["outcome"] == "deployed", first.error
        assert service.adapter.current() == 1
        yield service
    finally:
        service.close()


def with_traffic(live: Live, run: Any) -> Any:
    stop = threading.Event()
    thread = threading.Thread(target=live.traffic, args=(stop,), daemon=True)
    thread.start()
    try:
        return run()
    finally:
        stop.set()
        thread.join(30)


def test_shadow_then_canary_then_promotion(live: Live) -> None:
    live.configure(shadow=40, rollout="canary")
    live.feed([i for i in ORDER if Y[i] >= 5][:400], "b")
    job = with_traffic(live, live.update)
    assert job.status == "succeeded", job.error
    assert job.result["outcome"] == "deployed" and job.result["version"] == 2
    assert live.adapter.current() == 2 and live.adapter.loaded() == [2]
    validation = live.store.get_validation(job.result["validation_id"])
    gates = [(g.name, g.passed) for g in validation.gates]
    assert gates[-3:] == [("min_shadow_agreement", True), ("max_live_accuracy_drop", True),
                          ("max_live_accuracy_drop", True)]
    assert validation.passed
    shadow, canary = validation.report["live"]["shadow"], validation.report["live"]["canary"]
    assert shadow["requests"] == 40 and shadow["labeled"] >= 20
    assert 0 <= shadow["agreement"] <= 1
    # The challenger knows classes 5-9, the champion does not: it must score better live.
    assert shadow["challenger_accuracy"] > shadow["champion_accuracy"]
    assert canary["requests"] >= 30 and canary["labeled"] >= 20
    assert canary["challenger_accuracy"] > canary["champion_accuracy"]
    logs = " ".join(line.message for line in live.store.job_logs(job.id))
    assert "shadow stage: min_shadow_agreement pass" in logs and "canary stage" in logs
    labeled = live.store.run_data_query(DataQuery(filter={"service": "digits-live",
                                                          "source": "feedback"}))
    assert labeled and {s.model_version for s in labeled} <= {1, 2}


def test_a_shadow_stage_without_traffic_rejects_and_keeps_the_champion(live: Live) -> None:
    live.configure(shadow=40, rollout="shadow", timeout=3)
    live.feed([i for i in ORDER if Y[i] >= 5][:300], "b")
    job = live.update()  # no traffic at all
    assert job.status == "succeeded", job.error
    assert job.result["outcome"] == "rejected" and job.result["failed_gates"] == [
        "shadow_requests"]
    assert live.store.get_version("digits-live", 2).status == "rejected"
    assert live.adapter.current() == 1 and live.adapter.loaded() == [1]
    assert live.adapter.routing.read().shadow is None
    validation = live.store.get_validation(job.result["validation_id"])
    assert not validation.passed and validation.gates[-1].name == "shadow_requests"
    assert "only 0 of 40 mirrored requests" in validation.gates[-1].detail


def test_manual_approval_holds_the_challenger_until_approved_or_rejected(
        live: Live, tokens: dict[str, str]) -> None:
    live.configure(approval=True)
    api = create_app(live.config, live.store, live.cache, queue=live.queue).test_client()
    engineer = {"Authorization": f"Bearer {tokens['engineer']}"}
    live.feed([i for i in ORDER if Y[i] >= 5][:300], "b")
    waiting = live.update()
    assert waiting.result["outcome"] == "awaiting_approval" and waiting.result["version"] == 2
    assert live.store.get_version("digits-live", 2).status == "candidate"
    assert live.adapter.current() == 1
    viewer = api.post("/api/services/digits-live/versions/2/approve", json={},
                      headers={"Authorization": f"Bearer {tokens['viewer']}"})
    assert viewer.status_code == 403
    approved = api.post("/api/services/digits-live/versions/2/approve",
                        json={"reason": "checked the report"}, headers=engineer)
    assert approved.status_code == 202, approved.get_json()
    promote = wait_for(live.store, approved.get_json()["id"], terminal, timeout_s=120)
    assert promote.kind == "cl_promote" and promote.trigger["kind"] == "approval"
    assert promote.status == "succeeded" and promote.result["outcome"] == "deployed"
    assert live.adapter.current() == 2 and live.store.get_service("digits-live") \
        .champion_version == 2
    again = api.post("/api/services/digits-live/versions/2/approve", json={}, headers=engineer)
    assert again.status_code == 409 and "champion" in again.get_json()["error"]["message"]

    live.feed([i for i in ORDER if Y[i] >= 5][300:500], "c")
    third = live.update()
    assert third.result["outcome"] == "awaiting_approval" and third.result["version"] == 3
    rejected = api.post("/api/services/digits-live/versions/3/reject",
                        json={"reason": "not this week"}, headers=engineer)
    assert rejected.status_code == 200 and rejected.get_json()["status"] == "rejected"
    assert live.store.get_version("digits-live", 3).metrics["rejected_because"] == \
        "not this week"
    assert live.adapter.current() == 2
