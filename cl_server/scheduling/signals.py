"""What a scheduling policy looks at: inference latency, host load, GPU load, queue depth.

The request-collecting proxy publishes, every half second, its latency figures over the last
couple of seconds (all serving versions together, shadow answers left out) to the Redis hash
``modelci:{service}:latency:recent`` (:func:`plugin.proxy.metrics.publish_recent_latency`).
:class:`LiveSignals` reads that hash and adds the host's CPU and memory utilization (psutil),
the GPUs' utilization when NVML is there (``nvidia-ml-py``, optional) and the job queue's
depth. Figures older than ``max_age_s`` (no traffic, the proxy stopped) count as no latency
signal: ``p95_ms`` is None.

Example:
    >>> quiet = Signals(p95_ms=None, requests=0)
    >>> quiet.p95_ms is None, quiet.describe()
    (True, 'p95 -')
    >>> Signals(p95_ms=12.5, requests=40, cpu_percent=71.0).describe()
    'p95 12.5 ms over 40 requests, cpu 71%'
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import psutil
import redis

from plugin.proxy.metrics import recent_latency_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Signals:
    """One reading. Latencies in ms; utilizations in percent (0-100); None: not available."""

    p95_ms: float | None
    requests: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    cpu_percent: float | None = None
    memory_percent: float | None = None
    gpu_percent: float | None = None
    queue_depth: int | None = None

    def describe(self) -> str:
        text = "p95 -" if self.p95_ms is None else \
            f"p95 {self.p95_ms:g} ms over {self.requests} requests"
        if self.cpu_percent is not None:
            text += f", cpu {self.cpu_percent:.0f}%"
        if self.gpu_percent is not None:
            text += f", gpu {self.gpu_percent:.0f}%"
        return text

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class SignalSource(Protocol):
    """Anything that gives a current :class:`Signals` reading."""

    def read(self) -> Signals: ...


class _Gpus:
    """GPU utilization through NVML, or nothing when NVML or a GPU is missing."""

    def __init__(self) -> None:
        self.handles: list[Any] = []
        try:
            import pynvml  # nvidia-ml-py, optional

            pynvml.nvmlInit()
            self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i)
                            for i in range(pynvml.nvmlDeviceGetCount())]
            self._nvml = pynvml
        except Exception:  # noqa: BLE001 - no package, no driver, no device: no GPU signal
            self.handles = []

    def percent(self) -> float | None:
        if not self.handles:
            return None
        try:
            return float(max(self._nvml.nvmlDeviceGetUtilizationRates(h).gpu
                             for h in self.handles))
        except Exception as exc:  # noqa: BLE001 - a driver hiccup only loses this reading
            log.debug("GPU utilization not read: %s", exc)
            return None


class LiveSignals:
    """The live signals of ``service`` (see the module doc).

    Parameters:
        cache: the Redis the proxy publishes to (and the job queue lives in).
        service: whose latency figures to read.
        max_age_s: older latency figures are no signal.
        queues: RQ queue names whose depth is summed (empty: no queue signal).
    """

    def __init__(self, cache: redis.Redis, service: str, *, max_age_s: float = 3.0,
                 queues: Sequence[str] = ()):
        self.cache = cache
        self.key = recent_latency_key(service)
        self.max_age_s = max_age_s
        self.queues = list(queues)
        self.gpus = _Gpus()
        psutil.cpu_percent(interval=None)  # the first call only starts the measurement

    def read(self) -> Signals:
        p95 = p50 = p99 = None
        requests = 0
        try:
            figures = {k.decode(): v.decode() for k, v in self.cache.hgetall(self.key).items()}
        except redis.RedisError as exc:
            log.warning("latency figures not read: %s", exc)
            figures = {}
        if figures:
            age_s = time.time() - int(figures.get("updated_ms", "0")) / 1000
            if age_s <= self.max_age_s and int(figures.get("count", "0")) > 0:
                p95, p50, p99 = (float(figures[k]) for k in ("p95_ms", "p50_ms", "p99_ms"))
                requests = int(figures["count"])
        depth = None
        if self.queues:
            try:
                depth = sum(int(self.cache.llen(f"rq:queue:{q}")) for q in self.queues)
            except redis.RedisError:
                depth = None
        return Signals(p95_ms=p95, requests=requests, p50_ms=p50, p99_ms=p99,
                       cpu_percent=psutil.cpu_percent(interval=None),
                       memory_percent=psutil.virtual_memory().percent,
                       gpu_percent=self.gpus.percent(), queue_depth=depth)
