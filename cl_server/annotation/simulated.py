"""A simulated annotator: answers annotation tasks from ground truth, through the backend's API.

For demos and benchmarks: it works the project the way a person does (lists the open tasks,
annotates them), against Label Studio or the cache-held tasks alike. A task is answered
``delay_s`` seconds after the annotator first saw it; with probability ``error_rate`` the
answer is a wrong class (drawn uniformly from the others). A task whose truth is unknown
(``truth`` returns None) is left open.

Example:
    >>> import tempfile, redis
    >>> from cl_server.annotation.backend import ProjectSpec, TaskIn
    >>> from cl_server.annotation.local import LocalBackend
    >>> from cl_server.embedded import EmbeddedServices
    >>> with EmbeddedServices(tempfile.mkdtemp(), cache=True, store=False) as svc:
    ...     backend = LocalBackend(redis.Redis.from_url(svc.endpoints.cache_url))
    ...     project = backend.ensure_project(ProjectSpec("s", "s", ("a", "b"), "values"))
    ...     _ = backend.import_tasks(project, [TaskIn("r1", {"values": "1"}),
    ...                                        TaskIn("r2", {"values": "2"})])
    ...     annotator = SimulatedAnnotator(backend, project, {"r1": "b"}.get, ("a", "b"),
    ...                                    delay_s=0)
    ...     annotator.step(), [(t.request_id, t.label) for t in backend.completed(project, None)[0]]
    (1, [('r1', 'b')])
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence

from cl_server.annotation.backend import AnnotationBackend, AnnotatorError, AnnotatorUnavailable

log = logging.getLogger(__name__)


class SimulatedAnnotator:
    """See the module doc. ``classes``: what a wrong answer is drawn from; ``seed``: of the
    error draws; ``batch``: open tasks listed per step at most."""

    def __init__(self, backend: AnnotationBackend, project: str,
                 truth: Callable[[str], str | None], classes: Sequence[str], *,
                 delay_s: float = 2.0, error_rate: float = 0.0, seed: int = 0,
                 batch: int = 500, clock: Callable[[], float] = time.monotonic):
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError(f"error_rate must be within 0..1 (got {error_rate})")
        self.backend = backend
        self.project = project
        self.truth = truth
        self.classes = list(classes)
        self.delay_s = delay_s
        self.error_rate = error_rate
        self.batch = batch
        self.clock = clock
        self._random = random.Random(seed)
        self._seen: dict[str, float] = {}
        self.answered = 0
        self.wrong = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def step(self) -> int:
        """Answer the open tasks that are due; returns how many were answered."""
        now = self.clock()
        answered = 0
        for task in self.backend.open_tasks(self.project, self.batch):
            if self._stop.is_set():
                break  # stopped: not one more answer
            first = self._seen.setdefault(task.task_id, now)
            if now - first < self.delay_s:
                continue
            label = self.truth(task.request_id)
            if label is None:
                continue
            if self.error_rate and self._random.random() < self.error_rate:
                others = [c for c in self.classes if c != label]
                if others:
                    label = self._random.choice(others)
                    self.wrong += 1
            try:
                self.backend.annotate(self.project, task.task_id, label,
                                      lead_time_s=round(now - first, 3))
            except AnnotatorError as exc:  # annotated meanwhile (by a person): leave it
                log.info("task %s not annotated: %s", task.task_id, exc)
                continue
            self._seen.pop(task.task_id, None)
            answered += 1
        self.answered += answered
        return answered

    def start(self, every_s: float = 0.5) -> SimulatedAnnotator:
        """Work on a thread, a step every ``every_s`` seconds, until :meth:`stop`."""

        def run() -> None:
            while not self._stop.wait(every_s):
                try:
                    self.step()
                except AnnotatorUnavailable as exc:
                    self.failures += 1
                    log.info("simulated annotator: %s", exc)

        self._thread = threading.Thread(target=run, daemon=True, name="simulated-annotator")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
