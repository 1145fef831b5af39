"""DLRM (seed 000): learns a planted user-item interaction a dense model cannot see, handles
missing values, starts from MF factors, trains with BPR or a listwise loss over whole requests,
keeps the epoch with the best validation NDCG, and its exports stay within tolerance."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import threading
import time
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import ndcg_score, roc_auc_score
from torch.export.pt2_archive._package import AOTICompiledModel

from ranking.dlrm import export
from ranking.dlrm.export import INT8_MAX_DRIFT, INT8_MEAN_DRIFT, SCRIPT_MAX_DRIFT
from ranking.dlrm.model import DenseArch, DenseStats, mf_embeddings
from ranking.dlrm.ranker import META_FILE, STATE_FILE, DLRMRanker
from ranking.dlrm.training import (
    bce_loss,
    bpr_pairs,
    grouped_ndcg,
    listwise_loss,
    request_batches,
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
    embedding_learning_rate=0.01,
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


def test_the_epoch_with_the_best_validation_ndcg_is_kept(frames, fitted):
    _, valid = frames
    ndcg = [row["valid_ndcg@10"] for row in fitted.history]
    assert len(set(np.round(ndcg, 9))) > 1  # the epochs differ, so the choice means something
    kept = grouped_ndcg(valid.groups, valid.labels, fitted.predict(valid), 10)
    assert kept == pytest.approx(max(ndcg), abs=1e-9)


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


def test_one_wider_table_keeps_its_own_dot_products_when_its_rank_allows():
    # the rankers learn without user ids: the item table alone, rank 3 in 6 factors
    rng = np.random.default_rng(3)
    q = rng.normal(size=(15, 3)) @ rng.normal(size=(3, 6))
    rows = mf_embeddings({"item": q}, dim=4)
    assert rows["item"].shape == (15, 4)
    np.testing.assert_allclose(rows["item"] @ rows["item"].T, q @ q.T, atol=1e-9)


def test_bpr_pairs_stay_inside_their_request():
    groups = np.array([0, 0, 0, 1, 1, 2, 2])
    positive = np.array([True, False, False, True, True, False, True])
    pos, neg = bpr_pairs(groups, positive, np.random.default_rng(0))
    np.testing.assert_array_equal(pos, [0, 6])  # request 1 has no negative
    assert neg[0] in (1, 2)
    assert neg[1] == 5


# BPR makes one pair per positive: fewer rows per epoch than BCE, so smaller batches
@pytest.mark.parametrize(("loss", "batch_size"), [("bpr", 64), ("listwise", CONFIG.batch_size)])
def test_pairwise_and_listwise_losses_improve_pairwise_accuracy(frames, loss, batch_size):
    train, valid = frames
    config = dataclasses.replace(CONFIG, loss=loss, batch_size=batch_size)
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


HAS_CXX = shutil.which(os.environ.get("CXX", "g++")) is not None


@pytest.fixture(scope="module")
def compiled_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("compiled")


@pytest.mark.skipif(
    not HAS_CXX,
    reason="AOTInductor needs a C++ compiler (without one, TorchScript serves: tested below)",
)
def test_compiled_scores_like_the_model_and_is_cached(fitted, frames, compiled_cache):
    _, valid = frames
    compiled = fitted.compiled(compiled_cache)
    assert compiled.variant == "compiled"
    # called through the package's run function, not its generic __call__
    assert not isinstance(compiled.model, AOTICompiledModel)
    assert np.abs(compiled.predict(valid) - fitted.predict(valid)).max() < SCRIPT_MAX_DRIFT
    one_row = valid.take(np.arange(1))  # the number of rows is not fixed at compile time
    assert np.abs(compiled.predict(one_row) - fitted.predict(one_row)).max() < SCRIPT_MAX_DRIFT
    (package,) = compiled_cache.glob("dlrm-*.pt2")
    assert (compiled_cache / f"{package.stem}.sha256").is_file()
    assert not list(compiled_cache.glob("*partial*"))
    built = package.stat().st_mtime_ns
    again = fitted.compiled(compiled_cache)  # another process, a restart: loads the package
    assert package.stat().st_mtime_ns == built
    np.testing.assert_array_equal(again.predict(valid), compiled.predict(valid))


def test_compiled_code_that_scores_differently_is_not_served(
    fitted, frames, compiled_cache, monkeypatch, caplog
):
    _, valid = frames
    wrong = lambda dense, sparse: torch.zeros(len(dense))  # noqa: E731
    monkeypatch.setattr(torch._inductor, "aoti_load_package", lambda path: wrong)
    with caplog.at_level("WARNING", logger="ranking.dlrm.ranker"):
        served = fitted.compiled(compiled_cache)
    assert served.variant == "torchscript"
    assert "dlrm: serving TorchScript, not compiled code" in caplog.text
    if HAS_CXX:  # else compiling itself failed first ("No working C++ compiler"): also served
        assert "compiled DLRM scores differ" in caplog.text
    assert np.abs(served.predict(valid) - fitted.predict(valid)).max() < SCRIPT_MAX_DRIFT


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


@pytest.mark.parametrize("bad", [-1.0, np.nan])
def test_negative_or_nan_labels_are_refused(frames, bad):
    train, valid = frames
    labels = train.labels.copy()
    labels[0] = bad
    with pytest.raises(ValueError, match="train labels must be finite and >= 0"):
        DLRMRanker.fit(dataclasses.replace(train, labels=labels), valid, CONFIG, device="cpu")


def test_graded_labels_train_as_taken_up(frames):
    # ranking.later_positives grades a request's own item 3, later items 1
    train, valid = frames
    graded = dataclasses.replace(train, labels=train.labels * 3)
    config = dataclasses.replace(CONFIG, epochs=1)
    plain = DLRMRanker.fit(train, valid, config, device="cpu").predict(valid)
    np.testing.assert_array_equal(
        DLRMRanker.fit(graded, valid, config, device="cpu").predict(valid), plain
    )


def test_same_seed_same_model(frames):
    train, valid = frames
    config = dataclasses.replace(CONFIG, epochs=2)
    first = DLRMRanker.fit(train, valid, config, device="cpu").predict(valid)
    second = DLRMRanker.fit(train, valid, config, device="cpu").predict(valid)
    other = DLRMRanker.fit(train, valid, dataclasses.replace(config, random_state=4), device="cpu")
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other.predict(valid))


def test_grouped_ndcg_by_hand():
    # request 0: positives at rows 0 and 2, scores put them 1st and 3rd;
    # request 1: one positive ranked 2nd; request 2 has no positive and is left out
    groups = np.array([0, 0, 0, 1, 1, 2, 2])
    labels = np.array([1, 0, 1, 0, 1, 0, 0])
    scores = np.array([0.9, 0.5, 0.1, 0.8, 0.3, 0.2, 0.1])
    first = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    second = (1 / math.log2(3)) / 1
    assert grouped_ndcg(groups, labels, scores, 10) == pytest.approx((first + second) / 2)
    # k=1: request 0 has its positive on top, request 1 does not
    assert grouped_ndcg(groups, labels, scores, 1) == pytest.approx(0.5)
    # the same as scikit-learn's per request
    reference = np.mean(
        [ndcg_score([labels[g == groups]], [scores[g == groups]], k=10) for g in (0, 1)]
    )
    assert grouped_ndcg(groups, labels, scores, 10) == pytest.approx(reference)


def test_listwise_loss_by_hand():
    # request 0: logits 0, ln 3, one positive (row 1): softmax 3/4 -> -ln(3/4)
    # request 1: logits 0, 0, 0, positives rows 2 and 3: target 1/2 each, softmax 1/3 -> ln 3
    # request 2: no positive, left out of the mean
    logits = torch.tensor([0.0, math.log(3.0), 0.0, 0.0, 0.0, 5.0], dtype=torch.float64)
    labels = torch.tensor([0.0, 1.0, 1.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    request = torch.tensor([0, 0, 1, 1, 1, 2])
    loss = listwise_loss(logits, labels, request)
    assert loss.item() == pytest.approx((math.log(4 / 3) + math.log(3.0)) / 2)
    # a constant added to a request's logits does not change it (only the order within counts)
    shifted = logits + torch.tensor([7.0, 7.0, -2.0, -2.0, -2.0, 0.0], dtype=torch.float64)
    assert listwise_loss(shifted, labels, request).item() == pytest.approx(loss.item())


def test_bce_counts_a_graded_label_as_taken_up():
    # ranking.later_positives grades the request's own item 3: BCE's target stays 1
    logits = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    graded = torch.tensor([3.0, 0.0, 1.0], dtype=torch.float64)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    )
    assert bce_loss(logits, graded).item() == pytest.approx(expected.item())


def test_request_batches_hold_whole_requests():
    groups = np.repeat(np.arange(6), [3, 1, 2, 4, 2, 3])
    batches = request_batches(groups, 5, np.random.default_rng(0))
    rows = np.concatenate(batches)
    np.testing.assert_array_equal(np.sort(rows), np.arange(len(groups)))  # every row once
    for batch in batches:
        for g in np.unique(groups[batch]):
            assert np.sum(groups[batch] == g) == np.sum(groups == g)  # a request is not split
    # a batch closes at the first request starting past 5 rows: 15 rows -> 3 batches or so
    assert 2 <= len(batches) <= 4
    assert max(len(b) for b in batches) < 5 + 4  # at most one request past batch_size


def test_tables_learn_at_their_own_rate(frames):
    train, _ = frames
    slow = dataclasses.replace(CONFIG, epochs=1, embedding_learning_rate=1e-9)
    start = DLRMRanker.fit(train, None, dataclasses.replace(slow, epochs=0), device="cpu")
    trained = DLRMRanker.fit(train, None, slow, device="cpu")
    before, after = start.model.state_dict(), trained.model.state_dict()
    for name in before:
        moved = (after[name].float() - before[name].float()).abs().max().item()
        if name.startswith("sparse_arch."):
            assert moved < 1e-6, name  # Adam's steps are about the learning rate
        elif name.endswith(".weight"):
            assert moved > 1e-3, name


def test_models_saved_without_the_table_rate_still_load(fitted, frames, tmp_path):
    _, valid = frames
    fitted.save(tmp_path)
    meta = json.loads((tmp_path / META_FILE).read_text())
    del meta["config"]["embedding_learning_rate"]
    (tmp_path / META_FILE).write_text(json.dumps(meta))
    loaded = DLRMRanker.load(tmp_path)
    np.testing.assert_array_equal(loaded.predict(valid), fitted.predict(valid))


def test_stopping_the_builds_ends_a_compile_running_in_a_child():
    # a server shutting down must not wait for its watcher's compile (its exit would join it)
    outcome: list[Exception] = []

    def build() -> None:
        for _ in range(2):  # the second is refused: the thread was told to stop
            try:
                export._run_in_child(time.sleep, 600)  # a ten-minute compile
            except Exception as error:
                outcome.append(error)

    thread = threading.Thread(target=build, name="bundle-watcher")
    thread.start()
    until = time.monotonic() + 60
    while not any(pool._processes for pool in list(export._BUILDS)):
        assert time.monotonic() < until, "the child never started"
        time.sleep(0.01)
    export.stop_builds(thread)
    thread.join(30)
    assert not thread.is_alive()
    assert [type(error) for error in outcome] == [BrokenProcessPool, RuntimeError]
    assert "bundle-watcher is stopping" in str(outcome[1])
    assert not export._BUILDS
