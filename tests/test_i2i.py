"""i2i lists (seed 004, "i2i-списки"): NPMI, ALS cosine and content lists against
hand-computed values or brute force, seed diversity and the runtime merge."""

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from candidates.i2i.builders import recent_positive_matrix, top_per_row
from candidates.i2i.generator import I2IGenerator, diverse_seeds
from candidates.i2i.lists import NeighborLists, TieOrder
from candidates.i2i.model import I2IModel
from pipelines.training_data import build_training_data
from recsys.config import load_config
from recsys.context import RequestContext
from recsys.dataset import Dataset, normalize_events

CONFIG = load_config()


def i2i_config(**changes):
    return dataclasses.replace(CONFIG.i2i, **changes)


def shop(events, items, categories=None, titles=None):
    """TrainingData from (user, item, event_type, timestamp) rows and a catalog of `items`."""
    frame = pd.DataFrame(events, columns=["user_id", "item_id", "event_type", "timestamp"])
    frame["value"] = 1.0
    catalog = pd.DataFrame(
        {
            "item_id": items,
            "categories": categories or [""] * len(items),
            "price": 1.0,
            "stock": 1,
            "regions": "*",
            "created_at": 0,
            "title": titles or [""] * len(items),
        }
    )
    users = pd.DataFrame(
        {"user_id": sorted({e[0] for e in events}), "region": "", "attributes": "{}"}
    )
    return build_training_data(Dataset(normalize_events(frame), catalog, users), CONFIG)


def baskets(histories):
    """One purchase per (user, item), in the listed order."""
    rows, t = [], 0
    for user, items in histories.items():
        for item in items:
            t += 1
            rows.append((user, item, "purchase", t))
    return rows


# u1: A B C, u2: A B, u3: C D, u4: D D (bought twice: popularity 3, still one user), u5: E
NPMI_SHOP = baskets({"u1": "ABC", "u2": "AB", "u3": "CD", "u4": "DD", "u5": "E"})
A, B, C, D, E = range(5)


def test_npmi_matches_hand_computed_values():
    data = shop(NPMI_SHOP, list("ABCDE"))
    model = I2IModel.build(data, None, i2i_config(npmi_min_count=1, neighbors=3), kinds=("npmi",))
    ids, scores = model.neighbors("npmi", np.array([A, C, E]), 3)
    # N = 5 users. (A, B): n_A = n_B = n_AB = 2 -> log(0.4 / 0.16) / -log(0.4) = 1
    # (A, C): n_A = n_C = 2, n_AC = 1 -> log(0.2 / 0.16) / -log(0.2) = log 1.25 / log 5
    partial = math.log(1.25) / math.log(5)
    assert ids[0].tolist() == [B, C, -1]
    np.testing.assert_allclose(scores[0, :2], [1.0, partial], rtol=1e-6)
    # C's neighbours A, B, D share that value: D first (3 purchases), then A, B by index
    assert ids[1].tolist() == [D, A, B]
    np.testing.assert_allclose(scores[1], [partial] * 3, rtol=1e-6)
    assert ids[2].tolist() == [-1, -1, -1]  # E never co-occurs
    assert scores[2].tolist() == [-np.inf] * 3


def test_npmi_min_count_drops_rare_pairs():
    data = shop(NPMI_SHOP, list("ABCDE"))
    model = I2IModel.build(data, None, i2i_config(npmi_min_count=2, neighbors=3), kinds=("npmi",))
    ids, _ = model.neighbors("npmi", np.array([A, C]), 3)
    assert ids.tolist() == [[B, -1, -1], [-1, -1, -1]]  # only (A, B) was seen by 2 users


def test_npmi_drops_pairs_rarer_than_chance():
    # n_X = n_Y = 3, n_XY = 1, N = 5: p(X,Y) = 0.2 < p(X) p(Y) = 0.36, NPMI < 0
    data = shop(baskets({"u1": "XY", "u2": "X", "u3": "X", "u4": "Y", "u5": "Y"}), ["X", "Y"])
    model = I2IModel.build(data, None, i2i_config(npmi_min_count=1), kinds=("npmi",))
    assert (model.lists["npmi"].ids == -1).all()


def test_history_limit_keeps_the_last_distinct_positives():
    # X Y Z bought, then X again and a later *view* of Y: the last 2 distinct positives are X, Z
    events = [*baskets({"u1": "XYZX"}), ("u1", "Y", "view", 99)]
    data = shop(events, ["X", "Y", "Z"])
    X, Y, Z = range(3)
    assert recent_positive_matrix(data, 2).toarray().tolist() == [[1, 0, 1]]
    model = I2IModel.build(
        data, None, i2i_config(npmi_min_count=1, history_limit=2), kinds=("npmi",)
    )
    ids, scores = model.neighbors("npmi", np.array([X, Y]), 2)
    assert ids.tolist() == [[Z, -1], [-1, -1]]
    assert scores[0, 0] == 1.0  # N = 1: p(X,Z) = 1, the limit case NPMI = 1


def test_als_lists_equal_brute_force_cosine():
    n, k, unseen = 40, 5, 7
    factors = np.random.default_rng(0).standard_normal((n, 8)).astype(np.float32)
    factors[unseen] = 0.0  # an item ALS never saw
    data = shop([("u", "i0", "purchase", 1)], [f"i{i}" for i in range(n)])
    model = I2IModel.build(data, factors, i2i_config(neighbors=k), kinds=("als",))
    unit = factors / np.maximum(np.linalg.norm(factors, axis=1, keepdims=True), 1e-12)
    cosine = unit @ unit.T
    np.fill_diagonal(cosine, -np.inf)
    cosine[:, unseen] = -np.inf
    expected = np.argsort(-cosine, axis=1)[:, :k]
    lists = model.lists["als"]
    seen = np.arange(n) != unseen
    assert (lists.ids[seen] == expected[seen]).all()
    np.testing.assert_allclose(
        lists.scores[seen], np.take_along_axis(cosine, expected, axis=1)[seen], rtol=1e-5
    )
    assert (lists.ids[unseen] == -1).all() and unseen not in lists.ids
    assert not (lists.ids == np.arange(n)[:, None]).any()  # never itself


# A, B, F in {c1}; C in {c1, c2}; D in {c2}; E in none. F bought more often than B.
CONTENT_ITEMS = ["A", "B", "C", "D", "E", "F"]
CONTENT_CATEGORIES = ["c1", "c1", "c1|c2", "c2", "", "c1"]
CONTENT_EVENTS = baskets({"u1": "AF", "u2": "FB", "u3": "F"})


def test_content_lists_are_scaled_jaccard_without_text():
    data = shop(CONTENT_EVENTS, CONTENT_ITEMS, CONTENT_CATEGORIES)
    model = I2IModel.build(data, None, i2i_config(text_weight=0.5, neighbors=4), kinds=("content",))
    ids, scores = model.neighbors("content", np.array([0, 3, 4]), 4)
    F, B, C = 5, 1, 2
    # A: J(A,F) = J(A,B) = 1 (F first: more popular), J(A,C) = 1/2, J(A,D) = 0 -> dropped
    assert ids[0].tolist() == [F, B, C, -1]
    np.testing.assert_allclose(scores[0, :3], [0.5, 0.5, 0.25])  # (1 - w) * J, w = 0.5
    assert ids[1].tolist() == [C, -1, -1, -1]  # D: only C shares c2, J = 1/2
    np.testing.assert_allclose(scores[1, 0], 0.25)
    assert (ids[2] == -1).all()  # E has no categories


def test_titles_change_the_content_order():
    titles = ["alpha beta", "gamma", "alpha beta", "alpha beta", "", "delta"]
    data = shop(CONTENT_EVENTS, CONTENT_ITEMS, CONTENT_CATEGORIES, titles)
    model = I2IModel.build(data, None, i2i_config(text_weight=0.9, neighbors=4), kinds=("content",))
    ids, scores = model.neighbors("content", np.array([0]), 4)
    C, D, F, B = 2, 3, 5, 1
    # same title -> cosine 1: C = 0.1 * 1/2 + 0.9 * 1, D = 0.1 * 0 + 0.9 * 1 (no shared
    # category: a text-only neighbour); F, B = 0.1 * 1 + 0.9 * 0
    assert ids[0].tolist() == [C, D, F, B]
    np.testing.assert_allclose(scores[0], [0.95, 0.9, 0.1, 0.1], rtol=1e-5)


def test_top_per_row_orders_scores_then_popularity():
    order = TieOrder.by_popularity(np.array([0, 5, 5, 1]))  # items 1, 2, 3, 0
    rows = np.array([0, 0, 0, 0, 1, 1])
    cols = np.array([0, 1, 2, 3, 3, 0])
    scores = np.array([-0.5, 0.25, 0.25, 0.75, -2.0, -1.0], dtype=np.float32)
    lists = top_per_row(rows, cols, scores, 3, 3, order)
    assert lists.ids.tolist() == [[3, 1, 2], [0, 3, -1], [-1, -1, -1]]
    assert lists.scores.tolist() == [[0.75, 0.25, 0.25], [-1.0, -2.0, -np.inf], [-np.inf] * 3]


def test_diverse_seeds_skip_a_near_duplicate():
    similarity = np.array([[1.0, 0.99, 0.0], [0.99, 1.0, 0.0], [0.0, 0.0, 1.0]])
    # after item 0: gain(1) = 1/2 * (1 - 0.99) = 0.005, gain(2) = 1/3 * (1 - 0) -> 2
    assert diverse_seeds(similarity, 2).tolist() == [0, 2]
    assert diverse_seeds(similarity, 5).tolist() == [0, 2, 1]
    assert diverse_seeds(similarity, 0).tolist() == []


def hand_model():
    """Six items in distinct categories (Jaccard 0: all diverse) and hand-written lists."""
    ids = np.full((6, 3), -1, np.int64)
    scores = np.full((6, 3), -np.inf, np.float32)
    ids[0], scores[0] = [3, 4, 2], [0.8, 0.5, 0.4]
    ids[2, :2], scores[2, :2] = [3, 5], [0.6, 0.3]
    ids[1, :1], scores[1, :1] = [4], [0.7]
    categories = sp.identity(6, dtype=bool, format="csr")
    return I2IModel(lists={"npmi": NeighborLists(ids, scores)}, item_categories=categories)


def test_generator_merges_lists_by_recency_weight():
    generator = I2IGenerator(hand_model(), "npmi", i2i_config(recent=5, seeds=2))
    got = generator.generate(RequestContext(user_index=0, history=np.array([0, 2, 1])), 10)
    # seeds 0 (weight 1) and 2 (weight 1/2; item 1 is equally diverse but older)
    # 3: 1 * 0.8 + 1/2 * 0.6 = 1.1; 4: 0.5; 5: 1/2 * 0.3 = 0.15; 2 is a seed -> dropped
    assert generator.name == "i2i_npmi"
    assert got.item_ids.tolist() == [3, 4, 5]
    np.testing.assert_allclose(got.scores, [1.1, 0.5, 0.15], rtol=1e-6)
    assert generator.generate(RequestContext(0, history=np.array([0, 2])), 2).item_ids.tolist() == [
        3,
        4,
    ]


def test_generator_picks_diverse_seeds_by_als_cosine():
    factors = np.array([[1, 0], [1, 0.01], [0, 1], [1, 0], [0.9, 0.1], [0, 1]], np.float32)
    data = shop([("u", "i0", "purchase", 1)], [f"i{i}" for i in range(6)])
    model = I2IModel.build(data, factors, i2i_config(neighbors=1), kinds=("als",))
    generator = I2IGenerator(model, "als", i2i_config(recent=3, seeds=2))
    # 1 is a near-duplicate of 0, so the seeds are 0 and 2; 1 contributes nothing
    got = generator.generate(RequestContext(0, history=np.array([0, 1, 2])), 10)
    expected = {model.lists["als"].ids[0, 0], model.lists["als"].ids[2, 0]} - {0, 2}
    assert set(got.item_ids.tolist()) == expected


def test_generator_falls_back_to_basket_then_favorites():
    generator = I2IGenerator(hand_model(), "npmi", i2i_config(seeds=1))
    from_basket = generator.generate(RequestContext(-1, basket=np.array([2])), 10)
    assert from_basket.item_ids.tolist() == [3, 5]
    from_favorites = generator.generate(RequestContext(-1, favorites=np.array([1])), 10)
    assert from_favorites.item_ids.tolist() == [4]
    assert len(generator.generate(RequestContext(user_index=-1), 10)) == 0
    assert len(generator.generate(RequestContext(0, history=np.array([0])), 0)) == 0
    with pytest.raises(ValueError, match="budget"):
        generator.generate(RequestContext(0, history=np.array([0])), -1)


def test_missing_kind_and_bad_items_are_errors():
    model = hand_model()
    with pytest.raises(ValueError, match="no 'als' lists"):
        I2IGenerator(model, "als", CONFIG.i2i)
    with pytest.raises(ValueError, match="unknown i2i kind"):
        I2IGenerator(model, "words", CONFIG.i2i)
    with pytest.raises(ValueError, match="out of range"):
        model.neighbors("npmi", np.array([6]), 2)
    ids, scores = model.neighbors("npmi", np.array([2]), 5)  # longer than the lists: padded
    assert ids.tolist() == [[3, 5, -1, -1, -1]] and scores[0, -1] == -np.inf


def test_save_load_round_trip(tmp_path):
    data = shop(NPMI_SHOP, list("ABCDE"), ["c1", "c1", "c2", "c2", ""])
    factors = np.random.default_rng(1).standard_normal((5, 3)).astype(np.float32)
    model = I2IModel.build(data, factors, i2i_config(npmi_min_count=1, neighbors=3))
    model.save(tmp_path)
    loaded = I2IModel.load(tmp_path)
    assert loaded.kinds == ("als", "npmi", "content", "cosine", "covisit")
    for kind in loaded.kinds:
        np.testing.assert_array_equal(loaded.lists[kind].ids, model.lists[kind].ids)
        np.testing.assert_array_equal(loaded.lists[kind].scores, model.lists[kind].scores)
    np.testing.assert_array_equal(loaded.unit_factors, model.unit_factors)
    (tmp_path / "i2i_npmi.npz").unlink()
    with pytest.raises(FileNotFoundError, match="i2i_npmi"):
        I2IModel.load(tmp_path)


def test_save_load_without_factors_keeps_categories(tmp_path):
    model = hand_model()
    model.save(tmp_path)
    loaded = I2IModel.load(tmp_path)
    assert loaded.unit_factors is None and loaded.kinds == ("npmi",)
    np.testing.assert_array_equal(loaded.similarity(np.array([0, 1])), np.eye(2))


def test_category_similarity_is_jaccard():
    categories = sp.csr_matrix(np.array([[1, 0], [1, 1], [0, 0]], dtype=bool))
    model = I2IModel(lists={}, item_categories=categories)
    expected = [[1.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 0.0]]  # |∩| / |∪|, 0 for empty sets
    np.testing.assert_allclose(model.similarity(np.array([0, 1, 2])), expected)


def test_catalog_without_categories_or_titles_gives_empty_content_lists():
    data = shop(NPMI_SHOP, list("ABCDE"))
    model = I2IModel.build(data, None, i2i_config(neighbors=2), kinds=("content",))
    assert (model.lists["content"].ids == -1).all()
