"""An append-only local file that holds collected records while Redis is unreachable.

Each record is a flat mapping of field name to bytes (what a Redis stream entry holds). On disk
a record is ``u32 field count``, then per field ``u16 name length, name, u32 value length,
value`` (little-endian); appends are flushed to the OS before :meth:`Spool.append` returns, so
an accepted record survives the process dying (not a power cut: no fsync per append, which
would cap ingest at the disk's sync rate).

Replay hands the records back in order and removes the file only after the caller confirms
they were written; a replay cut short is resumed from the start at the next one, so delivery
is at least once (records carry their request id: consumers de-duplicate by it).

Example:
    >>> import tempfile, pathlib
    >>> spool = Spool(pathlib.Path(tempfile.mkdtemp()) / "svc.spool")
    >>> spool.append([{"id": b"r1", "ts_ms": b"5"}, {"id": b"r2", "ts_ms": b"6"}])
    >>> len(spool)
    2
    >>> with spool.replay() as records:
    ...     [r["id"] for r in records]
    [b'r1', b'r2']
    >>> len(spool)
    0
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

_COUNT = struct.Struct("<I")
_NAME = struct.Struct("<H")


def _as_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, (str, int, float)):
        return str(value).encode()
    raise TypeError(f"spool values are bytes, str or numbers (got {type(value).__name__})")


def encode_record(record: Mapping[str, object]) -> bytes:
    parts = [_COUNT.pack(len(record))]
    for name, value in record.items():
        key = name.encode()
        data = _as_bytes(value)
        parts += [_NAME.pack(len(key)), key, _COUNT.pack(len(data)), data]
    return b"".join(parts)


def decode_records(data: bytes) -> Iterator[dict[str, bytes]]:
    """The records in ``data``; a truncated last record (a crash mid-append) is skipped."""
    offset = 0
    while offset + 4 <= len(data):
        (fields,) = _COUNT.unpack_from(data, offset)
        cursor = offset + 4
        record: dict[str, bytes] = {}
        try:
            for _ in range(fields):
                (key_length,) = _NAME.unpack_from(data, cursor)
                key = data[cursor + 2:cursor + 2 + key_length].decode()
                cursor += 2 + key_length
                (value_length,) = _COUNT.unpack_from(data, cursor)
                value = data[cursor + 4:cursor + 4 + value_length]
                if len(value) != value_length:
                    return
                record[key] = value
                cursor += 4 + value_length
        except (struct.error, UnicodeDecodeError):
            return
        yield record
        offset = cursor


class Spool:
    """The spool file of one stream (see the module doc). Thread-safe."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._replaying = self.path.with_name(self.path.name + ".replaying")
        self._lock = threading.Lock()
        self._count = sum(1 for p in (self._replaying, self.path) if p.exists()
                          for _ in decode_records(p.read_bytes()))

    def __len__(self) -> int:
        return self._count

    def append(self, records: Sequence[Mapping[str, object]]) -> None:
        data = b"".join(encode_record(r) for r in records)
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab") as handle:
                handle.write(data)
                handle.flush()
            self._count += len(records)

    @contextmanager
    def replay(self) -> Iterator[list[dict[str, bytes]]]:
        """The spooled records, oldest first; they leave the spool when the ``with`` block
        ends without an exception. Records appended meanwhile stay for the next replay."""
        with self._lock:
            if not self._replaying.exists() and self.path.exists():
                os.replace(self.path, self._replaying)
        records = list(decode_records(self._replaying.read_bytes())) \
            if self._replaying.exists() else []
        yield records
        with self._lock:
            self._replaying.unlink(missing_ok=True)
            self._count -= len(records)
