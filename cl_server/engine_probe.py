"""Reachability of the serving engine, for ``/api/health``.

Probes the engine's own readiness endpoint (Triton: ``GET /v2/health/ready``; TF-Serving:
``GET /v1/models/{model}``), caching the answer for a few seconds so that a health check polled
by a load balancer does not turn into load on the engine.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import requests

from cl_server.config.schema import EngineConfig


@dataclass(frozen=True)
class EngineStatus:
    ok: bool
    latency_ms: float | None
    detail: str


class EngineProbe:
    """Parameters: ``engine`` config; ``ttl_s`` seconds a result is reused; ``timeout_s``."""

    def __init__(self, engine: EngineConfig, ttl_s: float = 5.0, timeout_s: float = 1.0):
        self.engine = engine
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._cached: tuple[float, EngineStatus] | None = None

    @property
    def url(self) -> str | None:
        if self.engine.url is None:
            return None
        if self.engine.kind == "triton":
            return f"{self.engine.url}/v2/health/ready"
        return f"{self.engine.url}/v1/models/{self.engine.model_name}"

    def status(self) -> EngineStatus:
        with self._lock:
            if self._cached and time.monotonic() - self._cached[0] < self.ttl_s:
                return self._cached[1]
            result = self._probe()
            self._cached = (time.monotonic(), result)
            return result

    def _probe(self) -> EngineStatus:
        url = self.url
        if url is None:
            return EngineStatus(False, None, f"{self.engine.kind}: no url configured (embedded "
                                             "engine not running)")
        start = time.perf_counter()
        try:
            response = requests.get(url, timeout=self.timeout_s)
        except requests.RequestException as exc:
            return EngineStatus(False, None, f"{self.engine.kind} at {self.engine.url} "
                                             f"unreachable: {type(exc).__name__}")
        latency = (time.perf_counter() - start) * 1000
        if response.status_code != 200:
            return EngineStatus(False, latency, f"{self.engine.kind} answered "
                                                f"{response.status_code} on {url}")
        return EngineStatus(True, latency, f"{self.engine.kind} ready at {self.engine.url}")
