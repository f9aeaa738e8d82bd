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


def _queue_health() -> ComponentHealth:
    """Queue depth and workers; not ok with no worker, since queued jobs would never run."""
    queue = ctx().queue
    start = time.perf_counter()
    try:
        depth, workers = queue.depth(), queue.worker_count()
    except Exception as exc:  # noqa: BLE001 - any failure means unreachable
        return ComponentHealth(ok=False, detail=f"{type(exc).__name__}: {exc}")
    return ComponentHealth(ok=workers > 0, latency_ms=(time.perf_counter() - start) * 1000,
                           detail=f"{depth} queued, {workers} workers")


@operation(bp, "/api/health", "GET", summary="Reachability of store, cache, queue and engine",
           role=None, response=HealthReport,
           description="HTTP 200 while the store and cache answer: status ok, or degraded "
                       "when no worker serves the queue or the engine is unreachable; 503 "
                       "(status down) with the same body when the store or cache does not.")
def health() -> tuple[Response, int]:
    c = ctx()
    components = {
        "store": _timed(lambda: c.store.ping() and ""),
        "cache": _timed(lambda: c.cache.ping() and ""),
        "queue": _queue_health(),
    }
    engine = c.engine.status()
    components["engine"] = ComponentHealth(ok=engine.ok, latency_ms=engine.latency_ms,
                                           detail=engine.detail)
    core_ok = components["store"].ok and components["cache"].ok
    status = "ok" if all(h.ok for h in components.values()) else "degraded" if core_ok else "down"
    report = HealthReport(status=status, components=components)
    return jsonify(report.model_dump(mode="json")), 200 if core_ok else 503


@operation(bp, "/api/openapi.json", "GET", summary="This API's OpenAPI 3.1 document",
           role=None, response=dict[str, Any])
def openapi() -> dict[str, Any]:
    return openapi_document("ModelCI-e CL server", __version__)
