"""The collector's spool and stream writer: order kept, nothing lost across a Redis outage or a
restart, a crash mid-append costs at most the record being written."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from cl_server.collector.spool import Spool, encode_record
from cl_server.collector.writer import StreamWriter


def test_spool_keeps_order_and_count_across_instances(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.spool")
    spool.append([{"id": f"r{i}", "n": i, "blob": bytes([i % 256]) * i} for i in range(300)])
    again = Spool(tmp_path / "s.spool")
    assert len(again) == 300
    with again.replay() as records:
        assert [r["id"] for r in records] == [f"r{i}".encode() for i in range(300)]
        assert records[7]["blob"] == b"\x07" * 7 and records[7]["n"] == b"7"
    assert len(again) == 0 and not (tmp_path / "s.spool").exists()


def test_a_failed_replay_keeps_every_record_for_the_next_one(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.spool")
    spool.append([{"id": "a"}, {"id": "b"}])
    with pytest.raises(RuntimeError), spool.replay():
        spool.append([{"id": "c"}])  # arrives during the replay: kept for later
        raise RuntimeError("Redis went away mid-replay")
    assert len(spool) == 3
    with spool.replay() as first:
        assert [r["id"] for r in first] == [b"a", b"b"]
    with spool.replay() as second:
        assert [r["id"] for r in second] == [b"c"]
    assert len(spool) == 0


def test_a_torn_last_record_is_skipped_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "s.spool"
    whole = encode_record({"id": "ok"})
    path.write_bytes(whole + encode_record({"id": "torn", "x": "y" * 50})[:-10])
    spool = Spool(path)
    assert len(spool) == 1
    with spool.replay() as records:
        assert records == [{"id": b"ok"}]


def test_spool_refuses_values_it_cannot_store(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="bytes, str or numbers"):
        Spool(tmp_path / "s.spool").append([{"id": object()}])


def test_writer_spools_during_an_outage_and_replays_in_order(redis_url: str,
                                                             tmp_path: Path) -> None:
    client = redis.Redis.from_url(redis_url)
    writer = StreamWriter(client, "st", Spool(tmp_path / "st.spool"))
    try:
        assert writer.write([{"id": "r0"}]) == "written"
        client.config_set("min-replicas-to-write", 1)
        assert writer.write([{"id": "r1"}, {"id": "r2"}]) == "spooled"
        assert writer.recover() == 0 and writer.degraded  # still refused
        client.config_set("min-replicas-to-write", 0)
        assert writer.write([{"id": "r3"}]) == "spooled"  # order: behind the spooled ones
        assert writer.recover() == 3 and not writer.degraded
        assert writer.write([{"id": "r4"}]) == "written"
        ids = [fields[b"id"] for _, fields in client.xrange("st")]
    finally:
        client.config_set("min-replicas-to-write", 0)
        client.close()
    assert ids == [b"r0", b"r1", b"r2", b"r3", b"r4"]
    assert writer.written == 5 and writer.spooled == 3
