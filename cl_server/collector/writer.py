"""Append collected records to a Redis stream, falling back to a local spool when Redis is down.

:meth:`StreamWriter.write` sends a batch with one pipelined round trip (``XADD ... MAXLEN ~``
per record). If Redis does not take it, the batch goes to the :class:`Spool` and the writer
is *degraded*: later batches go straight to the spool (keeping arrival order) until
:meth:`StreamWriter.recover` finds Redis back and replays the spool into the stream. The caller
never sees a Redis error and no accepted record is lost.

Exactly once: a batch goes in one ``MULTI``/``EXEC`` transaction with its by-id index
entries, so a batch whose answer was lost (Redis stopped while it was in flight) is either
wholly in the stream or not at all; the replay skips records whose id the index already
holds. (Without the index, ``index_ttl_s=None``, replay is at least once.)

Example:
    >>> import tempfile, pathlib, redis
    >>> spool = Spool(pathlib.Path(tempfile.mkdtemp()) / "s.spool")
    >>> writer = StreamWriter(redis.Redis(port=9, socket_connect_timeout=0.2), "s", spool)
    >>> writer.write([{"id": "r1"}])   # Redis unreachable: spooled, not lost
    'spooled'
    >>> len(spool), writer.degraded
    (1, True)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence

import redis

from cl_server.collector.spool import Spool, decode_records, encode_record

log = logging.getLogger(__name__)


class StreamWriter:
    """Pipelined ``XADD`` into ``stream`` with a spool fallback (see the module doc).

    Parameters:
        client: a redis-py client (thread-safe; one connection per concurrent writer).
        stream: the stream key.
        spool: where batches go while Redis is unreachable.
        max_length: approximate length the stream is trimmed to.
        index_ttl_s: seconds a record stays findable by its ``id`` (:func:`find_records`,
            for labels that arrive later); None: no index. Shadow answers (``role`` shadow)
            are not indexed: a label joins the answer the client was served (and their
            replay after an outage is at least once).
    """

    def __init__(self, client: redis.Redis, stream: str, spool: Spool, *,
                 max_length: int = 100_000, index_ttl_s: float | None = 7 * 86_400):
        self.client = client
        self.stream = stream
        self.spool = spool
        self.max_length = max_length
        self.index_ttl_s = index_ttl_s
        self._lock = threading.Lock()
        self.degraded = len(spool) > 0
        self.written = 0
        self.spooled = 0

    def write(self, records: Sequence[Mapping[str, object]]) -> str:
        """Store ``records``; returns ``"written"`` (in Redis) or ``"spooled"`` (on disk)."""
        if not records:
            return "written"
        with self._lock:
            if not self.degraded:
                try:
                    self._xadd(records)
                    self.written += len(records)
                    return "written"
                except redis.RedisError as exc:
                    log.warning("Redis unreachable, spooling to %s: %s", self.spool.path, exc)
                    self.degraded = True
            self.spool.append(records)
            self.spooled += len(records)
            return "spooled"

    def recover(self) -> int:
        """If degraded and Redis answers again, replay the spool; returns records replayed."""
        with self._lock:
            if not self.degraded:
                return 0
            replayed = 0
            try:
                self.client.ping()
                while len(self.spool) > 0:  # a replay cut short leaves two parts: oldest first
                    with self.spool.replay() as records:
                        for start in range(0, len(records), 1000):
                            self._xadd(self._not_written(records[start:start + 1000]))
                    replayed += len(records)
            except redis.RedisError as exc:
                log.info("Redis still unreachable (%s); %d records spooled", exc,
                         len(self.spool))
                self.written += replayed
                return replayed
            self.written += replayed
            self.degraded = len(self.spool) > 0
            log.info("replayed %d spooled records into %s", replayed, self.stream)
            return replayed

    def _not_written(self, records: Sequence[Mapping[str, object]]
                     ) -> list[Mapping[str, object]]:
        """``records`` less those the by-id index says are in the stream already."""
        if self.index_ttl_s is None:
            return list(records)
        checked = [r for r in records if "id" in r and "ts_ms" in r
                   and _text(r.get("role", "")) != "shadow"]
        with self.client.pipeline(transaction=False) as pipe:
            for record in checked:
                pipe.hexists(index_bucket(self.stream, int(record["ts_ms"])),  # type: ignore[call-overload]
                             _text(record["id"]))
            present = pipe.execute()
        written = {id(r) for r, there in zip(checked, present, strict=True) if there}
        if written:
            log.info("replay: %d records were written before the outage, skipped", len(written))
        return [r for r in records if id(r) not in written]

    def _xadd(self, records: Sequence[Mapping[str, object]]) -> None:
        if not records:
            return
        buckets: dict[str, dict[str, bytes]] = {}
        with self.client.pipeline(transaction=True) as pipe:
            for record in records:
                pipe.xadd(self.stream, dict(record), maxlen=self.max_length,  # type: ignore[arg-type]
                          approximate=True)
                if self.index_ttl_s is not None and "id" in record and "ts_ms" in record \
                        and _text(record.get("role", "")) != "shadow":  # labels join the answer served
                    bucket = index_bucket(self.stream, int(record["ts_ms"]))  # type: ignore[call-overload]
                    buckets.setdefault(bucket, {})[_text(record["id"])] = encode_record(record)
            for bucket, entries in buckets.items():  # one HSET per hour bucket and batch
                pipe.hset(bucket, mapping=entries)  # type: ignore[arg-type]
                pipe.expire(bucket, int(self.index_ttl_s or 0) + BUCKET_MS // 1000)
            pipe.execute()


BUCKET_MS = 3_600_000
"""Records are indexed by id in one Redis hash per stream and hour (by their ``ts_ms``)."""


def index_bucket(stream: str, ts_ms: int) -> str:
    return f"{stream}:byid:{ts_ms // BUCKET_MS}"


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def find_records(client: redis.Redis, stream: str, ids: Sequence[str], now_ms: int,
                 hours: int = 168) -> dict[str, dict[str, bytes]]:
    """The indexed records of ``ids`` written in the last ``hours`` (an id absent from the
    answer is unknown or expired). One pipelined round trip."""
    if not ids:
        return {}
    newest = now_ms // BUCKET_MS
    buckets = [f"{stream}:byid:{hour}" for hour in range(newest, newest - hours - 1, -1)]
    with client.pipeline(transaction=False) as pipe:
        for bucket in buckets:
            pipe.hmget(bucket, list(ids))
        answers = pipe.execute()
    found: dict[str, dict[str, bytes]] = {}
    for values in answers:
        for request_id, blob in zip(ids, values, strict=True):
            if blob is not None and request_id not in found:
                found[request_id] = next(decode_records(blob))
    return found
