"""The annotation loop of a server, built from the service's ``annotator`` section.

- :func:`make_backend`: ``label_studio`` -> :class:`LabelStudioBackend` at ``annotator.url``,
  ``simulated`` -> :class:`LocalBackend` in the cache, ``none`` -> None;
- :func:`webhook_token`: the API token Label Studio's webhook calls the CL server with (user
  ``label-studio``, role researcher: it may post labels, nothing more); a server start issues
  a new one and revokes the earlier ones, since only their hashes are kept;
- :func:`add_classes`: what accepting a new class from an annotation changes: the service
  record (jobs read the config there), the collector, the CL loop (which is asked for an
  update: the scenario switch makes it a new-classes one).
"""

from __future__ import annotations

import logging
from typing import Any

import redis

from cl_server.annotation.backend import AnnotationBackend
from cl_server.annotation.label_studio import LabelStudioBackend
from cl_server.annotation.local import LocalBackend
from cl_server.auth import issue_token
from cl_server.config import ServiceConfig
from cl_server.store import DuplicateRecord, Store, User, utcnow

log = logging.getLogger(__name__)

WEBHOOK_USER = "label-studio"
WEBHOOK_LABEL = "Label Studio webhook"


def make_backend(config: ServiceConfig, cache: redis.Redis) -> AnnotationBackend | None:
    """The backend ``config.annotator.kind`` names (None for ``none``)."""
    settings = config.annotator
    if settings.kind == "label_studio":
        assert settings.url is not None and settings.token is not None  # the schema checks
        return LabelStudioBackend(str(settings.url), settings.token.get_secret_value())
    if settings.kind == "simulated":
        return LocalBackend(cache)
    return None


def webhook_token(store: Store) -> str:
    """A new token for Label Studio's webhook; the earlier ones are revoked."""
    if store.get_user(WEBHOOK_USER) is None:
        try:
            store.add_user(User(name=WEBHOOK_USER, role="researcher"))
        except DuplicateRecord:
            pass
    for token in store.list_tokens(WEBHOOK_USER):
        if token.label == WEBHOOK_LABEL and token.revoked_at is None:
            store.update_token(token.id, revoked_at=utcnow())
    _, clear = issue_token(store, WEBHOOK_USER, WEBHOOK_LABEL)
    return clear


def with_classes(config: ServiceConfig, classes: list[str]) -> ServiceConfig:
    """``config`` whose model also predicts ``classes`` (appended, in order)."""
    merged = list(config.model.classes) + [c for c in classes if c not in config.model.classes]
    if merged == list(config.model.classes):
        return config
    return config.model_copy(update={"model": config.model.model_copy(
        update={"classes": merged})})


def add_classes(classes: list[str], *, store: Store, server: Any, loop: Any | None) -> None:
    """Add ``classes`` to the running service (see the module doc). ``server``: the
    :class:`~cl_server.api.context.ServerContext`; ``loop``: the CL loop or None."""
    config = with_classes(server.config, classes)
    service = store.get_service(config.name)
    if service is not None:
        sections = dict(service.config)
        sections["model"] = {**dict(sections.get("model") or {}),
                             "classes": list(config.model.classes)}
        store.update_service(config.name, classes=list(config.model.classes), config=sections)
    server.config = config
    server.collector.classes.update(classes)
    server.collector.config = config
    if loop is not None:
        loop.config = config
        loop.request_manual(f"annotations named new classes: {', '.join(classes)}",
                            "annotator")
    log.warning("service %s: classes %s added from annotations", config.name,
                ", ".join(classes))
