"""Decoding served bodies (KServe V2 as tritonclient writes them, TF-Serving JSON) and the
collector's hand-off to Redis: nothing lost while Redis is up, drops counted on overload,
records kept through a Redis outage."""

from __future__ import annotations

import gzip
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import redis
import tritonclient.http as triton_http

from cl_server.collector import kserve
from cl_server.collector.writer import find_records
from plugin.proxy.collector import RequestCollector, ServedRequest, served_stream
from plugin.proxy.metrics import LatencyWindow, ProxyMetrics, latency_key, publish_latency


def tritonclient_body(tensors: dict[str, np.ndarray], binary: bool) -> tuple[bytes, int | None]:
    inputs = []
    for name, array in tensors.items():
        datatype = "BYTES" if array.dtype == object else kserve.NAMES[array.dtype]
        tensor = triton_http.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    return triton_http.InferenceServerClient.generate_request_body(inputs)


@pytest.mark.parametrize("binary", [True, False])
def test_decode_reads_what_tritonclient_writes(binary: bool) -> None:
    rng = np.random.default_rng(0)
    tensors = {"image": rng.random((2, 1, 3, 3), dtype=np.float32),
               "ids": rng.integers(-5, 5, size=(2, 4)).astype(np.int64),
               "mask": np.array([[True, False]]),
               "text": np.array([b"good film", "très bien".encode()], dtype=object)}
    body, header_length = tritonclient_body(tensors, binary)
    decoded = kserve.decode(body, header_length, "inputs")
    assert set(decoded) == set(tensors)
    for name, array in tensors.items():
        assert decoded[name].shape == array.shape
        np.testing.assert_array_equal(decoded[name], array)
    unzipped = kserve.decompress(gzip.compress(body), "gzip")
    assert kserve.decode(unzipped, header_length, "inputs").keys() == tensors.keys()


def test_pack_round_trips_every_dtype_without_pickle() -> None:
    tensors = {name: np.arange(6, dtype=dtype).reshape(2, 3)
               for name, dtype in kserve.DTYPES.items() if name != "BOOL"}
    tensors["BOOL"] = np.array([True, False])
    tensors["BYTES"] = np.array([b"a", b"", b"\x00\xff"], dtype=object)
    restored = kserve.unpack(kserve.pack(tensors))
    for name, array in tensors.items():
        assert restored[name].dtype == array.dtype
        np.testing.assert_array_equal(restored[name], array)


_TRUNCATED = (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], '
              b'"parameters": {"binary_data_size": 8}}]}')


@pytest.mark.parametrize(("body", "length", "message"), [
    (b"{nope", None, "not valid JSON"),
    (b'{"outputs": []}', None, "no 'inputs' list"),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1]}]}', None,
     "do not fit shape"),
    (_TRUNCATED + b"abcd", len(_TRUNCATED), "ends after 4 of 8 bytes"),
    (b'{"inputs": []}', 99, "outside the body"),
    (b'{"inputs": [{"name": "x", "datatype": "BF99", "shape": [1], "data": [1]}]}', None,
     "unsupported datatype"),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1], "data": [1]}]}', None,
     "not a list of non-negative integers"),
])
def test_malformed_bodies_are_refused_with_the_reason(body: bytes, length: int | None,
                                                      message: str) -> None:
    with pytest.raises(kserve.BodyError, match=message):
        kserve.decode(body, length, "inputs")


def served(i: int, version: int = 1, role: str = "champion", body: bytes | None = None
           ) -> ServedRequest:
    request = body or (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], '
                       b'"data": [%d, 1]}]}' % i)
    response = b'{"outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 2], ' \
               b'"data": [0.25, 0.75]}]}'
    return ServedRequest(f"r{i}", version, role, 1_700_000_000_000 + i, 1.5, request, None,
                         None, response, None, None)


def entries(redis_url: str) -> list[dict[bytes, bytes]]:
    client = redis.Redis.from_url(redis_url)
    try:
        return [fields for _, fields in client.xrange(served_stream("svc"))]
    finally:
        client.close()


def test_collector_writes_every_record_in_order_with_its_tensors(redis_url: str,
                                                                 tmp_path: Path) -> None:
    collector = RequestCollector(redis_url, "svc", "triton", spool_dir=tmp_path, batch_size=64)
    try:
        for i in range(500):
            assert collector.offer(served(i))
        assert collector.flush()
    finally:
        collector.close()
    rows = entries(redis_url)
    assert [row[b"id"] for row in rows] == [f"r{i}".encode() for i in range(500)]
    assert collector.written == 500 and collector.dropped == 0
    first = rows[0]
    assert first[b"version"] == b"1" and first[b"role"] == b"champion"
    np.testing.assert_array_equal(kserve.unpack(first[b"inputs"])["x"], [[0.0, 1.0]])
    np.testing.assert_array_equal(kserve.unpack(first[b"outputs"])["y"], [[0.25, 0.75]])


def test_undecodable_records_are_counted_not_written(redis_url: str, tmp_path: Path) -> None:
    collector = RequestCollector(redis_url, "svc", "triton", spool_dir=tmp_path)
    try:
        collector.offer(served(1, body=b"{broken"))
        collector.offer(served(2))
        assert collector.flush()
    finally:
        collector.close()
    assert [row[b"id"] for row in entries(redis_url)] == [b"r2"]
    assert collector.undecodable == 1 and collector.dropped == 1


def test_overload_drops_and_counts_without_blocking(redis_url: str, tmp_path: Path) -> None:
    collector = RequestCollector(redis_url, "svc", "triton", spool_dir=tmp_path, max_queue=10,
                                 batch_size=1)
    release = threading.Event()
    write = collector.writer.write

    def stalled(records: list[dict[str, object]]) -> str:
        release.wait(10)  # the cache is slow: the queue fills up behind this batch
        return write(records)

    collector.writer.write = stalled  # type: ignore[method-assign]
    drops: list[str] = []
    collector.on_drop(drops.append)
    try:
        start = time.perf_counter()
        accepted = [collector.offer(served(i)) for i in range(100)]
        assert time.perf_counter() - start < 0.5  # offer never waits
        assert accepted.count(False) >= 80
        assert collector.dropped == accepted.count(False) == drops.count("overload")
        release.set()
        assert collector.flush()
    finally:
        release.set()
        collector.close()
    assert not collector._thread.is_alive()
    assert len(entries(redis_url)) == accepted.count(True) == collector.written


def test_records_wait_in_the_spool_while_redis_refuses_writes(redis_url: str,
                                                             tmp_path: Path) -> None:
    admin = redis.Redis.from_url(redis_url)
    collector = RequestCollector(redis_url, "svc", "triton", spool_dir=tmp_path)
    try:
        admin.config_set("min-replicas-to-write", 1)  # every write now fails: NOREPLICAS
        for i in range(20):
            collector.offer(served(i))
        deadline = time.monotonic() + 5
        while len(collector.writer.spool) < 20 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(collector.writer.spool) == 20 and collector.written == 0
        admin.config_set("min-replicas-to-write", 0)
        assert collector.flush(timeout_s=15)
    finally:
        admin.config_set("min-replicas-to-write", 0)
        admin.close()
        collector.close()
    assert [row[b"id"] for row in entries(redis_url)] == [f"r{i}".encode() for i in range(20)]
    assert collector.dropped == 0 and len(collector.writer.spool) == 0


def test_records_spooled_while_redis_is_unreachable_survive_a_restart(tmp_path: Path,
                                                                      redis_url: str) -> None:
    """A proxy that dies with records in its spool replays them at its next start."""
    dead = RequestCollector("redis://127.0.0.1:9", "svc", "triton", spool_dir=tmp_path)
    for i in range(5):
        dead.offer(served(i))
    deadline = time.monotonic() + 5
    while len(dead.writer.spool) < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    dead.close(timeout_s=1)
    assert len(dead.writer.spool) == 5
    revived = RequestCollector(redis_url, "svc", "triton", spool_dir=tmp_path)
    try:
        deadline = time.monotonic() + 10
        while len(entries(redis_url)) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        revived.close()
    assert [row[b"id"] for row in entries(redis_url)] == [f"r{i}".encode() for i in range(5)]


def test_tfserving_bodies_are_decoded_in_both_formats(redis_url: str, tmp_path: Path) -> None:
    collector = RequestCollector(redis_url, "svc", "tfserving", spool_dir=tmp_path)
    rows = (b'{"instances": [[1, 2], [3, 4]]}', b'{"predictions": [[0.1, 0.9], [0.8, 0.2]]}')
    columns = (b'{"inputs": {"a": [[1, 2]]}}', b'{"outputs": [[0.5, 0.5]]}')
    try:
        for i, (request, response) in enumerate((rows, columns)):
            collector.offer(ServedRequest(f"t{i}", 2, "champion", 0, 1.0, request, None, None,
                                          response, None, None))
        assert collector.flush()
    finally:
        collector.close()
    first, second = entries(redis_url)
    np.testing.assert_array_equal(kserve.unpack(first[b"inputs"])["inputs"], [[1, 2], [3, 4]])
    np.testing.assert_array_equal(kserve.unpack(first[b"outputs"])["outputs"],
                                  [[0.1, 0.9], [0.8, 0.2]])
    np.testing.assert_array_equal(kserve.unpack(second[b"inputs"])["a"], [[1, 2]])


def test_latency_quantiles_per_version_reach_redis_and_prometheus(redis_url: str) -> None:
    metrics = ProxyMetrics("svc")
    for ms in range(1, 201):
        metrics.observe(1, "champion", 200, ms / 1000)
        metrics.observe(2, "canary", 200, 2 * ms / 1000)
    metrics.observe(2, "shadow", 200, 10.0)  # shadow calls do not count as served latency
    stats = metrics.window.stats()
    assert stats[1]["p50_ms"] == pytest.approx(100.5) and stats[1]["count"] == 200
    assert stats[2]["p99_ms"] == pytest.approx(2 * 198.01, rel=1e-3)
    client = redis.Redis.from_url(redis_url)
    try:
        publish_latency(client, "svc", stats)
        stored = client.hgetall(latency_key("svc", 2))
    finally:
        client.close()
    assert float(stored[b"p95_ms"]) == stats[2]["p95_ms"] and b"updated_ms" in stored
    from prometheus_client import generate_latest

    text = generate_latest(metrics.registry).decode()
    assert 'modelci_proxy_requests_total{code="200",role="canary",service="svc",version="2"} ' \
           '200.0' in text
    assert "modelci_proxy_engine_latency_seconds_bucket" in text


def test_latency_window_keeps_the_most_recent_samples() -> None:
    window = LatencyWindow(size=10)
    for i in range(100):
        window.observe(1, 1.0 if i < 90 else 0.001, now=float(i))
    assert window.stats(now=100.0)[1]["p99_ms"] == pytest.approx(1.0)


def test_a_label_joins_the_answer_served_not_the_shadow_one(redis_url: str,
                                                            tmp_path: Path) -> None:
    collector = RequestCollector(redis_url, "svc", "triton", spool_dir=tmp_path)
    try:
        collector.offer(served(7, version=1, role="champion"))
        collector.offer(served(7, version=2, role="shadow"))  # the same request, mirrored
        assert collector.flush()
    finally:
        collector.close()
    assert [row[b"role"] for row in entries(redis_url)] == [b"champion", b"shadow"]
    client = redis.Redis.from_url(redis_url)
    try:
        found = find_records(client, served_stream("svc"), ["r7"], 1_700_000_000_007)
    finally:
        client.close()
    assert found["r7"]["version"] == b"1" and found["r7"]["role"] == b"champion"
