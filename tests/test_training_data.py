import numpy as np
import pandas as pd

from pipelines.dataset import Dataset, normalize_events
from pipelines.training_data import build_training_data, is_positive
from recsys.config import load_config


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
    items = pd.DataFrame(
        {
            "item_id": ["x", "y", "z", "w"],
            "categories": "",
            "price": 1.0,
            "stock": 1,
            "regions": "*",
            "created_at": 0,
            "title": "",
        }
    )
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
