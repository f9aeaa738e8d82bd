"""What replicas (``modelci-e replica``) fetch: the list of published patches, each patch, and
the newest snapshot (:mod:`cl_server.patches`)."""

from __future__ import annotations

from flask import Blueprint
from pydantic import BaseModel, Field

from cl_server.api.context import ctx
from cl_server.api.errors import not_found
from cl_server.api.schemas import Strict
from cl_server.api.spec import operation
from cl_server.auth import Principal
from cl_server.patches import PatchEntry, PatchLog
from cl_server.store import Role

bp = Blueprint("replicas", __name__)


class PatchQuery(Strict):
    since: int = Field(0, ge=0, description="The last publication the replica holds (0: none).")


class SnapshotQuery(Strict):
    sequence: int | None = Field(None, ge=1, description="Default: the newest publication.")


class PatchList(BaseModel):
    service: str
    latest: PatchEntry | None = Field(description="The newest publication.")
    patches: list[PatchEntry] = Field(description="Publications after `since`, in order.")


def _log(name: str) -> PatchLog:
    from cl_server.deploy import data_dir

    if ctx().store.get_service(name) is None:
        raise not_found(f"service '{name}'")
    return PatchLog(data_dir(), name)


@operation(bp, "/api/services/{name}/patches", "GET", summary="Weight patches published for "
           "replicas after a publication", role=Role.viewer, query=PatchQuery,
           response=PatchList)
def list_patches(principal: Principal, name: str, query: PatchQuery) -> PatchList:
    log = _log(name)
    entries = log.entries()
    return PatchList(service=name, latest=entries[-1] if entries else None,
                     patches=[e for e in entries if e.sequence > query.since])


@operation(bp, "/api/services/{name}/patches/{sequence}", "GET",
           summary="One patch (binary, see plugin/replica/patch.py)", role=Role.viewer,
           response=bytes)
def get_patch(principal: Principal, name: str, sequence: int) -> bytes:
    try:
        return _log(name).patch_bytes(sequence)
    except FileNotFoundError:
        raise not_found(f"patch {sequence} of service '{name}'") from None


@operation(bp, "/api/services/{name}/snapshot", "GET",
           summary="The replicas' state after a publication (binary patch from nothing)",
           role=Role.viewer, query=SnapshotQuery, response=bytes)
def get_snapshot(principal: Principal, name: str, query: SnapshotQuery) -> bytes:
    try:
        return _log(name).snapshot_bytes(query.sequence)
    except FileNotFoundError:
        raise not_found(f"snapshot {query.sequence or 'newest'} of service '{name}'") from None
