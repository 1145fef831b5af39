"""An independent reading of the raw catalog, to check the runtime's filters against."""

from __future__ import annotations

from recsys.dataset import ALL_REGIONS, Dataset


def eligible_items(dataset: Dataset, user_id: str, region: str) -> set[str]:
    """Items a user may be shown: in stock, sold in `region`, never interacted with."""
    items = dataset.items
    in_stock = items["stock"] > 0
    regional = items["regions"].map(lambda r: r == ALL_REGIONS or region in r.split("|"))
    seen = set(dataset.events.loc[dataset.events["user_id"] == user_id, "item_id"])
    return set(items.loc[in_stock & (regional if region else True), "item_id"]) - seen


def home_region(dataset: Dataset, user_id: str) -> str:
    match = dataset.users.loc[dataset.users["user_id"] == user_id, "region"]
    return str(match.iloc[0]) if len(match) else ""
