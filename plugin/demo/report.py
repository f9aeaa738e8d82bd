"""The demo's figures: per phase and per update, beside a no-update baseline and a full retrain.

Every figure comes from the client's own answers (each scored before its label reached the
server: prequential accuracy), the store's records (jobs, versions, deployments, drift
alarms, the labels the annotation loop pulled back) and the annotation loop's counters:

- **no-update baseline**: the first model (version 1), asked the same requests offline;
- **full-retrain reference**: for each deployed update, a model of the same template trained
  from scratch (``REFERENCE_EPOCHS`` epochs, or the service's ``cl.epochs`` if more) on every
  label the service had taken from its annotators when the update's job started, plus the
  first model's data (texts as their MiniLM embeddings); asked offline the
  requests that update answered. Before a phase's first update the reference is the model
  serving then.
- **before**: the accuracy over the last ``2 * window`` answers of the phase before;
- **time to update**: from a phase's onset to the first deployment of a job started in it;
  **recovered**: from the onset until a sliding window of ``window`` answers is back within 2
  points of the accuracy before (the first phase has no onset);
- **bytes deployed**: the artifacts sent to the engine for the phase's deployments;
- **annotation** (:func:`annotation_table`): where the tasks went, how many were sent, how many
  labels came back.

Example (not a doctest: it needs a finished demo run)::

    report = build_report(context)
    console.print(summary_table(report))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import torch
from rich.table import Table

from cl_server.config import ServiceConfig
from cl_server.store import Job, ModelVersion, Store
from model_factory.templates import Classifier
from plugin.demo.data import DemoData
from plugin.demo.inputs import feature_shape, model_features
from plugin.demo.traffic import Answer

REFERENCE_EPOCHS = 5
RECOVERY_MARGIN = 0.02


@dataclass
class RunRecord:
    """What a demo run leaves for its report."""

    config: ServiceConfig
    data: DemoData
    answers: list[Answer]
    accepted: list[tuple[float, str, str]]   # labels pulled back: (time, request id, label)
    onsets: list[float]                      # time.time() at the start of each phase
    end: float
    store: Store
    load_version: Callable[[ModelVersion], Any]
    lineage: list[dict[str, Any]]
    window: int = 100
    seed: int = 0


def _ts(value: datetime | None) -> float:
    return value.timestamp() if value is not None else float("-inf")


def _mean(values: Sequence[bool]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def _predict(model: Any, x: np.ndarray) -> list[str]:
    if not len(x):
        return []
    labels = model.predict(model_features(x)).labels.tolist()
    return [model.classes[i] for i in labels]


def _stack(rows: Sequence[Any], like: np.ndarray) -> np.ndarray:
    """``rows`` (images, or texts for an object ``like``) as one array."""
    if like.dtype == object:
        out = np.empty(len(rows), dtype=object)
        out[:] = list(rows)
        return out
    if not rows:
        return np.zeros((0, *like.shape[1:]), dtype=np.float32)
    return np.stack(rows)


def _inputs(record: RunRecord, answers: Sequence[Answer]) -> np.ndarray:
    phases = record.data.phases
    return _stack([phases[a.phase].x[a.position] for a in answers], record.data.initial_x)


def _reference(record: RunRecord, cutoff: float) -> Classifier:
    """From scratch on the first model's data and every label pulled back before ``cutoff``."""
    phases = record.data.phases
    xs, ys = [record.data.initial_x], list(record.data.initial_y)
    rows = []
    for stamp, request_id, label in record.accepted:
        if stamp >= cutoff:
            continue
        phase, position = request_id[1:].split("-")
        rows.append(phases[int(phase)].x[int(position)])
        ys.append(label)
    if rows:
        xs.append(_stack(rows, record.data.initial_x))
    x = np.concatenate(xs)
    classes = list(dict.fromkeys(ys))
    index = {c: i for i, c in enumerate(classes)}
    cl = record.config.cl
    model = Classifier(record.config.model.template, feature_shape(x), classes,
                       params=record.config.model.template_params, seed=record.seed,
                       learning_rate=cl.learning_rate)
    model.fit(model_features(x), torch.tensor([index[c] for c in ys]),
              epochs=max(REFERENCE_EPOCHS, cl.epochs), batch_size=cl.batch_size)
    return model


def _recovered(answers: Sequence[Answer], level: float | None, onset: float, window: int,
               first_version: int) -> float | None:
    if level is None:
        return None
    for k in range(window, len(answers) + 1):
        chunk = answers[k - window:k]
        if chunk[0].version != first_version and \
                np.mean([a.correct for a in chunk]) >= level - RECOVERY_MARGIN:
            return chunk[-1].t - onset
    return None


def build_report(record: RunRecord) -> dict[str, Any]:
    """Every figure of the module doc, JSON-able."""
    store, service = record.store, record.config.name
    versions = {v.version: v for v in store.list_versions(service)}
    jobs = sorted(store.list_jobs(service=service, limit=1000), key=lambda j: j.created_at)
    deployments = sorted((d for d in store.list_deployments(service, limit=1000)
                          if d.status == "succeeded"), key=lambda d: d.created_at)
    alarms = sorted(store.list_drift_events(service, alarms_only=True, limit=10_000),
                    key=lambda e: e.created_at)
    baseline_model = record.load_version(versions[1])
    job_of = {j.id: j for j in jobs}

    references: dict[int, Classifier] = {}
    loaded: dict[int, Any] = {}

    def reference_for(version: int) -> Any:
        """The full-retrain model standing for ``version``'s time, or the model itself."""
        record_v = versions.get(version)
        job = job_of.get(record_v.job_id) if record_v and record_v.job_id else None
        if version == 1 or job is None:
            if version not in loaded:
                loaded[version] = record.load_version(versions[version])
            return loaded[version]
        if version not in references:
            references[version] = _reference(record, _ts(job.started_at or job.created_at))
        return references[version]

    answered = [a for a in record.answers if a.version]
    baseline = dict(zip(((a.phase, a.position) for a in answered),
                        _predict(baseline_model, _inputs(record, answered)), strict=True))
    reference: dict[tuple[int, int], str] = {}
    for version in sorted({a.version for a in answered}):
        mine = [a for a in answered if a.version == version]
        for a, guess in zip(mine, _predict(reference_for(version), _inputs(record, mine)),
                            strict=True):
            reference[(a.phase, a.position)] = guess

    phases = []
    bounds = [*record.onsets[1:], record.end]
    before: float | None = None
    for index, phase in enumerate(record.data.phases):
        onset, end = record.onsets[index], bounds[index]
        mine = [a for a in answered if a.phase == index]
        # Deployments of the phase's own jobs (not one that began before the phase did).
        shipped = [d for d in deployments if onset <= _ts(d.created_at) < end
                   and _ts(_created(job_of, versions.get(d.version))) >= onset]
        phase_alarms = [e for e in alarms if onset <= _ts(e.created_at) < end]
        phase_jobs = [j for j in jobs if onset <= _ts(j.created_at) < end]
        made = [v for v in versions.values() if _ts(_created(job_of, v)) >= onset
                and _ts(_created(job_of, v)) < end]
        served_first = mine[0].version if mine else 0
        keys = [(a.phase, a.position) for a in mine]
        phases.append({
            "name": phase.name, "kind": phase.kind, "description": phase.description,
            "requests": len(phase), "answered": len(mine),
            "accuracy_before": before,
            "accuracy_first_window": _mean([a.correct for a in mine[:record.window]]),
            "accuracy_last_window": _mean([a.correct for a in mine[-record.window:]]),
            "accuracy": _mean([a.correct for a in mine]),
            "no_update_baseline": _mean([baseline[k] == a.label for k, a in zip(keys, mine,
                                                                                strict=True)]),
            "no_update_baseline_last_window": _mean(
                [baseline[k] == a.label for k, a in zip(keys[-record.window:],
                                                        mine[-record.window:], strict=True)]),
            "full_retrain_reference": _mean([reference[k] == a.label
                                             for k, a in zip(keys, mine, strict=True)]),
            "drift_alarms": len(phase_alarms),
            "first_alarm_after_onset_s": _ts(phase_alarms[0].created_at) - onset
            if phase_alarms else None,
            "jobs": len(phase_jobs), "deployed": len(shipped),
            "rejected": sum(v.status == "rejected" for v in made),
            "time_to_update_s": _ts(shipped[0].created_at) - onset if shipped else None,
            "recovered_after_s": _recovered(mine, before, onset, record.window, served_first)
            if index else None,
            "bytes_deployed": sum(versions[d.version].artifact_bytes or 0 for d in shipped
                                  if d.version in versions),
            "versions_deployed": [d.version for d in shipped],
        })
        before = _mean([a.correct for a in mine[-2 * record.window:]])

    validations = {v.challenger_version: v for v in store.list_validations(service, limit=1000)}
    updates = []
    for version in sorted(versions):
        v = versions[version]
        job = job_of.get(v.job_id) if v.job_id else None
        result = (job.result or {}) if job else {}
        validation = validations.get(version)
        if result.get("version") == version:
            outcome, failed = result.get("outcome"), list(result.get("failed_gates", []))
        else:  # a competing challenger of the job that lost
            outcome = "rejected" if v.status == "rejected" else v.status
            failed = [g.name for g in validation.gates if not g.passed] if validation else []
        mine = [a for a in answered if a.version == version]
        keys = [(a.phase, a.position) for a in mine]
        updates.append({
            "version": version, "status": v.status, "classes": len(v.classes),
            "strategy": v.metrics.get("strategy"),
            "trigger": (job.trigger or {}).get("kind") if job else None,
            "scenario": v.metrics.get("scenario") or result.get("scenario"),
            "outcome": outcome, "failed_gates": failed, "lost_to": v.metrics.get("lost_to"),
            "phase": _phase_at(record.onsets, _ts(v.created_at)),
            "served": len(mine), "accuracy": _mean([a.correct for a in mine]),
            "full_retrain_reference": _mean([reference[k] == a.label
                                             for k, a in zip(keys, mine, strict=True)]),
            "no_update_baseline": _mean([baseline[k] == a.label
                                         for k, a in zip(keys, mine, strict=True)]),
            "bytes": v.artifact_bytes,
        })
    return {
        "service": service,
        "phases": phases,
        "updates": updates,
        "drift_alarms": len(alarms),
        "deployed_versions": sorted({d.version for d in deployments if d.version != 1}),
        "rejected_versions": [u["version"] for u in updates if u["status"] == "rejected"],
        "lineage": _lineage_check(record.lineage),
        "requests": {"sent": sum(len(p) for p in record.data.phases),
                     "answered": len(answered),
                     "labels_accepted": len(record.accepted)},
        "run_s": record.end - record.onsets[0],
    }


def _created(job_of: dict[str, Job], version: ModelVersion | None) -> datetime | None:
    job = job_of.get(version.job_id) if version is not None and version.job_id else None
    return job.created_at if job is not None else None


def _phase_at(onsets: list[float], t: float) -> int | None:
    found = None
    for index, onset in enumerate(onsets):
        if t >= onset:
            found = index
    return found


def _lineage_check(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each version's lineage and what it lacks: its job and trigger, its data query (with a
    digest and a sample count), its validation, its parent (all but the first job's, which had
    no champion), and a deployment for every version that served."""
    checked = []
    first_job = next((n.get("job_id") for n in nodes if n["version"] == 1), None)
    for node in nodes:
        missing = []
        if not node.get("job_id") or not node.get("trigger"):
            missing.append("job")
        query = node.get("data_query") or {}
        if not query.get("digest") or not query.get("sample_count"):
            missing.append("data_query")
        if node.get("validation_id") is None:
            missing.append("validation")
        if node.get("parent_version") is None and node.get("job_id") != first_job:
            missing.append("parent_version")
        if node.get("status") in ("deployed", "retired") and not node.get("deployments"):
            missing.append("deployments")
        checked.append({"version": node["version"], "status": node.get("status"),
                        "trigger": (node.get("trigger") or {}).get("kind"),
                        "missing": missing, "complete": not missing})
    return checked


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} s"


def _bytes(value: int | None) -> str:
    if not value:
        return "-"
    return f"{value / 1e6:.2f} MB" if value >= 1e5 else f"{value / 1e3:.1f} kB"


def summary_table(report: dict[str, Any]) -> Table:
    """Per phase: accuracy before, after the change and at its end, beside the baselines."""
    table = Table(title="ModelCI-e demo: prequential accuracy per phase", title_justify="left")
    for column, justify in (("phase", "left"), ("before", "right"),
                            ("first 100", "right"), ("last 100", "right"),
                            ("whole phase", "right"), ("no update", "right"),
                            ("full retrain", "right"), ("alarms", "right"),
                            ("deployed / rejected", "right"), ("to update", "right"),
                            ("recovered", "right"), ("bytes deployed", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for phase in report["phases"]:
        table.add_row(phase["name"], _pct(phase["accuracy_before"]),
                      _pct(phase["accuracy_first_window"]), _pct(phase["accuracy_last_window"]),
                      _pct(phase["accuracy"]), _pct(phase["no_update_baseline"]),
                      _pct(phase["full_retrain_reference"]), str(phase["drift_alarms"]),
                      f"{phase['deployed']} / {phase['rejected']}",
                      _seconds(phase["time_to_update_s"]), _seconds(phase["recovered_after_s"]),
                      _bytes(phase["bytes_deployed"]))
    return table


def updates_table(report: dict[str, Any]) -> Table:
    """Per version: what made it, what became of it, and how it served beside the baselines."""
    table = Table(title="Versions: each one's job and how it served", title_justify="left")
    for column in ("version", "trigger", "scenario", "strategy", "outcome", "why", "served",
                   "accuracy", "full retrain", "no update", "lineage"):
        table.add_column(column, justify="right" if column in (
            "version", "served", "accuracy", "full retrain", "no update") else "left")
    complete = {c["version"]: c for c in report["lineage"]}
    for update in report["updates"]:
        check = complete.get(update["version"], {"complete": False, "missing": ["record"]})
        why = ", ".join(update["failed_gates"]) or (
            f"lost to v{update['lost_to']}" if update["lost_to"] else "-")
        table.add_row(str(update["version"]), update["trigger"] or "-",
                      update["scenario"] or "-", update["strategy"] or "-",
                      update["outcome"] or update["status"], why, str(update["served"]),
                      _pct(update["accuracy"]), _pct(update["full_retrain_reference"]),
                      _pct(update["no_update_baseline"]),
                      "complete" if check["complete"] else "lacks " + ", ".join(check["missing"]))
    return table


BACKENDS = {"label_studio": "Label Studio", "local": "simulated (tasks in the cache)"}


def annotation_table(report: dict[str, Any]) -> Table:
    """The annotation loop over the run: where the tasks went, what was sent and came back."""
    table = Table(title="Annotation: the answers selected for labeling and the labels back",
                  title_justify="left")
    for column in ("annotator", "selection", "answers", "tasks sent", "labels back",
                   "rejected", "not answered"):
        table.add_column(column, justify="left" if column in ("annotator", "selection")
                         else "right")
    annotation = report["annotation"]
    where = BACKENDS.get(annotation["backend"], annotation["backend"])
    if annotation.get("url"):
        where += f" at {annotation['url']}"
    cap = annotation["max_open_tasks"]
    table.add_row(where, annotation["selection"] + (f", at most {cap} open" if cap else ""),
                  str(report["requests"]["answered"]), str(annotation["tasks_sent"]),
                  str(annotation["labels_back"]), str(annotation["rejected"]),
                  str(annotation["tasks_sent"] - annotation["answered"]))
    return table


def job_summary(jobs: list[Job]) -> dict[str, int]:
    """Jobs by status and outcome (for the live view)."""
    counts: dict[str, int] = {}
    for job in jobs:
        key = (job.result or {}).get("outcome") if job.status == "succeeded" else job.status
        key = str(key or job.status)
        counts[key] = counts.get(key, 0) + 1
    return counts
