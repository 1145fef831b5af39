"""Offline evaluation of candidate models on a time-based holdout.

Protocol: train on events before the cut, and for every user with a positive event after
it, compare the model's top-K (items the user interacted with before the cut excluded, as
in serving) with those held-out positives. Users unseen before the cut are cold: every
model answers them as serving does, from the popularity top.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from candidates.als import ALSModel
from candidates.popularity import PopularityTop
from pipelines.splits import chronological_split
from pipelines.training_data import build_training_data, is_positive
from recsys.config import Config
from recsys.dataset import Dataset
from recsys.ids import IdMap
from recsys.metrics import catalog_coverage, novelty, ranking_report, recall_at_k

CUTOFFS = (1, 5, 10, 20, 50, 100)


@dataclass(frozen=True)
class EvaluationResult:
    metrics: dict[str, dict[str, float]]  # model -> metric -> value
    curves: dict[str, dict[int, float]]  # model -> K -> recall@K, for the report's plot
    users: dict[str, int]  # evaluated / warm / cold counts
    cutoff: int


def evaluate_candidates(dataset: Dataset, config: Config) -> EvaluationResult:
    split = chronological_split(dataset, config.evaluation.holdout_fraction)
    data = build_training_data(split.train, config)
    popularity = PopularityTop.fit(data, config.popularity)
    als = ALSModel.fit(data.interactions, config.als)

    test = split.test.events[is_positive(split.test.events, config)]
    test_users = data.users.to_index(test["user_id"].to_numpy())
    cold_ids = np.unique(test["user_id"].to_numpy()[test_users < 0])
    warm = np.unique(test_users[test_users >= 0])
    # rows: warm users first, then cold users; relevant = held-out positives not seen before
    row_of_user = np.full(len(data.users), -1, dtype=np.int64)
    row_of_user[warm] = np.arange(len(warm))
    cold_rows = len(warm) + IdMap.from_values(cold_ids).to_index(test["user_id"].to_numpy())
    rows = np.where(test_users >= 0, row_of_user[np.maximum(test_users, 0)], cold_rows)
    items = data.items.to_index(test["item_id"].to_numpy())
    n_rows = len(warm) + len(cold_ids)
    relevant = sp.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, items)), shape=(n_rows, len(data.items))
    )
    seen = sp.vstack(
        [data.interactions[warm], sp.csr_matrix((len(cold_ids), len(data.items)))]
    ).tocsr()
    relevant = (relevant - relevant.multiply(seen.astype(bool))).tocsr()
    relevant.eliminate_zeros()
    relevant.data[:] = 1.0

    k_max = max(max(CUTOFFS), config.evaluation.k)
    cold_lists = popularity.recommend_batch(len(cold_ids), k_max, seen[len(warm) :])
    lists = {
        "popularity": popularity.recommend_batch(n_rows, k_max, seen),
        "als": np.vstack([als.recommend_batch(warm, k_max, seen[: len(warm)]), cold_lists]),
    }
    share = np.asarray((data.interactions > 0).sum(axis=0)).ravel() / max(len(data.users), 1)
    k = config.evaluation.k
    metrics, curves = {}, {}
    for model, recommended in lists.items():
        metrics[model] = {
            **ranking_report(recommended, relevant, k),
            f"coverage@{k}": catalog_coverage(recommended, len(data.items), k),
            f"novelty@{k}": novelty(recommended, np.clip(share, 1e-6, 1.0), k),
        }
        # Cold users get the same popularity list from every model; warm users show the gap.
        if len(warm) and relevant[: len(warm)].getnnz():
            warm_report = ranking_report(recommended[: len(warm)], relevant[: len(warm)], k)
            metrics[model].update({f"warm_{name}": value for name, value in warm_report.items()})
        curves[model] = {c: recall_at_k(recommended, relevant, c) for c in CUTOFFS}
        if len(warm) and relevant[: len(warm)].getnnz():
            curves[f"{model} (warm users)"] = {
                c: recall_at_k(recommended[: len(warm)], relevant[: len(warm)], c) for c in CUTOFFS
            }
    return EvaluationResult(
        metrics=metrics,
        curves=curves,
        users={"evaluated": int(n_rows), "warm": len(warm), "cold": len(cold_ids)},
        cutoff=split.cutoff,
    )
