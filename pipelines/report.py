"""Evaluation reports a person can read: Markdown tables, a JSON copy, and a plot."""

from __future__ import annotations

import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no screen on servers
import matplotlib.pyplot as plt

from pipelines.evaluation import EvaluationResult


def write_report(result: EvaluationResult, directory: str | Path, title: str) -> Path:
    """Write report.md, metrics.json and recall_at_k.png into a new timestamped directory."""
    out = Path(directory) / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(
        json.dumps(
            {"metrics": result.metrics, "curves": result.curves, "users": result.users}, indent=2
        )
    )
    _plot_curves(result, out / "recall_at_k.png", title)
    (out / "report.md").write_text(
        format_report(result, title) + "\n![recall@K](recall_at_k.png)\n"
    )
    return out


def format_report(result: EvaluationResult, title: str) -> str:
    metric_names = list(next(iter(result.metrics.values())))
    lines = [
        f"# {title}",
        "",
        f"Holdout starts at Unix time {result.cutoff}; "
        f"users evaluated: {result.users['evaluated']} "
        f"({result.users['warm']} seen in training, {result.users['cold']} cold).",
        "",
        "| model | " + " | ".join(metric_names) + " |",
        "|---|" + "---|" * len(metric_names),
    ]
    for model, values in result.metrics.items():
        lines.append(f"| {model} | " + " | ".join(f"{values[m]:.4f}" for m in metric_names) + " |")
    return "\n".join(lines) + "\n"


def _plot_curves(result: EvaluationResult, path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for model, curve in result.curves.items():
        ax.plot(list(curve), list(curve.values()), marker="o", label=model)
    ax.set_xscale("log")
    ax.set_xlabel("K (list length)")
    ax.set_ylabel("Recall@K")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
