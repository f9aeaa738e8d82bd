"""The collector's API: served records in (batch ingest), labels in (feedback), data stats.

A batch is validated record by record: the valid records are kept and counted even when others
are rejected; the answer is then 400 with every rejected record's index, field and reason in
``error.details.rejected`` (and the counts of what was kept).
"""

from __future__ import annotations

from typing import Any

import redis
from flask import Blueprint

from cl_server.api.context import ctx
from cl_server.api.errors import ApiError, not_found
from cl_server.api.schemas import IngestIn, IngestOut, LabelsIn, LabelsOut, SampleStats
from cl_server.api.spec import operation
from cl_server.auth import Principal
from cl_server.collector.service import ServiceCollector
from cl_server.store import Role

bp = Blueprint("collect", __name__)


def _collector(name: str) -> ServiceCollector:
    collector = ctx().collector
    if collector.service != name:
        raise not_found(f"service '{name}'")
    return collector


def _partial(kind: str, total: int, outcome: dict[str, Any]) -> ApiError:
    rejected = outcome["rejected"]
    return ApiError(400, f"invalid_{kind}",
                    f"{len(rejected)} of {total} {kind} rejected (the valid ones were kept): "
                    + "; ".join(f"#{r['index']} {r['field']}: {r['message']}"
                                for r in rejected[:5]), details=outcome)


@operation(bp, "/api/services/{name}/records", "POST", summary="Ingest served records",
           role=Role.engineer, body=IngestIn, response=IngestOut)
def ingest(principal: Principal, name: str, body: IngestIn) -> IngestOut:
    outcome = _collector(name).ingest(body.records).as_dict()
    if outcome["rejected"]:
        raise _partial("records", len(body.records), outcome)
    return IngestOut.model_validate(outcome)


@operation(bp, "/api/services/{name}/labels", "POST",
           summary="Labels for served requests, by request id", role=Role.researcher,
           body=LabelsIn, response=LabelsOut)
def label(principal: Principal, name: str, body: LabelsIn) -> LabelsOut:
    collector = _collector(name)
    try:
        outcome = collector.label(body.labels).as_dict()
    except redis.RedisError as exc:
        raise ApiError(503, "cache_unavailable", f"labels cannot be joined to their requests "
                       f"while the cache is unreachable ({exc}); retry later") from None
    if outcome["rejected"]:
        raise _partial("labels", len(body.labels), outcome)
    return LabelsOut.model_validate(outcome)


@operation(bp, "/api/services/{name}/samples/stats", "GET",
           summary="Labeled samples per class and the served window", role=Role.viewer,
           response=SampleStats)
def sample_stats(principal: Principal, name: str) -> SampleStats:
    collector = _collector(name)
    try:
        counts = collector.class_counts()
        window = int(collector.cache.xlen(collector.keys["served"]))
    except redis.RedisError as exc:
        raise ApiError(503, "cache_unavailable", f"the cache is unreachable: {exc}") from None
    return SampleStats(labeled_per_class=counts, labeled_total=sum(counts.values()),
                       served_in_window=window, spooled=len(collector.writer.spool))
