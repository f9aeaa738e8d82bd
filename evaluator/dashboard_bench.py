"""How fast the built dashboard loads: the real CL server (embedded Redis and store, waitress)
with a seeded history, and headless Chromium opening the services overview.

**First load** is the time from the start of navigation to the moment the overview shows every
service row, for a signed-in user (the token already in the tab's session storage): *cold* in a
fresh browser context (empty HTTP cache), *warm* on a reload in the same context. The bundle's
size is the gzip'd size (level 9) of every JS and CSS asset. Targets: first load < 1 s on
localhost; bundle <= 400 kB gzip.

Example (needs the built dashboard, Playwright and Chromium; see ``modelci-e bench dashboard``):
    >>> settings = DashboardBenchSettings(runs=3)
    >>> settings.viewports
    ((1280, 800), (390, 844))
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LAUNCH_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync")
_ROWS_SHOWN = """(n) => document.querySelectorAll('[data-testid=service-row]').length >= n
                 && performance.now()"""
_NAVIGATION = """() => { const n = performance.getEntriesByType('navigation')[0];
                         return [n.domContentLoadedEventEnd, n.loadEventEnd]; }"""


@dataclass(frozen=True)
class DashboardBenchSettings:
    runs: int = 5
    viewports: tuple[tuple[int, int], ...] = ((1280, 800), (390, 844))
    chromium: str | None = None
    """The browser binary; default: ``chromium`` on PATH."""


@contextlib.contextmanager
def launch_browser(chromium: str | None = None) -> Iterator[Any]:
    """Headless Debian Chromium driven by Playwright (no browser download)."""
    from playwright.sync_api import sync_playwright

    chromium = chromium or shutil.which("chromium")
    if chromium is None:
        raise RuntimeError("no chromium on PATH (Debian: apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=list(LAUNCH_ARGS))
        try:
            yield browser
        finally:
            browser.close()


def bundle_sizes(dist: Path) -> dict[str, int]:
    """Gzip'd bytes (level 9) of each JS and CSS asset of a built dashboard."""
    return {p.name: len(gzip.compress(p.read_bytes(), 9))
            for p in sorted((dist / "assets").iterdir()) if p.suffix in (".js", ".css")}


def run_dashboard_bench(settings: DashboardBenchSettings) -> dict[str, Any]:
    """Start the server, seed it, load the overview ``runs`` times per viewport, cold and warm."""
    from cl_server.api.routes.web import web_dist
    from cl_server.auth import issue_token
    from cl_server.store import User
    from evaluator.dashboard_seed import seeded_server

    dist = web_dist()
    if not (dist / "index.html").is_file():
        raise RuntimeError(f"the dashboard is not built in {dist}: run `cd web && npm ci && "
                           f"npm run build` (./run does it)")
    with tempfile.TemporaryDirectory(prefix="modelci-dashboard-bench-") as tmp, \
            seeded_server(Path(tmp)) as live:
        live.store.add_user(User(name="bench", role="viewer"))
        token = issue_token(live.store, "bench", "dashboard benchmark")[1]
        services = len(live.store.list_services())
        with launch_browser(settings.chromium) as browser:
            loads = {f"{w}x{h}": _loads(browser, live.url, token, services, (w, h),
                                        settings.runs)
                     for w, h in settings.viewports}
    sizes = bundle_sizes(dist)
    return {"runs": settings.runs, "services": services, "first_load_ms": loads,
            "bundle_gzip_bytes": sum(sizes.values()), "bundle_files": sizes,
            "targets": {"first_load_ms": 1000, "bundle_gzip_bytes": 400_000},
            "load_average": list(os.getloadavg())}


def _loads(browser: Any, url: str, token: str, services: int, viewport: tuple[int, int],
           runs: int) -> dict[str, Any]:
    cold: list[float] = []
    warm: list[float] = []
    dom: list[float] = []
    for _ in range(runs):
        context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
        context.add_init_script(f"sessionStorage.setItem('modelci.token', {token!r})")
        page = context.new_page()
        for sample in (cold, warm):
            if sample is cold:
                page.goto(url + "/")
            else:
                page.reload()
            shown = page.wait_for_function(_ROWS_SHOWN, arg=services, polling="raf",
                                           timeout=30_000)
            sample.append(float(shown.json_value()))
            if sample is cold:
                dom.append(float(page.evaluate(_NAVIGATION)[0]))
        context.close()
        time.sleep(0.2)

    def summary(values: list[float]) -> dict[str, float]:
        return {"median": statistics.median(values), "max": max(values), "min": min(values)}

    return {"cold": summary(cold), "warm": summary(warm), "dom_content_loaded": summary(dom)}
