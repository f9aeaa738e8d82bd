"""Run an :class:`InferenceProxy`: in the foreground (the CLI) or on a background thread.

Example (not run as a doctest: it needs an engine)::

    with ProxyThread(proxy) as running:
        print(running.url)   # http://127.0.0.1:PORT, speaks the engine's protocol
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Self

import uvloop
from aiohttp import web

from plugin.proxy.app import InferenceProxy


def serve(proxy: InferenceProxy, host: str, port: int,
          on_ready: Callable[[str], None] | None = None) -> None:
    """Serve until SIGINT/SIGTERM, then drain shadow calls and close. ``on_ready(url)`` is
    called once the socket listens (``port=0`` picks a free port)."""
    uvloop.run(_serve(proxy, host, port, on_ready))


async def _serve(proxy: InferenceProxy, host: str, port: int,
                 on_ready: Callable[[str], None] | None) -> None:
    runner = web.AppRunner(proxy.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    assert server is not None and server.sockets
    bound = int(server.sockets[0].getsockname()[1])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if on_ready is not None:
        on_ready(f"http://{host}:{bound}")
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


class ProxyThread:
    """The proxy on 127.0.0.1 (a free port unless given) in a daemon thread."""

    def __init__(self, proxy: InferenceProxy, port: int = 0):
        self.proxy = proxy
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="proxy",
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ProxyThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.proxy.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        server = site._server
        assert server is not None and server.sockets
        self.port = int(server.sockets[0].getsockname()[1])

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def close(self, drain_s: float = 5.0) -> None:
        """Stop serving, then hand the collector's pending records to Redis (at most
        ``drain_s`` seconds) and close it."""
        self.stop()
        if self.proxy.collector is not None:
            self.proxy.collector.close(timeout_s=drain_s)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()
