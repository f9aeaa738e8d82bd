"""The dashboard's API views (overview, timeline, updates, traffic, model card) and the static
pages, over the real embedded store and cache with a history seeded through the store layer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from cl_server.api import create_app
from cl_server.api.routes.web import ENV_WEB_DIST
from cl_server.config import parse_config
from cl_server.deploy import ENV_DATA_DIR
from cl_server.store import DriftEvent, Job, ModelVersion, MongoStore, utcnow
from evaluator.dashboard_seed import Seeded, seed_history
from plugin.serving.factory import routing_path
from plugin.serving.routing import RoutingTable

CONFIG = parse_config("""
name: digits
engine: {kind: triton, model_name: digits}
model: {template: mlp, input: {shape: [64]}, classes: ["0","1","2","3","4","5","6","7","8","9"]}
""", env={})


@pytest.fixture
def app(store: MongoStore, redis_url: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[Flask]:
    monkeypatch.setenv(ENV_DATA_DIR, str(tmp_path / "data"))
    cache = redis.Redis.from_url(redis_url)
    app = create_app(CONFIG, store, cache)
    yield app
    cache.close()


@pytest.fixture
def seeded(app: Flask, store: MongoStore, tmp_path: Path) -> Seeded:
    return seed_history(store, tmp_path / "artifacts")  # after create_app, which registers the config's service


@pytest.fixture
def client(app: Flask, tokens: dict[str, str]) -> FlaskClient:
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {tokens['viewer']}"
    return client


def test_overview_rows(client: FlaskClient, seeded: Seeded) -> None:
    rows = {row["name"]: row for row in client.get("/api/overview").get_json()}
    assert set(rows) == {"digits", "text"}
    digits = rows["digits"]
    assert digits["champion_version"] == 4 and digits["versions"] == 4
    assert digits["classes"] == [str(c) for c in range(10)]
    assert digits["state"] == "healthy"  # the one alarm came before the last deployment
    # The last 200 of 600 labeled requests: all after the recovery, so all answered right.
    assert digits["accuracy"] == 1.0 and digits["accuracy_count"] == 200
    assert digits["last_update"]["status"] == "failed"
    assert digits["last_update"]["outcome"] == "failed"
    assert digits["annotator_url"] == "http://127.0.0.1:8080/projects/3"
    assert digits["description"] == "handwritten digits, 8x8"
    points = digits["drift"]
    assert 0 < len(points) <= 60
    assert [p["t"] for p in points] == sorted(p["t"] for p in points)
    assert rows["text"]["state"] == "paused" and rows["text"]["accuracy"] is None


def test_overview_states_follow_jobs_and_alarms(client: FlaskClient, store: MongoStore,
                                                seeded: Seeded) -> None:
    def state() -> tuple[str, str]:
        row = next(r for r in client.get("/api/overview").get_json() if r["name"] == "digits")
        return row["state"], row["state_detail"]

    store.add_drift_events([DriftEvent(service="digits", detector="ks", signal="inputs",
                                       magnitude=0.4, alarm=True)])
    assert state()[0] == "drifting" and "ks on inputs" in state()[1]
    running = store.add_job(Job(service="digits", kind="cl_update", status="running"))
    assert state() == ("updating", f"update job {running.id[:8]} running")
    store.update_job(running.id, status="succeeded", finished_at=utcnow(),
                     result={"version": 5, "outcome": "awaiting_approval"})
    store.add_version(ModelVersion(service="digits", version=5, parent_version=4))
    assert state() == ("validating", "version 5 passed validation and awaits approval")
    store.update_service("digits", status="paused")
    assert state()[0] == "paused"


def test_timeline_buckets_accuracy_and_marks_events(client: FlaskClient, seeded: Seeded) -> None:
    body = client.get("/api/services/digits/timeline?minutes=60").get_json()
    accuracy = body["accuracy"]
    assert sum(p["count"] for p in accuracy) == 600
    assert len(accuracy) <= 120
    assert min(p["accuracy"] for p in accuracy) < 0.7 < max(p["accuracy"] for p in accuracy)
    assert [d["version"] for d in body["deployments"]] == [1, 2, 4]
    assert [d["detector"] for d in body["drift"] if d["alarm"]] == ["chi2"]
    short = client.get("/api/services/digits/timeline?minutes=5").get_json()
    assert 0 < sum(p["count"] for p in short["accuracy"]) < 100
    assert short["deployments"] == []
    bad = client.get("/api/services/digits/timeline?minutes=0")
    assert bad.status_code == 422 and "minutes" in bad.get_data(as_text=True)
    assert client.get("/api/services/nope/timeline").status_code == 404


def test_updates_history(client: FlaskClient, seeded: Seeded) -> None:
    entries = client.get("/api/services/digits/updates").get_json()
    assert [e["job_id"] for e in entries] == seeded.jobs[::-1]
    failed, deployed4, rejected, deployed2 = entries
    assert failed["outcome"] == "failed" and failed["error"].startswith("worker lost")
    assert rejected["outcome"] == "rejected" and rejected["failed_gates"] == ["max_class_drop"]
    assert [(g["name"], g["passed"]) for g in rejected["gates"]] == [
        ("min_accuracy_gain", True), ("max_class_drop", False)]
    assert deployed2["trigger_kind"] == "drift" and deployed2["scenario"] == "nc"
    assert deployed2["strategy"] == "ewc" and deployed2["duration_s"] == 190.0
    assert deployed4["reason"] == "new camera" and deployed4["version"] == 4


def test_traffic_split_from_routing_table(client: FlaskClient, seeded: Seeded,
                                          tmp_path: Path) -> None:
    assert client.get("/api/services/digits/traffic").get_json() == {
        "champion": {"version": 4, "share": 1.0}, "canary": None, "shadow": None}
    table = RoutingTable(routing_path(tmp_path / "data", "digits"))
    table.update(champion=4, canary=5, canary_share=0.25, shadow=6)
    assert client.get("/api/services/digits/traffic").get_json() == {
        "champion": {"version": 4, "share": 0.75}, "canary": {"version": 5, "share": 0.25},
        "shadow": {"version": 6, "share": 0.0}}


def test_model_card_sections(client: FlaskClient, seeded: Seeded) -> None:
    card = client.get("/api/services/digits/versions/2/card").get_json()
    assert (card["version"], card["status"], card["parent_version"]) == (2, "retired", 1)
    assert card["awaiting_approval"] is False
    task = card["task"]
    assert task["scenario"] == "nc" and task["strategy"] == "ewc"
    assert "EWC penalty" in task["loss"]
    assert task["hyperparameters"]["lambda"] == 100 and task["trigger"]["kind"] == "drift"
    bench = card["benchmark"]
    assert (bench["recent_accuracy"], bench["champion_recent_accuracy"]) == (0.97, 0.5)
    assert (bench["acc"], bench["bwt"], bench["fwt"]) == (0.965, -0.01, 0.4)
    assert bench["training_seconds"] == 12.5 and bench["model_bytes"] == 42_000
    assert bench["bytes_deployed"] == 42_000
    per_class = {row["class"]: row for row in bench["per_class"]}
    # Historical holdout rows only: the seeded recent holdouts carry no per-class scores.
    assert (per_class["0"]["accuracy"], per_class["0"]["champion_accuracy"]) == (0.96, 0.97)
    assert per_class["0"]["count"] == 20 and set(per_class) == set("01234")
    data = card["data"]
    assert (data["new_total"], data["rehearsal_total"]) == (300, 600)
    assert [(r["class"], r["new"], r["rehearsal"]) for r in data["per_class"]][:6] == [
        ("0", 0, 120), ("1", 0, 120), ("2", 0, 120), ("3", 0, 120), ("4", 0, 120),
        ("5", 60, 0)]
    assert data["query"]["sort"] == [["_id", 1]] and data["sample_count"] == 900
    assert card["validation"]["passed"] is True
    assert card["validation"]["gates"][0]["value"] == seeded.card_gate_value
    assert [d["version"] for d in card["deployments"]] == [2]
    first = client.get("/api/services/digits/versions/1/card").get_json()
    assert first["validation"] is None and first["data"]["query"] is None
    assert first["benchmark"]["per_class"] == []
    assert client.get("/api/services/digits/versions/9/card").status_code == 404


def test_dashboard_views_need_a_token(app: Flask, seeded: Seeded) -> None:
    anonymous = app.test_client()
    for path in ("/api/overview", "/api/services/digits/timeline",
                 "/api/services/digits/updates", "/api/services/digits/traffic",
                 "/api/services/digits/versions/2/card"):
        assert anonymous.get(path).status_code == 401, path


def test_static_dashboard_pages(app: Flask, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    client = app.test_client()
    monkeypatch.setenv(ENV_WEB_DIST, str(tmp_path / "missing"))
    page = client.get("/")
    assert page.status_code == 200 and b"not built" in page.data
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text("<!doctype html><div id=root></div>")
    (dist / "assets" / "app-1a2b.js").write_text("console.log(1)")
    (tmp_path / "secret.txt").write_text("no")
    monkeypatch.setenv(ENV_WEB_DIST, str(dist))
    index = client.get("/")
    assert index.status_code == 200 and b"id=root" in index.data
    assert "default-src 'self'" in index.headers["Content-Security-Policy"]
    asset = client.get("/assets/app-1a2b.js")
    assert asset.status_code == 200 and asset.headers["Cache-Control"].startswith("public")
    for hostile in ("/assets/../index.html", "/assets/..%2f..%2fsecret.txt",
                    "/assets/%2e%2e/%2e%2e/secret.txt"):
        response = client.get(hostile)
        assert response.status_code == 404, hostile
        assert b"no" != response.data
    assert client.get("/assets/nothing.js").get_json()["error"]["code"] == "not_found"
