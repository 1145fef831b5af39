"""Sessions, the reservoir and active sampling of seed 003's streaming session recommenders."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from candidates.session.reservoir import Reservoir
from candidates.session.sampling import (
    active_sample,
    active_sampling_probabilities,
    prediction_scores,
)
from candidates.session.sessions import Sessions, split_sessions


def test_sessions_are_cut_at_long_gaps_and_odd_lengths_left_out() -> None:
    # user 1: [10, 11, 12] gap [13] gap [14, 15]; user 0: [20, 21] then 22 items in a row
    users = [1, 1, 1, 1, 1, 1, 0, 0] + [0] * 22
    items = [10, 11, 12, 13, 14, 15, 20, 21, *range(100, 122)]
    times = [100, 130, 160, 1000, 5000, 5050, 90, 95, *range(9000, 9022)]
    found = split_sessions(users, items, times, timeout_seconds=60, min_length=2, max_length=20)
    # [13] is too short, the 22-item run too long; the rest in order of start: user 0 first
    assert [found[s].tolist() for s in range(len(found))] == [[20, 21], [10, 11, 12], [14, 15]]
    assert found.users.tolist() == [0, 1, 1]
    assert found.starts.tolist() == [90, 100, 5000]
    assert found.ends.tolist() == [95, 160, 5050]
    assert found.lengths.tolist() == [2, 3, 2]


def test_sessions_follow_time_not_input_order_and_keep_repeats() -> None:
    found = split_sessions([5, 5, 5], [3, 1, 3], [30, 10, 20], timeout_seconds=60)
    assert found[0].tolist() == [1, 3, 3]
    assert len(split_sessions([], [], [], 60)) == 0


def test_taking_sessions_keeps_their_items() -> None:
    found = split_sessions([0, 0, 1, 1, 1], [1, 2, 3, 4, 5], [0, 1, 2, 3, 4], 60)
    taken = found.take(np.array([1, 0]))
    assert isinstance(taken, Sessions)
    assert [taken[s].tolist() for s in range(2)] == [[3, 4, 5], [1, 2]]
    assert taken.users.tolist() == [1, 0]


def inclusion_counts(capacity: int, stream: int, runs: int, keep_first: bool = False) -> np.ndarray:
    counts = np.zeros(stream, np.int64)
    for run in range(runs):
        if keep_first:  # a biased "reservoir" that never replaces: the test must reject it
            counts[:capacity] += 1
            continue
        reservoir: Reservoir[int] = Reservoir(capacity, seed=run)
        reservoir.extend(range(stream))
        assert len(reservoir) == capacity and reservoir.seen == stream
        counts[reservoir.held] += 1
    return counts


def uniformity_p_value(counts: np.ndarray, buckets: int = 10) -> float:
    """Chi-square of how often each tenth of the stream was held against an even share."""
    per_bucket = counts.reshape(buckets, -1).sum(axis=1)
    return float(stats.chisquare(per_bucket).pvalue)


def test_the_reservoir_holds_every_session_of_a_long_stream_alike() -> None:
    """Algorithm R: each of t sessions is held with probability R / t, whatever its place."""
    capacity, stream, runs = 50, 2000, 300
    counts = inclusion_counts(capacity, stream, runs)
    assert counts.sum() == capacity * runs
    assert uniformity_p_value(counts) > 0.01
    # every position's share is near R / t = 0.025 (300 runs: the mean over 200 positions)
    shares = counts.reshape(10, -1).mean(axis=1) / runs
    np.testing.assert_allclose(shares, capacity / stream, rtol=0.15)
    # the same test rejects a reservoir that keeps the first sessions only
    assert uniformity_p_value(inclusion_counts(capacity, stream, 20, keep_first=True)) < 1e-6


def test_a_reservoir_needs_room() -> None:
    with pytest.raises(ValueError, match="capacity"):
        Reservoir(0)


def test_active_sampling_prefers_the_sessions_the_model_predicts_worst() -> None:
    # ranked by score, decreasing: 0.9 (rank 1), 0.5 (rank 2), 0.1 (rank 3); p = rank / 6
    np.testing.assert_allclose(
        active_sampling_probabilities([0.9, 0.1, 0.5]), [1 / 6, 3 / 6, 2 / 6]
    )
    # ties: the earlier session ranks first (lower probability)
    np.testing.assert_allclose(active_sampling_probabilities([1.0, 1.0]), [1 / 3, 2 / 3])
    with pytest.raises(ValueError, match="finite"):
        active_sampling_probabilities([0.1, np.nan])


def test_prediction_scores_are_the_mean_mf_score_of_a_sessions_items() -> None:
    sessions = split_sessions([0, 0, 1, 1, 1], [0, 1, 0, 1, 2], [0, 1, 2, 3, 4], 60)
    items = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    users = np.array([[2.0, 0.0], [1.0, 3.0]])  # one row per session
    # session 0: items 0, 1 for u=(2, 0): (2 + 0) / 2; session 1: items 0, 1, 2 for u=(1, 3):
    # (1 + 3 + 4) / 3
    np.testing.assert_allclose(prediction_scores(sessions, users, items), [1.0, 8 / 3])


def test_active_samples_are_distinct_and_follow_the_probabilities() -> None:
    random = np.random.default_rng(0)
    scores = np.array([3.0, 2.0, 1.0, 0.0])  # probabilities 0.1, 0.2, 0.3, 0.4
    drawn = np.concatenate([active_sample(scores, 1, random) for _ in range(4000)])
    np.testing.assert_allclose(
        np.bincount(drawn, minlength=4) / 4000, [0.1, 0.2, 0.3, 0.4], atol=0.03
    )
    two = active_sample(scores, 2, random)
    assert len(set(two.tolist())) == 2
    assert len(active_sample(scores, 10, random)) == 4
