"""The real tritonserver behind the Triton adapter and the request-collecting proxy.

One model ``tiny`` (an MLP on 4 features, 3 classes) is deployed, served through the proxy
with the official ``tritonclient.http`` client, switched while traffic runs, rolled back,
split for a canary and mirrored for a shadow; the collector's Redis stream is checked against
what the clients sent and received.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
import requests
import tritonclient.http as triton_http

from cl_server.collector import kserve
from cl_server.config.schema import ModelConfig
from plugin.proxy.app import InferenceProxy
from plugin.proxy.collector import RequestCollector, served_stream
from plugin.proxy.metrics import latency_key
from plugin.proxy.runner import ProxyThread
from plugin.serving.base import ServingError
from plugin.serving.routing import RoutingTable
from plugin.serving.triton import TritonAdapter
from plugin.serving.triton_server import TritonServer

MODEL = ModelConfig(template="mlp", input={"name": "INPUT__0", "shape": [4], "dtype": "float32"},
                    output_name="OUTPUT__0", classes=["a", "b", "c"])


@pytest.fixture(scope="module")
def adapter(triton_server: TritonServer, artifacts: dict[int, Path],
            tmp_path_factory: pytest.TempPathFactory) -> TritonAdapter:
    routing = RoutingTable(tmp_path_factory.mktemp("routing") / "routing.json")
    adapter = TritonAdapter(MODEL, "tiny", routing, url=triton_server.url,
                            repository=triton_server.repository)
    adapter.deploy(1, artifacts[1])
    return adapter


@pytest.fixture
def collector(redis_url: str, tmp_path: Path) -> Iterator[RequestCollector]:
    collector = RequestCollector(redis_url, "svc", "triton", spool_dir=tmp_path)
    yield collector
    collector.close()


@pytest.fixture
def proxy(adapter: TritonAdapter, triton_server: TritonServer,
          collector: RequestCollector) -> Iterator[ProxyThread]:
    app = InferenceProxy("triton", triton_server.url, "tiny", "svc", adapter.routing, collector,
                         publish_every_s=0.2, seed=0)
    with ProxyThread(app) as running:
        yield running


def client(url: str) -> triton_http.InferenceServerClient:
    return triton_http.InferenceServerClient(url.removeprefix("http://"))


def infer(triton: triton_http.InferenceServerClient, batch: np.ndarray, binary: bool = True,
          version: str = "") -> triton_http.InferResult:
    tensor = triton_http.InferInput("INPUT__0", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch, binary_data=binary)
    output = triton_http.InferRequestedOutput("OUTPUT__0", binary_data=binary)
    return triton.infer("tiny", [tensor], outputs=[output], model_version=version)


def stream_entries(redis_url: str) -> list[dict[bytes, bytes]]:
    connection = redis.Redis.from_url(redis_url)
    try:
        return [fields for _, fields in connection.xrange(served_stream("svc"))]
    finally:
        connection.close()


def stage_challenger(adapter: TritonAdapter, artifact: Path) -> None:
    """Version 3 loaded beside the champion without traffic (written on first use)."""
    if 3 in [v.version for v in adapter.versions()]:
        adapter.stage(3)
    else:
        adapter.deploy(3, artifact, promote=False)


class Traffic:
    """Requests through the proxy on a thread until stopped: counts failures and versions."""

    def __init__(self, url: str):
        self.url = url
        self.failures: list[str] = []
        self.versions: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        triton = client(self.url)
        batch = np.ones((1, 4), dtype=np.float32)
        while not self._stop.is_set():
            try:
                self.versions[infer(triton, batch).get_response()["model_version"]] += 1
            except Exception as exc:  # noqa: BLE001 - every failure is what we count
                self.failures.append(repr(exc))
            time.sleep(0.005)
        triton.close()

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)


def test_proxy_answers_as_the_engine_and_collects_what_was_served(
        adapter: TritonAdapter, triton_server: TritonServer, proxy: ProxyThread,
        collector: RequestCollector, redis_url: str) -> None:
    batch = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    direct = infer(client(triton_server.url), batch)
    for binary in (True, False):
        through = infer(client(proxy.url), batch, binary=binary)
        np.testing.assert_allclose(through.as_numpy("OUTPUT__0"), direct.as_numpy("OUTPUT__0"),
                                   rtol=1e-6)
        assert through.get_response()["model_version"] == "1"
    assert collector.flush()
    entries = stream_entries(redis_url)
    assert len(entries) == 2 and collector.dropped == 0
    for entry in entries:
        assert entry[b"version"] == b"1" and entry[b"role"] == b"champion"
        np.testing.assert_array_equal(kserve.unpack(entry[b"inputs"])["INPUT__0"], batch)
        np.testing.assert_allclose(kserve.unpack(entry[b"outputs"])["OUTPUT__0"],
                                   direct.as_numpy("OUTPUT__0"), rtol=1e-6)
    # Per-version latency reaches Redis for the dashboard and the validator's latency gate.
    deadline = time.monotonic() + 5
    connection = redis.Redis.from_url(redis_url)
    while not connection.exists(latency_key("svc", 1)) and time.monotonic() < deadline:
        time.sleep(0.05)
    published = connection.hgetall(latency_key("svc", 1))
    connection.close()
    assert int(published[b"count"]) == 2 and float(published[b"p99_ms"]) > 0
    # The rest of the V2 API passes through untouched.
    assert client(proxy.url).is_model_ready("tiny", "1")
    assert client(proxy.url).get_model_metadata("tiny")["name"] == "tiny"


def test_deploy_and_rollback_under_traffic_fail_no_request(
        adapter: TritonAdapter, artifacts: dict[int, Path], proxy: ProxyThread) -> None:
    with Traffic(proxy.url) as traffic:
        time.sleep(0.3)
        result = adapter.deploy(2, artifacts[2])
        time.sleep(0.3)
    assert traffic.failures == []
    assert result.previous == 1 and result.total_s < 15
    assert set(traffic.versions) == {"1", "2"}
    assert adapter.current() == 2 and adapter.loaded() == [2]

    with Traffic(proxy.url) as traffic:
        time.sleep(0.3)
        adapter.rollback(1)
        time.sleep(0.3)
    assert traffic.failures == []
    assert adapter.current() == 1 and adapter.loaded() == [1]
    assert [(v.version, v.champion) for v in adapter.versions()] == [(1, True), (2, False)]


def test_canary_split_is_within_five_points_of_the_share(
        adapter: TritonAdapter, artifacts: dict[int, Path], proxy: ProxyThread) -> None:
    stage_challenger(adapter, artifacts[3])
    adapter.start_canary(3, 0.3)
    try:
        session = requests.Session()
        body = {"inputs": [{"name": "INPUT__0", "shape": [1, 4], "datatype": "FP32",
                            "data": [0.0, 1.0, 2.0, 3.0]}]}
        versions = Counter(session.post(f"{proxy.url}/v2/models/tiny/infer", json=body)
                           .json()["model_version"] for _ in range(1000))
    finally:
        adapter.stop_challenger()
    assert set(versions) == {"1", "3"}
    assert abs(versions["3"] / 1000 - 0.3) <= 0.05
    assert adapter.loaded() == [1]


def test_shadow_answers_are_recorded_not_returned(
        adapter: TritonAdapter, artifacts: dict[int, Path], proxy: ProxyThread,
        collector: RequestCollector, redis_url: str, triton_server: TritonServer) -> None:
    stage_challenger(adapter, artifacts[3])
    adapter.start_shadow(3)
    batch = np.random.default_rng(1).normal(size=(2, 4)).astype(np.float32)
    try:
        answers = [infer(client(proxy.url), batch) for _ in range(10)]
        assert {a.get_response()["model_version"] for a in answers} == {"1"}
        deadline = time.monotonic() + 10
        while len(stream_entries(redis_url)) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        shadow_direct = infer(client(triton_server.url), batch, version="3")
    finally:
        adapter.stop_challenger()
    entries = stream_entries(redis_url)
    by_role: dict[bytes, list[dict[bytes, bytes]]] = {}
    for entry in entries:
        by_role.setdefault(entry[b"role"], []).append(entry)
    assert len(by_role[b"champion"]) == 10 and len(by_role[b"shadow"]) == 10
    assert {e[b"id"] for e in by_role[b"champion"]} == {e[b"id"] for e in by_role[b"shadow"]}
    for entry in by_role[b"shadow"]:
        assert entry[b"version"] == b"3"
        np.testing.assert_allclose(kserve.unpack(entry[b"outputs"])["OUTPUT__0"],
                                   shadow_direct.as_numpy("OUTPUT__0"), rtol=1e-6)


def test_malformed_body_gets_the_engines_error_and_is_not_collected(
        adapter: TritonAdapter, proxy: ProxyThread, triton_server: TritonServer,
        collector: RequestCollector, redis_url: str) -> None:
    short = b'{"inputs": [{"name": "INPUT__0", "shape": [1, 4], "datatype": "FP32", "data": [1]}]}'
    for body in (b"{not json", short):
        direct = requests.post(f"{triton_server.url}/v2/models/tiny/versions/1/infer",
                               data=body)
        through = requests.post(f"{proxy.url}/v2/models/tiny/infer", data=body)
        assert through.status_code == direct.status_code >= 400  # Triton: 500 / 400
        assert through.json() == direct.json() and "error" in through.json()
    assert collector.flush()
    assert stream_entries(redis_url) == [] and collector.offered == 0


def test_bad_artifact_fails_the_deploy_and_the_champion_keeps_serving(
        adapter: TritonAdapter, tmp_path: Path, proxy: ProxyThread) -> None:
    champion = adapter.current()
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"this is not a state dict")
    with pytest.raises(ServingError, match="version 9 is at UNAVAILABLE"):
        adapter.deploy(9, broken)
    assert adapter.current() == champion and adapter.loaded() == [champion]
    assert 9 not in [v.version for v in adapter.versions()]  # removed: can be retried
    answer = infer(client(proxy.url), np.zeros((1, 4), dtype=np.float32))
    assert answer.get_response()["model_version"] == str(champion)


def test_engine_down_fails_the_deploy_with_a_clear_error(
        tmp_path: Path, artifacts: dict[int, Path]) -> None:
    routing = RoutingTable(tmp_path / "routing.json")
    routing.update(champion=1)
    dead = TritonAdapter(MODEL, "tiny", routing, url="http://127.0.0.1:9",
                         repository=tmp_path / "repo", timeout_s=2)
    with pytest.raises(ServingError, match=r"Triton at http://127.0.0.1:9 is unreachable"):
        dead.deploy(2, artifacts[2])
    assert routing.read().champion == 1
    assert dead.health().live is False and "unreachable" in dead.health().detail


def test_names_and_versions_cannot_escape_the_repository(tmp_path: Path) -> None:
    routing = RoutingTable(tmp_path / "routing.json")
    for name in ("../etc", "a/b", ".hidden", ""):
        with pytest.raises(ValueError, match="invalid model name"):
            TritonAdapter(MODEL, name, routing, url="http://127.0.0.1:9", repository=tmp_path)
    adapter = TritonAdapter(MODEL, "ok", routing, url="http://127.0.0.1:9", repository=tmp_path)
    for version in (0, -1, "1/../..", 2**63, True):
        with pytest.raises(ValueError, match="invalid version"):
            adapter.deploy(version, tmp_path / "x.pt")  # type: ignore[arg-type]
