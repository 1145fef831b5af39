"""Train the cascade's rankers for a bundle (nightly): learn from what the candidate stage
really proposes, labelled by what happened next (DESIGN.md §4).

One bundle is built on the events before the last `ranking.label_share` of the log; the
positives of the first half of that tail label the training requests, those of the second
half the validation requests that early stopping watches (a time-based validation set).
"""

from __future__ import annotations

import logging

import numpy as np

from pipelines.dataset import Dataset
from pipelines.ranking_data import build_ranking_data
from ranking.cascade import TrainedRankers, with_known_ids
from ranking.dlrm import DLRMRanker
from ranking.gbdt import GBDTRanker
from recsys.config import Config

log = logging.getLogger(__name__)


def train_rankers(
    dataset: Dataset, config: Config, *, show_progress: bool = False
) -> TrainedRankers:
    stages = config.ranking.stages
    if not stages:
        return TrainedRankers()
    share = config.ranking.label_share
    times = np.sort(dataset.events["timestamp"].to_numpy())
    cutoff = int(times[int((1.0 - share) * (len(times) - 1))])
    middle = int(times[int((1.0 - share / 2) * (len(times) - 1))])
    common = {
        "random_negatives": config.ranking.random_negatives,
        "max_users": config.ranking.max_users,
        "show_progress": show_progress,
    }
    train = build_ranking_data(dataset, config, cutoff, middle, **common)
    valid = build_ranking_data(
        dataset, config, cutoff, label_start=middle, pipeline=train.pipeline, seed=1, **common
    )
    log.info(
        "ranker data: %d training rows, %d validation rows", len(train.frame), len(valid.frame)
    )
    lightgbm = (
        GBDTRanker.fit(train.frame, valid.frame, config.lightgbm) if "lightgbm" in stages else None
    )
    dlrm = None
    if "dlrm" in stages:
        als = train.pipeline.bundle.als.model
        dlrm = DLRMRanker.fit(
            train.frame,
            with_known_ids(valid.frame, train.frame.sparse_cardinalities),
            config.dlrm,
            pretrained={"user": als.user_factors, "item": als.item_factors},
            threads=1,
            show_progress=show_progress,
        )
    return TrainedRankers(lightgbm=lightgbm, dlrm=dlrm)
