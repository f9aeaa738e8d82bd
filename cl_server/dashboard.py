"""What the dashboard shows, read from the store: the services overview, a service's timeline,
update history and traffic split, and the model card of a version.

Each view is one function over the :class:`~cl_server.store.Store` (and, for the traffic split,
the routing table the serving adapter and the proxy share), returning a pydantic model that the
API serialises as it is. Nothing here writes.

The **state** of a service, in the order it is decided:

| state | when |
| --- | --- |
| ``paused`` | the service is paused: only manual requests start update jobs |
| ``updating`` | a ``cl_update`` job is queued or running |
| ``validating`` | a ``cl_promote`` job runs the live stages, or a validated challenger waits for approval |
| ``drifting`` | a drift alarm fired after the last deployment |
| ``healthy`` | none of the above |

Example:
    >>> import tempfile
    >>> from cl_server.embedded import EmbeddedServices
    >>> from cl_server.store import MongoStore, Service
    >>> with EmbeddedServices(tempfile.mkdtemp(), cache=False, store=True) as svc:
    ...     store = MongoStore(svc.endpoints.store_uri)
    ...     _ = store.upsert_service(Service(name="digits", engine_kind="triton",
    ...                                      model_name="digits", classes=["0", "1"]))
    ...     [(row.name, row.state, row.accuracy) for row in overview(store)]
    ...     store.close()
    [('digits', 'healthy', None)]
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, JsonValue

from cl_server.store import (
    Deployment,
    GateResult,
    Job,
    ModelVersion,
    Service,
    Store,
    Validation,
    utcnow,
)

UPDATE_KINDS = ("cl_update", "cl_promote")
ACCURACY_WINDOW = 200
"""Labeled served requests the overview's current accuracy is measured on."""
SPARKLINE_POINTS = 60
TIMELINE_POINTS = 120
"""At most this many accuracy buckets in a timeline."""

# What each CL strategy minimises (the model card's "loss"); the strategies' own parameters
# (lambda, temperature...) are listed beside it as hyperparameters.
LOSSES: dict[str, str] = {
    "naive": "cross-entropy on the new data",
    "ewc": "cross-entropy + EWC penalty: lambda/2 * sum_i F_i (theta_i - theta*_i)^2 "
           "(F: diagonal Fisher information)",
    "si": "cross-entropy + SI penalty: c * sum_i Omega_i (theta_i - theta*_i)^2 "
          "(Omega: path-integral importance)",
    "lwf": "cross-entropy + distillation: KL between the old and new model's "
           "temperature-softened outputs",
    "mas": "cross-entropy + MAS penalty: lambda * sum_i Omega_i (theta_i - theta*_i)^2 "
           "(Omega: output-sensitivity importance)",
    "replay": "cross-entropy on new samples mixed with rehearsal samples",
    "proactive": "cross-entropy on new samples mixed with sampled history (proactive training)",
    "full-retrain": "cross-entropy on all stored samples, from scratch",
}

ServiceState = Literal["healthy", "drifting", "updating", "validating", "paused"]


class DriftPoint(BaseModel):
    t: datetime
    magnitude: float
    alarm: bool


class LastUpdate(BaseModel):
    job_id: str
    version: int | None
    outcome: str | None
    status: str
    finished_at: datetime | None


class ServiceOverview(BaseModel):
    """One row of the services overview."""

    name: str
    description: str
    engine_kind: str
    model_name: str
    status: Literal["active", "paused"]
    state: ServiceState
    state_detail: str
    champion_version: int | None
    classes: list[str] = Field(description="The classes the champion has learned.")
    accuracy: float | None = Field(description=f"Share of the last {ACCURACY_WINDOW} labeled "
                                   f"served requests the served model answered right (0..1).")
    accuracy_count: int
    drift: list[DriftPoint] = Field(description="Recent drift evaluations (largest magnitude "
                                    "of each round), oldest first.")
    last_update: LastUpdate | None
    versions: int
    annotator_url: str | None


class AccuracyPoint(BaseModel):
    t: datetime = Field(description="Start of the bucket.")
    accuracy: float
    count: int


class DriftSample(BaseModel):
    t: datetime
    detector: str
    signal: str
    magnitude: float
    alarm: bool


class DeploymentMark(BaseModel):
    t: datetime
    version: int
    action: str
    status: str


class Timeline(BaseModel):
    """A service's accuracy, drift and deployments over a time range, oldest first."""

    accuracy: list[AccuracyPoint]
    drift: list[DriftSample]
    deployments: list[DeploymentMark]


class UpdateEntry(BaseModel):
    """One update job in a service's history."""

    job_id: str
    kind: str
    status: str
    trigger: dict[str, JsonValue] | None
    trigger_kind: str | None
    reason: str | None
    scenario: str | None
    strategy: str | None
    version: int | None
    outcome: str | None
    failed_gates: list[str]
    gates: list[GateResult]
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None


class Route(BaseModel):
    version: int
    share: float = Field(description="Share of the requests it answers (0..1); a shadow answers "
                         "none, it gets a copy of every request.")


class TrafficSplit(BaseModel):
    champion: Route | None
    canary: Route | None
    shadow: Route | None


class CardTask(BaseModel):
    scenario: str | None
    scenario_reason: str | None
    strategy: str | None
    loss: str | None
    hyperparameters: dict[str, JsonValue]
    trigger: dict[str, JsonValue] | None


class ClassAccuracy(BaseModel):
    class_: str = Field(alias="class", serialization_alias="class")
    accuracy: float | None
    champion_accuracy: float | None
    count: int

    model_config = {"populate_by_name": True}


class CardBenchmark(BaseModel):
    recent_accuracy: float | None
    champion_recent_accuracy: float | None
    acc: float | None
    bwt: float | None
    fwt: float | None
    forgetting: float | None
    per_class: list[ClassAccuracy]
    training_seconds: float | None
    model_bytes: int | None
    bytes_deployed: int | None


class ClassCounts(BaseModel):
    class_: str = Field(alias="class", serialization_alias="class")
    new: int
    rehearsal: int

    model_config = {"populate_by_name": True}


class CardData(BaseModel):
    new_total: int | None
    rehearsal_total: int | None
    per_class: list[ClassCounts]
    query: dict[str, JsonValue] | None
    sample_count: int | None
    digest: str | None


class CardValidation(BaseModel):
    id: str
    passed: bool
    champion_version: int | None
    gates: list[GateResult]


class ModelCard(BaseModel):
    """A version's model card: the CL task, benchmark, training data, validation and
    deployments (the five sections of ModelCI-e's card)."""

    service: str
    version: int
    status: str
    created_at: datetime
    classes: list[str]
    parent_version: int | None
    base_version: int | None
    job_id: str | None
    artifact_sha256: str | None
    awaiting_approval: bool
    task: CardTask
    benchmark: CardBenchmark
    data: CardData
    validation: CardValidation | None
    deployments: list[Deployment]


# -- the overview ------------------------------------------------------------------------------

def overview(store: Store) -> list[ServiceOverview]:
    """Every service's row of the overview, by name."""
    return [_overview_row(store, service) for service in store.list_services()]


def _overview_row(store: Store, service: Service) -> ServiceOverview:
    jobs = [j for j in store.list_jobs(service.name, limit=50) if j.kind in UPDATE_KINDS]
    versions = store.list_versions(service.name)
    champion = next((v for v in versions if v.version == service.champion_version), None)
    outcomes = [o for o in store.labeled_outcomes(service.name, limit=ACCURACY_WINDOW)
                if o.prediction is not None]
    events = store.list_drift_events(service.name, limit=SPARKLINE_POINTS * 8, newest=True)
    state, detail = service_state(store, service, jobs, versions)
    last = jobs[0] if jobs else None
    annotator = service.config.get("annotator") or {}
    return ServiceOverview(
        name=service.name, description=str(service.config.get("description") or ""),
        engine_kind=service.engine_kind, model_name=service.model_name, status=service.status,
        state=state, state_detail=detail, champion_version=service.champion_version,
        classes=list(champion.classes) if champion else [],
        accuracy=(sum(o.prediction == o.label for o in outcomes) / len(outcomes)
                  if outcomes else None),
        accuracy_count=len(outcomes), drift=_rounds(events)[-SPARKLINE_POINTS:],
        last_update=None if last is None else LastUpdate(
            job_id=last.id, version=_job_version(last), outcome=_outcome(last),
            status=last.status, finished_at=last.finished_at),
        versions=len(versions),
        annotator_url=(str(annotator["url"]) if isinstance(annotator, dict)
                       and annotator.get("kind") == "label_studio" and annotator.get("url")
                       else None))


def service_state(store: Store, service: Service, jobs: list[Job],
                  versions: list[ModelVersion]) -> tuple[ServiceState, str]:
    """The service's state and a line saying why (see the module doc); ``jobs``: its update
    jobs, newest first."""
    if service.status == "paused":
        return "paused", "paused: only manual requests start update jobs"
    active = next((j for j in jobs if j.status in ("queued", "running")), None)
    if active is not None:
        if active.kind == "cl_promote":
            return "validating", (f"job {active.id[:8]} runs the live stages of version "
                                  f"{active.params.get('version')}")
        return "updating", f"update job {active.id[:8]} {active.status}"
    candidates = {v.version for v in versions if v.status == "candidate"}
    waiting = [_job_version(j) for j in jobs if _outcome(j) == "awaiting_approval"
               and _job_version(j) in candidates]
    if waiting:
        return "validating", f"version {waiting[0]} passed validation and awaits approval"
    deployments = store.list_deployments(service.name, limit=1)
    since = deployments[0].created_at if deployments else None
    alarms = store.list_drift_events(service.name, since=since, alarms_only=True, limit=100)
    if alarms:
        detectors = sorted({f"{a.detector} on {a.signal}" for a in alarms})
        return "drifting", (f"{len(alarms)} drift alarm(s) since the last deployment: "
                            f"{', '.join(detectors)}")
    return "healthy", "no drift alarm since the last deployment"


def _rounds(events: list[Any]) -> list[DriftPoint]:
    """One point per evaluation round (events stored together): the largest magnitude."""
    points: dict[datetime, DriftPoint] = {}
    for event in events:
        t = event.created_at.replace(microsecond=0)
        magnitude = float(event.magnitude) if math.isfinite(event.magnitude) else 0.0
        seen = points.get(t)
        points[t] = DriftPoint(t=t, magnitude=max(magnitude, seen.magnitude if seen else 0.0),
                               alarm=event.alarm or bool(seen and seen.alarm))
    return [points[t] for t in sorted(points)]


def _job_version(job: Job) -> int | None:
    result = job.result or {}
    version = result.get("version", job.params.get("version"))
    return int(version) if isinstance(version, int | float) and not isinstance(version, bool) \
        else None


def _outcome(job: Job) -> str | None:
    if job.result and isinstance(job.result.get("outcome"), str):
        return str(job.result["outcome"])
    return {"failed": "failed", "cancelled": "cancelled"}.get(job.status)


# -- a service's page --------------------------------------------------------------------------

def timeline(store: Store, service: str, minutes: int, now: datetime | None = None) -> Timeline:
    """Accuracy (bucketed prequential accuracy of labeled served requests), drift evaluations and
    deployments of the last ``minutes``."""
    now = now or utcnow()
    since = now - timedelta(minutes=minutes)
    bucket_s = max(5.0, minutes * 60 / TIMELINE_POINTS)
    buckets: dict[int, list[bool]] = {}
    for outcome in store.labeled_outcomes(service, since=since, limit=50_000):
        if outcome.prediction is not None:
            key = int((outcome.created_at - since).total_seconds() // bucket_s)
            buckets.setdefault(key, []).append(outcome.prediction == outcome.label)
    accuracy = [AccuracyPoint(t=since + timedelta(seconds=key * bucket_s),
                              accuracy=sum(hits) / len(hits), count=len(hits))
                for key, hits in sorted(buckets.items())]
    drift = [DriftSample(t=e.created_at, detector=e.detector, signal=e.signal,
                         magnitude=float(e.magnitude) if math.isfinite(e.magnitude) else 0.0,
                         alarm=e.alarm)
             for e in store.list_drift_events(service, since=since, limit=5000, newest=True)]
    deployments = [DeploymentMark(t=d.created_at, version=d.version, action=d.action,
                                  status=d.status)
                   for d in reversed(store.list_deployments(service, limit=1000))
                   if d.created_at >= since]
    return Timeline(accuracy=accuracy, drift=drift, deployments=deployments)


def updates(store: Store, service: str, limit: int = 100) -> list[UpdateEntry]:
    """The service's update jobs, newest first, with what each made of its challenger."""
    jobs = [j for j in store.list_jobs(service, limit=limit * 2) if j.kind in UPDATE_KINDS]
    versions = {v.version: v for v in store.list_versions(service)}
    validations = {v.id: v for v in store.list_validations(service, limit=1000)}
    entries = []
    for job in jobs[:limit]:
        version = _job_version(job)
        record = versions.get(version) if version is not None else None
        result = job.result or {}
        validation = validations.get(str(result.get("validation_id")))
        if validation is None and record is not None:
            validation = validations.get(str(record.metrics.get("validation_id")))
        trigger = job.trigger or {}
        failed = result.get("failed_gates")
        entries.append(UpdateEntry(
            job_id=job.id, kind=job.kind, status=job.status, trigger=job.trigger,
            trigger_kind=str(trigger["kind"]) if trigger.get("kind") else None,
            reason=str(trigger["reason"]) if trigger.get("reason") else None,
            scenario=_text(result.get("scenario") or (record.metrics.get("scenario")
                                                      if record else None)),
            strategy=_text(record.metrics.get("strategy")) if record else None,
            version=version, outcome=_outcome(job),
            failed_gates=[str(g) for g in failed] if isinstance(failed, list) else [],
            gates=validation.gates if validation else [], error=job.error,
            created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at,
            duration_s=(job.finished_at - job.started_at).total_seconds()
            if job.started_at and job.finished_at else None))
    return entries


def traffic(store: Store, service: str, routing_file: Path | None) -> TrafficSplit:
    """Who answers the service's requests: the routing table's champion, canary and shadow, or
    the stored champion when the service has no routing table (no engine repository)."""
    from plugin.serving.routing import RoutingTable

    if routing_file is not None and routing_file.exists():
        routes = RoutingTable(routing_file).read()
        share = routes.canary_share if routes.canary is not None else 0.0
        return TrafficSplit(
            champion=None if routes.champion is None else Route(version=routes.champion,
                                                                share=1.0 - share),
            canary=None if routes.canary is None else Route(version=routes.canary, share=share),
            shadow=None if routes.shadow is None else Route(version=routes.shadow, share=0.0))
    record = store.get_service(service)
    champion = record.champion_version if record else None
    return TrafficSplit(champion=None if champion is None else Route(version=champion, share=1.0),
                        canary=None, shadow=None)


# -- the model card ----------------------------------------------------------------------------

def model_card(store: Store, version: ModelVersion) -> ModelCard:
    """The model card of ``version`` (see :class:`ModelCard`)."""
    metrics = version.metrics
    job = store.get_job(version.job_id) if version.job_id else None
    validation = (store.get_validation(str(metrics["validation_id"]))
                  if metrics.get("validation_id") else None)
    deployments = [d for d in reversed(store.list_deployments(version.service, limit=1000))
                   if d.version == version.version]
    transfer = metrics.get("transfer") if isinstance(metrics.get("transfer"), dict) else {}
    train = metrics.get("train") if isinstance(metrics.get("train"), dict) else {}
    strategy = _text(metrics.get("strategy"))
    hyper = metrics.get("hyperparameters")
    query = version.data_query
    new = _counts(metrics.get("new_per_class"))
    rehearsal = _counts(metrics.get("history_per_class"))
    shipped = [d.bytes_shipped for d in deployments
               if d.status == "succeeded" and d.bytes_shipped is not None]
    return ModelCard(
        service=version.service, version=version.version, status=version.status,
        created_at=version.created_at, classes=version.classes,
        parent_version=version.parent_version, base_version=version.base_version,
        job_id=version.job_id, artifact_sha256=version.artifact_sha256,
        awaiting_approval=(version.status == "candidate" and validation is not None
                           and validation.passed and job is not None
                           and _outcome(job) == "awaiting_approval"),
        task=CardTask(scenario=_text(metrics.get("scenario")),
                      scenario_reason=_text(metrics.get("scenario_reason")), strategy=strategy,
                      loss=LOSSES.get(strategy or ""),
                      hyperparameters=hyper if isinstance(hyper, dict) else {},
                      trigger=job.trigger if job else None),
        benchmark=CardBenchmark(
            recent_accuracy=_number(metrics.get("recent_accuracy")),
            champion_recent_accuracy=_number(metrics.get("champion_recent_accuracy")),
            acc=_number(transfer.get("acc")), bwt=_number(transfer.get("bwt")),
            fwt=_number(transfer.get("fwt")), forgetting=_number(transfer.get("forgetting")),
            per_class=_per_class(validation), training_seconds=_number(train.get("seconds")),
            model_bytes=version.artifact_bytes,
            bytes_deployed=sum(shipped) if shipped else None),
        data=CardData(
            new_total=_integer(metrics.get("new_samples")),
            rehearsal_total=_integer(metrics.get("history_samples")),
            per_class=[ClassCounts(class_=c, new=new.get(c, 0), rehearsal=rehearsal.get(c, 0))
                       for c in sorted(set(new) | set(rehearsal), key=_class_order(version))],
            query=None if query is None else query.model_dump(
                mode="json", include={"collection", "filter", "sort", "limit"}),
            sample_count=None if query is None else query.sample_count,
            digest=None if query is None else query.digest),
        validation=None if validation is None else CardValidation(
            id=validation.id, passed=validation.passed,
            champion_version=validation.champion_version, gates=validation.gates),
        deployments=deployments)


def _per_class(validation: Validation | None) -> list[ClassAccuracy]:
    """Per-class accuracy of the challenger and the champion over both holdouts together."""
    if validation is None:
        return []
    sums: dict[str, dict[str, list[float]]] = {}  # class -> side -> [right answers, samples]
    for side in ("challenger", "champion"):
        scores = validation.report.get(side)
        for holdout in ("recent", "historical"):
            per_class = ((scores or {}).get(holdout) or {}).get("per_class") or {}
            for name, stats in per_class.items():
                count, value = float(stats.get("count") or 0), stats.get("accuracy")
                if value is None or not count:
                    continue
                cell = sums.setdefault(str(name), {}).setdefault(side, [0.0, 0.0])
                cell[0] += float(value) * count
                cell[1] += count

    def mean(cell: list[float] | None) -> float | None:
        return cell[0] / cell[1] if cell else None

    return [ClassAccuracy(class_=name, accuracy=mean(sides.get("challenger")),
                          champion_accuracy=mean(sides.get("champion")),
                          count=int((sides.get("challenger") or [0.0, 0.0])[1]))
            for name, sides in sorted(sums.items())]


def _class_order(version: ModelVersion) -> Any:
    order = {name: i for i, name in enumerate(version.classes)}
    return lambda name: (order.get(name, len(order)), name)


def _counts(value: Any) -> Counter[str]:
    if not isinstance(value, dict):
        return Counter()
    return Counter({str(k): int(v) for k, v in value.items() if isinstance(v, int | float)})


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value) else None


def _integer(value: Any) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None
