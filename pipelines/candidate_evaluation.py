"""`recsys evaluate --stage candidates`: which generator earns its place in the union.

Protocol (chronological holdout, as the nightly gate): build the whole bundle on the
events before the cut with the same code as nightly (pipelines.build), then for a seeded
sample of test users (`evaluation.max_users`) ask every configured generator through the
serving pipeline's own request context, exactly as a request would, for
max(candidate_cutoffs) items. Items the user interacted with before the cut are dropped
(serving's `already_interacted` filter); relevant = the user's held-out positives that
are new to them.

Union at K: the generators' lists interleaved in proportion to their serving budgets
(`serving.generator_budgets`) — generator g's item at rank r sits at position
(r + 1) / share_g of one merged stream — deduplicated, first K distinct items. A single
generator at K is its own top K, so every row of the table compares K items with K items.
Marginal recall of g = recall of the full union - recall of the union without g.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from pipelines.build import build_bundle
from pipelines.rating_evaluation import RatingEvaluation, evaluate_explicit
from pipelines.splits import chronological_split
from pipelines.training_data import positives_by_user
from recsys.arrays import first_positions
from recsys.config import Config
from recsys.dataset import Dataset
from serving.pipeline import RecommendPipeline, RecommendRequest

UNION = "union"


@dataclass(frozen=True)
class CandidateStageResult:
    dataset: str
    cutoffs: tuple[int, ...]
    generators: tuple[str, ...]
    recall: dict[str, dict[int, float]]  # union / each generator alone -> K -> recall@K
    recall_warm: dict[str, dict[int, float]]  # the same over users seen in training only
    without: dict[str, dict[int, float]]  # generator -> K -> recall@K of the union without it
    mean_returned: dict[str, float]  # candidates per request after the seen-items filter
    ms_per_request: dict[str, float]  # generator -> mean generate() wall time
    users: dict[str, int]
    build_seconds: dict[str, float]
    cutoff_time: int
    ratings: RatingEvaluation | None  # eALS RMSE table when the data has explicit ratings

    def marginal(self, generator: str, k: int) -> float:
        return self.recall[UNION][k] - self.without[generator][k]

    def best_single(self, k: int) -> tuple[str, float]:
        name = max(self.generators, key=lambda g: self.recall[g][k])
        return name, self.recall[name][k]


def evaluate_candidate_stage(
    dataset: Dataset, config: Config, *, show_progress: bool = False, seed: int = 0
) -> CandidateStageResult:
    split = chronological_split(dataset, config.evaluation.holdout_fraction)
    built = build_bundle(split.train, config, show_progress=show_progress)
    pipeline = RecommendPipeline.candidate_stage(built.bundle, config)
    bundle = built.bundle

    users, relevant_sets = _new_to_user(
        positives_by_user(split.test.events, config, bundle.items), pipeline
    )
    if not users:
        raise ValueError("no test user has a held-out positive that is new to them")
    rng = np.random.default_rng(seed)
    limit = config.evaluation.max_users
    sample = np.sort(
        rng.choice(len(users), size=min(limit or len(users), len(users)), replace=False)
    )

    names = tuple(g.name for g in pipeline.generators)
    budgets = np.array([config.serving.budget_of(n) for n in names], dtype=np.float64)
    cutoffs = tuple(sorted(config.evaluation.candidate_cutoffs))
    depth = max(cutoffs)
    keys = (UNION, *names, *(f"-{n}" for n in names))
    hits = {key: np.zeros(len(cutoffs)) for key in keys}
    warm_hits = {key: np.zeros(len(cutoffs)) for key in (UNION, *names)}
    returned = dict.fromkeys(names, 0)
    elapsed = dict.fromkeys(names, 0.0)
    warm = 0
    for row in tqdm(sample, desc="candidates", unit="user", disable=not show_progress):
        user, relevant = users[row], relevant_sets[row]
        ctx = pipeline.context(RecommendRequest(user_id=user, k=1))
        warm += ctx.known_user
        row_hits = {}
        seen = bundle.profiles.seen_items(ctx.user_index)
        lists = []
        for name, generator in zip(names, pipeline.generators, strict=True):
            start = time.perf_counter()
            answer = generator.generate(ctx, depth)
            elapsed[name] += time.perf_counter() - start
            items = answer.item_ids[~np.isin(answer.item_ids, seen)]
            lists.append(items)
            returned[name] += len(items)
            row_hits[name] = [np.isin(items[:k], relevant).sum() / len(relevant) for k in cutoffs]
        everyone = np.ones(len(names), dtype=bool)
        row_hits[UNION] = _union_recall(lists, budgets, everyone, relevant, cutoffs)
        for key, value in row_hits.items():
            hits[key] += value
            if ctx.known_user:
                warm_hits[key] += value
        for g, name in enumerate(names):
            others = everyone.copy()
            others[g] = False
            hits[f"-{name}"] += _union_recall(lists, budgets, others, relevant, cutoffs)

    n = len(sample)

    def mean(total: np.ndarray, count: int) -> dict[int, float]:
        return dict(zip(cutoffs, (total / max(count, 1)).tolist(), strict=True))

    recall = {key: mean(hits[key], n) for key in hits}
    return CandidateStageResult(
        dataset=dataset.name,
        cutoffs=cutoffs,
        generators=names,
        recall={key: recall[key] for key in (UNION, *names)},
        recall_warm={key: mean(value, int(warm)) for key, value in warm_hits.items()},
        without={name: recall[f"-{name}"] for name in names},
        mean_returned={name: returned[name] / n for name in names},
        ms_per_request={name: 1000 * elapsed[name] / n for name in names},
        users={"evaluated": n, "warm": int(warm), "cold": n - int(warm), "eligible": len(users)},
        build_seconds=built.seconds,
        cutoff_time=split.cutoff,
        ratings=evaluate_explicit(dataset, config),
    )


def _new_to_user(
    positives: dict[str, np.ndarray], pipeline: RecommendPipeline
) -> tuple[list[str], list[np.ndarray]]:
    """Test users with their held-out positives that are new to them."""
    users, relevant = [], []
    for user, items in positives.items():
        seen = pipeline.bundle.profiles.seen_items(pipeline.bundle.users.index_of(user))
        new = np.setdiff1d(items, seen)
        if len(new):
            users.append(user)
            relevant.append(new)
    return users, relevant


def _union_recall(
    lists: list[np.ndarray],
    budgets: np.ndarray,
    chosen: np.ndarray,
    relevant: np.ndarray,
    cutoffs: tuple[int, ...],
) -> np.ndarray:
    """Recall@K of the budget-proportional interleave of the chosen generators' lists."""
    shares = budgets * chosen / (budgets * chosen).sum()
    used = np.flatnonzero(chosen)
    items = np.concatenate([lists[g] for g in used])
    keys = np.concatenate([(np.arange(len(lists[g])) + 1) / shares[g] for g in used])
    merged = items[np.argsort(keys, kind="stable")]
    union = merged[first_positions(merged)]  # distinct items in stream order
    return np.array([np.isin(union[:k], relevant).sum() / len(relevant) for k in cutoffs])
