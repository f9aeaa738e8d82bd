"""Write a profiler run: a table (mean ± std), JSON with every matrix, PNG plots."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evaluator.profiler import RunResult, aggregate

# (summary key, header, scale, decimals): accuracies in percent with one decimal.
COLUMNS = [("acc", "ACC", 100, 1), ("bwt", "BWT", 100, 1), ("fwt", "FWT", 100, 1),
           ("forgetting", "Forgetting", 100, 1), ("ms", "MS", 1, 2), ("sss", "SSS", 1, 2),
           ("train_s", "train s", 1, 2), ("model_mb", "model MB", 1, 2),
           ("stored_samples", "stored", 1, 0)]


def _cell(mean: float, std: float, scale: float, digits: int) -> str:
    if math.isnan(mean):
        return "-"
    text = f"{mean * scale:.{digits}f}"
    return text if math.isnan(std) else f"{text} ± {std * scale:.{digits}f}"


def table_rows(results: Sequence[RunResult]) -> list[list[str]]:
    """Header and one row per strategy; accuracies in percent."""
    rows = [["strategy", *(title for _, title, _, _ in COLUMNS)]]
    for name, metrics in aggregate(results).items():
        rows.append([name, *(_cell(*metrics[key], scale, digits)
                             for key, _, scale, digits in COLUMNS)])
    return rows


def markdown_table(results: Sequence[RunResult]) -> str:
    rows = table_rows(results)
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(lines)


def to_json(results: Sequence[RunResult], meta: dict[str, Any]) -> dict[str, Any]:
    def clean(value: float) -> float | None:
        return None if math.isnan(value) else value

    return {
        "meta": meta,
        "summary": {name: {key: {"mean": clean(m), "std": clean(s)}
                           for key, (m, s) in metrics.items()}
                    for name, metrics in aggregate(results).items()},
        "runs": [{"strategy": r.strategy, "seed": r.seed, "matrix": r.matrix.to_dict(),
                  "baseline": r.baseline, **{k: clean(v) for k, v in r.summary().items()}}
                 for r in results],
    }


def write_plots(results: Sequence[RunResult], out_dir: Path) -> list[Path]:
    """Heat map of the mean accuracy matrix per strategy; average seen accuracy over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    strategies = list(dict.fromkeys(r.strategy for r in results))
    means = {s: np.nanmean(np.stack([r.matrix.values for r in results if r.strategy == s]),
                           axis=0) for s in strategies}
    paths = []
    cols = min(4, len(strategies))
    rows = math.ceil(len(strategies) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    for ax, name in zip(axes.flat, strategies):
        image = ax.imshow(means[name] * 100, vmin=0, vmax=100, cmap="viridis")
        ax.set_title(name)
        ax.set_xlabel("tested on experience")
        ax.set_ylabel("after experience")
    for ax in list(axes.flat)[len(strategies):]:
        ax.axis("off")
    fig.colorbar(image, ax=axes, shrink=0.8, label="accuracy %")
    paths.append(out_dir / "accuracy_matrix.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in strategies:
        matrix = means[name]
        seen = [float(np.nanmean(matrix[i, : i + 1])) * 100 for i in range(len(matrix))]
        ax.plot(range(1, len(seen) + 1), seen, marker="o", label=name)
    ax.set_xlabel("experiences trained")
    ax.set_ylabel("mean accuracy on experiences seen (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    paths.append(out_dir / "accuracy_over_experiences.png")
    fig.savefig(paths[-1], dpi=110, bbox_inches="tight")
    plt.close(fig)
    return paths


def write_report(results: Sequence[RunResult], meta: dict[str, Any], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "results.json"
    json_path.write_text(json.dumps(to_json(results, meta), indent=2))
    md_path = out_dir / "results.md"
    md_path.write_text(markdown_table(results) + "\n")
    return [json_path, md_path, *write_plots(results, out_dir)]
