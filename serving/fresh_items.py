"""Items new since the nightly's bundle, recommendable before the next nightly.

The nearline worker gives an item that only the event log knows a vector from its first
users (seed 004, "Пошагаем": the item step). Two ways serve it:

- Every `nearline.join_seconds` the items the worker has vectors for join the bundle in
  service (`new_items_of` here, `LoadedBundle.grown`, serving/holder.py): the ANN index finds
  them and the whole cascade ranks them with the catalogue's items.
- `nearline.fresh_slots` reserves slots of each list, from `fresh_position`, for items new
  since the nightly (joined or not yet): the fresh items with the best iALS score u·v for the
  request's user vector, among those it scores above 0 (iALS does not think the user would
  rather not), and not already in the list. Items the request or the session excludes are
  skipped. What a shopper sees is marked: stage "fresh", source "nearline".

A reserved slot, like `rules.fresh_quota`, rather than only the contest with the ranked
items: a new item's vector comes from a handful of users, so its norm (in iALS, popularity)
is small, and by u·v it loses to most established items (measured: new items bought by a
user's five nearest neighbours scored below the 50th item of every list). Like any business
rule this trades the rankers' order for a goal (new items get seen), so it is off by
default.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys.ids import IdMap
from recsys.loaded_bundle import LoadedBundle
from recsys.new_items import NewItems
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
        self._fresh = unknown_items(vectors, self.known, self.factors)
        self._seen = changed
        return self._fresh


def unknown_items(
    vectors: dict[str, np.ndarray], known: IdMap, factors: int
) -> tuple[np.ndarray, np.ndarray]:
    """(ids, (n, factors) float32 vectors) of the store's items that `known` does not hold,
    in the store's order (`_usable`: vectors that do not fit are ignored)."""
    ids, indices, matrix = _usable(vectors, known, factors)
    unknown = indices < 0
    return ids[unknown], matrix[unknown]


def new_items_of(
    source: UserVectors, bundle: LoadedBundle, joined: int, limit: int
) -> NewItems | None:
    """What joins the bundle next (recsys/new_items.py): the store's items the bundle does
    not know, at most `limit` of them, those with the largest vectors (in iALS the norm
    grows with an item's users), so that ids logged by the million cannot grow a serving
    process without bound before the nightly; and the items it knows whose vector the
    worker stepped since. None if nothing is new."""
    factors = bundle.als.model.item_factors
    ids, indices, matrix = _usable(source.item_vectors()[1], bundle.items, factors.shape[1])
    unknown = np.flatnonzero(indices < 0)
    if len(unknown) > limit:
        norms = np.linalg.norm(matrix[unknown], axis=1)
        unknown = np.sort(unknown[np.argsort(-norms, kind="stable")[:limit]])
    known = np.flatnonzero(indices >= 0)
    stepped = known[(matrix[known] != factors[indices[known]]).any(axis=1)]
    if not len(unknown) and not len(stepped):
        return None
    return NewItems(
        ids[unknown], matrix[unknown], len(bundle.items), joined, indices[stepped], matrix[stepped]
    )


def _usable(
    vectors: dict[str, np.ndarray], known: IdMap, factors: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, their indices in `known` (-1: not there), (n, factors) float32 vectors) of the
    store's vectors of the bundle's width with finite entries, in the store's order: a store
    written for another model, or damaged, must not break serving."""
    snapshot = dict(vectors)  # one C call: atomic against the store's updates
    usable = [
        (item, vector)
        for item, vector in snapshot.items()
        if vector.shape == (factors,) and np.isfinite(vector).all()
    ]
    if not usable:
        return np.empty(0, object), np.empty(0, np.int64), np.empty((0, factors), np.float32)
    ids = np.array([item for item, _ in usable], dtype=object)
    matrix = np.array([vector for _, vector in usable], np.float32)
    return ids, known.to_index(ids).astype(np.int64), matrix
