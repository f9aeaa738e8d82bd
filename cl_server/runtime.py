"""Start and stop a whole CL server: embedded services, store, cache, workers, HTTP server.

The same sequence runs for embedded defaults and production: whatever the config leaves empty
(``cache.url``, ``store.uri``) is started locally by :class:`EmbeddedServices`, and a Triton
service without ``engine.url`` gets an embedded ``tritonserver`` (its repository under the data
directory, the routing table's versions loaded again after a restart); everything else is
reached at its URL. Shutdown runs in reverse: HTTP server, workers, connections, embedded
servers, so nothing is left running.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import redis
import waitress
from rq import Worker

from cl_server.annotation.factory import add_classes, make_backend, webhook_token, with_classes
from cl_server.annotation.sync import AnnotationSync
from cl_server.api import create_app
from cl_server.api.context import ServerContext
from cl_server.auth import ensure_admin
from cl_server.config import ServiceConfig
from cl_server.deploy import ENV_DATA_DIR
from cl_server.embedded import EmbeddedServices, ManagedProcess
from cl_server.loop import ServiceLoop
from cl_server.queue import WorkerSettings
from cl_server.store import MongoStore

log = logging.getLogger(__name__)

# Environment a parent hands to the worker processes it starts (not argv: URIs may hold secrets).
ENV_CACHE_URL = "MODELCI_CACHE_URL"
ENV_STORE_URI = "MODELCI_STORE_URI"
ENV_STORE_DB = "MODELCI_STORE_DB"
ENV_QUEUE = "MODELCI_QUEUE"
ENV_WORKER_LABELS = "MODELCI_WORKER_LABELS"


@dataclass(frozen=True)
class Started:
    url: str
    admin_token: str | None
    cache_url: str
    store_uri: str
    data_dir: Path
    engine_url: str | None = None  # the service's engine (an embedded tritonserver's too)


def ctx_of(app: Any) -> ServerContext:
    return app.extensions["modelci"]


def forget_dead_workers(cache: redis.Redis) -> int:
    """Drop RQ worker registrations of this host whose process is gone (a worker killed with
    its server leaves one behind, restored from Redis's append-only file); returns how many."""
    host = socket.gethostname()
    gone = [w for w in Worker.all(connection=cache)
            if w.hostname == host and w.pid and not psutil.pid_exists(w.pid)]
    for dead in gone:
        dead.register_death()
    return len(gone)


def worker_process(settings: WorkerSettings, run_dir: Path, index: int) -> ManagedProcess:
    """A ``modelci-e worker`` child serving ``settings.queue``, ready once registered in Redis."""
    name = f"modelci-embedded-{index}-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, ENV_CACHE_URL: settings.cache_url, ENV_STORE_URI: settings.store_uri,
           ENV_STORE_DB: settings.database, ENV_QUEUE: settings.queue,
           ENV_WORKER_LABELS: ",".join(settings.labels),
           ENV_DATA_DIR: str(run_dir.parent),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}

    def ready() -> bool:
        connection = redis.Redis.from_url(settings.cache_url)
        try:
            return any(w.name == name for w in Worker.all(connection=connection))
        finally:
            connection.close()

    # RQ: the first SIGTERM is a warm shutdown (finish the job), the second a cold one.
    return ManagedProcess(f"worker-{index}",
                          [sys.executable, "-m", "plugin.cli", "worker", "--name", name],
                          run_dir, ready, env=env, ready_timeout_s=60, stop_timeout_s=10,
                          stop_signals=2)


def embedded_engine(config: ServiceConfig, data_dir: Path) -> Any | None:
    """An embedded ``tritonserver`` for a Triton service whose config has no ``engine.url``
    (not started); ``None`` when the config names its engine."""
    if config.engine.kind != "triton" or config.engine.url is not None:
        return None
    from plugin.serving.triton_server import TritonServer

    repository = config.engine.model_repository or data_dir / "triton" / "repository"
    return TritonServer(data_dir, repository)


class ServerRuntime:
    """Everything ``modelci-e start`` runs, for one config.

    Parameters:
        config: the validated service config.
        data_dir / host / port / workers: override the config's ``server.data_dir``,
            ``server.host``, ``server.port`` and ``queue.embedded_workers``.
        engine: start an embedded ``tritonserver`` for a Triton service without
            ``engine.url`` (``False``: versions stay in the store, as with no engine).
    """

    def __init__(self, config: ServiceConfig, data_dir: Path | None = None,
                 host: str | None = None, port: int | None = None, workers: int | None = None,
                 engine: bool = True):
        self.config = config
        self.data_dir = (data_dir or config.server.data_dir).resolve()
        self.host = host or config.server.host
        self.port = config.server.port if port is None else port
        self.workers = config.queue.embedded_workers if workers is None else workers
        self._embedded: EmbeddedServices | None = None
        self._worker_procs: list[ManagedProcess] = []
        self._loop: ServiceLoop | None = None
        self._annotation: AnnotationSync | None = None
        self._store: MongoStore | None = None
        self._cache: redis.Redis | None = None
        self._server: waitress.server.BaseWSGIServer | None = None
        self._engine: Any | None = None
        self._start_engine = engine

    def start(self) -> Started:
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> Started:
        config = self.config
        # First: it takes the data dir's ownership (a second server on it is refused here).
        self._embedded = EmbeddedServices(self.data_dir, cache=config.cache.url is None,
                                          store=config.store.uri is None)
        endpoints = self._embedded.start()
        os.environ[ENV_DATA_DIR] = str(self.data_dir)  # artifacts and routing tables live here
        self._engine = embedded_engine(config, self.data_dir) if self._start_engine else None
        if self._engine is not None:
            self._engine.start()
            engine = config.engine.model_copy(update={
                "url": self._engine.url, "model_repository": self._engine.repository})
            self.config = config = config.model_copy(update={"engine": engine})
            _restore_routing(config, self.data_dir)
        cache_url = config.cache.url or endpoints.cache_url
        store_uri = config.store.uri or endpoints.store_uri
        assert cache_url and store_uri
        self._store = MongoStore(store_uri, config.store.database)
        self._store.ping()
        self._cache = redis.Redis.from_url(cache_url)
        self._cache.ping()
        if config.annotator.accept_new_classes:  # classes annotations added before a restart
            known = self._store.get_service(config.name)
            if known is not None:
                self.config = config = with_classes(config, list(known.classes))
        app = create_app(config, self._store, self._cache)
        bootstrap = config.auth.bootstrap_admin_token
        admin_token = ensure_admin(self._store,
                                   bootstrap.get_secret_value() if bootstrap else None)
        settings = WorkerSettings(cache_url, store_uri, config.store.database, config.queue.name,
                                  tuple(config.queue.embedded_worker_labels))
        forget_dead_workers(self._cache)
        for index in range(1, self.workers + 1):
            proc = worker_process(settings, self.data_dir / "run", index)
            proc.start()
            self._worker_procs.append(proc)
        self._loop = ServiceLoop(config, self._store, self._cache, ctx_of(app).queue,
                                 collector=ctx_of(app).collector)
        ctx_of(app).loop = self._loop.start()
        self._annotation = self._annotation_loop(app)
        self._server = waitress.create_server(app, host=self.host, port=self.port, threads=8,
                                              clear_untrusted_proxy_headers=True)
        url = f"http://{self.host}:{self._server.effective_port}"
        if self._annotation is not None:
            ctx_of(app).annotation = self._annotation.start()
        return Started(url=url, admin_token=admin_token, cache_url=cache_url,
                       store_uri=store_uri, data_dir=self.data_dir,
                       engine_url=config.engine.url)

    def _annotation_loop(self, app: Any) -> AnnotationSync | None:
        """The service's annotation loop (not started), or None with no annotator."""
        config = self.config
        assert self._store is not None and self._cache is not None
        backend = make_backend(config, self._cache)
        if backend is None:
            return None
        webhook = None
        if config.annotator.webhook_url is not None:
            base = str(config.annotator.webhook_url).rstrip("/")
            webhook = (f"{base}/api/services/{config.name}/annotations/webhook",
                       {"Authorization": f"Bearer {webhook_token(self._store)}"})
        server, loop, store = ctx_of(app), self._loop, self._store
        return AnnotationSync(
            config, backend, server.collector, store, self._cache, webhook=webhook,
            on_new_classes=lambda classes: add_classes(classes, store=store, server=server,
                                                       loop=loop))

    @property
    def annotation(self) -> AnnotationSync | None:
        """The running service's annotation loop (None before :meth:`start`, or with no
        annotator)."""
        return self._annotation

    def serve_forever(self) -> None:
        """Serve HTTP until KeyboardInterrupt or SystemExit (the CLI maps SIGTERM to it), or
        until :meth:`stop` closes the server from another thread."""
        server = self._server
        assert server is not None
        try:
            server.run()
        except OSError as exc:
            # stop() closed the sockets under the select loop of this thread: a normal end
            if self._server is server or exc.errno != errno.EBADF:
                raise

    def stop(self) -> None:
        server, self._server = self._server, None  # first: serve_forever then knows
        if server is not None:
            server.close()
        if self._annotation is not None:
            self._annotation.stop()
            self._annotation = None
        if self._loop is not None:
            self._loop.stop()
            self._loop = None
        for proc in reversed(self._worker_procs):
            proc.stop()
        self._worker_procs.clear()
        if self._store is not None:
            self._store.close()
            self._store = None
        if self._cache is not None:
            self._cache.close()
            self._cache = None
        if self._engine is not None:
            self._engine.stop()
            self._engine = None
        if self._embedded is not None:
            self._embedded.stop()
            self._embedded = None


def _restore_routing(config: ServiceConfig, data_dir: Path) -> None:
    """Load the versions an embedded engine served before a restart (best effort: a version
    that fails to load is logged; the next deployment replaces it)."""
    from plugin.serving.base import ServingError
    from plugin.serving.factory import make_adapter, routing_path
    from plugin.serving.routing import RoutingTable

    path = routing_path(data_dir, config.name)
    if not path.exists():
        return
    try:
        make_adapter(config, RoutingTable(path)).restore()
    except (ServingError, ValueError, OSError) as exc:
        log.warning("could not reload the served versions of %s: %s", config.name, exc)
