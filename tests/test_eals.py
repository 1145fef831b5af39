"""eALS (seed 004, "ALS"): closed-form steps against hand-built systems, monotone loss,
fallbacks, storage, input checks, and the RMSE ordering on MovieLens-100k."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from candidates.eals import EALSModel, explicit_ratings
from pipelines.rating_evaluation import evaluate_explicit
from recsys.config import EALSConfig, load_config
from recsys.dataset import Dataset, normalize_events
from recsys.ids import IdMap
from tests.frames import plain_catalog

# 3 users x 3 items, 5 observed ratings; mean 3.0
RATINGS = sp.csr_matrix(np.array([[5.0, 3.0, 0.0], [4.0, 0.0, 1.0], [0.0, 2.0, 0.0]]))


def config(**values) -> EALSConfig:
    base = EALSConfig(factors=2, lambda_emb=0.5, lambda_bias=2.0, iterations=1, random_state=0)
    return dataclasses.replace(base, **values)


def known_model() -> EALSModel:
    return EALSModel(
        global_mean=3.0,
        user_bias=np.array([0.1, -0.2, 0.4], np.float32),
        item_bias=np.array([0.2, -0.1, 0.3], np.float32),
        user_factors=np.array([[0.5, 1.0], [-1.0, 0.5], [2.0, 0.0]], np.float32),
        item_factors=np.array([[1.0, 0.0], [0.5, -1.0], [-0.5, 2.0]], np.float32),
    )


def ridge(features: np.ndarray, targets: np.ndarray, lambda_emb: float, lambda_bias: float):
    """The slide's normal equations written out: (ZᵀZ + diag(λ_emb, λ_emb, λ_bias)) x = Zᵀt."""
    penalty = np.diag([lambda_emb, lambda_emb, lambda_bias])
    return np.linalg.solve(features.T @ features + penalty, features.T @ targets)


def test_user_step_is_the_closed_form_ridge_solve():
    model = known_model()
    stepped = model.solve_users(RATINGS, config())
    # user 0 rated item 0 (5) and item 1 (3): z_i = [q_i; 1], target r − μ − b_i
    z = np.array([[1.0, 0.0, 1.0], [0.5, -1.0, 1.0]])
    x0 = ridge(z, np.array([5 - 3 - 0.2, 3 - 3 + 0.1]), 0.5, 2.0)
    # user 2 rated item 1 (2) only
    x2 = ridge(np.array([[0.5, -1.0, 1.0]]), np.array([2 - 3 + 0.1]), 0.5, 2.0)
    for user, x in ((0, x0), (2, x2)):
        np.testing.assert_allclose(stepped.user_factors[user], x[:2], rtol=1e-6)
        np.testing.assert_allclose(stepped.user_bias[user], x[2], rtol=1e-6)
    np.testing.assert_array_equal(stepped.item_factors, model.item_factors)  # items frozen


def test_item_step_is_the_closed_form_ridge_solve():
    stepped = known_model().solve_items(RATINGS, config())
    # item 0 was rated by user 0 (5) and user 1 (4): z_u = [p_u; 1], target r − μ − b_u
    z = np.array([[0.5, 1.0, 1.0], [-1.0, 0.5, 1.0]])
    x = ridge(z, np.array([5 - 3 - 0.1, 4 - 3 + 0.2]), 0.5, 2.0)
    np.testing.assert_allclose(stepped.item_factors[0], x[:2], rtol=1e-6)
    np.testing.assert_allclose(stepped.item_bias[0], x[2], rtol=1e-6)


def test_biases_only_first_iteration_by_hand():
    model = EALSModel.fit(RATINGS, config(factors=0, lambda_bias=1.0))
    assert model.factors == 0 and model.global_mean == pytest.approx(3.0)
    # users first, item biases still 0: b_u = Σ(r − μ) / (n_u + λ_bias)
    np.testing.assert_allclose(model.user_bias, [2 / 3, -1 / 3, -1 / 2], rtol=1e-6)
    # then items against those: b_i = Σ(r − μ − b_u) / (n_i + λ_bias)
    # item 0: (2 − 2/3) + (1 + 1/3) = 8/3; item 1: (0 − 2/3) + (−1 + 1/2) = −7/6; item 2: −5/3
    np.testing.assert_allclose(model.item_bias, [8 / 9, -7 / 18, -5 / 6], rtol=1e-6)


def random_ratings(n_users=40, n_items=25, n=300, seed=3) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    keys = rng.choice(n_users * n_items, size=n, replace=False)
    values = rng.integers(1, 6, n).astype(np.float32)
    return sp.csr_matrix((values, (keys // n_items, keys % n_items)), shape=(n_users, n_items))


def test_loss_never_increases_over_iterations_and_half_steps():
    ratings, cfg = random_ratings(), config(factors=3, lambda_emb=0.3, lambda_bias=1.0)
    model = EALSModel.initial(ratings, cfg)
    losses = [model.loss(ratings, cfg)]
    for _ in range(6):
        model = model.solve_users(ratings, cfg)
        losses.append(model.loss(ratings, cfg))
        model = model.solve_items(ratings, cfg)
        losses.append(model.loss(ratings, cfg))
    fitted = [m.loss(ratings, cfg) for m in EALSModel.fit_iterations(ratings, replace_it(cfg, 15))]
    for curve in (losses, fitted):
        steps = np.diff(curve)
        assert (steps <= 1e-6 * curve[0]).all(), curve
    assert fitted[-1] < 0.5 * losses[0]  # and it does learn


def replace_it(cfg: EALSConfig, iterations: int) -> EALSConfig:
    return dataclasses.replace(cfg, iterations=iterations)


def test_loss_is_the_slides_objective():
    model, cfg = known_model(), config()
    rows, cols = RATINGS.nonzero()
    residual = RATINGS.data - (
        3.0
        + model.user_bias[rows]
        + model.item_bias[cols]
        + (model.user_factors[rows] * model.item_factors[cols]).sum(axis=1)
    )
    embeddings = (model.user_factors**2).sum() + (model.item_factors**2).sum()
    biases = (model.user_bias**2).sum() + (model.item_bias**2).sum()
    expected = (residual**2).sum() + 0.5 * embeddings + 2.0 * biases
    assert model.loss(RATINGS, cfg) == pytest.approx(expected, rel=1e-6)


def test_predict_falls_back_to_known_biases():
    model = known_model()
    got = model.predict(np.array([-1, 0, -1, 0]), np.array([0, -1, -1, 1]))
    # known pair: 3 + 0.1 − 0.1 + (0.5·0.5 + 1·(−1))
    expected = [3.0 + 0.2, 3.0 + 0.1, 3.0, 3.0 + 0.1 - 0.1 + 0.25 - 1.0]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert got.dtype == np.float32
    assert model.predict(1, np.array([0, 2])).shape == (2,)  # one user, many items
    # one user (serving's call), by hand: 3 + 0.1 − 0.1 + (0.5·0.5 + 1·(−1)) and
    # 3 + 0.1 + 0.2 + (0.5·1 + 1·0)
    np.testing.assert_allclose(model.predict(np.int64(0), np.array([1, 0])), [2.25, 3.8], rtol=1e-6)
    np.testing.assert_allclose(model.predict(-1, np.array([0, 1])), [3.2, 2.9], rtol=1e-6)
    with pytest.raises(ValueError, match="item indices"):
        model.predict(np.int64(0), np.array([3]))
    with pytest.raises(ValueError, match="item indices"):
        model.predict(np.array([0]), np.array([3]))
    with pytest.raises(ValueError, match="user indices"):
        model.predict(np.array([-2]), np.array([0]))


def test_save_load_round_trip(tmp_path):
    model = EALSModel.fit(random_ratings(), config(iterations=3))
    model.save(tmp_path)
    loaded = EALSModel.load(tmp_path)
    assert loaded.global_mean == model.global_mean
    for name in ("user_bias", "item_bias", "user_factors", "item_factors"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(model, name))
    users, items = np.array([0, 5, -1]), np.array([3, -1, 7])
    np.testing.assert_array_equal(loaded.predict(users, items), model.predict(users, items))
    with pytest.raises(FileNotFoundError):
        EALSModel.load(tmp_path / "missing")
    np.savez(tmp_path / "eals.npz", global_mean=np.float64(3.0))
    with pytest.raises(ValueError, match="missing array"):
        EALSModel.load(tmp_path)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_ratings_are_rejected(bad):
    ratings = RATINGS.copy()
    ratings.data[1] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        EALSModel.fit(ratings, config())


def test_repeated_pairs_and_empty_input_are_rejected():
    # user 0 holds two values for item 1 (raw CSR arrays, not summed)
    repeated = sp.csr_matrix(
        (np.array([4.0, 5.0]), np.array([1, 1]), np.array([0, 2, 2])), shape=(2, 2)
    )
    with pytest.raises(ValueError, match="several values"):
        EALSModel.fit(repeated, config())
    with pytest.raises(ValueError, match="no observed"):
        EALSModel.fit(sp.csr_matrix((2, 2)), config())


def test_users_without_ratings_get_zero_parameters():
    ratings = sp.vstack([RATINGS, sp.csr_matrix((1, 3))]).tocsr()
    model = EALSModel.fit(ratings, config(iterations=2))
    assert model.user_bias[3] == 0 and not model.user_factors[3].any()


def events_dataset(rows: list[tuple[str, str, str, float, int]]) -> Dataset:
    events = normalize_events(
        pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "value", "timestamp"])
    )
    items = plain_catalog(["x", "y"])
    return Dataset(events, items, pd.DataFrame({"user_id": [], "region": [], "attributes": []}))


def test_explicit_ratings_keep_the_last_rating_per_pair():
    dataset = events_dataset(
        [
            ("a", "x", "rating", 2.0, 1),
            ("a", "x", "click", 1.0, 2),  # not a rating: ignored when ratings exist
            ("a", "x", "rating", 4.0, 3),  # the last rating of (a, x) wins
            ("b", "y", "rating", 5.0, 4),
            ("c", "y", "rating", 3.0, 5),  # c is not in the user map: dropped
        ]
    )
    users, items = IdMap.from_values(["a", "b"]), IdMap.from_values(["x", "y"])
    matrix = explicit_ratings(dataset, users, items, load_config())
    np.testing.assert_array_equal(matrix.toarray(), [[4.0, 0.0], [0.0, 5.0]])


def test_explicit_ratings_without_ratings_use_log1p_event_weight():
    cfg = load_config()
    dataset = events_dataset([("a", "x", "view", 1.0, 1), ("a", "x", "purchase", 1.0, 2)])
    matrix = explicit_ratings(dataset, IdMap.from_values(["a"]), IdMap.from_values(["x", "y"]), cfg)
    w = cfg.als.event_weights
    np.testing.assert_allclose(matrix.toarray(), [[np.log1p(w.view + w.purchase), 0.0]])
    assert evaluate_explicit(dataset, cfg) is None  # nothing explicit to score


def test_movielens_rmse_eals_beats_biases_beats_global_mean(ml_dataset, ml_config):
    result = evaluate_explicit(ml_dataset, ml_config)
    rmse = {model: values["rmse"] for model, values in result.metrics.items()}
    warm = {model: values["rmse_warm"] for model, values in result.metrics.items()}
    assert rmse["eals"] < rmse["biases"] < rmse["global_mean"], result.format_table()
    assert warm["eals"] < warm["biases"] < warm["global_mean"], result.format_table()
    assert result.counts["warm_test_ratings"] > 1000
    assert result.counts["train_ratings"] + result.counts["test_ratings"] == 100_000
