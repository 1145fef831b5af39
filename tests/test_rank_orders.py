"""The orders of Rank's input (ranking/rank_orders.py): EASE's scores of the caller's items,
the unmodelled ones after them in popularity order, popularity for a user EASE knows nothing
of; every configured name has a scorer, and one the bundle cannot serve is refused clearly."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp

from candidates.als import ALSModel
from candidates.ease import EASEGenerator, EASEModel
from candidates.popularity import PopularityTop
from ranking.rank_orders import LABELS, EASEOrder, rank_order
from recsys.arrays import NO_ITEMS
from recsys.config import RANK_ORDERS, EASEConfig, load_config
from recsys.context import RequestContext

X = np.array([[1, 0, 1, 1, 0], [1, 1, 0, 1, 0], [0, 1, 1, 1, 1], [1, 0, 0, 0, 1]], float)
POPULARITY = PopularityTop.from_scores(np.array([5, 1, 3, 2, 4], np.float32))


def test_ease_order_scores_by_ease_then_unmodelled_items_by_popularity():
    model = EASEModel.fit(sp.csr_matrix(X), EASEConfig(regularization=2.0, max_items=3))
    assert model.items.tolist() == [0, 1, 3]  # 2 and 4 are not modelled
    seen = {0: np.array([0])}
    order = EASEOrder(EASEGenerator(model, lambda u: seen.get(u, NO_ITEMS)), POPULARITY)
    items = np.array([4, 1, 2, 3])
    scores = order.score(RequestContext(user_index=0), items)
    np.testing.assert_allclose(scores[[1, 3]], model.score_items(np.array([0]))[[1, 3]])
    # the unmodelled ones after every modelled one, the more popular (4) first
    assert scores[[0, 2]].max() < scores[[1, 3]].min() and scores[0] > scores[2]
    assert np.isfinite(scores).all()
    # a user EASE knows nothing of (no items, no session): popularity, as iALS's order gives
    unknown = order.score(RequestContext(user_index=7), items)
    np.testing.assert_array_equal(unknown, POPULARITY.scores[items])


def test_every_configured_order_has_a_scorer_and_a_missing_model_is_named():
    model = EASEModel.fit(sp.csr_matrix(X), EASEConfig(regularization=2.0, max_items=5))
    als = ALSModel(np.ones((4, 2), np.float32), np.ones((5, 2), np.float32))
    bundle = SimpleNamespace(
        als=SimpleNamespace(model=als),
        ease=model,
        popularity=POPULARITY,
        profiles=SimpleNamespace(seen_items=lambda u: np.array([0])),
    )
    config = load_config()
    assert set(LABELS) == set(RANK_ORDERS)
    for name in RANK_ORDERS:
        scores = rank_order(name, bundle, config).score(RequestContext(0), np.arange(5))
        assert scores.shape == (5,) and np.isfinite(scores).all()
    assert rank_order("ease", bundle, config).name == "ease"
    with pytest.raises(ValueError, match="unknown Rank order 'bpr'"):
        rank_order("bpr", bundle, config)
    bundle.ease = None
    with pytest.raises(ValueError, match="'recent_ease' needs the bundle's EASE model"):
        rank_order("recent_ease", bundle, config)
