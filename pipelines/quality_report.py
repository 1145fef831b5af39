"""`recsys evaluate`: the served lists beside the baselines, on every protocol, written as a
report a person can read (one table per protocol, one summary table, one plot).

Per protocol, the nightly's own training (`pipelines.nightly.train_bundle`: the stage gate on
a validation split, then every component on the test split's training side) produces the
bundle; validation figures come from the gate's bundle on the validation split, test figures
from the final bundle on the test split. The "sampled" protocol rides on leave-last-out's
bundles (the same split), ranking each held-out item among 99 never-interacted ones.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no screen on servers
import matplotlib.pyplot as plt

from pipelines.nightly import train_bundle
from pipelines.protocols import PROTOCOLS, holdout
from pipelines.report import new_report_dir
from pipelines.served_evaluation import (
    BEYOND_ACCURACY,
    CANDIDATES,
    METRICS,
    METRICS_50,
    UNION,
    ServedEvaluation,
    evaluate_served,
)
from pipelines.stage_gate import GateResult
from recsys.config import Config
from recsys.dataset import Dataset


@dataclass(frozen=True)
class QualityResult:
    dataset: str
    evaluations: tuple[ServedEvaluation, ...]
    gates: dict[str, GateResult]  # training protocol -> the stage gate's decisions
    requests: dict[str, dict[str, int]]  # training protocol -> ranker training counts


def evaluate_quality(
    dataset: Dataset,
    config: Config,
    protocols: tuple[str, ...] = PROTOCOLS,
    *,
    show_progress: bool = False,
) -> QualityResult:
    unknown = sorted(set(protocols) - set(PROTOCOLS))
    if unknown:
        raise ValueError(f"unknown protocol {unknown[0]!r}; known: {', '.join(PROTOCOLS)}")
    evaluations, gates, requests = [], {}, {}
    max_users = config.evaluation.max_users
    trained_for = {p: "leave_last_out" if p == "sampled" else p for p in protocols}
    for training in dict.fromkeys(trained_for.values()):
        chosen = config.replace(evaluation={"protocol": training})
        test = holdout(dataset, training, chosen)
        trained = train_bundle(test.train, chosen, show_progress=show_progress)
        gates[training], requests[training] = trained.gate, trained.counts
        for protocol in (p for p, t in trained_for.items() if t == training):
            valid = holdout(test.train, protocol, chosen, seed=1)
            tested = test if protocol == training else holdout(dataset, protocol, chosen)
            for bundle, held, split in (
                (trained.validation_bundle, valid, "validation"),
                (trained.bundle, tested, "test"),
            ):
                evaluations.append(
                    evaluate_served(
                        bundle,
                        chosen,
                        held,
                        split,
                        max_users=max_users,
                        show_progress=show_progress,
                    )
                )
    return QualityResult(dataset.name, tuple(evaluations), gates, requests)


def format_quality_report(result: QualityResult, title: str) -> str:
    lines = [f"# {title}", ""]
    lines += _summary_table(result)
    for evaluation in result.evaluations:
        lines += [
            "",
            f"## {evaluation.protocol}, {evaluation.split} ({evaluation.users} users)",
            "",
        ]
        names = [label for label, _, _ in (*METRICS, *METRICS_50)]
        header = [*names, *BEYOND_ACCURACY]
        lines += ["| model | " + " | ".join(header) + " |", "|---|" + "---:|" * len(header)]
        best = {n: max(v[n][0] for v in evaluation.metrics.values()) for n in names}
        for model, values in evaluation.metrics.items():
            cells = []
            for name in names:
                mean, error = values[name]
                cell = f"{mean:.4f} ± {error:.4f}"
                cells.append(f"**{cell}**" if mean == best[name] else cell)
            cells += [f"{evaluation.beyond[model][name]:.3f}" for name in BEYOND_ACCURACY]
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
        lines += [
            "",
            "coverage: share of the catalogue in any top 10; novelty: mean -log2 of the share "
            "of users who touched an item; diversity: mean pairwise cosine distance of the "
            "iALS item vectors in a top 10.",
        ]
        if not math.isnan(evaluation.hidden):  # measured: lists over the whole catalogue
            lines += [
                "",
                f"`serving.filters` hide {evaluation.hidden:.1%} of the held-out items from "
                "their user (already touched, out of stock, not sold in the user's region): no "
                "list can show them. The baselines choose, as every served list does, among "
                "the items the filters let through.",
            ]
    lines += ["", "## Stage gate (nightly's validation, per training protocol)", ""]
    for protocol, gate in result.gates.items():
        counts = result.requests.get(protocol, {})
        training = ", ".join(f"{v} {k}" for k, v in counts.items()) or "none (no stage kept)"
        lines.append(
            f"- {protocol}: kept {list(gate.kept) or 'no ranker'}; ranker training: {training}"
        )
        for decision in gate.decisions:
            state = "kept" if decision.kept else "dropped"
            lines.append(f"  - {decision.stage} {state}: {decision.reason}")
        if gate.rank is not None:  # Rank's own pass, on held-out + 99 sampled
            orders = ", ".join(f"{o} {v:.4f}" for o, v in gate.rank.orders.items())
            lines.append(f"  - `Rank`'s input in {gate.rank_order} order (NDCG@10: {orders})")
        for decision in gate.rank_decisions:
            state = "kept" if decision.kept else "left out"
            lines.append(f"  - {decision.stage} {state} by `Rank`: {decision.reason}")
    return "\n".join(lines) + "\n"


def _summary_table(result: QualityResult) -> list[str]:
    """NDCG@10 of every model on every protocol and split, one row per model."""
    columns = [(e.protocol, e.split) for e in result.evaluations]
    models = _models(result.evaluations)
    lines = [
        "NDCG@10 (mean ± standard error over users); `served:` rows are the real pipeline "
        "and cascade with the bundle's config, the last of them in each column its final "
        "list (— where that protocol's stage gate dropped the stage).",
        "",
        "| model | " + " | ".join(f"{p} {s}" for p, s in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for model in models:
        cells = []
        for evaluation in result.evaluations:
            value = evaluation.metrics.get(model, {}).get("NDCG@10")
            cells.append("—" if value is None else f"{value[0]:.4f} ± {value[1]:.4f}")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return lines


def write_quality_report(result: QualityResult, directory: str | Path, title: str) -> Path:
    out = new_report_dir(directory)
    (out / "metrics.json").write_text(
        json.dumps(
            {
                "dataset": result.dataset,
                "evaluations": [
                    {
                        "protocol": e.protocol,
                        "split": e.split,
                        "users": e.users,
                        "metrics": {
                            m: {n: list(v) for n, v in vs.items()} for m, vs in e.metrics.items()
                        },
                        "beyond_accuracy": e.beyond,
                        "hidden_by_filters": None if math.isnan(e.hidden) else e.hidden,
                    }
                    for e in result.evaluations
                ],
                "stage_gate": {p: g.summary() for p, g in result.gates.items()},
                "ranker_training": result.requests,
            },
            indent=2,
        )
    )
    _plot(result, out / "ndcg_at_10.png", title)
    (out / "report.md").write_text(
        format_quality_report(result, title) + "\n![NDCG@10](ndcg_at_10.png)\n"
    )
    return out


def _models(evaluations) -> list[str]:
    """Every model of `evaluations`, the served variants first in cascade order (the union,
    the orders of an input, then the stages), even where one protocol's gate dropped a stage."""
    served = list(dict.fromkeys(m for e in evaluations for m in e.served))
    served.sort(key=lambda m: (m != UNION, not m.startswith(CANDIDATES)))
    return list(dict.fromkeys([*served, *(m for e in evaluations for m in e.metrics)]))


def _plot(result: QualityResult, path: Path, title: str) -> None:
    """Grouped bars: NDCG@10 with its standard error per model, one group per test protocol."""
    tests = [e for e in result.evaluations if e.split == "test"]
    models = _models(tests)
    colours = plt.get_cmap("tab20")
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(tests) + 4), 4.5))
    width = 0.8 / max(len(models), 1)
    for i, model in enumerate(models):
        values = [e.metrics.get(model, {}).get("NDCG@10", (0.0, 0.0)) for e in tests]
        positions = [g + i * width for g in range(len(tests))]
        ax.bar(
            positions,
            [v[0] for v in values],
            width,
            yerr=[v[1] for v in values],
            label=model,
            color=colours(i % colours.N),
            hatch="//" if model.startswith("served") else "",
        )
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(tests))])
    ax.set_xticklabels([e.protocol for e in tests])
    ax.set_ylabel("NDCG@10 (test)")
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
