"""The CL profiler: `modelci-e bench cl --quick` end to end, and the strategies' expected ordering."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from evaluator.profiler import BenchSettings, run_strategy
from model_factory.scenarios import make_scenario

CLI = [sys.executable, "-m", "plugin.cli"]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_bench_cl_quick_writes_table_json_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    result = run_cli("bench", "cl", "--quick", "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    for strategy in ("naive", "ewc", "si", "lwf", "mas", "replay", "proactive", "full-retr"):
        assert strategy in result.stdout
    report = json.loads((out / "results.json").read_text())
    assert report["meta"]["scenario"] == "split-digits"
    assert len(report["runs"]) == 8
    for run in report["runs"]:
        values = run["matrix"]["accuracy"]
        assert len(values) == 5 and all(len(row) == 5 for row in values)
        assert 0.0 <= run["acc"] <= 1.0
    summary = report["summary"]
    assert summary["full-retrain"]["acc"]["mean"] > summary["naive"]["acc"]["mean"] + 0.3
    for name in ("accuracy_matrix.png", "accuracy_over_experiences.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "results.md").read_text().startswith("| strategy |")


@pytest.mark.parametrize(("args", "message"), [
    (["--strategies", "naive,ewx"], "--strategies: unknown strategy 'ewx'"),
    (["--scenario", "split-cifar"], "--scenario: unknown scenario 'split-cifar'"),
])
def test_bench_cl_bad_options_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    result = run_cli("bench", "cl", "--quick", "--out", str(tmp_path / "o"), *args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr.replace("\n", " ")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()


def test_class_incremental_naive_forgets_and_replay_remembers() -> None:
    scenario = make_scenario("split-digits", seed=0)
    settings = BenchSettings(epochs=3, buffer_size=300, learning_rate=2e-3)
    naive = run_strategy(scenario, "naive", 0, settings).summary()
    replay = run_strategy(scenario, "replay", 0, settings).summary()
    assert naive["acc"] < 0.35 and naive["forgetting"] > 0.6
    assert replay["acc"] > naive["acc"] + 0.2
    assert replay["stored_samples"] == 300
    assert not math.isnan(naive["bwt"]) and naive["bwt"] < -0.5


def test_unknown_strategy_is_refused() -> None:
    scenario = make_scenario("split-digits", seed=0)
    with pytest.raises(ValueError, match="unknown strategy 'gem'"):
        run_strategy(scenario, "gem", 0, BenchSettings())


def test_bench_stream_quick_proactive_cost_is_flat(tmp_path: Path) -> None:
    out = tmp_path / "stream"
    result = run_cli("bench", "stream", "--quick", "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((out / "stream.json").read_text())
    proactive, full = report["per_update"]["proactive"], report["per_update"]["full-retrain"]
    assert len(set(proactive["sample_cost"])) == 1  # t new + (b - t) history, every step
    assert full["sample_cost"] == sorted(full["sample_cost"])
    assert full["sample_cost"][-1] == 5 * 5 * 128  # 5 epochs over 5 chunks of 128
    summary = report["summary"]
    assert summary["proactive"]["final_accuracy"] > summary["online"]["final_accuracy"]
    assert summary["proactive"]["total_samples"] < summary["full-retrain"]["total_samples"]


def test_bench_stream_too_long_for_the_data_exits_2(tmp_path: Path) -> None:
    result = run_cli("bench", "stream", "--dataset", "digits", "--updates", "50",
                     "--samples-per-update", "100", "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert result.returncode == 2
    assert "the dataset has 1797" in result.stderr.replace("\n", " ")


def test_text_scenarios_are_profiled_on_frozen_sentence_embeddings() -> None:
    from evaluator.profiler import embed_text

    scenario = make_scenario("text-rt-imdb", seed=0, n_per_domain=20)
    embedded = embed_text(scenario)
    assert embedded.input_shape == (384,) and embedded.input_kind == "tabular"
    for before, after in zip(scenario.experiences, embedded.experiences, strict=True):
        assert after.train_x.shape == (len(before.train_x), 384)
        assert torch.equal(after.train_y, before.train_y)
    result = run_strategy(scenario, "naive", 0, BenchSettings(epochs=1))
    assert result.matrix.values.shape == (2, 2)
