"""The OpenAPI document validates, and schemathesis finds no server error through a real socket."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate
from werkzeug.serving import make_server

from cl_server import __version__
from cl_server.api import create_app
from cl_server.api.spec import openapi_document
from cl_server.auth import ensure_admin
from cl_server.config import parse_config
from cl_server.store import MongoStore

CONFIG = parse_config("""
name: digits
engine: {kind: triton, url: "http://127.0.0.1:9", model_name: digits}
model: {template: mlp, input: {shape: [64]}, classes: ["0", "1"]}
server: {max_body_bytes: 65536}
""", env={})
MIN_REQUESTS = 500


class Live:
    def __init__(self, url: str, token: str):
        self.url = url
        self.token = token
        self.requests = 0
        self.server_errors: list[str] = []


@pytest.fixture(scope="module")
def live(embedded: Any) -> Iterator[Live]:
    store = MongoStore(embedded.store_uri, "t_openapi")
    cache = redis.Redis.from_url(embedded.cache_url)
    app = create_app(CONFIG, store, cache)
    token = ensure_admin(store)
    assert token
    server = make_server("127.0.0.1", 0, app, threaded=True)
    state = Live(f"http://127.0.0.1:{server.server_port}", token)

    @app.after_request
    def count(response: Any) -> Any:
        state.requests += 1
        if response.status_code >= 500:
            state.server_errors.append(f"{response.status_code} {response.get_data()[:200]!r}")
        return response

    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        thread.join(10)
        store.client.drop_database("t_openapi")
        store.close()
        cache.close()


def test_openapi_document_is_valid(live: Live) -> None:
    document = requests.get(f"{live.url}/api/openapi.json", timeout=10).json()
    validate(document)
    assert document["openapi"] == "3.1.0"
    operations = {(path, method) for path, item in document["paths"].items() for method in item}
    assert ("/api/jobs/{job_id}/cancel", "post") in operations
    assert ("/api/health", "get") in operations
    submit = document["paths"]["/api/jobs"]["post"]
    assert submit["security"] == [{"bearer": []}]
    assert {"401", "403", "413", "422"} <= set(submit["responses"])
    body = submit["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/JobIn"}
    kinds = {entry["properties"]["kind"]["const"]: entry
             for entry in document["components"]["schemas"]["JobIn"]["oneOf"]}
    assert set(kinds) == {"healthcheck", "cl_update", "cl_promote"}
    healthcheck = kinds["healthcheck"]
    assert healthcheck["additionalProperties"] is False
    assert "service" in kinds["cl_update"]["properties"]["params"]["required"]
    assert healthcheck["properties"]["params"]["properties"]["hold_s"]["minimum"] == 0


# The document is generated from the declared operations, so it exists without a running server;
# the requests go to the live server over a socket.
schema = schemathesis.openapi.from_dict(openapi_document("ModelCI-e CL server", __version__))


@schema.parametrize()
@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_api_conforms_and_never_fails(case: Any, live: Live) -> None:
    case.call_and_validate(base_url=live.url, headers={"Authorization": f"Bearer {live.token}"})


def test_schemathesis_sent_enough_requests_and_saw_no_5xx(live: Live) -> None:
    assert live.requests >= MIN_REQUESTS, live.requests
    assert live.server_errors == []
    print(f"schemathesis: {live.requests} requests, no 5xx")


def test_every_mutating_operation_requires_a_role() -> None:
    from cl_server.api.spec import OPERATIONS

    mutating = [op for op in OPERATIONS if op.method != "get"]
    assert mutating
    assert [f"{op.method} {op.path}" for op in mutating if op.role is None] == []
    public = sorted(op.path for op in OPERATIONS if op.role is None)
    assert public == ["/api/health", "/api/openapi.json"]
