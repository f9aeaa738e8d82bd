"""The annotation loop against a real Label Studio: selection within the budget, tasks with the
champion's pre-annotations, annotations pulled into the store exactly once, an unreachable
Label Studio losing nothing, labels outside the classes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import redis
import requests

from cl_server.annotation.label_studio import LabelStudioBackend
from cl_server.annotation.simulated import SimulatedAnnotator
from cl_server.annotation.sync import AnnotationSync
from cl_server.collector.service import ServiceCollector
from cl_server.config import parse_config
from cl_server.embedded import LabelStudioEndpoint
from cl_server.store import DataQuery, MongoStore

CLASSES = [str(c) for c in range(5)]


def config_text(project: str, budget: int = 4, extra: str = "") -> str:
    return f"""
name: digits
engine: {{kind: triton, model_name: digits}}
model: {{template: mlp, input: {{shape: [64], kind: image}}, classes: {CLASSES}}}
annotator: {{kind: label_studio, url: "http://127.0.0.1:1", token: "unused-token",
            project: "{project}", budget_per_hour: {budget}, selection: margin{extra}}}
"""


@dataclass
class Setup:
    sync: AnnotationSync
    backend: LabelStudioBackend
    collector: ServiceCollector
    cache: redis.Redis
    truth: dict[str, str]
    session: requests.Session
    url: str


def served(collector: ServiceCollector, n: int, seed: int = 0) -> dict[str, str]:
    """``n`` served digits with the champion's confidences: request i is the i-th most sure;
    returns the ground truth."""
    rng = np.random.default_rng(seed)
    records, truth = [], {}
    for i in range(n):
        sure = 0.95 - 0.7 * i / n  # r0 the surest, r{n-1} the least sure (still the top)
        confidences = [(1 - sure) / 4] * 5
        confidences[i % 5] = sure
        records.append({"request_id": f"r{i}", "inputs": rng.random(64).tolist(),
                        "confidences": confidences, "model_version": 1})
        truth[f"r{i}"] = str((i + 1) % 5)  # the champion is wrong on all of them
    assert collector.ingest(records).accepted == n
    return truth


@pytest.fixture
def setup(store: MongoStore, redis_url: str, label_studio: LabelStudioEndpoint,
          tmp_path: Path) -> Iterator[Setup]:
    config = parse_config(config_text(f"sync {uuid.uuid4().hex[:8]}"), env={})
    cache = redis.Redis.from_url(redis_url)
    collector = ServiceCollector(config, cache, store, tmp_path)
    backend = LabelStudioBackend(label_studio.url, label_studio.token)
    session = requests.Session()
    session.headers["Authorization"] = f"Token {label_studio.token}"
    truth = served(collector, 20)
    yield Setup(AnnotationSync(config, backend, collector, store, cache), backend, collector,
                cache, truth, session, label_studio.url)
    session.close()
    backend.close()
    cache.close()


def project_tasks(s: Setup) -> list[dict]:
    answer = s.session.get(f"{s.url}/api/tasks", params={
        "project": s.sync.project(), "fields": "all", "page_size": 1000}, timeout=10)
    return answer.json()["tasks"]


def test_the_budget_goes_to_the_least_sure_answers_with_their_pre_annotations(
        setup: Setup) -> None:
    report = setup.sync.push()
    assert report.error is None and report.pooled == 20
    assert sorted(report.sent) == ["r16", "r17", "r18", "r19"]  # budget 4, smallest margins
    tasks = project_tasks(setup)
    assert sorted(t["data"]["request_id"] for t in tasks) == sorted(report.sent)
    task = next(t for t in tasks if t["data"]["request_id"] == "r19")
    assert task["data"]["image"].startswith("data:image/png;base64,")
    prediction = task["predictions"][0]
    assert prediction["result"][0]["value"]["choices"] == ["4"]  # 19 % 5: the answered class
    assert prediction["model_version"] == "v1" and prediction["score"] == pytest.approx(0.285)
    # The budget is spent: a second push sends nothing, and no task is duplicated.
    assert setup.sync.push().sent == []
    assert len(project_tasks(setup)) == 4
    assert setup.sync.status()["budget"]["available"] == 0


def test_no_more_tasks_than_max_open_tasks_wait_for_an_annotation(setup: Setup,
                                                                 store: MongoStore) -> None:
    config = parse_config(config_text(f"open {uuid.uuid4().hex[:8]}", budget=20,
                                      extra=", max_open_tasks: 3"), env={})
    sync = AnnotationSync(config, setup.backend, setup.collector, store, setup.cache)
    assert sorted(sync.push().sent) == ["r17", "r18", "r19"]  # the budget allows 20
    assert sync.push().sent == []  # three tasks open: no place left
    project = sync.project()
    task = setup.backend.open_tasks(project)[0]
    setup.backend.annotate(project, task.task_id, setup.truth[task.request_id])
    assert sync.push().sent == ["r16"]  # one place freed: the least sure of the pool
    assert sync.status()["budget"]["available"] == 16


def test_lost_state_creates_no_duplicate_task(setup: Setup) -> None:
    sent = setup.sync.push().sent
    # The cache forgets what was sent and which tasks exist (a flushed or replaced Redis):
    setup.cache.delete(setup.sync.budget.key, setup.sync.keys["tasks"])
    fresh = AnnotationSync(setup.sync.config, setup.backend, setup.collector,
                           setup.sync.store, setup.cache)
    again = fresh.push()
    assert sorted(again.sent) == sorted(sent) and again.already_there == 4
    assert len(project_tasks(setup)) == 4  # found in Label Studio, not imported twice


def test_annotations_are_pulled_into_the_store_exactly_once(setup: Setup) -> None:
    sent = setup.sync.push().sent
    annotator = SimulatedAnnotator(setup.backend, setup.sync.project(), setup.truth.get,
                                   CLASSES, delay_s=0)
    assert annotator.step() == 4
    report = setup.sync.pull()
    assert report.error is None and (report.completed, report.labeled) == (4, 4)
    stored = setup.sync.store.run_data_query(DataQuery(service="digits"))
    assert sorted((s.request_id, s.label, s.source) for s in stored) == sorted(
        (rid, setup.truth[rid], "annotator") for rid in sent)
    # Pulled again (the overlap re-reads them; a restarted loop from an old cursor too):
    assert setup.sync.pull().labeled == 0
    setup.cache.hdel(setup.sync.keys["state"], "cursor")
    again = setup.sync.pull()
    assert again.labeled == 0 and again.completed == 0
    assert setup.collector.class_counts() == {
        label: sum(1 for rid in sent if setup.truth[rid] == label)
        for label in {setup.truth[rid] for rid in sent}}
    # A request labeled through the labels API first counts once too.
    setup.collector.label([{"request_id": "r0", "label": "1"}])
    status = setup.sync.status()
    assert status["labeled"] == 4 and status["completed"] == 4 and status["rejected"] == 0


def test_an_unreachable_label_studio_loses_nothing(setup: Setup) -> None:
    live = setup.sync.backend
    setup.sync.project()  # the project exists; then Label Studio goes away
    setup.sync.backend = LabelStudioBackend("http://127.0.0.1:9", "token", timeout_s=2)
    setup.sync._project = None  # noqa: SLF001 - as after a restart
    down = setup.sync.push()
    assert down.error and "unreachable" in down.error and down.sent == []
    pull = setup.sync.pull()
    assert pull.error and pull.labeled == 0
    # Selected while it was reachable, then it went down mid-push: the outbox keeps them.
    setup.sync.backend = live
    setup.sync._project = None  # noqa: SLF001
    setup.sync.project()
    setup.sync.backend = FailingImport(live)
    failed = setup.sync.push()
    assert failed.error and failed.queued == 4 and failed.sent == []
    assert setup.sync.status()["outbox"] == 4
    assert setup.sync.push().sent == [] and setup.sync.status()["outbox"] == 4  # no new picks
    setup.sync.backend = live
    delivered = setup.sync.push()
    assert delivered.error is None and delivered.queued == 0
    assert sorted(t["data"]["request_id"] for t in project_tasks(setup)) == [
        "r16", "r17", "r18", "r19"]


class FailingImport:
    """Label Studio whose imports fail (a 502 from a proxy in front of it)."""

    def __init__(self, inner: LabelStudioBackend):
        self.inner = inner
        self.name = inner.name

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.inner, name)

    def import_tasks(self, project, tasks):  # type: ignore[no-untyped-def]
        from cl_server.annotation.backend import AnnotatorUnavailable
        raise AnnotatorUnavailable("Label Studio answered 502 to POST /import")


def test_a_label_outside_the_classes_is_rejected_and_reported(setup: Setup) -> None:
    setup.sync.push()
    project = setup.sync.project()
    opened = setup.backend.open_tasks(project)
    setup.backend.annotate(project, opened[0].task_id, "7")  # not a class of the service
    setup.backend.annotate(project, opened[1].task_id, setup.truth[opened[1].request_id])
    report = setup.sync.pull()
    assert (report.labeled, report.rejected) == (1, 1)
    status = setup.sync.status()
    rejection = status["recent_rejections"][0]
    assert rejection["label"] == "7" and rejection["request_id"] == opened[0].request_id
    assert "not one of the service's classes" in rejection["reason"]
    assert setup.collector.class_counts() == {setup.truth[opened[1].request_id]: 1}


def test_a_new_class_is_added_when_the_config_allows_it(setup: Setup, store: MongoStore,
                                                        tmp_path: Path) -> None:
    config = parse_config(config_text(f"new {uuid.uuid4().hex[:8]}",
                                      extra=", accept_new_classes: true"), env={})
    added: list[list[str]] = []

    def on_new_classes(classes: list[str]) -> None:
        added.append(classes)
        setup.collector.classes.update(classes)

    sync = AnnotationSync(config, setup.backend, setup.collector, store, setup.cache,
                          on_new_classes=on_new_classes)
    sync.push()
    project = sync.project()
    task = setup.backend.open_tasks(project)[0]
    setup.backend.annotate(project, task.task_id, "zebra")
    report = sync.pull()
    assert added == [["zebra"]] and report.new_classes == ["zebra"]
    assert report.labeled == 1 and setup.collector.class_counts() == {"zebra": 1}
    # The project's choices now hold the new class.
    assert sync.project() == project
    stored = setup.session.get(f"{setup.url}/api/projects/{project}", timeout=10).json()
    assert "zebra" in stored["parsed_label_config"]["label"]["labels"]
