"""The CL loop on the real embedded Redis and store: served records feed drift detectors, a drift
alarm submits one update job in the same round, labels feed the volume rule, state survives a
restart of the loop."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from sklearn.datasets import load_digits

from cl_server.api.app import service_record
from cl_server.collector.service import ServiceCollector
from cl_server.config import parse_config
from cl_server.loop import ServiceLoop
from cl_server.queue import JobQueue
from cl_server.store import MongoStore
from cl_server.store.entities import utcnow

YAML = """
name: digits
engine: {kind: triton, model_name: digits}
model: {template: mlp, input: {shape: [64]},
        classes: ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]}
drift:
  reference_size: 200
  detectors:
    - {kind: ks, signal: inputs, window: 100, alpha: 0.01}
    - {kind: chi2, signal: predictions, window: 100, alpha: 0.01}
triggers:
  cooldown_s: 60
  rules: [%s]
"""


@pytest.fixture
def parts(store: MongoStore, redis_url: str, tmp_path: Path
          ) -> Iterator[tuple[redis.Redis, JobQueue]]:
    cache = redis.Redis.from_url(redis_url)
    queue = JobQueue(store, cache, name=f"q{uuid.uuid4().hex[:8]}")
    yield cache, queue
    cache.close()


def digits_of(classes: set[int], count: int, offset: int) -> list[dict[str, object]]:
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))  # the file is ordered by writer
    rows = [i for i in order if y[i] in classes][:count]
    return [{"request_id": f"s{offset + n}", "inputs": (x[i] / 16).tolist(),
             "prediction": str(y[i])} for n, i in enumerate(rows)]


def make(rules: str, store: MongoStore, cache: redis.Redis, queue: JobQueue, tmp_path: Path,
         clock: list[float]) -> tuple[ServiceLoop, ServiceCollector]:
    config = parse_config(YAML % rules, env={})
    store.upsert_service(service_record(config))
    return (ServiceLoop(config, store, cache, queue, clock=lambda: clock[0]),
            ServiceCollector(config, cache, store, tmp_path, seed=0))


def test_a_drift_alarm_submits_one_job_in_the_same_round(
        parts: tuple[redis.Redis, JobQueue], store: MongoStore, tmp_path: Path) -> None:
    cache, queue = parts
    clock = [1000.0]
    loop, collector = make("{kind: drift, min_detectors: 1}", store, cache, queue, tmp_path,
                           clock)
    collector.ingest(digits_of({0, 1, 2, 3, 4}, 300, 0))  # reference + one stationary window
    calm = loop.step()
    assert calm["drift_results"] == 2 and calm["alarms"] == [] and calm["submitted"] is None

    clock[0] += 5
    collector.ingest(digits_of({5, 6, 7, 8, 9}, 100, 1000))  # new classes appear
    start = time.perf_counter()
    drifted = loop.step()
    alarm_to_job_s = time.perf_counter() - start
    assert drifted["alarms"] == ["chi2", "ks"] and drifted["submitted"] is not None
    assert alarm_to_job_s < 1.0
    job = store.get_job(drifted["submitted"])
    assert job.kind == "cl_update" and job.params["service"] == "digits"
    assert job.trigger["kind"] == "drift" and job.params["drift_magnitude"] > 0
    events = store.list_drift_events("digits")
    assert len(events) == 4 and {e.detector for e in events if e.alarm} == {"chi2", "ks"}
    alarm = next(e for e in events if e.alarm and e.detector == "chi2")
    assert alarm.p_value is not None and alarm.p_value < 0.01 and alarm.evidence

    clock[0] += 5
    collector.ingest(digits_of({5, 6, 7, 8, 9}, 100, 2000))  # the same drift episode
    assert loop.step()["submitted"] is None  # one drift, one job

    store.transition_job(job.id, "succeeded", ["queued"], finished_at=utcnow(),
                         result={"outcome": "deployed"})
    clock[0] += 5
    assert loop.step()["submitted"] is None  # finished; the episode is still the same one
    assert loop.job_id is None


def test_a_paused_service_records_drift_but_submits_only_after_it_resumes(
        parts: tuple[redis.Redis, JobQueue], store: MongoStore, tmp_path: Path) -> None:
    cache, queue = parts
    clock = [1000.0]
    loop, collector = make("{kind: drift, min_detectors: 1}", store, cache, queue, tmp_path,
                           clock)
    collector.ingest(digits_of({0, 1, 2, 3, 4}, 300, 0))
    loop.step()
    store.update_service("digits", status="paused")
    clock[0] += 5
    collector.ingest(digits_of({5, 6, 7, 8, 9}, 100, 1000))
    paused = loop.step()
    assert paused["alarms"] == ["chi2", "ks"] and paused["submitted"] is None
    assert store.list_jobs("digits") == []
    assert len(store.list_drift_events("digits", alarms_only=True)) == 2
    store.update_service("digits", status="active")
    clock[0] += 1
    resumed = loop.step()
    assert resumed["submitted"] is not None
    assert store.get_job(resumed["submitted"]).trigger["kind"] == "drift"


def test_new_labels_trigger_a_volume_job_and_state_survives_a_restart(
        parts: tuple[redis.Redis, JobQueue], store: MongoStore, tmp_path: Path) -> None:
    cache, queue = parts
    clock = [50.0]
    loop, collector = make("{kind: volume, new_labels: 40}", store, cache, queue, tmp_path,
                           clock)
    records = digits_of({0, 1}, 30, 0)
    for record in records:
        record["label"] = record["prediction"]
    collector.ingest(records)
    assert loop.step()["submitted"] is None  # labeled samples so far: about 30 (train+holdout)

    restarted = ServiceLoop(loop.config, store, cache, queue, clock=lambda: clock[0])
    assert restarted.cursors == loop.cursors
    assert restarted.step()["drift_results"] == 0  # nothing read twice
    more = digits_of({2, 3}, 20, 100)
    for record in more:
        record["label"] = record["prediction"]
    collector.ingest(more)
    clock[0] += 1
    outcome = restarted.step()
    assert outcome["submitted"] is not None
    job = store.get_job(outcome["submitted"])
    assert job.trigger["kind"] == "volume" and "50 new labels" in job.trigger["reason"]


@pytest.mark.parametrize(("trigger", "scenario", "alarms_after"), [
    ("volume", "ni", ["chi2", "ks"]),  # an update on the same data: the references stay
    ("drift", "nc", []),               # adapted to the new data: it is the new reference
])
def test_detectors_start_over_only_after_a_deployment_that_adapted_the_model(
        parts: tuple[redis.Redis, JobQueue], store: MongoStore, tmp_path: Path, trigger: str,
        scenario: str, alarms_after: list[str]) -> None:
    cache, queue = parts
    clock = [1000.0]
    loop, collector = make("{kind: drift, min_detectors: 5}", store, cache, queue, tmp_path,
                           clock)
    collector.ingest(digits_of({0, 1, 2, 3, 4}, 300, 0))
    assert loop.step()["alarms"] == []
    job = queue.submit("cl_update", {"service": "digits"}, service="digits",
                       trigger={"kind": trigger})
    clock[0] += 1
    loop.step()
    assert loop.job_id == job.id  # submitted elsewhere, followed by the loop
    store.transition_job(job.id, "succeeded", ["queued"], finished_at=utcnow(),
                         result={"outcome": "deployed", "scenario": scenario})
    collector.ingest(digits_of({5, 6, 7, 8, 9}, 300, 1000))
    clock[0] += 1
    assert loop.step()["alarms"] == alarms_after
    assert loop.job_id is None
