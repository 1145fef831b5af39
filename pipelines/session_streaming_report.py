"""The session models' part of the streaming report: Recall@K and MRR@K of the next item per
block, per method, and SSRM's update cost (pipelines.session_streaming)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no screen on servers
import matplotlib.pyplot as plt

from pipelines.report import plot_recall_per_block
from pipelines.session_streaming import (
    GAG_STATIC,
    GAG_UNIFORM,
    GAG_WASSERSTEIN,
    MGIA_STATIC,
    MGIA_UNIFORM,
    MGIA_WASSERSTEIN,
    SSRM_ACTIVE,
    SSRM_STATIC,
    SSRM_UNIFORM,
    SessionStreamResult,
)


def format_session_report(results: Sequence[SessionStreamResult]) -> str:
    lines = [
        "# Session models on a stream",
        "",
        "seed 003 §V.E: sessions ordered by end time; the first 60% pre-train, the other 40%",
        "form five chronological blocks. Every prefix of every session in a block asks for its",
        "next item (Recall@K, MRR@K over the whole catalogue, ties counted against the item);",
        "after each block the updating models learn from it. SSRM updates draw",
        "`sessions.update_sample` sessions `sessions.update_steps` times from the block's",
        "sessions and a reservoir of `sessions.reservoir_size` past ones.",
    ]
    for result in results:
        k = result.k
        lines += [
            "",
            f"## {result.dataset}",
            "",
            f"{result.sessions} sessions of 2-20 items; SSRM pre-training "
            f"{result.pretrain_seconds:.1f} s. Prefixes per block: "
            + ", ".join(str(s.predictions) for s in next(iter(result.scores.values())))
            + ".",
            "",
            f"| method | Recall@{k} | MRR@{k} | update CPU s | "
            + " | ".join(f"R@{k} block {b + 1}" for b in range(result.blocks))
            + " |",
            "|---|---:|---:|---:|" + "---:|" * result.blocks,
        ]
        for method, scores in result.scores.items():
            cost = sum(s.update_seconds for s in scores)
            lines.append(
                f"| {method} | {result.mean_recall(method):.4f} | {result.mean_mrr(method):.4f} "
                f"| {cost:.1f} | "
                + " | ".join(f"{s.recall:.4f} ± {s.recall_se:.4f}" for s in scores)
                + " |"
            )
        static, active, uniform = (
            result.mean_recall(m) for m in (SSRM_STATIC, SSRM_ACTIVE, SSRM_UNIFORM)
        )
        lines += [
            "",
            f"SSRM updates: Recall@{k} {static:.4f} without, {active:.4f} with active "
            f"sampling, {uniform:.4f} with uniform sampling. "
            + " ".join(
                f"{name}: {result.mean_recall(none):.4f} without, "
                f"{result.mean_recall(by_distance):.4f} with Wasserstein selection, "
                f"{result.mean_recall(alike):.4f} with uniform."
                for name, (none, by_distance, alike) in (
                    ("GAG", (GAG_STATIC, GAG_WASSERSTEIN, GAG_UNIFORM)),
                    ("MGIA", (MGIA_STATIC, MGIA_WASSERSTEIN, MGIA_UNIFORM)),
                )
            ),
        ]
    return "\n".join(lines) + "\n"


def session_metrics(results: Sequence[SessionStreamResult]) -> list[dict]:
    return [
        {
            "dataset": r.dataset,
            "k": r.k,
            "sessions": r.sessions,
            "pretrain_seconds": r.pretrain_seconds,
            "blocks": {
                m: [dataclasses.asdict(s) for s in scores] for m, scores in r.scores.items()
            },
        }
        for r in results
    ]


def plot_sessions(results: Sequence[SessionStreamResult], path: Path) -> None:
    """Per dataset: Recall@K of each method per block."""
    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.5), squeeze=False)
    for column, result in enumerate(results):
        plot_recall_per_block(
            axes[0][column], result.scores, result.dataset, f"next-item Recall@{result.k}"
        )
    fig.suptitle("Session models on a stream")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
