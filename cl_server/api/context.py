"""What request handlers reach through ``current_app``: config, store, cache, queue, engine probe,
collector."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
from flask import current_app

from cl_server.collector.service import ServiceCollector
from cl_server.config import ServiceConfig
from cl_server.engine_probe import EngineProbe
from cl_server.queue import JobQueue
from cl_server.store import Store


@dataclass
class ServerContext:
    config: ServiceConfig
    store: Store
    cache: redis.Redis
    queue: JobQueue
    engine: EngineProbe
    collector: ServiceCollector
    loop: Any = None  # the ServiceLoop when the server runs one (ServerRuntime does)
    annotation: Any = None  # the AnnotationSync when the config names an annotator


def ctx() -> ServerContext:
    """The server context of the current app."""
    return current_app.extensions["modelci"]
