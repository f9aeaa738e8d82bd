"""Request and response bodies of the API that are not store records themselves."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, StringConstraints

from cl_server.queue import KINDS
from cl_server.store import ApiToken
from cl_server.store.entities import JobStatus, RoleName


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ComponentHealth(BaseModel):
    ok: bool
    latency_ms: float | None = None
    detail: str = ""


class HealthReport(BaseModel):
    status: Literal["ok", "degraded", "down"] = Field(
        description="ok: all reachable; degraded: no worker or the serving engine unreachable; "
                    "down: the store or the cache unreachable (HTTP 503).")
    components: dict[str, ComponentHealth]


class WhoAmI(BaseModel):
    user: str
    role: RoleName


UserName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.@-]{0,62}$")]


class UserIn(Strict):
    name: UserName
    role: RoleName


class TokenIn(Strict):
    user: UserName | None = Field(None, description="Whose token (admins only); default: yours.")
    label: Annotated[str, StringConstraints(max_length=100)] = ""


class TokenOut(BaseModel):
    id: str
    user: str
    label: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, token: ApiToken) -> TokenOut:
        return cls.model_validate(token.model_dump())


class TokenCreated(BaseModel):
    token: str = Field(description="The bearer token. Shown only in this response.")
    record: TokenOut


class ServicePatch(Strict):
    status: Literal["active", "paused"]


def _one_of_kinds(schema: dict[str, Any]) -> None:
    """Document the body as one alternative per registered job kind, each with its parameters.

    Built when the document is generated, so kinds registered by later modules appear too.
    """
    alternatives = []
    for name in sorted(KINDS):
        params = KINDS[name].params.model_json_schema()
        if "$defs" in params:
            raise ValueError(f"job kind '{name}': parameters must be flat to be documented")
        params.pop("title", None)
        alternatives.append({
            "type": "object", "additionalProperties": False,
            # A kind with required parameters needs the params object itself.
            "required": ["kind", "params"] if params.get("required") else ["kind"],
            "properties": {"kind": {"const": name},
                           "service": schema["properties"]["service"],
                           "params": params}})
    schema.clear()
    schema.update({"title": "JobIn", "oneOf": alternatives})


class JobIn(Strict):
    """A job to submit: its kind, the service it concerns, the kind's parameters."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_one_of_kinds)
    kind: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        description="A registered job kind (GET /api/job-kinds).")
    service: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")] | None = None
    params: dict[str, JsonValue] = Field(default_factory=dict)


class JobListQuery(Strict):
    service: str | None = None
    status: JobStatus | None = None
    limit: int = Field(100, ge=1, le=500)


class LogQuery(Strict):
    after: int = Field(-1, ge=-1, description="Return lines with seq > after.")
    limit: int = Field(1000, ge=1, le=5000)


class ListQuery(Strict):
    limit: int = Field(100, ge=1, le=1000)


class TimelineQuery(Strict):
    minutes: int = Field(60, ge=1, le=10_080, description="How far back (at most a week).")


class DriftQuery(Strict):
    since: datetime | None = None
    alarms_only: bool = False
    limit: int = Field(1000, ge=1, le=10000)


class JobKindOut(BaseModel):
    name: str
    description: str
    params_schema: dict[str, JsonValue]


class IngestIn(Strict):
    """A batch of served records (see ``IngestRecord`` in ``cl_server.collector.service``:
    ``request_id``, ``inputs``, optional ``model_version``, ``prediction``, ``confidences``,
    ``timestamp_ms``, ``label``)."""

    records: list[Any] = Field(min_length=1, max_length=10_000)


class RecordErrorOut(BaseModel):
    index: int = Field(description="Position of the record or label in the batch.")
    field: str
    message: str


class IngestOut(BaseModel):
    accepted: int = Field(description="Records stored (in the cache, or spooled on disk while "
                          "the cache is unreachable).")
    sampled_out: int = Field(description="Valid records the sampling ratio left out.")
    spooled: int
    rejected: list[RecordErrorOut]


class LabelsIn(Strict):
    """Labels for requests served earlier: ``[{"request_id": ..., "label": ...}]``."""

    labels: list[Any] = Field(min_length=1, max_length=10_000)


class LabelsOut(BaseModel):
    labeled: int
    duplicates: int = Field(description="Labels for requests labeled before (counted once).")
    unknown_ids: list[str] = Field(description="Request ids with no served record (unknown "
                                   "or older than the retention).")
    rejected: list[RecordErrorOut]


class SampleStats(BaseModel):
    labeled_per_class: dict[str, int]
    labeled_total: int
    served_in_window: int
    spooled: int = Field(description="Served records waiting on disk for the cache.")


class UpdateIn(Strict):
    reason: str = Field("manual request", max_length=500)


class UpdateRequested(BaseModel):
    status: Literal["requested", "submitted"] = Field(
        description="requested: the CL loop decides at its next round (refused while a job "
        "runs, overrides the cooldown); submitted: queued at once (no loop running).")
    job_id: str | None = None
    detail: str


class LineageNode(BaseModel):
    """One version in the version tree, with what made it and what became of it."""

    version: int
    parent_version: int | None
    base_version: int | None
    status: str
    job_id: str | None
    trigger: dict[str, JsonValue] | None = Field(description="The job's trigger (drift, "
                                                 "volume, manual...).")
    scenario: str | None
    data_query: dict[str, JsonValue] | None
    validation_id: str | None
    validation_passed: bool | None
    failed_gates: list[str]
    deployments: list[dict[str, JsonValue]]


class QueryCheck(BaseModel):
    version: int
    query: dict[str, JsonValue] = Field(description="The store query: filter, sort, limit.")
    sample_count: int
    digest: str
    matches: bool = Field(description="The recorded query still returns exactly the samples "
                          "it returned for the job (same ids, same order).")


class RollbackIn(Strict):
    version: int = Field(ge=1, description="The version to serve again.")


class AnnotationRejection(BaseModel):
    task_id: str
    request_id: str
    label: str | None
    annotation_id: str
    reason: str
    at: str


class AnnotationBudget(BaseModel):
    per_hour: int
    per_day: int | None
    available: int = Field(description="Samples that may be sent to annotators now.")


class AnnotationStatus(BaseModel):
    """The annotation loop of a service: what it sent, what came back, what it refused."""

    backend: str = Field(description="label_studio or local (annotator.kind simulated).")
    project: str | None = Field(description="The backend's project id.")
    selection: str
    budget: AnnotationBudget
    pool: int = Field(description="Unlabeled served samples the selection chooses from.")
    outbox: int = Field(description="Selected samples waiting for the backend (it was "
                        "unreachable); delivered first at the next sync.")
    tasks: int = Field(description="Tasks created so far.")
    sent: int
    completed: int = Field(description="Completed tasks pulled (each counted once).")
    labeled: int = Field(description="Labels stored from them.")
    duplicates: int = Field(description="Requests labeled before (by another channel).")
    skipped: int = Field(description="Tasks annotated with no choice.")
    rejected: int
    unknown: int = Field(description="Requests no longer in the cache.")
    last_push_at: str | None
    last_pull_at: str | None
    last_error: str | None
    recent_rejections: list[AnnotationRejection]


class AnnotationPush(BaseModel):
    pooled: int
    selected: int
    sent: list[str]
    already_there: int
    queued: int
    error: str | None


class AnnotationPull(BaseModel):
    completed: int
    labeled: int
    duplicates: int
    skipped: int
    rejected: int
    unknown: int
    new_classes: list[str]
    error: str | None


class AnnotationSyncOut(BaseModel):
    push: AnnotationPush
    pull: AnnotationPull


class WebhookAccepted(BaseModel):
    detail: str
