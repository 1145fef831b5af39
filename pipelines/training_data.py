"""Turns a Dataset into the arrays every stage trains from."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.config import Config
from recsys.dataset import Dataset, list_membership
from recsys.ids import IdMap
from recsys.interactions import TrainingData, event_weights, is_positive


def positives_by_user(events: pd.DataFrame, config: Config, items: IdMap) -> dict[str, np.ndarray]:
    """Each user's distinct positive catalog items (sorted indices) among `events`, keyed by
    external user id in sorted order: the held-out answers of every evaluation."""
    events = events[is_positive(events, config)]
    index = items.to_index(events["item_id"].to_numpy())
    user_ids = events["user_id"].to_numpy().astype(str)[index >= 0]
    index = index[index >= 0]
    order = np.argsort(user_ids, kind="stable")
    user_ids, index = user_ids[order], index[order]
    starts = np.flatnonzero(np.r_[True, user_ids[1:] != user_ids[:-1]]) if len(index) else []
    ends = np.r_[starts[1:], len(index)] if len(index) else []
    return {str(user_ids[s]): np.unique(index[s:e]) for s, e in zip(starts, ends, strict=True)}


def build_training_data(
    dataset: Dataset, config: Config, users: IdMap | None = None
) -> TrainingData:
    """Id maps (items: the whole catalog; users: everyone with events), R and side data."""
    items = IdMap.from_values(dataset.items["item_id"])
    users = users or IdMap.from_values(dataset.events["user_id"])
    user_index = users.to_index(dataset.events["user_id"].to_numpy())
    item_index = items.to_index(dataset.events["item_id"].to_numpy())
    known = (user_index >= 0) & (item_index >= 0)
    weights = event_weights(dataset.events, config)[known]
    positive = is_positive(dataset.events, config)[known]
    types = dataset.events["event_type"].cat.codes.to_numpy().astype(np.int8)[known]
    user_index, item_index = user_index[known], item_index[known]
    interactions = sp.csr_matrix(
        (weights, (user_index, item_index)), shape=(len(users), len(items)), dtype=np.float32
    )
    interactions.sum_duplicates()
    catalog = dataset.items.drop_duplicates("item_id").set_index("item_id").loc[items.ids]
    categories, category_names = list_membership(catalog["categories"].reset_index(drop=True))
    region_of = dataset.users.drop_duplicates("user_id").set_index("user_id")["region"]
    region_of = region_of.reindex(users.ids).fillna("").astype(str).to_numpy()
    region_names = tuple(sorted(set(region_of) - {""}))
    user_region = (
        np.searchsorted(np.array(region_names, dtype=object), region_of).astype(np.int32)
        if region_names
        else np.full(len(users), -1, np.int32)
    )
    user_region[region_of == ""] = -1
    return TrainingData(
        users=users,
        items=items,
        interactions=interactions,
        event_users=user_index,
        event_items=item_index,
        event_weights=weights,
        event_times=dataset.events["timestamp"].to_numpy()[known],
        event_types=types,
        event_positive=positive,
        item_categories=categories,
        category_names=category_names,
        item_created=catalog["created_at"].to_numpy(np.int64),
        item_price=catalog["price"].to_numpy(np.float32),
        item_text=catalog["title"].fillna("").astype(str).to_numpy(dtype=object),
        user_region=user_region,
        region_names=region_names,
    )
