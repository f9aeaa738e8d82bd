"""``modelci-e bench ingest``: how many served records per second the collector stores.

One run starts the embedded redis-server and the MongoDB-protocol store, then measures side by
side, on the same server:

1. **raw**: redis-py pipelined ``XADD`` of ready-made entries of the same size, the client-bound
   ceiling of this Python process (and ``redis-benchmark``'s XADD figure when that binary is on
   ``PATH``: Debian's ``redis-tools``; the wheel-embedded server ships none);
2. **collector**: :meth:`ServiceCollector.ingest` with batches of ``batch`` records of a
   tabular model (``features`` floats each): validation, packing, ``XADD`` into the served
   stream and the by-id index, as the ingest endpoint and the Python SDK do;
3. **loss check**: records offered == records in the stream.

Example (not a doctest: it starts servers)::

    result = run_ingest_bench(IngestBenchSettings(duration_s=10))
    print(result["collector"]["records_per_s"], result["lost"])
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis

from cl_server.collector import kserve
from cl_server.collector.service import ServiceCollector, keys
from cl_server.config import parse_config
from cl_server.embedded import EmbeddedServices
from cl_server.store import MongoStore
from evaluator.scratch import scratch_dir


@dataclass(frozen=True)
class IngestBenchSettings:
    duration_s: float = 10.0   # seconds per measured path
    batch: int = 1000          # records per ingest call
    features: int = 8          # floats per record input


def _redis_benchmark(socket_path: str | None, requests: int = 100_000) -> float | None:
    binary = shutil.which("redis-benchmark")
    if binary is None or socket_path is None:
        return None
    done = subprocess.run([binary, "-s", socket_path, "-n", str(requests), "-P", "64", "-q",
                           "XADD", "bench:rb", "*", "f", "v"], capture_output=True, text=True,
                          timeout=120, check=False)
    for token in done.stdout.replace("\r", "\n").split():
        try:
            return float(token)
        except ValueError:
            continue
    return None


def run_ingest_bench(settings: IngestBenchSettings, work_dir: Path | None = None
                     ) -> dict[str, Any]:
    with scratch_dir(work_dir, "modelci-bench-ingest-") as root:
        return _run_ingest_bench(settings, root)


def _run_ingest_bench(settings: IngestBenchSettings, root: Path) -> dict[str, Any]:
    config = parse_config(
        "name: ingest\nengine: {kind: triton, model_name: m}\n"
        f"model: {{template: tabular-mlp, input: {{shape: [{settings.features}]}}, "
        "classes: [a, b]}\ncollector: {window_size: 100000000}\n", env={})
    with EmbeddedServices(root / "embedded", cache=True, store=True) as services:
        cache_url, store_uri = services.endpoints.cache_url, services.endpoints.store_uri
        assert cache_url is not None and store_uri is not None
        client = redis.Redis.from_url(cache_url)
        store = MongoStore(store_uri)
        try:
            inputs = [round(0.1 * j, 3) for j in range(settings.features)]
            import numpy as np

            packed = kserve.pack({"inputs": np.asarray(inputs, dtype=np.float32)})
            sent = 0
            start = time.perf_counter()
            while time.perf_counter() - start < settings.duration_s:
                with client.pipeline(transaction=False) as pipe:
                    for _ in range(settings.batch):
                        pipe.xadd("bench:raw", {"id": f"r{sent}", "ts_ms": 0, "version": 1,
                                                "role": "ingest", "inputs": packed,
                                                "prediction": "a"})
                        sent += 1
                    pipe.execute()
            raw_s = time.perf_counter() - start
            raw_stored = int(client.xlen("bench:raw"))
            client.delete("bench:raw")

            collector = ServiceCollector(config, client, store, root / "spool")
            batch = [{"request_id": "", "inputs": inputs, "prediction": "a",
                      "model_version": 1} for _ in range(settings.batch)]
            offered = accepted = 0
            start = time.perf_counter()
            while time.perf_counter() - start < settings.duration_s:
                for record in batch:
                    record["request_id"] = f"r{offered}"
                    offered += 1
                accepted += collector.ingest(batch).accepted
            collector_s = time.perf_counter() - start
            stored = int(client.xlen(keys("ingest")["served"]))
            return {
                "settings": asdict(settings),
                "raw": {"records": sent, "seconds": round(raw_s, 3),
                        "records_per_s": round(sent / raw_s), "stored": raw_stored},
                "redis_benchmark_xadd_per_s": _redis_benchmark(services.endpoints.cache_url
                                                               .removeprefix("unix://")
                                                               if cache_url.startswith("unix://")
                                                               else None),
                "collector": {"records": offered, "accepted": accepted,
                              "seconds": round(collector_s, 3),
                              "records_per_s": round(offered / collector_s), "stored": stored},
                "lost": offered - stored,
                "load_average": list(os.getloadavg()),
            }
        finally:
            store.close()
            client.close()
