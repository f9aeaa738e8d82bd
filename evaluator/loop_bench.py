"""``modelci-e bench loop``: the whole CL loop recovering from new classes, timed end to end.

Everything runs for real: the embedded redis-server and MongoDB-protocol store, the real
tritonserver, one RQ worker process, the request-collecting proxy (in a thread) and the CL loop
(:class:`~cl_server.loop.ServiceLoop`, every 0.5 s). The data is sklearn's 8x8 digits.

1. The first model learns classes 0-4 from ``initial`` labeled samples (a manual update job,
   deployed on Triton).
2. **Stationary**: for ``stationary_s`` seconds, requests of classes 0-4 go through the proxy
   at ``rate`` per second; each answer is scored (prequential accuracy: predicted before its
   label is known), and its label comes back ``label_delay_s`` later through the feedback path.
3. **Drift onset**: requests now mix every class (5-9 appear). The loop's detectors alarm, a
   job trains a challenger (NC: the output layer grows), the validator compares it with the
   champion and a passing one is deployed; more labels start more jobs (volume rule).
4. The run ends when the stream is exhausted or ``max_s`` after the onset.

Reported (each from the store's records or the client's own clock):

- **alarm to job enqueued**: from the moment the trigger policy could act on the alarms (the
  last alarm the job names, or, if later, the end of the job running then or of the cooldown
  after its start) to the job's record; and from the drift onset to the first alarm and to
  the job;
- **onset to deployed**: from the drift onset to the first deployment of a validated challenger
  that knows the new classes (target: < 120 s);
- **prequential accuracy** (each answer scored before its label is known): before the onset;
  after the onset per serving version, from the first deployment on, and of the last version;
  the time after the onset when a sliding window of ``window`` requests first came back within
  2 points of the pre-drift level; beside it the *no-update baseline*: the first model's
  accuracy on the same post-onset requests;
- every job: trigger, scenario, outcome, failed gates.

Example (not a doctest: it starts servers for about two minutes)::

    result = run_loop_bench(LoopBenchSettings())
    print(result["onset_to_deployed_s"], result["accuracy"])
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import redis
import requests
import torch
from sklearn.datasets import load_digits

from cl_server.api.app import service_record
from cl_server.collector.service import ServiceCollector
from cl_server.config import parse_config
from cl_server.deploy import ENV_DATA_DIR
from cl_server.embedded import EmbeddedServices
from cl_server.loop import ServiceLoop
from cl_server.queue import JobQueue, WorkerSettings
from cl_server.runtime import worker_process
from cl_server.store import Job, MongoStore
from evaluator.scratch import scratch_dir
from plugin.proxy.app import InferenceProxy
from plugin.proxy.collector import RequestCollector
from plugin.proxy.runner import ProxyThread
from plugin.serving.factory import routing_path
from plugin.serving.routing import RoutingTable
from plugin.serving.triton_server import TritonServer

SERVICE = "digits-loop"
MODEL = "digits_loop"
CONFIG = """
name: %(service)s
engine: {kind: triton, model_name: %(model)s, url: "%(url)s", model_repository: "%(repo)s"}
model: {template: mlp, template_params: {hidden: [128]}, input: {shape: [64]},
        classes: ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]}
drift:
  reference_size: 200
  detectors:
    - {kind: ks, signal: inputs, window: 100, alpha: 0.01}
    - {kind: chi2, signal: predictions, window: 100, alpha: 0.01}
triggers:
  cooldown_s: %(cooldown)s
  rules: [{kind: drift, min_detectors: 2}, {kind: volume, new_labels: %(volume)s}]
cl: {strategy: {name: %(strategy)s}, rehearsal: {kind: class_balanced, size: %(rehearsal)s},
     epochs: 20, batch_size: 32, learning_rate: 0.003,
     scenario: {retrain_every: %(retrain_every)s}}
validation: {recent_holdout: 100, historical_per_class: 20,
             gates: {min_accuracy_gain: 0.0, max_class_drop: 0.2}}
"""


@dataclass(frozen=True)
class LoopBenchSettings:
    rate: float = 20.0              # requests per second through the proxy
    label_delay_s: float = 1.0      # seconds from an answer to its label
    initial: int = 400              # labeled samples of classes 0-4 for the first model
    stationary_s: float = 15.0      # seconds of classes 0-4 traffic before the onset
    max_s: float = 120.0            # seconds after the onset at most
    window: int = 100               # requests per prequential accuracy window
    volume: int = 200               # new labels that start another update job
    cooldown_s: float = 5.0         # seconds between job starts
    strategy: str = "naive"         # cl.strategy.name
    rehearsal: int = 500            # cl.rehearsal.size (class-balanced)
    retrain_every: int = 0          # cl.scenario.retrain_every (0: never a full retrain)
    after_onset: str = "new"        # "new": classes 5-9 replace 0-4; "all": 5-9 join 0-4
    seed: int = 0


@dataclass
class Answer:
    t: float            # seconds since the onset (negative before it)
    version: int
    correct: bool


def _digits(seed: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(y))
    return (x[order] / 16.0).astype(np.float32), y[order]


def run_loop_bench(settings: LoopBenchSettings, work_dir: Path | None = None) -> dict[str, Any]:
    """Run the scenario of the module doc; returns the measured figures (JSON-able)."""
    with scratch_dir(work_dir, "modelci-loop-bench-") as root:
        return _run_loop_bench(settings, root)


def _run_loop_bench(settings: LoopBenchSettings, root: Path) -> dict[str, Any]:
    x, y = _digits(settings.seed)
    old = [i for i in range(len(y)) if y[i] < 5]
    new = [i for i in range(len(y)) if y[i] >= 5]
    initial, old_rest = old[:settings.initial], old[settings.initial:]
    stationary_n = min(len(old_rest) // 2, int(settings.rate * settings.stationary_s))
    stationary = old_rest[:stationary_n]
    drifted = new + (old_rest[stationary_n:] if settings.after_onset == "all" else [])
    np.random.default_rng(settings.seed + 1).shuffle(drifted)
    drifted = drifted[:int(settings.rate * settings.max_s)]

    services = EmbeddedServices(root / "data", cache=True, store=True)
    triton = TritonServer(root / "triton", root / "triton" / "repository")
    worker = proxy = loop = None
    os.environ[ENV_DATA_DIR] = str(root / "data")
    try:
        endpoints = services.start()
        assert endpoints.cache_url and endpoints.store_uri
        triton.start()
        config = parse_config(CONFIG % {
            "service": SERVICE, "model": MODEL, "url": triton.url, "repo": triton.repository,
            "cooldown": settings.cooldown_s, "volume": settings.volume,
            "strategy": settings.strategy, "rehearsal": settings.rehearsal,
            "retrain_every": settings.retrain_every}, env={})
        store = MongoStore(endpoints.store_uri, "bench")
        store.ensure_indexes()
        store.upsert_service(service_record(config))
        cache = redis.Redis.from_url(endpoints.cache_url)
        queue = JobQueue(store, cache, name="bench", job_timeout_s=600)
        worker = worker_process(WorkerSettings(endpoints.cache_url, endpoints.store_uri, "bench",
                                               "bench"), root / "data" / "run", 1)
        worker.start()
        collector = ServiceCollector(config, cache, store, root / "data" / "spool",
                                     seed=settings.seed)
        loop = ServiceLoop(config, store, cache, queue, collector=collector).start()
        collector.ingest([{"request_id": f"init{n}", "inputs": x[i].tolist(),
                           "label": str(y[i])} for n, i in enumerate(initial)])
        loop.request_manual("the first model", "bench")
        first = _wait(store, _first_job(store))
        if first.status != "succeeded" or (first.result or {}).get("outcome") != "deployed":
            raise RuntimeError(f"the first model was not deployed: {first.error or first.result}")
        routing = RoutingTable(routing_path(root / "data", SERVICE))
        proxy = ProxyThread(InferenceProxy(
            "triton", triton.url, MODEL, SERVICE, routing,
            RequestCollector(endpoints.cache_url, SERVICE, "triton",
                             spool_dir=root / "data" / "proxy-spool"))).start()
        traffic = _Traffic(settings, store, collector, proxy.url, x, y)
        traffic.run(stationary, phase="stationary")
        onset = time.time()
        traffic.onset = time.monotonic()
        traffic.run(drifted, phase="drifted")
        traffic.flush_labels()
        end = time.time()
        time.sleep(1.0)
        return _report(settings, store, traffic, first, onset, end, x, y, drifted,
                       loop.rounds)
    finally:
        if loop is not None:
            loop.stop()
        if proxy is not None:
            proxy.close()
        os.environ.pop(ENV_DATA_DIR, None)
        if worker is not None:
            worker.stop()
        triton.stop()
        services.stop()


def _first_job(store: MongoStore, timeout_s: float = 30.0) -> Job:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        jobs = store.list_jobs(service=SERVICE, limit=1)
        if jobs:
            return jobs[0]
        time.sleep(0.1)
    raise TimeoutError(f"the CL loop started no job in {timeout_s} s")


def _wait(store: MongoStore, job: Job, timeout_s: float = 300.0) -> Job:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        current = store.get_job(job.id)
        if current is not None and current.status in ("succeeded", "failed", "cancelled"):
            return current
        time.sleep(0.1)
    raise TimeoutError(f"job {job.id} did not finish in {timeout_s} s")


class _Traffic:
    """Paced requests through the proxy, prequential scoring, labels after a delay."""

    def __init__(self, settings: LoopBenchSettings, store: MongoStore,
                 collector: ServiceCollector, proxy_url: str, x: np.ndarray, y: np.ndarray):
        self.settings = settings
        self.store = store
        self.collector = collector
        self.url = f"{proxy_url}/v2/models/{MODEL}/infer"
        self.x, self.y = x, y
        self.session = requests.Session()
        self.answers: list[Answer] = []
        self.errors = 0
        self.onset: float | None = None
        self.labels_sent = 0
        self.labels_unknown = 0
        self._pending: deque[tuple[float, str, str, int]] = deque()
        self._classes: dict[int, list[str]] = {}
        self._lock = threading.Lock()

    def run(self, indices: list[int], phase: str) -> None:
        period = 1.0 / self.settings.rate
        start = time.monotonic()
        for n, index in enumerate(indices):
            delay = start + n * period - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._request(f"{phase}-{n}", index)
            self._labels(time.monotonic())

    def _request(self, request_id: str, index: int) -> None:
        body = {"inputs": [{"name": "INPUT__0", "shape": [1, 64], "datatype": "FP32",
                            "data": self.x[index].tolist()}],
                "outputs": [{"name": "OUTPUT__0"}]}
        try:
            answer = self.session.post(self.url, json=body, timeout=10,
                                       headers={"X-Request-Id": request_id})
        except requests.RequestException:
            self.errors += 1
            return
        now = time.monotonic()
        if answer.status_code != 200:
            self.errors += 1
            return
        payload = answer.json()
        version = int(payload.get("model_version") or 0)
        scores = np.asarray(payload["outputs"][0]["data"])
        classes = self._classes_of(version)
        predicted = classes[int(scores.argmax())] if len(scores) == len(classes) else None
        label = str(self.y[index])
        t = now - self.onset if self.onset is not None else -1.0
        self.answers.append(Answer(t, version, predicted == label))
        self._pending.append((now + self.settings.label_delay_s, request_id, label, 0))

    def _classes_of(self, version: int) -> list[str]:
        if version not in self._classes:
            record = self.store.get_version(SERVICE, version)
            self._classes[version] = list(record.classes) if record else []
        return self._classes[version]

    def _labels(self, now: float, force: bool = False) -> None:
        due = []
        while self._pending and (force or self._pending[0][0] <= now):
            due.append(self._pending.popleft())
        if not due:
            return
        result = self.collector.label([{"request_id": r, "label": lab} for _, r, lab, _ in due])
        self.labels_sent += result.labeled
        unknown = set(result.unknown_ids)
        for _, request_id, label, tries in due:  # the proxy writes records asynchronously
            if request_id in unknown:
                if tries < 20:
                    self._pending.append((now + 0.25, request_id, label, tries + 1))
                else:
                    self.labels_unknown += 1

    def flush_labels(self) -> None:
        deadline = time.monotonic() + 10
        while self._pending and time.monotonic() < deadline:
            time.sleep(0.25)
            self._labels(time.monotonic())


def _ts(value: datetime) -> float:
    return value.timestamp()


def _mean(values: list[bool]) -> float | None:
    return float(np.mean(values)) if values else None


def _by_version(answers: list[Answer]) -> dict[int, list[bool]]:
    out: dict[int, list[bool]] = {}
    for answer in answers:
        out.setdefault(answer.version, []).append(answer.correct)
    return dict(sorted(out.items()))


def _report(settings: LoopBenchSettings, store: MongoStore, traffic: _Traffic, first: Job,
            onset: float, end: float, x: np.ndarray, y: np.ndarray, drifted: list[int],
            rounds: int) -> dict[str, Any]:
    from cl_server.envelope.job import load_version

    before = [a for a in traffic.answers if a.t < 0]
    after = [a for a in traffic.answers if a.t >= 0]
    pre = float(np.mean([a.correct for a in before])) if before else float("nan")
    window = settings.window
    recovered_at = None
    for k in range(window, len(after) + 1):
        chunk = after[k - window:k]
        if np.mean([a.correct for a in chunk]) >= pre - 0.02 and chunk[0].version != 1:
            recovered_at = chunk[-1].t
            break
    final = float(np.mean([a.correct for a in after[-window:]])) if after else float("nan")
    baseline_model = load_version(store.get_version(SERVICE, 1))
    served = drifted[:len(after)]
    guesses = baseline_model.predict(torch.from_numpy(x[served])).labels.tolist()
    baseline = float(np.mean([baseline_model.classes[g] == str(c)
                              for g, c in zip(guesses, y[served], strict=True)])) \
        if served else float("nan")

    jobs = sorted((j for j in store.list_jobs(service=SERVICE, limit=1000) if j.id != first.id),
                  key=lambda j: j.created_at)
    alarms = sorted((e for e in store.list_drift_events(SERVICE, alarms_only=True,
                                                        limit=10_000)),
                    key=lambda e: e.created_at)
    alarms_after = [e for e in alarms if _ts(e.created_at) >= onset]
    drift_jobs = [j for j in jobs if (j.trigger or {}).get("kind") == "drift"]
    alarm_to_job = waited = None
    if drift_jobs and drift_jobs[0].trigger.get("drift_event_ids"):
        job = drift_jobs[0]
        linked = [e for e in alarms if e.id in job.trigger["drift_event_ids"]]
        earlier = [j for j in [first, *jobs] if j.created_at < job.created_at]
        if linked:
            # From the moment the policy could act: the last alarm, or later the end of the
            # job before it or of the cooldown after that job's start (an alarm waits for both).
            ready, waited = _ts(linked[-1].created_at), "alarm"
            if earlier:
                previous = max(earlier, key=lambda j: j.created_at)
                if previous.finished_at and _ts(previous.finished_at) > ready:
                    ready, waited = _ts(previous.finished_at), "the job before it"
                if _ts(previous.created_at) + settings.cooldown_s > ready:
                    ready, waited = _ts(previous.created_at) + settings.cooldown_s, "cooldown"
            alarm_to_job = _ts(job.created_at) - ready
    deployments = sorted((d for d in store.list_deployments(SERVICE, limit=1000)
                          if d.status == "succeeded" and _ts(d.created_at) >= onset),
                         key=lambda d: d.created_at)
    improved = None
    for deployment in deployments:
        version = store.get_version(SERVICE, deployment.version)
        if version is not None and len(version.classes) > 5 and version.job_id:
            improved = deployment
            break
    return {
        "settings": asdict(settings),
        "requests": {"stationary": len(before), "drifted": len(after), "errors": traffic.errors,
                     "labels": traffic.labels_sent, "labels_unmatched": traffic.labels_unknown},
        "drift": {"first_alarm_after_onset_s": _ts(alarms_after[0].created_at) - onset
                  if alarms_after else None,
                  "false_alarms_before_onset": len([e for e in alarms
                                                    if _ts(e.created_at) < onset]),
                  "alarm_to_job_enqueued_s": alarm_to_job, "job_waited_for": waited,
                  "onset_to_job_enqueued_s": _ts(drift_jobs[0].created_at) - onset
                  if drift_jobs else None,
                  "evaluation_rounds": rounds},
        "onset_to_deployed_s": _ts(improved.created_at) - onset if improved else None,
        "accuracy": {"pre_drift": pre, "no_update_baseline": baseline,
                     "after_first_deployment": _mean([a.correct for a in after if improved
                                                      and a.version >= improved.version]),
                     "last_version": _mean([a.correct for a in after
                                            if after and a.version == after[-1].version]),
                     "final_window": final,
                     "recovered_within_2_points_after_s": recovered_at, "window": window,
                     "by_version": {str(v): {"requests": len(c), "accuracy": _mean(c)}
                                    for v, c in _by_version(after).items()}},
        "jobs": [{"id": j.id, "trigger": (j.trigger or {}).get("kind"), "status": j.status,
                  "created_after_onset_s": round(_ts(j.created_at) - onset, 3),
                  "finished_after_onset_s": round(_ts(j.finished_at) - onset, 3)
                  if j.finished_at else None,
                  "version": (j.result or {}).get("version"),
                  "scenario": (j.result or {}).get("scenario"),
                  "outcome": (j.result or {}).get("outcome"),
                  "failed_gates": (j.result or {}).get("failed_gates", []),
                  "error": j.error} for j in jobs],
        "deployments": [{"version": d.version, "after_onset_s": round(_ts(d.created_at) - onset,
                                                                      3), "detail": d.detail}
                        for d in deployments],
        "run_s": end - onset,
        "load_average": list(os.getloadavg()),
    }


def main() -> None:  # pragma: no cover - convenience for `python -m evaluator.loop_bench`
    print(json.dumps(run_loop_bench(LoopBenchSettings()), indent=2, default=str))


if __name__ == "__main__":  # pragma: no cover
    main()
