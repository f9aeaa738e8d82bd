"""The data of one CL update job, as reproducible store queries.

A job takes a *snapshot*: the id of the newest labeled sample (ids are time-ordered, see
:func:`cl_server.store.entities.sample_id`). Its training pool is the query

    {"service": S, "split": "train", "id": {"$lte": <snapshot>}}  sorted by id

recorded with the sha256 of the returned ids (:class:`~cl_server.store.DataQuery`): running it
again later returns exactly the same samples (labeled samples are never changed), which
:func:`verify_query` checks. Within the pool, samples after the previous job's snapshot are the
*new* data, the rest the *history* rehearsal draws from. Validation holdouts come from the
``holdout`` split (never trained on): the newest ``recent_holdout`` samples, and up to
``historical_per_class`` of the oldest per class.

The query and its digest come from the store; the samples' inputs are read from the cache's
labeled stream first and from the store only where the cache lacks them
(:func:`load_samples`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import redis
import torch

from cl_server.collector import kserve
from cl_server.collector.service import keys
from cl_server.config.schema import InputSpec, ValidationConfig
from cl_server.store import DataQuery, LabeledSample, Store

CACHE_PAGE = 5000


def digest(ids: Sequence[str]) -> str:
    """sha256 of the ids in order, one per line."""
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def pool_query(service: str, snapshot: str) -> DataQuery:
    return DataQuery(filter={"service": service, "split": "train", "id": {"$lte": snapshot}},
                     sort=[("id", 1)], limit=0)


def snapshot_of(query: DataQuery | None) -> str | None:
    """The snapshot id a pool query was taken at (None for no query)."""
    if query is None:
        return None
    bound = query.filter.get("id")
    return str(bound["$lte"]) if isinstance(bound, dict) and "$lte" in bound else None


@dataclass
class UpdateData:
    query: DataQuery
    snapshot: str
    new: list[LabeledSample]
    history: list[LabeledSample]
    recent: list[LabeledSample]
    historical: list[LabeledSample]
    from_cache: int = 0
    """Pool samples read from the cache (the rest from the store)."""


def latest_sample_id(store: Store, service: str) -> str | None:
    newest = store.run_data_query(DataQuery(filter={"service": service}, sort=[("id", -1)],
                                            limit=1))
    return newest[0].id if newest else None


def new_sample_count(store: Store, service: str, previous: str | None) -> int:
    """Training samples labeled after the snapshot ``previous`` (ids only: cheap to poll)."""
    after = {"id": {"$gt": previous}} if previous is not None else {}
    return len(store.data_query_ids(DataQuery(filter={"service": service, "split": "train",
                                                      **after})))


def load_samples(store: Store, cache: redis.Redis | None, service: str,
                 ids: Sequence[str]) -> tuple[list[LabeledSample], int]:
    """The samples ``ids`` in that order: from the cache's labeled stream first (one paged
    ``XRANGE`` from the oldest id's millisecond on), from the store for any the cache lacks
    (Redis flushed or restarted without its snapshot). Returns them and how many came from the
    cache."""
    found: dict[str, LabeledSample] = {}
    wanted = set(ids)
    if cache is not None and ids:
        stream, cursor = keys(service)["labeled"], f"{min(ids)[:13].lstrip('0') or '0'}-0"
        try:
            while len(found) < len(wanted):
                page = cache.xrange(stream, min=cursor, count=CACHE_PAGE)
                for entry_id, fields in page:
                    sid = fields.get(b"sid", b"").decode()
                    if sid in wanted:
                        found[sid] = _from_stream(service, sid, fields)
                if len(page) < CACHE_PAGE:
                    break
                cursor = "(" + page[-1][0].decode()
        except redis.RedisError:
            pass  # the store has every sample
    from_cache = len(found)
    missing = [i for i in ids if i not in found]
    for start in range(0, len(missing), 1000):
        for sample in store.run_data_query(DataQuery(filter={
                "service": service, "id": {"$in": missing[start:start + 1000]}})):
            found[sample.id] = sample
    return [found[i] for i in ids if i in found], from_cache


def _from_stream(service: str, sid: str, fields: dict[bytes, bytes]) -> LabeledSample:
    version = int(fields.get(b"version", b"0") or 0)
    return LabeledSample(
        id=sid, service=service, request_id=fields[b"id"].decode(), inputs=fields[b"inputs"],
        label=fields[b"label"].decode(), prediction=fields.get(b"prediction", b"").decode()
        or None, model_version=version or None,
        source=fields.get(b"source", b"feedback").decode(),  # type: ignore[arg-type]
        split=fields.get(b"split", b"train").decode(),  # type: ignore[arg-type]
        created_at=datetime.fromtimestamp(int(sid[:13]) / 1000, UTC))


def take_snapshot(store: Store, service: str, previous: str | None,
                  validation: ValidationConfig, cache: redis.Redis | None = None
                  ) -> UpdateData:
    """The job's data (see the module doc); ``previous`` is the champion's snapshot id. The
    pool's ids come from the store (the recorded query); their inputs from ``cache`` first."""
    snapshot = latest_sample_id(store, service)
    if snapshot is None:
        raise ValueError(f"service '{service}' has no labeled samples yet")
    query = pool_query(service, snapshot)
    ids = store.data_query_ids(query)
    pool, from_cache = load_samples(store, cache, service, ids)
    if len(pool) != len(ids):
        raise ValueError(f"{len(ids) - len(pool)} samples of the pool vanished while it was "
                         f"read; try again")
    query = query.model_copy(update={"sample_count": len(pool),
                                     "digest": digest([s.id for s in pool])})
    new = [s for s in pool if previous is None or s.id > previous]
    history = [s for s in pool if previous is not None and s.id <= previous]
    recent = store.run_data_query(DataQuery(
        filter={"service": service, "split": "holdout", "id": {"$lte": snapshot}},
        sort=[("id", -1)], limit=validation.recent_holdout))
    oldest_recent = min((s.id for s in recent), default=snapshot)
    historical: list[LabeledSample] = []
    for label in sorted({s.label for s in pool} | {s.label for s in recent}):
        historical += store.run_data_query(DataQuery(
            filter={"service": service, "split": "holdout", "label": label,
                    "id": {"$lt": oldest_recent}},
            sort=[("id", 1)], limit=validation.historical_per_class))
    return UpdateData(query, snapshot, new, history, recent, historical, from_cache)


def verify_query(store: Store, query: DataQuery) -> bool:
    """True if the recorded query still returns exactly the samples it returned (same ids in
    the same order)."""
    samples = store.run_data_query(query)
    return len(samples) == query.sample_count and digest([s.id for s in samples]) == query.digest


def to_tensor(samples: Sequence[LabeledSample], spec: InputSpec,
              cache: redis.Redis | None = None) -> torch.Tensor:
    """The samples' inputs as one float tensor ``[N, *spec.shape]``; for a text input, their
    sentence embeddings ``[N, 384]`` (:func:`cl_server.envelope.embeddings.embed_texts`, cached
    in ``cache``).

    A stored input is a packed tensor (:func:`cl_server.collector.kserve.pack`); requests the
    proxy collected carry a batch axis of 1, which is dropped. Other sizes are an error naming
    the request."""
    if spec.kind == "text" or spec.dtype == "bytes":
        from cl_server.envelope.embeddings import embed_texts

        return embed_texts([_text_of(sample) for sample in samples], cache)
    shape = tuple(spec.shape)
    rows = []
    for sample in samples:
        tensors = kserve.unpack(sample.inputs)
        if not tensors:
            raise ValueError(f"request {sample.request_id}: no input tensor stored")
        array = np.asarray(next(iter(tensors.values())), dtype=np.float32)
        if -1 not in shape and array.size == int(np.prod(shape)):
            array = array.reshape(shape)
        elif array.ndim == len(shape) + 1 and array.shape[0] == 1:
            array = array[0]
        else:
            raise ValueError(f"request {sample.request_id}: input of shape {list(array.shape)} "
                             f"does not fit the model input {list(shape)}")
        rows.append(array)
    if not rows:
        return torch.zeros((0, *[max(d, 1) for d in shape]))
    return torch.from_numpy(np.stack(rows))


def _text_of(sample: LabeledSample) -> str:
    """The one text a stored text request holds."""
    tensors = kserve.unpack(sample.inputs)
    if not tensors:
        raise ValueError(f"request {sample.request_id}: no input tensor stored")
    values = np.asarray(next(iter(tensors.values()))).reshape(-1)
    if values.size != 1:
        raise ValueError(f"request {sample.request_id}: {values.size} texts stored, a labeled "
                         f"sample holds one")
    value = values[0]
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
