"""A ranking stage ships only if it earns its place (issue "Ranking that earns its place").

On a validation split (the evaluation protocol applied to the training data: never a test
user), each configured stage is added in turn to the stages kept so far and served through
the real pipeline; it is kept only if its final list beats its input's on NDCG@10 (a mean
over the same users; a tie is not a gain). A dropped stage is recorded in the bundle
(`TrainedRankers.dropped`) and in the manifest, with the figures, and serving skips it.

`Rank` orders items the caller chose, which may include items the user touched before (a
shop's next event is often the purchase of an item viewed): the rankers learn from first
touches (serving never offers a touched item), so a stage can order Recommend's candidates
better and a caller's items worse. A second pass decides for `Rank` alone, over the stages
the first kept, on the held-out item + 99 sampled split of the same validation users
(`rank_held`), served through `Rank`; what it leaves out goes to
`TrainedRankers.rank_dropped`. That pass first chooses the order of `Rank`'s input among
`ranking.rank_orders` (ranking/rank_orders.py: iALS, EASE, recent EASE), keeping the first
unless another beats it; `Rank`'s stages must then beat that order. The choice goes to
`TrainedRankers.rank_order`.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from pipelines.protocols import Holdout
from pipelines.served_evaluation import UNION, ServedEvaluation, evaluate_served, stage_label
from ranking.rankers import stage_read_by
from recsys.config import Config
from recsys.loaded_bundle import LoadedBundle
from recsys.metrics import mean_and_error

log = logging.getLogger(__name__)

GATE_METRIC = "NDCG@10"
UNION_METRIC = "HR@50"  # the candidate union's recall of the held-out item, in iALS order
RANK_PROTOCOL = "sampled"  # what Rank's own pass is decided on


@dataclass(frozen=True)
class StageDecision:
    stage: str
    kept: bool
    value: float  # the gate metric with the stage
    input_value: float  # ... and of its input (the stages kept before it)
    reason: str
    # standard error of value - input_value, paired over the validation users: a gap within
    # about two of them is as likely noise as not (NaN where the stage was not served)
    error: float = float("nan")


@dataclass(frozen=True)
class RankGate:
    """Rank's own pass: the order of its input, and which stages it leaves out."""

    order: str  # ranking/rank_orders.py
    orders: dict[str, float]  # each order served: the gate metric of Rank's input in it
    dropped: dict[str, str]  # stage -> reason
    decisions: tuple[StageDecision, ...]

    @property
    def final(self) -> float:
        """The gate metric of what Rank serves: its last kept stage's, else its input's."""
        kept = [d.value for d in self.decisions if d.kept]
        return kept[-1] if kept else self.orders[self.order]


@dataclass(frozen=True)
class GateResult:
    kept: tuple[str, ...]
    dropped: dict[str, str]  # stage -> reason
    decisions: tuple[StageDecision, ...]
    evaluation: ServedEvaluation  # the kept cascade on validation, with the baselines
    rank: RankGate | None = None  # Rank's own pass; None where there was none

    @property
    def rank_dropped(self) -> dict[str, str]:
        return dict(self.rank.dropped) if self.rank else {}

    @property
    def rank_decisions(self) -> tuple[StageDecision, ...]:
        return self.rank.decisions if self.rank else ()

    @property
    def rank_order(self) -> str:
        return self.rank.order if self.rank else "als"

    def guarded(self) -> dict[str, float]:
        """What the nightly's regression gate compares: the final list's NDCG@10 and the
        candidate union's HR@50, both served on validation, and where Rank had its own pass,
        the NDCG@10 of what Rank serves on held-out + 99."""
        metrics = self.evaluation.metrics
        guarded = {
            f"final {GATE_METRIC}": metrics[self.evaluation.final][GATE_METRIC][0],
            f"union {UNION_METRIC}": metrics[UNION][UNION_METRIC][0],
        }
        if self.rank is not None:
            guarded[f"Rank's final {GATE_METRIC}"] = self.rank.final
        return guarded

    def summary(self) -> dict:
        return {
            "metric": GATE_METRIC,
            "protocol": self.evaluation.protocol,
            "users": self.evaluation.users,
            "kept": list(self.kept),
            "dropped": self.dropped,
            "decisions": [dataclasses.asdict(d) for d in self.decisions],
            "rank": {
                "protocol": RANK_PROTOCOL if self.rank else None,
                "order": self.rank_order,
                "orders": dict(self.rank.orders) if self.rank else {},
                "dropped": self.rank_dropped,
                "decisions": [dataclasses.asdict(d) for d in self.rank_decisions],
            },
            "guarded": self.guarded(),
            "validation": {
                model: {name: list(value) for name, value in values.items()}
                for model, values in self.evaluation.metrics.items()
            },
        }


def gate_stages(
    bundle: LoadedBundle,
    config: Config,
    held: Holdout,
    rank_held: Holdout | None = None,
    *,
    show_progress: bool = False,
) -> GateResult:
    """Decide which configured stages `bundle` (trained on held.train) keeps, and of those
    which `Rank` keeps, on `rank_held` (the "sampled" protocol on held's split; None: Rank
    serves what Recommend does)."""
    kept, dropped, decisions = _gate(
        bundle, config, held, config.ranking.stages, show_progress=show_progress
    )
    rank = None
    if rank_held is not None:
        if rank_held.users != held.users:
            raise ValueError("Rank's gate needs the sampled protocol on the same split")
        rank = gate_rank(bundle, config, rank_held, kept, show_progress=show_progress)
    final = bundle.replaced(
        rankers=dataclasses.replace(
            bundle.rankers,
            dropped=_dropped_all(config, kept),
            rank_dropped=rank.dropped if rank else {},
            rank_order=rank.order if rank else "als",
        )
    )
    evaluation = evaluate_served(
        final, config, held, "validation", max_users=config.evaluation.max_users,
        show_progress=show_progress,
    )  # fmt: skip
    return GateResult(tuple(kept), dropped, decisions, evaluation, rank)


def gate_rank(
    bundle: LoadedBundle,
    config: Config,
    rank_held: Holdout,
    stages: tuple[str, ...],
    *,
    show_progress: bool = False,
) -> RankGate:
    """The second pass: the order of Rank's input, then which of `stages` (those Recommend
    kept) `Rank` leaves out, each kept only if it beats what Rank kept before it (the input
    first) on `rank_held`."""
    if rank_held.protocol != RANK_PROTOCOL:
        raise ValueError(
            f"Rank's gate runs on the {RANK_PROTOCOL} protocol, not {rank_held.protocol}"
        )
    max_users = config.evaluation.max_users
    orders: dict[str, float] = {}
    for order in config.ranking.rank_orders:
        ordered = bundle.replaced(rankers=dataclasses.replace(bundle.rankers, rank_order=order))
        served = _served(ordered, config, rank_held, (), max_users, show_progress)
        orders[order] = served.metrics[served.final][GATE_METRIC][0]
    first = next(iter(orders))
    best = max(orders, key=lambda order: (orders[order], order == first))  # a tie: the first
    log.info(
        "Rank's stage gate: input order %s (%s on %s validation: %s)",
        best,
        GATE_METRIC,
        rank_held.protocol,
        ", ".join(f"{order} {value:.4f}" for order, value in orders.items()),
    )
    ordered = bundle.replaced(rankers=dataclasses.replace(bundle.rankers, rank_order=best))
    _, dropped, decisions = _gate(
        ordered,
        config,
        rank_held,
        stages,
        show_progress=show_progress,
        label="Rank's stage gate",
        input_value=orders[best],
    )
    return RankGate(best, orders, dropped, decisions)


def _gate(
    bundle: LoadedBundle,
    config: Config,
    held: Holdout,
    stages: tuple[str, ...],
    *,
    show_progress: bool,
    label: str = "stage gate",
    input_value: float | None = None,
) -> tuple[tuple[str, ...], dict[str, str], tuple[StageDecision, ...]]:
    """Each of `stages` in turn, kept if it beats the stages kept before it on `held`
    (the first: `input_value`, or the served input's where None)."""
    max_users = config.evaluation.max_users
    kept: list[str] = []
    dropped: dict[str, str] = {}
    decisions = []
    if input_value is None:
        current = _served(bundle, config, held, (), max_users, show_progress)
        input_value = current.metrics[current.final][GATE_METRIC][0]
    for stage in stages:
        reads = stage_read_by(bundle.rankers.models[stage])
        if reads and reads not in kept:
            reason = f"it re-orders {reads}'s head, and {reads} was left out"
            dropped[stage] = reason
            log.info("%s: %s dropped: %s", label, stage, reason)
            decisions.append(StageDecision(stage, False, float("nan"), input_value, reason))
            continue
        trial = _served(bundle, config, held, (*kept, stage), max_users, show_progress)
        value = trial.metrics[stage_label(stage)][GATE_METRIC][0]
        error = _paired_error(trial, stage_label(stage))
        gap = f"{value - input_value:+.4f} ± {error:.4f} paired over {trial.users} users"
        if value > input_value or not config.ranking.stage_gate:
            reason = f"{GATE_METRIC} {value:.4f} vs its input's {input_value:.4f} ({gap})"
            if value <= input_value:
                reason += " (kept: ranking.stage_gate = false)"
            kept.append(stage)
            decision = StageDecision(stage, True, value, input_value, reason, error)
            input_value = value
        else:
            reason = (
                f"{GATE_METRIC} {value:.4f} does not beat its input's {input_value:.4f} "
                f"on {held.protocol} validation ({gap})"
            )
            dropped[stage] = reason
            decision = StageDecision(stage, False, value, input_value, reason, error)
        log.info("%s: %s %s: %s", label, stage, "kept" if stage in kept else "dropped", reason)
        decisions.append(decision)
    return tuple(kept), dropped, tuple(decisions)


def _paired_error(trial: ServedEvaluation, variant: str) -> float:
    """Standard error of `variant`'s gate metric minus its input's (the variant served just
    before it), over the same users."""
    served = list(trial.served)
    before = served[served.index(variant) - 1]
    gain = trial.per_user_ndcg[variant] - trial.per_user_ndcg[before]
    return mean_and_error(gain)[1]


def _dropped_all(config: Config, kept) -> dict[str, str]:
    return {s: "not kept" for s in config.ranking.stages if s not in kept}


def _served(bundle, config, held, stages, max_users, show_progress) -> ServedEvaluation:
    """`stages` served on `bundle` (every other configured stage marked dropped), by
    Recommend and Rank alike."""
    rankers = dataclasses.replace(
        bundle.rankers, dropped=_dropped_all(config, stages), rank_dropped={}
    )
    trial = bundle.replaced(rankers=rankers)
    return evaluate_served(
        trial,
        config,
        held,
        "validation",
        baselines=False,
        max_users=max_users,
        show_progress=show_progress,
    )
