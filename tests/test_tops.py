"""Static tops (seed 004, "Статические топы") on a tiny hand-computed shop.

Items A, B, C, D (indices 0-3); categories A: c1, B: c1|c2, C: c2, D: none.
Users u1, u2 live in "north", u3, u4 in "south", u5 has no region.
Times are T0 + day * 86400; the newest event (u2 carts B on day 10) is "now".
The 3-day window holds days (7, 10]; its previous window days (4, 7].
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from candidates.tops import TopsModel, window_label
from pipelines.synthetic import generate_synthetic
from pipelines.training_data import build_training_data
from recsys.config import load_config
from recsys.context import RequestContext
from recsys.dataset import Dataset, normalize_events
from tests.frames import plain_catalog

DAY = 86_400
T0 = 1_000 * DAY
A, B, C, D = 0, 1, 2, 3
TOPS = {
    "windows_days": [3, 0],
    "depth": 10,
    "pctr_prior_strength": 2.0,
    "trending_prior": 1.0,
    "trending_min_count": 2,
    "new_days": 5,
    "user_categories": 2,
}
EVENTS = [  # user, item, event type, day
    ("u1", "A", "view", 8.0),
    ("u1", "A", "click", 8.5),
    ("u1", "A", "click", 9.0),  # a second click by u1: still one clicking user
    ("u2", "A", "view", 9.0),
    ("u3", "A", "view", 9.5),
    ("u3", "A", "purchase", 9.6),
    ("u4", "A", "view", 7.0),  # exactly now - 3 days: outside the 3-day window
    ("u5", "A", "view", 5.0),
    ("u1", "B", "view", 9.9),
    ("u2", "B", "view", 9.9),
    ("u2", "B", "cart", 10.0),
    ("u3", "B", "view", 2.0),
    ("u4", "C", "click", 8.0),
    ("u4", "C", "purchase", 8.0),
    ("u4", "C", "purchase", 8.2),
    ("u5", "C", "view", 6.0),
    ("u1", "C", "view", 6.0),
    ("u2", "C", "view", 5.0),
]


def shop() -> Dataset:
    users, items, kinds, days = zip(*EVENTS, strict=True)
    events = normalize_events(
        pd.DataFrame(
            {
                "user_id": users,
                "item_id": items,
                "event_type": kinds,
                "value": 1.0,
                "timestamp": [T0 + round(d * DAY) for d in days],
            }
        )
    )
    catalog = pd.DataFrame(
        {
            "item_id": ["A", "B", "C", "D"],
            "categories": ["c1", "c1|c2", "c2", ""],
            "price": 1.0,
            "stock": 1,
            "regions": "*",
            "created_at": [T0 - 100 * DAY, T0 + 6 * DAY, T0 + 9 * DAY, T0 + 12 * DAY],
            "title": "",
        }
    )
    people = pd.DataFrame(
        {
            "user_id": ["u1", "u2", "u3", "u4", "u5"],
            "region": ["north", "north", "south", "south", ""],
            "attributes": "{}",
        }
    )
    return Dataset(events, catalog, people)


def fit(**overrides) -> TopsModel:
    config = load_config().replace(tops={**TOPS, **overrides})
    return TopsModel.fit(build_training_data(shop(), config), config)


@pytest.fixture(scope="module")
def model() -> TopsModel:
    return fit()


def ids(model: TopsModel, *key) -> list[int]:
    return model.top(*key)[0].tolist()


def scores(model: TopsModel, *key) -> np.ndarray:
    return model.top(*key)[1]


def test_clicks_count_distinct_users_and_the_window_cut(model):
    # 3d: A clicked by u1 (twice) and u3 (purchase); B by u2 (cart); C by u4
    assert ids(model, "clicks", 3) == [A, B, C]  # tie B-C broken by index
    np.testing.assert_allclose(scores(model, "clicks", 3), [2, 1, 1])
    # impressions 3d: A = u1, u2, u3 (u4's view sits exactly on the cut) -> CTR 2/3, not 2/4
    np.testing.assert_allclose(scores(model, "ctr", 3), [1, 2 / 3, 1 / 2], rtol=1e-6)
    assert ids(model, "ctr", 3) == [C, A, B]
    # all history: impressions A 5, B 3, C 4; clicks A 2, B 1, C 1
    np.testing.assert_allclose(scores(model, "ctr", 0), [2 / 5, 1 / 3, 1 / 4], rtol=1e-6)
    assert ids(model, "ctr", 0) == [A, B, C]


def test_pctr_is_beta_smoothed_towards_the_window_ctr(model):
    # 3d: Σ clicks 4 / Σ impressions 6 -> p0 = 2/3; m = 2
    p0, m = 4 / 6, 2.0
    expected = {A: (2 + m * p0) / (3 + m), B: (1 + m * p0) / (2 + m), C: (1 + m * p0) / (1 + m)}
    assert ids(model, "pctr", 3) == [C, A, B]
    np.testing.assert_allclose(scores(model, "pctr", 3), [expected[i] for i in (C, A, B)], 1e-6)


def test_wctr_uses_event_weights_without_views(model):
    w = load_config().als.event_weights
    # 3d weighted clicks: A = 2 clicks + purchase, B = cart, C = click + 2 purchases
    clicks = {A: 2 * w.click + w.purchase, B: w.cart, C: w.click + 2 * w.purchase}
    impressions = {A: 3, B: 2, C: 1}
    wctr = {i: clicks[i] / impressions[i] for i in clicks}
    order = sorted(wctr, key=lambda i: -wctr[i])
    assert ids(model, "wctr", 3) == order
    np.testing.assert_allclose(scores(model, "wctr", 3), [wctr[i] for i in order], rtol=1e-6)
    q0, m = sum(clicks.values()) / 6, 2.0
    wpctr = {i: (clicks[i] + m * q0) / (impressions[i] + m) for i in clicks}
    assert ids(model, "wpctr", 3) == sorted(wpctr, key=lambda i: -wpctr[i])
    np.testing.assert_allclose(
        np.sort(scores(model, "wpctr", 3)), np.sort(list(wpctr.values())), rtol=1e-6
    )


def test_purchases_and_weighted(model):
    assert ids(model, "purchases", 3) == [C, A]  # C twice, A once, B never (score 0 dropped)
    np.testing.assert_allclose(scores(model, "purchases", 3), [2, 1])
    w = load_config().als.event_weights
    weighted = {
        A: 5 * w.view + 2 * w.click + w.purchase,  # a view by each of u1..u5
        B: 3 * w.view + w.cart,
        C: 3 * w.view + w.click + 2 * w.purchase,
    }
    assert ids(model, "weighted", 0) == sorted(weighted, key=lambda i: -weighted[i])
    np.testing.assert_allclose(
        scores(model, "weighted", 0), sorted(weighted.values(), reverse=True), rtol=1e-6
    )


def test_trending_growth_and_min_count(model):
    # current 3d pairs: A 3, B 2, C 1; previous (4, 7]: A 2 (u4 on the cut, u5), B 0, C 3
    # C has 1 < min_count 2 current pairs, so it is out although its growth 2/4 is positive
    assert ids(model, "trending", 3) == [B, A]
    np.testing.assert_allclose(scores(model, "trending", 3), [(2 + 1) / (0 + 1), (3 + 1) / (2 + 1)])
    assert "top_trending_all" not in model.names()


def test_region_lists_count_only_their_users(model):
    north, south = model.region_index("north"), model.region_index("south")
    assert ids(model, "purchases", 3, "region", south) == [C, A]
    assert ids(model, "purchases", 3, "region", north) == []
    # all-history weighted, north = u1, u2 only (u5 has no region and is left out)
    w = load_config().als.event_weights
    north_weighted = {A: 2 * w.view + 2 * w.click, B: 2 * w.view + w.cart, C: 2 * w.view}
    expected = sorted(north_weighted.values(), reverse=True)
    np.testing.assert_allclose(scores(model, "weighted", 0, "region", north), expected)
    # the prior of a region list is the region's own CTR: north 3d = 2 clicks / 4 pairs
    p0, m = 0.5, 2.0
    np.testing.assert_allclose(
        scores(model, "pctr", 3, "region", north), [(1 + m * p0) / (2 + m)] * 2
    )
    assert ids(model, "pctr", 3, "region", north) == [A, B]


def test_category_lists_rank_members_by_the_global_score(model):
    c1, c2 = 0, 1  # category names sort as c1, c2
    assert ids(model, "pctr", 3, "category", c1) == [A, B]
    assert ids(model, "pctr", 3, "category", c2) == [C, B]
    np.testing.assert_allclose(
        scores(model, "pctr", 3, "category", c2), scores(model, "pctr", 3)[[0, 2]]
    )


def test_depth_keeps_the_best_items_per_list():
    small = fit(depth=2)
    assert ids(small, "weighted", 0) == [C, A]
    assert ids(small, "clicks", 3) == [A, B]
    assert np.diff(small.offsets).max() <= 2


def test_new_items_newest_first(model):
    # now = T0 + 10 days, new_days 5: created after day 5 -> D (day 12), C (9), B (6); A is old
    assert ids(model, "new", 0) == [D, C, B]
    np.testing.assert_allclose(scores(model, "new", 0), [7 / 5, 4 / 5, 1 / 5], rtol=1e-6)
    assert ids(model, "new", 0, "category", 1) == [C, B]
    assert model.generator("top_new").generate(RequestContext(0), 2).item_ids.tolist() == [D, C]


def test_global_and_region_generators(model):
    top = model.generator("top_clicks_3d").generate(RequestContext(0), 2)
    assert top.item_ids.tolist() == [A, B] and top.source == "top_clicks_3d"
    assert top.item_ids.dtype == np.int64 and top.scores.dtype == np.float32
    by_region = model.generator("top_purchases_3d_by_region")
    assert by_region.generate(RequestContext(0, region="south"), 5).item_ids.tolist() == [C, A]
    assert len(by_region.generate(RequestContext(0, region="east"), 5)) == 0
    assert len(by_region.generate(RequestContext(-1), 5)) == 0
    assert len(model.generator("top_ctr_all").generate(RequestContext(0), 0)) == 0
    with pytest.raises(ValueError, match="budget"):
        model.generator("top_ctr_all").generate(RequestContext(0), -1)


def test_category_generator_splits_the_budget_by_history_share(model):
    gen = model.generator("top_weighted_all_by_category")
    # weighted, all history: A 17, B 7, C 21; c1 = [A, B], c2 = [C, B]
    history = np.array([A, B], dtype=np.int64)  # c1 twice, c2 once
    three = gen.generate(RequestContext(0, history=history), 3)
    assert three.item_ids.tolist() == [C, A, B]  # quotas c1 2 ([A, B]), c2 1 ([C])
    two = gen.generate(RequestContext(0, history=history), 2)
    assert two.item_ids.tolist() == [C, A]  # 2 * (2/3, 1/3) -> largest remainder (1, 1)
    # an item of two chosen categories appears once
    assert gen.generate(RequestContext(0, history=history), 10).item_ids.tolist() == [C, A, B]
    basket = gen.generate(RequestContext(0, basket=np.array([C])), 5)
    assert basket.item_ids.tolist() == [C, B]  # no history: the basket's categories
    assert len(gen.generate(RequestContext(0), 5)) == 0
    one = fit(user_categories=1).generator("top_weighted_all_by_category")
    assert one.generate(RequestContext(0, history=history), 3).item_ids.tolist() == [A, B]


def test_unknown_generator_names_are_rejected(model):
    for bad in ("top_clicks_5d", "top_trending_all", "top_new_by_region", "top_foo_3d"):
        with pytest.raises(ValueError, match="top_clicks_3d_by_region"):
            model.generator(bad)
    assert len(model.names()) == 8 * 2 * 3 - 3 + 2  # no trending over all history


def test_save_load_round_trip(model, tmp_path):
    model.save(tmp_path)
    loaded = TopsModel.load(tmp_path)
    for name in ("ids", "scores", "offsets", "key_metric", "key_window", "key_scope"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(model, name))
    assert loaded.names() == model.names()
    assert (loaded.region_names, loaded.now) == (model.region_names, model.now)
    ctx = RequestContext(0, region="north", history=np.array([B]))
    for name in ("top_pctr_3d", "top_wctr_all_by_region", "top_new_by_category"):
        a, b = model.generator(name).generate(ctx, 5), loaded.generator(name).generate(ctx, 5)
        np.testing.assert_array_equal(a.item_ids, b.item_ids)
        np.testing.assert_array_equal(a.scores, b.scores)


def test_load_fails_loudly(tmp_path, model):
    with pytest.raises(FileNotFoundError):
        TopsModel.load(tmp_path)
    model.save(tmp_path)
    (tmp_path / "tops.json").write_text('{"format": 99}')
    with pytest.raises(ValueError, match="format"):
        TopsModel.load(tmp_path)


def test_rating_only_data_has_no_purchases():
    events = normalize_events(
        pd.DataFrame(
            {
                "user_id": ["a", "b", "c", "a"],
                "item_id": ["x", "x", "x", "y"],
                "event_type": "rating",
                "value": [5, 2, 4, 3],
                "timestamp": [1, 2, 3, 4],
            }
        )
    )
    catalog = plain_catalog(["x", "y"])
    people = pd.DataFrame({"user_id": ["a", "b", "c"], "region": "", "attributes": "{}"})
    config = load_config().replace(tops=TOPS)
    model = TopsModel.fit(build_training_data(Dataset(events, catalog, people), config), config)
    assert ids(model, "purchases", 0) == []
    assert len(model.generator("top_purchases_all").generate(RequestContext(0), 10)) == 0
    # impressions = raters (x: 3), clicks = ratings >= 4 (x: 2); y's one rating is weak
    assert ids(model, "ctr", 0) == [0]
    np.testing.assert_allclose(scores(model, "ctr", 0), [2 / 3], rtol=1e-6)


def test_matches_a_pandas_reference_on_a_synthetic_shop():
    dataset = generate_synthetic(300, 200, 6_000, n_categories=8, seed=3)
    config = load_config().replace(tops={"windows_days": [7], "depth": 1000})
    data = build_training_data(dataset, config)
    model = TopsModel.fit(data, config)
    frame = pd.DataFrame(
        {
            "user": data.event_users,
            "item": data.event_items,
            "positive": data.event_positive,
            "region": data.user_region[data.event_users],
        }
    )[data.event_times > data.newest_time - 7 * DAY]
    m = config.tops.pctr_prior_strength
    for region in (-1, 2):  # the global list and one region's
        part = frame if region < 0 else frame[frame["region"] == region]
        pairs = part.groupby(["user", "item"])["positive"].any().groupby("item")
        clicks, impressions = pairs.sum(), pairs.size()
        p0 = clicks.sum() / impressions.sum()
        pctr = ((clicks + m * p0) / (impressions + m)).sort_index()
        expected = pctr.sort_values(ascending=False, kind="stable")
        got_ids, got_scores = model.top("pctr", 7, *(("region", region) if region >= 0 else ()))
        assert got_ids.tolist() == expected.index.tolist()
        np.testing.assert_allclose(got_scores, expected.to_numpy(), rtol=1e-5)


def test_item_stats_hold_every_global_metric_for_every_item(model):
    names = model.stat_names()
    assert model.item_stats.shape == (len(names), model.item_category_indptr.shape[0] - 1)
    for metric, window in (("pctr", 3), ("clicks", 0), ("trending", 3), ("weighted", 0)):
        ids, scores = model.top(metric, window)
        row = model.item_stats[names.index(f"{metric}_{window_label(window)}")]
        np.testing.assert_allclose(row[ids], scores, rtol=1e-6)  # the list is a view of the row
    assert "trending_all" not in names


def test_one_stray_event_far_ahead_does_not_empty_the_windowed_tops(caplog):
    dataset = generate_synthetic(300, 200, 6_000, n_categories=8, seed=3)
    config = load_config().replace(tops={"windows_days": [7], "depth": 1000})
    clean = TopsModel.fit(build_training_data(dataset, config), config)
    events = dataset.events
    stray = events.iloc[[0]].assign(timestamp=int(events["timestamp"].max()) + 400 * DAY)
    with_stray = dataset.with_events(pd.concat([events, stray], ignore_index=True))
    data = build_training_data(with_stray, config)
    assert data.newest_time == int(events["timestamp"].max())  # the rest's newest event
    assert "1 events lie more than 7 days beyond the rest" in caplog.text
    model = TopsModel.fit(data, config)
    expected, _ = clean.top("clicks", 7)
    got, _ = model.top("clicks", 7)
    assert len(expected) > 0 and got.tolist() == expected.tolist()
