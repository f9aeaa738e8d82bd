"""``modelci-e bench deploy --quick``: every method deploys through real patches; sparse and
partial updates ship fewer bytes than full ones, and the replica's apply time is measured."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from plugin.cli import cli


def test_bench_deploy_quick(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["bench", "deploy", "--quick", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "deploy.json").read_text())
    runs = report["streams"]["mlp"]
    assert set(runs) == {"full", "topk:0.01", "dpu:0.05"}
    full, topk, dpu = runs["full"], runs["topk:0.01"], runs["dpu:0.05"]
    for run in runs.values():
        assert run["updates"] == len(run["rows"]) == 3
        assert 0.2 < run["final_accuracy"] <= 1  # digits, 10 classes: well above chance
        assert all(r["bytes"] > 0 and r["total_ms"] > 0 for r in run["rows"])
    assert topk["bytes_per_update"] < 0.5 * full["bytes_per_update"]
    assert dpu["changed_share"] <= 0.05 + 0.01  # the mask (plus changed buffers, none here)
    assert dpu["bytes_per_update"] < 0.25 * full["bytes_per_update"]
    assert full["changed_share"] > 0.5
    assert (tmp_path / "deploy-mlp.png").stat().st_size > 1000
    assert report["resnet18"] is None
