"""Sequence-aware candidates and EASE against hand-computed values."""

import dataclasses
import math
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp

from candidates.base import make_generator
from candidates.ease import EASEGenerator, EASEModel, RecentEASEGenerator
from candidates.i2i.builders import sequence_windows
from candidates.i2i.model import I2IModel
from candidates.sequence import LastItemsGenerator, last_items_scores, similarity_to_sequence
from pipelines.baselines import recency_weights
from recsys.config import EASEConfig, SequenceConfig
from recsys.context import RequestContext
from recsys.ids import IdMap
from serving.catalog import RECENT_FILE, UserProfiles
from tests.test_i2i import CONFIG, baskets, i2i_config, shop

# u1: A B C, u2: A B, u3: B C (views count as much as purchases for cosine)
HISTORIES = {"u1": "ABC", "u2": "AB", "u3": "BC"}
A, B, C, D = range(4)


# the newest 2 items of the cosine lists, the second weighted 0.5
LAST_TWO = SequenceConfig(
    length=20,
    last_items=2,
    decay=0.5,
    lists=("cosine",),
    covisit_features=False,
    covisit_items=2,
    covisit_decay=0.5,
    ease_decay=0.9,
    ease_features=False,
)


def cosine_model():
    data = shop(baskets(HISTORIES), list("ABCD"))
    return I2IModel.build(data, None, i2i_config(neighbors=3), kinds=("cosine",))


def test_cosine_lists_match_hand_computed_values():
    model = cosine_model()
    ids, scores = model.neighbors("cosine", np.array([A, B]), 3)
    # A: users {1, 2}; B: {1, 2, 3}; C: {1, 3}
    assert ids[0].tolist() == [B, C, -1]
    np.testing.assert_allclose(scores[0, :2], [2 / math.sqrt(2 * 3), 1 / math.sqrt(2 * 2)])
    assert set(ids[1, :2].tolist()) == {A, C}
    np.testing.assert_allclose(scores[1, :2], [2 / math.sqrt(6)] * 2, rtol=1e-6)


def test_covisit_lists_count_only_items_met_close_together():
    # u1: A B B C D (B twice back to back counts once), u2: A B; windows of 2 items every item
    data = shop(baskets({"u1": "ABBCD", "u2": "AB"}), list("ABCD"))
    windows = sequence_windows(data, history_limit=50, window=2)
    assert sorted(map(tuple, (windows.toarray() > 0).astype(int).tolist())) == sorted(
        # u1 tiled from the start (A B, C D) and shifted by one (A, B C, D); u2 likewise
        [
            *[(1, 1, 0, 0), (0, 0, 1, 1), (1, 0, 0, 0), (0, 1, 1, 0), (0, 0, 0, 1)],
            *[(1, 1, 0, 0), (1, 0, 0, 0), (0, 1, 0, 0)],
        ]
    )
    model = I2IModel.build(
        data, None, i2i_config(neighbors=3, covisit_window=2), kinds=("covisit",)
    )
    ids, scores = model.neighbors("covisit", np.array([A, C]), 3)
    # A is in 4 windows, B in 4, together in 2: 2 / sqrt(4 * 4); A and C never together
    assert ids[0].tolist() == [B, -1, -1]
    np.testing.assert_allclose(scores[0, 0], 2 / 4)
    assert set(ids[1, :2].tolist()) == {B, D} and ids[1, 2] == -1
    # the features seq_covisit_1 and seq_decayed_covisit read these lists (newest item C)
    sequence = np.array([C, A])
    newest = similarity_to_sequence(model, sequence, np.array([B, D, A]), 1, "covisit")[:, 0]
    np.testing.assert_allclose(newest, [1 / math.sqrt(8), 1 / 2, 0.0], rtol=1e-6)
    config = LAST_TWO
    items, decayed = last_items_scores(model, sequence, config, "covisit")
    assert items.tolist() == [B, D]  # the sequence's own C and A are left out
    np.testing.assert_allclose(decayed, [1 / math.sqrt(8) + 0.5 * 2 / 4, 1 / 2], rtol=1e-6)
    # the covisit lists have a depth and decay of their own; the cosine lists keep theirs
    deeper = dataclasses.replace(config, last_items=1, covisit_items=2, covisit_decay=0.25)
    items, decayed = last_items_scores(model, sequence, deeper, "covisit")
    np.testing.assert_allclose(decayed, [1 / math.sqrt(8) + 0.25 * 2 / 4, 1 / 2], rtol=1e-6)
    shallower = dataclasses.replace(config, covisit_items=1)
    items, decayed = last_items_scores(model, sequence, shallower, "covisit")
    assert items.tolist() == [B, D]  # C's neighbours only
    np.testing.assert_allclose(decayed, [1 / math.sqrt(8), 1 / 2], rtol=1e-6)
    # the generator sums the decayed scores of every kind in sequence.lists
    both = I2IModel.build(
        data, None, i2i_config(neighbors=3, covisit_window=2), kinds=("cosine", "covisit")
    )
    summed = dataclasses.replace(config, lists=("cosine", "covisit"))
    answer = LastItemsGenerator(both, summed).generate(
        RequestContext(user_index=-1, sequence=sequence), 10
    )
    expected = {}
    for kind in ("cosine", "covisit"):
        for item, score in zip(*last_items_scores(both, sequence, config, kind), strict=True):
            expected[int(item)] = expected.get(int(item), 0.0) + float(score)
    got = dict(zip(answer.item_ids.tolist(), answer.scores.tolist(), strict=True))
    assert got.keys() == expected.keys()
    np.testing.assert_allclose([got[i] for i in expected], list(expected.values()), rtol=1e-6)
    with pytest.raises(ValueError, match="needs the i2i 'covisit' lists"):
        LastItemsGenerator(cosine_model(), summed)
    # "last_items_covisit": the covisit lists alone, at their own depth, with its own name
    bundle = SimpleNamespace(i2i=both, sequence=deeper)  # a bundle and a config in one
    alone = make_generator("last_items_covisit", bundle, bundle)
    answer = alone.generate(RequestContext(user_index=-1, sequence=sequence), 10)
    assert alone.name == "last_items_covisit" and answer.source == "last_items_covisit"
    items, decayed = last_items_scores(both, sequence, deeper, "covisit")
    got = dict(zip(answer.item_ids.tolist(), answer.scores.tolist(), strict=True))
    assert got == pytest.approx(dict(zip(items.tolist(), decayed.tolist(), strict=True)))
    with pytest.raises(ValueError, match="last_items_covisit needs the i2i 'covisit' lists"):
        make_generator("last_items_covisit", SimpleNamespace(i2i=cosine_model()), bundle)
    # history_limit keeps the newest: u1's last two items C D only, u2's A B
    newest = sequence_windows(data, history_limit=2, window=2)
    assert sorted(np.flatnonzero(row).tolist() for row in newest.toarray()) == sorted(
        [[C, D], [C], [D], [A, B], [A], [B]]
    )


def test_last_items_weights_the_newest_item_most():
    model = cosine_model()
    config = LAST_TWO
    ctx = RequestContext(user_index=-1, sequence=np.array([C, A]))  # C newest
    answer = LastItemsGenerator(model, config).generate(ctx, 10)
    # the sequence's own items are not proposed; B = cos(B, C) + 0.5 cos(B, A)
    assert answer.item_ids.tolist() == [B]
    np.testing.assert_allclose(answer.scores, [2 / math.sqrt(6) + 0.5 * 2 / math.sqrt(6)])
    similarity = similarity_to_sequence(model, ctx.sequence, np.array([B, D]), 3)
    np.testing.assert_allclose(similarity[0, :2], [2 / math.sqrt(6)] * 2, rtol=1e-6)
    assert similarity[1, 0] == 0.0 and np.isnan(similarity[0, 2])


def test_ease_is_the_closed_form():
    rng = np.random.default_rng(0)
    x = (rng.random((30, 6)) < 0.4).astype(np.float64)
    model = EASEModel.fit(sp.csr_matrix(x), EASEConfig(regularization=2.0, max_items=10))
    p = np.linalg.inv(x.T @ x + 2.0 * np.eye(6))
    expected = np.eye(6) - p / np.diag(p)
    np.testing.assert_allclose(model.weights, expected, atol=1e-5)
    assert np.all(np.diag(model.weights) == 0)
    np.testing.assert_allclose(model.score_users(sp.csr_matrix(x[:3])), x[:3] @ expected, atol=1e-4)


def test_a_catalogue_over_max_items_is_modelled_on_the_items_with_most_users(tmp_path):
    x = np.array([[1, 0, 1, 1, 0], [1, 1, 0, 1, 0], [0, 1, 1, 1, 1], [1, 0, 0, 0, 1]], float)
    model = EASEModel.fit(sp.csr_matrix(x), EASEConfig(regularization=2.0, max_items=3))
    assert model.items.tolist() == [0, 1, 3]  # 3 users each; 1, 2 and 4 tie at 2: lowest first
    kept = x[:, [0, 1, 3]]
    p = np.linalg.inv(kept.T @ kept + 2.0 * np.eye(3))
    np.testing.assert_allclose(model.weights, np.eye(3) - p / np.diag(p), atol=1e-5)
    scores = model.score_users(sp.csr_matrix(x[:1]))
    np.testing.assert_allclose(scores[0, [0, 1, 3]], kept[0] @ model.weights, rtol=1e-5)
    assert np.isnan(scores[0, [2, 4]]).all()  # not modelled: no score, not a zero
    np.testing.assert_allclose(model.score_items(np.array([0, 2, 3])), scores[0], rtol=1e-5)
    generator = EASEGenerator(model, lambda u: np.array([0]))
    answer = generator.generate(RequestContext(user_index=0), 10)
    assert set(answer.item_ids.tolist()) == {1, 3}  # never the unmodelled 2 and 4
    model.save(tmp_path)
    loaded = EASEModel.load(tmp_path)
    assert loaded.items.tolist() == [0, 1, 3] and loaded.n_items == 5


def test_an_old_whole_catalogue_ease_loads_and_a_damaged_one_is_refused(tmp_path):
    weights = np.zeros((3, 3), np.float32)
    np.save(tmp_path / "ease.npy", weights)  # a bundle from before item subsets
    old = EASEModel.load(tmp_path)
    assert old.items.tolist() == [0, 1, 2] and old.n_items == 3
    np.savez(tmp_path / "ease.npz", weights=weights, items=np.array([0, 2, 1]), n=3)
    with pytest.raises(ValueError, match="ease.npz: EASE weights"):
        EASEModel.load(tmp_path)


def test_ease_generator_leaves_out_what_the_user_touched(tmp_path):
    x = sp.csr_matrix(np.array([[1, 1, 0, 0], [1, 0, 1, 0], [0, 1, 1, 1]], dtype=np.float32))
    model = EASEModel.fit(x, EASEConfig(regularization=1.0, max_items=10))
    model.save(tmp_path)
    loaded = EASEModel.load(tmp_path)
    np.testing.assert_array_equal(loaded.weights, model.weights)
    seen = {0: np.array([A])}
    generator = EASEGenerator(loaded, lambda u: seen.get(u, np.empty(0, np.int64)))
    ctx = RequestContext(user_index=0, sequence=np.array([B]))  # B from the session
    answer = generator.generate(ctx, 10)
    assert not set(answer.item_ids.tolist()) & {A, B}
    expected = (model.weights[A] + model.weights[B])[answer.item_ids]
    np.testing.assert_allclose(answer.scores, expected, rtol=1e-6)
    # a user with nothing seen and no session gets nothing from EASE
    assert len(generator.generate(RequestContext(user_index=5), 10)) == 0
    assert CONFIG.ease.max_items >= 1682  # MovieLens-100k gets EASE by default


def test_recent_ease_weights_the_newest_items_most():
    x = np.array([[1, 0, 1, 1, 0, 1], [1, 1, 0, 1, 0, 0], [0, 1, 1, 1, 1, 1], [1, 0, 0, 0, 1, 1]])
    model = EASEModel.fit(sp.csr_matrix(x.astype(float)), EASEConfig(2.0, max_items=5))
    assert model.items.tolist() == [0, 1, 2, 3, 5]  # item 4 (2 users) is not modelled
    sequence = np.array([3, 4, 0])  # newest first; 4 adds nothing but keeps its place
    scores = model.score_sequence(sequence, 0.5)
    rows = {item: row for row, item in enumerate(model.items)}
    expected = model.weights[rows[3]] + 0.25 * model.weights[rows[0]]
    np.testing.assert_allclose(scores[model.items], expected, rtol=1e-6)
    assert np.isnan(scores[4])
    generator = RecentEASEGenerator(model, lambda u: np.array([1]), decay=0.5)
    answer = generator.generate(RequestContext(user_index=0, sequence=sequence), 10)
    # neither the seen item 1 nor the sequence's items, nor the unmodelled 4
    assert sorted(answer.item_ids.tolist()) == [2, 5]
    np.testing.assert_allclose(answer.scores, scores[answer.item_ids], rtol=1e-6)
    # the decay weighs the order: reversed, the same items score differently
    reversed_scores = model.score_sequence(sequence[::-1], 0.5)
    assert not np.allclose(reversed_scores[[2, 5]], scores[[2, 5]])
    assert len(generator.generate(RequestContext(user_index=0), 10)) == 0  # no sequence


def test_recent_ease_baseline_weighs_each_users_distinct_items_newest_first():
    # user 0: items 2, 1, 2 (2 again, newest), 3 at the same time as that 2 but logged later
    data = SimpleNamespace(
        users=range(2),
        items=range(4),
        event_users=np.array([0, 0, 1, 0, 0]),
        event_items=np.array([2, 1, 0, 2, 3]),
        event_times=np.array([10, 20, 5, 30, 30]),
    )
    weights = recency_weights(data, latest=2, decay=0.5).toarray()
    # newest first: 3 (log order breaks the tie), 2, then 1 is past the latest 2
    np.testing.assert_allclose(weights, [[0, 0, 0.5, 1], [1, 0, 0, 0]])


def test_profiles_of_an_older_bundle_are_refused_clearly(tmp_path):
    profiles = UserProfiles(
        users=IdMap.from_values(["u1"]),
        home_region=np.array(["eu"], dtype=object),
        seen=sp.csr_matrix(np.array([[True, True]])),
        recent_indptr=np.array([0, 1]),
        recent_items=np.array([1]),
        sequence_indptr=np.array([0, 2]),
        sequence_items=np.array([1, 0]),
    )
    profiles.save(tmp_path)
    assert UserProfiles.load(tmp_path).sequence_of(0).tolist() == [1, 0]
    np.savez(tmp_path / RECENT_FILE, indptr=profiles.recent_indptr, items=profiles.recent_items)
    with pytest.raises(ValueError, match="no user sequences"):
        UserProfiles.load(tmp_path)
