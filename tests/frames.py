"""Small frames the tests build datasets from."""

from __future__ import annotations

import pandas as pd

from pipelines.event_archive import read_log
from recsys.dataset import Dataset, normalize_events


def plain_catalog(item_ids: list[str], **columns) -> pd.DataFrame:
    """Items with no categories, price 1, in stock, sold everywhere; `columns` override."""
    defaults = {
        "categories": "",
        "price": 1.0,
        "stock": 1,
        "regions": "*",
        "created_at": 0,
        "title": "",
    }
    return pd.DataFrame({"item_id": item_ids, **{**defaults, **columns}})


def one_click_dataset(items: pd.DataFrame, item_id: str) -> Dataset:
    """The catalog `items` and one click of user "u" on `item_id`: the least a bundle needs."""
    events = normalize_events(
        pd.DataFrame(
            {
                "user_id": ["u"],
                "item_id": [item_id],
                "event_type": ["click"],
                "value": 1,
                "timestamp": 1,
            }
        )
    )
    users = pd.DataFrame({"user_id": ["u"], "region": [""], "attributes": "{}"})
    return Dataset(events, items, users)


def logged_events(directory) -> pd.DataFrame:
    """Every complete event in the event log at `directory` (archive included)."""
    return read_log(directory)[0]
