"""The union keeps every source's score and rank (missing = NaN), with no loop over items."""

import numpy as np
import pytest

from recsys.arrays import distinct_and_slots, distinct_indices, is_member
from recsys.context import Candidates, union


def answer(name, ids, scores):
    return Candidates(np.array(ids, np.int64), np.array(scores, np.float32), name)


def test_union_keeps_scores_ranks_and_sources_per_generator():
    found = union([answer("a", [7, 3], [0.9, 0.5]), answer("b", [3, 9, 1], [5.0, 4.0, 3.0])])
    assert found.items.tolist() == [1, 3, 7, 9]
    assert found.names == ("a", "b")
    assert list(found.sources) == [("b",), ("a", "b"), ("a",), ("b",)]
    nan = np.nan
    np.testing.assert_allclose(found.scores, [[nan, 3.0], [0.5, 5.0], [0.9, nan], [nan, 4.0]])
    np.testing.assert_array_equal(found.ranks, [[nan, 2], [1, 0], [0, nan], [nan, 1]])
    kept = found.take(np.array([False, True, True, False]))
    assert kept.items.tolist() == [3, 7] and list(kept.sources) == [("a", "b"), ("a",)]


def test_union_of_nothing_is_empty():
    found = union([answer("a", [], []), answer("b", [], [])])
    assert len(found) == 0 and found.scores.shape == (0, 2)
    assert len(union([])) == 0


# The set helpers of candidates.base that the union and the generators build on.


def test_distinct_and_slots_is_np_unique_with_its_inverse():
    distinct, slots = distinct_and_slots(np.array([5, 2, 5, 9, 2], np.int32))
    assert distinct.tolist() == [2, 5, 9] and distinct.dtype == np.int32
    assert slots.tolist() == [1, 0, 1, 2, 0]
    assert distinct_indices(np.array([7, 0, 7], np.int64)).tolist() == [0, 7]
    nothing, no_slots = distinct_and_slots(np.empty(0, np.int64))
    assert len(nothing) == 0 and nothing.dtype == np.int64 and len(no_slots) == 0
    with pytest.raises(ValueError, match=">= 0"):
        distinct_indices(np.array([3, -1]))


def test_is_member_is_np_isin():
    values = np.array([[3, 7, 10], [0, 4, 3]])
    expected = [[True, False, False], [False, True, True]]
    assert is_member(values, np.array([4, 3, 4])).tolist() == expected
    assert is_member(np.array([1, 2]), np.empty(0, np.int64)).tolist() == [False, False]
    assert is_member(np.empty(0, np.int64), np.array([1])).shape == (0,)
