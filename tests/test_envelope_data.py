"""A job's data: the pool's ids and digest come from the store's recorded query, the inputs from
the cache's labeled stream first and from the store for whatever the cache lacks."""

from __future__ import annotations

from pathlib import Path

import redis

from cl_server.collector.service import ServiceCollector, keys
from cl_server.config import parse_config
from cl_server.config.schema import ValidationConfig
from cl_server.envelope.data import take_snapshot, verify_query
from cl_server.store import MongoStore

CONFIG = parse_config("name: tab\nengine: {kind: triton, model_name: tab}\n"
                      "model: {template: mlp, input: {shape: [3]}, classes: [a, b]}\n", env={})


def test_inputs_come_from_the_cache_first_and_the_store_for_the_rest(
        store: MongoStore, redis_url: str, tmp_path: Path) -> None:
    cache = redis.Redis.from_url(redis_url)
    collector = ServiceCollector(CONFIG, cache, store, tmp_path)
    records = [{"request_id": f"r{i}", "inputs": [i, i / 2, 1.0], "label": "ab"[i % 2]}
               for i in range(300)]
    assert collector.ingest(records).accepted == 300
    validation = ValidationConfig(recent_holdout=20, historical_per_class=5)
    try:
        cached = take_snapshot(store, "tab", None, validation, cache)
        from_store = take_snapshot(store, "tab", None, validation)  # no cache: the store only
        assert cached.from_cache == len(cached.new) > 200 and from_store.from_cache == 0
        assert cached.query == from_store.query and verify_query(store, cached.query)
        assert [(s.id, s.request_id, s.label, s.inputs, s.split) for s in cached.new] == \
            [(s.id, s.request_id, s.label, s.inputs, s.split) for s in from_store.new]

        stream = keys("tab")["labeled"]
        oldest = [entry_id for entry_id, _ in cache.xrange(stream, count=100)]
        cache.xdel(stream, *oldest)  # the cache lost some (e.g. restarted from an old snapshot)
        mixed = take_snapshot(store, "tab", None, validation, cache)
        assert 0 < mixed.from_cache < len(mixed.new)
        assert [s.id for s in mixed.new] == [s.id for s in cached.new]
        assert mixed.query.digest == cached.query.digest
        cache.delete(stream)
        assert take_snapshot(store, "tab", None, validation, cache).from_cache == 0
    finally:
        cache.close()
