"""``modelci-e bench proxy --quick`` end to end: real redis-server, tritonserver and proxy
process; the figures it reports are consistent with what it measured."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_bench_proxy_quick_reports_overhead_collection_and_a_clean_switch(tmp_path: Path
                                                                          ) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "plugin.cli", "bench", "proxy", "--quick",
                           "--out", str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "proxy - direct" in done.stdout
    result = json.loads((tmp_path / "proxy.json").read_text())
    latency = result["latency"]
    assert latency["direct"]["requests"] == latency["proxy"]["requests"] == 150
    assert latency["direct"]["errors"] == latency["proxy"]["errors"] == 0
    for key in ("p50_ms", "p95_ms", "p99_ms"):
        assert result["overhead_ms"][key] == round(latency["proxy"][key]
                                                   - latency["direct"][key], 3)
    collector = result["collector"]
    assert collector["dropped"] == 0
    assert collector["written"] == collector["stream_length"] == collector["proxied_ok"] == 150
    deploy = result["deploy"]
    assert deploy["failed_during"] == 0 and deploy["requests_during"] > 50
    assert deploy["champion_after"] == 2 and deploy["under_traffic"]["previous"] == 1
