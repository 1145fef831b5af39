"""Small frames the tests build datasets from."""

from __future__ import annotations

import pandas as pd


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
