"""The ``cl_update`` job: snapshot the data, train a challenger, validate it, deploy or reject.

Every step leaves a record, so a version can be traced back to the job, the trigger, the exact
data and the gates that decided its fate (lineage):

1. data: :func:`cl_server.envelope.data.take_snapshot` (a reproducible pool query + digest);
2. scenario: :class:`cl_server.scenario_switch.ScenarioSwitch` from the new data's classes;
3. training: :mod:`cl_server.envelope.train` from the champion (stateful) or from scratch;
4. the challenger: a :class:`ModelVersion` (parent, base, job, data query, metrics), its
   artifact written under ``<data_dir>/artifacts/<service>/`` with its sha256;
5. validation: :class:`evaluator.validator.ServiceValidator` against the champion, stored as a
   :class:`Validation`; a failing challenger is ``rejected`` with its failed gates;
6. promotion (:mod:`cl_server.envelope.rollout`): a passing challenger waits for approval
   (``validation.manual_approval``) or goes through the configured live stages (shadow,
   canary) and is deployed through the service's serving adapter when the config names an
   engine repository (else it is promoted in the store only), recorded as a
   :class:`Deployment`; the champion changes only if every stage passed and the deploy
   succeeded.

The champion's artifact is checked against its recorded sha256 before it is loaded: a
mismatch fails the job and nothing changes.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, JsonValue

from cl_server.config.schema import ServiceConfig
from cl_server.deploy import data_dir
from cl_server.envelope.data import (
    UpdateData,
    new_sample_count,
    snapshot_of,
    take_snapshot,
    to_tensor,
)
from cl_server.envelope.rollout import roll_out
from cl_server.envelope.train import (
    Training,
    continues_from_champion,
    starting_model,
    train,
)
from cl_server.queue.kinds import JobContext, KindParams, job_kind
from cl_server.scenario_switch import ScenarioSwitch
from cl_server.scheduling.factory import job_governor
from cl_server.store import ModelVersion, Service, Store, Validation

LABEL_POLL_S = 1.0


class CLUpdateParams(KindParams):
    service: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")
    scenario: Literal["auto", "ni", "nc", "nic", "retrain"] = Field(
        "auto", description="auto: the scenario switch decides from the data.")
    drift_magnitude: float | None = Field(None, ge=0, description="From the trigger, for the "
                                          "scenario switch's retrain rule.")
    seed: int = Field(0, ge=0)
    deploy: bool = Field(True, description="Deploy a passing challenger (false: validate only).")


def service_of(store: Store, name: str) -> Service:
    """The registered service ``name`` (``ValueError`` naming it if there is none)."""
    service = store.get_service(name)
    if service is None:
        raise ValueError(f"unknown service '{name}'")
    return service


def service_config(service: Service) -> ServiceConfig:
    """The config a service was registered with, for its jobs: every section of the record
    but the annotator's, which a job never uses and whose secret the record does not keep
    (``kind: label_studio`` without its token would not validate); the job's config has none."""
    sections = {k: v for k, v in service.config.items() if k != "annotator"}
    return ServiceConfig.model_validate({"name": service.name, **sections})


def artifacts_dir(service: str) -> Path:
    return data_dir() / "artifacts" / service


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_version(version: ModelVersion) -> Any:
    """The Classifier of a stored version, after checking its artifact's sha256."""
    from model_factory.templates import Classifier

    if not version.artifact_uri:
        raise ValueError(f"version {version.version} of {version.service} has no artifact")
    path = Path(version.artifact_uri)
    if not path.is_file():
        raise ValueError(f"artifact of version {version.version} is missing: {path}")
    found = sha256_file(path)
    if found != version.artifact_sha256:
        raise ValueError(f"artifact of version {version.version} does not match its recorded "
                         f"sha256 (recorded {version.artifact_sha256}, found {found}): refused")
    return Classifier.load(path)


@job_kind("cl_update", CLUpdateParams,
          "Train a challenger on the service's new labeled data, validate it against the "
          "champion and deploy it if every gate passes.", exclusive=True)
def cl_update(ctx: JobContext, params: CLUpdateParams) -> dict[str, JsonValue]:
    from evaluator.validator import Holdout, best_passing

    store = ctx.store
    service = service_of(store, params.service)
    config = service_config(service)
    champion_record = store.get_version(service.name, service.champion_version) \
        if service.champion_version else None
    champion = load_version(champion_record) if champion_record else None

    governor = job_governor(ctx, config, champion_record.version if champion_record else None)
    governor.admit()  # the scheduling policy may hold the job (off-peak, SLO already broken)
    previous = snapshot_of(champion_record.data_query if champion_record else None)
    waiting = new_sample_count(store, service.name, previous)
    if waiting < config.cl.min_new_samples and config.cl.label_wait_s > 0:
        ctx.log(f"{waiting} new labeled training samples, {config.cl.min_new_samples} "
                f"wanted: waiting up to {config.cl.label_wait_s:g} s for labels")
        deadline = time.monotonic() + config.cl.label_wait_s
        while waiting < config.cl.min_new_samples and time.monotonic() < deadline:
            ctx.check_cancelled()
            time.sleep(LABEL_POLL_S)
            waiting = new_sample_count(store, service.name, previous)
    data = take_snapshot(store, service.name, previous, config.validation, ctx.cache)
    ctx.log(f"data: {len(data.new)} new and {len(data.history)} earlier training samples up to "
            f"{data.snapshot} ({data.from_cache} read from the cache, the rest from the store); "
            f"holdouts {len(data.recent)} recent, {len(data.historical)} historical")
    if not data.new:  # e.g. a volume rule counted labels the champion already learned from
        reason = (f"no new labeled training samples since the champion's data (snapshot "
                  f"{snapshot_of(champion_record.data_query) if champion_record else None})")
        ctx.log(f"nothing to train: {reason}", "WARNING")
        return {"version": None, "outcome": "skipped", "reason": reason}
    spec = config.model.input
    training = Training(to_tensor(data.new, spec, ctx.cache), [s.label for s in data.new],
                        to_tensor(data.history, spec, ctx.cache),
                        [s.label for s in data.history])
    scenario, reason = _scenario(config, params, champion, data, store, service.name)
    ctx.log(f"scenario {scenario}: {reason}")

    present = set(training.history_labels) | set(training.new_labels)
    classes_seen = [c for c in config.model.classes if c in present]  # in the config's order
    recent = Holdout(to_tensor(data.recent, spec, ctx.cache), [s.label for s in data.recent])
    historical = Holdout(to_tensor(data.historical, spec, ctx.cache),
                         [s.label for s in data.historical])
    strategies = [config.cl.strategy, *config.cl.challengers]
    contenders = []
    for strategy in strategies:  # several challengers compete on the same data and holdouts
        variant = config.model_copy(update={"cl": config.cl.model_copy(
            update={"strategy": strategy})})
        contenders.append(_challenger(ctx, variant, params, service, champion_record, champion,
                                      data, training, scenario, reason, classes_seen, recent,
                                      historical, governor.between_steps))
    schedule = governor.summary()
    ctx.store.update_job(ctx.job_id, schedule=schedule)
    winner = contenders[0]
    if len(contenders) > 1:
        best = best_passing([(str(c.version), c.report) for c in contenders])
        winner = next((c for c in contenders if str(c.version) == best), contenders[0])
        ctx.log("challengers: " + ", ".join(
            f"v{c.version} {c.strategy} {'pass' if c.report.passed else 'FAIL'} recent "
            f"{c.metrics['recent_accuracy']:.4f}" for c in contenders) +
            (f"; version {winner.version} goes on" if best else "; none passed"))
        for loser in contenders:
            if loser is not winner:
                store.update_version(service.name, loser.version, status="rejected",
                                     **({"metrics": {**loser.metrics, "lost_to": winner.version}}
                                        if loser.report.passed and best else {}))
    version, validation = winner.version, winner.validation  # its metrics are stored already
    competed: list[JsonValue] = [
        {"version": c.version, "strategy": c.strategy, "passed": c.report.passed,
         "recent_accuracy": c.metrics["recent_accuracy"]} for c in contenders]
    if not winner.report.passed:
        store.update_version(service.name, version, status="rejected")
        return {"version": version, "outcome": "rejected",
                "failed_gates": winner.report.failed_gates, "validation_id": validation.id,
                "scenario": scenario, "challengers": competed}
    if not params.deploy:
        return {"version": version, "outcome": "validated", "validation_id": validation.id,
                "scenario": scenario, "challengers": competed}
    if config.validation.manual_approval:
        ctx.log(f"version {version} passed validation and waits for approval "
                f"(POST /api/services/{service.name}/versions/{version}/approve)")
        return {"version": version, "outcome": "awaiting_approval", "validation_id":
                validation.id, "scenario": scenario, "challengers": competed}
    outcome, failed = roll_out(ctx, config, service, version, winner.path, validation)
    status = {"deployed": "champion", "rejected": "rejected"}.get(outcome, "candidate")
    store.update_version(service.name, version, status=status)
    result: dict[str, JsonValue] = {"version": version, "outcome": outcome,
                                    "validation_id": validation.id, "scenario": scenario,
                                    "challengers": competed}
    if failed:
        result["failed_gates"] = list(failed)
    return result


@dataclass
class _Contender:
    version: int
    strategy: str
    path: Path
    validation: Validation
    report: Any
    metrics: dict[str, Any]


def _challenger(ctx: JobContext, config: ServiceConfig, params: CLUpdateParams,
                service: Service, champion_record: ModelVersion | None, champion: Any,
                data: UpdateData, training: Training, scenario: str, reason: str,
                classes_seen: list[str], recent: Any, historical: Any,
                between_steps: Callable[[], None] | None = None) -> _Contender:
    """Train, store and validate one challenger with ``config.cl.strategy``."""
    from evaluator.validator import ServiceValidator, update_transfer

    store = ctx.store
    model = starting_model(config, champion, scenario, params.seed, classes_seen)
    ctx.check_cancelled()
    continues = continues_from_champion(config, champion, scenario)
    stats = train(model, config, training, scenario, params.seed, ctx.log, ctx.check_cancelled,
                  deployed=champion.net.state_dict() if continues else None,
                  residual=_residual(champion_record) if continues else None,
                  between_steps=between_steps)
    residual = stats.pop("residual", None)
    record = store.add_version(ModelVersion(
        service=service.name, version=0,
        parent_version=champion_record.version if champion_record else None,
        base_version=(champion_record.base_version or champion_record.version)
        if champion_record and scenario != "retrain" else None,
        job_id=ctx.job_id, data_query=data.query, classes=list(model.classes),
        metrics={"scenario": scenario, "scenario_reason": reason, "strategy":
                 config.cl.strategy.name, "hyperparameters": _hyperparameters(config),
                 "train": stats,  # type: ignore[dict-item]
                 "new_samples": len(data.new), "history_samples": len(data.history),
                 "new_per_class": dict(Counter(training.new_labels)),
                 "history_per_class": dict(Counter(training.history_labels))}))
    directory = artifacts_dir(service.name)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"v{record.version}.pt"
    sha = model.export(path)
    if residual is not None:  # the next sparse job of this lineage goes on from it
        torch.save(residual, path.with_suffix(".residual.pt"))
    store.update_version(service.name, record.version, artifact_uri=str(path),
                         artifact_sha256=sha, artifact_bytes=path.stat().st_size)
    ctx.log(f"challenger version {record.version} ({config.cl.strategy.name}): {path} "
            f"(sha256 {sha[:12]}...)")
    report = ServiceValidator(config.validation).validate(model, champion, recent, historical)
    validation = store.add_validation(Validation(
        service=service.name, challenger_version=record.version,
        champion_version=champion_record.version if champion_record else None,
        job_id=ctx.job_id, gates=report.gates, passed=report.passed,
        report=_finite(report.report)))
    metrics = _finite({**record.metrics, "validation_id": validation.id,
                       "recent_accuracy": report.report["challenger"]["recent"]["accuracy"],
                       "champion_recent_accuracy": (report.report["champion"] or {}).get(
                           "recent", {}).get("accuracy"),
                       "transfer": update_transfer(report, len(model.classes))})
    ctx.log(f"validation of version {record.version}: " + ", ".join(
        f"{g.name} {'pass' if g.passed else 'FAIL'}" for g in report.gates))
    store.update_version(service.name, record.version, metrics=metrics)
    return _Contender(record.version, config.cl.strategy.name, path, validation, report, metrics)


def _residual(champion: ModelVersion | None) -> dict[str, Any] | None:
    """The sparse residual the champion's job left beside its artifact, if any."""
    if champion is None or not champion.artifact_uri:
        return None
    path = Path(champion.artifact_uri).with_suffix(".residual.pt")
    return torch.load(path, weights_only=True) if path.is_file() else None


def _hyperparameters(config: ServiceConfig) -> dict[str, JsonValue]:
    """What the challenger was trained with: the CL section's settings and the strategy's own
    parameters (as the model card shows them)."""
    cl = config.cl
    return {"epochs": cl.epochs, "batch_size": cl.batch_size, "learning_rate": cl.learning_rate,
            "mode": cl.mode, "rehearsal": cl.rehearsal.kind, "rehearsal_size": cl.rehearsal.size,
            **cl.strategy.params}


def _finite(value: Any) -> Any:
    """``value`` with NaN / infinity replaced by None (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _scenario(config: ServiceConfig, params: CLUpdateParams, champion: Any, data: UpdateData,
              store: Store, service: str) -> tuple[str, str]:
    if params.scenario != "auto":
        return params.scenario, "requested by the job's parameters"
    if champion is None:
        return "retrain", "no champion yet: the first version trains from scratch"
    updates = len({v.job_id for v in store.list_versions(service) if v.job_id}) + 1
    choice = ScenarioSwitch(config.cl.scenario).choose(
        set(champion.classes), Counter(s.label for s in data.new), params.drift_magnitude,
        updates)
    return choice.scenario, choice.reason
