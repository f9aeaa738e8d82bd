"""The HTTP API: auth and roles, one error shape, bad input, over the real embedded store and cache."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from cl_server.api import create_app
from cl_server.auth import ensure_admin, hash_token
from cl_server.config import parse_config
from cl_server.envelope.job import service_config
from cl_server.store import ModelVersion, MongoStore

CONFIG = parse_config("""
name: digits
engine: {kind: triton, url: "http://127.0.0.1:9", model_name: digits}
model: {template: mlp, input: {shape: [64]}, classes: ["0", "1"]}
auth: {bootstrap_admin_token: "${ADMIN:-}"}
server: {max_body_bytes: 4096}
""", env={})


@pytest.fixture
def app(store: MongoStore, redis_url: str) -> Iterator[Flask]:
    cache = redis.Redis.from_url(redis_url)
    yield create_app(CONFIG, store, cache)
    cache.close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_error(response: Any, status: int, code: str, contains: str = "") -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert contains in body["error"]["message"]
    assert "Traceback" not in response.get_data(as_text=True)
    return body["error"]


def test_admin_token_created_once_and_stored_hashed(store: MongoStore) -> None:
    token = ensure_admin(store)
    assert token and token.startswith("mci_")
    assert ensure_admin(store) is None
    [record] = store.list_tokens("admin")
    assert record.token_sha256 == hash_token(token)
    assert token not in str(store.db["api_tokens"].find_one())


def test_bootstrap_admin_token_from_config(store: MongoStore) -> None:
    assert ensure_admin(store, "x" * 20) is None
    assert store.find_token(hash_token("x" * 20)).user == "admin"
    assert ensure_admin(store, "x" * 20) is None
    assert len(store.list_tokens("admin")) == 1


def test_public_endpoints_need_no_token(client: FlaskClient) -> None:
    health = client.get("/api/health")
    assert health.status_code == 200
    body = health.get_json()
    assert body["status"] == "degraded"  # no worker, and the engine URL is a closed port
    assert body["components"]["store"]["ok"] and body["components"]["cache"]["ok"]
    assert body["components"]["engine"]["ok"] is False
    assert body["components"]["queue"] == {"ok": False, "latency_ms": pytest.approx(
        body["components"]["queue"]["latency_ms"]), "detail": "0 queued, 0 workers"}
    assert client.get("/api/openapi.json").status_code == 200


@pytest.mark.parametrize("header", [None, "Bearer", "Basic abc", "Bearer mci_unknown"])
def test_missing_or_invalid_token_is_401(client: FlaskClient, tokens: dict[str, str],
                                         header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    response = client.get("/api/services", headers=headers)
    assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


ROLE_MATRIX = [
    ("GET", "/api/services", None, "viewer"),
    ("GET", "/api/jobs", None, "viewer"),
    ("PATCH", "/api/services/digits", {"status": "paused"}, "engineer"),
    ("POST", "/api/jobs", {"kind": "healthcheck"}, "engineer"),
    ("GET", "/api/users", None, "admin"),
    ("POST", "/api/users", {"name": "zed", "role": "viewer"}, "admin"),
]
ORDER = ["viewer", "researcher", "engineer", "admin"]


@pytest.mark.parametrize(("method", "path", "body", "needed"), ROLE_MATRIX)
def test_roles_are_enforced(client: FlaskClient, tokens: dict[str, str], method: str, path: str,
                            body: dict[str, Any] | None, needed: str) -> None:
    for role in ORDER:
        response = client.open(path, method=method, json=body, headers=bearer(tokens[role]))
        if ORDER.index(role) < ORDER.index(needed):
            assert_error(response, 403, "forbidden", f"needs the '{needed}' role")
        else:
            assert response.status_code < 400, (role, response.get_json())
            if method == "POST" and path == "/api/users":
                client.open(path, method=method, json={"name": "zed2", "role": "viewer"},
                            headers=bearer(tokens[role]))
                break


def test_revoked_token_and_disabled_user_are_refused(client: FlaskClient, store: MongoStore,
                                                     tokens: dict[str, str]) -> None:
    mine = client.get("/api/tokens", headers=bearer(tokens["engineer"])).get_json()
    assert [t["user"] for t in mine] == ["engineer"]
    assert "token_sha256" not in mine[0]
    assert_error(client.delete(f"/api/tokens/{mine[0]['id']}", headers=bearer(tokens["engineer"])),
                 409, "conflict", "cannot revoke itself")
    revoked = client.delete(f"/api/tokens/{mine[0]['id']}", headers=bearer(tokens["admin"]))
    assert revoked.status_code == 200 and revoked.get_json()["revoked_at"]
    assert_error(client.get("/api/whoami", headers=bearer(tokens["engineer"])), 401,
                 "unauthorized", "revoked")
    store.update_user("viewer", disabled=True)
    assert_error(client.get("/api/whoami", headers=bearer(tokens["viewer"])), 401,
                 "unauthorized", "disabled")


def test_token_issue_rules(client: FlaskClient, tokens: dict[str, str]) -> None:
    created = client.post("/api/tokens", json={"label": "ci"}, headers=bearer(tokens["viewer"]))
    assert created.status_code == 201
    new = created.get_json()
    assert new["record"]["user"] == "viewer" and new["token"].startswith("mci_")
    assert client.get("/api/whoami", headers=bearer(new["token"])).get_json() == {
        "user": "viewer", "role": "viewer"}
    assert_error(client.post("/api/tokens", json={"user": "admin"},
                             headers=bearer(tokens["viewer"])), 403, "forbidden")
    assert_error(client.post("/api/tokens", json={"user": "ghost"},
                             headers=bearer(tokens["admin"])), 404, "not_found", "ghost")
    other = client.get("/api/tokens", headers=bearer(tokens["admin"])).get_json()
    viewer_token = next(t for t in other if t["user"] == "viewer")
    assert_error(client.delete(f"/api/tokens/{viewer_token['id']}",
                               headers=bearer(tokens["engineer"])), 404, "not_found")


def test_unknown_ids_are_404(client: FlaskClient, tokens: dict[str, str]) -> None:
    headers = bearer(tokens["admin"])
    for path in ["/api/services/nope", "/api/services/nope/versions",
                 "/api/services/digits/versions/7", "/api/jobs/" + "0" * 32,
                 "/api/jobs/" + "0" * 32 + "/logs", "/api/services/nope/drift",
                 "/api/no-such-endpoint"]:
        assert_error(client.get(path, headers=headers), 404, "not_found")
    assert_error(client.post("/api/jobs/" + "0" * 32 + "/cancel", headers=headers), 404,
                 "not_found")
    assert_error(client.post("/api/jobs", json={"kind": "healthcheck", "service": "nope"},
                             headers=headers), 404, "not_found", "service 'nope'")


def test_malformed_and_invalid_bodies(client: FlaskClient, store: MongoStore,
                                      tokens: dict[str, str]) -> None:
    headers = {**bearer(tokens["admin"]), "Content-Type": "application/json"}
    assert_error(client.post("/api/jobs", data="{bad", headers=headers), 400, "bad_request",
                 "malformed JSON at line 1, column 2")
    assert_error(client.post("/api/jobs", data="[1, 2]", headers=headers), 400, "bad_request",
                 "must be a JSON object")
    assert_error(client.post("/api/jobs", data="", headers=headers), 400, "bad_request",
                 "body required")
    assert_error(client.post("/api/jobs", data=b"\xff\xfe", headers=headers), 400,
                 "bad_request", "malformed JSON")
    error = assert_error(client.post("/api/jobs", json={"kind": "healthcheck", "extra": 1,
                                                        "params": {"hold_s": -1}},
                                     headers=headers), 422, "validation_failed")
    assert error["details"] == [{"path": "extra", "message": "unknown field"}]
    error = assert_error(client.post("/api/jobs", json={"kind": "healthcheck",
                                                        "params": {"hold_s": -1}},
                                     headers=headers), 422, "validation_failed")
    assert error["details"][0]["path"] == "hold_s"
    assert_error(client.post("/api/jobs", json={"kind": "rm -rf"}, headers=headers), 422,
                 "validation_failed", "unknown job kind 'rm -rf'")
    assert_error(client.get("/api/jobs?limit=abc", headers=headers), 422, "validation_failed",
                 "limit")
    assert_error(client.get("/api/jobs?bogus=1", headers=headers), 422, "validation_failed",
                 "bogus")
    assert_error(client.patch("/api/services/digits", json={"status": "deleted"},
                              headers=headers), 422, "validation_failed", "status")
    assert store.list_jobs() == []


def test_oversized_body_is_413_and_nothing_written(client: FlaskClient, store: MongoStore,
                                                   tokens: dict[str, str]) -> None:
    body = '{"kind": "healthcheck", "params": {"pad": "' + "x" * 5000 + '"}}'
    assert_error(client.post("/api/jobs", data=body, headers={
        **bearer(tokens["admin"]), "Content-Type": "application/json"}), 413,
        "payload_too_large", "4096 bytes")
    assert store.list_jobs() == []


def test_wrong_method_is_405_json(client: FlaskClient, tokens: dict[str, str]) -> None:
    assert_error(client.delete("/api/jobs", headers=bearer(tokens["admin"])), 405,
                 "method_not_allowed")


def test_pause_resume_and_versions(client: FlaskClient, store: MongoStore,
                                   tokens: dict[str, str]) -> None:
    headers = bearer(tokens["engineer"])
    paused = client.patch("/api/services/digits", json={"status": "paused"}, headers=headers)
    assert paused.get_json()["status"] == "paused"
    assert store.get_service("digits").status == "paused"
    store.add_version(ModelVersion(service="digits", metrics={"accuracy": 0.9}))
    versions = client.get("/api/services/digits/versions", headers=headers).get_json()
    assert [(v["version"], v["metrics"]) for v in versions] == [(1, {"accuracy": 0.9})]
    assert client.get("/api/services/digits/versions/1", headers=headers).status_code == 200


def test_store_down_is_503_not_500(store_uri: str, redis_url: str) -> None:
    dead = MongoStore("mongodb://127.0.0.1:9", "x", timeout_ms=200)
    live = MongoStore(store_uri, "t_down")
    cache = redis.Redis.from_url(redis_url)
    try:
        app = create_app(CONFIG, live, cache)
        app.extensions["modelci"].store = dead
        client = app.test_client()
        assert_error(client.get("/api/services", headers=bearer("mci_x")), 503, "unavailable")
        health = client.get("/api/health")
        assert health.status_code == 503 and health.get_json()["status"] == "down"
    finally:
        live.client.drop_database("t_down")
        live.close()
        dead.close()
        cache.close()


def test_service_record_has_no_secrets(store: MongoStore, redis_url: str) -> None:
    config = parse_config("""
name: ls
engine: {kind: triton, model_name: m}
model: {template: mlp, input: {shape: [4]}, classes: [a, b]}
annotator: {kind: label_studio, url: "http://ls:8080", token: "secret-token-value-123"}
""", env={})
    cache = redis.Redis.from_url(redis_url)
    create_app(config, store, cache)
    cache.close()
    stored = store.get_service("ls")
    assert "secret-token-value-123" not in str(stored.model_dump())
    assert stored.config["annotator"]["url"] == "http://ls:8080"
    assert "token" not in stored.config["annotator"]
    # What a job does with the record: the config again, valid without the secret (a job
    # never reaches the annotator; every other section is the service's).
    again = service_config(stored)
    assert again.annotator.kind == "none"
    assert again.model_dump(exclude={"annotator"}) == config.model_dump(exclude={"annotator"})


def test_a_whole_json_number_is_an_integer(client: FlaskClient, tokens: dict[str, str]) -> None:
    # JSON Schema counts 2.0 as an integer; the strict body parser must too (and 2.5 is not).
    whole = client.post("/api/services/digits/rollback", json={"version": 2.0},
                        headers=bearer(tokens["engineer"]))
    assert whole.status_code == 404  # accepted as version 2, which does not exist
    half = client.post("/api/services/digits/rollback", json={"version": 2.5},
                       headers=bearer(tokens["engineer"]))
    assert_error(half, 422, "validation_failed")
