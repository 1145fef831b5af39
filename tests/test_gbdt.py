"""The LightGBM ranker recovers a planted rule, stops early on noise, and round-trips."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from ranking.frame import RankingFrame
from ranking.gbdt import GBDTRanker
from recsys.config import LightGBMConfig
from recsys.metrics import auc, ndcg_at_k

NAMES = ("noise_a", "signal_x", "nan_noise", "signal_y", "noise_b")
CANDIDATES = 20


def config(objective: str = "binary", **changes) -> LightGBMConfig:
    base = LightGBMConfig(
        objective=objective,
        num_leaves=7,
        learning_rate=0.1,
        num_trees=150,
        early_stopping_rounds=10,
        min_data_in_leaf=20,
        feature_fraction=0.8,
        random_state=7,
    )
    return replace(base, **changes)


def planted_frame(n_requests: int, seed: int, signal: bool = True) -> RankingFrame:
    """Label = 1 when 2 x + y + noise > 1; a third feature is half NaN, two are pure noise."""
    rng = np.random.default_rng(seed)
    n = n_requests * CANDIDATES
    dense = rng.normal(size=(n, len(NAMES))).astype(np.float32)
    dense[rng.random(n) < 0.5, 2] = np.nan
    x, y = dense[:, 1], dense[:, 3]
    logit = 2.0 * x + y if signal else np.zeros(n, dtype=np.float32)
    labels = (logit + rng.normal(scale=0.7, size=n) > 1.0).astype(np.float32)
    return RankingFrame(
        dense=dense,
        dense_names=NAMES,
        sparse=rng.integers(0, 50, size=(n, 2)),
        sparse_names=("user", "item"),
        sparse_cardinalities=(50, 50),
        groups=np.repeat(np.arange(n_requests, dtype=np.int64), CANDIDATES),
        labels=labels,
    )


def request_ndcg(frame: RankingFrame, scores: np.ndarray, k: int = 10) -> float:
    """NDCG@k over requests, each request's candidates ranked by `scores`."""
    n_requests = len(frame.group_sizes())
    by_request = scores.reshape(n_requests, CANDIDATES)
    ranked = np.argsort(-by_request, axis=1, kind="stable")
    relevant = sp.csr_matrix(frame.labels.reshape(n_requests, CANDIDATES))
    return ndcg_at_k(ranked, relevant, k)


@pytest.fixture(scope="module")
def frames() -> tuple[RankingFrame, RankingFrame]:
    return planted_frame(150, seed=1), planted_frame(60, seed=2)


@pytest.fixture(scope="module")
def binary(frames) -> GBDTRanker:
    return GBDTRanker.fit(*frames, config("binary"))


@pytest.fixture(scope="module")
def lambdarank(frames) -> GBDTRanker:
    return GBDTRanker.fit(*frames, config("lambdarank"))


def test_binary_learns_the_planted_rule(binary, frames):
    valid = frames[1]
    scores = binary.predict(valid)
    assert scores.dtype == np.float32 and scores.shape == (len(valid),)
    # Scores are log-odds: their sigmoid is LightGBM's own probability.
    probability = binary.booster.predict(valid.dense)
    np.testing.assert_allclose(1.0 / (1.0 + np.exp(-scores)), probability, rtol=1e-5)
    assert auc(valid.labels, scores) > 0.85
    assert binary.curve.metric == "auc"
    assert binary.curve.values[binary.best_iteration - 1] == max(binary.curve.values)


def test_binary_counts_a_graded_label_as_taken_up(binary, frames):
    # ranking.later_positives grades a request's own item 3: binary learns it as 1
    graded = [replace(f, labels=f.labels * 3) for f in frames]
    again = GBDTRanker.fit(*graded, config("binary"))
    np.testing.assert_array_equal(again.predict(frames[1]), binary.predict(frames[1]))


def test_lambdarank_beats_random_order(lambdarank, frames):
    valid = frames[1]
    model = request_ndcg(valid, lambdarank.predict(valid))
    rng = np.random.default_rng(0)
    random = np.mean([request_ndcg(valid, rng.random(len(valid))) for _ in range(5)])
    assert model > random + 0.25
    assert lambdarank.curve.metric == "ndcg@10"


def test_importance_ranks_the_signal_first(binary, lambdarank):
    for ranker in (binary, lambdarank):
        importance = ranker.feature_importance()
        assert list(importance)[:2] == ["signal_x", "signal_y"]  # x has twice y's weight
        assert set(importance) == set(NAMES)
        gains = [value["gain"] for value in importance.values()]
        assert gains == sorted(gains, reverse=True)
        assert importance["signal_x"]["split"] > 0


def test_early_stopping_on_noise():
    noise_train, noise_valid = planted_frame(100, 3, signal=False), planted_frame(40, 4, False)
    ranker = GBDTRanker.fit(noise_train, noise_valid, config("binary"))
    assert ranker.best_iteration < 150
    # Stopped `early_stopping_rounds` after the best round, not at num_trees.
    assert len(ranker.curve.values) == ranker.best_iteration + 10
    assert ranker.booster.num_trees() == ranker.best_iteration


def test_save_load_gives_identical_predictions(lambdarank, frames, tmp_path: Path):
    lambdarank.save(tmp_path)
    assert (tmp_path / "model.txt").is_file()
    loaded = GBDTRanker.load(tmp_path)
    np.testing.assert_array_equal(loaded.predict(frames[1]), lambdarank.predict(frames[1]))
    assert loaded.curve == lambdarank.curve
    assert loaded.feature_names == NAMES and loaded.objective == "lambdarank"


def test_load_fails_clearly(binary, tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="model.txt"):
        GBDTRanker.load(tmp_path)
    binary.save(tmp_path)
    model = (tmp_path / "model.txt").read_bytes()
    # A truncated model would abort the process inside LightGBM's parser; the checksum stops it.
    (tmp_path / "model.txt").write_bytes(model[: len(model) // 2])
    with pytest.raises(ValueError, match="model.txt does not match the checksum"):
        GBDTRanker.load(tmp_path)
    (tmp_path / "gbdt.json").write_text("{")
    with pytest.raises(ValueError, match=r"gbdt\.json"):
        GBDTRanker.load(tmp_path)


def test_predict_rejects_other_features(binary, frames):
    valid = frames[1]
    renamed = replace(valid, dense_names=("noise_a", "signal_x", "other", "signal_y", "noise_b"))
    with pytest.raises(ValueError, match="feature 2 is 'other'.*'nan_noise'"):
        binary.predict(renamed)
    fewer = replace(valid, dense=valid.dense[:, :4], dense_names=NAMES[:4])
    with pytest.raises(ValueError, match="4 dense features.*5"):
        binary.predict(fewer)


def test_lambdarank_with_one_request(frames):
    train, valid = frames
    one = replace(train, groups=np.zeros(len(train), dtype=np.int64))
    ranker = GBDTRanker.fit(one, valid, config("lambdarank"))
    assert request_ndcg(valid, ranker.predict(valid)) > 0.6


def test_same_seed_same_predictions(binary, frames):
    again = GBDTRanker.fit(*frames, config("binary"))
    np.testing.assert_array_equal(again.predict(frames[1]), binary.predict(frames[1]))


def test_bad_training_input(frames):
    train, valid = frames
    with pytest.raises(ValueError, match="objective"):
        GBDTRanker.fit(train, valid, config("poisson"))
    with pytest.raises(ValueError, match="valid frame has no labels"):
        GBDTRanker.fit(train, replace(valid, labels=None), config())
    negatives = replace(valid, labels=np.zeros(len(valid), dtype=np.float32))
    with pytest.raises(ValueError, match="no positive"):
        GBDTRanker.fit(train, negatives, config())
    fractional = replace(train, labels=train.labels * 0.5)
    with pytest.raises(ValueError, match="train labels must be integer grades"):
        GBDTRanker.fit(fractional, valid, config("binary"))
    negative = replace(valid, labels=-valid.labels)
    with pytest.raises(ValueError, match="valid labels must be integer grades"):
        GBDTRanker.fit(train, negative, config("lambdarank"))


@pytest.mark.parametrize("objective", ["binary", "lambdarank"])
def test_compiled_trees_score_like_the_booster(objective, binary, lambdarank, frames):
    ranker = binary if objective == "binary" else lambdarank
    compiled = ranker.compiled()
    assert compiled.variant == "compiled" and ranker.variant == "booster"
    valid = frames[1]  # a third of one column is NaN: the trees' missing-value routing
    np.testing.assert_array_equal(compiled.predict(valid), ranker.predict(valid))
    assert compiled.predict(valid.take(np.arange(0))).shape == (0,)


def test_compiled_forest_is_cached_and_a_damaged_cache_is_rebuilt(lambdarank, frames, tmp_path):
    expected = lambdarank.predict(frames[1])
    first = lambdarank.compiled(tmp_path)
    (cached,) = tmp_path.glob("forest-*.o")
    assert (tmp_path / f"{cached.stem}.sha256").is_file()
    assert not list(tmp_path.glob("*.partial"))
    built = cached.stat().st_mtime_ns
    second = lambdarank.compiled(tmp_path)  # loads the file: nothing is written
    assert cached.stat().st_mtime_ns == built
    cached.write_bytes(cached.read_bytes()[:100])  # truncated: must not be loaded
    third = lambdarank.compiled(tmp_path)
    assert cached.stat().st_size > 100
    for ranker in (first, second, third):
        np.testing.assert_array_equal(ranker.predict(frames[1]), expected)


def test_compile_failure_keeps_the_booster(lambdarank, frames, monkeypatch, caplog):
    def broken(*_):
        raise RuntimeError("no LLVM here")

    monkeypatch.setattr("ranking.gbdt.compile_forest", broken)
    ranker = lambdarank.compiled()
    assert ranker.variant == "booster"
    assert "no LLVM here" in caplog.text
    np.testing.assert_array_equal(ranker.predict(frames[1]), lambdarank.predict(frames[1]))


def test_compiled_trees_that_are_not_this_models_are_not_served(
    lambdarank, binary, frames, tmp_path, caplog
):
    """The cache's checksum file only says the machine code is whole, not whose it is."""
    lambdarank.compiled(tmp_path / "ours")
    binary.compiled(tmp_path / "theirs")
    ours = next((tmp_path / "ours").glob("forest-*.o"))
    theirs = next((tmp_path / "theirs").glob("forest-*.o")).read_bytes()
    ours.write_bytes(theirs)  # another model's machine code, with a checksum that agrees
    ours.with_suffix(".sha256").write_text(hashlib.sha256(theirs).hexdigest())
    ranker = lambdarank.compiled(tmp_path / "ours")
    assert ranker.variant == "booster"
    assert "compiled trees disagree with the model" in caplog.text
    np.testing.assert_array_equal(ranker.predict(frames[1]), lambdarank.predict(frames[1]))
