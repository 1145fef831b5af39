"""Product groups from the catalog: an optional items column, dense codes in the bundle's
catalog, and the business rules' dedup showing one item per group."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.build import build_bundle
from pipelines.loaders import load_dataset_dir, save_dataset_dir
from pipelines.training_data import build_training_data
from recsys.config import load_config
from recsys.dataset import Dataset
from serving.catalog import CATALOG_FILE, ItemCatalog
from serving.pipeline import RecommendPipeline, RecommendRequest
from tests.conftest import shop_config
from tests.frames import one_click_dataset, plain_catalog
from tests.stored_files import resave_npz


def tiny(group: list | None) -> Dataset:
    items = plain_catalog(["shoe-41", "shoe-42", "hat", "coat", "sock"])
    if group is not None:
        items["group"] = group
    return one_click_dataset(items, "hat")


def catalog_of(dataset: Dataset) -> tuple[ItemCatalog, list[str]]:
    data = build_training_data(dataset, load_config())
    return ItemCatalog.build(dataset, data), list(data.items.ids)


def test_items_of_one_group_share_a_code_and_no_group_is_minus_one():
    catalog, ids = catalog_of(tiny(["shoe", "shoe", "", "coat", None]))
    code = dict(zip(ids, catalog.group.tolist(), strict=True))
    assert catalog.group.dtype == np.int64
    assert code["shoe-41"] == code["shoe-42"] >= 0
    assert code["coat"] >= 0 and code["coat"] != code["shoe-41"]
    assert code["hat"] == code["sock"] == -1  # empty and missing: no group
    assert sorted({code["coat"], code["shoe-41"]}) == [0, 1]  # dense codes


def test_a_catalog_without_the_column_has_no_groups():
    catalog, _ = catalog_of(tiny(None))
    np.testing.assert_array_equal(catalog.group, np.full(5, -1))


def test_groups_are_saved_and_an_old_catalog_without_them_loads(tmp_path):
    catalog, _ = catalog_of(tiny(["shoe", "shoe", "", "coat", ""]))
    catalog.save(tmp_path)
    np.testing.assert_array_equal(ItemCatalog.load(tmp_path).group, catalog.group)
    resave_npz(tmp_path / CATALOG_FILE, drop=("group",))  # a bundle from before groups
    loaded = ItemCatalog.load(tmp_path)
    np.testing.assert_array_equal(loaded.group, np.full(5, -1))
    np.testing.assert_array_equal(loaded.in_stock, catalog.in_stock)


@pytest.mark.parametrize("file_format", ["csv", "parquet"])
def test_the_group_column_survives_loading_as_text(tmp_path, file_format):
    # numbers with gaps (a nullable integer column) are group names too
    dataset = tiny(pd.array([7, 7, None, 8, None], dtype="Int64"))
    save_dataset_dir(dataset, tmp_path, file_format)
    items = load_dataset_dir(tmp_path).items
    assert items["group"].tolist() == ["7", "7", "", "8", ""]
    save_dataset_dir(tiny(None), tmp_path / "plain", file_format)
    assert "group" not in load_dataset_dir(tmp_path / "plain").items.columns


@pytest.fixture(scope="module")
def grouped_shop(shop_dir, tmp_path_factory):
    """The synthetic shop with pairs of items in one group (every fifth item in none),
    written to files and loaded back: the bring-your-own-data path."""
    dataset = load_dataset_dir(shop_dir)
    n = len(dataset.items)
    group = np.array([f"pair-{i // 2}" for i in range(n)], dtype=object)
    group[np.arange(n) % 5 == 0] = None
    directory = save_dataset_dir(
        Dataset(dataset.events, dataset.items.assign(group=group), dataset.users),
        tmp_path_factory.mktemp("grouped-shop"),
    )
    config = shop_config(tmp_path_factory.mktemp("grouped"), directory)
    bundle = build_bundle(load_dataset_dir(directory), config).bundle
    return bundle, config


def groups_shown(bundle, config, dedup: bool, users: list[str], k: int) -> list[np.ndarray]:
    pipeline = RecommendPipeline.candidate_stage(
        bundle, config.replace(rules={"dedup_groups": dedup})
    )
    shown = []
    for user in users:
        result = pipeline.recommend(RecommendRequest(user, k))
        assert len(result.items) == k
        items = bundle.items.to_index([i.item_id for i in result.items])
        shown.append(bundle.catalog.group[items])
    return shown


def repeats(groups: np.ndarray) -> int:
    grouped = groups[groups >= 0]
    return len(grouped) - len(np.unique(grouped))


def test_dedup_shows_one_item_per_group_end_to_end(grouped_shop):
    bundle, config = grouped_shop
    assert (bundle.catalog.group >= 0).sum() == 240  # 300 items, every fifth without a group
    users = [str(u) for u in bundle.users.ids[:20]]
    on = groups_shown(bundle, config, True, users, k=30)
    off = groups_shown(bundle, config, False, users, k=30)
    assert all(repeats(groups) == 0 for groups in on)
    assert sum(repeats(groups) for groups in off) > 0  # without dedup, pairs do show up


def test_items_added_after_the_rules_respect_the_groups_too(grouped_shop):
    """A long list runs past the ranked head: the top-up and the popularity backfill must
    not bring a second item of a group back."""
    bundle, config = grouped_shop
    few = config.replace(serving={"generators": ["als"], "candidate_budget": 20})
    pipeline = RecommendPipeline.candidate_stage(bundle, few)
    backfilled = 0
    for user in [str(u) for u in bundle.users.ids[:10]]:
        items = pipeline.recommend(RecommendRequest(user, 60)).items
        backfilled += sum(item.stage == "backfill" for item in items)
        groups = bundle.catalog.group[bundle.items.to_index([i.item_id for i in items])]
        assert repeats(groups) == 0
    assert backfilled > 0  # the backfill really ran
