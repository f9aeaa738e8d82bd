"""``modelci-e demo``: a drifting image service on a real Triton, kept fresh live.

What runs (all real, all local): the embedded redis-server and MongoDB-protocol store, an
embedded ``tritonserver``, the CL server with its dashboard, CL loop and annotation loop, one RQ
worker process, the request-collecting proxy in front of Triton, and Label Studio when it is
installed (``--annotator``, :mod:`plugin.demo.annotation`). Then:

1. the first model (LeNet-5) learns digits 0-4 from labeled images sent to the ingest endpoint,
   through a manual update job that deploys it on Triton;
2. the traffic generator sends requests through the proxy with ``tritonclient``, phase after
   phase (:mod:`plugin.demo.data`: stationary, new classes, rotated digits); the server's
   annotation loop selects the answers to label (least confidence, within a budget and a cap
   on open tasks) and sends them as tasks to Label Studio (or to tasks in the cache), where a
   simulated annotator answers them with the true digits; the loop pulls the labels back;
3. the CL loop detects the drift and starts update jobs; each challenger is validated against
   the champion, and deployed on Triton only if every gate passes;
4. a live view in the terminal shows the phase, the accuracy, the serving version and the
   loop's events; at the end, the summary tables (:mod:`plugin.demo.report`) and
   ``demo.json`` in the run directory. The dashboard stays up until Ctrl-C (``--exit``: the
   demo ends after the summary).

Each run starts from an empty data directory (``.modelci/demo`` by default); the demo only
empties a directory that is empty or that it made itself (:data:`MARKER`).

Example (not a doctest: it runs for minutes)::

    report = run_demo(DemoSettings(quick=True, exit=True))
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from cl_server.annotation.factory import make_backend
from cl_server.annotation.sync import AnnotationSync
from cl_server.auth import issue_token
from cl_server.config import ServiceConfig
from cl_server.embedded import LabelStudioServer, read_endpoints
from cl_server.embedded.label_studio import DEFAULT_USERNAME
from cl_server.runtime import ServerRuntime, Started
from cl_server.store import MongoStore, User
from plugin.demo.annotation import DemoAnnotation, labels_back, resolve_annotator, with_annotator
from plugin.demo.data import DemoData, image_demo, text_demo
from plugin.demo.inputs import record_inputs
from plugin.demo.report import (
    RunRecord,
    annotation_table,
    build_report,
    job_summary,
    summary_table,
    updates_table,
)
from plugin.demo.traffic import Answer, Api, TrafficGenerator

QUIET_ALARMS_S = 30.0
"""A detector's alarms are shown once per stretch without a 30 s pause (it alarms each round)."""
DRAIN_S = 30.0
"""Seconds the last tasks get to be answered and pulled after the traffic."""
FULL_REQUESTS = (350, 1800, 2250)
QUICK_REQUESTS = (300, 1350, 1350)
FULL_TEXT_REQUESTS = (600, 1200)
QUICK_TEXT_REQUESTS = (300, 600)
TEXT_RATE = 6.0
"""Requests per second of the text demo: MiniLM costs Triton 30-60 ms per IMDB review on a
core it shares with the training jobs."""
SERVICES = ("image", "text")


@dataclass(frozen=True)
class DemoSettings:
    """How long and how fast the demo runs, and where.

    ``quick`` shortens the phases (the test suite's run); ``requests`` overrides both.
    ``annotator``: ``auto``, ``label-studio`` or ``simulated`` (:mod:`plugin.demo.annotation`).
    """

    data_dir: Path = Path(".modelci/demo")
    host: str = "127.0.0.1"
    port: int = 8080
    rate: float = 15.0                  # requests per second
    label_delay_s: float = 2.0          # seconds from a task's first sight to its answer
    initial_per_class: int = 250        # labeled images per digit 0-4 for the first model
    quick: bool = False
    requests: tuple[int, ...] | None = None
    service: str = "image"              # image (digits 0-4, then 5-9, then rotated) or text
    seed: int = 0
    exit: bool = False                  # end after the summary (else serve until Ctrl-C)
    screenshots: Path | None = None     # dashboard screenshots after the summary (Playwright)
    settle_s: float = 60.0              # seconds to wait for running jobs after the traffic
    annotator: str = "auto"

    @property
    def phase_requests(self) -> tuple[int, ...]:
        if self.requests:
            return self.requests
        if self.service == "text":
            return QUICK_TEXT_REQUESTS if self.quick else FULL_TEXT_REQUESTS
        return QUICK_REQUESTS if self.quick else FULL_REQUESTS

    def data(self) -> DemoData:
        """The demo's data (:mod:`plugin.demo.data`) for these settings."""
        if self.service not in SERVICES:
            raise ValueError(f"service must be one of {', '.join(SERVICES)} (got "
                             f"{self.service!r})")
        if self.service == "text":
            return text_demo(self.seed, self.initial_per_class, self.phase_requests)
        if len(self.phase_requests) != 3:
            raise ValueError(f"the image demo has three phases (got "
                             f"{len(self.phase_requests)} request counts)")
        return image_demo(self.seed, self.initial_per_class,
                          self.phase_requests)  # type: ignore[arg-type]


@dataclass
class LiveState:
    """What the live view shows; written by the demo's threads, read by the view."""

    stage: str = "starting"
    phase: int = -1
    phase_name: str = ""
    phase_description: str = ""
    phases: int = 3
    title: str = "modelci-e demo"
    sent: int = 0
    total: int = 0
    window: deque[bool] = field(default_factory=lambda: deque(maxlen=100))
    version: int = 0
    alarms: int = 0
    jobs: dict[str, int] = field(default_factory=dict)
    annotator: str = ""                 # where the tasks go, in words
    annotation: dict[str, Any] = field(default_factory=dict)  # the loop's status
    events: deque[str] = field(default_factory=lambda: deque(maxlen=8))
    started: float = field(default_factory=time.monotonic)

    def event(self, text: str) -> None:
        self.events.append(f"{datetime.now().strftime('%H:%M:%S')}  {text}")


def render(state: LiveState, url: str | None) -> Panel:
    """The live view: phase, progress, accuracy, serving version, loop events."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    elapsed = time.monotonic() - state.started
    grid.add_row("elapsed", f"{elapsed:.0f} s")
    grid.add_row("stage", state.stage)
    if state.phase >= 0:
        done = state.sent / state.total if state.total else 0
        bar = "#" * int(30 * done) + "." * (30 - int(30 * done))
        grid.add_row("phase", f"{state.phase + 1}/{state.phases} {state.phase_name}: "
                              f"{state.phase_description}")
        grid.add_row("requests", f"[{bar}] {state.sent}/{state.total}")
    accuracy = (f"{100 * sum(state.window) / len(state.window):.1f}% (last "
                f"{len(state.window)} answers, each scored before its label)"
                if state.window else "-")
    grid.add_row("accuracy", accuracy)
    grid.add_row("serving", f"version {state.version}" if state.version else "-")
    grid.add_row("drift alarms", str(state.alarms))
    grid.add_row("jobs", ", ".join(f"{n} {k}" for k, n in sorted(state.jobs.items())) or "-")
    grid.add_row("annotation", _annotation_line(state))
    if url:
        grid.add_row("dashboard", url)
    events = Text("\n".join(state.events) or "-", style="dim")
    return Panel(Group(grid, Text(""), Text("events", style="bold"), events),
                 title=state.title, expand=False)


def _annotation_line(state: LiveState) -> str:
    status = state.annotation
    if not status:
        return state.annotator or "-"
    waiting = status["sent"] - status["completed"]
    return (f"{state.annotator}: {status['sent']} tasks sent ({status['selection']}), "
            f"{status['labeled']} labels back, {waiting} open"
            + (f"; last error: {status['last_error'][:60]}" if status["last_error"] else ""))


class Monitor:
    """Polls the store and the annotation loop every second for the live view: alarms, jobs,
    deployments, tasks and labels."""

    def __init__(self, store: MongoStore, service: str, state: LiveState,
                 annotation: AnnotationSync):
        self.store, self.service, self.state = store, service, state
        self.annotation = annotation
        self._stop = threading.Event()
        self._seen_jobs: dict[str, str] = {}
        self._last_alarm: dict[str, float] = {}
        self._since = datetime.now(UTC)
        self._thread = threading.Thread(target=self._run, name="demo-monitor", daemon=True)

    def start(self) -> Monitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.poll()
            except Exception as exc:  # noqa: BLE001 - the view must not end the demo
                self.state.event(f"(monitor: {exc})")

    def poll(self) -> None:
        self.state.annotation = self.annotation.status()
        alarms = self.store.list_drift_events(self.service, since=self._since,
                                              alarms_only=True, limit=1000)
        for event in alarms:
            last = self._last_alarm.get(event.detector)
            stamp = event.created_at.timestamp()
            if last is None or stamp - last > QUIET_ALARMS_S:
                self.state.event(f"drift alarm: {event.detector} on {event.signal}")
            self._last_alarm[event.detector] = stamp
        self.state.alarms += len(alarms)
        if alarms:
            self._since = max(e.created_at for e in alarms)
        jobs = self.store.list_jobs(service=self.service, limit=200)
        self.state.jobs = job_summary(jobs)
        for job in sorted(jobs, key=lambda j: j.created_at):
            status = job.status
            if self._seen_jobs.get(job.id) == status:
                continue
            self._seen_jobs[job.id] = status
            trigger = (job.trigger or {}).get("kind", "?")
            result = job.result or {}
            if status == "running":
                self.state.event(f"job {job.id[:8]} running ({trigger})")
            elif status == "succeeded":
                outcome = result.get("outcome")
                gates = ", ".join(result.get("failed_gates", []))
                self.state.event(f"job {job.id[:8]} {result.get('scenario', '')}: version "
                                 f"{result.get('version', '-')} {outcome}"
                                 + (f" (failed: {gates})" if gates else ""))
            elif status in ("failed", "cancelled"):
                self.state.event(f"job {job.id[:8]} {status}: {(job.error or '')[:80]}")


MARKER = ".modelci-demo"
"""The file that marks a directory as a demo's own, which the next run may empty."""


def _fresh_data_dir(path: Path) -> Path:
    """``path``, emptied: only a directory a demo made (it holds :data:`MARKER`) or an empty
    one is ever cleared; anything else is refused, so a mistyped ``--data-dir`` loses
    nothing."""
    path = path.resolve()
    if path.exists() and not path.is_dir():
        raise RuntimeError(f"--data-dir {path} is a file, not a directory")
    if read_endpoints(path) is not None:
        raise RuntimeError(f"data dir {path} is in use by a running server; stop it or pass "
                           f"another --data-dir")
    if path.is_dir() and any(path.iterdir()):
        if not (path / MARKER).is_file():
            raise RuntimeError(f"--data-dir {path} is not empty and was not made by the demo "
                               f"(no {MARKER} in it): the demo empties its data dir at each "
                               f"run, so it only takes an empty or a demo directory")
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / MARKER).write_text("made by modelci-e demo; emptied at the start of each run\n")
    return path


def _serve_in_background(runtime: ServerRuntime) -> threading.Thread:
    thread = threading.Thread(target=runtime.serve_forever, name="demo-http", daemon=True)
    thread.start()
    return thread


def _labeled(api: Api, service: str) -> int:
    stats = api.get(f"/api/services/{service}/samples/stats")
    assert isinstance(stats, dict)
    return int(stats["labeled_total"])


def _first_job(store: MongoStore, service: str, timeout_s: float) -> Any:
    """The service's first update job, once it ended."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for job in store.list_jobs(service=service, limit=20):
            if job.status in ("succeeded", "failed", "cancelled"):
                return job
        time.sleep(0.2)
    raise TimeoutError(f"no update job finished in {timeout_s:.0f} s")


def _settle(store: MongoStore, service: str, timeout_s: float) -> None:
    """Wait for queued and running jobs to end (at most ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        jobs = store.list_jobs(service=service, limit=50)
        if not any(j.status in ("queued", "running") for j in jobs):
            return
        time.sleep(0.5)


def _screenshots(url: str, token: str, service: str, directory: Path) -> list[Path]:
    """Dashboard pages as PNGs, taken in headless Chromium (Playwright, when installed)."""
    from evaluator.dashboard_bench import launch_browser  # Playwright is a test extra

    directory.mkdir(parents=True, exist_ok=True)
    shots = []
    with launch_browser() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.goto(f"{url}/")
        page.get_by_test_id("token-input").fill(token)
        page.get_by_test_id("sign-in").click()
        page.get_by_test_id("service-row").first.wait_for()
        for name, route, ready in (
                ("overview", "#/", "service-row"),
                ("service", f"#/services/{service}", "update-row"),
                ("lineage", f"#/services/{service}/lineage", "lineage-node")):
            page.goto(f"{url}/{route}")
            page.get_by_test_id(ready).first.wait_for()
            if name == "service":  # the demo lasts minutes: the shortest chart range
                page.get_by_role("button", name="15 min").click()
            page.wait_for_timeout(800)  # charts animate in
            path = directory / f"demo-{name}.png"
            page.screenshot(path=str(path), full_page=True)
            shots.append(path)
    return shots


def run_demo(settings: DemoSettings, config: ServiceConfig,
             console: Console | None = None,
             on_started: Callable[[Started], None] | None = None) -> dict[str, Any]:
    """Run the demo of the module doc; returns the report (also written as ``demo.json``)."""
    console = console or Console(stderr=True)
    annotator = resolve_annotator(settings.annotator)
    data = settings.data()
    data_dir = _fresh_data_dir(settings.data_dir)
    label_studio = None
    if annotator == "label-studio":
        label_studio = LabelStudioServer(data_dir / "label-studio", token=secrets.token_hex(16))
    config = with_annotator(config, label_studio.endpoint if label_studio else None)
    runtime = ServerRuntime(config, data_dir=data_dir, host=settings.host, port=settings.port,
                            workers=1)
    state = LiveState(phases=len(data.phases), title=f"modelci-e demo: {data.title}",
                      annotator=f"Label Studio at {label_studio.url}" if label_studio
                      else "simulated (tasks in the cache)")
    monitor = None
    closers: list[Callable[[], None]] = []  # the proxy, the client, the annotator, once started
    store: MongoStore | None = None
    try:
        if label_studio is not None:
            # Before the server: the annotation loop's first round finds its project there.
            console.print(f"starting Label Studio at {label_studio.url} (a first start on a new "
                          f"data dir runs its migrations: 30-100 s) ...")
            label_studio.start()
        started = runtime.start()
        config = runtime.config  # with the embedded engine's address
        _serve_in_background(runtime)
        if on_started is not None:
            on_started(started)
        store = MongoStore(started.store_uri, config.store.database)
        if store.get_user("demo-traffic") is None:
            store.add_user(User(name="demo-traffic", role="engineer"))
        _, client_token = issue_token(store, "demo-traffic", "demo traffic and annotator")
        api = Api(started.url, client_token)
        view = Live(render(state, f"{started.url}/"), console=console, refresh_per_second=4,
                    transient=False, get_renderable=lambda: render(state, f"{started.url}/"))
        sync = runtime.annotation
        assert sync is not None  # the demo's config always names an annotator
        with _quiet_logs(), view:
            monitor = Monitor(store, config.name, state, sync).start()
            report = _drive(settings, config, data, started, store, api, state, closers, sync)
        if label_studio is not None:
            report["annotation"]["url"] = label_studio.url
        wide = console if console.is_terminal else Console(file=console.file, width=170)
        wide.print(summary_table(report))
        wide.print(updates_table(report))
        wide.print(annotation_table(report))
        (data_dir / "demo.json").write_text(json.dumps(
            {"settings": _jsonable(asdict(settings)), **report}, indent=2, default=str))
        console.print(f"report: {data_dir / 'demo.json'}")
        if settings.screenshots is not None:
            admin = started.admin_token or client_token
            for path in _screenshots(started.url, admin, config.name, settings.screenshots):
                console.print(f"screenshot: {path}")
        if not settings.exit:
            where = (f"\nLabel Studio stays up at [bold cyan]{label_studio.url}/[/] (sign in as "
                     f"{DEFAULT_USERNAME}, password {label_studio.token})."
                     if label_studio is not None else "")
            console.print(Panel(
                f"The dashboard stays up at [bold cyan]{started.url}/[/] (sign in with the admin "
                f"token above).{where} Ctrl-C stops everything.", expand=False))
            while True:
                time.sleep(3600)
        return report
    finally:
        if monitor is not None:
            monitor.stop()
        for close in reversed(closers):
            close()
        if store is not None:
            store.close()
        runtime.stop()
        if label_studio is not None:
            label_studio.stop()


@contextlib.contextmanager
def _quiet_logs() -> Iterator[None]:
    """The live view shows the loop's events; INFO logs would scroll it away."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        root.setLevel(level)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _drive(settings: DemoSettings, config: ServiceConfig, data: DemoData, started: Started,
           store: MongoStore, api: Api, state: LiveState, closers: list[Callable[[], None]],
           sync: AnnotationSync) -> dict[str, Any]:
    """The first model, the phases of traffic labeled through ``sync`` (the server's annotation
    loop), and the report; what it starts that needs stopping goes to ``closers``."""
    from cl_server.envelope.job import load_version
    from plugin.proxy.app import InferenceProxy
    from plugin.proxy.collector import RequestCollector
    from plugin.proxy.runner import ProxyThread
    from plugin.serving.factory import routing_path
    from plugin.serving.routing import RoutingTable

    service = config.name
    state.stage = f"the first model: ingesting {data.first}"
    records = [{"request_id": f"init-{n}", "inputs": record_inputs(data.initial_x[n]),
                "label": str(data.initial_y[n])} for n in range(len(data.initial_y))]
    # Paused while the first labels land in the store: no rule starts a job on half of them.
    api.patch(f"/api/services/{service}", {"status": "paused"})
    api.post(f"/api/services/{service}/records", {"records": records})
    deadline = time.monotonic() + 120
    while _labeled(api, service) < len(records):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the first labeled {data.first} did not reach the store in "
                               f"120 s")
        time.sleep(0.2)
    state.event(f"ingested {len(records)} labeled {data.first}")
    api.post(f"/api/services/{service}/update", {"reason": f"the first model ({data.first})"})
    state.stage = "the first model: training and deploying on Triton"
    first = _first_job(store, service, timeout_s=300)
    if first.status != "succeeded" or (first.result or {}).get("outcome") != "deployed":
        raise RuntimeError(f"the first model was not deployed: {first.error or first.result}")
    api.patch(f"/api/services/{service}", {"status": "active"})
    state.event(f"version 1 ({data.first}) serving on Triton")

    routing = RoutingTable(routing_path(started.data_dir, service))
    proxy = ProxyThread(InferenceProxy(
        config.engine.kind, str(config.engine.url), config.engine.model_name, service, routing,
        RequestCollector(started.cache_url, service, config.engine.kind,
                         spool_dir=started.data_dir / "proxy-spool"))).start()
    closers.append(proxy.close)
    classes: dict[int, list[str]] = {}

    def classes_of(version: int) -> list[str]:
        if version not in classes:
            record = store.get_version(service, version)
            if record is None:
                return []
            classes[version] = list(record.classes)
        return classes[version]

    state.stage = "the annotator: waiting for the annotation loop's project"
    cache = redis.Redis.from_url(started.cache_url)
    closers.append(cache.close)
    backend = make_backend(config, cache)
    assert backend is not None  # the demo's config always names an annotator
    annotation = DemoAnnotation(sync, backend, settings.label_delay_s, settings.seed)
    closers.append(annotation.stop)
    annotation.start()
    state.event(f"annotator: {state.annotator}, project {annotation.status()['project']}")
    traffic = TrafficGenerator(proxy.url, config.engine.model_name, config.model.input.name,
                               config.model.output_name, annotation.truth, classes_of,
                               rate=settings.rate)
    closers.append(traffic.close)

    routine_at = len(data.phases[0]) // 3

    def on_answer(answer: Answer) -> None:
        state.sent += 1
        if answer.phase == 0 and state.sent == routine_at:
            # An engineer asks for an update while nothing drifts: the gates decide whether it
            # brings enough (validation.gates.min_accuracy_gain) to be worth deploying.
            api.post(f"/api/services/{service}/update",
                     {"reason": "routine update requested before any drift"})
            state.event("an engineer requests a routine update (no drift yet)")
        state.window.append(answer.correct)
        if answer.version != state.version:
            if state.version:
                state.event(f"now serving version {answer.version}")
            state.version = answer.version

    onsets = []
    for index, phase in enumerate(data.phases):
        state.stage = "traffic"
        state.phase, state.phase_name = index, phase.name
        state.phase_description, state.sent, state.total = phase.description, 0, len(phase)
        state.event(f"phase {index + 1}: {phase.description}")
        onsets.append(time.time())
        traffic.run(phase, index, on_answer)
    state.stage = "labels: the last tasks"
    annotation.finish(DRAIN_S)
    state.stage = "waiting for running jobs"
    _settle(store, service, settings.settle_s)
    end = time.time()
    state.stage = "the report: training the full-retrain references"
    lineage = api.get(f"/api/services/{service}/lineage")
    assert isinstance(lineage, list)
    status = annotation.status()
    report = build_report(RunRecord(config=config, data=data, answers=traffic.answers,
                                    accepted=labels_back(store, service), onsets=onsets,
                                    end=end, store=store, load_version=load_version,
                                    lineage=lineage, seed=settings.seed))
    report["requests"]["errors"] = len(traffic.errors)
    report["requests"]["labels_unmatched"] = status["rejected"]
    report["annotation"] = {
        "backend": status["backend"], "selection": status["selection"],
        "budget_per_hour": status["budget"]["per_hour"],
        "max_open_tasks": config.annotator.max_open_tasks,
        "tasks_sent": status["sent"], "answered": status["completed"],
        "labels_back": status["labeled"], "rejected": status["rejected"],
        "last_error": status["last_error"]}
    report["urls"] = {"dashboard": f"{started.url}/", "engine": started.engine_url}
    state.stage = "done"
    return report
