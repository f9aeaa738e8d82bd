"""A text service end to end in the CL server: reviews arrive through the collector as texts,
the ``cl_update`` job (real RQ worker) trains the ``text-minilm`` head on their cached MiniLM
embeddings and validates it, and the CL loop watches the texts' descriptors for input drift
(Rotten Tomatoes snippets, then IMDB reviews)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from cl_server.api.app import service_record
from cl_server.collector import kserve
from cl_server.collector.service import ServiceCollector
from cl_server.config import parse_config
from cl_server.drift import DriftMonitor
from cl_server.envelope.embeddings import EMBEDDING_PREFIX, embed_texts
from cl_server.loop import _rows
from cl_server.queue import JobQueue, WorkerSettings
from cl_server.runtime import worker_process
from cl_server.store import MongoStore
from model_factory.scenarios.datasets import movie_reviews
from model_factory.templates.artifact import load_for_serving
from model_factory.templates.text import SentenceEncoder
from tests.test_queue import terminal, wait_for

CONFIG = parse_config("""
name: sentiment
engine: {kind: triton, model_name: sentiment}
model:
  template: text-minilm
  input: {name: TEXT, shape: [1], dtype: bytes, kind: text}
  output_name: PROBS
  classes: [negative, positive]
drift:
  reference_size: 300
  detectors:
    - {kind: ks, signal: inputs, window: 150, alpha: 0.01}
cl:
  strategy: {name: naive}
  epochs: 20
  learning_rate: 0.01
validation:
  recent_holdout: 60
  historical_per_class: 20
  gates: {min_accuracy_gain: 0.0}
""", env={})


def reviews(source: str, n: int, offset: int = 0) -> tuple[list[str], list[str]]:
    texts, labels, sources = movie_reviews()
    order = np.random.default_rng(0).permutation(len(texts))  # the CSV is sorted by label
    rows = [int(i) for i in order if sources[i] == source][offset:offset + n]
    names = ["negative", "positive"]
    return [texts[i] for i in rows], [names[int(labels[i])] for i in rows]


@pytest.fixture
def setup(store: MongoStore, store_uri: str, redis_url: str, tmp_path: Path
          ) -> Iterator[tuple[JobQueue, ServiceCollector, redis.Redis]]:
    cache = redis.Redis.from_url(redis_url)
    store.upsert_service(service_record(CONFIG))
    queue = JobQueue(store, cache, name=f"q{uuid.uuid4().hex[:8]}", job_timeout_s=300)
    collector = ServiceCollector(CONFIG, cache, store, tmp_path / "spool", seed=0)
    settings = WorkerSettings(redis_url, store_uri, store.db.name, queue.queue.name)
    proc = worker_process(settings, tmp_path / "run", 1)
    proc.start()
    try:
        yield queue, collector, cache
    finally:
        proc.stop()
        cache.close()


def test_a_text_update_trains_the_head_on_cached_embeddings(
        setup: tuple[JobQueue, ServiceCollector, redis.Redis], store: MongoStore) -> None:
    queue, collector, cache = setup
    texts, labels = reviews("rotten_tomatoes", 300)
    outcome = collector.ingest([{"request_id": f"r{n}", "inputs": t, "label": y}
                                for n, (t, y) in enumerate(zip(texts, labels, strict=True))])
    assert outcome.accepted == 300 and not outcome.rejected
    job = queue.submit("cl_update", {"service": "sentiment"}, service="sentiment",
                       trigger={"kind": "manual", "user": "test"})
    job = wait_for(store, job.id, terminal, timeout_s=240)
    assert job.status == "succeeded", job.error
    assert job.result["outcome"] == "deployed", job.result
    version = store.get_version("sentiment", 1)
    assert version is not None and version.classes == ["negative", "positive"]
    # Every distinct text's embedding is in the cache, equal to the encoder's own.
    assert len(list(cache.scan_iter(f"{EMBEDDING_PREFIX}*", count=1000))) == len(set(texts))
    encoder = SentenceEncoder()
    np.testing.assert_allclose(embed_texts(texts[:5], cache).numpy(),
                               encoder.encode(texts[:5]).numpy(), atol=1e-6)
    # The served artifact is a head over the embeddings, better than chance on unseen reviews.
    net, classes = load_for_serving(version.artifact_uri or "")
    unseen, truth = reviews("rotten_tomatoes", 200, offset=300)
    predicted = net(encoder.encode(unseen)).argmax(dim=1).tolist()
    accuracy = np.mean([classes[p] == y for p, y in zip(predicted, truth, strict=True)])
    assert accuracy > 0.65


def test_input_drift_of_texts_shows_on_their_descriptors() -> None:
    """What the loop feeds the input detectors for a text record, and a source change that the
    KS detector flags while the same source does not."""
    monitor = DriftMonitor(CONFIG.drift, "sentiment")
    rt, _ = reviews("rotten_tomatoes", 600)
    imdb, _ = reviews("imdb", 150)

    def served(batch: list[str]) -> np.ndarray:
        packed = kserve.pack({"TEXT": np.asarray([[t.encode()] for t in batch], dtype=object)})
        rows = _rows(packed, (1,))
        assert rows is not None and rows.shape == (len(batch), 5)
        return rows

    alarms = [r for r in monitor.update("inputs", served(rt[:300])) if r.alarm]  # reference
    alarms += [r for r in monitor.update("inputs", served(rt[300:450])) if r.alarm]
    alarms += [r for r in monitor.update("inputs", served(rt[450:600])) if r.alarm]
    assert not alarms
    shifted = [r for r in monitor.update("inputs", served(imdb)) if r.alarm]
    assert shifted and shifted[0].detector.startswith("ks")
