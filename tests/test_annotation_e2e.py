"""The whole annotation loop in the real CL server (``ServerRuntime``) with a real Label Studio:
served requests in through the API, tasks pushed, an annotation made in Label Studio calls the
server back (webhook) and the label reaches the CL loop, whose volume rule starts an update."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from cl_server.annotation.backend import ProjectSpec
from cl_server.annotation.label_studio import LabelStudioBackend
from cl_server.annotation.simulated import SimulatedAnnotator
from cl_server.config import parse_config
from cl_server.deploy import ENV_DATA_DIR
from cl_server.embedded import LabelStudioEndpoint
from cl_server.runtime import ServerRuntime
from cl_server.store import MongoStore

ADMIN = "mci_test-admin-token-0123456789abcdef0123456789"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    url: str
    api: requests.Session
    store: MongoStore
    project_title: str


@pytest.fixture
def server(label_studio: LabelStudioEndpoint, tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    port = free_port()
    title = f"e2e {uuid.uuid4().hex[:8]}"
    config = parse_config(f"""
name: digits
engine: {{kind: triton, model_name: digits}}
model: {{template: mlp, input: {{shape: [64], kind: image}}, classes: ["0","1","2","3","4"]}}
triggers: {{cooldown_s: 0, rules: [{{kind: volume, new_labels: 3}}]}}
annotator: {{kind: label_studio, url: "{label_studio.url}", token: "{label_studio.token}",
            project: "{title}", budget_per_hour: 3, sync_every_s: 600,
            webhook_url: "http://127.0.0.1:{port}"}}
server: {{port: {port}}}
auth: {{bootstrap_admin_token: "{ADMIN}"}}
""", env={})
    monkeypatch.setenv(ENV_DATA_DIR, str(tmp_path))
    runtime = ServerRuntime(config, data_dir=tmp_path, workers=0, engine=False)
    started = runtime.start()
    serving = threading.Thread(target=runtime.serve_forever, daemon=True)
    serving.start()
    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {ADMIN}"
    store = MongoStore(started.store_uri, config.store.database)
    try:
        yield Server(started.url, api, store, title)
    finally:
        store.close()
        api.close()
        runtime.stop()
        serving.join(timeout=10)


def eventually(check: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"not reached within {timeout_s} s")


def test_annotations_made_in_label_studio_reach_the_cl_loop(
        server: Server, label_studio: LabelStudioEndpoint) -> None:
    rng = np.random.default_rng(1)
    records = [{"request_id": f"q{i}", "inputs": rng.random(64).tolist(),
                "confidences": [0.9 - 0.1 * i, 0.1 + 0.1 * i, 0.0, 0.0, 0.0]}
               for i in range(6)]
    answer = server.api.post(f"{server.url}/api/services/digits/records",
                             json={"records": records}, timeout=10)
    assert answer.status_code == 200, answer.text
    synced = server.api.post(f"{server.url}/api/services/digits/annotations/sync", timeout=30)
    assert synced.status_code == 200, synced.text
    push = synced.json()["push"]
    assert sorted(push["sent"]) == ["q3", "q4", "q5"] and push["error"] is None

    # A person (the simulated one) answers in Label Studio; its webhook wakes the server's
    # loop (the periodic sync is 10 minutes away), which pulls the labels.
    backend = LabelStudioBackend(label_studio.url, label_studio.token)
    project = backend.ensure_project(ProjectSpec("digits", server.project_title,
                                                 tuple("01234"), "image"))
    hooks = backend._call("GET", "/api/webhooks", params={"project": project})  # noqa: SLF001
    assert [h["url"] for h in hooks] == [
        f"{server.url}/api/services/digits/annotations/webhook"]
    truth = {"q3": "1", "q4": "2", "q5": "3"}
    assert SimulatedAnnotator(backend, project, truth.get, list("01234"),
                              delay_s=0).step() == 3
    backend.close()

    def labeled() -> dict[str, Any] | None:
        status = server.api.get(f"{server.url}/api/services/digits/annotations",
                                timeout=10).json()
        return status if status["labeled"] == 3 else None

    status = eventually(labeled, timeout_s=20)
    assert status["rejected"] == 0 and status["last_error"] is None
    stats = server.api.get(f"{server.url}/api/services/digits/samples/stats", timeout=10).json()
    assert stats["labeled_per_class"] == {"1": 1, "2": 1, "3": 1}
    # The CL loop counted the three new labels: its volume rule submitted an update.
    job = eventually(lambda: next(iter(server.store.list_jobs(service="digits")), None))
    assert job.kind == "cl_update" and job.trigger["kind"] == "volume"

    # The webhook's token may post labels, not more; without a token it is refused.
    refused = requests.post(f"{server.url}/api/services/digits/annotations/webhook", timeout=10)
    assert refused.status_code == 401
