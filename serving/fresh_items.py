"""Items new since the bundle, recommendable before the next nightly (`nearline.fresh_slots`).

The nearline worker gives an item that only the event log knows a vector from its first
users (seed 004, "Пошагаем": the item step). The bundle's catalogue, ANN index and rankers
do not know the item until the next nightly, so it cannot go through the cascade; instead
up to `fresh_slots` of them join a list after ranking, at `fresh_position`: the fresh items
with the best iALS score u·v for the request's user vector, among those it scores above 0
(iALS does not think the user would rather not). Items the request or the session excludes
are skipped. What a shopper sees is marked: stage "fresh", source "nearline".

A reserved slot, like `rules.fresh_quota`, rather than a contest with the ranked items: a
new item's vector comes from a handful of users, so its norm (in iALS, popularity) is
small, and by u·v it would lose to any established item (measured: new items bought by a
user's five nearest neighbours scored below the 50th item of every list). Like any business
rule this trades the rankers' order for a goal (new items get seen), so it is off by
default.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys.ids import IdMap
from serving.user_vectors import UserVectors


@dataclass(frozen=True)
class FreshPick:
    item_id: str
    score: float  # u·v


class FreshItems:
    """The store's item vectors that the bundle does not know, as one matrix, rebuilt only
    when the store's items change."""

    def __init__(self, source: UserVectors, known: IdMap, factors: int) -> None:
        self.source = source
        self.known = known
        self.factors = factors
        self._seen = -1
        # (ids, vectors) swapped as one tuple: a request never sees ids of one and vectors
        # of the other
        self._fresh = (np.empty(0, dtype=object), np.empty((0, factors), np.float32))

    def pick(self, user_vector: np.ndarray, slots: int, excluded: set[str]) -> list[FreshPick]:
        """The best `slots` fresh items for the user, best first (u·v > 0 only)."""
        ids, vectors = self._current()
        if not len(ids) or slots <= 0:
            return []
        scores = vectors @ user_vector
        order = np.argsort(-scores, kind="stable")
        picks = []
        for row in order:
            if scores[row] <= 0 or len(picks) == slots:
                break
            if ids[row] not in excluded:
                picks.append(FreshPick(str(ids[row]), float(scores[row])))
        return picks

    def _current(self) -> tuple[np.ndarray, np.ndarray]:
        changed, vectors = self.source.item_vectors()
        if changed == self._seen:
            return self._fresh
        snapshot = dict(vectors)  # one C call: atomic against the store's updates
        fresh = [
            (item, vector)
            for item, vector in snapshot.items()
            if vector.shape == (self.factors,)
            and np.isfinite(vector).all()
            and self.known.index_of(item) < 0
        ]
        self._fresh = (
            np.array([item for item, _ in fresh], dtype=object),
            np.array([vector for _, vector in fresh], np.float32)
            if fresh
            else np.empty((0, self.factors), np.float32),
        )
        self._seen = changed
        return self._fresh
