"""The annotation loop's API: its status, a sync on demand, and Label Studio's webhook.

The webhook only wakes the loop (it pulls at once, with its cursor); the payload is not
trusted for labels, so a forged call can at most cause a sync.
"""

from __future__ import annotations

from dataclasses import asdict

from flask import Blueprint

from cl_server.annotation.sync import AnnotationSync
from cl_server.api.context import ctx
from cl_server.api.errors import ApiError, not_found
from cl_server.api.schemas import AnnotationStatus, AnnotationSyncOut, WebhookAccepted
from cl_server.api.spec import operation
from cl_server.auth import Principal
from cl_server.store import Role

bp = Blueprint("annotations", __name__)


def _sync(name: str) -> AnnotationSync:
    if ctx().collector.service != name:
        raise not_found(f"service '{name}'")
    sync = ctx().annotation
    if sync is None:
        raise ApiError(409, "no_annotator", f"service '{name}' has no annotation loop "
                       f"(annotator.kind is '{ctx().config.annotator.kind}')")
    return sync


@operation(bp, "/api/services/{name}/annotations", "GET",
           summary="The annotation loop: budget, tasks sent, labels pulled, rejections",
           role=Role.viewer, response=AnnotationStatus)
def annotation_status(principal: Principal, name: str) -> AnnotationStatus:
    return AnnotationStatus.model_validate(_sync(name).status())


@operation(bp, "/api/services/{name}/annotations/sync", "POST",
           summary="Sync with the annotator now: push selected samples, pull annotations",
           role=Role.engineer, response=AnnotationSyncOut)
def annotation_sync(principal: Principal, name: str) -> AnnotationSyncOut:
    push, pull = _sync(name).sync()
    return AnnotationSyncOut.model_validate({"push": asdict(push), "pull": asdict(pull)})


@operation(bp, "/api/services/{name}/annotations/webhook", "POST",
           summary="Label Studio's webhook: an annotation was made, pull now",
           role=Role.researcher, response=WebhookAccepted, status=202)
def annotation_webhook(principal: Principal, name: str) -> WebhookAccepted:
    _sync(name).wake()
    return WebhookAccepted(detail="the annotation loop pulls now")
