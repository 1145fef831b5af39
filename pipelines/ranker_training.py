"""Train the cascade's rankers for a bundle (nightly) from point-in-time-correct served-path
requests (pipelines.ranking_data): what the candidate stage really proposed at each moment,
labelled by what the user did next (DESIGN.md §4).

Early stopping watches the requests of a fifth of the users (chosen by a hash of the id,
so a user's requests never sit on both sides).
"""

from __future__ import annotations

import dataclasses
import logging
import zlib
from dataclasses import dataclass

import numpy as np

from pipelines.ranking_data import RankingData, build_ranking_data
from ranking.cascade import LIGHTGBM_SCORE, TrainedRankers, with_stage_score
from ranking.dlrm.ranker import DLRMRanker
from ranking.frame import RankingFrame, rank_within_groups
from ranking.gbdt import GBDTRanker
from recsys.config import Config
from recsys.dataset import Dataset

log = logging.getLogger(__name__)

VALIDATION_USERS = 0.2


@dataclass(frozen=True)
class RankerTraining:
    rankers: TrainedRankers
    counts: dict[str, int]  # requests drawn / kept / train / validation, rows, users


def train_rankers(
    dataset: Dataset,
    config: Config,
    stages: tuple[str, ...] | None = None,
    *,
    show_progress: bool = False,
) -> RankerTraining:
    """The rankers of `stages` (default: ranking.stages) trained on `dataset`."""
    stages = config.ranking.stages if stages is None else stages
    if not stages:
        return RankerTraining(TrainedRankers(), {})
    data = build_ranking_data(dataset, config, show_progress=show_progress)
    in_valid = _validation_users(data)
    train = _frame_of(data, ~in_valid)
    valid = _frame_of(data, in_valid)
    counts = {
        "requests drawn": data.drawn,
        "requests with their positive among the candidates": len(data.requests),
        "training requests": int((~in_valid).sum()),
        "validation requests": int(in_valid.sum()),
        "training rows": len(train),
        "users": len(set(data.users)),
        "periods": len(data.cutoffs),
    }
    log.info("ranker data: %s", ", ".join(f"{v} {k}" for k, v in counts.items()))
    lightgbm = GBDTRanker.fit(train, valid, config.lightgbm) if "lightgbm" in stages else None
    dlrm = None
    if "dlrm" in stages:
        latest = data.pipelines[-1].bundle.als.model  # every period bundle shares the items
        if lightgbm is not None:  # DLRM sees what serving gives it: LightGBM's head
            train = lightgbm_head(train, lightgbm, config.ranking.lightgbm_keep)
            valid = lightgbm_head(valid, lightgbm, config.ranking.lightgbm_keep)
        dlrm = DLRMRanker.fit(
            without_user_ids(train),
            without_user_ids(valid),
            config.dlrm,
            pretrained={"item": latest.item_factors},
            threads=1,
            show_progress=show_progress,
        )
    return RankerTraining(TrainedRankers(lightgbm=lightgbm, dlrm=dlrm), counts)


def lightgbm_head(frame: RankingFrame, lightgbm: GBDTRanker, keep: int) -> RankingFrame:
    """The rows LightGBM keeps for the next stage in serving (its best `keep` per request),
    with its score as a feature (`ranking.cascade.LIGHTGBM_SCORE`). Requests that lose their
    positive there teach the next stage nothing and are left out."""
    scores = lightgbm.predict(frame)
    kept = np.flatnonzero(rank_within_groups(frame.groups, scores) < keep)
    head = with_stage_score(frame.take(kept), scores[kept], LIGHTGBM_SCORE)
    has_positive = np.zeros(int(frame.groups.max()) + 1, dtype=bool)
    has_positive[head.groups[head.labels > 0]] = True
    return _requests(head, has_positive)


def without_user_ids(frame: RankingFrame) -> RankingFrame:
    """Every user as the unknown id 0 with a one-row table: each period bundle numbers its
    users its own way, so a user id means nothing across them; DLRM knows a user by the
    dense features (history, session, ALS) instead, and serving maps every id to 0
    (`ranking.cascade.with_known_ids`)."""
    sparse = frame.sparse.copy()
    sparse[:, frame.sparse_names.index("user")] = 0
    cardinalities = list(frame.sparse_cardinalities)
    cardinalities[frame.sparse_names.index("user")] = 1
    return dataclasses.replace(frame, sparse=sparse, sparse_cardinalities=tuple(cardinalities))


def _validation_users(data: RankingData) -> np.ndarray:
    """bool per request: its user is in the validation fifth (by a stable hash of the id)."""
    hashed = np.array([zlib.crc32(user.encode()) % 1000 for user in data.users])
    in_valid = hashed < VALIDATION_USERS * 1000
    if in_valid.all() or not in_valid.any():  # too few users to split by user
        in_valid = np.arange(len(data.requests)) % 5 == 0
    return in_valid


def _frame_of(data: RankingData, chosen: np.ndarray) -> RankingFrame:
    return _requests(data.frame, chosen)


def _requests(frame: RankingFrame, chosen: np.ndarray) -> RankingFrame:
    """The rows of the requests (groups) `chosen` marks, groups renumbered 0.. in order."""
    part = frame.take(np.flatnonzero(chosen[frame.groups]))
    renumber = np.cumsum(chosen) - 1
    return dataclasses.replace(part, groups=renumber[part.groups])
