"""What the store keeps: plain, typed records, one class per collection.

Every record is a pydantic model; the store writes ``model_dump()`` as the document and reads it
back with ``model_validate``, so the shapes here are the storage contract. Timestamps are
timezone-aware UTC, truncated to milliseconds (BSON dates carry milliseconds), so a record
compares equal after a round trip. Free-form parts (metrics, parameters, evidence) are JSON values.

Example:
    >>> job = Job(service="digits", kind="healthcheck")
    >>> job.status, len(job.id), job.created_at.tzinfo is not None
    ('queued', 32, True)
"""

from __future__ import annotations

import itertools
import time
import uuid
from datetime import UTC, datetime
from enum import IntEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue


def _utc_ms(value: datetime) -> datetime:
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


Timestamp = Annotated[datetime, AfterValidator(_utc_ms)]
"""A UTC datetime with millisecond precision (what a BSON date holds)."""


def utcnow() -> datetime:
    """Now, as a :data:`Timestamp`."""
    return _utc_ms(datetime.now(UTC))


def new_id() -> str:
    """A random 32-hex-digit record id."""
    return uuid.uuid4().hex


_SEQUENCE = itertools.count()


def sample_id(ts_ms: int) -> str:
    """A time-ordered id: 13 digits of milliseconds, 6 hex digits of this process's sequence
    (ids made in the same millisecond keep their order of arrival), 13 random hex digits.

    Example:
        >>> a, b = sample_id(1_763_800_000_000), sample_id(1_763_800_000_001)
        >>> c, d = sample_id(1_763_800_000_002), sample_id(1_763_800_000_002)
        >>> a < b < c < d, len(a), a[:13]
        (True, 32, '1763800000000')
    """
    return f"{ts_ms:013d}{next(_SEQUENCE) % 0x1000000:06x}{uuid.uuid4().hex[:13]}"


JsonObject = dict[str, JsonValue]


class Role(IntEnum):
    """API roles, each including the rights of those below it."""

    viewer = 1
    researcher = 2
    engineer = 3
    admin = 4


RoleName = Literal["viewer", "researcher", "engineer", "admin"]
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL_JOB_STATES: tuple[JobStatus, ...] = ("succeeded", "failed", "cancelled")


class Record(BaseModel):
    """Base of stored records. ``collection`` names the MongoDB collection; ``key`` its id."""

    model_config = ConfigDict(extra="ignore")
    collection: ClassVar[str]

    def document(self) -> dict[str, Any]:
        """The document as stored (``_id`` set from the record's key)."""
        doc = self.model_dump(mode="python")
        doc["_id"] = self.key
        return doc

    @property
    def key(self) -> str:
        return str(getattr(self, "id"))


class Service(Record):
    """A served model under continual learning."""

    collection: ClassVar[str] = "services"
    name: str
    engine_kind: Literal["triton", "tfserving"]
    model_name: str
    classes: list[str]
    config: JsonObject = Field(default_factory=dict, description="The service's config "
                               "sections as JSON (secrets excluded).")
    status: Literal["active", "paused"] = "active"
    champion_version: int | None = None
    created_at: Timestamp = Field(default_factory=utcnow)
    updated_at: Timestamp = Field(default_factory=utcnow)

    @property
    def key(self) -> str:
        return self.name


class DataQuery(BaseModel):
    """The exact store query that returns a job's training samples, and a digest of their ids."""

    collection: Literal["labeled_samples"] = "labeled_samples"
    filter: JsonObject = Field(default_factory=dict)
    sort: list[tuple[str, Literal[1, -1]]] = Field(default_factory=list)
    limit: int = Field(0, ge=0)
    sample_count: int = Field(0, ge=0)
    digest: str = ""


VersionStatus = Literal["candidate", "champion", "rejected", "retired", "rolled_back"]


class ModelVersion(Record):
    """One trained model of a service and where it came from."""

    collection: ClassVar[str] = "model_versions"
    service: str
    version: int = Field(0, ge=0, description="1, 2, ...; 0 asks the store for the next number.")
    parent_version: int | None = None
    base_version: int | None = None
    job_id: str | None = None
    data_query: DataQuery | None = None
    artifact_uri: str | None = None
    artifact_sha256: str | None = None
    artifact_bytes: int | None = Field(None, ge=0)
    classes: list[str] = Field(default_factory=list)
    metrics: JsonObject = Field(default_factory=dict)
    status: VersionStatus = "candidate"
    created_at: Timestamp = Field(default_factory=utcnow)

    @property
    def key(self) -> str:
        return f"{self.service}:{self.version}"


class Job(Record):
    """A unit of work on the queue (a CL update, a health check...)."""

    collection: ClassVar[str] = "jobs"
    id: str = Field(default_factory=new_id)
    service: str | None = None
    kind: str
    params: JsonObject = Field(default_factory=dict)
    trigger: JsonObject | None = None
    status: JobStatus = "queued"
    result: JsonObject | None = None
    error: str | None = None
    worker: str | None = None
    created_at: Timestamp = Field(default_factory=utcnow)
    started_at: Timestamp | None = None
    finished_at: Timestamp | None = None
    cancel_requested: bool = False
    queue: str | None = None
    """The RQ queue it went to (``modelci@gpu``: it needs a worker labelled ``gpu``)."""
    schedule: JsonObject | None = None
    """The scheduling policy's live account of the job (:mod:`cl_server.scheduling`)."""


class JobLog(Record):
    """One line of a job's log."""

    collection: ClassVar[str] = "job_logs"
    id: str = Field(default_factory=new_id)
    job_id: str
    seq: int = Field(ge=0)
    level: str = "INFO"
    message: str
    created_at: Timestamp = Field(default_factory=utcnow)


class GateResult(BaseModel):
    name: str
    value: float | None
    threshold: float | None
    passed: bool
    detail: str = ""


class Validation(Record):
    """A challenger checked against the champion, gate by gate."""

    collection: ClassVar[str] = "validations"
    id: str = Field(default_factory=new_id)
    service: str
    challenger_version: int
    champion_version: int | None
    job_id: str | None = None
    gates: list[GateResult] = Field(default_factory=list)
    passed: bool
    report: JsonObject = Field(default_factory=dict)
    created_at: Timestamp = Field(default_factory=utcnow)


class Deployment(Record):
    """A change of what the engine serves: a promotion, a rollback, a canary."""

    collection: ClassVar[str] = "deployments"
    id: str = Field(default_factory=new_id)
    service: str
    version: int
    previous_version: int | None = None
    action: Literal["deploy", "rollback", "canary", "shadow"] = "deploy"
    status: Literal["succeeded", "failed"] = "succeeded"
    bytes_shipped: int | None = Field(None, ge=0)
    detail: str = ""
    actor: str | None = None
    created_at: Timestamp = Field(default_factory=utcnow)


class DriftEvent(Record):
    """One drift evaluation of one detector; ``alarm`` marks the ones that fired."""

    collection: ClassVar[str] = "drift_events"
    id: str = Field(default_factory=new_id)
    service: str
    detector: str
    signal: Literal["inputs", "predictions", "errors"]
    statistic: float | None = None
    p_value: float | None = None
    magnitude: float = 0.0
    alarm: bool = False
    evidence: JsonObject = Field(default_factory=dict)
    created_at: Timestamp = Field(default_factory=utcnow)


class LabeledSample(Record):
    """A served input with its label, the durable copy of what jobs train on.

    The collector gives it a time-ordered ``id`` (13-digit milliseconds, then random hex), so
    that "every sample up to id X" is a store query that returns the same samples forever.
    """

    collection: ClassVar[str] = "labeled_samples"
    id: str = Field(default_factory=lambda: sample_id(int(time.time() * 1000)))
    service: str
    request_id: str
    inputs: bytes = Field(description="The input tensor, .npy-encoded (or UTF-8 text).")
    label: str
    prediction: str | None = None
    confidences: list[float] | None = None
    model_version: int | None = None
    source: Literal["feedback", "annotator", "ingest"] = "feedback"
    split: Literal["train", "holdout"] = Field(
        "train", description="Holdout samples are never trained on: validation scores on them.")
    created_at: Timestamp = Field(default_factory=utcnow)


class LabeledOutcome(BaseModel):
    """A labeled served request without its input: what the model answered and what was right
    (the rows of a prequential accuracy series)."""

    id: str
    label: str
    prediction: str | None = None
    model_version: int | None = None
    created_at: Timestamp


class User(Record):
    """A person or system using the API, with one role."""

    collection: ClassVar[str] = "users"
    name: str
    role: RoleName
    disabled: bool = False
    created_at: Timestamp = Field(default_factory=utcnow)

    @property
    def key(self) -> str:
        return self.name


class ApiToken(Record):
    """A bearer token of a user; only its SHA-256 is stored."""

    collection: ClassVar[str] = "api_tokens"
    id: str = Field(default_factory=new_id)
    user: str
    token_sha256: str
    label: str = ""
    created_at: Timestamp = Field(default_factory=utcnow)
    last_used_at: Timestamp | None = None
    revoked_at: Timestamp | None = None


RECORD_TYPES: tuple[type[Record], ...] = (
    Service, ModelVersion, Job, JobLog, Validation, Deployment, DriftEvent, LabeledSample, User,
    ApiToken)
