"""The collector of one service: served records in, labels joined to them, all in the cache.

Served records come from the proxy (:class:`plugin.proxy.collector.RequestCollector` writes
the same stream) and from :meth:`ServiceCollector.ingest` (the batch ingest endpoint and the
Python SDK). Labels arrive later by request id through :meth:`ServiceCollector.label` (the
feedback endpoint, the annotator): each is joined to its served record, stored durably as a
:class:`~cl_server.store.LabeledSample` and appended to the cache's labeled stream, with
per-class counts for fast sampling.

Cache layout (Redis; ``{s}`` is the service name):

- ``modelci:{s}:served`` stream: every collected record (fields ``id``, ``ts_ms``,
  ``version``, ``role``, ``inputs`` and ``outputs`` as packed tensors, ``prediction``),
  trimmed to about ``collector.window_size`` entries; hour buckets
  ``modelci:{s}:served:byid:{hour}`` find a record by request id for ``retention_days``.
- ``modelci:{s}:labeled`` stream: labeled samples (``id``: the request id, ``sid``: the stored
  sample's id, ``ts_ms``, ``label``, ``inputs``, ``prediction``, ``version``, ``source``,
  ``split``), untrimmed up to ``2**31`` entries: jobs read their data here first
  (:func:`cl_server.envelope.data.load_samples`), from the store what is missing.
- ``modelci:{s}:labeled_ids`` set: request ids already labeled (a label counts once).
- ``modelci:{s}:class_counts`` hash: labeled samples per class.

A record the sampling ratio leaves out is counted, not stored. When Redis is unreachable,
served records wait in the spool (see :mod:`cl_server.collector.writer`); labels are refused
with a clear error instead (they need the join), the caller retries.

Example:
    >>> import tempfile, redis
    >>> from pathlib import Path
    >>> from cl_server.config import parse_config
    >>> from cl_server.embedded import EmbeddedServices
    >>> from cl_server.store import MongoStore
    >>> config = parse_config("name: demo\\nengine: {kind: triton, model_name: m}\\n"
    ...                       "model: {template: mlp, input: {shape: [2]}, classes: [a, b]}")
    >>> with EmbeddedServices(tempfile.mkdtemp(), cache=True, store=True) as svc:
    ...     store = MongoStore(svc.endpoints.store_uri)
    ...     collector = ServiceCollector(config, redis.Redis.from_url(svc.endpoints.cache_url),
    ...                                  store, Path(tempfile.mkdtemp()))
    ...     collector.ingest([{"request_id": "r1", "inputs": [0.5, 1.0], "prediction": "a"},
    ...                       {"request_id": "r2", "inputs": [1, 2, 3]}]).as_dict()
    ...     collector.label([{"request_id": "r1", "label": "b"},
    ...                      {"request_id": "nope", "label": "a"}]).as_dict()
    ...     store.close()
    {'accepted': 1, 'sampled_out': 0, 'spooled': 0, 'rejected': [{'index': 1, 'field': 'inputs', 'message': 'shape [3] does not match the model input [2]'}]}
    {'labeled': 1, 'duplicates': 0, 'unknown_ids': ['nope'], 'rejected': []}
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import redis
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from cl_server.collector import kserve
from cl_server.collector.spool import Spool
from cl_server.collector.writer import StreamWriter, find_records
from cl_server.config import ServiceConfig
from cl_server.store import LabeledSample, Store

RequestId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")]
MAX_BATCH = 10_000
HOLDOUT_SHARE = 0.2
"""Share of labeled samples set aside for validation (never trained on), chosen by a hash of
the request id so that the choice is the same on every replay."""


def split_of(request_id: str) -> str:
    """``holdout`` for about :data:`HOLDOUT_SHARE` of request ids, ``train`` for the rest.

    Example:
        >>> sum(split_of(f"r{i}") == "holdout" for i in range(10_000)) / 10_000
        0.1969
    """
    draw = int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:4], "big") / 2**32
    return "holdout" if draw < HOLDOUT_SHARE else "train"


def keys(service: str) -> dict[str, str]:
    """The cache keys of a service (see the module doc)."""
    base = f"modelci:{service}"
    return {"served": f"{base}:served", "labeled": f"{base}:labeled",
            "labeled_ids": f"{base}:labeled_ids", "class_counts": f"{base}:class_counts"}


class IngestRecord(BaseModel):
    """One served request as a client reports it."""

    model_config = ConfigDict(extra="forbid")
    request_id: RequestId
    inputs: list[Any] | str = Field(description="The model input: nested numbers shaped like "
                                    "the model input, or a text for text models.")
    model_version: int | None = Field(None, ge=1)
    prediction: str | None = None
    confidences: list[float] | None = None
    timestamp_ms: int | None = Field(None, ge=0)
    label: str | None = Field(None, description="When the label is known at serving time.")


class LabelIn(BaseModel):
    """A label for a request served earlier."""

    model_config = ConfigDict(extra="forbid")
    request_id: RequestId
    label: str = Field(min_length=1)


@dataclass
class RecordError:
    index: int
    field: str
    message: str


@dataclass
class IngestResult:
    accepted: int = 0
    sampled_out: int = 0
    spooled: int = 0
    rejected: list[RecordError] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LabelResult:
    labeled: int = 0
    duplicates: int = 0
    unknown_ids: list[str] = field(default_factory=list)
    rejected: list[RecordError] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _first_error(exc: ValidationError) -> tuple[str, str]:
    error = exc.errors()[0]
    location = ".".join(str(part) for part in error["loc"] if not isinstance(part, int)) \
        or "record"
    return location.split(".")[0] if location else "record", error["msg"]


class ServiceCollector:
    """Ingest and label for one service (see the module doc).

    Parameters:
        config: the service config (model input spec, classes, collector settings).
        cache: the Redis client.
        store: the durable store (labeled samples).
        spool_dir: where served records wait while Redis is unreachable.
        seed: seed of the sampling draw (None: random).
    """

    def __init__(self, config: ServiceConfig, cache: redis.Redis, store: Store, spool_dir: Path,
                 *, seed: int | None = None):
        self.config = config
        self.service = config.name
        self.cache = cache
        self.store = store
        self.keys = keys(config.name)
        self.classes = set(config.model.classes)
        self.retention_hours = max(1, int(config.collector.retention_days * 24))
        self.writer = StreamWriter(cache, self.keys["served"],
                                   Spool(Path(spool_dir) / f"{config.name}.served.spool"),
                                   max_length=config.collector.window_size,
                                   index_ttl_s=self.retention_hours * 3600)
        self._random = random.Random(seed)
        self._version_classes: dict[int, list[str]] = {}
        spec = config.model.input
        self._text = spec.kind == "text" or spec.dtype == "bytes"
        self._dtype = np.dtype("float32" if self._text else spec.dtype)
        self._shape = tuple(spec.shape)

    # -- served records --------------------------------------------------------------------

    def ingest(self, raw: Sequence[Any]) -> IngestResult:
        """Validate each record on its own: the valid ones are kept, the invalid ones reported
        with the field at fault."""
        result = IngestResult()
        if len(raw) > MAX_BATCH:
            raise ValueError(f"a batch holds at most {MAX_BATCH} records (got {len(raw)})")
        entries, labels = [], []
        now_ms = int(time.time() * 1000)
        ratio = self.config.collector.sampling_ratio
        for index, item in enumerate(raw):
            try:
                record = IngestRecord.model_validate(item)
                entry = self._entry(record, now_ms)
            except ValidationError as exc:
                name, message = _first_error(exc)
                result.rejected.append(RecordError(index, name, message))
                continue
            except ValueError as exc:
                result.rejected.append(RecordError(index, "inputs", str(exc)))
                continue
            if record.label is not None and record.label not in self.classes:
                result.rejected.append(RecordError(index, "label", self._unknown_label(
                    record.label)))
                continue
            if ratio < 1.0 and self._random.random() >= ratio:
                result.sampled_out += 1
                continue
            entries.append(entry)
            if record.label is not None:
                labels.append({"request_id": record.request_id, "label": record.label})
        if self.writer.degraded:
            self.writer.recover()
        outcome = self.writer.write(entries)
        result.accepted = len(entries)
        result.spooled = len(entries) if outcome == "spooled" else 0
        if labels and outcome == "written":
            self._attach(labels, {e["id"]: e for e in entries}, "ingest", LabelResult())
        return result

    def _entry(self, record: IngestRecord, now_ms: int) -> dict[str, object]:
        inputs = self._tensor(record.inputs)
        entry: dict[str, object] = {
            "id": record.request_id, "ts_ms": record.timestamp_ms or now_ms,
            "version": record.model_version or 0, "role": "ingest",
            "inputs": kserve.pack({"inputs": inputs})}
        if record.prediction is not None:
            entry["prediction"] = record.prediction
        if record.confidences is not None:
            entry["outputs"] = kserve.pack({"confidences": np.asarray(record.confidences,
                                                                      dtype=np.float32)})
        return entry

    def _tensor(self, inputs: list[Any] | str) -> np.ndarray:
        if self._text:
            if not isinstance(inputs, str):
                raise ValueError("expected a text for this text model")
            return np.array([inputs.encode()], dtype=object)
        if isinstance(inputs, str):
            raise ValueError(f"expected numbers shaped {list(self._shape)}, got a text")
        try:
            array = np.asarray(inputs, dtype=self._dtype)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"not a numeric array: {exc}") from None
        expected = self._shape
        if array.ndim != len(expected) or any(
                want not in (-1, got) for want, got in zip(expected, array.shape, strict=True)):
            raise ValueError(f"shape {list(array.shape)} does not match the model input "
                             f"{list(expected)}")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise ValueError("contains NaN or infinity")
        return array

    # -- labels ----------------------------------------------------------------------------

    def label(self, raw: Sequence[Any], source: str = "feedback") -> LabelResult:
        """Join labels to their served records by request id; unknown ids are reported."""
        result = LabelResult()
        if len(raw) > MAX_BATCH:
            raise ValueError(f"a batch holds at most {MAX_BATCH} labels (got {len(raw)})")
        valid: list[dict[str, str]] = []
        for index, item in enumerate(raw):
            try:
                label = LabelIn.model_validate(item)
            except ValidationError as exc:
                name, message = _first_error(exc)
                result.rejected.append(RecordError(index, name, message))
                continue
            if label.label not in self.classes:
                result.rejected.append(RecordError(index, "label",
                                                   self._unknown_label(label.label)))
                continue
            valid.append({"request_id": label.request_id, "label": label.label})
        if not valid:
            return result
        found = find_records(self.cache, self.keys["served"],
                             [v["request_id"] for v in valid], int(time.time() * 1000),
                             hours=self.retention_hours)
        result.unknown_ids = [v["request_id"] for v in valid if v["request_id"] not in found]
        return self._attach([v for v in valid if v["request_id"] in found],
                            {k: dict(r) for k, r in found.items()}, source, result)

    def _attach(self, labels: list[dict[str, str]], records: dict[Any, dict[str, Any]],
                source: str, result: LabelResult) -> LabelResult:
        with self.cache.pipeline(transaction=False) as pipe:
            for item in labels:
                pipe.sadd(self.keys["labeled_ids"], item["request_id"])
            fresh = pipe.execute()
        new = [item for item, added in zip(labels, fresh, strict=True) if added]
        result.duplicates += len(labels) - len(new)
        if not new:
            return result
        samples, entries = [], []
        now_ms = int(time.time() * 1000)
        for item in new:
            record = records[item["request_id"]]
            version = int(record.get("version") or 0) or None
            prediction = _text(record.get("prediction")) or self.predicted_class(record, version)
            samples.append(LabeledSample(
                service=self.service, request_id=item["request_id"],
                inputs=bytes(record["inputs"]), label=item["label"], prediction=prediction,
                model_version=version, source=source,  # type: ignore[arg-type]
                split=split_of(item["request_id"])))  # type: ignore[arg-type]
            entries.append({"id": item["request_id"], "sid": samples[-1].id, "ts_ms": now_ms,
                            "label": item["label"],
                            "inputs": record["inputs"], "prediction": prediction or "",
                            "version": version or 0, "source": source,
                            "split": samples[-1].split})
        try:
            self.store.add_labeled_samples(samples)
        except Exception:
            # Not stored: these ids must be labelable again when the caller retries.
            self.cache.srem(self.keys["labeled_ids"], *[item["request_id"] for item in new])
            raise
        with self.cache.pipeline(transaction=False) as pipe:
            for entry in entries:
                pipe.xadd(self.keys["labeled"], entry)  # type: ignore[arg-type]
                pipe.hincrby(self.keys["class_counts"], str(entry["label"]), 1)
            pipe.execute()
        result.labeled += len(new)
        return result

    def predicted_class(self, record: dict[Any, Any], version: int | None) -> str | None:
        """What a proxied answer predicted (the proxy records the engine's outputs, not a
        class): the argmax named by the answering version's classes (``record``: a served
        record as :func:`~cl_server.collector.writer.find_records` returns it)."""
        outputs = record.get("outputs")
        if not outputs or version is None:
            return None
        if version not in self._version_classes:
            stored = self.store.get_version(self.service, version)
            self._version_classes[version] = list(stored.classes) if stored and \
                stored.classes else list(self.config.model.classes)
        names = kserve.predicted_classes(bytes(outputs), self._version_classes[version])
        return names[0] if len(names) == 1 else None

    def class_counts(self) -> dict[str, int]:
        counts = self.cache.hgetall(self.keys["class_counts"])
        return {k.decode(): int(v) for k, v in counts.items()}  # type: ignore[union-attr]

    def _unknown_label(self, label: str) -> str:
        shown = ", ".join(sorted(self.classes)[:20])
        return f"label '{label}' is not one of the service's classes ({shown})"


def _text(value: object) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)
