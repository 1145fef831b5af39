"""Turns a Dataset into the arrays every stage trains from."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from candidates.base import TrainingData
from pipelines.dataset import Dataset
from pipelines.idmap import IdMap
from recsys.config import EVENT_TYPES, Config


def event_weights(events: pd.DataFrame, config: Config) -> np.ndarray:
    """Each event's contribution to R (config [als.event_weights]); weak ratings count less."""
    by_type = np.array(
        [getattr(config.als.event_weights, t) for t in EVENT_TYPES], dtype=np.float32
    )
    weights = by_type[events["event_type"].cat.codes.to_numpy()]
    is_weak_rating = (events["event_type"] == "rating").to_numpy() & (
        events["value"].to_numpy() < config.data.positive_rating
    )
    weights[is_weak_rating] = config.als.negative_rating_weight
    return weights


def is_positive(events: pd.DataFrame, config: Config) -> np.ndarray:
    """Events that count as relevant in evaluation (config [data].positive_events)."""
    kinds = events["event_type"]
    positive = kinds.isin(config.data.positive_events).to_numpy()
    is_rating = (kinds == "rating").to_numpy()
    return positive & (~is_rating | (events["value"].to_numpy() >= config.data.positive_rating))


def build_training_data(
    dataset: Dataset, config: Config, users: IdMap | None = None
) -> TrainingData:
    """Id maps (items: the whole catalog; users: everyone with events) and R."""
    items = IdMap.from_values(dataset.items["item_id"])
    users = users or IdMap.from_values(dataset.events["user_id"])
    user_index = users.to_index(dataset.events["user_id"].to_numpy())
    item_index = items.to_index(dataset.events["item_id"].to_numpy())
    known = (user_index >= 0) & (item_index >= 0)
    weights = event_weights(dataset.events, config)[known]
    user_index, item_index = user_index[known], item_index[known]
    interactions = sp.csr_matrix(
        (weights, (user_index, item_index)), shape=(len(users), len(items)), dtype=np.float32
    )
    interactions.sum_duplicates()
    return TrainingData(
        users=users,
        items=items,
        interactions=interactions,
        event_users=user_index,
        event_items=item_index,
        event_weights=weights,
        event_times=dataset.events["timestamp"].to_numpy()[known],
    )
