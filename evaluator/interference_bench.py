"""``modelci-e bench interference``: inference latency while an update trains beside it.

One run starts everything for real: the embedded redis-server, the real tritonserver serving a
LeNet-5 on MNIST digits, and the request-collecting proxy in its own process (it publishes the
latency of its last two seconds to Redis twice a second, which the scheduling policies read).
An open-loop client sends KServe V2 binary requests through the proxy at ``rate`` requests/s
and records each latency (client side). Then:

1. **idle**: traffic only; p50 / p95 / p99 over ``idle_s`` seconds;
2. for each model size (``mlp``, ``lenet5``, ``resnet18``, the ~11M-parameter ResNet-18-like),
   ``repeats`` times:
   - one run per **policy** with traffic on: ``immediate`` (all cores, full speed),
     ``limits-only`` (slo-aware's process limits: half the cores, nice 19; never paced: what
     the limits alone do) and ``slo-aware`` (SLO p95 = ``slo_ratio`` x the p95 the job
     measures before it trains; the limits, pacing and pauses): the latency quantiles of the
     requests sent while the job trained against those of the idle traffic around it (the
     ``before_s`` seconds right before it and the ``after_s`` seconds right after it, pooled),
     client side and as the proxy measured the engine's round trip (from the served-request
     records it writes to Redis);
   - around every policy run, the job **alone** with the traffic stopped (all cores,
     ``immediate``): a run's slowdown is its training time over the mean of the two alone
     runs beside it. Both references are adjacent, on both sides, because this machine's
     speed drifts: the idle p95 of 10 s windows by 10-30% and the same job alone by up to 2x
     over minutes, so one early reference misstates every later run, and a reference on one
     side only reads a drift during the run as the job's doing;
   - ``off-peak`` with its window closed: the job waits (checked for ``offpeak_s``) and the
     latency stays at idle.

With ``repeats`` above 1, :func:`summarize` gives each (model, policy) the median of its runs'
ratios with their range, and :func:`target_check` judges the medians.

The training job is a separate process (``python -m evaluator.interference_bench job``), as a
worker's job is: the same governor, live signals and limits as the ``cl_update`` job
(:mod:`cl_server.scheduling`), around :meth:`~model_factory.templates.Classifier.fit` on
MNIST-5k digits for a fixed number of steps. A sampler records the host's CPU, the training
process's CPU and the proxy's recent p95 every quarter second (the utilization trace, plotted).

Example (not a doctest: it starts servers and trains for minutes)::

    result = run_interference_bench(InterferenceSettings(templates=("mlp",), quick=True))
    print(result["rows"])
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import psutil
import redis
import requests

from cl_server.config.schema import ModelConfig
from cl_server.embedded import EmbeddedServices
from cl_server.embedded.process import ManagedProcess
from evaluator.proxy_bench import binary_request
from evaluator.scratch import scratch_dir
from plugin.proxy.collector import served_stream
from plugin.proxy.metrics import recent_latency_key
from plugin.serving.routing import RoutingTable
from plugin.serving.triton import TritonAdapter
from plugin.serving.triton_server import TritonServer, free_port

SERVICE = "bench"
SERVED = ModelConfig(template="lenet5", input={"name": "INPUT__0", "shape": [1, 28, 28],
                                               "dtype": "float32"},
                     output_name="OUTPUT__0", classes=[str(c) for c in range(10)])
SHAPES = {"mlp": (784,), "lenet5": (1, 28, 28), "resnet18": (1, 28, 28)}
STEPS = {"mlp": 3000, "lenet5": 1800, "resnet18": 14}  # about 10 s each alone (2 cores)
QUICK_STEPS = {"mlp": 250, "lenet5": 180, "resnet18": 4}
TARGET = {"p95_ratio": 1.2, "slowdown": 2.0}
"""Under ``slo-aware``: inference p95 during the job at most 1.2x the idle p95 right before
it, the job at most 2x as long as alone."""
PAPER = {"p95_ratio_during_update": "> 3x (Faster R-CNN update beside ResNet-50 at 100 img/s)",
         "training_slowdown": "1.31x - 2.74x per epoch (no SLO)"}


@dataclass(frozen=True)
class InterferenceSettings:
    templates: tuple[str, ...] = ("mlp", "lenet5", "resnet18")
    policies: tuple[str, ...] = ("immediate", "limits-only", "slo-aware")
    rate: float = 50.0           # requests per second through the proxy
    idle_s: float = 20.0         # seconds of traffic with no job (the idle quantiles)
    before_s: float = 10.0       # seconds of idle traffic measured right before each job
    after_s: float = 10.0        # ... and right after it (the idle reference pools both)
    settle_s: float = 2.0        # seconds between two runs
    offpeak_s: float = 3.0       # seconds the off-peak job is watched waiting
    slo_ratio: float = 1.2
    repeats: int = 1             # runs of each (model, policy)
    quick: bool = False
    seed: int = 0
    steps: dict[str, int] = field(default_factory=dict)

    def steps_for(self, template: str) -> int:
        return self.steps.get(template) or (QUICK_STEPS if self.quick else STEPS)[template]


def _quantiles(latencies: list[float]) -> dict[str, float | int]:
    if not latencies:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "p99_ms": float("nan"),
                "requests": 0}
    p50, p95, p99 = np.percentile(np.array(latencies) * 1000, [50, 95, 99])
    return {"p50_ms": round(float(p50), 2), "p95_ms": round(float(p95), 2),
            "p99_ms": round(float(p99), 2), "requests": len(latencies)}


class Traffic:
    """Open-loop requests at ``rate``/s on a thread; keeps (send time, latency s, ok)."""

    def __init__(self, url: str, rate: float, body: bytes, headers: dict[str, str]):
        self.url, self.rate, self.body, self.headers = url, rate, body, headers
        self.records: list[tuple[float, float, bool]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start sending (again: the records of earlier spells are kept)."""
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    async def _run(self) -> None:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:
            async def one() -> None:
                sent = time.time()
                start = time.perf_counter()
                try:
                    async with session.post(self.url, data=self.body,
                                            headers=self.headers) as response:
                        await response.read()
                        ok = response.status == 200
                except aiohttp.ClientError:
                    ok = False
                self.records.append((sent, time.perf_counter() - start, ok))

            tasks = []
            begin, sent = time.perf_counter(), 0
            while not self._stop.is_set():
                delay = begin + sent / self.rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.ensure_future(one()))
                sent += 1
            await asyncio.gather(*tasks)

    def between(self, start: float, end: float) -> tuple[list[float], int]:
        """Latencies (s) of the requests sent in [start, end], and the failed ones."""
        inside = [r for r in list(self.records) if start <= r[0] <= end]
        return [r[1] for r in inside if r[2]], sum(not r[2] for r in inside)


class Sampler:
    """Every ``every_s``: host CPU %, the training process's CPU %, the proxy's recent p95."""

    def __init__(self, cache: redis.Redis, every_s: float = 0.25):
        self.cache, self.every_s = cache, every_s
        self.trace: list[dict[str, Any]] = []
        self.training: psutil.Process | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        psutil.cpu_percent(interval=None)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def watch(self, pid: int | None) -> None:
        self.training = psutil.Process(pid) if pid else None
        if self.training is not None:
            self.training.cpu_percent(interval=None)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            training = None
            process = self.training
            if process is not None:
                try:
                    training = process.cpu_percent(interval=None)
                except psutil.Error:
                    training = None
            p95 = self.cache.hget(recent_latency_key(SERVICE), "p95_ms")
            self.trace.append({"t": time.time(), "host_cpu": psutil.cpu_percent(interval=None),
                               "training_cpu": training,
                               "proxy_p95_ms": float(p95) if p95 else None})


def _request(seed: int) -> tuple[bytes, dict[str, str]]:
    from model_factory.scenarios.datasets import mnist_5k

    x, _ = mnist_5k()
    return binary_request(np.ascontiguousarray(x[seed % len(x)][None], dtype=np.float32))


def _run_job(cache_url: str, template: str, policy: str, steps: int, settings:
             InterferenceSettings, sampler: Sampler, extra: list[str] | None = None
             ) -> dict[str, Any]:
    argv = [sys.executable, "-m", "evaluator.interference_bench", "job", "--cache-url",
            cache_url, "--template", template, "--policy", policy, "--steps", str(steps),
            "--slo-ratio", str(settings.slo_ratio), "--seed", str(settings.seed),
            *(extra or [])]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    # its own session, as a worker's job has (the CLI starts each worker with setsid)
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env, start_new_session=True)
    sampler.watch(child.pid)
    out, err = child.communicate()
    sampler.watch(None)
    if child.returncode != 0:
        raise RuntimeError(f"the {template} job under {policy} failed: {err.strip()[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])


def run_interference_bench(settings: InterferenceSettings, work_dir: Path | None = None
                           ) -> dict[str, Any]:
    """Run the phases of the module doc; returns the figures (rows, idle, trace)."""
    with scratch_dir(work_dir, "modelci-bench-interference-") as root:
        return _run_interference_bench(settings, root)


def _run_interference_bench(settings: InterferenceSettings, root: Path
                           ) -> dict[str, Any]:
    import torch

    from model_factory.templates import Classifier

    unknown = [t for t in settings.templates if t not in SHAPES]
    if unknown:
        raise ValueError(f"unknown template(s) {', '.join(unknown)} (expected: "
                         f"{', '.join(SHAPES)})")
    if settings.repeats < 1:
        raise ValueError(f"repeats must be at least 1 (got {settings.repeats})")
    services = EmbeddedServices(root / "embedded", cache=True, store=False)
    server = TritonServer(root, root / "repository")
    proxy: ManagedProcess | None = None
    torch.manual_seed(settings.seed)
    artifact = root / "served.pt"
    Classifier("lenet5", (1, 28, 28), SERVED.classes, seed=settings.seed).export(artifact)
    services.start()
    sampler: Sampler | None = None
    traffic: Traffic | None = None
    try:
        cache_url = services.endpoints.cache_url
        assert cache_url is not None
        cache = redis.Redis.from_url(cache_url)
        server.start()
        routing = RoutingTable(root / "routing.json")
        TritonAdapter(SERVED, SERVICE, routing, url=server.url,
                      repository=server.repository).deploy(1, artifact)
        port = free_port()
        proxy_url = f"http://127.0.0.1:{port}"
        proxy = ManagedProcess(
            "proxy", [sys.executable, "-m", "plugin.cli", "proxy", "--engine", "triton",
                      "--upstream", server.url, "--model", SERVICE, "--service", SERVICE,
                      "--routing", str(routing.path), "--redis-url", cache_url, "--port",
                      str(port), "--spool-dir", str(root / "spool")],
            root / "run", lambda: requests.get(f"{proxy_url}/metrics", timeout=1).ok,
            env={**os.environ, "OMP_NUM_THREADS": "1"})
        proxy.start()
        body, headers = _request(settings.seed)
        traffic = Traffic(f"{proxy_url}/v2/models/{SERVICE}/infer", settings.rate, body,
                          headers)
        sampler = Sampler(cache)
        sampler.start()

        traffic.start()
        time.sleep(settings.settle_s)
        idle_start = time.time()
        time.sleep(settings.idle_s)
        idle_lat, idle_failed = traffic.between(idle_start, time.time())
        idle = {**_quantiles(idle_lat), "failed": idle_failed,
                "engine": _engine_quantiles(cache, idle_start, time.time())}
        rows: list[dict[str, Any]] = []
        alone_runs: dict[str, list[float]] = {t: [] for t in settings.templates}
        limits: dict[str, Any] = {}

        def alone(template: str) -> float:  # the job with no traffic, all cores
            traffic.stop()
            time.sleep(settings.settle_s)
            job = _run_job(cache_url, template, "immediate", settings.steps_for(template),
                           settings, sampler)
            alone_runs[template].append(job["train_s"])
            limits[template] = job["schedule"].get("limits")
            return float(job["train_s"])

        def traffic_on() -> None:
            if not traffic.running:
                traffic.start()
            time.sleep(settings.settle_s)

        for repeat in range(settings.repeats):
            for template in settings.templates:
                last_alone = alone(template)
                for policy in settings.policies:
                    traffic_on()
                    before = _idle_window(traffic, cache, settings.before_s)
                    job = _run_job(cache_url, template, policy, settings.steps_for(template),
                                   settings, sampler)
                    latencies, failed = traffic.between(job["fit_start"], job["fit_end"])
                    engine = _engine_quantiles(cache, job["fit_start"], job["fit_end"])
                    time.sleep(settings.settle_s)
                    after = _idle_window(traffic, cache, settings.after_s)
                    around = _pooled(before, after)
                    p95 = _quantiles(latencies)["p95_ms"]
                    next_alone = alone(template)
                    rows.append({"template": template, "policy": policy, "repeat": repeat,
                                 **_job_figures(job, (last_alone, next_alone)),
                                 **_latency_figures(latencies, failed, around),
                                 **_engine_figures(engine, around["engine"]),
                                 "idle_p95_ms": around["p95_ms"],
                                 "idle_before_p95_ms": before["p95_ms"],
                                 "idle_after_p95_ms": after["p95_ms"],
                                 "p95_ratio_before": round(p95 / before["p95_ms"], 2),
                                 "p95_ratio_first_idle": round(p95 / idle["p95_ms"], 2),
                                 "series": _rolling_p95(traffic, job["fit_start"],
                                                        job["fit_end"])})
                    last_alone = next_alone
                if repeat == 0:
                    traffic_on()
                    before = _idle_window(traffic, cache, settings.before_s)
                    job = _run_job(cache_url, template, "off-peak",
                                   settings.steps_for(template), settings, sampler,
                                   ["--window", _closed_window(), "--give-up-after-s",
                                    str(settings.offpeak_s)])
                    latencies, failed = traffic.between(job["start"], job["end"])
                    rows.append({"template": template, "policy": "off-peak (window closed)",
                                 "repeat": 0, "deferred": True, "steps": job["steps"],
                                 "schedule": job["schedule"],
                                 **_latency_figures(latencies, failed, before),
                                 **_engine_figures(
                                     _engine_quantiles(cache, job["start"], job["end"]),
                                     before["engine"]),
                                 "idle_p95_ms": before["p95_ms"],
                                 "idle_before_p95_ms": before["p95_ms"]})
        traffic.stop()
        sampler.stop()
        alone_rows = [_alone_row(template, runs, limits.get(template))
                      for template, runs in alone_runs.items()]
        rows = alone_rows + rows
        return {"settings": asdict(settings), "idle": idle, "rows": rows,
                "summary": summarize(rows), "target": target_check(rows),
                "trace": sampler.trace, "paper": PAPER,
                "load_average": list(os.getloadavg()), "cpus": os.cpu_count()}
    finally:
        if traffic is not None:
            traffic.stop()
        if sampler is not None and sampler.running:
            sampler.stop()
        if proxy is not None:
            proxy.stop()
        server.stop()
        services.stop()


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (model, policy) run beside traffic: the median of its runs' p95 ratio (client
    side and engine), p99 ratio and slowdown, with each figure's runs listed.

    Example:
        >>> summarize([{"template": "mlp", "policy": "slo-aware", "p95_ratio": r,
        ...             "p99_ratio": 1.0, "engine_p95_ratio": 1.0, "slowdown": d}
        ...            for r, d in ((1.1, 1.5), (1.4, 1.2), (1.2, 2.5))])[0]["p95_ratio"]
        1.2
    """
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        if "p95_ratio" in row and "slowdown" in row:
            groups.setdefault((row["template"], row["policy"]), []).append(row)
    summary = []
    for (template, policy), runs in groups.items():
        entry: dict[str, Any] = {"template": template, "policy": policy, "runs": len(runs)}
        for key in ("p95_ratio", "p95_ratio_before", "p99_ratio", "engine_p95_ratio",
                    "slowdown"):
            values = [r[key] for r in runs if r.get(key) is not None]
            if values:
                entry[key] = round(float(np.median(values)), 2)
                entry[f"{key}_runs"] = values
        summary.append(entry)
    return summary


def target_check(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per model, whether its ``slo-aware`` runs met :data:`TARGET` (the medians of its runs'
    ratios, see :func:`summarize`).

    Example:
        >>> target_check([{"template": "mlp", "policy": "slo-aware", "p95_ratio": 1.1,
        ...                "slowdown": 2.3}])["mlp"]["met"]
        False
    """
    checks = {}
    for entry in summarize(rows):
        if entry["policy"] == "slo-aware" and "p95_ratio" in entry:
            checks[entry["template"]] = {
                "p95_ratio": entry["p95_ratio"], "slowdown": entry["slowdown"],
                "runs": entry["runs"],
                "met": bool(entry["p95_ratio"] <= TARGET["p95_ratio"]
                            and entry["slowdown"] <= TARGET["slowdown"])}
    return checks


def _idle_window(traffic: Traffic, cache: redis.Redis, seconds: float) -> dict[str, Any]:
    """The latency quantiles of ``seconds`` of traffic from now (no job running), client side
    and (``engine``) as the proxy measured the engine; ``latencies`` and ``engine_latencies``
    (s) keep the samples for :func:`_pooled`."""
    start = time.time()
    time.sleep(seconds)
    end = time.time()
    latencies, _ = traffic.between(start, end)
    engine = _engine_latencies(cache, start, end)
    return {**_quantiles(latencies), "engine": _quantiles(engine), "latencies": latencies,
            "engine_latencies": engine}


def _pooled(*windows: dict[str, Any]) -> dict[str, Any]:
    """The quantiles of the samples of several :func:`_idle_window` results together.

    Example:
        >>> window = lambda s: {"latencies": s, "engine_latencies": s}
        >>> _pooled(window([0.001] * 9), window([0.003]))["p95_ms"]
        2.1
    """
    latencies = [x for window in windows for x in window["latencies"]]
    engine = [x for window in windows for x in window["engine_latencies"]]
    return {**_quantiles(latencies), "engine": _quantiles(engine)}


def _engine_quantiles(cache: redis.Redis, start: float, end: float) -> dict[str, float | int]:
    """Quantiles of the engine round trips the proxy measured for the requests it served in
    [start, end] (epoch s), read back from its served-request stream (shadows left out)."""
    return _quantiles(_engine_latencies(cache, start, end))


def _engine_latencies(cache: redis.Redis, start: float, end: float) -> list[float]:
    """The engine round trips (s) of :func:`_engine_quantiles`."""
    latencies = []
    lower = f"{int((start - 5) * 1000)}-0"  # entry ids are their write times, just after
    upper = f"{int((end + 30) * 1000)}-0"   # the request (the collector writes in batches)
    cursor = lower
    while True:
        page = cache.xrange(served_stream(SERVICE), min=cursor, max=upper, count=2000)
        for entry_id, fields in page:
            stamp = int(fields[b"ts_ms"]) / 1000
            if start <= stamp <= end and fields.get(b"role") != b"shadow":
                latencies.append(float(fields[b"latency_ms"]) / 1000)
        if len(page) < 2000:
            break
        cursor = "(" + page[-1][0].decode()
    return latencies


def _engine_figures(engine: dict[str, Any], idle: dict[str, Any]) -> dict[str, Any]:
    figures: dict[str, Any] = {"engine_p95_ms": engine["p95_ms"],
                               "engine_idle_p95_ms": idle["p95_ms"]}
    if engine["requests"] and idle["requests"]:
        figures["engine_p95_ratio"] = round(engine["p95_ms"] / idle["p95_ms"], 2)
    return figures


def _idle_cell(row: dict[str, Any]) -> str:
    """The table's idle p95: before / after / pooled, or the one window there was."""
    if row.get("idle_after_p95_ms") is None:
        return str(row.get("idle_p95_ms", "-"))
    return f"{row['idle_before_p95_ms']} / {row['idle_after_p95_ms']} / {row['idle_p95_ms']}"


def _alone_row(template: str, runs: list[float], limits: dict[str, Any] | None
               ) -> dict[str, Any]:
    """The summary row of a model's runs alone (median, with each run)."""
    median = float(np.median(runs))
    return {"template": template, "policy": "alone (no traffic)", "train_s": round(median, 2),
            "slowdown": 1.0, "alone_runs_s": [round(r, 2) for r in runs],
            "schedule": {"limits": limits} if limits else {}}


def _rolling_p95(traffic: Traffic, start: float, end: float, window_s: float = 1.0,
                 every_s: float = 0.25) -> list[tuple[float, float]]:
    """(seconds since ``start``, client-side p95 ms of the requests sent in the last
    ``window_s``) from ``window_s`` before the job to ``window_s`` after it."""
    series = []
    for at in np.arange(start - 2 * window_s, end + 2 * window_s, every_s):
        latencies, _ = traffic.between(at - window_s, at)
        if latencies:
            series.append((round(float(at - start), 3),
                           round(float(np.percentile(latencies, 95) * 1000), 3)))
    return series


def write_report(result: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """``interference.md`` (the table) and ``interference.png`` (p95 and the training
    process's CPU over each job, immediate beside slo-aware) in ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    idle = result["idle"]
    lines = [
        (f"Served: LeNet-5 on tritonserver through the proxy at "
         f"{result['settings']['rate']:g} requests/s; {result['cpus']} CPUs; load average "
         f"at the end {', '.join(f'{x:.2f}' for x in result['load_average'])}."),
        "",
        (f"Idle (no job): p50 {idle['p50_ms']} ms, p95 {idle['p95_ms']} ms, p99 "
         f"{idle['p99_ms']} ms over {idle['requests']} requests."),
        "",
        ("Each run's latency ratios are against the idle traffic around it: the seconds right "
         "before and right after the job, pooled (idle p95 before / after / pooled)."),
        "",
        ("| model | policy | run | idle p95 ms | p50 ms | p95 ms (x idle) | p99 ms (x idle) "
         "| engine p95 ms (x idle) | training s (x alone beside it) | paced s | paused s "
         "| pauses (budget cuts) | SLO p95 ms (proxy) | limits |"),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        schedule = row.get("schedule") or {}
        limits = schedule.get("limits") or {}
        latency = ("-", "-", "-") if "p95_ms" not in row else (
            f"{row['p50_ms']}", f"{row['p95_ms']} ({row['p95_ratio']}x)",
            f"{row['p99_ms']} ({row['p99_ratio']}x)")
        engine = "-" if row.get("engine_p95_ratio") is None else \
            f"{row['engine_p95_ms']} ({row['engine_p95_ratio']}x)"
        if row.get("deferred"):
            training = "deferred (0 steps)"
        elif "alone_runs_s" in row:
            training = f"{row['train_s']} (median of {', '.join(map(str, row['alone_runs_s']))})"
        else:
            training = f"{row['train_s']} ({row['slowdown']}x {row['alone_s']})"
        lines.append(
            f"| {row['template']} | {row['policy']} | "
            f"{row['repeat'] + 1 if 'repeat' in row else '-'} | "
            f"{_idle_cell(row)} | {latency[0]} | {latency[1]} | "
            f"{latency[2]} | {engine} | {training} | {schedule.get('paced_s', 0):.1f} | "
            f"{schedule.get('paused_s', 0):.1f} | {schedule.get('pauses', 0)} "
            f"({schedule.get('budget_overrides') or 0}) | "
            f"{schedule.get('slo_p95_ms') or '-'} | "
            f"{', '.join(f'{k} {v}' for k, v in limits.items()) or '-'} |")
    summary = result.get("summary") or []
    if result["settings"].get("repeats", 1) > 1 and summary:
        lines += ["", "Medians over the runs (each run in brackets):", "",
                  "| model | policy | runs | p95 x idle | p95 x idle before only | p99 x idle "
                  "| engine p95 x idle | training x alone |", "|---|---|---|---|---|---|---|---|"]
        for entry in summary:
            cells = [f"{entry[k]} ({', '.join(map(str, entry[k + '_runs']))})"
                     if k in entry else "-"
                     for k in ("p95_ratio", "p95_ratio_before", "p99_ratio", "engine_p95_ratio",
                               "slowdown")]
            lines.append(f"| {entry['template']} | {entry['policy']} | {entry['runs']} | "
                         + " | ".join(cells) + " |")
    checks = result.get("target") or {}
    if checks:
        lines += ["", (f"Target under slo-aware (p95 <= {TARGET['p95_ratio']:g}x the idle p95 "
                       f"around the job, training <= {TARGET['slowdown']:g}x alone): " + "; ".join(
                           f"{name} {'met' if c['met'] else 'not met'} ({c['p95_ratio']}x, "
                           f"{c['slowdown']}x"
                           + (f", medians of {c['runs']} runs" if c.get("runs", 1) > 1 else "")
                           + ")" for name, c in checks.items()) + ".")]
    lines += ["", (f"The ModelCI-e paper (no SLO policy): inference p95 during an update "
                   f"{PAPER['p95_ratio_during_update']}; training {PAPER['training_slowdown']} "
                   "slower beside inference.")]
    table = out_dir / "interference.md"
    table.write_text("\n".join(lines) + "\n")

    runs = [r for r in result["rows"] if r.get("series") and not r.get("repeat")]
    templates = list(dict.fromkeys(r["template"] for r in runs))
    figure, axes = plt.subplots(len(templates) or 1, 2, figsize=(11, 3.2 * max(1, len(templates))),
                                squeeze=False)
    for i, template in enumerate(templates):
        left, right = axes[i]
        for row in (r for r in runs if r["template"] == template):
            xs, ys = zip(*row["series"], strict=True)
            left.plot(xs, ys, label=row["policy"])
            trace = [(t["t"] - row["fit_start"], t["training_cpu"]) for t in result["trace"]
                     if row["fit_start"] - 2 <= t["t"] <= row["fit_end"] + 2
                     and t["training_cpu"] is not None]
            if trace:
                tx, ty = zip(*trace, strict=True)
                right.plot(tx, ty, label=row["policy"])
        left.axhline(idle["p95_ms"], color="grey", linestyle=":", label="idle p95")
        left.axhline(idle["p95_ms"] * result["settings"]["slo_ratio"], color="red",
                     linestyle="--", label=f"{result['settings']['slo_ratio']:g} x idle")
        left.set_title(f"{template}: inference p95 (1 s windows, client side)")
        left.set_xlabel("seconds since the job started training")
        left.set_ylabel("ms")
        left.legend(fontsize=7)
        right.set_title(f"{template}: CPU of the training process")
        right.set_xlabel("seconds since the job started training")
        right.set_ylabel("% of one core")
        right.legend(fontsize=7)
    figure.tight_layout()
    plot = out_dir / "interference.png"
    figure.savefig(plot, dpi=90)
    plt.close(figure)
    return table, plot


def _closed_window() -> str:
    """A one-minute window twelve hours from now (closed now)."""
    at = time.localtime(time.time() + 12 * 3600)
    end = time.localtime(time.time() + 12 * 3600 + 60)
    return f"{at.tm_hour:02d}:{at.tm_min:02d}-{end.tm_hour:02d}:{end.tm_min:02d}"


def _job_figures(job: dict[str, Any], alone: tuple[float, float]) -> dict[str, Any]:
    """``alone``: the job's training seconds alone right before and right after this run."""
    reference = sum(alone) / len(alone)
    return {"steps": job["steps"], "train_s": round(job["train_s"], 2),
            "alone_s": round(reference, 2), "alone_adjacent_s": [round(a, 2) for a in alone],
            "slowdown": round(job["train_s"] / reference, 2),
            "job_s": round(job["end"] - job["start"], 2), "schedule": job["schedule"],
            "fit_start": job["fit_start"], "fit_end": job["fit_end"]}


def _latency_figures(latencies: list[float], failed: int, idle: dict[str, Any]
                     ) -> dict[str, Any]:
    figures = _quantiles(latencies)
    ratios = {f"{q}_ratio": round(figures[f"{q}_ms"] / idle[f"{q}_ms"], 2)
              for q in ("p50", "p95", "p99") if latencies}
    return {**figures, **ratios, "failed": failed}


# -- the training job (a child process) ----------------------------------------------------

def _job_main(args: argparse.Namespace) -> None:
    import torch

    from cl_server.config.schema import SchedulingConfig
    from cl_server.scheduling.factory import make_policy, max_slowdown, process_limits
    from cl_server.scheduling.governor import Governor, apply_limits
    from cl_server.scheduling.policy import Immediate
    from cl_server.scheduling.signals import LiveSignals
    from model_factory.scenarios.datasets import mnist_5k
    from model_factory.templates import Classifier

    start = time.time()
    # limits-only: slo-aware's process limits (threads, niceness), never paced
    limits_only = args.policy == "limits-only"
    scheduling = SchedulingConfig.model_validate({
        "policy": "slo-aware" if limits_only else args.policy,
        "slo": {"p95_ratio": args.slo_ratio},
        **({"off_peak_windows": [args.window]} if args.window else {}),
        # immediate trains on every core (as fast as it can); slo-aware takes its defaults.
        **({"threads": os.cpu_count() or 1} if args.policy == "immediate" else {})})
    limits = apply_limits(*process_limits(scheduling))
    cache = redis.Redis.from_url(args.cache_url)
    deadline = time.monotonic() + args.give_up_after_s if args.give_up_after_s else None

    class GaveUp(Exception):
        pass

    def check_cancelled() -> None:
        if deadline is not None and time.monotonic() > deadline:
            raise GaveUp

    governor = Governor(Immediate() if limits_only else make_policy(scheduling),
                        LiveSignals(cache, SERVICE),
                        log=lambda message, level="INFO": print(message, file=sys.stderr),
                        check_cancelled=check_cancelled, slo_ratio=args.slo_ratio,
                        baseline_s=scheduling.slo.baseline_s, limits=limits,
                        max_slowdown=None if limits_only else max_slowdown(scheduling))
    x, y = mnist_5k()
    batch = 32
    inputs = torch.from_numpy(x).reshape(len(x), *SHAPES[args.template])
    targets = torch.from_numpy(y)

    class Cycling(torch.utils.data.Dataset):  # args.steps batches cycling through the digits
        def __len__(self) -> int:
            return args.steps

        def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
            index = torch.arange(step * batch, (step + 1) * batch) % len(x)
            return inputs[index], targets[index]

    model = Classifier(args.template, SHAPES[args.template], [str(c) for c in range(10)],
                       seed=args.seed)
    fit_start = fit_end = None
    try:
        governor.admit()
        fit_start = time.time()
        loader = torch.utils.data.DataLoader(Cycling(), batch_size=None, shuffle=False)
        model.fit(inputs, targets, loader=loader, between_steps=governor.between_steps)
        fit_end = time.time()
    except GaveUp:
        pass
    print(json.dumps({"start": start, "end": time.time(), "fit_start": fit_start,
                      "fit_end": fit_end, "steps": governor.steps,
                      "train_s": (fit_end - fit_start) if fit_start and fit_end else None,
                      "schedule": governor.summary()}))


def main() -> None:  # pragma: no cover - the child process entry point
    parser = argparse.ArgumentParser(prog="python -m evaluator.interference_bench")
    sub = parser.add_subparsers(dest="command", required=True)
    job = sub.add_parser("job", help="one training job under a policy (prints JSON)")
    job.add_argument("--cache-url", required=True)
    job.add_argument("--template", choices=sorted(SHAPES), required=True)
    job.add_argument("--policy", required=True,
                     choices=("immediate", "limits-only", "slo-aware", "off-peak"))
    job.add_argument("--steps", type=int, required=True)
    job.add_argument("--slo-ratio", type=float, default=1.2)
    job.add_argument("--seed", type=int, default=0)
    job.add_argument("--window")
    job.add_argument("--give-up-after-s", type=float)
    args = parser.parse_args()
    _job_main(args)


if __name__ == "__main__":  # pragma: no cover
    main()
