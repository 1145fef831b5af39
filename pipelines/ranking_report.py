"""The ranking-stage report: each stage's list quality, the rankers' AUC/logloss, importance."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no screen on servers
import matplotlib.pyplot as plt

from pipelines.ranking_evaluation import K, RankingStageResult
from pipelines.report import new_report_dir

SHOWN = (f"ndcg@{K}", f"recall@{K}", f"mrr@{K}", "auc", "logloss")


def format_ranking_report(result: RankingStageResult, title: str) -> str:
    lines = [
        f"# {title}",
        "",
        f"Cut-offs (Unix time) train labels from {result.cutoffs[0]}, validation from "
        f"{result.cutoffs[1]}, test from {result.cutoffs[2]}; {result.users['test']} test users "
        f"({result.users['test with a positive candidate']} with candidates); rows "
        + ", ".join(f"{name} {n}" for name, n in result.rows.items())
        + ".",
        "A user whose held-out positives no generator found counts with zero hits.",
        "",
        "| stage | " + " | ".join(SHOWN) + " |",
        "|---|" + "---:|" * len(SHOWN),
    ]
    for stage, values in result.metrics.items():
        cells = [f"{values[m]:.4f}" if m in values else "—" for m in SHOWN]
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## LightGBM feature importance (gain, top 20)",
        "",
        "| feature | gain | splits |",
    ]
    lines.append("|---|---:|---:|")
    for name, values in list(result.importance.items())[:20]:
        lines.append(f"| {name} | {values['gain']:.1f} | {values['split']:.0f} |")
    if result.dlrm_history:
        keys = list(result.dlrm_history[0])
        lines += ["", "## DLRM epochs", "", "| " + " | ".join(keys) + " |"]
        lines.append("|" + "---:|" * len(keys))
        for epoch in result.dlrm_history:
            lines.append("| " + " | ".join(f"{epoch[k]:.4f}" for k in keys) + " |")
    return "\n".join(lines) + "\n"


def write_ranking_report(result: RankingStageResult, directory: str | Path, title: str) -> Path:
    out = new_report_dir(directory)
    (out / "metrics.json").write_text(json.dumps(dataclasses.asdict(result), indent=2))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    stages = list(result.metrics)
    left.barh(stages, [result.metrics[s][f"ndcg@{K}"] for s in stages], color="C0")
    left.set_xlabel(f"NDCG@{K}")
    left.invert_yaxis()
    left.set_title(title, fontsize=9)
    top = list(result.importance.items())[:15]
    right.barh([n for n, _ in top], [v["gain"] for _, v in top], color="C1")
    right.invert_yaxis()
    right.set_xlabel("LightGBM gain")
    right.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(out / "ranking.png", dpi=110)
    plt.close(fig)
    (out / "report.md").write_text(
        format_ranking_report(result, title) + "\n![stages and importance](ranking.png)\n"
    )
    return out
