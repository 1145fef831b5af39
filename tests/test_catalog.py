"""The bundle's item catalog: titles travel with it so that answers can name their items."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.training_data import build_training_data
from recsys.config import load_config
from serving.catalog import TITLES_FILE, ItemCatalog
from tests.frames import one_click_dataset, plain_catalog

TITLES = {"hat": "Straw hat", "coat": "", "sock": "Wool sock, grey"}


def catalog() -> tuple[ItemCatalog, list[str]]:
    dataset = one_click_dataset(plain_catalog(list(TITLES), title=list(TITLES.values())), "hat")
    data = build_training_data(dataset, load_config())
    return ItemCatalog.build(dataset, data), list(data.items.ids)


def test_titles_follow_the_item_indices_and_survive_a_round_trip(tmp_path):
    built, ids = catalog()
    assert [built.titles[i] for i in range(len(ids))] == [TITLES[item] for item in ids]
    built.save(tmp_path)
    np.testing.assert_array_equal(ItemCatalog.load(tmp_path).titles, built.titles)


def test_an_old_catalog_without_titles_loads_with_empty_ones(tmp_path):
    built, _ = catalog()
    built.save(tmp_path)
    (tmp_path / TITLES_FILE).unlink()
    assert ItemCatalog.load(tmp_path).titles.tolist() == ["", "", ""]


def test_titles_for_another_catalogue_are_refused_naming_the_file(tmp_path):
    built, _ = catalog()
    built.save(tmp_path)
    pd.DataFrame({"title": ["one", "two"]}).to_parquet(tmp_path / TITLES_FILE)
    with pytest.raises(ValueError, match=f"{TITLES_FILE} has 2 titles for 3 items"):
        ItemCatalog.load(tmp_path)
