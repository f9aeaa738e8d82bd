"""Append collected records to a Redis stream, falling back to a local spool when Redis is down.

:meth:`StreamWriter.write` sends a batch with one pipelined round trip (``XADD ... MAXLEN ~``
per record). If Redis does not take it, the batch goes to the :class:`Spool` and the writer
is *degraded*: later batches go straight to the spool (keeping arrival order) until
:meth:`StreamWriter.recover` finds Redis back and replays the spool into the stream. The caller
never sees a Redis error and no accepted record is lost; replay is at least once.

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

from cl_server.collector.spool import Spool

log = logging.getLogger(__name__)


class StreamWriter:
    """Pipelined ``XADD`` into ``stream`` with a spool fallback (see the module doc).

    Parameters:
        client: a redis-py client (thread-safe; one connection per concurrent writer).
        stream: the stream key.
        spool: where batches go while Redis is unreachable.
        max_length: approximate length the stream is trimmed to.
    """

    def __init__(self, client: redis.Redis, stream: str, spool: Spool, *,
                 max_length: int = 100_000):
        self.client = client
        self.stream = stream
        self.spool = spool
        self.max_length = max_length
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
                            self._xadd(records[start:start + 1000])
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

    def _xadd(self, records: Sequence[Mapping[str, object]]) -> None:
        with self.client.pipeline(transaction=False) as pipe:
            for record in records:
                pipe.xadd(self.stream, dict(record), maxlen=self.max_length,  # type: ignore[arg-type]
                          approximate=True)
            pipe.execute()
