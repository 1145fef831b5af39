"""The NumPy row gathers agree with scipy's own row slicing."""

import numpy as np
import scipy.sparse as sp

from recsys.arrays import (
    SAMPLED_TOP_K_FROM,
    _above_sampled_threshold,
    rows_dot,
    rows_max_of,
    run_positions,
    top_k,
)


def test_run_positions_concatenates_slices() -> None:
    assert run_positions(np.array([5, 0, 9]), np.array([2, 0, 3])).tolist() == [5, 6, 9, 10, 11]


def test_rows_dot_and_max_match_scipy_on_random_rows() -> None:
    rng = np.random.default_rng(3)
    matrix = sp.random(200, 30, density=0.1, format="csr", random_state=4, dtype=np.float64)
    rows = rng.integers(0, 200, size=500)  # repeats and empty rows included
    vector = rng.random(30)
    np.testing.assert_allclose(rows_dot(matrix, rows, vector), matrix[rows] @ vector)
    members = matrix.astype(bool)
    expected = members[rows].multiply(vector[None, :]).max(axis=1).toarray().ravel()
    np.testing.assert_allclose(rows_max_of(members, rows, vector), expected)
    assert (rows_max_of(members, rows, vector)[np.diff(members.indptr)[rows] == 0] == 0).all()
    assert rows_dot(matrix, rows[:0], vector).shape == (0,)


def test_top_k_over_a_large_array_is_exact_whatever_the_order_of_its_scores() -> None:
    """top_k narrows large arrays by a threshold from a strided sample: it must give the same
    items as a full sort, in the same order, for any order of the scores, ties and
    excluded (-inf) items included, and for any k."""
    random = np.random.default_rng(0)
    n = SAMPLED_TOP_K_FROM * 3
    base = random.standard_normal(n).astype(np.float32)
    cases = {
        "random": base,
        "sorted": np.sort(base),  # the sample sees a trend
        "reverse sorted": np.sort(base)[::-1].copy(),
        "best items in one block": np.where(np.arange(n) // 1000 == 7, base + 10, base),
        "best items on the sample's stride": np.where(np.arange(n) % 29 == 0, base + 10, base),
        "ties": np.round(base, 1),
        "mostly excluded": np.where(random.random(n) < 0.9, -np.inf, base).astype(np.float32),
    }
    assert _above_sampled_threshold(base, 300) is not None  # the narrowed path is the one tested
    for name, scores in cases.items():
        for k in (1, 10, 300, 5000):
            expected = np.argsort(-scores, kind="stable")[:k]
            found = top_k(scores, k)
            assert len(found) == k, name
            # the same scores in the same order; among equal scores any item may come first
            np.testing.assert_array_equal(scores[found], scores[expected], err_msg=f"{name} {k}")
            assert len(set(found.tolist())) == k, name
