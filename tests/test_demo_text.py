"""``modelci-e demo --service text --exit --quick``: the text service end to end on real parts.

A sentiment head over the offline MiniLM encoder is trained on Rotten Tomatoes snippets and
served texts by a real tritonserver; tritonclient traffic (BYTES tensors) goes through the proxy,
first more snippets, then IMDB reviews; the annotation loop labels the answers (simulated
annotator, tasks in the cache). The run takes about four minutes on two cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from plugin.demo.data import text_demo
from plugin.demo.run import QUICK_TEXT_REQUESTS


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("demo-text")
    data_dir = root / "data"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    err = root / "stderr.txt"
    with err.open("w") as stderr:
        done = subprocess.run(
            [sys.executable, "-m", "plugin.cli", "demo", "--service", "text", "--exit",
             "--quick", "--annotator", "simulated", "--port", "0", "--data-dir", str(data_dir)],
            cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=stderr, timeout=900,
            check=False)
    assert done.returncode == 0, err.read_text()[-5000:]
    return json.loads((data_dir / "demo.json").read_text())


def test_every_text_request_was_answered(report: dict[str, Any]) -> None:
    requests = report["requests"]
    assert requests["sent"] == sum(QUICK_TEXT_REQUESTS)
    assert requests["answered"] == requests["sent"] and requests["errors"] == 0
    assert requests["labels_accepted"] > 0.5 * requests["sent"]


def test_the_source_change_is_detected_on_the_inputs(report: dict[str, Any]) -> None:
    phases = {p["name"]: p for p in report["phases"]}
    imdb = phases["imdb"]
    assert imdb["drift_alarms"] >= 1 and imdb["first_alarm_after_onset_s"] < 60, imdb


def test_updates_are_validated_deployed_and_fully_traced(report: dict[str, Any]) -> None:
    assert report["deployed_versions"], report["updates"]
    updates = {u["version"]: u for u in report["updates"]}
    for version in report["deployed_versions"]:
        assert updates[version]["outcome"] == "deployed"
        assert updates[version]["classes"] == 2
    assert [c for c in report["lineage"] if not c["complete"]] == []


def test_the_report_scored_the_phases_it_sent(report: dict[str, Any]) -> None:
    data = text_demo(0, 400, QUICK_TEXT_REQUESTS)
    assert [p["requests"] for p in report["phases"]] == [len(p) for p in data.phases]
    for phase in report["phases"]:
        # A sentiment head over MiniLM: well above chance on both sources.
        assert phase["accuracy"] > 0.65, phase
        assert phase["no_update_baseline"] > 0.6, phase
