"""One contract for every serving adapter, run against each engine.

- ``triton``: the real tritonserver (session fixture ``triton_server``);
- ``tfserving``: the TF-Serving protocol fake (no TF-Serving binary installs here).

The checks run in order on one adapter per engine (a module-scoped fixture), as a deployment's
life does: first deploy, upgrade, refused duplicates and bad artifacts, rollback, a staged
challenger under canary and shadow routing, promotion. Then the proxy in front of each engine:
unversioned calls go to the routed version, the answer is the engine's, the exchange is
collected.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import redis
import requests
import torch

from cl_server.collector import kserve
from cl_server.config.schema import ModelConfig, ServiceConfig
from model_factory.templates import load_for_serving
from plugin.proxy.app import InferenceProxy
from plugin.proxy.collector import RequestCollector, served_stream
from plugin.proxy.runner import ProxyThread
from plugin.serving.base import ServingAdapter, ServingError
from plugin.serving.factory import make_adapter, routing_path
from plugin.serving.routing import RoutingTable
from plugin.serving.tfserving import TFServingAdapter
from plugin.serving.tfserving_fake import FakeTFServing
from plugin.serving.triton import TritonAdapter
from plugin.serving.triton_server import TritonServer

MODEL = ModelConfig(template="mlp", input={"name": "INPUT__0", "shape": [4], "dtype": "float32"},
                    output_name="OUTPUT__0", classes=["a", "b", "c"])
ENGINES = ["triton", "tfserving"]


@dataclass
class Deployment:
    engine: str
    adapter: ServingAdapter
    versions_root: Path
    engine_url: str
    artifacts: dict[int, Path]


@pytest.fixture(scope="module", params=ENGINES)
def deployment(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
               artifacts: dict[int, Path]) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp(f"contract-{request.param}")
    routing = RoutingTable(root / "routing.json")
    if request.param == "triton":
        server: TritonServer = request.getfixturevalue("triton_server")
        adapter: ServingAdapter = TritonAdapter(MODEL, "contract", routing, url=server.url,
                                                repository=server.repository)
        yield Deployment("triton", adapter, server.repository / "contract", server.url,
                         artifacts)
        return
    config_file = root / "models.config"
    with FakeTFServing(root / "tfserving", config_file, poll_s=0.1) as fake:
        adapter = TFServingAdapter(MODEL, "contract", routing, url=fake.url,
                                   base_path=root / "models" / "contract",
                                   model_config_file=config_file, poll_s=0.1)
        yield Deployment("tfserving", adapter, root / "models" / "contract", fake.url,
                         artifacts)


def expected_probabilities(artifact: Path, inputs: np.ndarray) -> np.ndarray:
    net, _ = load_for_serving(artifact)
    with torch.inference_mode():
        return torch.softmax(net(torch.from_numpy(inputs)), dim=1).numpy()


def no_half_written_versions(root: Path) -> None:
    leftovers = [p.name for p in root.iterdir() if not p.name.isdigit()
                 and p.name != "config.pbtxt"]
    assert leftovers == [], f"temporary entries left in {root}: {leftovers}"


def test_first_deploy_serves_the_artifact(deployment: Deployment) -> None:
    adapter = deployment.adapter
    assert adapter.current() is None and adapter.versions() == []
    result = adapter.deploy(1, deployment.artifacts[1])
    assert result.version == 1 and result.previous is None and result.total_s < 15
    assert adapter.current() == 1 and adapter.loaded() == [1]
    assert [(v.version, v.loaded, v.champion) for v in adapter.versions()] == [(1, True, True)]
    health = adapter.health()
    assert health.live and health.ready, health.detail
    batch = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    np.testing.assert_allclose(adapter.infer(batch), expected_probabilities(
        deployment.artifacts[1], batch), rtol=1e-5, atol=1e-6)


def test_upgrade_replaces_the_champion(deployment: Deployment) -> None:
    adapter = deployment.adapter
    result = adapter.deploy(2, deployment.artifacts[2])
    assert result.previous == 1 and adapter.current() == 2 and adapter.loaded() == [2]
    batch = np.ones((2, 4), dtype=np.float32)
    np.testing.assert_allclose(adapter.infer(batch), expected_probabilities(
        deployment.artifacts[2], batch), rtol=1e-5, atol=1e-6)
    no_half_written_versions(deployment.versions_root)


def test_versions_are_immutable_and_artifacts_must_exist(deployment: Deployment,
                                                         tmp_path: Path) -> None:
    adapter = deployment.adapter
    with pytest.raises(ServingError, match="already exists"):
        adapter.deploy(2, deployment.artifacts[3])
    with pytest.raises(ServingError, match="does not exist"):
        adapter.deploy(5, tmp_path / "missing.pt")
    assert adapter.current() == 2 and [v.version for v in adapter.versions()] == [1, 2]


def test_a_bad_artifact_is_refused_and_the_champion_stays(deployment: Deployment) -> None:
    adapter = deployment.adapter
    with pytest.raises(ServingError, match="3"):
        adapter.deploy(3, deployment.artifacts[0])
    assert adapter.current() == 2 and adapter.loaded() == [2]
    assert 3 not in [v.version for v in adapter.versions()]
    assert adapter.health().ready
    no_half_written_versions(deployment.versions_root)
    adapter.deploy(3, deployment.artifacts[3])  # the number is free again
    assert adapter.current() == 3


def test_rollback_returns_to_an_older_version(deployment: Deployment) -> None:
    adapter = deployment.adapter
    result = adapter.rollback(1)
    assert result.previous == 3 and adapter.current() == 1 and adapter.loaded() == [1]
    with pytest.raises(ServingError, match="not in the repository"):
        adapter.rollback(42)
    assert adapter.current() == 1


def test_a_staged_challenger_takes_canary_and_shadow_routes(deployment: Deployment) -> None:
    adapter = deployment.adapter
    adapter.stage(3)
    assert adapter.loaded() == [1, 3] and adapter.current() == 1
    with pytest.raises(ServingError, match="champion, not a challenger"):
        adapter.start_shadow(1)
    with pytest.raises(ValueError, match="canary share"):
        adapter.start_canary(3, 1.5)
    adapter.start_canary(3, 0.25)
    routes = adapter.routing.read()
    assert (routes.champion, routes.canary, routes.canary_share) == (1, 3, 0.25)
    adapter.stop_challenger()
    assert adapter.loaded() == [1] and adapter.routing.read().canary is None
    with pytest.raises(ServingError, match="not loaded"):
        adapter.start_shadow(3)
    adapter.stage(3)
    adapter.start_shadow(3)
    assert adapter.routing.read().shadow == 3
    adapter.promote(3)
    routes = adapter.routing.read()
    assert (routes.champion, routes.shadow) == (3, None) and adapter.loaded() == [3]


@pytest.mark.parametrize(("engine", "field"), [
    ({"kind": "triton"}, "engine.url"),
    ({"kind": "triton", "url": "http://e:8000"}, "engine.model_repository"),
    ({"kind": "tfserving", "url": "http://e:8501", "model_repository": "/m"},
     "engine.model_config_file"),
])
def test_the_factory_names_the_missing_config_field(engine: dict[str, str], field: str,
                                                    tmp_path: Path) -> None:
    config = ServiceConfig.model_validate({
        "name": "svc", "engine": {**engine, "model_name": "m"},
        "model": {"template": "mlp", "input": {"shape": [4]}, "classes": ["a", "b"]}})
    with pytest.raises(ValueError, match=f"^{field}: required"):
        make_adapter(config, RoutingTable(routing_path(tmp_path, "svc")))


def test_the_factory_builds_each_engine_s_adapter(tmp_path: Path) -> None:
    for kind, extra in (("triton", {}), ("tfserving", {"model_config_file": "/m/models.config"})):
        config = ServiceConfig.model_validate({
            "name": "svc", "engine": {"kind": kind, "model_name": "m", "url": "http://e:1",
                                      "model_repository": "/m", **extra},
            "model": {"template": "mlp", "input": {"shape": [4]}, "classes": ["a", "b"]}})
        adapter = make_adapter(config, RoutingTable(routing_path(tmp_path, "svc")))
        assert adapter.kind == kind and adapter.model_name == "m"
    assert routing_path(tmp_path, "svc") == tmp_path / "services" / "svc" / "routing.json"
    with pytest.raises(ValueError, match="invalid model name"):
        routing_path(tmp_path, "../x")


def _predict(engine: str, url: str, batch: np.ndarray) -> tuple[int, np.ndarray]:
    """(version that answered, probabilities) through the engine's own REST protocol."""
    if engine == "triton":
        body = {"inputs": [{"name": "INPUT__0", "shape": list(batch.shape), "datatype": "FP32",
                            "data": batch.ravel().tolist()}]}
        answer = requests.post(f"{url}/v2/models/contract/infer", json=body, timeout=10)
        answer.raise_for_status()
        output = answer.json()["outputs"][0]
        return int(answer.json()["model_version"]), np.asarray(output["data"]).reshape(
            output["shape"])
    answer = requests.post(f"{url}/v1/models/contract:predict",
                           json={"instances": batch.tolist()}, timeout=10)
    answer.raise_for_status()
    return -1, np.asarray(answer.json()["predictions"])


def test_the_proxy_routes_answers_unchanged_and_collects(deployment: Deployment,
                                                         redis_url: str, tmp_path: Path) -> None:
    adapter = deployment.adapter
    adapter.stage(2)
    adapter.start_canary(2, 0.5)
    collector = RequestCollector(redis_url, "contract", deployment.engine, spool_dir=tmp_path)
    proxy = InferenceProxy(deployment.engine, deployment.engine_url, "contract", "contract",
                           adapter.routing, collector, seed=1)
    batch = np.random.default_rng(3).normal(size=(2, 4)).astype(np.float32)
    expected = {v: expected_probabilities(deployment.artifacts[v], batch) for v in (2, 3)}
    try:
        with ProxyThread(proxy) as running:
            answers = [_predict(deployment.engine, running.url, batch) for _ in range(40)]
        assert collector.flush()
    finally:
        adapter.stop_challenger()
        collector.close()
    client = redis.Redis.from_url(redis_url)
    try:
        entries = [fields for _, fields in client.xrange(served_stream("contract"))]
    finally:
        client.close()
    assert len(entries) == 40
    served = Counter(int(e[b"version"]) for e in entries)
    assert set(served) == {2, 3} and 10 <= served[2] <= 30
    for entry, (version, probabilities) in zip(entries, answers, strict=True):
        answered_by = int(entry[b"version"])
        if version != -1:  # Triton says which version answered; the record must agree
            assert version == answered_by
        np.testing.assert_allclose(probabilities, expected[answered_by], rtol=1e-5, atol=1e-6)
        outputs = kserve.unpack(entry[b"outputs"])
        np.testing.assert_allclose(next(iter(outputs.values())), probabilities, rtol=1e-6)
        role = entry[b"role"].decode()
        assert role == ("canary" if answered_by == 2 else "champion")
    assert json.loads(json.dumps(proxy.metrics.window.stats()))  # per-version latency kept
