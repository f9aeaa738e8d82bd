"""The real Label Studio server (``cl_server.embedded.label_studio``).

The REST tests use the session's ``label_studio`` fixture (one real server). The lifecycle and
error paths run a stand-in executable (a few lines of Python or sh) instead of Label Studio,
whose first start takes 30-100 s.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from cl_server.embedded import (EmbeddedServiceError, LabelStudioEndpoint, LabelStudioServer,
                                find_label_studio)
from cl_server.embedded.label_studio import DEFAULT_USERNAME, EXECUTABLE_ENV, VENV_DIR

LABEL_CONFIG = ('<View><Text name="text" value="$text"/><Choices name="label" toName="text" '
                'choice="single"><Choice value="a"/><Choice value="b"/></Choices></View>')


def auth(endpoint: LabelStudioEndpoint) -> dict[str, str]:
    return {"Authorization": f"Token {endpoint.token}"}


def test_whoami_answers_the_token(label_studio: LabelStudioEndpoint) -> None:
    answer = requests.get(f"{label_studio.url}/api/current-user/whoami",
                          headers=auth(label_studio), timeout=10)
    assert answer.status_code == 200
    assert answer.json()["email"] == DEFAULT_USERNAME


def test_a_wrong_token_is_refused(label_studio: LabelStudioEndpoint) -> None:
    answer = requests.get(f"{label_studio.url}/api/current-user/whoami",
                          headers={"Authorization": "Token not-the-token"}, timeout=10)
    assert answer.status_code == 401


def test_projects_are_created_and_listed(label_studio: LabelStudioEndpoint) -> None:
    created = requests.post(f"{label_studio.url}/api/projects", headers=auth(label_studio),
                            json={"title": "server-test", "label_config": LABEL_CONFIG},
                            timeout=30)
    assert created.status_code == 201, created.text
    listed = requests.get(f"{label_studio.url}/api/projects", headers=auth(label_studio),
                          params={"page_size": 1000}, timeout=30)
    assert listed.status_code == 200
    projects = {p["id"]: p for p in listed.json()["results"]}
    assert projects[created.json()["id"]]["title"] == "server-test"


@pytest.fixture
def hook_receiver() -> Iterator[tuple[str, list[dict]]]:
    """A loopback HTTP server that records the JSON bodies POSTed to it: (url, bodies)."""
    bodies: list[dict] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hook", bodies
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_webhooks_may_call_loopback_but_not_private_networks(
        label_studio: LabelStudioEndpoint, hook_receiver: tuple[str, list[dict]]) -> None:
    url, bodies = hook_receiver
    api, headers = label_studio.url, auth(label_studio)
    project = requests.post(f"{api}/api/projects", headers=headers, timeout=30,
                            json={"title": "hooks", "label_config": LABEL_CONFIG}).json()["id"]
    hook = {"project": project, "send_payload": False, "send_for_all_actions": False,
            "actions": ["ANNOTATION_CREATED"]}
    private = requests.post(f"{api}/api/webhooks", headers=headers, timeout=30,
                            json={**hook, "url": "http://192.168.0.1/hook"})
    assert private.status_code == 403, private.text
    assert requests.post(f"{api}/api/webhooks", headers=headers, timeout=30,
                         json={**hook, "url": url}).status_code == 201
    assert requests.post(f"{api}/api/projects/{project}/import", headers=headers, timeout=30,
                         json=[{"text": "hello"}]).status_code == 201
    task = requests.get(f"{api}/api/tasks", headers=headers, params={"project": project},
                        timeout=30).json()["tasks"][0]["id"]
    annotation = requests.post(f"{api}/api/tasks/{task}/annotations", headers=headers, timeout=30,
                               json={"result": [{"from_name": "label", "to_name": "text",
                                                 "type": "choices",
                                                 "value": {"choices": ["a"]}}]})
    assert annotation.status_code == 201, annotation.text
    deadline = time.monotonic() + 10
    while not bodies and time.monotonic() < deadline:
        time.sleep(0.05)
    assert bodies == [{"action": "ANNOTATION_CREATED"}]


def stand_in(tmp_path: Path, script: str, interpreter: str = sys.executable) -> str:
    """An executable file at ``tmp_path/label-studio`` running ``script``."""
    path = tmp_path / "label-studio"
    path.write_text(f"#!{interpreter}\n{textwrap.dedent(script)}")
    path.chmod(0o755)
    return str(path)


# Answers whoami with 200 for $LABEL_STUDIO_USER_TOKEN on --port, like a started Label Studio.
FAKE_SERVER = """
    import os, sys
    from http.server import BaseHTTPRequestHandler, HTTPServer
    TOKEN = os.environ["LABEL_STUDIO_USER_TOKEN"]

    class WhoAmI(BaseHTTPRequestHandler):
        def do_GET(self):
            ok = self.headers.get("Authorization") == f"Token {TOKEN}"
            self.send_response(200 if ok else 401)
            self.end_headers()

    HTTPServer(("127.0.0.1", int(sys.argv[sys.argv.index("--port") + 1])),
               WhoAmI).serve_forever()
"""


def test_start_stop_and_restart_keep_the_account(tmp_path: Path) -> None:
    executable = stand_in(tmp_path, FAKE_SERVER)
    data = tmp_path / "data"
    with LabelStudioServer(data, token="first-token", executable=executable) as server:
        assert server.running
        assert (data / "run" / "label-studio.pid").exists()
        assert server.endpoint == LabelStudioEndpoint(server.url, "first-token")
    assert not server.running and not (data / "run" / "label-studio.pid").exists()
    assert server.start() == server.url
    server.stop()
    other = LabelStudioServer(data, token="second-token", executable=executable)
    with pytest.raises(EmbeddedServiceError, match="made for user .* another token"):
        other.start()


def test_a_server_that_exits_fails_with_the_end_of_its_log(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EXECUTABLE_ENV, stand_in(tmp_path, """
        echo "django.db.utils.OperationalError: unable to open database file" >&2
        exit 1
    """, interpreter="/bin/sh"))
    started = time.monotonic()
    with pytest.raises(EmbeddedServiceError) as failure:
        LabelStudioServer(tmp_path / "data", token="test-token").start()
    assert time.monotonic() - started < 10
    assert "Label Studio did not start" in str(failure.value)
    assert "exited with code 1" in str(failure.value)
    assert "unable to open database file" in str(failure.value)


def test_a_port_in_use_is_refused_before_starting(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    executable = stand_in(tmp_path, f"open({str(marker)!r}, 'w').close()\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = LabelStudioServer(tmp_path / "data", token="test-token", port=port,
                                   executable=executable)
        with pytest.raises(EmbeddedServiceError, match=f"did not start: port {port} .* in use"):
            server.start()
    assert not marker.exists()


def test_find_label_studio_prefers_the_environment_variable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    on_path = stand_in(tmp_path, "")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv(EXECUTABLE_ENV, "/somewhere/else/label-studio")
    assert find_label_studio() == "/somewhere/else/label-studio"
    monkeypatch.delenv(EXECUTABLE_ENV)
    repo_venv = Path(__file__).resolve().parents[1] / VENV_DIR / "bin" / "label-studio"
    expected = str(repo_venv) if os.access(repo_venv, os.X_OK) else on_path
    assert find_label_studio() == expected


def test_a_missing_executable_names_the_install_step(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EXECUTABLE_ENV, str(tmp_path / "label-studio"))
    with pytest.raises(EmbeddedServiceError, match=r"not an executable file: run `\./run test`"):
        LabelStudioServer(tmp_path, token="test-token")


def test_a_short_token_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 6 characters"):
        LabelStudioServer(tmp_path, token="short", executable=sys.executable)
