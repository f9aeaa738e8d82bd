"""Where annotation tasks live: the interface every annotation backend implements.

The CL server's annotation loop (:mod:`cl_server.annotation.sync`) talks to a backend only
through :class:`AnnotationBackend`:

- :meth:`~AnnotationBackend.ensure_project` finds or creates the service's project with its
  classes as the label choices (and adds choices when the service learns new classes);
- :meth:`~AnnotationBackend.import_tasks` adds tasks, each carrying the served request's id
  and the champion's answer as a pre-annotation, and returns their ids;
- :meth:`~AnnotationBackend.find_tasks` finds tasks by request id (after an import whose
  answer was lost: the tasks may exist, they must not be imported twice);
- :meth:`~AnnotationBackend.completed` pages through completed tasks with a cursor.

Annotators, people in Label Studio's UI or :class:`~cl_server.annotation.simulated.
SimulatedAnnotator`, use :meth:`~AnnotationBackend.open_tasks` and
:meth:`~AnnotationBackend.annotate`.

Implementations: :class:`~cl_server.annotation.label_studio.LabelStudioBackend` (a real Label
Studio over its REST API) and :class:`~cl_server.annotation.local.LocalBackend` (tasks kept
in the cache, for deployments and demos without Label Studio). Both pass the same contract
test (``tests/test_annotation_backends.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

TaskKind = Literal["image", "text", "values"]


class AnnotatorUnavailable(Exception):
    """The backend cannot be reached or failed on its side (connection refused, timeout, 5xx):
    the operation may be retried later; nothing was lost on our side."""


class AnnotatorError(Exception):
    """The backend refused a request (4xx): retrying the same request will not help."""


@dataclass(frozen=True)
class ProjectSpec:
    """A service's annotation project.

    ``kind``: what an annotator is shown: ``image`` (``data.image``, a PNG data URI),
    ``text`` (``data.text``) or ``values`` (``data.values``, the input's numbers as text).
    ``classes``: the label choices, in order.
    """

    service: str
    title: str
    classes: tuple[str, ...]
    kind: TaskKind = "image"
    description: str = ""


@dataclass(frozen=True)
class TaskIn:
    """One served sample to label.

    ``data``: what the annotator sees (keys per :class:`ProjectSpec` ``kind``).
    ``prediction``: the class the champion answered (the pre-annotation; None: none) with its
    probability ``score`` (0..1) and the answering ``model_version``. ``served_ms``: when it
    was served (Unix ms).
    """

    request_id: str
    data: Mapping[str, Any]
    prediction: str | None = None
    score: float | None = None
    model_version: int | None = None
    served_ms: int = 0


@dataclass(frozen=True)
class OpenTask:
    """A task still to be labeled, as an annotator sees it."""

    task_id: str
    request_id: str
    prediction: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CompletedTask:
    """A task with an annotation.

    ``label``: the chosen class (None: the annotation chose none, e.g. it was skipped).
    ``cursor``: pass it back to :meth:`AnnotationBackend.completed` to page on.
    """

    task_id: str
    request_id: str
    label: str | None
    annotation_id: str
    completed_at: str
    annotator: str | None = None


class AnnotationBackend(Protocol):
    """See the module doc. Every method may raise :class:`AnnotatorUnavailable` or
    :class:`AnnotatorError`."""

    name: str

    def ensure_project(self, spec: ProjectSpec) -> str:
        """The id of the project titled ``spec.title`` (created if missing); its label
        choices are made to include every one of ``spec.classes``."""
        ...

    def import_tasks(self, project: str, tasks: Sequence[TaskIn]) -> dict[str, str]:
        """Create ``tasks``; returns request id -> task id."""
        ...

    def find_tasks(self, project: str, request_ids: Sequence[str]) -> dict[str, str]:
        """The tasks of ``project`` holding any of ``request_ids``: request id -> task id."""
        ...

    def completed(self, project: str, after: str | None, limit: int = 500
                  ) -> tuple[list[CompletedTask], str | None]:
        """Tasks completed after the cursor ``after`` (None: from the start), oldest first,
        at most ``limit``; and the cursor to pass next (unchanged when there were none).
        A task appears once per cursor position; callers may still see a task again after
        a restart from an older cursor and must count each request id once."""
        ...

    def open_tasks(self, project: str, limit: int = 100) -> list[OpenTask]:
        """Tasks with no annotation yet, oldest first."""
        ...

    def annotate(self, project: str, task_id: str, label: str,
                 lead_time_s: float | None = None) -> str:
        """Label ``task_id`` with ``label`` as an annotator would; returns the annotation's
        id."""
        ...

    def close(self) -> None:
        ...
