"""Early filters on a hand-made catalog: category blocks from config, regions, stock."""

import numpy as np
import pandas as pd
import scipy.sparse as sp

from pipelines.training_data import build_training_data
from recsys.config import load_config
from recsys.context import RequestContext
from recsys.dataset import Dataset, normalize_events
from serving.catalog import ItemCatalog, UserProfiles
from serving.filters import FILTER_FACTORIES, apply_filters


def shop() -> Dataset:
    items = pd.DataFrame(
        {
            "item_id": ["a", "b", "c", "d", "e"],
            "categories": ["toys", "tobacco|adult", "food", "", "adult"],
            "price": 1.0,
            "stock": [1, 1, 0, 1, 1],
            "regions": ["*", "north|south", "north", "south", "*"],
            "created_at": 0,
            "title": "",
        }
    )
    events = normalize_events(
        pd.DataFrame(
            {
                "user_id": ["u"],
                "item_id": ["a"],
                "event_type": ["click"],
                "value": 1,
                "timestamp": 1,
            }
        )
    )
    users = pd.DataFrame({"user_id": ["u"], "region": ["north"], "attributes": "{}"})
    return Dataset(events, items, users)


def make(name: str, **serving):
    config = load_config().replace(serving=serving) if serving else load_config()
    dataset = shop()
    data = build_training_data(dataset, config)
    catalog = ItemCatalog.build(dataset, data)
    profiles = UserProfiles.build(dataset, data, recent_limit=5)
    return FILTER_FACTORIES[name](catalog, profiles, config.serving), data


def test_blocked_categories_remove_every_item_of_a_named_category():
    blocked, data = make("blocked_categories", blocked_categories=["adult", "no-such-category"])
    items = np.arange(len(data.items))
    kept = data.items.to_external(items[blocked.keep(RequestContext(0), items)])
    assert sorted(kept) == ["a", "c", "d"]  # b (tobacco|adult) and e (adult) are blocked


def test_no_blocked_categories_keeps_everything():
    blocked, data = make("blocked_categories")
    assert blocked.keep(RequestContext(0), np.arange(len(data.items))).all()


def test_regions_and_stock_from_the_vectorised_catalog():
    dataset = shop()
    data = build_training_data(dataset, load_config())
    catalog = ItemCatalog.build(dataset, data)
    items = np.arange(len(data.items))
    names = data.items.to_external(items)
    assert sorted(names[catalog.sold_in("south", items)]) == ["a", "b", "d", "e"]
    assert sorted(names[catalog.sold_in("nowhere", items)]) == ["a", "e"]
    assert sorted(names[catalog.in_stock]) == ["a", "b", "d", "e"]
    assert isinstance(catalog.item_categories, sp.csr_matrix)


def test_apply_filters_counts_what_each_removed():
    config = load_config().replace(serving={"blocked_categories": ["adult"]})
    dataset = shop()
    data = build_training_data(dataset, config)
    catalog = ItemCatalog.build(dataset, data)
    profiles = UserProfiles.build(dataset, data, recent_limit=5)
    filters = tuple(
        FILTER_FACTORIES[n](catalog, profiles, config.serving)
        for n in ("already_interacted", "in_stock", "blocked_categories")
    )
    ctx = RequestContext(user_index=data.users.index_of("u"))
    kept, removed = apply_filters(filters, ctx, np.arange(len(data.items)))
    assert sorted(data.items.to_external(np.flatnonzero(kept))) == ["d"]
    assert removed == {"already_interacted": 1, "in_stock": 1, "blocked_categories": 2}
