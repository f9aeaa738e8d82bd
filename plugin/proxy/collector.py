"""Hand served requests from the proxy to the cache without adding latency.

The proxy calls :meth:`RequestCollector.offer` with the raw bodies of a served request; that
is a ``put_nowait`` on a bounded queue, nothing more. A background thread decodes the bodies
(V2 JSON/binary or TF-Serving JSON) and appends one entry per request to the Redis stream
``modelci:{service}:served`` with a pipeline (one round trip per batch). When the queue is full
the record is dropped and counted, never waited for; when Redis is unreachable batches go to a
local spool file (:class:`cl_server.collector.writer.StreamWriter`), replayed into the stream
once Redis answers again (checked every second).

Stream entry fields (bytes): ``id`` (request id), ``ts_ms``, ``version``, ``role``
(``champion`` / ``canary`` / ``shadow`` / ``explicit``), ``latency_ms`` (engine round trip seen
by the proxy), ``inputs`` and ``outputs`` (tensors in :func:`cl_server.collector.kserve.pack` form).
A shadow entry has the id of the request it mirrors.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import redis

from cl_server.collector import kserve
from cl_server.collector.spool import Spool
from cl_server.collector.writer import StreamWriter

log = logging.getLogger(__name__)

RECOVERY_EVERY_S = 1.0


def served_stream(service: str) -> str:
    """The Redis stream key of a service's served requests."""
    return f"modelci:{service}:served"


@dataclass(frozen=True)
class ServedRequest:
    """One request as the proxy saw it; decoding waits for the background thread."""

    request_id: str
    version: int
    role: str
    ts_ms: int
    latency_ms: float
    request_body: bytes
    request_header_length: int | None
    request_encoding: str | None
    response_body: bytes
    response_header_length: int | None
    response_encoding: str | None


def decode_v2(record: ServedRequest) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Inputs and outputs of a KServe V2 (Triton) exchange."""
    request = kserve.decompress(record.request_body, record.request_encoding)
    response = kserve.decompress(record.response_body, record.response_encoding)
    return (kserve.decode(request, record.request_header_length, "inputs"),
            kserve.decode(response, record.response_header_length, "outputs"))


def decode_tfserving(record: ServedRequest) -> tuple[dict[str, np.ndarray],
                                                     dict[str, np.ndarray]]:
    """Inputs and outputs of a TF-Serving REST predict exchange (row or columnar format)."""
    try:
        request = json.loads(kserve.decompress(record.request_body, record.request_encoding))
        response = json.loads(kserve.decompress(record.response_body, record.response_encoding))
    except ValueError as exc:
        raise kserve.BodyError(f"not JSON: {exc}") from exc
    inputs = request.get("instances", request.get("inputs"))
    outputs = response.get("predictions", response.get("outputs"))
    if inputs is None or outputs is None:
        raise kserve.BodyError("no instances/inputs in the request or no predictions/outputs "
                               "in the response")
    return _tensors(inputs, "inputs"), _tensors(outputs, "outputs")


def _tensors(value: Any, default: str) -> dict[str, np.ndarray]:
    if isinstance(value, dict):  # named tensors (columnar format)
        return {str(k): np.asarray(v) for k, v in value.items()}
    return {default: np.asarray(value)}


DECODERS: dict[str, Callable[[ServedRequest], tuple[dict[str, np.ndarray],
                                                     dict[str, np.ndarray]]]] = {
    "triton": decode_v2, "tfserving": decode_tfserving}


class RequestCollector:
    """Bounded, non-blocking hand-off of served requests to a Redis stream.

    Parameters:
        redis_url: the cache (``redis://`` or ``unix://``).
        service: the service name (stream ``modelci:{service}:served``).
        engine: ``triton`` or ``tfserving`` (how bodies are decoded).
        spool_dir: where records wait on disk while Redis is unreachable
            (``<spool_dir>/<service>.served.spool``), replayed when it is back.
        max_queue: records waiting at most; more are dropped and counted.
        max_stream: approximate length the stream is trimmed to (``XADD MAXLEN ~``).
        batch_size: records written per pipeline.
    """

    def __init__(self, redis_url: str, service: str, engine: str, *, spool_dir: Path,
                 max_queue: int = 10_000, max_stream: int = 100_000, batch_size: int = 256):
        self.client = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=2)
        self.stream = served_stream(service)
        self.decoder = DECODERS[engine]
        self.batch_size = batch_size
        self.writer = StreamWriter(self.client, self.stream,
                                   Spool(Path(spool_dir) / f"{service}.served.spool"),
                                   max_length=max_stream)
        self._queue: queue.Queue[ServedRequest | None] = queue.Queue(max_queue)
        self._lock = threading.Lock()
        self.offered = self.written = self.dropped = self.undecodable = 0
        self._on_drop: Callable[[str], None] | None = None
        self._closing = threading.Event()
        self._next_recovery = 0.0
        self._thread = threading.Thread(target=self._run, name="request-collector",
                                        daemon=True)
        self._thread.start()

    def on_drop(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(reason)`` for each dropped record (``overload`` / ``undecodable``)."""
        self._on_drop = callback

    def offer(self, record: ServedRequest) -> bool:
        """Queue ``record`` for writing; False (and counted) when the queue is full."""
        self.offered += 1
        try:
            self._queue.put_nowait(record)
            return True
        except queue.Full:
            self._drop("overload")
            return False

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every offered record is written or dropped; True if it got there."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if self.written + self.dropped >= self.offered:
                    return True
            time.sleep(0.01)
        return False

    def close(self, timeout_s: float = 10.0) -> None:
        """Write (or spool) what is queued, then stop the thread."""
        try:
            self._queue.put(None, timeout=timeout_s)
        except queue.Full:
            pass
        self._thread.join(timeout_s)
        self._closing.set()
        self._thread.join(5.0)
        self.client.close()

    def _drop(self, reason: str) -> None:
        with self._lock:
            self.dropped += 1
            if reason == "undecodable":
                self.undecodable += 1
        if self._on_drop is not None:
            self._on_drop(reason)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            if self.writer.degraded and time.monotonic() >= self._next_recovery:
                self._recover()
            try:
                first = self._queue.get(timeout=0.2)
            except queue.Empty:
                if self._closing.is_set():
                    return
                continue
            batch = []
            if first is None:
                stopping = True
            else:
                batch.append(first)
            while len(batch) < self.batch_size:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            entries = [entry for entry in map(self._entry, batch) if entry is not None]
            self._write(entries)
        if self.writer.degraded:
            self._recover()

    def _entry(self, record: ServedRequest) -> dict[str, Any] | None:
        try:
            inputs, outputs = self.decoder(record)
            return {"id": record.request_id, "ts_ms": record.ts_ms, "version": record.version,
                    "role": record.role, "latency_ms": f"{record.latency_ms:.3f}",
                    "inputs": kserve.pack(inputs), "outputs": kserve.pack(outputs)}
        except (kserve.BodyError, ValueError, TypeError, OSError) as exc:
            log.warning("collector: request %s not recorded: %s", record.request_id, exc)
            self._drop("undecodable")
            return None

    def _write(self, entries: list[dict[str, Any]]) -> None:
        outcome = self.writer.write(entries)
        if outcome == "written":
            with self._lock:
                self.written += len(entries)
        else:
            self._next_recovery = time.monotonic() + RECOVERY_EVERY_S

    def _recover(self) -> None:
        replayed = self.writer.recover()
        with self._lock:
            self.written += replayed
        self._next_recovery = time.monotonic() + RECOVERY_EVERY_S
