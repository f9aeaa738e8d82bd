"""Latency and throughput per model version: Prometheus metrics and rolling quantiles.

Prometheus (``GET /metrics`` on the proxy, prometheus-client text format):

- ``modelci_proxy_requests_total{service,version,role,code}``: requests answered;
- ``modelci_proxy_engine_latency_seconds{service,version,role}``: engine round trip seen by the
  proxy (histogram, 0.5 ms to 10 s buckets);
- ``modelci_proxy_collector_dropped_total{service,reason}`` and
  ``modelci_proxy_collector_queue_depth{service}``.

Next to them, :class:`LatencyWindow` keeps the last ``size`` latencies per version and gives
p50 / p95 / p99 in milliseconds and the request rate; :func:`publish_latency` writes them to the
Redis hash ``modelci:{service}:latency:{version}`` for the dashboard and the validator's
latency gate. :meth:`LatencyWindow.recent` gives the same figures over the last seconds, all
versions together, which :func:`publish_recent_latency` writes to
``modelci:{service}:latency:recent`` twice a second for the scheduling policies
(:mod:`cl_server.scheduling`).

Example:
    >>> window = LatencyWindow(size=100)
    >>> for ms in range(1, 101):
    ...     window.observe(3, ms / 1000, now=1000 + ms / 100)
    >>> stats = window.stats(now=1001.0)[3]
    >>> stats["p50_ms"], stats["p99_ms"], stats["count"]
    (50.5, 99.01, 100)
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
           2.5, 5.0, 10.0)


def _quantiles_ms(latencies_s: list[float]) -> dict[str, float]:
    p50, p95, p99 = np.percentile(np.array(latencies_s) * 1000, [50, 95, 99])
    return {"p50_ms": round(float(p50), 3), "p95_ms": round(float(p95), 3),
            "p99_ms": round(float(p99), 3)}


class LatencyWindow:
    """The last ``size`` latencies (seconds) per version, with their arrival times."""

    def __init__(self, size: int = 5000):
        self.size = size
        self._lock = threading.Lock()
        self._samples: dict[int, deque[tuple[float, float]]] = {}

    def observe(self, version: int, seconds: float, now: float | None = None) -> None:
        stamp = time.monotonic() if now is None else now
        with self._lock:
            self._samples.setdefault(version, deque(maxlen=self.size)).append((stamp, seconds))

    def stats(self, now: float | None = None) -> dict[int, dict[str, float]]:
        """Per version: p50/p95/p99 in ms, count, and requests/s over the window's span."""
        now = time.monotonic() if now is None else now
        with self._lock:
            copies = {v: list(samples) for v, samples in self._samples.items() if samples}
        out = {}
        for version, samples in copies.items():
            span = max(now - samples[0][0], 1e-9)
            out[version] = {**_quantiles_ms([s for _, s in samples]), "count": len(samples),
                            "rps": round(len(samples) / span, 3)}
        return out


    def recent(self, seconds: float, now: float | None = None) -> dict[str, float]:
        """p50/p95/p99 (ms) and count of every version's latencies of the last ``seconds``
        (count 0 and no quantiles when there were none)."""
        now = time.monotonic() if now is None else now
        since = now - seconds
        latencies = []
        with self._lock:
            for samples in self._samples.values():
                for stamp, seconds_taken in reversed(samples):  # newest first
                    if stamp < since:
                        break
                    latencies.append(seconds_taken)
        if not latencies:
            return {"count": 0}
        return {**_quantiles_ms(latencies), "count": len(latencies)}


class ProxyMetrics:
    """The proxy's Prometheus metrics in their own registry, plus a :class:`LatencyWindow`."""

    def __init__(self, service: str, window: int = 5000):
        self.service = service
        self.registry = CollectorRegistry()
        self.requests = Counter("modelci_proxy_requests", "Requests answered through the proxy.",
                                ["service", "version", "role", "code"], registry=self.registry)
        self.latency = Histogram("modelci_proxy_engine_latency_seconds",
                                 "Engine round trip seen by the proxy.",
                                 ["service", "version", "role"], buckets=BUCKETS,
                                 registry=self.registry)
        self.dropped = Counter("modelci_proxy_collector_dropped",
                               "Served requests not collected.", ["service", "reason"],
                               registry=self.registry)
        self.queue_depth = Gauge("modelci_proxy_collector_queue_depth",
                                 "Served requests waiting for the cache.", ["service"],
                                 registry=self.registry)
        self.window = LatencyWindow(window)

    def observe(self, version: int | None, role: str, code: int, seconds: float) -> None:
        label = str(version) if version is not None else "-"
        self.requests.labels(self.service, label, role, str(code)).inc()
        if version is not None and code == 200:
            self.latency.labels(self.service, label, role).observe(seconds)
            if role != "shadow":
                self.window.observe(version, seconds)

    def drop(self, reason: str) -> None:
        self.dropped.labels(self.service, reason).inc()


def latency_key(service: str, version: int) -> str:
    return f"modelci:{service}:latency:{version}"


def publish_latency(client: Any, service: str, stats: dict[int, dict[str, float]]) -> None:
    """Write each version's stats to ``modelci:{service}:latency:{version}`` (a Redis hash,
    with ``updated_ms``)."""
    stamp = int(time.time() * 1000)
    with client.pipeline(transaction=False) as pipe:
        for version, values in stats.items():
            pipe.hset(latency_key(service, version), mapping={**values, "updated_ms": stamp})
        pipe.execute()


def recent_latency_key(service: str) -> str:
    return f"modelci:{service}:latency:recent"


RECENT_TTL_S = 60


def publish_recent_latency(client: Any, service: str, figures: dict[str, float]) -> None:
    """Write :meth:`LatencyWindow.recent` figures to ``modelci:{service}:latency:recent`` (a
    Redis hash, with ``updated_ms``; it expires a minute after the last write)."""
    key = recent_latency_key(service)
    with client.pipeline(transaction=True) as pipe:
        pipe.delete(key)
        pipe.hset(key, mapping={**figures, "updated_ms": int(time.time() * 1000)})
        pipe.expire(key, RECENT_TTL_S)
        pipe.execute()
