"""The union keeps every source's score and rank (missing = NaN), with no loop over items."""

import numpy as np

from candidates.base import Candidates
from candidates.union import union


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
