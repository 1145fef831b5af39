"""Business candidates (seed 004 "Бизнесовые кандгены") on a hand-made neighbour table."""

import numpy as np
import pytest

from candidates.business import BusinessGenerator
from recsys.config import load_config
from recsys.context import RequestContext

# item -> [(neighbour, similarity)]; 7 items
NEIGHBOURS = {
    0: [(1, 0.9), (2, 0.5)],
    1: [(0, 0.9), (3, 0.4)],
    2: [(5, 0.8)],
    3: [(6, 0.7), (2, 0.3)],
    4: [(2, 0.6)],
}


class TableI2I:
    def neighbors(self, kind: str, items: np.ndarray, per_item: int):
        assert kind == "npmi"
        ids = np.full((len(items), per_item), -1, np.int64)
        scores = np.zeros((len(items), per_item), np.float32)
        for row, item in enumerate(items):
            for col, (n, s) in enumerate(NEIGHBOURS.get(int(item), [])[:per_item]):
                ids[row, col], scores[row, col] = n, s
        return ids, scores


def generator(**business):
    config = load_config().replace(
        business={"neighbor_kind": "npmi", "neighbors_per_item": 5, "history_items": 2, **business}
    )
    return BusinessGenerator(TableI2I(), config.business)


def ctx(**lists):
    return RequestContext(user_index=0, **{k: np.array(v, np.int64) for k, v in lists.items()})


def test_scores_merge_basket_favourites_and_recent_history():
    # basket [4] weight 1, favourites [3] weight 1, history [0, 1, 2] -> first two, weights 1, 0.5
    answer = generator().generate(ctx(basket=[4], favorites=[3], history=[0, 1, 2]), budget=10)
    got = dict(zip(answer.item_ids.tolist(), answer.scores.tolist(), strict=True))
    expected = {
        2: 0.6 + 0.3 + 0.5,  # neighbour of basket 4, favourite 3 and history 0 (weight 1)
        6: 0.7,  # neighbour of favourite 3
        1: max(0.9, 0.5),  # neighbour of history 0 (0.9); itself history at rank 1 (0.5)
        0: max(0.9 * 0.5, 1.0),  # neighbour of history 1 (0.45); itself newest history (1.0)
        3: max(0.4 * 0.5, 1.0),  # neighbour of history 1 (0.2); itself a favourite (1.0)
    }
    assert got.keys() == expected.keys()  # 4 (basket) is not proposed; 2 of history is cut
    for item, score in expected.items():
        assert got[item] == pytest.approx(score)
    assert list(answer.scores) == sorted(answer.scores, reverse=True)
    assert answer.source == "business"


def test_budget_and_empty_context():
    g = generator()
    assert len(g.generate(ctx(history=[0, 1]), budget=2)) == 2
    assert len(g.generate(ctx(), budget=10)) == 0
    assert len(g.generate(ctx(history=[0]), budget=0)) == 0
    with pytest.raises(ValueError, match="budget"):
        g.generate(ctx(history=[0]), budget=-1)
