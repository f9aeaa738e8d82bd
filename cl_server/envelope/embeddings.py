"""What a text service's network sees: MiniLM sentence embeddings of the stored texts, cached.

A ``text-minilm`` service is served texts (a BYTES input of one string per request), while its
trainable network is a head over 384-d sentence embeddings
(:mod:`model_factory.templates.text`). An update job therefore embeds the texts of its pool and
holdouts before training and validating. Encoding costs about 10 ms per short review and about
90 ms per long one (2 shared cores), and every job (one forked process each) would pay it again
for the whole history, so the embeddings are kept in the cache under the sha256 of the text
(``modelci:embedding:minilm:<sha256>``, 1,536 bytes each, expiring after
:data:`EMBEDDING_TTL_S`): a later job encodes only the texts it has not seen.

Example (not run as a doctest: it loads the encoder, about 6 s)::

    cache = redis.Redis.from_url(url)
    embed_texts(["a fine film", "a dull mess"], cache).shape   # torch.Size([2, 384])
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import cache as once

import numpy as np
import redis
import torch

from cl_server.config.schema import ModelConfig

EMBEDDING_PREFIX = "modelci:embedding:minilm:"
EMBEDDING_TTL_S = 14 * 24 * 3600
"""An embedding leaves the cache 14 days after it was stored (recomputed if ever needed)."""
TEXT_TEMPLATE = "text-minilm"


def network_input_shape(model: ModelConfig) -> tuple[int, ...]:
    """The input shape of the service's trainable network: the embedding width for a text
    service, else the served input's shape."""
    if model.template == TEXT_TEMPLATE:
        from model_factory.templates.networks import MINILM_DIM

        return (MINILM_DIM,)
    return tuple(model.input.shape)


@once
def _encoder() -> object:
    from model_factory.templates.text import SentenceEncoder

    return SentenceEncoder()


def _key(text: str) -> str:
    return EMBEDDING_PREFIX + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def embed_texts(texts: Sequence[str], cache: redis.Redis | None = None) -> torch.Tensor:
    """The sentence embeddings ``[N, 384]`` (float32) of ``texts``: from ``cache`` where it
    holds them, else encoded (and stored there). A cache that fails is skipped, never fatal."""
    from model_factory.templates.networks import MINILM_DIM

    texts = list(texts)
    if not texts:
        return torch.zeros((0, MINILM_DIM))
    keys = [_key(t) for t in texts]
    found: list[bytes | None] = [None] * len(texts)
    if cache is not None:
        try:
            found = list(cache.mget(keys))  # type: ignore[arg-type]
        except redis.RedisError:
            cache = None
    rows: list[np.ndarray | None] = [
        np.frombuffer(value, dtype=np.float32) if value is not None
        and len(value) == 4 * MINILM_DIM else None for value in found]
    missing = [i for i, row in enumerate(rows) if row is None]
    unique: dict[str, int] = {}  # one encoding per distinct text
    for i in missing:
        unique.setdefault(keys[i], i)
    if unique:
        order = list(unique.values())
        encoded = _encoder().encode([texts[i] for i in order]).numpy()  # type: ignore[attr-defined]
        by_key = {keys[i]: encoded[n] for n, i in enumerate(order)}
        for i in missing:
            rows[i] = by_key[keys[i]]
        if cache is not None:
            try:
                with cache.pipeline(transaction=False) as pipe:
                    for key, row in by_key.items():
                        pipe.set(key, row.astype(np.float32).tobytes(), ex=EMBEDDING_TTL_S)
                    pipe.execute()
            except redis.RedisError:
                pass
    return torch.from_numpy(np.stack([np.asarray(r, dtype=np.float32) for r in rows]))
