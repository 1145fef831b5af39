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
from ranking.cascade import TrainedRankers
from ranking.frame import RankingFrame, rank_within_groups
from ranking.rankers import Ranker, RankerFit, ranker_kind, with_stage_score
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
    for stage in stages:  # an unknown name fails now, not after the ranking data is built
        ranker_kind(stage)
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
    log.info(
        "ranker data (%s): %s",
        config.request_kind,
        ", ".join(f"{v} {k}" for k, v in counts.items()),
    )
    item_factors = data.pipelines[-1].bundle.als.model.item_factors  # periods share items
    models: dict[str, Ranker] = {}
    for position, stage in enumerate(stages):
        kind = ranker_kind(stage)
        if position:  # a later stage learns from what serving gives it: the earlier's head
            earlier = stages[position - 1]
            limit = ranker_kind(earlier).rows_kept(config.ranking)
            train = stage_head(train, models[earlier], earlier, limit)
            valid = stage_head(valid, models[earlier], earlier, limit)
        given = RankerFit(train, valid, config, item_factors, show_progress)
        models[stage] = kind.fit(given)
    return RankerTraining(TrainedRankers(models), counts)


def stage_head(frame: RankingFrame, ranker: Ranker, stage: str, keep: int | None) -> RankingFrame:
    """The rows `ranker` keeps for the next stage in serving (its best `keep` per request;
    None: all), with its score as a feature (`ranking.rankers.score_column`). Requests that
    lose their positive there teach the next stage nothing and are left out."""
    scores = ranker.predict(frame)
    kept = np.flatnonzero(rank_within_groups(frame.groups, scores) < (keep or len(frame)))
    head = with_stage_score(frame.take(kept), scores[kept], stage)
    has_positive = np.zeros(int(frame.groups.max()) + 1, dtype=bool)
    has_positive[head.groups[head.labels > 0]] = True
    return _requests(head, has_positive)


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
