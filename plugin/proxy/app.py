"""The request-collecting proxy: clients talk to it exactly as they talk to the engine.

It speaks the engine's own client protocol (KServe V2 REST for Triton, JSON and the binary
tensor extension; TF-Serving REST). Inference calls for the service's model that name no
version are sent to the version the routing table picks (champion, or the canary for its
share), as an explicit version path, so the engine's own "latest" never decides. Every other
call (health, metadata, repository, other models, explicit versions) is forwarded unchanged.
The engine's answer comes back unchanged: status, headers (Content-Encoding included: bodies
are not decompressed) and body; the proxy adds only ``X-Request-Id`` when the client did not
send one.

After the answer is on its way, the exchange is offered to the :class:`RequestCollector`
(a non-blocking put; the records of failed calls are not collected). With a shadow version in
the routing table, each inference call is also mirrored to it in the background; its answer
is collected with the same request id and role ``shadow``, never returned.

Run it with ``modelci-e proxy CONFIG`` or :func:`build_proxy` + ``aiohttp.web.run_app``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
import uuid
from dataclasses import dataclass

import aiohttp
import redis
from aiohttp import web
from multidict import CIMultiDict
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from plugin.proxy.collector import RequestCollector, ServedRequest
from plugin.proxy.metrics import ProxyMetrics, publish_latency, publish_recent_latency
from plugin.serving.routing import Routes, RoutingTable

log = logging.getLogger(__name__)

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailers", "transfer-encoding", "upgrade", "host", "content-length"}
HEADER_LENGTH = "Inference-Header-Content-Length"
MAX_SHADOW_IN_FLIGHT = 64

_TRITON_INFER = re.compile(r"^/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?"
                           r"/infer$")
_TF_PREDICT = re.compile(r"^/v1/models/(?P<model>[^/:]+)(?:/versions/(?P<version>[^/:]+)|"
                         r"/labels/(?P<label>[^/:]+))?:predict$")


@dataclass(frozen=True)
class Route:
    """Where an inference call goes: ``path`` upstream, the ``version`` that answers (None if
    unknown, e.g. an unknown TF-Serving label) and the ``role`` recorded with it."""

    path: str
    version: int | None
    role: str


class InferenceProxy:
    """Forward to ``upstream`` (the engine's HTTP endpoint) for ``model_name``'s service.

    Parameters:
        engine: ``triton`` or ``tfserving``.
        upstream: engine base URL, e.g. ``http://127.0.0.1:8000``.
        model_name: the model inside the engine whose traffic is routed and collected.
        service: service name (metrics labels, stream key).
        routing: the service's routing table.
        collector: where served requests go; None: nothing is collected.
        sampling_ratio: share of requests collected (0 to 1).
        timeout_s: seconds an engine call may take.
        max_body_bytes: larger request bodies get 413 before reaching the engine.
        publish_every_s: seconds between writes of the per-version latency figures to Redis
            (with a collector only).
    """

    def __init__(self, engine: str, upstream: str, model_name: str, service: str,
                 routing: RoutingTable, collector: RequestCollector | None = None, *,
                 sampling_ratio: float = 1.0, timeout_s: float = 30.0,
                 max_body_bytes: int = 64 * 2**20, publish_every_s: float = 5.0,
                 seed: int | None = None):
        if engine not in ("triton", "tfserving"):
            raise ValueError(f"unknown engine {engine!r} (expected triton or tfserving)")
        self.engine = engine
        self.upstream = upstream.rstrip("/")
        self.model_name = model_name
        self.service = service
        self.routing = routing
        self.collector = collector
        self.sampling_ratio = sampling_ratio
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.max_body_bytes = max_body_bytes
        self.publish_every_s = publish_every_s
        self.recent_every_s = 0.5
        self.recent_window_s = 2.0
        self.metrics = ProxyMetrics(service)
        self._random = random.Random(seed)
        self._session: aiohttp.ClientSession | None = None
        self._shadow_tasks: set[asyncio.Task[None]] = set()
        self._publisher: asyncio.Task[None] | None = None
        if collector is not None:
            collector.on_drop(self.metrics.drop)

    # -- routing ---------------------------------------------------------------------------

    def route(self, path: str, routes: Routes) -> Route | None:
        """The upstream route of an inference call for our model; None for anything else."""
        pattern = _TRITON_INFER if self.engine == "triton" else _TF_PREDICT
        match = pattern.match(path)
        if match is None or match["model"] != self.model_name:
            return None
        if match["version"] is not None:
            version = int(match["version"]) if match["version"].isdigit() else None
            return Route(path, version, "explicit")
        label = match.groupdict().get("label")
        if label is not None:
            version = {"stable": routes.champion, "canary": routes.canary}.get(label)
            return Route(path, version, "canary" if label == "canary" else "champion")
        version = routes.pick(self._random.random())
        if version is None:
            return Route(path, None, "champion")  # nothing deployed through us: engine decides
        role = "canary" if version == routes.canary and version != routes.champion \
            else "champion"
        return Route(self.version_path(version), version, role)

    def version_path(self, version: int) -> str:
        if self.engine == "triton":
            return f"/v2/models/{self.model_name}/versions/{version}/infer"
        return f"/v1/models/{self.model_name}/versions/{version}:predict"

    # -- aiohttp ---------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_body_bytes)
        app.router.add_get("/metrics", self.handle_metrics)
        app.router.add_get("/modelci/stats", self.handle_stats)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        return app

    async def _start(self, _: web.Application) -> None:
        connector = aiohttp.TCPConnector(limit=256, keepalive_timeout=60, ttl_dns_cache=None)
        self._session = aiohttp.ClientSession(connector=connector, timeout=self.timeout,
                                              auto_decompress=False, skip_auto_headers=(
                                                  "User-Agent", "Accept-Encoding",
                                                  "Content-Type"))
        if self.collector is not None:
            self._publisher = asyncio.get_running_loop().create_task(self._publish_latency())

    async def _publish_latency(self) -> None:
        """Twice a second, the latency figures of the last ``recent_window_s`` seconds (for the
        scheduling policies); every ``publish_every_s``, the per-version figures (for the
        dashboard and the validator's latency gate). A Redis error only skips that round."""
        assert self.collector is not None
        loop = asyncio.get_running_loop()
        last = time.monotonic()
        while True:
            await asyncio.sleep(self.recent_every_s)
            jobs = [(publish_recent_latency,
                     self.metrics.window.recent(self.recent_window_s))]
            if time.monotonic() - last >= self.publish_every_s:
                last = time.monotonic()
                stats = self.metrics.window.stats()
                if stats:
                    jobs.append((publish_latency, stats))
            for publish, figures in jobs:
                try:
                    await loop.run_in_executor(None, publish, self.collector.client,
                                               self.service, figures)
                except redis.RedisError as exc:
                    log.warning("latency figures not published: %s", exc)

    async def _stop(self, _: web.Application) -> None:
        if self._publisher is not None:
            self._publisher.cancel()
        if self._shadow_tasks:
            await asyncio.gather(*self._shadow_tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def handle_metrics(self, _: web.Request) -> web.Response:
        if self.collector is not None:
            self.metrics.queue_depth.labels(self.service).set(self.collector.depth)
        return web.Response(body=generate_latest(self.metrics.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def handle_stats(self, _: web.Request) -> web.Response:
        collector = self.collector
        return web.json_response({
            "service": self.service, "routes": self.routing.read().__dict__,
            "latency": {str(v): s for v, s in self.metrics.window.stats().items()},
            "collector": None if collector is None else {
                "offered": collector.offered, "written": collector.written,
                "dropped": collector.dropped, "queue_depth": collector.depth}})

    async def handle(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return web.json_response(
                {"error": f"request body larger than {self.max_body_bytes} bytes, the proxy's "
                          f"limit"}, status=413)
        routes = self.routing.read()
        route = self.route(request.path, routes) if request.method == "POST" else None
        path = route.path if route is not None else request.rel_url.path
        headers = CIMultiDict((k, v) for k, v in request.headers.items()
                              if k.lower() not in HOP_BY_HOP)
        request_id = request.headers.get("X-Request-Id") or uuid.uuid4().hex
        start = time.perf_counter()
        try:
            async with self._session.request(request.method, self.upstream + path,
                                             params=request.rel_url.query, data=body,
                                             headers=headers) as upstream:
                answer = await upstream.read()
                status, upstream_headers = upstream.status, upstream.headers
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.metrics.observe(route.version if route else None,
                                 route.role if route else "other", 502, 0.0)
            return web.json_response({"error": f"engine at {self.upstream} unreachable: "
                                               f"{exc.__class__.__name__}: {exc}"}, status=502)
        elapsed = time.perf_counter() - start
        out_headers = {k: v for k, v in upstream_headers.items() if k.lower() not in HOP_BY_HOP}
        if "X-Request-Id" not in request.headers and route is not None:
            out_headers["X-Request-Id"] = request_id
        if route is not None:
            self.metrics.observe(route.version, route.role, status, elapsed)
            sampled = self.collector is not None and \
                self._random.random() < self.sampling_ratio
            if sampled and status == 200 and route.version is not None:
                self._collect(request_id, route.version, route.role, elapsed, body,
                              request.headers, answer, upstream_headers)
            if routes.shadow is not None and routes.shadow != route.version \
                    and route.role != "explicit":
                self._mirror(request_id, routes.shadow, body, headers, sampled)
        return web.Response(status=status, body=answer, headers=out_headers)

    # -- collection and shadowing ----------------------------------------------------------

    def _collect(self, request_id: str, version: int, role: str, elapsed: float, body: bytes,
                 request_headers: object, answer: bytes, response_headers: object) -> None:
        if self.collector is None:
            return
        self.collector.offer(ServedRequest(
            request_id, version, role, int(time.time() * 1000), elapsed * 1000, body,
            _int_header(request_headers, HEADER_LENGTH),
            request_headers.get("Content-Encoding"),  # type: ignore[attr-defined]
            answer, _int_header(response_headers, HEADER_LENGTH),
            response_headers.get("Content-Encoding")))  # type: ignore[attr-defined]

    def _mirror(self, request_id: str, version: int, body: bytes,
                headers: CIMultiDict[str], sampled: bool) -> None:
        if len(self._shadow_tasks) >= MAX_SHADOW_IN_FLIGHT:
            self.metrics.drop("shadow_overload")
            return
        task = asyncio.get_running_loop().create_task(
            self._shadow(request_id, version, body, headers, sampled))
        self._shadow_tasks.add(task)
        task.add_done_callback(self._shadow_tasks.discard)

    async def _shadow(self, request_id: str, version: int, body: bytes,
                      headers: CIMultiDict[str], sampled: bool) -> None:
        assert self._session is not None
        start = time.perf_counter()
        try:
            async with self._session.post(self.upstream + self.version_path(version), data=body,
                                          headers=headers) as upstream:
                answer = await upstream.read()
                status, upstream_headers = upstream.status, upstream.headers
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("shadow request to version %d failed: %s", version, exc)
            self.metrics.observe(version, "shadow", 502, 0.0)
            return
        elapsed = time.perf_counter() - start
        self.metrics.observe(version, "shadow", status, elapsed)
        if sampled and status == 200:
            self._collect(request_id, version, "shadow", elapsed, body, headers, answer,
                          upstream_headers)


def _int_header(headers: object, name: str) -> int | None:
    value = headers.get(name)  # type: ignore[attr-defined]
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
