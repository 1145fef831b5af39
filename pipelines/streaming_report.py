"""The streaming report: Recall@K and MRR@K per block and update cost, per way of updating."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no screen on servers
import matplotlib.pyplot as plt

from pipelines.report import new_report_dir, plot_recall_per_block
from pipelines.session_streaming import SessionStreamResult
from pipelines.session_streaming_report import (
    format_session_report,
    plot_sessions,
    session_metrics,
)
from pipelines.streaming_evaluation import RETRAIN, STEPS, StreamingResult


def format_streaming_report(results: Sequence[StreamingResult], title: str) -> str:
    lines = [
        f"# {title}",
        "",
        "seed 003 §V.E: pre-train on the first 60% of sessions, then for each of the five",
        "chronological blocks recommend, measure, update. The list is the iALS generator's",
        "(u·v over items with a vector, seen items excluded; users without a vector get the",
        "history's most popular items). Update cost: CPU seconds of all threads, summed over",
        "the updates (R is kept up to date outside the timing, as the event log keeps it).",
    ]
    for result in results:
        k = result.k
        lines += [
            "",
            f"## {result.dataset}",
            "",
            f"Pre-training: {result.pretrain_seconds:.2f} s CPU. Full retrain inside "
            f"'steps + retrain': every {result.retrain_every} blocks.",
            "",
            f"| update | Recall@{k} | MRR@{k} | update CPU s | "
            + " | ".join(f"R@{k} block {b + 1}" for b in range(result.blocks))
            + " |",
            "|---|---:|---:|---:|" + "---:|" * result.blocks,
        ]
        for strategy, scores in result.scores.items():
            lines.append(
                f"| {strategy} | {result.mean_recall(strategy):.4f} | "
                f"{result.mean_mrr(strategy):.4f} | {result.update_seconds(strategy):.3f} | "
                + " | ".join(f"{s.recall:.4f} ± {s.recall_se:.4f}" for s in scores)
                + " |"
            )
        lines += [
            "",
            "Update CPU seconds before each block (block 1 is scored on the pre-trained model):",
            "",
            "| update | " + " | ".join(f"block {b + 1}" for b in range(result.blocks)) + " |",
            "|---|" + "---:|" * result.blocks,
        ]
        for strategy, scores in result.scores.items():
            lines.append(
                f"| {strategy} | " + " | ".join(f"{s.update_seconds:.3f}" for s in scores) + " |"
            )
        users = ", ".join(str(s.users) for s in result.scores[STEPS])
        recall, cost = result.steps_against_retrain()
        lines += [
            "",
            f"Users measured per block: {users}.",
            f"**{STEPS}** keep **{recall:.1%}** of **{RETRAIN}**'s Recall@{k} at "
            f"**{cost:.1%}** of its update compute (target: at least 95% at at most 10%).",
        ]
    return "\n".join(lines) + "\n"


def write_streaming_report(
    results: Sequence[StreamingResult],
    directory: str | Path,
    title: str,
    sessions: Sequence[SessionStreamResult] = (),
) -> Path:
    """report.md, metrics.json and the plots: the ALS steps' part, then the session models'."""
    out = new_report_dir(directory)
    (out / "metrics.json").write_text(
        json.dumps(
            {
                "als": [
                    {
                        "dataset": r.dataset,
                        "k": r.k,
                        "retrain_every": r.retrain_every,
                        "pretrain_seconds": r.pretrain_seconds,
                        "blocks": {
                            strategy: [dataclasses.asdict(s) for s in scores]
                            for strategy, scores in r.scores.items()
                        },
                        "steps_vs_retrain": dict(
                            zip(
                                ("recall_ratio", "cost_ratio"),
                                r.steps_against_retrain(),
                                strict=True,
                            )
                        ),
                    }
                    for r in results
                ],
                "sessions": session_metrics(sessions),
            },
            indent=2,
        )
    )
    text = ""
    if results:
        _plot(results, out / "streaming.png", title)
        text = format_streaming_report(results, title) + "\n![Recall per block](streaming.png)\n"
    if sessions:
        plot_sessions(sessions, out / "sessions.png")
        text += "\n" + format_session_report(sessions) + "\n![Next-item recall](sessions.png)\n"
    (out / "report.md").write_text(text)
    return out


def _plot(results: Sequence[StreamingResult], path: Path, title: str) -> None:
    """Per dataset: Recall@K per block (lines) and the total update cost (bars)."""
    fig, axes = plt.subplots(2, len(results), figsize=(5.5 * len(results), 7), squeeze=False)
    for column, result in enumerate(results):
        quality, cost = axes[0][column], axes[1][column]
        strategies = list(result.scores)
        plot_recall_per_block(quality, result.scores, result.dataset, f"Recall@{result.k}")
        cost.bar(
            range(len(strategies)),
            [result.update_seconds(s) for s in strategies],
            color=[f"C{i}" for i in range(len(strategies))],
        )
        cost.set_xticks(range(len(strategies)))
        cost.set_xticklabels(strategies, rotation=20, fontsize=7, ha="right")
        cost.set_ylabel("update CPU seconds (all blocks)")
        cost.grid(True, axis="y", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
