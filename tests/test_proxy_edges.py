"""The proxy's own answers (never the engine's): too large bodies, engine down, bad CLI input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import requests

from plugin.proxy.app import InferenceProxy
from plugin.proxy.runner import ProxyThread
from plugin.serving.routing import RoutingTable


def test_too_large_bodies_and_a_dead_engine_get_clear_errors(tmp_path: Path) -> None:
    routing = RoutingTable(tmp_path / "routing.json")
    routing.update(champion=1)
    proxy = InferenceProxy("triton", "http://127.0.0.1:9", "m", "svc", routing,
                           max_body_bytes=1000)
    with ProxyThread(proxy) as running:
        big = requests.post(f"{running.url}/v2/models/m/infer", data=b"x" * 5000, timeout=10)
        assert big.status_code == 413
        assert big.json()["error"] == "request body larger than 1000 bytes, the proxy's limit"
        down = requests.post(f"{running.url}/v2/models/m/infer", json={"inputs": []},
                             timeout=10)
        assert down.status_code == 502
        assert "engine at http://127.0.0.1:9 unreachable" in down.json()["error"]
        metrics = requests.get(f"{running.url}/metrics", timeout=10).text
    assert 'modelci_proxy_requests_total{code="502",role="champion",service="svc",' \
           'version="1"} 1.0' in metrics


def test_proxy_cli_refuses_a_model_name_that_escapes(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "plugin.cli", "proxy", "--engine", "triton",
                           "--upstream", "http://127.0.0.1:9", "--model", "../etc",
                           "--service", "s", "--routing", str(tmp_path / "r.json")],
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert "invalid model name '../etc'" in done.stderr and "Traceback" not in done.stderr
