"""Quality of what is served: the real `RecommendPipeline` and cascade with the bundle's own
config answer every evaluated user (`recommend`, or `rank` for the sampled protocol), beside
the baselines of `pipelines.baselines` on the same split (issue "Ranking that earns its
place": no copy of the cascade, no re-implemented order).

Served variants: the candidate union in iALS order (no ranker); for `Rank` (the sampled
protocol) its input in the order the bundle chose for it, where that is not iALS's; then each
served ranker stage added in turn; the last is the final list (business rules apply to every
variant, as they do in serving). Each accuracy metric is a mean over users with its standard
error; beside them, what the lists are like: catalogue coverage, novelty and intra-list
diversity at 10 (seed 002, "Таблица 2": beyond-accuracy metrics), diversity over the iALS item
vectors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

from pipelines.baselines import Scorer, baseline_scorers
from pipelines.protocols import Holdout
from pipelines.training_data import build_training_data
from ranking.rank_orders import LABELS
from recsys.config import Config
from recsys.loaded_bundle import LoadedBundle
from recsys.metrics import (
    catalog_coverage,
    intra_list_diversity,
    mean_and_error,
    novelty,
    per_user,
)
from serving.pipeline import RecommendPipeline, RecommendRequest

LIST_LENGTH = 50
METRICS = (("HR@10", "hitrate", 10), ("NDCG@10", "ndcg", 10), ("MRR@10", "mrr", 10))
METRICS_50 = (("HR@50", "hitrate", 50),)
BEYOND_ACCURACY = ("coverage@10", "novelty@10", "diversity@10")
CANDIDATES = "served: candidates"  # the served variants without a ranker: an input's order
UNION = f"{CANDIDATES}, iALS order"
BLOCK_USERS = 1024  # baseline score blocks: BLOCK_USERS x n_items float32


def stage_label(stage: str) -> str:
    return f"served: + {stage}"


@dataclass(frozen=True)
class ServedEvaluation:
    protocol: str
    split: str  # "validation" or "test"
    users: int
    metrics: dict[str, dict[str, tuple[float, float]]]  # model -> metric -> (mean, error)
    served: tuple[str, ...]  # the served variants among `metrics`, in cascade order
    per_user_ndcg: dict[str, np.ndarray]  # model -> NDCG@10 per user (paired comparisons)
    beyond: dict[str, dict[str, float]]  # model -> BEYOND_ACCURACY name -> value
    # share of the held-out items the served filters hide from their user (touched before,
    # out of stock, not sold in the user's region): no list can show them. NaN: not measured
    # (`Rank`, which filters nothing, or an evaluation without baselines)
    hidden: float = float("nan")

    @property
    def final(self) -> str:
        return self.served[-1]


def order_label(order: str) -> str:
    return f"{CANDIDATES}, {LABELS[order]} order"


@dataclass(frozen=True)
class Variant:
    stages: tuple[str, ...]  # ranking.stages
    rank_order: str  # TrainedRankers.rank_order


def served_variants(bundle: LoadedBundle, config: Config, protocol: str) -> dict[str, Variant]:
    """Variant name -> what it serves: the union in iALS order; for the sampled protocol
    (`Rank`), its input in the bundle's order for it, unless that is iALS's, and then the
    stages `Rank` serves; else the stages Recommend serves; each added in turn."""
    rankers, order = bundle.rankers, "als"
    if protocol == "sampled":
        rankers, order = rankers.for_rank(), rankers.rank_order
    variants = {UNION: Variant((), "als")}
    if order != "als":
        variants[order_label(order)] = Variant((), order)
    stages = rankers.served_stages(config.ranking.stages)
    for i, stage in enumerate(stages):
        variants[stage_label(stage)] = Variant(stages[: i + 1], order)
    return variants


def evaluate_served(
    bundle: LoadedBundle,
    config: Config,
    held: Holdout,
    split: str,
    *,
    baselines: bool = True,
    max_users: int = 0,
    show_progress: bool = False,
) -> ServedEvaluation:
    users, relevant_ids, candidates = _sample(held, max_users)
    items = bundle.items
    relevant = _relevant_matrix([items.to_index(r) for r in relevant_ids], len(items))
    lists: dict[str, np.ndarray] = {}
    variants = served_variants(bundle, config, held.protocol)
    for name, variant in variants.items():
        served = bundle.replaced(
            rankers=dataclasses.replace(bundle.rankers, rank_order=variant.rank_order)
        )
        pipeline = RecommendPipeline(
            served, config.replace(ranking={"stages": list(variant.stages)})
        )
        lists[name] = _served_lists(pipeline, users, candidates, name, show_progress)
    hidden = float("nan")
    if baselines:
        data = build_training_data(held.train, config, users=bundle.users)
        indices = bundle.users.to_index(users)
        # Recommend's lists show only what the served filters let through, so the baselines'
        # lists do too: a baseline must not score on an item no served list may show. Every
        # variant's pipeline has the same filters (config.serving); the last one serves here.
        servable = None if candidates is not None else partial(_servable_rows, pipeline, users)
        if servable is not None:
            hidden = _hidden_share(servable, relevant)
        scorers = baseline_scorers(bundle, data, config)
        lists.update(_baseline_lists(scorers, indices, bundle, candidates, servable))
    metrics, ndcg = {}, {}
    beyond = _beyond_accuracy(lists, bundle)
    for name, top in lists.items():
        metrics[name] = {}
        for label, metric, k in (*METRICS, *METRICS_50):
            values = per_user(metric, top, relevant, k)
            metrics[name][label] = mean_and_error(values)
            if label == "NDCG@10":
                ndcg[name] = values
    return ServedEvaluation(
        protocol=held.protocol,
        split=split,
        users=len(users),
        metrics=metrics,
        served=tuple(variants),
        per_user_ndcg=ndcg,
        beyond=beyond,
        hidden=hidden,
    )


def _beyond_accuracy(
    lists: dict[str, np.ndarray], bundle: LoadedBundle, k: int = 10
) -> dict[str, dict[str, float]]:
    """Per model: coverage of the catalogue, novelty (-log2 of the share of users who touched
    an item) and diversity (mean pairwise cosine distance of iALS item vectors; items iALS
    never saw have none and are left out of it) of its top-k lists."""
    seen = bundle.profiles.seen
    share = np.clip(np.asarray((seen > 0).sum(axis=0)).ravel() / max(seen.shape[0], 1), 0, 1)
    vectors = bundle.als.model.item_factors
    has_vector = np.linalg.norm(vectors, axis=1) > 0
    beyond = {}
    for model, top in lists.items():
        with_vector = np.where((top >= 0) & has_vector[np.maximum(top, 0)], top, -1)
        beyond[model] = {
            "coverage@10": _or_nan(partial(catalog_coverage, top, len(bundle.items), k)),
            "novelty@10": _or_nan(partial(novelty, top, share, k)),
            "diversity@10": _or_nan(partial(intra_list_diversity, with_vector, vectors, k)),
        }
    return beyond


def _or_nan(measure: Callable[[], float]) -> float:
    try:
        return measure()
    except ValueError:  # no list long enough to measure (every list empty, say)
        return float("nan")


def _sample(held: Holdout, max_users: int):
    users, relevant, candidates = list(held.users), list(held.relevant), held.candidates
    if max_users and len(users) > max_users:
        chosen = np.sort(np.random.default_rng(0).choice(len(users), max_users, replace=False))
        users = [users[i] for i in chosen]
        relevant = [relevant[i] for i in chosen]
        candidates = None if candidates is None else [candidates[i] for i in chosen]
    return users, relevant, candidates


def _served_lists(
    pipeline: RecommendPipeline,
    users: list[str],
    candidates,
    name: str,
    show_progress: bool,
) -> np.ndarray:
    """(n_users, LIST_LENGTH) item indices, -1 padded: `recommend` over the full catalogue,
    or `rank` of the user's sampled candidates."""
    top = np.full((len(users), LIST_LENGTH), -1, dtype=np.int64)
    for row, user in enumerate(tqdm(users, desc=name, unit="user", disable=not show_progress)):
        if candidates is None:
            answer = pipeline.recommend(RecommendRequest(user_id=user, k=LIST_LENGTH)).items
        else:
            answer = pipeline.rank(user, candidates[row])[:LIST_LENGTH]
        found = pipeline.bundle.items.to_index([item.item_id for item in answer])
        top[row, : len(found)] = found
    return top


def _servable_rows(pipeline: RecommendPipeline, users: list[str], rows: slice) -> np.ndarray:
    """(len(rows), n_items) bool: what the served filters let each of those users be shown."""
    return np.stack([pipeline.servable(user) for user in users[rows]])


def _hidden_share(servable: Callable[[slice], np.ndarray], relevant: sp.csr_matrix) -> float:
    """Share of the held-out items (those the bundle knows) that the served filters hide."""
    hidden = total = 0
    for start in range(0, relevant.shape[0], BLOCK_USERS):
        rows = slice(start, start + BLOCK_USERS)
        held = relevant[rows].tocoo()
        hidden += int(np.count_nonzero(~servable(rows)[held.row, held.col]))
        total += held.nnz
    return hidden / total if total else float("nan")


def _baseline_lists(
    scorers: dict[str, Scorer],
    users: np.ndarray,
    bundle: LoadedBundle,
    candidates,
    servable: Callable[[slice], np.ndarray] | None,
) -> dict[str, np.ndarray]:
    """Per scorer, (n_users, LIST_LENGTH) best items among those the served filters let the
    user see (`servable`: the user's seen items, out-of-stock ones and ones not sold in the
    user's region are out, as in every served list), or the best of the sampled candidates,
    none excluded (as `Rank` ranks every given item: a shop's held-out event can be a
    purchase of an item the user viewed before, and masking it would score the baselines
    unfairly). Each block of users' allowed items is found once, for every scorer."""
    tops = {name: np.full((len(users), LIST_LENGTH), -1, dtype=np.int64) for name in scorers}
    for start in range(0, len(users), BLOCK_USERS):
        block = users[start : start + BLOCK_USERS]
        if candidates is None:
            allowed = servable(slice(start, start + len(block)))
        else:
            allowed = np.zeros((len(block), len(bundle.items)), dtype=bool)
            for row in range(len(block)):
                allowed[row, bundle.items.to_index(candidates[start + row])] = True
        for name, scorer in scorers.items():
            scores = scorer(block).astype(np.float32)
            scores[np.isnan(scores)] = -np.inf  # items a model does not score (EASE's)
            scores[~allowed] = -np.inf
            width = min(LIST_LENGTH, scores.shape[1])
            part = np.argpartition(-scores, width - 1, axis=1)[:, :width]
            order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
            best = np.take_along_axis(part, order, axis=1)
            best[~np.isfinite(np.take_along_axis(scores, best, axis=1))] = -1
            tops[name][start : start + len(block), :width] = best
    return tops


def _relevant_matrix(relevant: list[np.ndarray], n_items: int) -> sp.csr_matrix:
    rows = np.concatenate([np.full(len(r), i) for i, r in enumerate(relevant)]).astype(np.int64)
    cols = np.concatenate(relevant).astype(np.int64)
    known = cols >= 0  # an item the bundle does not know cannot be hit, but still counts
    matrix = sp.csr_matrix(
        (np.ones(int(known.sum()), np.float32), (rows[known], cols[known])),
        shape=(len(relevant), n_items),
    )
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix
