"""The collector over the real embedded Redis and store: batch ingest through the API, labels
joined by request id (from the API and from records the proxy collected), bad input."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from cl_server.api import create_app
from cl_server.collector import kserve
from cl_server.collector.service import ServiceCollector, keys
from cl_server.config import parse_config
from cl_server.store import ModelVersion, MongoStore
from plugin.proxy.collector import RequestCollector, ServedRequest

YAML = """
name: digits
engine: {kind: triton, url: "http://127.0.0.1:9", model_name: digits}
model: {template: mlp, input: {shape: [3]}, classes: ["0", "1", "2"]}
collector: {sampling_ratio: %s}
server: {data_dir: "%s"}
"""


@pytest.fixture
def app(store: MongoStore, redis_url: str, tmp_path: Path) -> Iterator[Flask]:
    cache = redis.Redis.from_url(redis_url)
    yield create_app(parse_config(YAML % (1.0, tmp_path), env={}), store, cache)
    cache.close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def records(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"request_id": f"r{i}", "inputs": [i, i + 0.5, -1.0], "model_version": 1,
             "prediction": str(i % 3), "confidences": [0.2, 0.3, 0.5]}
            for i in range(start, start + n)]


def test_ingest_keeps_every_valid_record_in_the_served_stream(
        client: FlaskClient, tokens: dict[str, str], redis_client: redis.Redis) -> None:
    answer = client.post("/api/services/digits/records", json={"records": records(50)},
                         headers=auth(tokens["engineer"]))
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json() == {"accepted": 50, "sampled_out": 0, "spooled": 0, "rejected": []}
    rows = redis_client.xrange(keys("digits")["served"])
    assert [fields[b"id"] for _, fields in rows] == [f"r{i}".encode() for i in range(50)]
    first = rows[0][1]
    np.testing.assert_array_equal(kserve.unpack(first[b"inputs"])["inputs"], [0, 0.5, -1])
    assert first[b"prediction"] == b"0" and first[b"version"] == b"1"


def test_a_bad_record_is_named_and_the_rest_of_the_batch_kept(
        client: FlaskClient, tokens: dict[str, str], redis_client: redis.Redis) -> None:
    batch = records(4)
    batch[1]["inputs"] = [1, 2]                      # wrong shape
    batch[2]["request_id"] = "../../etc"             # not a request id
    batch[3]["label"] = "cat"                        # not a class
    batch.append({"request_id": "x", "inputs": [1, 2, float("nan")]})
    batch.append("not an object")
    answer = client.post("/api/services/digits/records", json={"records": batch},
                         headers=auth(tokens["engineer"]))
    assert answer.status_code == 400
    error = answer.get_json()["error"]
    assert error["code"] == "invalid_records"
    assert error["message"].startswith("5 of 6 records rejected (the valid ones were kept)")
    rejected = {r["index"]: (r["field"], r["message"]) for r in error["details"]["rejected"]}
    assert rejected[1] == ("inputs", "shape [2] does not match the model input [3]")
    assert rejected[2][0] == "request_id"
    assert rejected[3] == ("label", "label 'cat' is not one of the service's classes (0, 1, 2)")
    assert rejected[4] == ("inputs", "contains NaN or infinity")
    assert rejected[5][0] == "record"
    assert error["details"]["accepted"] == 1
    assert redis_client.xlen(keys("digits")["served"]) == 1


def test_labels_join_by_request_id_once_and_unknown_ids_are_reported(
        client: FlaskClient, tokens: dict[str, str], store: MongoStore,
        redis_client: redis.Redis) -> None:
    client.post("/api/services/digits/records", json={"records": records(10)},
                headers=auth(tokens["engineer"]))
    labels = [{"request_id": f"r{i}", "label": str(i % 3)} for i in range(6)]
    labels += [{"request_id": "never-served", "label": "1"}, {"request_id": "r0", "label": "0"}]
    answer = client.post("/api/services/digits/labels", json={"labels": labels},
                         headers=auth(tokens["researcher"]))
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json() == {"labeled": 6, "duplicates": 1, "unknown_ids": ["never-served"],
                                 "rejected": []}
    again = client.post("/api/services/digits/labels", json={"labels": labels[:3]},
                        headers=auth(tokens["researcher"]))
    assert again.get_json()["labeled"] == 0 and again.get_json()["duplicates"] == 3
    assert store.count_labeled_samples("digits") == {"0": 2, "1": 2, "2": 2}
    labeled = redis_client.xrange(keys("digits")["labeled"])
    assert len(labeled) == 6 and labeled[4][1][b"label"] == b"1"
    np.testing.assert_array_equal(kserve.unpack(labeled[4][1][b"inputs"])["inputs"],
                                  [4, 4.5, -1])
    stats = client.get("/api/services/digits/samples/stats", headers=auth(tokens["viewer"]))
    assert stats.get_json() == {"labeled_per_class": {"0": 2, "1": 2, "2": 2},
                                "labeled_total": 6, "served_in_window": 10, "spooled": 0}


def test_labels_outside_the_classes_are_refused_by_name(
        client: FlaskClient, tokens: dict[str, str]) -> None:
    client.post("/api/services/digits/records", json={"records": records(2)},
                headers=auth(tokens["engineer"]))
    answer = client.post("/api/services/digits/labels",
                         json={"labels": [{"request_id": "r0", "label": "7"},
                                          {"request_id": "r1", "label": "2"}]},
                         headers=auth(tokens["researcher"]))
    assert answer.status_code == 400
    error = answer.get_json()["error"]
    assert error["details"]["labeled"] == 1
    assert error["details"]["rejected"] == [{
        "index": 0, "field": "label",
        "message": "label '7' is not one of the service's classes (0, 1, 2)"}]


def test_roles_and_unknown_services(client: FlaskClient, tokens: dict[str, str]) -> None:
    body = {"records": records(1)}
    assert client.post("/api/services/digits/records", json=body,
                       headers=auth(tokens["viewer"])).status_code == 403
    assert client.post("/api/services/digits/records", json=body).status_code == 401
    assert client.post("/api/services/other/records", json=body,
                       headers=auth(tokens["engineer"])).status_code == 404
    assert client.post("/api/services/digits/labels", json={"labels": []},
                       headers=auth(tokens["researcher"])).status_code == 422


def test_labels_given_at_ingest_are_stored_with_the_record(
        client: FlaskClient, tokens: dict[str, str], store: MongoStore) -> None:
    batch = records(3)
    batch[0]["label"] = "2"
    client.post("/api/services/digits/records", json={"records": batch},
                headers=auth(tokens["engineer"]))
    assert store.count_labeled_samples("digits") == {"2": 1}


def test_the_sampling_ratio_keeps_about_its_share(store: MongoStore, redis_url: str,
                                                  tmp_path: Path) -> None:
    cache = redis.Redis.from_url(redis_url)
    collector = ServiceCollector(parse_config(YAML % (0.25, tmp_path), env={}), cache, store,
                                 tmp_path, seed=3)
    outcome = collector.ingest(records(2000))
    cache.close()
    assert outcome.accepted + outcome.sampled_out == 2000
    assert 400 <= outcome.accepted <= 600


def test_requests_collected_by_the_proxy_can_be_labeled(store: MongoStore, redis_url: str,
                                                        tmp_path: Path) -> None:
    # Version 4 learned its classes in another order than the config lists them.
    store.add_version(ModelVersion(service="digits", version=4, classes=["2", "0", "1"]))
    proxy_side = RequestCollector(redis_url, "digits", "triton", spool_dir=tmp_path)
    body = b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}'
    answer = b'{"outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 3], ' \
             b'"data": [0.1, 0.2, 0.7]}]}'
    try:
        proxy_side.offer(ServedRequest("p1", 4, "champion", int(time.time() * 1000), 1.0, body,
                                       None, None, answer, None, None))
        assert proxy_side.flush()
    finally:
        proxy_side.close()
    cache = redis.Redis.from_url(redis_url)
    collector = ServiceCollector(parse_config(YAML % (1.0, tmp_path), env={}), cache, store,
                                 tmp_path)
    outcome = collector.label([{"request_id": "p1", "label": "2"}])
    cache.close()
    assert outcome.labeled == 1 and outcome.unknown_ids == []
    assert store.count_labeled_samples("digits") == {"2": 1}
    # The proxy records the engine's scores; the label's sample names what they predicted,
    # in the answering version's classes (unit 2 of version 4 is class "1": a wrong answer).
    [(prediction, label)] = [(o.prediction, o.label) for o in store.labeled_outcomes("digits")]
    assert (prediction, label) == ("1", "2")


def test_a_manual_update_request_queues_a_cl_update_job(
        client: FlaskClient, tokens: dict[str, str], store: MongoStore) -> None:
    assert client.post("/api/services/digits/update", json={},
                       headers=auth(tokens["viewer"])).status_code == 403
    answer = client.post("/api/services/digits/update", json={"reason": "new camera"},
                         headers=auth(tokens["engineer"]))
    assert answer.status_code == 202, answer.get_json()
    body = answer.get_json()
    assert body["status"] == "submitted"
    job = store.get_job(body["job_id"])
    assert job.kind == "cl_update" and job.params["service"] == "digits"
    assert job.trigger == {"kind": "manual", "reason": "new camera", "user": "engineer"}
