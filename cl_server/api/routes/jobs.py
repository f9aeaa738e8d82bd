"""Jobs on the queue: submit, watch, read logs, cancel."""

from __future__ import annotations

from flask import Blueprint

from cl_server.api.context import ctx
from cl_server.api.errors import not_found
from cl_server.api.schemas import JobIn, JobKindOut, JobListQuery, LogQuery
from cl_server.api.spec import operation
from cl_server.auth import Principal
from cl_server.queue import KINDS
from cl_server.store import Job, JobLog, Role

bp = Blueprint("jobs", __name__)


def _job(job_id: str) -> Job:
    job = ctx().store.get_job(job_id)
    if job is None:
        raise not_found(f"job {job_id}")
    return job


@operation(bp, "/api/job-kinds", "GET", summary="Job kinds a worker can run, with parameters",
           role=Role.viewer, response=list[JobKindOut])
def list_kinds(principal: Principal) -> list[JobKindOut]:
    return [JobKindOut(name=k.name, description=k.description,
                       params_schema=k.params.model_json_schema()) for k in KINDS.values()]


@operation(bp, "/api/jobs", "GET", summary="Jobs, newest first", role=Role.viewer,
           query=JobListQuery, response=list[Job])
def list_jobs(principal: Principal, query: JobListQuery) -> list[Job]:
    return ctx().store.list_jobs(service=query.service, status=query.status, limit=query.limit)


@operation(bp, "/api/jobs", "POST", summary="Submit a job", role=Role.engineer, body=JobIn,
           response=Job, status=202)
def submit_job(principal: Principal, body: JobIn) -> Job:
    if body.service is not None and ctx().store.get_service(body.service) is None:
        raise not_found(f"service '{body.service}'")
    return ctx().queue.submit(body.kind, body.params, service=body.service,
                              trigger={"kind": "manual", "user": principal.user})


@operation(bp, "/api/jobs/{job_id}", "GET", summary="One job", role=Role.viewer, response=Job)
def get_job(principal: Principal, job_id: str) -> Job:
    return _job(job_id)


@operation(bp, "/api/jobs/{job_id}/logs", "GET", summary="A job's log lines", role=Role.viewer,
           query=LogQuery, response=list[JobLog])
def job_logs(principal: Principal, job_id: str, query: LogQuery) -> list[JobLog]:
    _job(job_id)
    return ctx().store.job_logs(job_id, after_seq=query.after, limit=query.limit)


@operation(bp, "/api/jobs/{job_id}/cancel", "POST", summary="Cancel a queued or running job",
           role=Role.engineer, response=Job)
def cancel_job(principal: Principal, job_id: str) -> Job:
    _job(job_id)
    return ctx().queue.cancel(job_id, actor=principal.user)
