"""``modelci-e start CONFIG`` attached to services that already run: a tritonserver, a
redis-server and a MongoDB-protocol store started beforehand, named by URL in the config. The
server starts none of its own, serves no demo traffic, and deploys its first model on the
running Triton."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

from cl_server.embedded import EmbeddedServices
from plugin.serving.triton_server import TritonServer

ADMIN = "attach-test-admin-token-0123456789"


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[EmbeddedServices, TritonServer]]:
    services = EmbeddedServices(tmp_path / "external", cache=True, store=True)
    triton = TritonServer(tmp_path / "engine", tmp_path / "engine" / "repository")
    try:
        services.start()
        triton.start()
        yield services, triton
    finally:
        triton.stop()
        services.stop()


def test_start_attaches_to_running_triton_redis_and_store(
        running: tuple[EmbeddedServices, TritonServer], tmp_path: Path) -> None:
    services, triton = running
    endpoints = services.endpoints
    assert endpoints is not None and endpoints.cache_url and endpoints.store_uri
    config = tmp_path / "attach.yaml"
    config.write_text(f"""
name: attach
engine: {{kind: triton, url: "{triton.url}", model_name: digits,
         model_repository: "{triton.repository}"}}
model: {{template: mlp, input: {{shape: [4]}}, classes: ["a", "b"]}}
cache: {{url: "{endpoints.cache_url}"}}
store: {{uri: "{endpoints.store_uri}", database: attached}}
auth: {{bootstrap_admin_token: {ADMIN}}}
cl: {{epochs: 2, min_new_samples: 10, label_wait_s: 5}}
triggers: {{rules: []}}
""")
    data_dir = tmp_path / "data"
    log = (tmp_path / "stderr.txt").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "plugin.cli", "start", str(config), "--port", "0",
         "--data-dir", str(data_dir)], stdout=subprocess.PIPE, stderr=log, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    url: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("MODELCI_URL="):
                url.append(line.split("=", 1)[1].strip())

    threading.Thread(target=read, daemon=True).start()
    try:
        deadline = time.monotonic() + 90
        while not url:
            assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()
            assert time.monotonic() < deadline, (tmp_path / "stderr.txt").read_text()
            time.sleep(0.1)
        base, auth = url[0], {"Authorization": f"Bearer {ADMIN}"}
        health = requests.get(f"{base}/api/health", timeout=30).json()["components"]
        assert all(health[c]["ok"] for c in ("store", "cache", "engine", "queue")), health
        # Nothing of its own: no embedded redis, store or tritonserver under its data dir.
        assert sorted(p.stem for p in (data_dir / "run").glob("*.pid")) == ["worker-1"]
        assert not (data_dir / "triton").exists()
        banner = (tmp_path / "stderr.txt").read_text()
        assert triton.url in banner and "embedded tritonserver" not in banner

        rng = np.random.default_rng(0)
        records = [{"request_id": f"r{i}", "inputs": (rng.normal(size=4) + 2 * (i % 2)).tolist(),
                    "label": "ab"[i % 2]} for i in range(200)]
        answer = requests.post(f"{base}/api/services/attach/records", json={"records": records},
                               headers=auth, timeout=30)
        assert answer.status_code == 200, answer.text
        update = requests.post(f"{base}/api/services/attach/update",
                               json={"reason": "first model"}, headers=auth, timeout=30)
        assert update.status_code in (200, 202), update.text
        deadline = time.monotonic() + 180
        while True:
            service = requests.get(f"{base}/api/services/attach", headers=auth, timeout=30).json()
            if service.get("champion_version"):
                break
            assert time.monotonic() < deadline, requests.get(
                f"{base}/api/jobs", headers=auth, timeout=30).text
            time.sleep(0.5)
        # The version serves on the Triton that ran before the server started.
        index = requests.post(f"{triton.url}/v2/repository/index", json={}, timeout=30).json()
        assert {"name": "digits", "version": "1", "state": "READY"} in [
            {k: m.get(k) for k in ("name", "version", "state")} for m in index], index
        body = {"inputs": [{"name": "INPUT__0", "shape": [1, 4], "datatype": "FP32",
                            "data": [2.0, 2.0, 2.0, 2.0]}]}
        inferred = requests.post(f"{triton.url}/v2/models/digits/infer", json=body, timeout=30)
        assert inferred.status_code == 200, inferred.text
    finally:
        proc.terminate()
        proc.wait(60)
        log.close()
    assert proc.returncode == 0, (tmp_path / "stderr.txt").read_text()[-3000:]
    assert triton.running  # attached, not owned: it keeps running after the server stops
