"""The table every ranker trains and predicts on: one row per (request, candidate item).

The feature code (ranking.features) fills it the same way offline and online; rankers only
see arrays. Rows of one request are contiguous (`groups` is non-decreasing), which is what
LambdaMART's query groups and per-request metrics need.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RankingFrame:
    dense: np.ndarray  # float32 (n, F); NaN = missing (e.g. a generator did not find the item)
    dense_names: tuple[str, ...]
    sparse: np.ndarray  # int64 (n, S); categorical ids in [0, cardinality), 0 = unknown/missing
    sparse_names: tuple[str, ...]  # e.g. user, item, category, region
    sparse_cardinalities: tuple[int, ...]  # table size per sparse column (index 0 included)
    groups: np.ndarray  # int64 (n,): request number, non-decreasing
    labels: np.ndarray | None = None  # float32 (n,): 1 positive, 0 negative; None at serving

    def __post_init__(self) -> None:
        n = len(self.groups)
        if self.dense.shape != (n, len(self.dense_names)):
            raise ValueError(
                f"dense is {self.dense.shape}, expected ({n}, {len(self.dense_names)})"
            )
        if self.sparse.shape != (n, len(self.sparse_names)):
            raise ValueError(
                f"sparse is {self.sparse.shape}, expected ({n}, {len(self.sparse_names)})"
            )
        if len(self.sparse_cardinalities) != len(self.sparse_names):
            raise ValueError("one cardinality per sparse column")
        if self.labels is not None and self.labels.shape != (n,):
            raise ValueError(f"labels is {self.labels.shape}, expected ({n},)")
        if n and np.any(np.diff(self.groups) < 0):
            raise ValueError("rows of a request must be contiguous (groups non-decreasing)")

    def __len__(self) -> int:
        return len(self.groups)

    def group_sizes(self) -> np.ndarray:
        """Rows per request, in order (LightGBM's `group`)."""
        if not len(self.groups):
            return np.empty(0, dtype=np.int64)
        starts = np.flatnonzero(np.r_[True, self.groups[1:] != self.groups[:-1]])
        return np.diff(np.r_[starts, len(self.groups)]).astype(np.int64)

    def take(self, rows: np.ndarray) -> RankingFrame:
        """A subset of rows (keep them sorted by group to stay valid)."""
        return RankingFrame(
            dense=self.dense[rows],
            dense_names=self.dense_names,
            sparse=self.sparse[rows],
            sparse_names=self.sparse_names,
            sparse_cardinalities=self.sparse_cardinalities,
            groups=self.groups[rows],
            labels=None if self.labels is None else self.labels[rows],
        )


def rank_within_groups(groups: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Each row's place in its request by descending score (0 = best; ties by row order)."""
    order = np.lexsort((-scores, groups))
    sorted_groups = groups[order]
    rank = np.empty(len(groups), dtype=np.int64)
    rank[order] = np.arange(len(groups)) - np.searchsorted(sorted_groups, sorted_groups)
    return rank


def top_lists(
    groups: np.ndarray, scores: np.ndarray, values: np.ndarray, k: int, n_groups: int
) -> np.ndarray:
    """(n_groups, k): `values` of each request's best k rows by descending score, -1 padded;
    `groups` are dense request numbers 0..n_groups-1."""
    rank = rank_within_groups(groups, scores)
    top = rank < k
    lists = np.full((n_groups, k), -1, dtype=np.int64)
    lists[groups[top], rank[top]] = values[top]
    return lists
