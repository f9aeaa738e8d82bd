"""The annotation backend contract, run against every implementation: a real Label Studio
(the session's server) and the cache-held tasks of ``annotator.kind: simulated``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
import requests

from cl_server.annotation.backend import (AnnotationBackend, AnnotatorUnavailable, ProjectSpec,
                                          TaskIn)
from cl_server.annotation.label_studio import LabelStudioBackend
from cl_server.annotation.local import LocalBackend
from cl_server.embedded import LabelStudioEndpoint

BACKENDS = ["label_studio", "local"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, redis_url: str) -> Iterator[AnnotationBackend]:
    if request.param == "label_studio":
        endpoint: LabelStudioEndpoint = request.getfixturevalue("label_studio")
        made: AnnotationBackend = LabelStudioBackend(endpoint.url, endpoint.token)
    else:
        made = LocalBackend(redis.Redis.from_url(redis_url))
    yield made
    made.close()


def spec(kind: str = "image", classes: tuple[str, ...] = ("0", "1", "2")) -> ProjectSpec:
    title = f"contract {uuid.uuid4().hex[:10]}"
    return ProjectSpec("digits", title, classes, kind)  # type: ignore[arg-type]


def tasks(n: int, prefix: str = "r") -> list[TaskIn]:
    return [TaskIn(f"{prefix}{i}", {"values": f"{i} {i + 1}"}, prediction=str(i % 3),
                   score=0.5 + i / 100, model_version=2, served_ms=1_700_000_000_000 + i)
            for i in range(n)]


def test_a_project_is_found_again_by_title_and_its_choices_grow(
        backend: AnnotationBackend) -> None:
    first = spec("values")
    project = backend.ensure_project(first)
    assert backend.ensure_project(first) == project  # found, not created again
    grown = ProjectSpec(first.service, first.title, first.classes + ("9",), first.kind)
    assert backend.ensure_project(grown) == project
    ids = backend.import_tasks(project, tasks(1))
    backend.annotate(project, ids["r0"], "9")  # the new choice is a valid answer
    done, _ = backend.completed(project, None)
    assert [(t.request_id, t.label) for t in done] == [("r0", "9")]
    assert backend.ensure_project(spec("values")) != project  # another title, another project


def test_tasks_are_imported_found_listed_open_and_completed_with_a_cursor(
        backend: AnnotationBackend) -> None:
    project = backend.ensure_project(spec("values"))
    ids = backend.import_tasks(project, tasks(5))
    assert sorted(ids) == [f"r{i}" for i in range(5)] and len(set(ids.values())) == 5
    assert backend.find_tasks(project, ["r1", "r3", "nope"]) == {"r1": ids["r1"],
                                                                  "r3": ids["r3"]}
    assert backend.find_tasks(project, []) == {}
    opened = backend.open_tasks(project)
    assert [t.request_id for t in opened] == [f"r{i}" for i in range(5)]
    assert [t.prediction for t in opened] == ["0", "1", "2", "0", "1"]  # the pre-annotations
    assert opened[0].data["values"] == "0 1"

    assert backend.completed(project, None) == ([], None)
    backend.annotate(project, ids["r2"], "1", lead_time_s=1.5)
    backend.annotate(project, ids["r0"], "2")
    done, cursor = backend.completed(project, None)
    assert [(t.request_id, t.label, t.task_id) for t in done] == [
        ("r2", "1", ids["r2"]), ("r0", "2", ids["r0"])]  # in completion order
    assert cursor is not None and all(t.annotation_id for t in done)
    assert {t.request_id for t in backend.open_tasks(project)} == {"r1", "r3", "r4"}
    backend.annotate(project, ids["r4"], "0")
    later, after = backend.completed(project, cursor)
    # A cursor moves on; a backend may return a task again (an overlap), never lose one.
    assert "r4" in {t.request_id for t in later} and after is not None
    assert {t.request_id for t in later} <= {"r0", "r2", "r4"}
    # Pages of one: every completed task is reached.
    seen, position = [], None
    for _ in range(10):
        page, position = backend.completed(project, position, limit=1)
        seen += [t.request_id for t in page]
        if not page:
            break
    assert {"r0", "r2", "r4"} <= set(seen)


def test_an_unreachable_backend_says_so(backend: AnnotationBackend) -> None:
    if isinstance(backend, LabelStudioBackend):
        dead: AnnotationBackend = LabelStudioBackend("http://127.0.0.1:9", "token",
                                                     timeout_s=2)
    else:
        dead = LocalBackend(redis.Redis(port=9, socket_connect_timeout=1))
    with pytest.raises(AnnotatorUnavailable, match="unreachable"):
        dead.ensure_project(spec())


def test_label_studio_project_holds_the_label_config_and_pre_annotations(
        label_studio: LabelStudioEndpoint) -> None:
    backend = LabelStudioBackend(label_studio.url, label_studio.token)
    project = backend.ensure_project(spec("image", ("cat", "dog & co")))
    ids = backend.import_tasks(project, [TaskIn("img-1", {"image": "data:image/png;base64,AA=="},
                                                "cat", 0.75, 3, 1)])
    session = requests.Session()
    session.headers["Authorization"] = f"Token {label_studio.token}"
    stored = session.get(f"{label_studio.url}/api/projects/{project}", timeout=10).json()
    assert stored["parsed_label_config"]["label"]["labels"] == ["cat", "dog & co"]
    assert stored["parsed_label_config"]["label"]["to_name"] == ["image"]
    task = session.get(f"{label_studio.url}/api/tasks/{ids['img-1']}", timeout=10).json()
    assert task["data"]["request_id"] == "img-1"
    prediction = session.get(f"{label_studio.url}/api/predictions",
                             params={"task": ids["img-1"]}, timeout=10).json()
    assert prediction[0]["model_version"] == "v3" and prediction[0]["score"] == 0.75
    assert prediction[0]["result"][0]["value"] == {"choices": ["cat"]}
    # A skipped task gives no label (Label Studio does not count it as completed).
    skipped = backend.import_tasks(project, [TaskIn("img-2", {"image": "data:,"})])["img-2"]
    session.post(f"{label_studio.url}/api/tasks/{skipped}/annotations",
                 json={"result": [], "was_cancelled": True}, timeout=10).raise_for_status()
    done, _ = backend.completed(project, None)
    assert all(t.label is None for t in done)
    session.close()
    backend.close()
