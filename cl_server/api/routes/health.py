"""Liveness of the server and reachability of what it depends on; the OpenAPI document."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Response, jsonify

from cl_server import __version__
from cl_server.api.context import ctx
from cl_server.api.schemas import ComponentHealth, HealthReport
from cl_server.api.spec import openapi_document, operation

bp = Blueprint("health", __name__)


def _timed(check: Any) -> ComponentHealth:
    start = time.perf_counter()
    try:
        detail = check()
    except Exception as exc:  # noqa: BLE001 - any failure means unreachable
        return ComponentHealth(ok=False, detail=f"{type(exc).__name__}: {exc}")
    return ComponentHealth(ok=True, latency_ms=(time.perf_counter() - start) * 1000,
                           detail=detail or "")


@operation(bp, "/api/health", "GET", summary="Reachability of store, cache, queue and engine",
           role=None, response=HealthReport,
           description="HTTP 200 while the store and cache answer (status ok or degraded), "
                       "503 with the same body when either does not.")
def health() -> tuple[Response, int]:
    c = ctx()
    components = {
        "store": _timed(lambda: c.store.ping() and ""),
        "cache": _timed(lambda: c.cache.ping() and ""),
        "queue": _timed(lambda: f"{c.queue.depth()} queued, "
                                f"{c.queue.worker_count()} workers"),
    }
    engine = c.engine.status()
    components["engine"] = ComponentHealth(ok=engine.ok, latency_ms=engine.latency_ms,
                                           detail=engine.detail)
    core_ok = all(components[name].ok for name in ("store", "cache", "queue"))
    status = "ok" if core_ok and engine.ok else "degraded" if core_ok else "down"
    report = HealthReport(status=status, components=components)
    return jsonify(report.model_dump(mode="json")), 200 if core_ok else 503


@operation(bp, "/api/openapi.json", "GET", summary="This API's OpenAPI 3.1 document",
           role=None, response=dict[str, Any])
def openapi() -> dict[str, Any]:
    return openapi_document("ModelCI-e CL server", __version__)
