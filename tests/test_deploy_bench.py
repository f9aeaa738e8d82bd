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
    assert set(runs) == {"full", "topk:0.01", "dpu:0.05", "dpu:0.05@q8"}
    full, topk, dpu, q8 = runs["full"], runs["topk:0.01"], runs["dpu:0.05"], runs["dpu:0.05@q8"]
    for run in runs.values():
        assert run["updates"] == len(run["rows"]) == 3
        assert 0.2 < run["final_accuracy"] <= 1  # digits, 10 classes: well above chance
        assert all(r["bytes"] > 0 and r["total_ms"] > 0 for r in run["rows"])
    assert topk["bytes_per_update"] < 0.5 * full["bytes_per_update"]
    assert dpu["changed_share"] <= 0.05 + 0.01  # the mask (plus changed buffers, none here)
    assert dpu["bytes_per_update"] < 0.25 * full["bytes_per_update"]
    assert full["changed_share"] > 0.5
    # int8-coded differences: values a quarter of fp32, the same indices and header (about
    # 300 bytes, much of these small patches)
    shipped = [(a["bytes"], b["bytes"]) for a, b in zip(q8["rows"], dpu["rows"])
               if a["changed"] and b["changed"]]
    assert shipped and all(small < 0.6 * large for small, large in shipped)
    assert q8["final_accuracy"] > 0.2
    assert (tmp_path / "deploy-mlp.png").stat().st_size > 1000
    assert report["resnet18"] is None


def test_bench_deploy_names_a_bad_method_or_seed_list(tmp_path: Path) -> None:
    for args, message in ((["--methods", "dpu:0.01@int4"], "unknown values 'int4'"),
                          (["--methods", "dpu:2"], "ratio must be in (0, 1]"),
                          (["--methods", "topk:x"], "'x' is not a number"),
                          (["--seeds", "0,a"], "not a comma-separated list")):
        result = CliRunner().invoke(cli, ["bench", "deploy", "--no-resnet", "--updates", "1",
                                          "--out", str(tmp_path), *args])
        assert result.exit_code == (2 if "--seeds" in args else 1), result.output
        assert message in result.output, result.output
        assert "Traceback" not in result.output


def test_target_check_names_the_methods_within_the_bytes_and_the_accuracy() -> None:
    from evaluator.deploy_bench import target_check

    def run(nbytes: float, accuracy: float) -> dict:
        return {"bytes_per_update": nbytes, "final_accuracy": accuracy}

    streams = {"lenet5": {"full": run(1000, 0.900), "full-warm": run(1000, 0.910),
                          "close": run(9, 0.896), "worse": run(10, 0.894),
                          "larger": run(11, 0.950)}}
    check = target_check(streams)["lenet5"]
    assert [r["method"] for r in check["within_bytes"]] == ["close", "worse"]
    assert check["met_by"] == ["close"]
    close = check["within_bytes"][0]
    assert abs(close["points_vs_full"] + 0.4) < 1e-9
    assert abs(close["points_vs_full_warm"] + 1.4) < 1e-9
