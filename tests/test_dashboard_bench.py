"""``modelci-e bench dashboard`` (its own module: Playwright's sync API runs one browser session
per thread, and the browser tests keep theirs open for their whole module)."""

from __future__ import annotations

import shutil

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def test_bench_dashboard_measures_first_load_and_bundle() -> None:
    """``modelci-e bench dashboard`` on one load per viewport; the bundle within 400 kB gzip."""
    from evaluator.dashboard_bench import DashboardBenchSettings, run_dashboard_bench

    result = run_dashboard_bench(DashboardBenchSettings(runs=1, chromium=CHROMIUM))
    assert set(result["first_load_ms"]) == {"1280x800", "390x844"}
    for loads in result["first_load_ms"].values():
        assert 0 < loads["dom_content_loaded"]["median"] <= loads["cold"]["median"]
        assert loads["warm"]["median"] > 0
    assert result["services"] == 2
    assert result["bundle_gzip_bytes"] == sum(result["bundle_files"].values())
    assert any(name.startswith("index-") for name in result["bundle_files"])
    assert result["bundle_gzip_bytes"] <= 400_000, result["bundle_files"]
