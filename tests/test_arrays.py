"""The NumPy row gathers agree with scipy's own row slicing."""

import numpy as np
import scipy.sparse as sp

from recsys.arrays import rows_dot, rows_max_of, run_positions


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
