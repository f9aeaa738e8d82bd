"""``modelci-e bench loop --quick`` end to end: real redis-server, store, tritonserver, RQ worker,
proxy and CL loop; new classes appear and a validated challenger is deployed; the figures it
reports agree with the records it read them from."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_bench_loop_quick_detects_the_new_classes_and_deploys_a_better_model(
        tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "plugin.cli", "bench", "loop", "--quick",
                           "--out", str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=400, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "drift onset -> validated challenger deployed on Triton" in done.stdout
    result = json.loads((tmp_path / "loop.json").read_text())
    requests = result["requests"]
    assert requests["errors"] == 0 and requests["labels_unmatched"] == 0
    assert requests["drifted"] > 800  # every digit of classes 5-9, at most 40/s for 30 s
    assert requests["labels"] == requests["stationary"] + requests["drifted"]
    drift = result["drift"]
    assert drift["false_alarms_before_onset"] == 0
    assert 0 <= drift["alarm_to_job_enqueued_s"] < 1.0
    assert 0 < drift["onset_to_job_enqueued_s"] < result["onset_to_deployed_s"] < 120
    jobs = result["jobs"]
    drift_job = next(j for j in jobs if j["trigger"] == "drift")
    assert drift_job["scenario"] == "nc" and drift_job["outcome"] == "deployed"
    deployed = [d["version"] for d in result["deployments"]]
    assert drift_job["version"] in deployed
    assert deployed == [j["version"] for j in jobs if j["outcome"] == "deployed"
                        and j["version"] in deployed]  # (one from before the onset is left out)
    accuracy = result["accuracy"]
    assert accuracy["pre_drift"] > 0.9 and accuracy["no_update_baseline"] < 0.6
    assert accuracy["after_first_deployment"] > accuracy["no_update_baseline"] + 0.3
    served = sum(v["requests"] for v in accuracy["by_version"].values())
    assert served == requests["drifted"]
