"""The stored form of the i2i lists and their tie-break (candidates.i2i.builders makes them).

Every list is a dense (n_items, neighbors) int64 id matrix padded with -1 and a float32
score matrix padded with -inf; an item is never in its own list. Ties are broken by item
popularity (number of positive events), then by index, so lists are deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NeighborLists:
    ids: np.ndarray  # (n_items, neighbors) int64, -1 padded
    scores: np.ndarray  # (n_items, neighbors) float32, -inf padded

    def __post_init__(self) -> None:
        if self.ids.ndim != 2 or self.ids.shape != self.scores.shape:
            raise ValueError(
                f"neighbour lists: ids {self.ids.shape} and scores {self.scores.shape} differ"
            )

    @classmethod
    def empty(cls, n_items: int, k: int) -> NeighborLists:
        return cls(np.full((n_items, k), -1, np.int64), np.full((n_items, k), -np.inf, np.float32))


@dataclass(frozen=True)
class TieOrder:
    """Items by popularity (descending), then index: the tie-break of every list."""

    rank: np.ndarray  # int64 per item: its position in that order
    items: np.ndarray  # int64: the items in that order

    @classmethod
    def by_popularity(cls, popularity: np.ndarray) -> TieOrder:
        items = np.lexsort((np.arange(len(popularity)), -popularity)).astype(np.int64)
        rank = np.empty_like(items)
        rank[items] = np.arange(len(items))
        return cls(rank=rank, items=items)
