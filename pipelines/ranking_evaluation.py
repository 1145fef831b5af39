"""`recsys evaluate --stage ranking`: does each ranking stage improve on the one before?

Time-based protocol with three cut-offs at the last 2h, 1.5h and h shares of the events
(h = evaluation.holdout_fraction), T1 < Tm < T2:
- train:  bundle on events < T1, labels = positives in [T1, Tm);
- valid:  bundle on events < Tm, labels = positives in [Tm, T2) (early stopping);
- test:   bundle on events < T2, labels = positives after T2.
Rows are the candidate stage's own candidates (pipelines.ranking_data), plus random
negatives for training. The final list of a test user is measured against all their new
held-out positives, so a user whose positives no generator found counts with zero hits.

Stages compared on the same test candidates: (a) iALS score order (popularity for users
without a vector, as serving's DotProductRanker), (b) LightGBM (binary and LambdaMART),
(c) the configured LightGBM keeps its top `CASCADE_KEEP`, DLRM orders them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from pipelines.dataset import Dataset
from pipelines.metrics import auc, logloss, ranking_report
from pipelines.ranking_data import RankingData, build_ranking_data
from ranking.cascade import with_known_ids
from ranking.dlrm import DLRMRanker
from ranking.frame import RankingFrame, rank_within_groups, top_lists
from ranking.gbdt import GBDTRanker
from recsys.config import Config

K = 10
CASCADE_KEEP = 200


@dataclass(frozen=True)
class RankingStageResult:
    dataset: str
    metrics: dict[str, dict[str, float]]  # stage -> metric -> value
    importance: dict[str, dict[str, float]]  # feature -> gain/split (configured LightGBM)
    dlrm_history: list[dict[str, float]]
    rows: dict[str, int]  # train / valid / test rows
    users: dict[str, int]
    cutoffs: tuple[int, int, int]


def evaluate_ranking_stage(
    dataset: Dataset, config: Config, *, show_progress: bool = False
) -> RankingStageResult:
    h = config.evaluation.holdout_fraction
    times = np.sort(dataset.events["timestamp"].to_numpy())
    t1, tm, t2 = (
        int(times[int((1.0 - share) * (len(times) - 1))]) for share in (2 * h, 1.5 * h, h)
    )
    users = config.evaluation.max_users
    train = build_ranking_data(
        dataset, config, t1, tm, max_users=users, show_progress=show_progress
    )
    valid = build_ranking_data(dataset, config, tm, t2, max_users=users, seed=1)
    test = build_ranking_data(
        dataset, config, t2, random_negatives=0, max_users=users, seed=2, keep_unlabelled=True
    )

    scores: dict[str, np.ndarray] = {"ials order": _ials_order(test.frame)}
    for objective in ("binary", "lambdarank"):
        lightgbm = dataclasses.replace(config.lightgbm, objective=objective)
        ranker = GBDTRanker.fit(train.frame, valid.frame, lightgbm)
        scores[f"lightgbm {objective}"] = ranker.predict(test.frame)
        if objective == config.lightgbm.objective:
            light, importance = scores[f"lightgbm {objective}"], ranker.feature_importance()
    bundle = train.pipeline.bundle
    dlrm = DLRMRanker.fit(
        train.frame,
        with_known_ids(valid.frame, train.frame.sparse_cardinalities),
        config.dlrm,
        pretrained={
            "user": bundle.als.model.user_factors,
            "item": bundle.als.model.item_factors,
        },
        threads=1,
        show_progress=show_progress,
    )
    heavy = dlrm.predict(with_known_ids(test.frame, train.frame.sparse_cardinalities))
    scores["lightgbm + dlrm"] = _cascade(test.frame.groups, light, heavy, CASCADE_KEEP)
    scores["dlrm alone"] = heavy

    relevant, n_users = _relevant_matrix(test)
    metrics = {}
    for stage, score in scores.items():
        metrics[stage] = ranking_report(_top_lists(test, score, K, n_users), relevant, K)
        labels = test.frame.labels
        metrics[stage]["auc"] = auc(labels, score)
        if stage in ("lightgbm binary", "dlrm alone", "lightgbm + dlrm"):
            probability = heavy if "dlrm" in stage else 1.0 / (1.0 + np.exp(-score))
            metrics[stage]["logloss"] = logloss(labels, probability)
    return RankingStageResult(
        dataset=dataset.name,
        metrics=metrics,
        importance=importance,
        dlrm_history=list(dlrm.history),
        rows={"train": len(train.frame), "valid": len(valid.frame), "test": len(test.frame)},
        users={"test": n_users, "test with a positive candidate": len(test.users)},
        cutoffs=(t1, tm, t2),
    )


def _ials_order(frame: RankingFrame) -> np.ndarray:
    """Serving's current order: the iALS dot product, popularity where the user has none."""
    names = frame.dense_names
    dot = frame.dense[:, names.index("als_dot")]
    popularity = frame.dense[:, names.index("item_weighted_all")]
    # popularity-ordered rows sit below every dot-product row of the same request
    return np.where(np.isnan(dot), -1e6 + np.log1p(popularity), dot).astype(np.float32)


def _cascade(groups: np.ndarray, light: np.ndarray, heavy: np.ndarray, keep: int) -> np.ndarray:
    """The light ranker keeps its top `keep` per request; the heavy one orders those."""
    rank = rank_within_groups(groups, light)
    return np.where(rank < keep, 2.0 + heavy, -rank.astype(np.float64))


def _relevant_matrix(data: RankingData) -> tuple[sp.csr_matrix, int]:
    """Rows = test users (those with candidates first, in group order), all new positives."""
    users = list(data.users) + sorted(set(data.labels_by_user) - set(data.users))
    n_items = len(data.pipeline.bundle.items)
    rows = np.concatenate(
        [np.full(len(data.labels_by_user[u]), r) for r, u in enumerate(users)]
    ).astype(np.int64)
    cols = np.concatenate([data.labels_by_user[u] for u in users]).astype(np.int64)
    matrix = sp.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, cols)), shape=(len(users), n_items)
    )
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix, len(users)


def _top_lists(data: RankingData, score: np.ndarray, k: int, n_users: int) -> np.ndarray:
    """(n_users, k) item ids by descending score within each request; -1 padded."""
    frame = data.frame
    return top_lists(frame.groups, score, frame.sparse[:, 1] - 1, k, n_users)
