"""``modelci-e bench proxy``: what the request-collecting proxy costs, and a deploy under load.

One run starts everything for real: the embedded redis-server (the collector's cache), the
real tritonserver with a small model (an MLP on 784 inputs, 10 classes, python backend), and
the proxy in its own process (``modelci-e proxy``, with the collector on). Then:

1. **Overhead.** An open-loop load generator sends KServe V2 binary requests at ``rate``
   requests/s, alternating every ``block_s`` seconds between Triton directly and the proxy, so
   both see the same machine state; per target it reports p50/p95/p99 latency (client side) and
   errors, and the proxy's added latency as the difference of the quantiles.
2. **Collection.** Every request answered through the proxy must be in the Redis stream: it
   reports offered / written / dropped and the stream length.
3. **Deploy under traffic.** While traffic runs through the proxy at ``rate``, version 2 is
   deployed (write, load beside v1, warm up, switch, unload v1); it reports the deploy's
   phases in seconds and the failed requests (target: none).

Example (not a doctest: it starts servers for about a minute)::

    result = run_proxy_bench(ProxyBenchSettings(rate=200, duration_s=20))
    print(result["overhead_ms"])
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import redis
import requests
import tritonclient.http as triton_http

from cl_server.config.schema import ModelConfig
from cl_server.embedded import EmbeddedServices
from cl_server.embedded.process import ManagedProcess
from evaluator.scratch import scratch_dir
from plugin.proxy.collector import served_stream
from plugin.serving.routing import RoutingTable
from plugin.serving.triton import TritonAdapter
from plugin.serving.triton_server import TritonServer, free_port

MODEL = ModelConfig(template="mlp", input={"name": "INPUT__0", "shape": [784],
                                           "dtype": "float32"},
                    output_name="OUTPUT__0", classes=[str(c) for c in range(10)])


@dataclass(frozen=True)
class ProxyBenchSettings:
    rate: float = 200.0          # requests per second, per target
    duration_s: float = 20.0     # seconds of traffic per target (overhead phase)
    block_s: float = 1.0         # seconds before switching target
    deploy_traffic_s: float = 3.0  # traffic before and after the deploy
    hidden: int = 128
    seed: int = 0


def _quantiles(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "p99_ms": float("nan"),
                "mean_ms": float("nan")}
    values = np.array(latencies) * 1000
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"p50_ms": round(float(p50), 3), "p95_ms": round(float(p95), 3),
            "p99_ms": round(float(p99), 3), "mean_ms": round(float(values.mean()), 3)}


def _request_body(seed: int) -> tuple[bytes, dict[str, str]]:
    return binary_request(np.random.default_rng(seed).random((1, 784), dtype=np.float32))


def binary_request(batch: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """A KServe V2 binary-tensor request body for ``INPUT__0`` (FP32) asking for
    ``OUTPUT__0``, and its headers."""
    tensor = triton_http.InferInput("INPUT__0", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch, binary_data=True)
    output = triton_http.InferRequestedOutput("OUTPUT__0", binary_data=True)
    body, header_length = triton_http.InferenceServerClient.generate_request_body(
        [tensor], outputs=[output])
    headers = {"Content-Type": "application/octet-stream"}
    if header_length is not None:
        headers["Inference-Header-Content-Length"] = str(header_length)
    return body, headers


async def _load(targets: dict[str, str], rate: float, duration_s: float, block_s: float,
                body: bytes, headers: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Open loop: request i starts at i / rate; targets alternate every ``block_s``."""
    results: dict[str, dict[str, Any]] = {name: {"latencies": [], "errors": 0, "versions": {}}
                                          for name in targets}
    names = list(targets)
    total = int(rate * duration_s * len(names))
    connector = aiohttp.TCPConnector(limit=512)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def one(name: str) -> None:
            start = time.perf_counter()
            try:
                async with session.post(targets[name], data=body, headers=headers) as response:
                    await response.read()
                    ok = response.status == 200
            except aiohttp.ClientError:
                ok = False
            elapsed = time.perf_counter() - start
            if ok:
                results[name]["latencies"].append(elapsed)
            else:
                results[name]["errors"] += 1

        tasks = []
        begin = time.perf_counter()
        for i in range(total):
            due = begin + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            name = names[int((due - begin) / block_s) % len(names)]
            tasks.append(asyncio.ensure_future(one(name)))
        await asyncio.gather(*tasks)
    return results


def _traffic_during(url: str, rate: float, body: bytes, headers: dict[str, str],
                    stop: threading.Event, out: dict[str, Any]) -> None:
    async def run() -> None:
        errors = 0
        sent = 0
        async with aiohttp.ClientSession() as session:
            async def one() -> None:
                nonlocal errors
                try:
                    async with session.post(url, data=body, headers=headers) as response:
                        await response.read()
                        if response.status != 200:
                            errors += 1
                except aiohttp.ClientError:
                    errors += 1

            tasks = []
            begin = time.perf_counter()
            while not stop.is_set():
                due = begin + sent / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.ensure_future(one()))
                sent += 1
            await asyncio.gather(*tasks)
        out.update(sent=sent, errors=errors)

    asyncio.run(run())


def run_proxy_bench(settings: ProxyBenchSettings, work_dir: Path | None = None
                    ) -> dict[str, Any]:
    """Run the three phases (see the module doc); returns the figures as a dict."""
    with scratch_dir(work_dir, "modelci-bench-proxy-") as root:
        return _run_proxy_bench(settings, root)


def _run_proxy_bench(settings: ProxyBenchSettings, root: Path) -> dict[str, Any]:
    import torch

    from model_factory.templates import Classifier

    services = EmbeddedServices(root / "embedded", cache=True, store=False)
    server = TritonServer(root, root / "repository")
    proxy_process: ManagedProcess | None = None
    torch.manual_seed(settings.seed)
    artifacts = {}
    for version in (1, 2):
        artifacts[version] = root / f"v{version}.pt"
        Classifier("mlp", (784,), MODEL.classes, params={"hidden": [settings.hidden]},
                   seed=settings.seed + version).export(artifacts[version])
    services.start()
    try:
        cache_url = services.endpoints.cache_url
        assert cache_url is not None
        server.start()
        routing = RoutingTable(root / "routing.json")
        adapter = TritonAdapter(MODEL, "bench", routing, url=server.url,
                                repository=server.repository)
        first = adapter.deploy(1, artifacts[1])
        port = free_port()
        proxy_url = f"http://127.0.0.1:{port}"
        argv = [sys.executable, "-m", "plugin.cli", "proxy", "--engine", "triton",
                "--upstream", server.url, "--model", "bench", "--service", "bench",
                "--routing", str(routing.path), "--redis-url", cache_url, "--port", str(port),
                "--spool-dir", str(root / "spool")]
        proxy_process = ManagedProcess(
            "proxy", argv, root / "run",
            lambda: requests.get(f"{proxy_url}/metrics", timeout=1).status_code == 200,
            env={**os.environ, "OMP_NUM_THREADS": "1"})
        proxy_process.start()

        body, headers = _request_body(settings.seed)
        targets = {"direct": f"{server.url}/v2/models/bench/infer",
                   "proxy": f"{proxy_url}/v2/models/bench/infer"}
        # Warm both paths (connections, first-call costs) before measuring.
        asyncio.run(_load(targets, 50, 0.5, 0.25, body, headers))
        client = redis.Redis.from_url(cache_url)
        client.delete(served_stream("bench"))
        before = requests.get(f"{proxy_url}/modelci/stats", timeout=5).json()["collector"]
        load = asyncio.run(_load(targets, settings.rate, settings.duration_s, settings.block_s,
                                 body, headers))
        time.sleep(0.5)
        after = requests.get(f"{proxy_url}/modelci/stats", timeout=5).json()["collector"]
        per_target = {name: {**_quantiles(r["latencies"]), "requests": len(r["latencies"])
                             + r["errors"], "errors": r["errors"]} for name, r in load.items()}
        overhead = {key: round(per_target["proxy"][key] - per_target["direct"][key], 3)
                    for key in ("p50_ms", "p95_ms", "p99_ms", "mean_ms")}
        collected = {key: after[key] - before[key] for key in ("offered", "written", "dropped")}
        collected["stream_length"] = int(client.xlen(served_stream("bench")))
        collected["proxied_ok"] = len(load["proxy"]["latencies"])
        client.close()

        stop = threading.Event()
        traffic: dict[str, Any] = {}
        worker = threading.Thread(target=_traffic_during,
                                  args=(targets["proxy"], settings.rate, body, headers, stop,
                                        traffic))
        worker.start()
        time.sleep(settings.deploy_traffic_s)
        second = adapter.deploy(2, artifacts[2])
        time.sleep(settings.deploy_traffic_s)
        stop.set()
        worker.join()
        return {
            "settings": asdict(settings),
            "latency": per_target, "overhead_ms": overhead, "collector": collected,
            "deploy": {"first": asdict(first), "under_traffic": asdict(second),
                       "requests_during": traffic.get("sent", 0),
                       "failed_during": traffic.get("errors", 0),
                       "champion_after": adapter.current()},
            "load_average": list(os.getloadavg()),
        }
    finally:
        if proxy_process is not None:
            proxy_process.stop()
        server.stop()
        services.stop()


def main() -> None:  # pragma: no cover - convenience for `python -m evaluator.proxy_bench`
    print(json.dumps(run_proxy_bench(ProxyBenchSettings()), indent=2))


if __name__ == "__main__":  # pragma: no cover
    main()
