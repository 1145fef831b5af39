"""ALS steps (seed 004, "Пошагаем") and the streaming evaluation that measures them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from candidates.als import ALSModel
from candidates.als_steps import PendingItems, solve_rows, step_items_then_users, warm
from pipelines.streaming_evaluation import (
    NO_UPDATES,
    RETRAIN,
    STEPS,
    STEPS_NEW_ITEMS,
    STRATEGIES,
    evaluate_streaming,
)
from pipelines.streaming_report import write_streaming_report
from pipelines.synthetic import SyntheticSpec, generate_from_spec
from recsys.config import load_config


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def planted():
    """R from two planted tastes (users 0-99 like items 0-49, users 100-199 items 50-99),
    and iALS trained on it."""
    rng = np.random.default_rng(0)
    rows, cols = [], []
    for user in range(200):
        liked = np.arange(50) + (50 if user >= 100 else 0)
        picks = rng.choice(liked, size=12, replace=False)
        rows += [user] * len(picks)
        cols += list(picks)
    matrix = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(200, 100))
    config = load_config().replace(als={"factors": 8, "regularization": 1.0, "iterations": 20})
    return matrix, ALSModel.fit(matrix, config.als), config.als


def test_a_user_step_from_the_trained_items_lands_on_the_trained_user(planted):
    matrix, model, als = planted
    stepped = solve_rows(model.item_factors, matrix, als.alpha, als.regularization)
    assert stepped.dtype == np.float32 and stepped.shape == model.user_factors.shape
    # the fit's last half-step solved these same equations (to convergence): same space
    assert _cosine(stepped, model.user_factors).min() > 0.99


def test_a_new_item_gets_a_vector_near_its_users_taste(planted):
    matrix, model, als = planted
    fans = np.arange(100, 130)  # a new item liked by users of the second taste
    column = sp.csr_matrix((np.ones(len(fans), np.float32), (fans, np.zeros(len(fans)))), (200, 1))
    users = sp.hstack([matrix, column]).tocsr()
    items = np.vstack([model.item_factors, np.zeros((1, model.item_factors.shape[1]), np.float32)])
    user_factors, item_factors = model.user_factors.copy(), items.copy()
    step_items_then_users(
        user_factors,
        item_factors,
        np.array([100]),
        users.T.tocsr()[[100]],
        np.array([], np.int64),
        users[[]],
        als.alpha,
        als.regularization,
    )
    assert np.array_equal(user_factors, model.user_factors)  # no user was asked for
    scores = model.user_factors @ item_factors[100]
    assert scores[100:].mean() > scores[:100].mean() + 0.1  # the second taste scores it higher
    # nothing else moved, and the inputs are untouched
    assert np.array_equal(item_factors[:100], model.item_factors)
    assert not items[100].any()


def test_steps_go_only_through_warm_vectors(planted):
    matrix, model, als = planted
    usable = np.zeros(100, bool)
    stepped = solve_rows(
        model.item_factors, matrix[:1], als.alpha, als.regularization, usable=usable
    )
    assert not stepped.any()  # no usable entry: a zero vector, not the other side's mean
    norms = np.linalg.norm(model.item_factors, axis=1)
    hot = warm(model.item_factors, 0.5)
    assert hot.sum() == pytest.approx(50, abs=1)
    assert norms[hot].min() >= norms[~hot].max()
    with pytest.raises(ValueError, match="columns"):
        solve_rows(model.item_factors[:10], matrix, als.alpha, als.regularization)


def test_pending_items_are_due_when_new_or_hot():
    pending = PendingItems(4)
    factors = np.array([[1.0], [1.0], [0.0], [1.0]], np.float32)  # item 2 has no vector
    pending.add(np.array([0, 0, 0, 1, 2, 5]))  # 5: beyond the factors, a new item
    assert list(pending.due(factors, every=3)) == [0, 2, 5]  # 3 events, no vector, unknown
    assert list(pending.due(factors, every=3)) == []  # their counts were reset
    pending.add(np.array([1, 1]))
    assert list(pending.due(factors, every=3)) == [1]  # 1 + 2 events since its last step
    pending.add(np.array([3, 3, 3]))
    assert list(pending.due(factors, every=0)) == []  # 0: items with a vector never


@pytest.fixture(scope="module")
def drifting_stream():
    spec = SyntheticSpec(
        n_users=3000, n_items=800, n_events=60_000, n_categories=40, drift=1.0,
        new_item_share=0.2, seed=5,
    )  # fmt: skip
    dataset = generate_from_spec(spec)
    return evaluate_streaming(dataset, load_config(), n_blocks=3)


def test_streaming_steps_keep_up_with_a_drifting_stream_for_less_compute(drifting_stream):
    result = drifting_stream
    assert list(result.scores) == list(STRATEGIES)
    assert all(len(scores) == 3 for scores in result.scores.values())
    assert all(s.users > 100 for s in result.scores[STEPS])
    first = {strategy: scores[0].recall for strategy, scores in result.scores.items()}
    assert len(set(first.values())) == 1  # block 1 is scored before any update
    # updating matters on this stream, and steps catch most of what a retrain gets
    assert result.mean_recall(STEPS) > result.mean_recall(NO_UPDATES)
    assert result.mean_recall(STEPS) > result.mean_recall(STEPS_NEW_ITEMS)
    recall, cost = result.steps_against_retrain()
    assert recall > 0.9
    assert cost < 0.5  # the benchmark figure (README) is ~0.1; CPU time is noisy in CI
    assert result.update_seconds(RETRAIN) > 0


def test_the_streaming_report_has_the_table_the_ratios_and_a_plot(drifting_stream, tmp_path):
    out = write_streaming_report([drifting_stream], tmp_path, "stream")
    text = (out / "report.md").read_text()
    for strategy in STRATEGIES:
        assert f"| {strategy} |" in text
    assert "of **full retrain**'s Recall@20" in text
    assert (out / "streaming.png").stat().st_size > 10_000
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["als"][0]["dataset"] == "synthetic" and metrics["sessions"] == []
    assert len(metrics["als"][0]["blocks"][STEPS]) == 3
