import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from pipelines.synthetic import (
    END_EPOCH,
    SyntheticSpec,
    _Chunk,
    _write_chunk,
    generate_from_spec,
    generate_synthetic,
)
from recsys.dataset import (
    ALL_REGIONS,
    EVENT_COLUMNS,
    EVENT_TYPE_DTYPE,
    ITEM_COLUMNS,
    USER_COLUMNS,
    normalize_events,
    split_list,
)

DAYS = 60
SIZE = {"n_users": 3000, "n_items": 1500, "n_events": 80_000}
KNOBS = {"n_categories": 40, "n_regions": 5, "days": DAYS, "seed": 7}


@pytest.fixture(scope="module")
def dataset():
    return generate_synthetic(**SIZE, **KNOBS)


def codes(column: pd.Series) -> np.ndarray:
    return column.cat.codes.to_numpy()


def primary_category(dataset) -> np.ndarray:
    """Primary category of each event's item (the first of its list; it drives sampling)."""
    first = dataset.items["categories"].str.split("|").str[0].to_numpy()
    return first[codes(dataset.events["item_id"])]


def test_frames_follow_the_dataset_schema(dataset):
    events, items, users = dataset.events, dataset.items, dataset.users
    assert tuple(events.columns) == EVENT_COLUMNS
    assert tuple(items.columns) == ITEM_COLUMNS
    assert tuple(users.columns) == USER_COLUMNS
    assert len(events) == SIZE["n_events"]
    assert events["event_type"].dtype == EVENT_TYPE_DTYPE
    assert events["value"].dtype == np.float32 and (events["value"] == 1.0).all()
    assert events["timestamp"].dtype == np.int64
    for frame, column in ((items, "created_at"), (items, "stock")):
        assert frame[column].dtype == np.int64
    assert items["price"].dtype == np.float64
    for frame, columns in (
        (items, ("item_id", "categories", "regions", "title")),
        (users, USER_COLUMNS),
    ):
        for column in columns:
            assert pd.api.types.is_string_dtype(frame[column].dtype), column
    # Ids are categoricals over exactly the users' and items' string ids.
    assert events["user_id"].cat.categories.equals(pd.Index(users["user_id"]))
    assert events["item_id"].cat.categories.equals(pd.Index(items["item_id"]))
    assert items["item_id"].is_unique and users["user_id"].is_unique


def test_normalize_events_turns_categorical_ids_into_the_same_strings(dataset):
    events = dataset.events.iloc[:5000]
    normalized = normalize_events(events)
    assert normalized["user_id"].tolist() == events["user_id"].tolist()
    assert normalized["item_id"].tolist() == events["item_id"].tolist()
    assert pd.api.types.is_string_dtype(normalized["user_id"].dtype)
    assert (normalized["timestamp"].to_numpy() == events["timestamp"].to_numpy()).all()


def test_events_are_sorted_inside_the_window(dataset):
    times = dataset.events["timestamp"].to_numpy()
    assert (np.diff(times) >= 0).all()
    assert times.min() >= END_EPOCH - DAYS * 86_400 and times.max() < END_EPOCH


def test_same_seed_same_frames_and_other_seed_other_events():
    small = {"n_users": 500, "n_items": 300, "n_events": 7_001, "n_categories": 20, "seed": 3}
    a = generate_synthetic(**small)
    b = generate_synthetic(**small, show_progress=True)
    for x, y in ((a.events, b.events), (a.items, b.items), (a.users, b.users)):
        pd.testing.assert_frame_equal(x, y)
    other = generate_synthetic(**{**small, "seed": 4})
    assert not a.events.equals(other.events)
    assert not a.items.equals(other.items)
    # The catalog and users come from their own streams: more events leave them alone.
    more = generate_synthetic(**{**small, "n_events": 9_000})
    pd.testing.assert_frame_equal(a.items, more.items)
    pd.testing.assert_frame_equal(a.users, more.users)


@pytest.mark.parametrize("n_events", [0, 1, 2, 3, 1_000])
def test_event_count_is_exact_and_trimming_keeps_the_funnel(n_events):
    dataset = generate_synthetic(50, 30, n_events, n_categories=5, seed=n_events)
    assert len(dataset.events) == n_events
    assert_funnel_order(dataset.events)


# Picks: 0 = view+cart+purchase at 10/11/12, 1 = view at 20, 2 = view+cart+purchase at 30/31/32.
@pytest.mark.parametrize(
    ("room", "expected_times"),
    [
        (7, [10, 11, 12, 20, 30, 31, 32]),
        (6, [10, 11, 12, 20, 30, 31]),  # the last pick loses its purchase, keeps its cart
        (5, [10, 11, 12, 20, 30]),  # the last pick keeps its view only
        (4, [10, 11, 12, 20]),  # the last pick does not fit at all
    ],
)
def test_trimming_the_last_pick_drops_purchase_before_cart(room, expected_times):
    chunk = _Chunk(
        user=np.array([0, 1, 2], dtype=np.int32),
        item=np.array([5, 6, 7], dtype=np.int32),
        time=np.array([10, 20, 30]),
        cart_time=np.array([11, 21, 31]),
        purchase_time=np.array([12, 22, 32]),
        is_cart=np.array([True, False, True]),
        is_purchase=np.array([True, False, True]),
    )
    out_user, out_item, out_type, out_time = (
        np.full(8, -1, dtype=d) for d in (np.int32, np.int32, np.int8, np.int64)
    )
    assert _write_chunk(chunk, room, 0, out_user, out_item, out_type, out_time) == room
    order = np.argsort(out_time[:room])
    assert out_time[:room][order].tolist() == expected_times
    names = {
        10: "view",
        11: "cart",
        12: "purchase",
        20: "view",
        30: "view",
        31: "cart",
        32: "purchase",
    }
    assert EVENT_TYPE_DTYPE.categories[out_type[:room][order]].tolist() == [
        names[t] for t in expected_times
    ]
    assert out_user[:room][order].tolist() == [t // 10 - 1 for t in expected_times]
    assert out_item[:room][order].tolist() == [t // 10 + 4 for t in expected_times]


def assert_funnel_order(events: pd.DataFrame) -> None:
    """In every (user, item) history, carts never outnumber earlier views, nor purchases carts."""
    frame = pd.DataFrame(
        {
            "user": codes(events["user_id"]),
            "item": codes(events["item_id"]),
            "time": events["timestamp"].to_numpy(),
            "type": events["event_type"].cat.codes.to_numpy(),
        }
    ).sort_values(["user", "item", "time", "type"])
    for name in ("view", "cart", "purchase"):
        frame[name] = (frame["type"] == EVENT_TYPE_DTYPE.categories.get_loc(name)).astype(int)
    running = frame.groupby(["user", "item"])[["view", "cart", "purchase"]].cumsum()
    assert (running["cart"] <= running["view"]).all()
    assert (running["purchase"] <= running["cart"]).all()


def test_funnel_narrows_from_views_to_purchases(dataset):
    counts = dataset.events["event_type"].value_counts()
    assert counts["view"] > 5 * counts["cart"] > 0
    assert counts["cart"] > 2 * counts["purchase"] > 0
    assert counts["click"] == counts["rating"] == 0
    assert_funnel_order(dataset.events)


def test_no_event_before_its_item_exists(dataset):
    created = dataset.items["created_at"].to_numpy()
    item = codes(dataset.events["item_id"])
    assert (dataset.events["timestamp"].to_numpy() >= created[item]).all()
    # Not vacuous: items launched inside the window do get events.
    start = END_EPOCH - DAYS * 86_400
    assert (created[np.unique(item)] > start).sum() >= 20


def test_every_event_item_is_sold_in_the_users_region(dataset):
    item_regions = [set(split_list(r)) for r in dataset.items["regions"]]
    user_region = dataset.users["region"].to_numpy()
    pairs = set(
        zip(codes(dataset.events["item_id"]), codes(dataset.events["user_id"]), strict=True)
    )
    for item, user in pairs:
        regions = item_regions[item]
        assert ALL_REGIONS in regions or user_region[user] in regions
    # Not vacuous: some items are regional and some of those are bought.
    regional = np.array([ALL_REGIONS not in r for r in item_regions])
    assert 0.1 < regional.mean() < 0.5
    assert regional[codes(dataset.events["item_id"])].mean() > 0.02


def test_catalog_has_stockouts_prices_and_new_items(dataset):
    items = dataset.items
    assert 0.02 < (items["stock"] == 0).mean() < 0.2
    assert (items["stock"] >= 0).all() and (items["price"] > 0).all()
    medians = items.groupby(items["categories"].str.split("|").str[0])["price"].median()
    assert medians.max() > 3 * medians.min()  # prices are set per category
    start = END_EPOCH - DAYS * 86_400
    assert 0.03 < (items["created_at"] >= start).mean() < 0.2


def test_popularity_is_skewed(dataset):
    counts = np.sort(np.bincount(codes(dataset.events["item_id"]), minlength=len(dataset.items)))[
        ::-1
    ]
    top_share = counts[: len(counts) // 100].sum() / counts.sum()
    assert top_share > 0.15  # uniform picks would give about 0.01


def test_users_concentrate_on_their_top_categories(dataset):
    events = pd.DataFrame(
        {"user": codes(dataset.events["user_id"]), "category": primary_category(dataset)}
    )
    events = events[events.groupby("user")["user"].transform("size") >= 20]

    def top3_share(frame: pd.DataFrame) -> float:
        per_pair = frame.groupby(["user", "category"]).size().sort_values(ascending=False)
        return per_pair.groupby(level="user").head(3).sum() / len(frame)

    # Reference: the same events with categories shuffled across users keep every marginal
    # (category popularity, user activity) and lose only the user-category link.
    shuffled = events.assign(
        category=np.random.default_rng(0).permutation(events["category"].to_numpy())
    )
    planted, reference = top3_share(events), top3_share(shuffled)
    assert planted > 0.6
    assert planted > reference + 0.25


def window_counts(dataset, quarters: tuple[int, ...]) -> list[np.ndarray]:
    times = dataset.events["timestamp"].to_numpy()
    quarter = (times - (END_EPOCH - DAYS * 86_400)) * 4 // (DAYS * 86_400)
    item = codes(dataset.events["item_id"])
    return [np.bincount(item[quarter == q], minlength=len(dataset.items)) for q in quarters]


def first_last_spearman(dataset) -> float:
    first, last = window_counts(dataset, (0, 3))
    top = np.argsort(-(first + last), kind="stable")[:150]
    return float(spearmanr(first[top], last[top]).statistic)


def test_item_popularity_drifts_between_first_and_last_window(dataset):
    first, last = window_counts(dataset, (0, 3))
    assert first_last_spearman(dataset) < 0.99
    top_first = set(np.argsort(-first, kind="stable")[:50])
    top_last = set(np.argsort(-last, kind="stable")[:50])
    assert len(top_first & top_last) < 50
    # Control: without drift the ranks agree better; what remains is sampling noise.
    still = generate_from_spec(SyntheticSpec(**SIZE, **KNOBS, drift=0.0))
    assert first_last_spearman(dataset) < first_last_spearman(still) - 0.1


def test_invalid_sizes_are_refused():
    with pytest.raises(ValueError, match="n_categories"):
        generate_synthetic(10, 5, 10, n_categories=6)
    with pytest.raises(ValueError, match="n_regions"):
        generate_synthetic(10, 10, 10, n_categories=2, n_regions=64)
