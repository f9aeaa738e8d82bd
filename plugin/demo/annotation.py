"""The demo's labels: its answers go to annotators through the CL server's annotation loop.

The demo labels what it serves the way a deployment with annotators does
(:mod:`cl_server.annotation`): every ``annotator.sync_every_s`` the server's loop pools the
served requests, ranks them by the champion's uncertainty (``least-confidence``), sends what
the budget and ``annotator.max_open_tasks`` allow as tasks with the champion's answer as a
pre-annotation, and pulls the annotations back into the collector. The annotator is
:class:`~cl_server.annotation.simulated.SimulatedAnnotator`, working the project through the
backend's API as a person would: it looks at the open tasks every :data:`LOOK_EVERY_S` and
answers each with the true digit, which the traffic generator recorded before it sent the
request (:attr:`DemoAnnotation.truth`), once ``delay_s`` seconds have passed since it first
saw the task.

Where the tasks live (``--annotator``):

- ``label-studio``: a real Label Studio (:class:`~cl_server.embedded.LabelStudioServer`)
  under the demo's data dir. Each annotation takes it about 0.1 s, each listing of tasks
  0.1-0.2 s, and it shares two cores with the training jobs: it labels fewer answers than the
  demo's 15 requests a second. The open-task cap keeps the queue short, and the selection
  decides which answers get a label;
- ``simulated``: tasks in the cache (``LocalBackend``); the annotator keeps pace with the
  traffic, so every answer is labeled;
- ``auto`` (the default): ``label-studio`` when Label Studio is installed
  (:func:`~cl_server.embedded.label_studio_installed`), else ``simulated``.

Example:
    >>> from unittest import mock
    >>> with mock.patch("plugin.demo.annotation.label_studio_installed", return_value=False):
    ...     resolve_annotator("auto"), resolve_annotator("label-studio")
    ('simulated', 'label-studio')
    >>> from plugin.cli import demo_config_path
    >>> from cl_server.config import load_config
    >>> from cl_server.embedded import LabelStudioEndpoint
    >>> config = with_annotator(load_config(demo_config_path()),
    ...                         LabelStudioEndpoint("http://127.0.0.1:8081", "secret-token"))
    >>> config.annotator.kind, config.annotator.url, config.annotator.selection
    ('label_studio', 'http://127.0.0.1:8081', 'least-confidence')
"""

from __future__ import annotations

import time
from typing import Any

from cl_server.annotation.backend import AnnotationBackend
from cl_server.annotation.simulated import SimulatedAnnotator
from cl_server.annotation.sync import AnnotationSync
from cl_server.config import ServiceConfig
from cl_server.config.schema import AnnotatorConfig
from cl_server.embedded import LabelStudioEndpoint, label_studio_installed
from cl_server.store import DataQuery, Store

ANNOTATORS = ("auto", "label-studio", "simulated")
LOOK_EVERY_S = 0.5
"""Seconds between two looks of the annotator at the open tasks (a look at Label Studio costs
it about as much as two annotations)."""


def resolve_annotator(choice: str) -> str:
    """``label-studio`` or ``simulated`` for a ``--annotator`` choice (see the module doc)."""
    if choice not in ANNOTATORS:
        raise ValueError(f"annotator must be one of {', '.join(ANNOTATORS)} (got {choice!r})")
    if choice == "auto":
        return "label-studio" if label_studio_installed() else "simulated"
    return choice


def with_annotator(config: ServiceConfig,
                   label_studio: LabelStudioEndpoint | None) -> ServiceConfig:
    """``config`` whose annotator is the Label Studio at ``label_studio``, or the cache-held
    tasks (``simulated``) with None; the rest of the section (selection, budget, sync period,
    open-task cap) stays as the config has it."""
    fields = config.annotator.model_dump()
    if label_studio is None:
        fields.update(kind="simulated", url=None, token=None)
    else:
        fields.update(kind="label_studio", url=label_studio.url, token=label_studio.token)
    return config.model_copy(update={"annotator": AnnotatorConfig.model_validate(fields)})


class DemoAnnotation:
    """The demo's side of the annotation loop: the ground truth, the simulated annotator
    working the loop's project, and what the loop reports.

    Parameters:
        sync: the server's annotation loop (:attr:`ServerRuntime.annotation`).
        backend: a backend of the annotator's own, on the loop's tasks.
        delay_s: seconds from the annotator's first sight of a task to its answer.
        seed: of the annotator's draws.
    """

    def __init__(self, sync: AnnotationSync, backend: AnnotationBackend, delay_s: float,
                 seed: int = 0):
        self.sync = sync
        self.backend = backend
        self.delay_s = delay_s
        self.seed = seed
        self.truth: dict[str, str] = {}
        """Request id -> true label; the traffic generator fills it before each request."""
        self.annotator: SimulatedAnnotator | None = None

    def start(self, timeout_s: float = 60.0) -> DemoAnnotation:
        """Start answering once the loop has made its project (on its first round with the
        backend up), at most ``timeout_s`` from now."""
        deadline = time.monotonic() + timeout_s
        while self.status()["project"] is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the annotation loop made no project in {timeout_s:.0f} s: "
                                   f"{self.status()['last_error']}")
            time.sleep(0.2)
        spec = self.sync.spec()
        project = self.backend.ensure_project(spec)  # the loop's, found by its title
        self.annotator = SimulatedAnnotator(self.backend, project, self.truth.get, spec.classes,
                                            delay_s=self.delay_s, seed=self.seed)
        self.annotator.start(every_s=LOOK_EVERY_S)
        return self

    def status(self) -> dict[str, Any]:
        """The loop's status (``GET /api/services/{name}/annotations``)."""
        return self.sync.status()

    def drain(self, timeout_s: float) -> None:
        """Wait until every task sent came back and no candidate waits in the pool, at most
        ``timeout_s`` (Label Studio may still have candidates left when it ends)."""
        deadline = time.monotonic() + timeout_s
        # The last requests reach the pool at the loop's next round, and their tasks take
        # delay_s to be answered: nothing can be done before.
        time.sleep(min(timeout_s, self.delay_s + 2 * self.sync.settings.sync_every_s))
        while time.monotonic() < deadline:
            status = self.status()
            if not status["pool"] and not status["outbox"] and \
                    status["completed"] >= status["sent"]:
                return
            time.sleep(0.5)

    def finish(self, timeout_s: float) -> None:
        """:meth:`drain`, stop answering, and pull what was answered: the loop's counts are
        final then (bar tasks it sends later, which stay open)."""
        self.drain(timeout_s)
        self.stop()
        self.sync.pull()

    def stop(self) -> None:
        if self.annotator is not None:
            self.annotator.stop()
        self.backend.close()


def labels_back(store: Store, service: str) -> list[tuple[float, str, str]]:
    """The labels the service took from its annotators: (Unix time stored, request id,
    label), oldest first."""
    samples = store.run_data_query(DataQuery(filter={"service": service, "source": "annotator"},
                                             sort=[("_id", 1)]))
    return [(s.created_at.timestamp(), s.request_id, s.label) for s in samples]
