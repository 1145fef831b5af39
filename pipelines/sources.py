"""Where a run's data comes from: the embedded MovieLens-100k or the user's own files, plus
every event LogEvents has appended since (the event log is the system of record)."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipelines.event_archive import read_log
from pipelines.loaders import load_dataset_dir, validate_items, validate_users
from pipelines.movielens import load_movielens_100k
from recsys.config import Config, DataConfig
from recsys.dataset import ITEM_GROUP, Dataset, normalize_events

MOVIELENS = "movielens-100k"

log = logging.getLogger(__name__)


def load_dataset(config: DataConfig) -> Dataset:
    if config.source == MOVIELENS:
        return load_movielens_100k(config.cache_dir)
    return load_dataset_dir(config.source, config.max_clock_skew_seconds)


@dataclass(frozen=True)
class TrainingSource:
    """What a nightly trains on: the data source with the event log folded in."""

    dataset: Dataset
    logged_events: int  # events taken from the log
    new_items: int  # items first seen in the log (catalogue defaults: see pipelines.loaders)
    new_users: int
    log_offsets: dict[str, int] = field(default_factory=dict)  # where the log was read up to


def load_training_source(config: Config) -> TrainingSource:
    """`data.source`, plus every complete event of `events.log_dir`, its archive included.
    An item or user that
    only the log knows joins the catalogue or the users with the defaults of files that
    leave their columns out (in stock, sold everywhere, created at its first event)."""
    base = load_dataset(config.data)
    logged, offsets = read_log(config.events.log_dir)
    dataset, new_items, new_users = with_logged_events(base, logged, Path(config.events.log_dir))
    if len(logged):
        log.info(
            "event log: %d events folded in (%d new items, %d new users)",
            len(logged),
            new_items,
            new_users,
        )
    return TrainingSource(dataset, len(logged), new_items, new_users, offsets)


def with_logged_events(
    dataset: Dataset, logged: pd.DataFrame, where: Path
) -> tuple[Dataset, int, int]:
    """`dataset` with `logged` events appended (in time order), and the new items and users
    they bring; returns the dataset and the counts of new items and users."""
    if logged.empty:
        return dataset, 0, 0
    items, users = dataset.items, dataset.users
    new_item_ids = pd.unique(logged["item_id"][~logged["item_id"].isin(items["item_id"])])
    new_user_ids = pd.unique(logged["user_id"][~logged["user_id"].isin(users["user_id"])])
    if len(new_item_ids):
        added = validate_items(pd.DataFrame({"item_id": new_item_ids}), where, logged)
        if ITEM_GROUP in items.columns:
            added[ITEM_GROUP] = ""
        items = pd.concat([items, added], ignore_index=True)
    if len(new_user_ids):
        added = validate_users(pd.DataFrame({"user_id": new_user_ids}), where)
        users = pd.concat([users, added], ignore_index=True)
    events = normalize_events(pd.concat([dataset.events, logged], ignore_index=True))
    combined = Dataset(events=events, items=items, users=users, name=dataset.name)
    return combined, len(new_item_ids), len(new_user_ids)


def fingerprint(dataset: Dataset) -> str:
    """SHA-256 over the rows of events and items: same data, same fingerprint."""
    digest = hashlib.sha256()
    for frame in (dataset.events, dataset.items):
        digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()
