"""A text model (BYTES input, ``text-minilm`` head over the offline MiniLM encoder) on the real
tritonserver: deployed by the Triton adapter, answered through the proxy with the official
``tritonclient.http`` client (binary and JSON strings), and collected as texts."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
import tritonclient.http as triton_http

from cl_server.collector import kserve
from cl_server.config.schema import ModelConfig
from model_factory.templates.text import TextClassifier
from plugin.proxy.app import InferenceProxy
from plugin.proxy.collector import RequestCollector, served_stream
from plugin.proxy.runner import ProxyThread
from plugin.serving.routing import RoutingTable
from plugin.serving.triton import TritonAdapter
from plugin.serving.triton_server import TritonServer, stub_site

MODEL = ModelConfig(template="text-minilm",
                    input={"name": "TEXT", "shape": [1], "dtype": "bytes", "kind": "text"},
                    output_name="PROBS", classes=["negative", "positive"])
TRAIN = ["a wonderful, moving film", "brilliant acting and a clever plot",
         "dull and far too long", "a boring, lifeless mess"]
ASKED = ["a moving and clever film", "lifeless, dull, boring", "un film émouvant", ""]


@pytest.fixture(scope="module")
def text_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[TextClassifier, Path]:
    model = TextClassifier(["negative", "positive"], seed=0, learning_rate=0.05)
    model.fit(TRAIN, [1, 1, 0, 0], epochs=30, batch_size=4)
    path = tmp_path_factory.mktemp("text") / "head.pt"
    model.export(path)
    return model, path


@pytest.fixture(scope="module")
def adapter(triton_server: TritonServer, text_model: tuple[TextClassifier, Path],
            tmp_path_factory: pytest.TempPathFactory) -> TritonAdapter:
    routing = RoutingTable(tmp_path_factory.mktemp("routing") / "routing.json")
    adapter = TritonAdapter(MODEL, "sentiment", routing, url=triton_server.url,
                            repository=triton_server.repository)
    adapter.deploy(1, text_model[1])  # warm-up included: two empty strings
    return adapter


@pytest.fixture
def proxy(adapter: TritonAdapter, triton_server: TritonServer, redis_url: str,
          tmp_path: Path) -> Iterator[ProxyThread]:
    collector = RequestCollector(redis_url, "sentiment", "triton", spool_dir=tmp_path)
    app = InferenceProxy("triton", triton_server.url, "sentiment", "sentiment",
                         adapter.routing, collector, publish_every_s=0.2, seed=0)
    with ProxyThread(app) as running:
        yield running
    collector.close()


def test_the_stub_numpy_is_installed() -> None:
    """``./run`` installs NumPy 1.x for the python-backend stub; without it strings cannot
    reach the model."""
    site = stub_site()
    assert site is not None
    assert (site / "numpy" / "version.py").read_text().count("1.26")


def test_adapter_answers_texts_as_the_model_does(
        adapter: TritonAdapter, text_model: tuple[TextClassifier, Path]) -> None:
    model, _ = text_model
    served = adapter.infer(np.asarray(ASKED, dtype=object).reshape(-1, 1))
    local = model.predict(ASKED)
    assert served.shape == (len(ASKED), 2)
    np.testing.assert_allclose(served, local.confidences.numpy(), atol=1e-5)
    assert served.argmax(axis=1).tolist() == local.labels.tolist()
    assert served[:2].argmax(axis=1).tolist() == [1, 0]


@pytest.mark.parametrize("binary", [True, False])
def test_texts_through_the_proxy_are_answered_and_collected(
        proxy: ProxyThread, redis_url: str, text_model: tuple[TextClassifier, Path],
        binary: bool) -> None:
    model, _ = text_model
    triton = triton_http.InferenceServerClient(proxy.url.removeprefix("http://"))
    batch = np.asarray([[t.encode()] for t in ASKED[:3]], dtype=object)
    tensor = triton_http.InferInput("TEXT", list(batch.shape), "BYTES")
    tensor.set_data_from_numpy(batch, binary_data=binary)
    output = triton_http.InferRequestedOutput("PROBS", binary_data=binary)
    result = triton.infer("sentiment", [tensor], outputs=[output])
    probabilities = result.as_numpy("PROBS")
    triton.close()
    assert probabilities.argmax(axis=1).tolist() == model.predict(ASKED[:3]).labels.tolist()

    connection = redis.Redis.from_url(redis_url)
    try:
        entries: list[dict[bytes, bytes]] = []
        for _ in range(50):
            entries = [f for _, f in connection.xrange(served_stream("sentiment"))]
            if entries:
                break
            time.sleep(0.1)
    finally:
        connection.close()
    assert len(entries) == 1
    stored = next(iter(kserve.unpack(entries[0][b"inputs"]).values()))
    texts = [v.decode() if isinstance(v, bytes) else str(v) for v in stored.reshape(-1)]
    assert texts == ASKED[:3]
