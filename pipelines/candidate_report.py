"""The candidate-stage report: recall of the union and each generator's marginal recall."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no screen on servers
import matplotlib.pyplot as plt

from pipelines.candidate_evaluation import UNION, CandidateStageResult
from pipelines.report import new_report_dir


def format_candidate_report(result: CandidateStageResult, title: str) -> str:
    ks = result.cutoffs
    users = result.users
    lines = [
        f"# {title}",
        "",
        f"Chronological holdout from Unix time {result.cutoff_time}; {users['evaluated']} test "
        f"users sampled of {users['eligible']} with new held-out positives "
        f"({users['warm']} seen in training, {users['cold']} cold).",
        "Union@K interleaves the generators in proportion to their serving budgets; a",
        "generator alone at K is its own top K. Marginal = union - union without it.",
        "",
        "| source | "
        + " | ".join(
            [f"recall@{k}" for k in ks]
            + [f"marginal@{k}" for k in ks]
            + [f"warm recall@{k}" for k in ks]
            + ["returned", "ms/request"]
        )
        + " |",
        "|---|" + "---:|" * (3 * len(ks) + 2),
        _row(
            f"**{UNION}**",
            [f"**{result.recall[UNION][k]:.4f}**" for k in ks]
            + [""] * len(ks)
            + [f"**{result.recall_warm[UNION][k]:.4f}**" for k in ks]
            + ["", ""],
        ),
    ]
    for name in result.generators:
        lines.append(
            _row(
                name,
                [f"{result.recall[name][k]:.4f}" for k in ks]
                + [f"{result.marginal(name, k):+.4f}" for k in ks]
                + [f"{result.recall_warm[name][k]:.4f}" for k in ks]
                + [f"{result.mean_returned[name]:.0f}", f"{result.ms_per_request[name]:.2f}"],
            )
        )
    lines.append("")
    for k in ks:
        best, value = result.best_single(k)
        verdict = "beats" if result.recall[UNION][k] > value else "does NOT beat"
        lines.append(
            f"- recall@{k}: the union ({result.recall[UNION][k]:.4f}) {verdict} the best "
            f"single generator, {best} ({value:.4f})."
        )
    if result.ratings is not None:
        lines += [
            "",
            "## eALS on explicit ratings (same holdout)",
            "",
            result.ratings.format_table(),
        ]
    lines += [
        "",
        "## Build time on the training part",
        "",
        "| step | seconds |",
        "|---|---:|",
        *(f"| {step} | {sec:.2f} |" for step, sec in result.build_seconds.items()),
    ]
    return "\n".join(lines) + "\n"


def _row(name: str, cells: list[str]) -> str:
    return f"| {name} | " + " | ".join(cells) + " |"


def write_candidate_report(result: CandidateStageResult, directory: str | Path, title: str) -> Path:
    """report.md, metrics.json and two plots in a new timestamped directory."""
    out = new_report_dir(directory)
    payload = dataclasses.asdict(result)
    payload["ratings"] = None if result.ratings is None else result.ratings.metrics
    (out / "metrics.json").write_text(json.dumps(payload, indent=2, default=str))
    _plot_recall(result, out / "recall_at_k.png", title)
    _plot_marginal(result, out / "marginal_recall.png")
    (out / "report.md").write_text(
        format_candidate_report(result, title)
        + "\n![recall@K](recall_at_k.png)\n\n![marginal recall](marginal_recall.png)\n"
    )
    return out


def _plot_recall(result: CandidateStageResult, path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ks = list(result.cutoffs)
    ax.plot(ks, [result.recall[UNION][k] for k in ks], "-o", lw=3, color="black", label=UNION)
    for i, name in enumerate(result.generators):
        ax.plot(ks, [result.recall[name][k] for k in ks], "--o", color=f"C{i}", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("K (candidates)")
    ax.set_ylabel("Recall@K")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_marginal(result: CandidateStageResult, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    names = list(result.generators)
    width = 0.8 / len(result.cutoffs)
    for j, k in enumerate(result.cutoffs):
        offsets = [i + j * width for i in range(len(names))]
        ax.bar(offsets, [result.marginal(n, k) for n in names], width, label=f"K={k}")
    ax.set_xticks([i + width * (len(result.cutoffs) - 1) / 2 for i in range(len(names))])
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_ylabel("recall lost when left out")
    ax.set_title("Marginal recall of each generator (leave-one-out)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
