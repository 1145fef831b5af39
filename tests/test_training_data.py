import numpy as np
import pandas as pd

from pipelines.training_data import build_training_data
from recsys.config import load_config
from recsys.dataset import Dataset, list_membership, normalize_events
from recsys.interactions import is_positive, recent_positives
from tests.frames import plain_catalog


def tiny() -> Dataset:
    events = normalize_events(
        pd.DataFrame(
            {
                "user_id": ["a", "a", "a", "b", "b"],
                "item_id": ["x", "x", "y", "y", "z"],
                "event_type": ["view", "purchase", "rating", "rating", "cart"],
                "value": [1, 1, 5, 2, 1],
                "timestamp": [1, 2, 3, 4, 5],
            }
        )
    )
    items = plain_catalog(["x", "y", "z", "w"])
    users = pd.DataFrame({"user_id": ["a", "b"], "region": "", "attributes": "{}"})
    return Dataset(events, items, users)


def test_r_sums_configured_event_weights():
    config = load_config()
    data = build_training_data(tiny(), config)
    w = config.als.event_weights
    r = data.interactions.toarray()
    # a: x = view + purchase, y = a 5-star rating; b: y = a 2-star rating (weak), z = cart
    expected = np.array(
        [[w.view + w.purchase, w.rating, 0, 0], [0, config.als.negative_rating_weight, w.cart, 0]],
        dtype=np.float32,
    )
    np.testing.assert_allclose(r, expected)
    assert len(data.items) == 4  # the whole catalog, even items without events


def test_positives_follow_config():
    mask = is_positive(tiny().events, load_config())
    # view is not positive; purchase is; rating 5 >= 4 is; rating 2 is not; cart is
    assert mask.tolist() == [False, True, True, False, True]


def test_list_membership_parses_lists_without_row_loops():
    matrix, names = list_membership(
        pd.Series(["a|b", "", "b", "c|a|a", None], index=[9, 3, 5, 1, 0])
    )
    assert names == ("a", "b", "c")
    expected = [[1, 1, 0], [0, 0, 0], [0, 1, 0], [1, 0, 1], [0, 0, 0]]  # by position, not index
    np.testing.assert_array_equal(matrix.toarray().astype(int), expected)


def test_side_data_follows_the_id_maps():
    dataset = tiny()
    dataset.items["categories"] = ["c1|c2", "c2", "", "c3"]
    dataset.items["created_at"] = [10, 20, 30, 40]
    dataset.items["title"] = ["X", "Y", "Z", "W"]
    dataset.users["region"] = ["north", ""]
    data = build_training_data(dataset, load_config())
    x, y, w = (data.items.index_of(i) for i in ("x", "y", "w"))
    cats = data.item_categories.toarray()
    assert data.category_names == ("c1", "c2", "c3")
    assert cats[x].tolist() == [True, True, False] and cats[w].tolist() == [False, False, True]
    assert data.item_created[y] == 20 and data.item_text[w] == "W"
    assert data.region_names == ("north",)
    assert data.user_region[data.users.index_of("a")] == 0
    assert data.user_region[data.users.index_of("b")] == -1
    assert data.event_types.tolist() == [0, 3, 4, 4, 2]  # view, purchase, rating, rating, cart


def test_recent_positives_are_distinct_and_newest_first():
    events = normalize_events(
        pd.DataFrame(
            {
                "user_id": ["a", "a", "a", "a", "a", "b", "b"],
                "item_id": ["x", "y", "x", "z", "w", "y", "z"],
                "event_type": ["click", "click", "purchase", "view", "cart", "click", "click"],
                "value": 1,
                "timestamp": [1, 2, 3, 4, 5, 6, 7],
            }
        )
    )
    data = build_training_data(tiny().with_events(events), load_config())
    indptr, items = recent_positives(data, limit=2)
    names = data.items.to_external(items)
    a, b = data.users.index_of("a"), data.users.index_of("b")
    # a: positives x(1), y(2), x(3), w(5) -> distinct newest first w, x, y -> first two
    assert list(names[indptr[a] : indptr[a + 1]]) == ["w", "x"]
    assert list(names[indptr[b] : indptr[b + 1]]) == ["z", "y"]
    full_indptr, _ = recent_positives(data, limit=10)
    counts = np.diff(full_indptr)
    assert (counts[a], counts[b]) == (3, 2)
