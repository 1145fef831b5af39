"""Quorums (seed 004, "Кворумы") on a hand-computed shop and against a dense reference.

The tiny shop: categories a, b, c, d; items i0 [a], i1 [a|b], i2 [b], i3 [b|c], i4 [c|d].
Positives (distinct items): u0 {i0, i1}, u1 {i1, i2}, u2 {i2, i3}; u3 only views; nobody
likes i4 (cold) and so nobody likes d. By hand:

    UF   u0: a 1, b 1/2     u1: a 1/2, b 1     u2: b 1, c 1/2     u3: -
    mean UF: a 3/8, b 5/8, c 1/8, d 0
    IDF (γ = 1.5): a -ln 3/8, b -ln 5/8, c min(ln 8 = 2.08, 1.5) = 1.5, d γ = 1.5
    TF   i0: a 1, b 1/2   i1: a 3/4, b 3/4   i2: a 1/4, b 1, c 1/4   i3: b 1, c 1/2
         i4 (cold, prior = mean TF of warm members of each of its categories):
             c: i3's 1/2 -> 1/2; d has no warm member -> mean over warm (item, own category)
             pairs (i0a 1, i1a 3/4, i1b 3/4, i2b 1, i3b 1, i3c 1/2) = 5/6
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from candidates import quorum as quorum_module
from candidates.quorum import FILE, QuorumGenerator, QuorumModel
from pipelines.synthetic import generate_synthetic
from pipelines.training_data import build_training_data
from recsys.config import QuorumConfig, load_config
from recsys.context import RequestContext
from recsys.dataset import Dataset, normalize_events
from tests.stored_files import resave_npz

GAMMA = 1.5
IDF_A, IDF_B, IDF_C, IDF_D = -math.log(3 / 8), -math.log(5 / 8), GAMMA, GAMMA
A, B, C, D = range(4)  # category indices: names are sorted


def shop() -> Dataset:
    rows = [
        ("u0", "i0", "purchase"),
        ("u0", "i0", "purchase"),  # a repeat: still one positive item
        ("u0", "i1", "purchase"),
        ("u1", "i1", "purchase"),
        ("u1", "i2", "cart"),
        ("u2", "i2", "purchase"),
        ("u2", "i3", "purchase"),
        ("u2", "i0", "view"),  # not a positive
        ("u3", "i4", "view"),
        ("u3", "i0", "view"),
    ]
    events = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type"])
    events["value"], events["timestamp"] = 1.0, np.arange(len(rows))
    items = pd.DataFrame(
        {
            "item_id": ["i0", "i1", "i2", "i3", "i4"],
            "categories": ["a", "a|b", "b", "b|c", "c|d"],
            "price": 1.0,
            "stock": 1,
            "regions": "*",
            "created_at": 0,
            "title": "",
        }
    )
    users = pd.DataFrame({"user_id": ["u0", "u1", "u2", "u3"], "region": "", "attributes": "{}"})
    return Dataset(normalize_events(events), items, users)


def config(per_category: int = 10, max_categories: int = 10, depth: int = 10) -> QuorumConfig:
    return QuorumConfig(
        gamma=GAMMA, per_category=per_category, max_categories=max_categories, depth=depth
    )


@pytest.fixture(scope="module")
def data():
    data = build_training_data(shop(), load_config())
    assert data.category_names == ("a", "b", "c", "d")
    assert data.users.ids.tolist() == ["u0", "u1", "u2", "u3"]
    return data


@pytest.fixture(scope="module")
def model(data):
    return QuorumModel.fit(data, config())


def generator(data, **sizes: int) -> QuorumGenerator:
    quorum_config = config(**sizes)
    return QuorumGenerator(QuorumModel.fit(data, quorum_config), quorum_config)


def test_uf_is_the_share_of_distinct_positive_items_per_category(model):
    expected = np.array(
        [[1, 0.5, 0, 0], [0.5, 1, 0, 0], [0, 1, 0.5, 0], [0, 0, 0, 0]], dtype=np.float32
    )
    np.testing.assert_allclose(model.uf.toarray(), expected)


def test_tf_averages_uf_over_the_items_users_and_cold_items_get_the_category_prior(model):
    expected = np.array(
        [
            [1, 0.5, 0, 0],
            [0.75, 0.75, 0, 0],
            [0.25, 1, 0.25, 0],
            [0, 1, 0.5, 0],
            [0, 0, 0.5, 5 / 6],  # i4: nobody's positive -> warm members' mean TF per category
        ],
        dtype=np.float32,
    )
    np.testing.assert_allclose(model.tf.toarray(), expected)


def test_idf_is_capped_by_gamma_and_a_category_nobody_likes_gets_gamma(model):
    # u3 (no positives) counts in the mean with UF 0
    np.testing.assert_allclose(model.idf, [IDF_A, IDF_B, IDF_C, IDF_D], rtol=1e-6)
    assert -math.log(1 / 8) > GAMMA  # c really is capped


def test_score_of_a_known_user_is_the_sum_over_all_their_categories(data, model):
    u2, i3 = data.users.index_of("u2"), data.items.index_of("i3")
    # TF(i3, b) UF(u2, b) IDF(b) + TF(i3, c) UF(u2, c) IDF(c)
    by_hand = 1 * 1 * IDF_B + 0.5 * 0.5 * IDF_C
    got = QuorumGenerator(model, config()).generate(RequestContext(u2), budget=10)
    assert got.source == "quorum"
    assert got.scores[got.item_ids.tolist().index(i3)] == pytest.approx(by_hand, rel=1e-6)


def test_full_ranking_of_a_known_user(data, model):
    got = QuorumGenerator(model, config()).generate(RequestContext(2), budget=10)
    by_hand = {
        3: IDF_B + 0.5 * 0.5 * IDF_C,
        2: IDF_B + 0.25 * 0.5 * IDF_C,
        4: 0.5 * 0.5 * IDF_C,  # the cold item, through its prior on c
        1: 0.75 * IDF_B,
        0: 0.5 * IDF_B,
    }
    assert got.item_ids.tolist() == [3, 2, 4, 1, 0]
    np.testing.assert_allclose(got.scores, [by_hand[i] for i in [3, 2, 4, 1, 0]], rtol=1e-6)
    assert got.item_ids.dtype == np.int64 and got.scores.dtype == np.float32


def test_category_tops_are_by_tf_with_ties_by_item_index(data):
    model = QuorumModel.fit(data, config(depth=2))
    tops = [
        model.top_items[model.top_offsets[c] : model.top_offsets[c + 1]].tolist() for c in range(4)
    ]
    # a: i0 1, i1 .75 (i2 .25 cut); b: i2 1 = i3 1 (i1, i0 cut); c: i3 .5 = i4 .5; d: i4
    assert tops == [[0, 1], [2, 3], [3, 4], [4]]


def test_per_category_and_max_categories_bound_the_candidates(data):
    u2 = RequestContext(2)  # categories by UF: b (1), then c (1/2)
    # only b's first item (i2), still scored over both of u2's categories
    got = generator(data, per_category=1, max_categories=1).generate(u2, 10)
    assert got.item_ids.tolist() == [2]
    assert got.scores[0] == pytest.approx(IDF_B + 0.25 * 0.5 * IDF_C, rel=1e-6)
    # b's top 3 by TF: i2, i3, i1
    got = generator(data, per_category=3, max_categories=1).generate(u2, 10)
    assert got.item_ids.tolist() == [3, 2, 1]
    # depth 2 cuts b's top at i2, i3 whatever per_category asks
    got = generator(data, per_category=3, max_categories=1, depth=2).generate(u2, 10)
    assert got.item_ids.tolist() == [3, 2]
    # b: i2, i3 and c: i3, i4
    got = generator(data, per_category=2, max_categories=2).generate(u2, 10)
    assert got.item_ids.tolist() == [3, 2, 4]


def test_budget_cuts_the_best_and_bad_budgets(model):
    quorum = QuorumGenerator(model, config())
    assert quorum.generate(RequestContext(2), 2).item_ids.tolist() == [3, 2]
    assert len(quorum.generate(RequestContext(2), 0)) == 0
    with pytest.raises(ValueError, match="budget"):
        quorum.generate(RequestContext(2), -1)


def test_unknown_user_uf_comes_from_basket_and_favourites(model):
    # distinct {i0, i4}: a 1/2 (i0), c 1/2 (i4), d 1/2 (i4)
    categories, uf = model.weights_from_items(np.array([0, 4, 0]))
    assert categories.tolist() == [A, C, D]
    np.testing.assert_allclose(uf, [0.5, 0.5, 0.5])
    ctx = RequestContext(-1, basket=np.array([0, 4]), favorites=np.array([0]))
    got = QuorumGenerator(model, config()).generate(ctx, 10)
    w_a, w_c, w_d = 0.5 * IDF_A, 0.5 * IDF_C, 0.5 * IDF_D
    by_hand = {
        4: 0.5 * w_c + 5 / 6 * w_d,  # a cold item first: it is all about c and d
        0: 1 * w_a,
        3: 0.5 * w_c,
        1: 0.75 * w_a,
        2: 0.25 * w_a + 0.25 * w_c,
    }
    assert got.item_ids.tolist() == [4, 0, 3, 1, 2]
    np.testing.assert_allclose(got.scores, list(by_hand.values()), rtol=1e-6)


def test_unknown_user_prefers_history_and_without_items_gets_nothing(data, model):
    quorum = QuorumGenerator(model, config())
    # history {i3}: b 1, c 1 (the basket is ignored when there is a history)
    ctx = RequestContext(-1, history=np.array([3]), basket=np.array([0]))
    got = quorum.generate(ctx, 1)
    assert got.item_ids.tolist() == [3]
    assert got.scores[0] == pytest.approx(1 * IDF_B + 0.5 * IDF_C, rel=1e-6)
    # an index past the training users is unknown too; u3 is known but has no positives
    for user in (-1, len(data.users), 3):
        assert len(quorum.generate(RequestContext(user), 10)) == 0
    # items newer than the model carry no categories; negative ones are a caller bug
    assert len(quorum.generate(RequestContext(-1, history=np.array([99])), 10)) == 0
    with pytest.raises(ValueError, match="negative"):
        quorum.generate(RequestContext(-1, history=np.array([-1])), 10)


def test_known_user_without_positives_falls_back_to_the_request(model):
    # u3 is known but liked nothing: UF from the favourite i1, a 1 and b 1
    got = QuorumGenerator(model, config()).generate(RequestContext(3, favorites=np.array([1])), 10)
    by_hand = [
        IDF_A + 0.5 * IDF_B,  # i0
        0.75 * IDF_A + 0.75 * IDF_B,  # i1
        0.25 * IDF_A + IDF_B,  # i2
        IDF_B,  # i3; i4 has neither a nor b
    ]
    assert got.item_ids.tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(got.scores, by_hand, rtol=1e-6)


def test_save_load_round_trip(tmp_path, model):
    quorum = QuorumGenerator(model, config())
    quorum.save(tmp_path)
    loaded = QuorumGenerator.load(tmp_path, config())
    for name in ("uf", "tf", "item_categories"):
        assert (getattr(loaded.model, name) != getattr(model, name)).nnz == 0
    for name in ("idf", "top_items", "top_offsets"):
        np.testing.assert_array_equal(getattr(loaded.model, name), getattr(model, name))
    for ctx in (RequestContext(0), RequestContext(2), RequestContext(-1, basket=np.array([4]))):
        a, b = quorum.generate(ctx, 3), loaded.generate(ctx, 3)
        np.testing.assert_array_equal(a.item_ids, b.item_ids)
        np.testing.assert_array_equal(a.scores, b.scores)


def test_load_fails_clearly(tmp_path, model):
    with pytest.raises(FileNotFoundError):
        QuorumModel.load(tmp_path)
    model.save(tmp_path)
    resave_npz(tmp_path / FILE, drop=("idf",))
    with pytest.raises(ValueError, match="idf"):
        QuorumModel.load(tmp_path)


def dense_reference(data, gamma: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The formulas with dense numpy arrays: UF, TF (with the cold prior), IDF."""
    positives = np.zeros((len(data.users), len(data.items)))
    on = data.event_positive
    positives[data.event_users[on], data.event_items[on]] = 1.0
    categories = data.item_categories.toarray().astype(float)
    # rows without positives have zero numerators: max(count, 1) leaves them 0
    per_user = positives.sum(1, keepdims=True)
    uf = (positives @ categories) / np.maximum(per_user, 1)
    per_item = positives.sum(0)[:, None]
    tf = (positives.T @ uf) / np.maximum(per_item, 1)
    cold = per_item[:, 0] == 0
    members = categories[~cold]
    member_tf = (tf[~cold] * members).sum(0)
    overall = member_tf.sum() / members.sum()
    mean_tf = np.where(members.sum(0) > 0, member_tf / np.maximum(members.sum(0), 1), overall)
    tf[cold] = categories[cold] * mean_tf
    with np.errstate(divide="ignore"):
        idf = np.minimum(-np.log(uf.mean(0)), gamma)
    return uf, tf, idf


@pytest.fixture(scope="module")
def synthetic():
    dataset = generate_synthetic(400, 300, 12_000, n_categories=12, seed=3)
    return build_training_data(dataset, load_config())


@pytest.mark.parametrize(
    ("tf_kept_dense", "column_lookup_max"), [(True, 2), (False, 0), (False, 2), (False, 99)]
)
def test_runtime_scores_equal_the_dense_formula(
    synthetic, tf_kept_dense, column_lookup_max, monkeypatch
):
    # every way QuorumModel.score reads TF: the dense copy, rows of the CSR (max 0), columns
    # of the CSR (max 99), or columns for users with few categories and rows for the others
    monkeypatch.setattr(quorum_module, "DENSE_TF_MIN_DENSITY", 0.0 if tf_kept_dense else 2.0)
    monkeypatch.setattr(quorum_module, "COLUMN_LOOKUP_MAX_CATEGORIES", column_lookup_max)
    quorum_config = QuorumConfig(gamma=2.0, per_category=15, max_categories=3, depth=40)
    model = QuorumModel.fit(synthetic, quorum_config)
    assert (model.tf_by_category is not None) == tf_kept_dense
    quorum = QuorumGenerator(model, quorum_config)
    uf, tf, idf = dense_reference(synthetic, quorum_config.gamma)
    np.testing.assert_allclose(model.uf.toarray(), uf, rtol=1e-6)
    np.testing.assert_allclose(model.tf.toarray(), tf, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(model.idf, idf, rtol=1e-6)
    scores = (uf * idf) @ tf.T
    checked = 0
    for user in range(0, len(synthetic.users), 7):
        got = quorum.generate(RequestContext(user), 30)
        if not uf[user].any():
            assert len(got) == 0
            continue
        checked += 1
        np.testing.assert_allclose(got.scores, scores[user, got.item_ids], rtol=1e-5)
        assert np.all(np.diff(got.scores) <= 0)
        # each item comes from the TF top of one of the user's 3 strongest categories
        # (with ties at the third place any of the tied categories may be taken)
        third = -np.sort(-uf[user])[2]
        strongest = np.flatnonzero((uf[user] >= third) & (uf[user] > 0))
        tf_floor = -np.sort(-tf[:, strongest], axis=0)[quorum_config.per_category - 1]
        assert np.all((tf[got.item_ids][:, strongest] >= tf_floor - 1e-6).any(axis=1))
    assert checked > 20


def test_with_everything_in_reach_the_answer_is_the_dense_top(synthetic):
    n_items, n_cat = len(synthetic.items), len(synthetic.category_names)
    quorum_config = QuorumConfig(
        gamma=3.0, per_category=n_items, max_categories=n_cat, depth=n_items
    )
    quorum = QuorumGenerator(QuorumModel.fit(synthetic, quorum_config), quorum_config)
    uf, tf, idf = dense_reference(synthetic, quorum_config.gamma)
    scores = (uf * idf) @ tf.T
    for user in range(0, len(synthetic.users), 11):
        got = quorum.generate(RequestContext(user), 25)
        expected = -np.sort(-scores[user][scores[user] > 0])[:25]
        np.testing.assert_allclose(got.scores[: len(expected)], expected, rtol=1e-5)


def test_the_ways_of_reading_tf_give_the_same_bits(synthetic, monkeypatch):
    # the dense copy, the columns and the rows sum the same products in the same order, so
    # a bundle's scores (and the features learned from them) do not depend on TF's layout
    quorum_config = QuorumConfig(gamma=2.0, per_category=15, max_categories=3, depth=40)
    monkeypatch.setattr(quorum_module, "DENSE_TF_MIN_DENSITY", 0.0)
    dense = QuorumModel.fit(synthetic, quorum_config)
    monkeypatch.setattr(quorum_module, "DENSE_TF_MIN_DENSITY", 2.0)
    sparse = QuorumModel.fit(synthetic, quorum_config)
    assert dense.tf_by_category is not None and sparse.tf_by_category is None

    def sparse_score(column_lookup_max: int, *args) -> np.ndarray:
        monkeypatch.setattr(quorum_module, "COLUMN_LOOKUP_MAX_CATEGORIES", column_lookup_max)
        return sparse.score(*args)

    items = np.random.default_rng(0).permutation(len(synthetic.items))[:120]
    compared = 0
    for user in range(0, len(synthetic.users), 5):
        categories, user_uf = sparse.user_weights(user)
        for n in (1, 2, len(categories)):  # few categories and all of them
            args = (categories[:n], user_uf[:n], items)
            by_rows = sparse_score(0, *args)
            np.testing.assert_array_equal(sparse_score(99, *args), by_rows)
            np.testing.assert_array_equal(dense.score(*args), by_rows)
            compared += bool((by_rows > 0).any())
    assert compared > 50
