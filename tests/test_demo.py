"""``modelci-e demo --exit --quick --annotator simulated`` end to end: the embedded Redis and
store, a real tritonserver, the CL server with its annotation loop, an RQ worker and the proxy;
tritonclient traffic in three phases (stationary, new classes, rotated digits), labeled through
the annotation loop (tasks in the cache, the simulated annotator); the demo's report checked
against what it claims.

The run takes about four minutes on two cores; one run serves every assertion (module fixture).
The demo's annotation wiring is also run against the session's real Label Studio, on served
records without the rest of the demo.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import psutil
import pytest
import redis
import requests

from cl_server.annotation.factory import make_backend
from cl_server.auth import issue_token
from cl_server.config import load_config
from cl_server.deploy import ENV_DATA_DIR
from cl_server.embedded import LabelStudioEndpoint
from cl_server.runtime import ServerRuntime
from cl_server.store import MongoStore, User
from model_factory.scenarios.datasets import mnist_5k
from plugin.cli import demo_config_path
from plugin.demo.annotation import (DemoAnnotation, labels_back, resolve_annotator,
                                    with_annotator)
from plugin.demo.data import image_demo
from plugin.demo.report import _lineage_check, _recovered
from plugin.demo.run import MARKER, QUICK_REQUESTS, _fresh_data_dir
from plugin.demo.traffic import Answer


@dataclass
class DemoRun:
    code: int
    stdout: str
    stderr: str
    report: dict[str, Any]
    data_dir: Path
    shots: Path


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    root = tmp_path_factory.mktemp("demo")
    # The screenshots stay after the run (the README's comes from here).
    data_dir, shots = root / "data", Path(__file__).parent.parent / "test-artifacts" / "demo"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    out, err = root / "stdout.txt", root / "stderr.txt"
    with out.open("w") as stdout, err.open("w") as stderr:
        done = subprocess.run(
            [sys.executable, "-m", "plugin.cli", "demo", "--exit", "--quick", "--port", "0",
             "--annotator", "simulated", "--data-dir", str(data_dir),
             "--screenshots", str(shots)],
            cwd=root, env=env, stdout=stdout, stderr=stderr, timeout=900, check=False)
    report_file = data_dir / "demo.json"
    report = json.loads(report_file.read_text()) if report_file.exists() else {}
    return DemoRun(done.returncode, out.read_text(), err.read_text(), report, data_dir, shots)


def test_demo_exits_cleanly_after_its_summary(demo_run: DemoRun) -> None:
    assert demo_run.code == 0, demo_run.stderr[-5000:]
    assert "prequential accuracy per phase" in demo_run.stderr
    assert "Versions: each one's job and how it served" in demo_run.stderr
    assert "Annotation: the answers selected for labeling and the labels back" in demo_run.stderr
    assert demo_run.stdout.startswith("MODELCI_URL=http://127.0.0.1:")
    for pid_file in (demo_run.data_dir / "run").glob("*.pid"):
        record = json.loads(pid_file.read_text())
        assert not psutil.pid_exists(record["pid"]) or \
            psutil.Process(record["pid"]).status() == psutil.STATUS_ZOMBIE, pid_file.stem


def test_every_request_was_answered_and_labeled_through_the_annotation_loop(
        demo_run: DemoRun) -> None:
    sent = demo_run.report["requests"]
    assert sent["sent"] == sum(QUICK_REQUESTS)
    assert sent["answered"] == sent["sent"] and sent["errors"] == 0
    # The simulated annotator keeps pace with the traffic: every answer became a task, was
    # answered, and its label came back through the loop.
    annotation = demo_run.report["annotation"]
    assert annotation["backend"] == "local" and annotation["selection"] == "least-confidence"
    assert annotation["tasks_sent"] == annotation["answered"] == sent["sent"], annotation
    assert annotation["labels_back"] == sent["labels_accepted"] == sent["sent"], annotation
    assert sent["labels_unmatched"] == 0 and annotation["last_error"] is None


def test_drift_is_detected_in_both_drifting_phases(demo_run: DemoRun) -> None:
    phases = {p["name"]: p for p in demo_run.report["phases"]}
    assert demo_run.report["drift_alarms"] >= 2
    for name in ("new classes", "rotated digits"):
        assert phases[name]["drift_alarms"] >= 1, phases[name]
        assert phases[name]["first_alarm_after_onset_s"] < 60, phases[name]


def test_validated_challengers_deployed_and_at_least_one_rejected_by_a_gate(
        demo_run: DemoRun) -> None:
    report = demo_run.report
    assert len(report["deployed_versions"]) >= 2, report["updates"]
    updates = {u["version"]: u for u in report["updates"]}
    rejected = [updates[v] for v in report["rejected_versions"]]
    assert rejected, report["updates"]
    assert any(u["failed_gates"] for u in rejected), rejected
    for version in report["deployed_versions"]:
        assert updates[version]["outcome"] == "deployed"
        assert updates[version]["trigger"] in ("drift", "volume", "performance")
    scenarios = {updates[v]["scenario"] for v in report["deployed_versions"]}
    assert "nc" in scenarios, report["updates"]
    assert max(u["classes"] for u in report["updates"]) == 10


def test_every_version_has_its_whole_lineage(demo_run: DemoRun) -> None:
    lineage = demo_run.report["lineage"]
    assert len(lineage) == len(demo_run.report["updates"])
    assert [c for c in lineage if not c["complete"]] == []


def test_new_classes_are_learned_well_above_the_no_update_baseline(demo_run: DemoRun) -> None:
    phases = {p["name"]: p for p in demo_run.report["phases"]}
    nc = phases["new classes"]
    # The first model knows digits 0-4; half of this phase's digits are 5-9.
    assert nc["no_update_baseline_last_window"] < 0.6, nc
    assert nc["accuracy_last_window"] >= nc["no_update_baseline_last_window"] + 0.20, nc
    assert nc["deployed"] >= 1 and nc["time_to_update_s"] is not None, nc


def test_the_report_agrees_with_the_data_it_scored(demo_run: DemoRun) -> None:
    data = image_demo(0, 250, QUICK_REQUESTS)
    phases = demo_run.report["phases"]
    assert [p["requests"] for p in phases] == [len(p) for p in data.phases]
    served = sum(u["served"] for u in demo_run.report["updates"])
    assert served == demo_run.report["requests"]["answered"]
    rejected = set(demo_run.report["rejected_versions"])
    assert all(u["served"] == 0 for u in demo_run.report["updates"]
               if u["version"] in rejected)


def test_dashboard_screenshots_of_the_demo(demo_run: DemoRun) -> None:
    for name in ("overview", "service", "lineage"):
        shot = demo_run.shots / f"demo-{name}.png"
        assert shot.is_file() and shot.stat().st_size > 20_000, shot


# ------------------------------------------------------------ the annotation wiring, Label Studio


def test_auto_picks_label_studio_when_it_is_installed() -> None:
    # ./run test installs it (the label_studio fixture fails without it).
    assert resolve_annotator("auto") == "label-studio"
    with mock.patch("plugin.demo.annotation.label_studio_installed", return_value=False):
        assert resolve_annotator("auto") == "simulated"
        assert resolve_annotator("label-studio") == "label-studio"
    with pytest.raises(ValueError, match="auto, label-studio, simulated"):
        resolve_annotator("people")


def test_the_demo_labels_its_answers_through_label_studio(
        label_studio: LabelStudioEndpoint, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo's wiring with Label Studio, without Triton and traffic: the demo's config with
    Label Studio as its annotator, the server's annotation loop, the demo's annotator."""
    config = with_annotator(load_config(demo_config_path()), label_studio)
    config = config.model_copy(update={"annotator": config.annotator.model_copy(
        update={"project": f"demo {uuid.uuid4().hex[:8]}"})})
    assert config.annotator.max_open_tasks is not None
    served = config.annotator.max_open_tasks + 20  # more than may be open at once
    monkeypatch.setenv(ENV_DATA_DIR, str(tmp_path))
    runtime = ServerRuntime(config, data_dir=tmp_path, port=0, workers=0, engine=False)
    started = runtime.start()
    threading.Thread(target=runtime.serve_forever, daemon=True).start()
    cache = redis.Redis.from_url(started.cache_url)
    store = MongoStore(started.store_uri, config.store.database)
    api = requests.Session()
    annotation = None
    try:
        assert runtime.annotation is not None
        backend = make_backend(config, cache)
        assert backend is not None and backend.name == "label_studio"
        annotation = DemoAnnotation(runtime.annotation, backend, delay_s=0.2)
        rng = np.random.default_rng(0)
        records = []
        for n in range(served):
            request_id = f"p1-{n}"
            annotation.truth[request_id] = str(n % 10)  # known before the request is served
            confidences = rng.dirichlet(np.ones(10)).tolist()
            records.append({"request_id": request_id, "model_version": 1,
                            "inputs": rng.random((1, 28, 28)).tolist(),
                            "confidences": confidences})
        store.add_user(User(name="client", role="engineer"))
        _, token = issue_token(store, "client", "test")
        api.headers["Authorization"] = f"Bearer {token}"
        answer = api.post(f"{started.url}/api/services/{config.name}/records",
                          json={"records": records}, timeout=30)
        assert answer.status_code == 200, answer.text
        annotation.start(timeout_s=30)
        started_at = time.monotonic()
        annotation.finish(timeout_s=90)  # every task answered and pulled, or 90 s
        assert time.monotonic() - started_at < 90
        status = annotation.status()
        assert status["backend"] == "label_studio" and status["last_error"] is None, status
        assert (status["sent"], status["labeled"], status["rejected"]) == (served, served, 0)
        got = labels_back(store, config.name)
        assert sorted((rid, label) for _, rid, label in got) == sorted(annotation.truth.items())
    finally:
        if annotation is not None:
            annotation.stop()
        api.close()
        store.close()
        cache.close()
        runtime.stop()


# --------------------------------------------------------------------------- pieces, no servers


def test_the_phases_change_what_the_first_model_saw() -> None:
    data = image_demo(0, 50, (100, 400, 400))
    stationary, nc, ni = data.phases
    assert set(data.initial_y) == set(stationary.labels) == {"0", "1", "2", "3", "4"}
    assert sorted(Counter(nc.labels).values()) == [40] * 10   # 5-9 appear beside 0-4
    assert sorted(Counter(ni.labels).values()) == [40] * 10   # every digit, evenly
    x, _ = mnist_5k()
    index = {x[i].tobytes(): i for i in range(len(x))}
    first = {index[row.tobytes()] for row in data.initial_x}
    for phase in (stationary, nc):
        sent = [index[row.tobytes()] for row in phase.x]
        assert len(set(sent)) == len(sent) and not set(sent) & first
    assert not any(row.tobytes() in index for row in ni.x)    # rotated: inputs never seen


def test_lineage_check_names_what_a_version_lacks() -> None:
    complete = {"job_id": "j2", "trigger": {"kind": "drift"}, "validation_id": "v",
                "data_query": {"digest": "d", "sample_count": 5}, "parent_version": 1,
                "status": "champion", "deployments": [{"version": 2}]}
    nodes = [{**complete, "version": 1, "job_id": "j1", "parent_version": None,
              "status": "retired"},
             {**complete, "version": 2},
             {**complete, "version": 3, "validation_id": None, "parent_version": None,
              "data_query": {"digest": "d", "sample_count": 0}, "status": "retired",
              "deployments": []}]
    checked = {c["version"]: c["missing"] for c in _lineage_check(nodes)}
    assert checked == {1: [], 2: [], 3: ["data_query", "validation", "parent_version",
                                         "deployments"]}


def test_recovery_is_the_first_window_of_a_new_version_back_near_the_level() -> None:
    answers = [Answer(t, 1, t, 1 if t < 10 else 2, "a" if t >= 15 else "b", "a")
               for t in range(30)]
    assert _recovered(answers, 1.0, 0.0, window=5, first_version=1) == 19
    assert _recovered(answers[:18], 1.0, 0.0, window=5, first_version=1) is None


def test_the_demo_empties_only_its_own_data_dir(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep")
    with pytest.raises(RuntimeError, match="not made by the demo"):
        _fresh_data_dir(foreign)
    assert (foreign / "precious.txt").read_text() == "keep"
    with pytest.raises(RuntimeError, match="is a file"):
        _fresh_data_dir(foreign / "precious.txt")
    mine = _fresh_data_dir(tmp_path / "demo")           # new: made and marked
    (mine / "old-run.json").write_text("{}")
    assert _fresh_data_dir(mine) == mine and sorted(p.name for p in mine.iterdir()) == [MARKER]


def test_bad_demo_options_are_named_before_anything_starts(tmp_path: Path) -> None:
    for args, named in ((["--rate", "0"], "--rate"), (["--requests", "5,0,5"], "--requests"),
                        (["--requests", "5,x"], "--requests"),
                        (["--seed", "-2"], "--seed")):
        done = subprocess.run([sys.executable, "-m", "plugin.cli", "demo", "--exit", *args,
                               "--data-dir", str(tmp_path / "d")], capture_output=True,
                              text=True, timeout=60, check=False)
        assert done.returncode == 2 and named in done.stderr, done.stderr
        assert "Traceback" not in done.stderr and not (tmp_path / "d").exists()
    for service, counts in (("image", "5,5"), ("text", "5,5,5")):  # phases the demo lacks
        done = subprocess.run([sys.executable, "-m", "plugin.cli", "demo", "--exit",
                               "--service", service, "--requests", counts,
                               "--data-dir", str(tmp_path / "d")], capture_output=True,
                              text=True, timeout=60, check=False)
        assert done.returncode == 1 and "--requests" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr and not (tmp_path / "d").exists()


def test_label_studio_asked_for_but_not_installed_is_said_before_anything_starts(
        tmp_path: Path) -> None:
    env = {**os.environ, "MODELCI_LABEL_STUDIO": str(tmp_path / "no-label-studio")}
    done = subprocess.run([sys.executable, "-m", "plugin.cli", "demo", "--exit",
                           "--annotator", "label-studio", "--data-dir", str(tmp_path / "d")],
                          capture_output=True, text=True, timeout=60, check=False, env=env)
    assert done.returncode == 1 and "Label Studio is not installed" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "d").exists()
