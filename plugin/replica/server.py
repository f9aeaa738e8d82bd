"""The replica's HTTP face: KServe V2 inference (JSON) on the model the agent keeps fresh, and
its sync status.

| route | answer |
| --- | --- |
| ``GET /v2/health/live`` | 200 |
| ``GET /v2/health/ready`` | 200 once a model is held, else 503 |
| ``GET /v2/models/{service}`` | metadata: the version held, inputs, outputs |
| ``POST /v2/models/{service}/infer`` | class probabilities; ``model_version`` and, in ``parameters``, the publication and checksum of the state that answered |
| ``GET /replica/status`` | publication, version and checksum held; counts of patches applied, duplicates, gaps, corrupt or mismatched patches, snapshots |

Errors are V2's ``{"error": message}`` with 400 (bad request body), 404 (another model) or 503
(no model yet).

Example:
    >>> from plugin.replica.agent import ReplicaAgent
    >>> app = replica_app(ReplicaAgent("http://127.0.0.1:9", "digits", token="t"))
    >>> sorted({r.resource.canonical for r in app.router.routes()})[:2]
    ['/replica/status', '/v2/health/live']
"""

from __future__ import annotations

import asyncio
import math
import threading
from typing import Any

import torch
from aiohttp import web

from plugin.replica.agent import ReplicaAgent

MAX_BODY_BYTES = 64 << 20
_NUMERIC = {"FP32", "FP64", "FP16", "INT8", "INT16", "INT32", "INT64", "UINT8"}


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def replica_app(agent: ReplicaAgent, output_name: str = "probabilities") -> web.Application:
    """The aiohttp application serving ``agent``'s model (see the module doc)."""

    def known(request: web.Request) -> web.Response | None:
        if request.match_info["model"] != agent.service:
            return _error(404, f"unknown model '{request.match_info['model']}' (this replica "
                               f"serves '{agent.service}')")
        if agent.serving is None:
            return _error(503, "the replica holds no model yet")
        return None

    async def live(request: web.Request) -> web.Response:
        return web.json_response({"live": True})

    async def ready(request: web.Request) -> web.Response:
        return web.json_response({"ready": agent.ready}, status=200 if agent.ready else 503)

    async def metadata(request: web.Request) -> web.Response:
        refused = known(request)
        if refused is not None:
            return refused
        serving = agent.serving
        assert serving is not None
        return web.json_response({
            "name": agent.service, "versions": [str(serving.version)],
            "platform": "modelci-e-replica",
            "inputs": [{"name": "input", "datatype": "FP32",
                        "shape": [-1, *serving.meta.get("input_shape", [])]}],
            "outputs": [{"name": output_name, "datatype": "FP32",
                         "shape": [-1, len(serving.classes)]}]})

    async def infer(request: web.Request) -> web.Response:
        refused = known(request)
        if refused is not None:
            return refused
        try:
            body = await request.json()
        except ValueError as exc:
            return _error(400, f"request body is not JSON: {exc}")
        inputs, problem = _parse_inputs(body, agent)
        if problem:
            return _error(400, problem)
        loop = asyncio.get_running_loop()
        probabilities, serving = await loop.run_in_executor(None, agent.infer, inputs)
        return web.json_response({
            "model_name": agent.service, "model_version": str(serving.version),
            **({"id": body["id"]} if isinstance(body.get("id"), str) else {}),
            "parameters": {"sequence": serving.sequence, "sha256": serving.sha256},
            "outputs": [{"name": output_name, "datatype": "FP32",
                         "shape": list(probabilities.shape),
                         "data": probabilities.reshape(-1).tolist()}]})

    async def status(request: web.Request) -> web.Response:
        return web.json_response(agent.status())

    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_get("/v2/health/live", live)
    app.router.add_get("/v2/health/ready", ready)
    app.router.add_get("/v2/models/{model}", metadata)
    app.router.add_post("/v2/models/{model}/infer", infer)
    app.router.add_get("/replica/status", status)
    return app


def _parse_inputs(body: Any, agent: ReplicaAgent) -> tuple[torch.Tensor, str]:
    """The batch in a V2 request, or an empty tensor and what is wrong with the request."""
    empty = torch.empty(0)
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) \
            or len(body["inputs"]) != 1 or not isinstance(body["inputs"][0], dict):
        return empty, "the body must be {\"inputs\": [one tensor]}"
    tensor = body["inputs"][0]
    shape, datatype, data = tensor.get("shape"), tensor.get("datatype"), tensor.get("data")
    if not isinstance(shape, list) or not shape or not all(
            isinstance(d, int) and d > 0 for d in shape):
        return empty, "inputs[0].shape must be a list of positive integers"
    if datatype not in _NUMERIC:
        return empty, f"inputs[0].datatype must be one of {sorted(_NUMERIC)} (got {datatype!r})"
    serving = agent.serving
    expected = list(serving.meta.get("input_shape", [])) if serving else []
    if shape[1:] != expected:
        return empty, (f"inputs[0].shape {shape} does not fit the model's input [-1, "
                       f"{', '.join(map(str, expected))}]")
    if not isinstance(data, list):
        return empty, "inputs[0].data must be a flat list of numbers"
    if len(data) != math.prod(shape):
        return empty, (f"inputs[0].data holds {len(data)} numbers; shape {shape} needs "
                       f"{math.prod(shape)}")
    try:
        return torch.tensor(data, dtype=torch.float32).reshape(shape), ""
    except (TypeError, ValueError) as exc:
        return empty, f"inputs[0].data must hold numbers only ({exc})"


def run_replica(agent: ReplicaAgent, host: str, port: int,
                output_name: str = "probabilities") -> None:
    """Follow the server on a thread and serve HTTP until SIGINT / SIGTERM."""
    follower = threading.Thread(target=agent.run, daemon=True, name="replica-sync")
    follower.start()
    try:
        web.run_app(replica_app(agent, output_name), host=host, port=port, print=None,
                    handle_signals=True)
    finally:
        agent.stop()
        follower.join(timeout=10)
