"""DLRM (seed 000): learns a planted user-item interaction a dense model cannot see, handles
missing values, starts from MF factors, trains with BPR, and its exports stay within tolerance."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from ranking.dlrm import (
    INT8_MAX_DRIFT,
    INT8_MEAN_DRIFT,
    SCRIPT_MAX_DRIFT,
    STATE_FILE,
    DenseArch,
    DenseStats,
    DLRMRanker,
    bpr_pairs,
    mf_embeddings,
)
from ranking.frame import RankingFrame
from recsys.config import DLRMConfig

N_USERS, N_ITEMS = 40, 30
USER_GROUP = np.arange(N_USERS) % 2  # two latent tastes
ITEM_GROUP = (np.arange(N_ITEMS) // 3) % 2

CONFIG = DLRMConfig(
    embedding_dim=8,
    bottom_mlp=(16,),
    top_mlp=(16,),
    dropout=0.0,
    batch_norm=True,
    loss="bce",
    epochs=6,
    batch_size=128,
    learning_rate=0.01,
    weight_decay=0.0,
    pretrained_mf=True,
    random_state=3,
)


def planted_frame(n_requests: int, seed: int, per_request: int = 10) -> RankingFrame:
    """Positive when the user's and the item's groups match (only the ids know) and x0 is high."""
    rng = np.random.default_rng(seed)
    n = n_requests * per_request
    users = np.repeat(rng.integers(N_USERS, size=n_requests), per_request)
    items = rng.integers(N_ITEMS, size=n)
    x0, noise, sparse_feature = rng.normal(size=(3, n))
    sparse_feature[rng.random(n) < 0.5] = np.nan
    match = USER_GROUP[users] == ITEM_GROUP[items]
    logit = 1.5 * x0 + np.where(match, 2.5, -2.5)
    labels = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    return RankingFrame(
        dense=np.c_[x0, noise, sparse_feature].astype(np.float32),
        dense_names=("x0", "noise", "sometimes"),
        sparse=np.c_[users + 1, items + 1].astype(np.int64),
        sparse_names=("user", "item"),
        sparse_cardinalities=(N_USERS + 1, N_ITEMS + 1),
        groups=np.repeat(np.arange(n_requests), per_request).astype(np.int64),
        labels=labels,
    )


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny models: OpenMP threads only contend with each other (and other tests) here.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def frames() -> tuple[RankingFrame, RankingFrame]:
    return planted_frame(300, seed=0), planted_frame(100, seed=1)


@pytest.fixture(scope="module")
def fitted(frames) -> DLRMRanker:
    train, valid = frames
    return DLRMRanker.fit(train, valid, CONFIG, device="cpu")


def pairwise_accuracy(frame: RankingFrame, scores: np.ndarray) -> float:
    """Share of (positive, negative) pairs of one request ordered correctly."""
    same = frame.groups[:, None] == frame.groups[None, :]
    pairs = same & (frame.labels[:, None] == 1) & (frame.labels[None, :] == 0)
    return float((scores[:, None] > scores[None, :])[pairs].mean())


def test_learns_the_interaction_a_dense_model_cannot(frames, fitted):
    train, valid = frames
    baseline = LogisticRegression().fit(np.nan_to_num(train.dense), train.labels)
    baseline_auc = roc_auc_score(
        valid.labels, baseline.predict_proba(np.nan_to_num(valid.dense))[:, 1]
    )
    dlrm_auc = roc_auc_score(valid.labels, fitted.predict(valid))
    assert dlrm_auc > 0.8
    assert dlrm_auc > baseline_auc + 0.05
    best = max(row["valid_auc"] for row in fitted.history)
    assert dlrm_auc == pytest.approx(best, abs=1e-9)  # the best epoch was kept


def test_missing_values_get_an_indicator():
    # values are compressed by sign(x) log(1 + |x|) before the statistics: e, e^2 - 1 -> 1, 2
    e = np.e
    dense = np.array([[e - 1, np.nan], [-(e - 1), 4.0], [e**2 - 1, np.nan]], dtype=np.float32)
    stats = DenseStats.of(dense)
    assert stats.flagged == [1]  # only the feature that was ever missing
    # compressed column 0: 1, -1, 2 -> mean 2/3; column 1: log 5 (present once)
    assert stats.mean == pytest.approx([2 / 3, np.log(5.0)], rel=1e-5)
    std0 = np.sqrt(((1 - 2 / 3) ** 2 + (-1 - 2 / 3) ** 2 + (2 - 2 / 3) ** 2) / 3)
    assert stats.std == pytest.approx([std0, 1.0], rel=1e-5)  # constant -> 1


def test_bottom_mlp_sees_standardised_values_and_missing_flags():
    dense = np.array([[1.0, np.nan], [3.0, 4.0], [5.0, np.nan]], dtype=np.float32)
    arch = DenseArch(DenseStats.of(dense), hidden=(), dim=2, dropout=0.0, bn=False)
    seen = []
    arch.mlp[0].register_forward_pre_hook(lambda _, inputs: seen.append(inputs[0]))
    arch(torch.from_numpy(dense))
    c = np.log1p(dense[:, 0].astype(np.float64))  # compressed column 0
    z = (c - c.mean()) / c.std()
    # x0 standardised after compression, x1 (0 = the mean where missing), x1's missing flag
    expected = [[z[0], 0.0, 1.0], [z[1], 0.0, 0.0], [z[2], 0.0, 1.0]]
    np.testing.assert_allclose(seen[0].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_missing_is_not_the_same_as_the_mean(fitted, frames):
    _, valid = frames
    rows = valid.take(np.arange(50))
    mean = fitted.spec.stats.mean[2]
    at_mean = dataclasses.replace(rows, dense=rows.dense.copy())
    missing = dataclasses.replace(rows, dense=rows.dense.copy())
    at_mean.dense[:, 2] = mean
    missing.dense[:, 2] = np.nan
    # both standardise to 0; only the indicator separates them
    assert not np.allclose(fitted.predict(at_mean), fitted.predict(missing), atol=1e-6)


def test_pretrained_factors_fill_the_tables(frames):
    train, _ = frames
    rng = np.random.default_rng(5)
    users = rng.normal(size=(N_USERS, 8)).astype(np.float32)
    items = rng.normal(size=(N_ITEMS - 2, 8)).astype(np.float32)  # two items newer than ALS
    config = dataclasses.replace(CONFIG, epochs=0)
    ranker = DLRMRanker.fit(train, None, config, {"user": users, "item": items}, device="cpu")
    user_table, item_table = (t.weight.detach().numpy() for t in ranker.model.sparse_arch.tables)
    np.testing.assert_array_equal(user_table[1:], users)  # row r + 1 holds factor row r
    np.testing.assert_array_equal(item_table[1 : N_ITEMS - 1], items)
    np.testing.assert_array_equal(user_table[0], 0.0)  # the unknown row


def test_narrower_factors_are_zero_padded():
    factors = {"user": np.array([[1.0, 2.0]]), "item": np.array([[3.0, -1.0], [0.5, 0.5]])}
    rows = mf_embeddings(factors, dim=4)
    np.testing.assert_array_equal(rows["user"], [[1.0, 2.0, 0.0, 0.0]])
    np.testing.assert_array_equal(rows["item"], [[3.0, -1.0, 0, 0], [0.5, 0.5, 0, 0]])


def test_wider_factors_keep_the_dot_products_when_their_rank_allows():
    # P Qᵀ of rank 3 written with 6 factors: 4 dims can hold it exactly (Eckart–Young)
    rng = np.random.default_rng(2)
    core = rng.normal(size=(3, 6))
    p, q = rng.normal(size=(20, 3)) @ core, rng.normal(size=(15, 3)) @ core
    rows = mf_embeddings({"user": p, "item": q}, dim=4)
    assert rows["user"].shape == (20, 4)
    np.testing.assert_allclose(rows["user"] @ rows["item"].T, p @ q.T, atol=1e-9)


def test_bpr_pairs_stay_inside_their_request():
    groups = np.array([0, 0, 0, 1, 1, 2, 2])
    positive = np.array([True, False, False, True, True, False, True])
    pos, neg = bpr_pairs(groups, positive, np.random.default_rng(0))
    np.testing.assert_array_equal(pos, [0, 6])  # request 1 has no negative
    assert neg[0] in (1, 2)
    assert neg[1] == 5


def test_bpr_improves_pairwise_accuracy(frames):
    train, valid = frames
    # one pair per positive: fewer rows per epoch than BCE, so smaller batches
    config = dataclasses.replace(CONFIG, loss="bpr", batch_size=64)
    untrained = DLRMRanker.fit(train, None, dataclasses.replace(config, epochs=0), device="cpu")
    trained = DLRMRanker.fit(train, valid, config, device="cpu")
    before = pairwise_accuracy(valid, untrained.predict(valid))
    after = pairwise_accuracy(valid, trained.predict(valid))
    assert after > 0.75
    assert after > before + 0.1


def test_quantized_and_scripted_stay_within_tolerance(fitted, frames):
    _, valid = frames
    eager = fitted.predict(valid)
    int8 = fitted.quantized()
    drift = np.abs(int8.predict(valid) - eager)
    assert drift.max() < INT8_MAX_DRIFT
    assert drift.mean() < INT8_MEAN_DRIFT
    int8_auc = roc_auc_score(valid.labels, int8.predict(valid))
    assert int8_auc == pytest.approx(roc_auc_score(valid.labels, eager), abs=0.005)
    assert np.abs(fitted.scripted().predict(valid) - eager).max() < SCRIPT_MAX_DRIFT
    assert np.abs(int8.scripted().predict(valid) - int8.predict(valid)).max() < SCRIPT_MAX_DRIFT
    np.testing.assert_array_equal(fitted.predict(valid), eager)  # exports copied the model


def test_save_and_load_give_identical_predictions(fitted, frames, tmp_path):
    _, valid = frames
    fitted.save(tmp_path)
    loaded = DLRMRanker.load(tmp_path)
    np.testing.assert_array_equal(loaded.predict(valid), fitted.predict(valid))
    state = torch.load(tmp_path / STATE_FILE, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())


def test_load_rejects_missing_and_corrupt_files(fitted, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        DLRMRanker.load(tmp_path)
    fitted.save(tmp_path)
    (tmp_path / STATE_FILE).write_bytes(b"not a torch archive")
    with pytest.raises(ValueError, match="not a DLRM state"):
        DLRMRanker.load(tmp_path)


def test_mismatched_features_are_rejected(fitted, frames):
    _, valid = frames
    renamed = dataclasses.replace(valid, dense_names=("x0", "noise", "other"))
    with pytest.raises(ValueError, match="dense features"):
        fitted.predict(renamed)
    too_big = dataclasses.replace(valid, sparse=valid.sparse + N_ITEMS + 5)
    with pytest.raises(ValueError, match="'user' holds ids"):
        fitted.predict(too_big)


def test_same_seed_same_model(frames):
    train, valid = frames
    config = dataclasses.replace(CONFIG, epochs=2)
    first = DLRMRanker.fit(train, valid, config, device="cpu").predict(valid)
    second = DLRMRanker.fit(train, valid, config, device="cpu").predict(valid)
    other = DLRMRanker.fit(train, valid, dataclasses.replace(config, random_state=4), device="cpu")
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other.predict(valid))
