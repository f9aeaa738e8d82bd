"""Services under continual learning, their versions and their history."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from cl_server.api.context import ctx
from cl_server.api.errors import ApiError, not_found
from cl_server.api.schemas import (
    DriftQuery,
    LineageNode,
    ListQuery,
    QueryCheck,
    RollbackIn,
    ServicePatch,
    UpdateIn,
    UpdateRequested,
)
from cl_server.api.spec import operation
from cl_server.auth import Principal
from cl_server.store import (
    Deployment,
    DriftEvent,
    Job,
    ModelVersion,
    Role,
    Service,
    Validation,
)

bp = Blueprint("services", __name__)


def _service(name: str) -> Service:
    service = ctx().store.get_service(name)
    if service is None:
        raise not_found(f"service '{name}'")
    return service


@operation(bp, "/api/services", "GET", summary="List services", role=Role.viewer,
           response=list[Service])
def list_services(principal: Principal) -> list[Service]:
    return ctx().store.list_services()


@operation(bp, "/api/services/{name}", "GET", summary="One service", role=Role.viewer,
           response=Service)
def get_service(principal: Principal, name: str) -> Service:
    return _service(name)


@operation(bp, "/api/services/{name}", "PATCH", summary="Pause or resume a service",
           role=Role.engineer, body=ServicePatch, response=Service)
def patch_service(principal: Principal, name: str, body: ServicePatch) -> Service:
    _service(name)
    updated = ctx().store.update_service(name, status=body.status)
    if updated is None:
        raise not_found(f"service '{name}'")
    return updated


@operation(bp, "/api/services/{name}/versions", "GET", summary="Model versions, oldest first",
           role=Role.viewer, response=list[ModelVersion])
def list_versions(principal: Principal, name: str) -> list[ModelVersion]:
    _service(name)
    return ctx().store.list_versions(name)


@operation(bp, "/api/services/{name}/versions/{version}", "GET", summary="One model version",
           role=Role.viewer, response=ModelVersion)
def get_version(principal: Principal, name: str, version: int) -> ModelVersion:
    found = ctx().store.get_version(name, version)
    if found is None:
        raise not_found(f"version {version} of service '{name}'")
    return found


@operation(bp, "/api/services/{name}/validations", "GET", summary="Validation reports",
           role=Role.viewer, query=ListQuery, response=list[Validation])
def list_validations(principal: Principal, name: str, query: ListQuery) -> list[Validation]:
    _service(name)
    return ctx().store.list_validations(name, limit=query.limit)


@operation(bp, "/api/services/{name}/deployments", "GET", summary="Deployment events",
           role=Role.viewer, query=ListQuery, response=list[Deployment])
def list_deployments(principal: Principal, name: str, query: ListQuery) -> list[Deployment]:
    _service(name)
    return ctx().store.list_deployments(name, limit=query.limit)


@operation(bp, "/api/services/{name}/drift", "GET", summary="Drift evaluations and alarms",
           role=Role.viewer, query=DriftQuery, response=list[DriftEvent])
def list_drift(principal: Principal, name: str, query: DriftQuery) -> list[DriftEvent]:
    _service(name)
    return ctx().store.list_drift_events(name, since=query.since, alarms_only=query.alarms_only,
                                         limit=query.limit)


@operation(bp, "/api/services/{name}/update", "POST",
           summary="Request a CL update (manual trigger)", role=Role.engineer, body=UpdateIn,
           response=UpdateRequested, status=202)
def request_update(principal: Principal, name: str, body: UpdateIn) -> UpdateRequested:
    _service(name)
    loop = ctx().loop
    if loop is not None and loop.service == name:
        loop.request_manual(body.reason, principal.user)
        return UpdateRequested(status="requested", detail=f"the CL loop decides within "
                               f"{loop.interval_s:g} s")
    job = ctx().queue.submit("cl_update", {"service": name}, service=name,
                             trigger={"kind": "manual", "reason": body.reason,
                                      "user": principal.user})
    return UpdateRequested(status="submitted", job_id=job.id, detail="queued")


@operation(bp, "/api/services/{name}/lineage", "GET",
           summary="The version tree: each version's job, trigger, data, validation, deployments",
           role=Role.viewer, response=list[LineageNode])
def lineage(principal: Principal, name: str) -> list[LineageNode]:
    _service(name)
    store = ctx().store
    validations = {v.challenger_version: v for v in store.list_validations(name, limit=1000)}
    deployments: dict[int, list[dict[str, Any]]] = {}
    for event in store.list_deployments(name, limit=1000):
        deployments.setdefault(event.version, []).append(event.model_dump(mode="json"))
    nodes = []
    for version in store.list_versions(name):
        job = store.get_job(version.job_id) if version.job_id else None
        validation = validations.get(version.version)
        nodes.append(LineageNode(
            version=version.version, parent_version=version.parent_version,
            base_version=version.base_version, status=version.status, job_id=version.job_id,
            trigger=job.trigger if job else None,
            scenario=str(version.metrics.get("scenario")) if version.metrics.get("scenario")
            else None,
            data_query=version.data_query.model_dump(mode="json") if version.data_query
            else None,
            validation_id=validation.id if validation else None,
            validation_passed=validation.passed if validation else None,
            failed_gates=[g.name for g in validation.gates if not g.passed] if validation
            else [],
            deployments=deployments.get(version.version, [])))
    return nodes


@operation(bp, "/api/services/{name}/versions/{version}/data-query/verify", "POST",
           summary="Re-run a version's data query and compare its digest", role=Role.researcher,
           response=QueryCheck)
def verify_data_query(principal: Principal, name: str, version: int) -> QueryCheck:
    from cl_server.envelope.data import verify_query

    found = ctx().store.get_version(name, version)
    if found is None:
        raise not_found(f"version {version} of service '{name}'")
    if found.data_query is None:
        raise ApiError(409, "no_data_query", f"version {version} was not trained by a job "
                       f"(it has no data query)")
    query = found.data_query
    return QueryCheck(version=version, query=query.model_dump(
        mode="json", include={"collection", "filter", "sort", "limit"}),
                      sample_count=found.data_query.sample_count,
                      digest=found.data_query.digest,
                      matches=verify_query(ctx().store, found.data_query))


@operation(bp, "/api/services/{name}/rollback", "POST",
           summary="Roll back to an earlier version", role=Role.engineer, body=RollbackIn,
           response=Deployment)
def rollback_service(principal: Principal, name: str, body: RollbackIn) -> Deployment:
    from cl_server.deploy import DeployFailed, rollback

    service = _service(name)
    try:
        return rollback(ctx().store, ctx().config, service, body.version,
                        actor=f"user:{principal.user}", notify=ctx().cache)
    except LookupError as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    except ValueError as exc:
        raise ApiError(409, "rollback_refused", str(exc)) from None
    except DeployFailed as exc:  # the engine refused: the service's state did not change
        raise ApiError(409, "engine_refused", str(exc)) from None


def _candidate(name: str, version: int) -> ModelVersion:
    found = ctx().store.get_version(name, version)
    if found is None:
        raise not_found(f"version {version} of service '{name}'")
    if found.status != "candidate" or not found.metrics.get("validation_id"):
        raise ApiError(409, "not_awaiting_approval", f"version {version} is {found.status}; "
                       f"only a validated candidate can be approved or rejected")
    validation = ctx().store.get_validation(str(found.metrics["validation_id"]))
    if validation is None or not validation.passed:
        raise ApiError(409, "not_awaiting_approval", f"version {version} did not pass "
                       f"validation")
    return found


@operation(bp, "/api/services/{name}/versions/{version}/approve", "POST",
           summary="Approve a validated challenger: a cl_promote job runs its live stages and "
                   "promotes it", role=Role.engineer, body=UpdateIn, response=Job, status=202)
def approve_version(principal: Principal, name: str, version: int, body: UpdateIn) -> Job:
    _service(name)
    _candidate(name, version)
    return ctx().queue.submit("cl_promote", {"service": name, "version": version},
                              service=name, trigger={"kind": "approval", "user": principal.user,
                                                     "reason": body.reason})


@operation(bp, "/api/services/{name}/versions/{version}/reject", "POST",
           summary="Reject a validated challenger waiting for approval", role=Role.engineer,
           body=UpdateIn, response=ModelVersion)
def reject_version(principal: Principal, name: str, version: int,
                   body: UpdateIn) -> ModelVersion:
    _service(name)
    found = _candidate(name, version)
    updated = ctx().store.update_version(name, version, status="rejected", metrics={
        **found.metrics, "rejected_by": principal.user, "rejected_because": body.reason})
    assert updated is not None
    return updated
