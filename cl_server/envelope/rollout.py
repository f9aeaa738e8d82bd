"""From a validated challenger to the champion: approval, live stages, promotion.

After the offline gates (:mod:`evaluator.validator`) pass, :func:`roll_out` takes the
challenger through what the config asks for, each stage adding its gates to the challenger's
:class:`~cl_server.store.Validation` record (and its figures under ``report["live"]``):

1. **shadow** (``validation.shadow_requests`` > 0): the challenger is loaded beside the champion
   and the proxy mirrors every request to it; its answers are recorded, never returned. Once it
   has answered ``shadow_requests`` mirrored requests: *agreement* with the champion on those
   requests (gate ``min_shadow_agreement``), and *accuracy* of both on the ones whose labels
   have come (gate ``max_live_accuracy_drop``, judged with ``min_live_labels`` labels at least,
   waiting for them until ``stage_timeout_s``).
2. **canary** (``deployment.rollout: canary``): the proxy sends ``canary.share`` of the traffic
   to the challenger until it answered ``canary.min_requests``; its accuracy on its labeled
   requests against the champion's on the same period's (gate ``max_live_accuracy_drop``).
3. **promotion**: the staged challenger becomes the champion (a routing switch, the old one
   unloads), recorded as a :class:`~cl_server.store.Deployment`.

A stage that does not get its requests within ``stage_timeout_s`` fails its gate; any failed
gate sends all traffic back to the champion, unloads the challenger and rejects it. Live stages
need the engine (its URL and model repository in the config); without one the challenger is
promoted in the store and the log says the stages were skipped.

With ``validation.manual_approval`` the ``cl_update`` job stops before all this (outcome
``awaiting_approval``); ``POST /api/services/{name}/versions/{v}/approve`` submits a
``cl_promote`` job that runs it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, JsonValue

from cl_server.collector import kserve
from cl_server.collector.service import keys
from cl_server.config.schema import ServiceConfig
from cl_server.deploy import DeployFailed, adapter_for, change_champion, has_engine
from cl_server.queue.kinds import JobContext, KindParams, job_kind
from cl_server.store import DataQuery, GateResult, Service, Store, Validation
from plugin.serving.base import ServingError

POLL_S = 0.5


@dataclass
class StageResult:
    gates: list[GateResult]
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)


def roll_out(ctx: JobContext, config: ServiceConfig, service: Service, version: int,
             artifact: Path, validation: Validation) -> tuple[str, list[str]]:
    """Run the live stages and promote (see the module doc); returns the outcome (``deployed``,
    ``rejected``, ``deploy_failed``) and the names of the failed gates."""
    store = ctx.store
    stages = []
    if config.validation.shadow_requests > 0:
        stages.append("shadow")
    if config.deployment.rollout == "canary":
        stages.append("canary")
    staged = False
    if stages and service.champion_version is None:
        ctx.log(f"live stages ({', '.join(stages)}) skipped: the first version has no champion "
                f"to be compared with")
        stages = []
    if stages and not has_engine(config):
        ctx.log(f"live stages ({', '.join(stages)}) skipped: no engine URL and model "
                f"repository configured", "WARNING")
        stages = []
    if stages:
        adapter = adapter_for(config)
        try:
            adapter.deploy(version, artifact, promote=False)
        except (ServingError, ValueError, OSError) as exc:  # the champion is untouched
            ctx.log(f"could not stage version {version} on the engine: {exc}", "ERROR")
            return "deploy_failed", []
        staged = True
        classes = {v.version: list(v.classes) for v in store.list_versions(service.name)}
        for stage in stages:
            ctx.log(f"{stage} stage of version {version} started")
            runner = _shadow if stage == "shadow" else _canary
            try:
                result = runner(ctx, config, adapter, service.champion_version, version, classes)
            except BaseException:
                adapter.stop_challenger()  # cancelled or failed: all traffic to the champion
                raise
            _record(store, validation, stage, result)
            ctx.log(f"{stage} stage: " + ", ".join(
                f"{g.name} {'pass' if g.passed else 'FAIL'} ({g.detail})" for g in result.gates))
            if not result.passed:
                adapter.stop_challenger()
                return "rejected", [g.name for g in result.gates if not g.passed]
    ctx.check_cancelled()  # a job declared abandoned (its worker died) must not deploy
    try:
        event = change_champion(store, config, service, version, artifact,
                                actor=f"job:{ctx.job_id}", staged=staged, notify=ctx.cache)
    except DeployFailed as exc:
        ctx.log(str(exc), "ERROR")
        return "deploy_failed", []
    ctx.log(f"version {version} is the champion: {event.detail}")
    return "deployed", []


def _record(store: Store, validation: Validation, stage: str, result: StageResult) -> None:
    current = store.get_validation(validation.id) or validation
    live = dict(current.report.get("live") or {})  # type: ignore[arg-type]
    live[stage] = result.report
    store.update_validation(validation.id, gates=[*current.gates, *result.gates],
                            passed=current.passed and result.passed,
                            report={**current.report, "live": live})


# -- the stages ----------------------------------------------------------------------------------

def _shadow(ctx: JobContext, config: ServiceConfig, adapter: Any, champion: int | None,
            version: int, classes: dict[int, list[str]]) -> StageResult:
    want = config.validation.shadow_requests
    cursor = _now_id()
    adapter.start_shadow(version)
    answers: dict[str, dict[str, str | None]] = {}  # request id -> role -> predicted class
    deadline = time.monotonic() + config.validation.stage_timeout_s

    def mirrored() -> list[str]:
        return [r for r, a in answers.items() if "shadow" in a and "champion" in a]

    while len(mirrored()) < want and time.monotonic() < deadline:
        ctx.check_cancelled()
        cursor = _read(ctx, config, cursor, answers, classes, version, champion)
    adapter.stop_shadow()
    ids = mirrored()[:want]
    if len(ids) < want:
        return StageResult([GateResult(
            name="shadow_requests", value=float(len(ids)), threshold=float(want), passed=False,
            detail=f"only {len(ids)} of {want} mirrored requests answered in "
                   f"{config.validation.stage_timeout_s:g} s")],
            {"requests": len(ids)})
    agreement = float(np.mean([answers[r]["shadow"] == answers[r]["champion"] for r in ids]))
    gates = [GateResult(name="min_shadow_agreement", value=round(agreement, 6),
                        threshold=config.validation.gates.min_shadow_agreement,
                        passed=agreement >= config.validation.gates.min_shadow_agreement,
                        detail=f"same answer as the champion on {agreement:.1%} of {len(ids)} "
                               f"mirrored requests")]
    labels = _wait_labels(ctx, config, ids, deadline)
    challenger = _accuracy({r: answers[r]["shadow"] for r in ids}, labels)
    reference = _accuracy({r: answers[r]["champion"] for r in ids}, labels)
    gates.append(_accuracy_gate(config, challenger, reference, len(labels), "the same mirrored "
                                "requests"))
    return StageResult(gates, {"requests": len(ids), "agreement": agreement,
                               "labeled": len(labels), "challenger_accuracy": challenger,
                               "champion_accuracy": reference})


def _canary(ctx: JobContext, config: ServiceConfig, adapter: Any, champion: int | None,
            version: int, classes: dict[int, list[str]]) -> StageResult:
    canary = config.deployment.canary
    cursor = _now_id()
    adapter.start_canary(version, canary.share)
    answers: dict[str, dict[str, str | None]] = {}
    deadline = time.monotonic() + config.validation.stage_timeout_s

    def served(role: str) -> list[str]:
        return [r for r, a in answers.items() if role in a]

    while len(served("canary")) < canary.min_requests and time.monotonic() < deadline:
        ctx.check_cancelled()
        cursor = _read(ctx, config, cursor, answers, classes, version, champion)
    on_canary, on_champion = served("canary"), served("champion")
    if len(on_canary) < canary.min_requests:
        return StageResult([GateResult(
            name="canary_requests", value=float(len(on_canary)),
            threshold=float(canary.min_requests), passed=False,
            detail=f"only {len(on_canary)} of {canary.min_requests} requests answered by the "
                   f"canary in {config.validation.stage_timeout_s:g} s")],
            {"requests": len(on_canary)})
    labels = _wait_labels(ctx, config, on_canary, deadline)
    champion_labels = _labels_of(ctx, config, on_champion)
    challenger = _accuracy({r: answers[r]["canary"] for r in on_canary}, labels)
    reference = _accuracy({r: answers[r]["champion"] for r in on_champion}, champion_labels)
    gate = _accuracy_gate(config, challenger, reference,
                          min(len(labels), len(champion_labels)),
                          "the champion's requests of the same period")
    return StageResult([gate], {"share": canary.share, "requests": len(on_canary),
                                "champion_requests": len(on_champion),
                                "labeled": len(labels), "champion_labeled": len(champion_labels),
                                "challenger_accuracy": challenger,
                                "champion_accuracy": reference})


# -- reading the served stream and the labels -----------------------------------------------------

def _now_id() -> str:
    return f"{int(time.time() * 1000)}-0"


def _read(ctx: JobContext, config: ServiceConfig, cursor: str,
          answers: dict[str, dict[str, str | None]], classes: dict[int, list[str]],
          version: int, champion: int | None) -> str:
    """Read new served records after ``cursor`` into ``answers``; returns the new cursor."""
    found = ctx.cache.xread({keys(config.name)["served"]: cursor}, count=1000,
                            block=int(POLL_S * 1000))
    if not found:
        return cursor
    entries = found[0][1]
    for _, fields in entries:
        role = fields.get(b"role", b"").decode()
        served_by = int(fields.get(b"version", b"0") or 0)
        expected = {"shadow": version, "canary": version, "champion": champion}
        if role not in expected or served_by != expected[role]:
            continue
        request_id = fields.get(b"id", b"").decode()
        answers.setdefault(request_id, {})[role] = _predicted(fields, classes.get(served_by, []))
    return entries[-1][0].decode()


def _predicted(fields: dict[bytes, bytes], classes: list[str]) -> str | None:
    if fields.get(b"prediction"):
        return fields[b"prediction"].decode()
    try:
        tensors = kserve.unpack(fields.get(b"outputs") or b"")
        scores = np.asarray(next(iter(tensors.values())), dtype=np.float64).reshape(-1)
    except (kserve.BodyError, StopIteration, ValueError):
        return None
    index = int(scores.argmax()) if scores.size else -1
    return classes[index] if 0 <= index < len(classes) and scores.size == len(classes) else None


def _labels_of(ctx: JobContext, config: ServiceConfig, request_ids: list[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for start in range(0, len(request_ids), 500):
        for sample in ctx.store.run_data_query(DataQuery(filter={
                "service": config.name, "request_id": {"$in": request_ids[start:start + 500]}})):
            labels[sample.request_id] = sample.label
    return labels


def _wait_labels(ctx: JobContext, config: ServiceConfig, request_ids: list[str],
                 deadline: float) -> dict[str, str]:
    """Labels of ``request_ids``, waiting (until ``deadline``) for ``min_live_labels``."""
    need = min(config.validation.min_live_labels, len(request_ids))
    labels = _labels_of(ctx, config, request_ids)
    while len(labels) < need and time.monotonic() < deadline:
        ctx.check_cancelled()
        time.sleep(POLL_S)
        labels = _labels_of(ctx, config, request_ids)
    return labels


def _accuracy(predicted: dict[str, str | None], labels: dict[str, str]) -> float | None:
    scored = [predicted[r] == label for r, label in labels.items() if r in predicted]
    return float(np.mean(scored)) if scored else None


def _accuracy_gate(config: ServiceConfig, challenger: float | None, reference: float | None,
                   labeled: int, against: str) -> GateResult:
    limit = config.validation.gates.max_live_accuracy_drop
    if challenger is None or reference is None or labeled < config.validation.min_live_labels:
        return GateResult(name="max_live_accuracy_drop", value=None, threshold=limit,
                          passed=True, detail=f"not evaluated: {labeled} labeled live requests, "
                          f"{config.validation.min_live_labels} needed")
    drop = reference - challenger
    return GateResult(name="max_live_accuracy_drop", value=round(drop, 6), threshold=limit,
                      passed=drop <= limit,
                      detail=f"challenger {challenger:.1%} vs champion {reference:.1%} on "
                             f"{labeled} labeled live requests ({against})")


# -- approval ------------------------------------------------------------------------------------

class PromoteParams(KindParams):
    service: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")
    version: int = Field(ge=1, description="An approved challenger (status candidate, "
                         "validation passed).")


@job_kind("cl_promote", PromoteParams,
          "Take an approved challenger through the configured live stages (shadow, canary) "
          "and make it the champion.", exclusive=True)
def cl_promote(ctx: JobContext, params: PromoteParams) -> dict[str, JsonValue]:
    from cl_server.envelope.job import load_version, service_config, service_of

    store = ctx.store
    service = service_of(store, params.service)
    record = store.get_version(service.name, params.version)
    if record is None:
        raise ValueError(f"version {params.version} of '{service.name}' not found")
    if record.status != "candidate":
        raise ValueError(f"version {params.version} is {record.status}, not an approvable "
                         f"candidate")
    validation_id = record.metrics.get("validation_id")
    validation = store.get_validation(str(validation_id)) if validation_id else None
    if validation is None or not validation.passed:
        raise ValueError(f"version {params.version} has no passed validation")
    load_version(record)  # the artifact must still match its sha256
    config = service_config(service)
    outcome, failed = roll_out(ctx, config, service, params.version,
                               Path(record.artifact_uri or ""), validation)
    status = {"deployed": "champion", "rejected": "rejected"}.get(outcome, "candidate")
    store.update_version(service.name, params.version, status=status)
    return {"version": params.version, "outcome": outcome, "failed_gates": list(failed),
            "validation_id": validation.id}
