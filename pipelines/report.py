"""Where evaluation reports go: a fresh timestamped directory per run."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # every report's plot is drawn without a screen (servers, CI)


def new_report_dir(directory: str | Path) -> Path:
    """A fresh timestamped directory under `directory` (a second run never overwrites)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = Path(directory) / stamp
    suffix = 1
    while out.exists():
        out, suffix = Path(directory) / f"{stamp}-{suffix}", suffix + 1
    out.mkdir(parents=True)
    return out


def plot_recall_per_block(
    axis: Any, scores: Mapping[str, Sequence[Any]], title: str, ylabel: str
) -> None:
    """One line per name: each block's recall with its standard error (the streaming
    reports' per-block scores: anything with .recall and .recall_se)."""
    for i, (name, blocks) in enumerate(scores.items()):
        axis.errorbar(
            range(1, len(blocks) + 1),
            [s.recall for s in blocks],
            yerr=[s.recall_se for s in blocks],
            marker="o",
            capsize=3,
            label=name,
            color=f"C{i}",
        )
    axis.set_title(title)
    axis.set_xlabel("block")
    axis.set_ylabel(ylabel)
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=7)
