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
    out = new_report_dir(directory)
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


def new_report_dir(directory: str | Path) -> Path:
    """A fresh timestamped directory under `directory` (a second run never overwrites)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = Path(directory) / stamp
    suffix = 1
    while out.exists():
        out, suffix = Path(directory) / f"{stamp}-{suffix}", suffix + 1
    out.mkdir(parents=True)
    return out


def format_report(result: EvaluationResult, title: str) -> str:
    models = list(result.metrics)
    metric_names = list(dict.fromkeys(m for values in result.metrics.values() for m in values))
    lines = [
        f"# {title}",
        "",
        f"Holdout starts at Unix time {result.cutoff}; "
        f"users evaluated: {result.users['evaluated']} "
        f"({result.users['warm']} seen in training, {result.users['cold']} cold).",
        "Metrics prefixed `warm_` count only users seen in training; cold users get the",
        "popularity top from every model.",
        "",
        "| metric | " + " | ".join(models) + " |",
        "|---|" + "---:|" * len(models),
    ]
    for name in metric_names:
        values = [result.metrics[model].get(name) for model in models]
        best = max(v for v in values if v is not None)
        cells = [
            "—" if v is None else (f"**{v:.4f}**" if v == best and len(models) > 1 else f"{v:.4f}")
            for v in values
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _plot_curves(result: EvaluationResult, path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    colors: dict[str, str] = {}
    for name, curve in result.curves.items():
        model = name.split(" (")[0]
        color = colors.setdefault(model, f"C{len(colors)}")
        style = "--" if "warm" in name else "-"
        ax.plot(list(curve), list(curve.values()), style, marker="o", color=color, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("K (list length)")
    ax.set_ylabel("Recall@K")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
