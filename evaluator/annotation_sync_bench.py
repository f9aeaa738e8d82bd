"""How long the annotation loop takes to move ``n`` samples through a real Label Studio.

The benchmark starts the embedded redis-server and store and a real Label Studio (a fresh data
dir: its first start runs migrations), collects ``n`` served MNIST digits with the champion's
answers, then times, on the real :class:`~cl_server.annotation.sync.AnnotationSync`:

1. **push**: ``n`` samples selected (budget ``n``) and imported as tasks with their
   pre-annotations (PNG renders included);
2. **annotate**: the simulated annotator answers every task through Label Studio's API (the
   people's side, not the loop's: reported, not a target);
3. **pull**: the ``n`` annotations read back with the cursor and stored as labeled samples
   (the target: 1,000 in under 30 s);
4. **pull again**: nothing new (every task counted once: the store still holds ``n``).

Example (about a minute: ``tests/test_annotation_bench.py`` runs it with ``n=100``)::

    result = run_sync_bench(SyncBenchSettings(samples=1000))
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import redis

from evaluator.scratch import scratch_dir

SERVICE = "digits"
SYNC_TARGET_S = 30.0
SYNC_TARGET_N = 1000


@dataclass(frozen=True)
class SyncBenchSettings:
    samples: int = 1000
    seed: int = 0


def run_sync_bench(settings: SyncBenchSettings, work_dir: Path | None = None,
                   endpoint: Any | None = None) -> dict[str, Any]:
    """Run the benchmark (see the module doc); returns its figures. ``endpoint``: a running
    Label Studio (a :class:`~cl_server.embedded.LabelStudioEndpoint`) to use instead of
    starting one (the test suite's)."""
    with scratch_dir(work_dir, "modelci-sync-bench-") as root:
        return _run_sync_bench(settings, root, endpoint)


def _run_sync_bench(settings: SyncBenchSettings, root: Path,
                    endpoint: Any | None = None) -> dict[str, Any]:
    from cl_server.annotation.label_studio import LabelStudioBackend
    from cl_server.annotation.simulated import SimulatedAnnotator
    from cl_server.annotation.sync import AnnotationSync
    from cl_server.collector.service import ServiceCollector
    from cl_server.config import parse_config
    from cl_server.embedded import EmbeddedServices, LabelStudioServer
    from cl_server.store import DataQuery, MongoStore
    from model_factory.scenarios.datasets import mnist_5k

    x, y = mnist_5k()
    rng = np.random.default_rng(settings.seed)
    picked = rng.choice(len(x), size=settings.samples, replace=settings.samples > len(x))
    load_before = psutil.getloadavg()
    services = EmbeddedServices(root / "embedded", cache=True, store=True)
    server = None if endpoint is not None else LabelStudioServer(
        root / "label-studio", token=f"bench-{uuid.uuid4().hex}")
    started = time.monotonic()
    with services:
        if server is not None:
            server.start()
            endpoint = server.endpoint
        label_studio_start_s = time.monotonic() - started
        try:
            config = parse_config(f"""
name: {SERVICE}
engine: {{kind: triton, model_name: {SERVICE}}}
model: {{template: mlp, input: {{shape: [1, 28, 28], kind: image}},
        classes: ["0","1","2","3","4","5","6","7","8","9"]}}
annotator: {{kind: label_studio, url: "{endpoint.url}", token: "{endpoint.token}",
            project: "sync bench {uuid.uuid4().hex[:8]}", budget_per_hour: {settings.samples},
            selection: least-confidence}}
""", env={})
            cache = redis.Redis.from_url(services.endpoints.cache_url)
            store = MongoStore(services.endpoints.store_uri, "sync_bench")
            collector = ServiceCollector(config, cache, store, root / "spool")
            truth: dict[str, str] = {}
            records = []
            for n, index in enumerate(picked):
                scores = rng.dirichlet(np.ones(10)).tolist()
                request_id = f"s{n}"
                truth[request_id] = str(int(y[index]))
                records.append({"request_id": request_id, "model_version": 1,
                                "inputs": x[index].reshape(1, 28, 28).tolist(),
                                "confidences": scores})
            assert collector.ingest(records).accepted == settings.samples
            backend = LabelStudioBackend(endpoint.url, endpoint.token)
            sync = AnnotationSync(config, backend, collector, store, cache)

            begin = time.monotonic()
            push = sync.push()
            push_s = time.monotonic() - begin
            annotator = SimulatedAnnotator(backend, sync.project(), truth.get,
                                           config.model.classes, delay_s=0)
            begin = time.monotonic()
            while annotator.step():
                pass
            annotate_s = time.monotonic() - begin
            begin = time.monotonic()
            pull = sync.pull()
            pull_s = time.monotonic() - begin
            begin = time.monotonic()
            again = sync.pull()
            again_s = time.monotonic() - begin
            stored = store.run_data_query(DataQuery(filter={"service": SERVICE}))
            right = sum(1 for s in stored if truth.get(s.request_id) == s.label)
            backend.close()
            store.close()
            cache.close()
        finally:
            if server is not None:
                server.stop()
    return {
        "settings": asdict(settings), "cores": psutil.cpu_count(),
        "load_before": [round(v, 2) for v in load_before],
        "load_after": [round(v, 2) for v in psutil.getloadavg()],
        "label_studio_start_s": round(label_studio_start_s, 1) if server else None,
        "push": {"sent": len(push.sent), "seconds": round(push_s, 2), "error": push.error},
        "annotate": {"answered": annotator.answered, "seconds": round(annotate_s, 2)},
        "pull": {"labeled": pull.labeled, "completed": pull.completed,
                 "seconds": round(pull_s, 2), "error": pull.error},
        "pull_again": {"labeled": again.labeled, "completed": again.completed,
                       "seconds": round(again_s, 2)},
        "stored": len(stored), "stored_right": right,
        "target": {"samples": SYNC_TARGET_N, "seconds": SYNC_TARGET_S,
                   "met": bool(pull.labeled == settings.samples
                               and pull_s * SYNC_TARGET_N / settings.samples < SYNC_TARGET_S)}}


def sync_report_lines(result: dict[str, Any]) -> list[str]:
    """The benchmark's section of ``annotation.md``."""
    n = result["settings"]["samples"]
    met = "met" if result["target"]["met"] else "NOT met"
    return [
        "## Syncing with Label Studio",
        "",
        f"{n} served MNIST digits through a real Label Studio 1.23.2 on this machine "
        f"({result['cores']} cores; load average {result['load_before']} before, "
        f"{result['load_after']} after"
        + (f"; Label Studio started in {result['label_studio_start_s']} s on a fresh data dir"
           if result["label_studio_start_s"] is not None else "") + ").",
        "",
        "| step | samples | seconds | per 1,000 |",
        "|---|---|---|---|",
        f"| push (select, render, import with pre-annotations) | {result['push']['sent']} | "
        f"{result['push']['seconds']} | {result['push']['seconds'] * 1000 / n:.1f} |",
        f"| annotate (simulated annotator, Label Studio API) | "
        f"{result['annotate']['answered']} | {result['annotate']['seconds']} | "
        f"{result['annotate']['seconds'] * 1000 / n:.1f} |",
        f"| pull (cursor, into the store and the labeled stream) | "
        f"{result['pull']['labeled']} | {result['pull']['seconds']} | "
        f"{result['pull']['seconds'] * 1000 / n:.1f} |",
        f"| pull again (nothing new) | {result['pull_again']['labeled']} | "
        f"{result['pull_again']['seconds']} | - |",
        "",
        f"Stored labeled samples: {result['stored']} ({result['stored_right']} with the true "
        f"label). Target: {SYNC_TARGET_N:,} annotations synced in under {SYNC_TARGET_S:g} s: "
        f"{met}.",
    ]
