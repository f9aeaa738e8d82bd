"""The Flask application factory of the CL server.

Example:
    >>> import tempfile, redis
    >>> from cl_server.config import parse_config
    >>> from cl_server.embedded import EmbeddedServices
    >>> from cl_server.store import MongoStore
    >>> config = parse_config("name: demo\\nengine: {kind: triton, model_name: m}\\n"
    ...                       "model: {template: mlp, input: {shape: [4]}, classes: [a, b]}")
    >>> with EmbeddedServices(tempfile.mkdtemp(), cache=True, store=True) as svc:
    ...     store = MongoStore(svc.endpoints.store_uri)
    ...     app = create_app(config, store, redis.Redis.from_url(svc.endpoints.cache_url))
    ...     app.test_client().get("/api/services").status_code
    ...     store.close()
    401
"""

from __future__ import annotations

import redis
from flask import Flask

from cl_server.api.context import ServerContext
from cl_server.api.errors import register_error_handlers
from cl_server.api.routes import (
    access,
    annotations,
    collect,
    dashboard,
    health,
    jobs,
    replicas,
    services,
    web,
)
from cl_server.collector.service import ServiceCollector
from cl_server.config import ServiceConfig
from cl_server.engine_probe import EngineProbe
from cl_server.queue import JobQueue
from cl_server.store import Service, Store


def service_record(config: ServiceConfig) -> Service:
    """The store record of the config's service (its sections as JSON, secrets excluded)."""
    sections = config.model_dump(mode="json", include={
        "description", "engine", "model", "collector", "drift", "triggers", "cl", "validation",
        "deployment", "scheduling"})
    sections["annotator"] = config.annotator.model_dump(mode="json", exclude={"token"})
    return Service(name=config.name, engine_kind=config.engine.kind,
                   model_name=config.engine.model_name, classes=list(config.model.classes),
                   config=sections)


def create_app(config: ServiceConfig, store: Store, cache: redis.Redis,
               queue: JobQueue | None = None, engine: EngineProbe | None = None) -> Flask:
    """Build the CL server app on an open store and cache; registers the config's service."""
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.server.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    store.ensure_indexes()
    store.upsert_service(service_record(config))
    app.extensions["modelci"] = ServerContext(
        config=config, store=store, cache=cache,
        queue=queue or JobQueue(store, cache, config.queue.name, config.queue.job_timeout_s,
                                placement={config.name: config.scheduling.worker_labels}),
        engine=engine or EngineProbe(config.engine),
        collector=ServiceCollector(config, cache, store, config.server.data_dir / "spool"))
    for blueprint in (health.bp, access.bp, services.bp, jobs.bp, collect.bp, dashboard.bp,
                      replicas.bp, annotations.bp, web.bp):
        app.register_blueprint(blueprint)
    register_error_handlers(app)
    return app
