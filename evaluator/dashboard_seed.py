"""A service's history written through the store layer, as the CL loop would have left it:
what the dashboard's tests (API and browser) and its load benchmark read.

``digits`` (Triton) went through four versions: v1 the initial model (classes 0-4); v2 an NC
update after drift, deployed; v3 an NI update rejected by the ``max_class_drop`` gate; v4 an NI
update deployed and serving. Labeled served requests and drift evaluations cover the last 50
minutes (accuracy drops at the drift and recovers); ``text`` is a second, paused service.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from cl_server.store import (
    DataQuery,
    Deployment,
    DriftEvent,
    GateResult,
    Job,
    LabeledSample,
    ModelVersion,
    Service,
    Store,
    Validation,
    utcnow,
)
from cl_server.store.entities import sample_id

OLD = [str(c) for c in range(5)]
ALL = [str(c) for c in range(10)]


@dataclass
class Seeded:
    service: str
    champion: int
    versions: list[int]
    rejected: int
    card_version: int
    card_gate_value: float
    card_new_per_class: dict[str, int]
    jobs: list[str]


def _npy() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(64, dtype=np.float32))
    return buffer.getvalue()


def _report(challenger: dict[str, float], champion: dict[str, float] | None,
            recent: float, champion_recent: float | None) -> dict[str, object]:
    def side(per_class: dict[str, float], accuracy: float) -> dict[str, object]:
        return {"recent": {"accuracy": accuracy, "count": 100, "per_class": {}},
                "historical": {"accuracy": sum(per_class.values()) / len(per_class),
                               "count": 20 * len(per_class),
                               "per_class": {c: {"accuracy": a, "count": 20}
                                             for c, a in per_class.items()}}}
    return {"challenger": side(challenger, recent),
            "champion": None if champion is None or champion_recent is None
            else side(champion, champion_recent)}


def seed_history(store: Store, artifacts: Path, now: datetime | None = None) -> Seeded:
    """Write the history (see the module doc), each version's artifact a file of
    ``40_000 + 1_000 * version`` bytes under ``artifacts`` (so rollbacks can check its sha256);
    returns what the tests check against."""
    now = now or utcnow()
    artifacts.mkdir(parents=True, exist_ok=True)
    t0 = now - timedelta(minutes=50)
    drift_at, v2_at, v3_at, v4_at = (t0 + timedelta(minutes=m) for m in (20, 24, 34, 40))
    store.upsert_service(Service(
        name="digits", engine_kind="triton", model_name="digits", classes=ALL,
        config={"description": "handwritten digits, 8x8", "annotator": {
            "kind": "label_studio", "url": "http://127.0.0.1:8080/projects/3"}},
        created_at=t0))
    store.update_service("digits", champion_version=4)  # the service's state, not its definition
    store.upsert_service(Service(name="text", engine_kind="tfserving", model_name="reviews",
                                 classes=["neg", "pos"], created_at=t0))
    store.update_service("text", status="paused")

    def job(trigger: dict[str, object], result: dict[str, object] | None, status: str,
            start: datetime, seconds: float, kind: str = "cl_update",
            error: str | None = None) -> Job:
        return store.add_job(Job(service="digits", kind=kind, params={"service": "digits"},
                                 trigger=trigger, status=status, result=result, error=error,
                                 created_at=start, started_at=start,
                                 finished_at=start + timedelta(seconds=seconds)))

    def version(number: int, parent: int | None, status: str, job_id: str | None,
                classes: list[str], metrics: dict[str, object], at: datetime,
                query: DataQuery | None = None) -> ModelVersion:
        artifact = artifacts / f"v{number}.pt"
        artifact.write_bytes(bytes([number]) * (40_000 + 1_000 * number))
        return store.add_version(ModelVersion(
            service="digits", version=number, parent_version=parent,
            base_version=None if parent is None else 1, job_id=job_id, classes=classes,
            data_query=query, artifact_uri=str(artifact),
            artifact_sha256=hashlib.sha256(artifact.read_bytes()).hexdigest(),
            artifact_bytes=artifact.stat().st_size,
            metrics=metrics, status=status, created_at=at))  # type: ignore[arg-type]

    version(1, None, "retired", None, OLD, {"scenario": "retrain"}, t0)
    store.add_deployment(Deployment(service="digits", version=1, bytes_shipped=41_000,
                                    detail="version 1 serving on triton", actor="cli",
                                    created_at=t0 + timedelta(seconds=5)))

    alarm = DriftEvent(service="digits", detector="chi2", signal="predictions", statistic=88.0,
                       p_value=1e-9, magnitude=0.62, alarm=True, created_at=drift_at,
                       evidence={"note": "classes 5-9 appear"})
    events = [DriftEvent(service="digits", detector=d, signal=s, magnitude=m, alarm=False,
                         created_at=t0 + timedelta(seconds=30 * i))
              for i in range(100) for d, s, m in
              (("ks", "inputs", 0.05 + 0.01 * (i % 3)), ("chi2", "predictions", 0.04))]
    events = [e for e in events if abs((e.created_at - drift_at).total_seconds()) > 1]
    store.add_drift_events([*events, alarm])

    query = DataQuery(filter={"service": "digits", "split": "train",
                              "_id": {"$lte": "1763800000000000000aaaaaaaaaaaaa"}},
                      sort=[("_id", 1)], limit=20_000, sample_count=900, digest="ab" * 32)
    new_per_class = {c: 60 for c in ALL[5:]}
    j2 = job({"kind": "drift", "reason": "drift alarm: chi2 on predictions",
              "drift_event_ids": [alarm.id]},
             {"version": 2, "outcome": "deployed", "scenario": "nc"}, "succeeded",
             drift_at + timedelta(seconds=1), 190.0)
    gates2 = [GateResult(name="min_accuracy_gain", value=0.47, threshold=0.0, passed=True,
                         detail="recent accuracy 0.9700 vs champion 0.5000"),
              GateResult(name="max_class_drop", value=0.01, threshold=0.05, passed=True),
              GateResult(name="max_p95_latency_increase", value=None, threshold=0.5,
                         passed=True, detail="not measured for both versions"),
              GateResult(name="max_model_bytes", value=42_000, threshold=None, passed=True,
                         detail="no limit set")]
    old_acc = {c: 0.97 for c in OLD}
    v2_val = store.add_validation(Validation(
        service="digits", challenger_version=2, champion_version=1, job_id=j2.id,
        gates=gates2, passed=True, created_at=v2_at,
        report=_report({**{c: 0.96 for c in OLD}}, old_acc, 0.97, 0.50)))
    version(2, 1, "retired", j2.id, ALL, {
        "scenario": "nc", "scenario_reason": "new classes 5, 6, 7, 8, 9", "strategy": "ewc",
        "hyperparameters": {"epochs": 3, "batch_size": 64, "learning_rate": 0.001,
                            "mode": "stateful", "rehearsal": "reservoir",
                            "rehearsal_size": 500, "lambda": 100},
        "train": {"seconds": 12.5, "batches": 40.0, "samples": 2560.0, "loss": 0.21},
        "new_samples": 300, "history_samples": 600, "new_per_class": new_per_class,
        "history_per_class": {c: 120 for c in OLD}, "validation_id": v2_val.id,
        "recent_accuracy": 0.97, "champion_recent_accuracy": 0.50,
        "transfer": {"acc": 0.965, "bwt": -0.01, "fwt": 0.4, "forgetting": 0.01}},
        v2_at, query)
    store.add_deployment(Deployment(service="digits", version=2, previous_version=1,
                                    bytes_shipped=42_000, detail="version 2 serving on triton",
                                    actor=f"job:{j2.id}", created_at=v2_at))

    j3 = job({"kind": "volume", "reason": "500 new labels"},
             {"version": 3, "outcome": "rejected", "failed_gates": ["max_class_drop"],
              "scenario": "ni"}, "succeeded", v3_at - timedelta(seconds=60), 55.0)
    gates3 = [GateResult(name="min_accuracy_gain", value=0.01, threshold=0.0, passed=True),
              GateResult(name="max_class_drop", value=0.15, threshold=0.05, passed=False,
                         detail="class 3: 0.9500 -> 0.8000")]
    v3_val = store.add_validation(Validation(
        service="digits", challenger_version=3, champion_version=2, job_id=j3.id,
        gates=gates3, passed=False, created_at=v3_at,
        report=_report({**{c: 0.95 for c in ALL}, "3": 0.80}, {c: 0.95 for c in ALL},
                       0.96, 0.95)))
    version(3, 2, "rejected", j3.id, ALL, {
        "scenario": "ni", "strategy": "naive", "validation_id": v3_val.id,
        "recent_accuracy": 0.96, "champion_recent_accuracy": 0.95}, v3_at)

    j4 = job({"kind": "manual", "reason": "new camera", "user": "engineer"},
             {"version": 4, "outcome": "deployed", "scenario": "ni"}, "succeeded",
             v4_at - timedelta(seconds=45), 45.0)
    v4_val = store.add_validation(Validation(
        service="digits", challenger_version=4, champion_version=2, job_id=j4.id,
        gates=gates2[:2], passed=True, created_at=v4_at,
        report=_report({c: 0.97 for c in ALL}, {c: 0.95 for c in ALL}, 0.97, 0.95)))
    version(4, 2, "champion", j4.id, ALL, {
        "scenario": "ni", "strategy": "si", "validation_id": v4_val.id,
        "recent_accuracy": 0.97, "champion_recent_accuracy": 0.95}, v4_at)
    store.add_deployment(Deployment(service="digits", version=4, previous_version=2,
                                    bytes_shipped=44_000, detail="version 4 serving on triton",
                                    actor=f"job:{j4.id}", created_at=v4_at))
    failed = job({"kind": "time", "reason": "hourly"}, None, "failed",
                 now - timedelta(minutes=4), 3.0, error="worker lost: process 4242 is gone")

    samples = []
    for i in range(600):  # one labeled served request every 5 s
        at = t0 + timedelta(seconds=5 * i)
        label = ALL[i % 10] if at >= drift_at else OLD[i % 5]
        right = at < drift_at or at >= v2_at + timedelta(minutes=2) or label in OLD
        prediction = label if right or i % 7 == 0 else "0"
        samples.append(LabeledSample(
            id=sample_id(int(at.timestamp() * 1000)), service="digits", request_id=f"r{i}",
            inputs=_npy(), label=label, prediction=prediction,
            model_version=1 if at < v2_at else 2 if at < v4_at else 4, created_at=at))
    store.add_labeled_samples(samples)
    return Seeded(service="digits", champion=4, versions=[1, 2, 3, 4], rejected=3,
                  card_version=2, card_gate_value=0.47, card_new_per_class=new_per_class,
                  jobs=[j2.id, j3.id, j4.id, failed.id])


SERVER_CONFIG = """
name: digits
engine: {kind: triton, model_name: digits}
model: {template: mlp, input: {shape: [64]}, classes: ["0","1","2","3","4","5","6","7","8","9"]}
triggers: {rules: []}
server: {port: 0}
"""


@dataclass
class SeededServer:
    url: str
    store: Store
    seeded: Seeded


@contextmanager
def seeded_server(data_dir: Path) -> Iterator[SeededServer]:
    """The real CL server (``ServerRuntime``: waitress, the embedded Redis and store, no
    worker) under ``data_dir``, with the history seeded; stopped on exit."""
    from cl_server.config import parse_config
    from cl_server.deploy import ENV_DATA_DIR
    from cl_server.runtime import ServerRuntime
    from cl_server.store import MongoStore

    previous = os.environ.get(ENV_DATA_DIR)
    os.environ[ENV_DATA_DIR] = str(data_dir)  # where the API looks for routing tables
    runtime = ServerRuntime(parse_config(SERVER_CONFIG, env={}), data_dir=data_dir, workers=0,
                            engine=False)
    started = runtime.start()
    server = threading.Thread(target=runtime.serve_forever, daemon=True)
    server.start()
    store = MongoStore(started.store_uri, runtime.config.store.database)
    try:
        yield SeededServer(started.url, store, seed_history(store, data_dir / "artifacts"))
    finally:
        store.close()
        runtime.stop()
        server.join(timeout=10)
        if previous is None:
            os.environ.pop(ENV_DATA_DIR, None)
        else:
            os.environ[ENV_DATA_DIR] = previous
