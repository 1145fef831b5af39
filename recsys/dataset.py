"""The in-memory dataset every stage trains from: events, item catalog, user attributes.

Schemas (the same columns in CSV/Parquet files brought by the user, where only item_id and
user_id are required: `pipelines.loaders` fills in the others' defaults):

events  user_id, item_id, event_type, value, timestamp
        event_type in EVENT_TYPES; value is the rating for "rating" events (else any
        float, usually 1); timestamp is Unix seconds (int64).
items   item_id, categories, price, stock, regions, created_at, title
        categories and regions are "|"-separated lists; regions "*" means sold everywhere.
        Optional: group, a product group (str) for items that are one product to a shopper,
        e.g. the same shoe in five sizes; business rules show one item per group. Missing or
        empty means no group; files without the column have no groups at all.
users   user_id, region, attributes (free-form JSON object as text); a file's other
        columns become keys of attributes.

External ids are kept as strings; `recsys.ids.IdMap` turns them into dense indices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.config import EVENT_TYPES

EVENT_COLUMNS = ("user_id", "item_id", "event_type", "value", "timestamp")
ITEM_COLUMNS = ("item_id", "categories", "price", "stock", "regions", "created_at", "title")
ITEM_GROUP = "group"  # the optional items column; "" = no group
USER_COLUMNS = ("user_id", "region", "attributes")
REQUIRED_ITEM_COLUMNS = ("item_id",)  # what an items file must have; the rest has defaults
REQUIRED_USER_COLUMNS = ("user_id",)
ALL_REGIONS = "*"
LIST_SEPARATOR = "|"
# An external id is non-empty, printable and at most this long: in data files (loaders) and
# from callers (serving.errors), so that every id trained on can be asked for.
MAX_ID_LENGTH = 256
# An event may be stamped at most this far past the wall clock, in files and in LogEvents:
# clocks drift, but a day ahead is a bug (or milliseconds) that would move "now" for every
# windowed statistic.
MAX_CLOCK_SKEW_SECONDS = 86_400

EVENT_TYPE_DTYPE = pd.CategoricalDtype(list(EVENT_TYPES))


@dataclass(frozen=True)
class Dataset:
    """Events sorted by timestamp, plus the catalog and users they refer to.

    Column dtypes: ids are str (object or pyarrow string), event_type is EVENT_TYPE_DTYPE,
    value float32, timestamp/created_at int64, price float64, stock int64, group (if present)
    str with "" for no group.
    """

    events: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    name: str = "dataset"

    def __post_init__(self) -> None:
        for frame, columns, what in (
            (self.events, EVENT_COLUMNS, "events"),
            (self.items, ITEM_COLUMNS, "items"),
            (self.users, USER_COLUMNS, "users"),
        ):
            missing = [c for c in columns if c not in frame.columns]
            if missing:
                raise ValueError(f"{what} frame lacks column(s) {missing}")

    def with_events(self, events: pd.DataFrame) -> Dataset:
        """The same catalog and users with another slice of events (e.g. a split)."""
        return Dataset(events=events, items=self.items, users=self.users, name=self.name)


def normalize_events(events: pd.DataFrame) -> pd.DataFrame:
    """Canonical dtypes and chronological order (stable, so ties keep file order)."""
    out = pd.DataFrame(
        {
            "user_id": events["user_id"].astype(str),
            "item_id": events["item_id"].astype(str),
            "event_type": events["event_type"].astype(EVENT_TYPE_DTYPE),
            "value": events["value"].astype(np.float32),
            "timestamp": events["timestamp"].astype(np.int64),
        }
    )
    order = np.argsort(out["timestamp"].to_numpy(), kind="stable")
    return out.iloc[order].reset_index(drop=True)


def unix_seconds(times: pd.Series) -> np.ndarray:
    """Whole Unix seconds (int64) of tz-aware UTC datetimes, whatever their resolution."""
    return ((times - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy(np.int64)


def split_list(text: str) -> list[str]:
    """'a|b|c' -> ['a', 'b', 'c']; '' -> []."""
    return [part for part in str(text).split(LIST_SEPARATOR) if part]


def list_membership(lists: pd.Series) -> tuple[sp.csr_matrix, tuple[str, ...]]:
    """'a|b' list cells -> bool (n_rows, n_names) membership and the sorted names.

    Vectorised through pandas' split/explode: no Python loop over rows.
    """
    lists = lists.reset_index(drop=True)  # explode repeats the row position as the index
    exploded = lists.fillna("").astype(str).str.split(LIST_SEPARATOR).explode()
    exploded = exploded[exploded.str.len() > 0]
    names = tuple(sorted(exploded.unique()))
    codes = pd.Categorical(exploded.to_numpy(), categories=list(names)).codes
    rows = exploded.index.to_numpy(np.int64)
    matrix = sp.csr_matrix(
        (np.ones(len(codes), dtype=bool), (rows, codes)), shape=(len(lists), len(names))
    )
    matrix.sum_duplicates()
    return matrix, names
