"""Content -> collaborative step (seed 004, "Зачем еще нужны шаги"): a catalogue item no one
has touched gets the iALS vector its content maps to."""

from __future__ import annotations

import numpy as np
import pandas as pd

from candidates.als import ALSModel
from candidates.content_step import content_matrix, fill_cold_items
from pipelines.training_data import build_training_data
from recsys.config import load_config
from recsys.dataset import Dataset, normalize_events


def _catalogue_with_two_tastes(cold_titles: tuple[str, str]) -> Dataset:
    """Items 0-39 are "jazz", 40-79 "metal"; users 0-59 play jazz, 60-119 metal. Items 80
    and 81 are new: one of each genre, touched by no one."""
    rng = np.random.default_rng(0)
    rows = []
    for user in range(120):
        first = 0 if user < 60 else 40
        for item in rng.choice(np.arange(first, first + 40), size=10, replace=False):
            rows.append((f"u{user}", f"i{item}", "click", 1.0, 1_700_000_000 + len(rows)))
    events = normalize_events(
        pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "value", "timestamp"])
    )
    genre = ["jazz"] * 40 + ["metal"] * 40 + ["jazz", "metal"]
    titles = [f"{g} record {i}" for i, g in enumerate(genre[:80])] + list(cold_titles)
    items = pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(82)],
            "categories": genre,
            "price": 1.0,
            "stock": 1,
            "regions": "*",
            "created_at": 1_600_000_000,
            "title": titles,
        }
    )
    users = pd.DataFrame(
        {"user_id": [f"u{u}" for u in range(120)], "region": "", "attributes": "{}"}
    )
    return Dataset(events=events, items=items, users=users)


def test_an_untouched_item_lands_among_the_items_of_its_kind():
    config = load_config().replace(als={"factors": 8, "iterations": 10})
    data = build_training_data(_catalogue_with_two_tastes(("jazz record new", "metal new")), config)
    model = ALSModel.fit(data.interactions, config.als)
    cold = data.items.to_index(["i80", "i81"])
    assert not model.item_factors[cold].any()  # iALS alone: nothing to go on

    filled = fill_cold_items(model.item_factors, data, regularization=1.0)
    warm = np.setdiff1d(np.arange(len(filled)), cold)
    np.testing.assert_array_equal(filled[warm], model.item_factors[warm])  # the rest untouched
    jazz_fans, metal_fans = model.user_factors[:60], model.user_factors[60:]
    jazz_item, metal_item = filled[cold[0]], filled[cold[1]]
    assert (jazz_fans @ jazz_item).mean() > (metal_fans @ jazz_item).mean()
    assert (metal_fans @ metal_item).mean() > (jazz_fans @ metal_item).mean()
    # a jazz fan's best items by u·v include the new jazz record, not the new metal one
    user = model.user_factors[0]
    order = np.argsort(-(filled @ user))
    assert np.flatnonzero(order == cold[0])[0] < np.flatnonzero(order == cold[1])[0]


def test_an_item_without_content_keeps_no_vector():
    config = load_config().replace(als={"factors": 8, "iterations": 10})
    dataset = _catalogue_with_two_tastes(("", ""))
    dataset.items.loc[80:, "categories"] = ""
    data = build_training_data(dataset, config)
    model = ALSModel.fit(data.interactions, config.als)
    filled = fill_cold_items(model.item_factors, data, regularization=1.0)
    assert not filled[data.items.to_index(["i80", "i81"])].any()  # nothing to map from
    assert content_matrix(data).shape[0] == 82
