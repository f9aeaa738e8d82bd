"""``modelci-e bench annotation --quick``: every selection arm runs through the CL envelope's
update, spends exactly its budget and is scored against labeling nothing and everything.

The accuracies depend on the run; the test checks what holds by construction (labels spent,
the gain formula, the report) and that labeling everything clearly beats labeling nothing.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from cl_server.embedded import LabelStudioEndpoint
from evaluator.annotation_bench import SELECTION_ARMS, SelectionBenchSettings
from evaluator.annotation_sync_bench import SyncBenchSettings, run_sync_bench, sync_report_lines
from plugin.cli import cli


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("annotation")
    # The sync part starts a Label Studio of its own: run here against the session's server.
    result = CliRunner().invoke(cli, ["bench", "annotation", "--quick", "--sync-samples", "0",
                                      "--out-dir", str(out)])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_every_arm_spends_its_budget_and_is_scored(report: tuple[Path, str]) -> None:
    out, output = report
    result = json.loads((out / "annotation.json").read_text())
    selection = result["selection"]
    quick = SelectionBenchSettings.quick()
    assert selection["pool"] == quick.pool_size == 600
    assert selection["budget_labels"] == 60 and selection["round_labels"] == [20, 20, 20]
    assert list(selection["summary"]) == ["none", "all", *SELECTION_ARMS]
    (run,) = selection["runs"]  # one seed
    arms = run["arms"]
    none, every = arms["none"]["accuracy"], arms["all"]["accuracy"]
    assert every >= none + 0.2  # the champion knows half of the classes
    assert arms["none"]["new_accuracy"] == 0.0  # it cannot predict a class it has not seen
    assert arms["none"]["labels"] == 0 and arms["all"]["labels"] == 600
    for name in SELECTION_ARMS:
        arm = arms[name]
        assert arm["labels"] == 60
        assert [r["labels"] for r in arm["rounds"]] == [20, 40, 60]
        assert arm["rounds"][-1]["accuracy"] == arm["accuracy"]
        assert arm["recovered_gain"] == round((arm["accuracy"] - none) / (every - none), 3)
        assert 0.0 <= arm["new_class_share"] <= 1.0
        assert math.isclose(arm["accuracy"], sum(arm["per_class"].values()) / 10, abs_tol=1e-6)
    assert arms["none"]["recovered_gain"] == 0.0 and arms["all"]["recovered_gain"] == 1.0
    verdicts = selection["target"]["selectors"]
    assert set(verdicts) == {"least-confidence", "margin", "entropy"}
    for name, verdict in verdicts.items():
        assert verdict["passed"] == (verdict["mean"] >= 0.9)
        assert verdict["mean"] == selection["summary"][name]["recovered_gain"]["mean"]
    assert "least-confidence" in output and "Target:" in output


def test_the_report_has_a_selection_section_and_a_plot(report: tuple[Path, str]) -> None:
    out, _ = report
    markdown = (out / "annotation.md").read_text()
    assert "## Selection" in markdown and "| margin | 60 |" in markdown
    assert "Target:" in markdown
    assert (out / "annotation-selection.png").stat().st_size > 10_000


def test_a_budget_below_one_label_per_round_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["bench", "annotation", "--budget", "0.001",
                                      "--out-dir", str(tmp_path)])
    assert result.exit_code != 0 and "at least one per round" in result.output


def test_annotations_sync_through_label_studio_exactly_once(
        label_studio: LabelStudioEndpoint, tmp_path: Path) -> None:
    result = run_sync_bench(SyncBenchSettings(samples=100), work_dir=tmp_path,
                            endpoint=label_studio)
    assert result["push"] == {"sent": 100, "seconds": result["push"]["seconds"], "error": None}
    assert result["annotate"]["answered"] == 100
    assert result["pull"]["labeled"] == result["pull"]["completed"] == 100
    assert result["pull"]["error"] is None
    assert result["pull_again"]["labeled"] == result["pull_again"]["completed"] == 0
    assert result["stored"] == result["stored_right"] == 100  # once each, the true label
    markdown = "\n".join(sync_report_lines(result))
    assert "| pull (cursor, into the store and the labeled stream) | 100 |" in markdown
