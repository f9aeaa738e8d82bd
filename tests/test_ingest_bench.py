"""``modelci-e bench ingest --quick``: real redis-server and store; the loss count adds up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_bench_ingest_quick_stores_every_offered_record(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"  # where the benchmark makes its working dir
    scratch.mkdir()
    done = subprocess.run([sys.executable, "-m", "plugin.cli", "bench", "ingest", "--quick",
                           "--batch", "500", "--out", str(tmp_path)],
                          env={**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(scratch)},
                          capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    left = [p.name for p in scratch.iterdir() if p.name.startswith("modelci")]
    assert not left, f"the benchmark left its working dir (Redis's AOF) behind: {left}"
    result = json.loads((tmp_path / "ingest.json").read_text())
    collected = result["collector"]
    assert collected["records"] > 0 and collected["records"] % 500 == 0
    assert collected["stored"] == collected["accepted"] == collected["records"]
    assert result["lost"] == 0
    assert result["raw"]["stored"] == result["raw"]["records"]
    assert "collector ingest:" in done.stdout and "0 lost" in done.stdout
