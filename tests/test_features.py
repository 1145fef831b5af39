"""Ranking features: one path for training and serving, hand-checked values, no leakage."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.loaders import load_dataset_dir
from pipelines.ranking_data import build_ranking_data
from serving.pipeline import RecommendRequest
from tests.conftest import shop_config


@pytest.fixture(scope="module")
def shop(shop_dir, tmp_path_factory):
    config = shop_config(tmp_path_factory.mktemp("features"), shop_dir)
    dataset = load_dataset_dir(shop_dir)
    times = np.sort(dataset.events["timestamp"].to_numpy())
    cutoff = int(times[int(0.8 * len(times))])
    data = build_ranking_data(dataset, config, cutoff, random_negatives=10, max_users=40)
    return dataset, config, cutoff, data


def test_training_rows_equal_what_serving_computes(shop):
    _, _, _, data = shop
    pipeline, frame = data.pipeline, data.frame
    for group, user in list(enumerate(data.users))[:10]:
        ctx = pipeline.context(RecommendRequest(user_id=user, k=10))
        served_candidates, _ = pipeline.candidates(ctx)
        served = pipeline.features.build(ctx, served_candidates)
        rows = frame.groups == group
        trained_items = frame.sparse[rows, 1] - 1
        # the training rows are the served candidates plus random negatives
        assert set(served_candidates.items) <= set(trained_items)
        position = np.searchsorted(trained_items, served_candidates.items)
        np.testing.assert_array_equal(frame.dense[rows][position], served.dense)
        np.testing.assert_array_equal(frame.sparse[rows][position], served.sparse)


def test_feature_values_by_hand(shop):
    dataset, _, cutoff, data = shop
    pipeline, frame = data.pipeline, data.frame
    bundle = pipeline.bundle
    names = frame.dense_names
    col = {name: names.index(name) for name in names}
    before = dataset.events[dataset.events["timestamp"] < cutoff]
    user = data.users[0]
    rows = np.flatnonzero(frame.groups == 0)
    items = frame.sparse[rows, 1] - 1
    u = bundle.users.index_of(user)
    als = bundle.als.model
    np.testing.assert_allclose(
        frame.dense[rows, col["als_dot"]], als.item_factors[items] @ als.user_factors[u], rtol=1e-5
    )
    mine = before[before["user_id"] == user]
    assert frame.dense[rows[0], col["user_events"]] == len(mine)
    assert frame.dense[rows[0], col["user_distinct_items"]] == mine["item_id"].nunique()
    # an item a generator did not find has NaN (missing) in its columns, never 0
    score_columns = [col[f"gen_{g}_score"] for g in pipeline.features.generator_names]
    found = ~np.isnan(frame.dense[:, score_columns])
    np.testing.assert_array_equal(found.sum(axis=1), frame.dense[:, col["n_sources"]])
    rank_columns = [col[f"gen_{g}_rank"] for g in pipeline.features.generator_names]
    np.testing.assert_array_equal(found, ~np.isnan(frame.dense[:, rank_columns]))
    # category recency: days since the user's newest event in one of the item's categories
    catalog = dataset.items.set_index("item_id")["categories"]
    now = bundle.stats.now
    for row, item in zip(rows[:20], items[:20], strict=True):
        item_categories = set(catalog[bundle.items.ids[item]].split("|"))
        touched = mine[
            mine["item_id"].map(
                lambda i, wanted=item_categories: bool(wanted & set(catalog[i].split("|")))
            )
        ]
        got = frame.dense[row, col["category_recency_days"]]
        if len(touched):
            assert got == pytest.approx((now - touched["timestamp"].max()) / 86400, rel=1e-5)
        else:
            assert np.isnan(got)


def test_labels_mark_positives_after_the_cutoff(shop):
    dataset, config, cutoff, data = shop
    frame = data.frame
    assert set(np.unique(frame.labels)) == {0.0, 1.0}
    for group, user in list(enumerate(data.users))[:10]:
        rows = frame.groups == group
        labelled = set(
            data.pipeline.bundle.items.ids[frame.sparse[rows, 1][frame.labels[rows] == 1] - 1]
        )
        after = dataset.events[
            (dataset.events["timestamp"] >= cutoff) & (dataset.events["user_id"] == user)
        ]
        positives = set(after.loc[after["event_type"].isin(config.data.positive_events), "item_id"])
        assert labelled and labelled <= positives


def test_no_leakage_future_events_do_not_change_features(shop):
    dataset, config, cutoff, data = shop
    events = dataset.events.copy()
    future = events["timestamp"] >= cutoff
    # rewrite the future: later, duplicated, and some of it about other items
    shifted = events[future].copy()
    shifted["timestamp"] += 3600
    rewritten = shifted.copy()
    rewritten["item_id"] = np.random.default_rng(1).permutation(rewritten["item_id"].to_numpy())
    changed = dataset.with_events(
        __import__("pandas")
        .concat([events[~future], shifted, rewritten])
        .sort_values("timestamp", kind="stable")
        .reset_index(drop=True)
    )
    again = build_ranking_data(changed, config, cutoff, random_negatives=10, max_users=40)
    common = sorted(set(data.users) & set(again.users))
    assert len(common) >= 10
    for user in common:
        a = data.frame.groups == data.users.index(user)
        b = again.frame.groups == again.users.index(user)
        np.testing.assert_array_equal(data.frame.sparse[a], again.frame.sparse[b])
        np.testing.assert_array_equal(data.frame.dense[a], again.frame.dense[b])
