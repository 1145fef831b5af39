"""Items the event log brought since a bundle, joined to it in serving (issue "Near-realtime
ALS steps": new items reach the cascade before the next nightly).

The nearline worker gives an item only the log knows an iALS vector from its first users
(seed 004, "Пошагаем": the item step). A serving process then grows its bundle: the new
items get the next indices, and every bundle component appends what it holds per item for
them (`Component.grow`), so the whole cascade serves them as it serves the catalogue's own:
the ANN index finds them, the filters and rules read their defaults, the features and
rankers score them, the live tops count them.

What a new item is given is what minimal item files give an item (README, "Bring your own
data"): in stock, sold everywhere, no categories, no title, unknown price, created when it
joined (after the bundle's "now": the features give it a negative age, newer than any item
the rankers learnt from); and nothing learnt beyond its vector: no neighbour lists, no
counts before it joined, no eALS or EASE rows. The next nightly learns it properly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True)
class NewItems:
    """The items that join, and the vectors the worker stepped again for items the bundle
    knows (hot ones: seed 004, "Пошагаем"; `nearline.item_step_events`), which serving
    takes at the same time: the users' fresh vectors were solved against them."""

    ids: np.ndarray  # object (str): their external ids, in the order they get indices
    vectors: np.ndarray  # (n, f) float32: their iALS vectors (the nearline's item step)
    first: int  # the index of the first one: the catalogue's size before them
    joined: int  # Unix seconds they joined: their "created at"
    stepped: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # known items
    stepped_vectors: np.ndarray | None = None  # (len(stepped), f) float32; None: none

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2 or len(self.vectors) != len(self.ids):
            raise ValueError(
                f"new items: {len(self.ids)} ids but vectors of shape {self.vectors.shape}"
            )
        stepped = self.stepped_vectors
        if stepped is None:
            empty = np.empty((0, self.vectors.shape[1]), np.float32)
            object.__setattr__(self, "stepped_vectors", empty)
        elif stepped.shape != (len(self.stepped), self.vectors.shape[1]):
            raise ValueError(
                f"new items: {len(self.stepped)} stepped items, vectors {stepped.shape}"
            )
        if len(self.stepped) and (
            self.stepped.min() < 0
            or self.stepped.max() >= self.first
            or len(np.unique(self.stepped)) != len(self.stepped)
        ):
            raise ValueError("new items: stepped items must be distinct items the bundle knows")
        if not (np.isfinite(self.vectors).all() and np.isfinite(self.stepped_vectors).all()):
            raise ValueError("new items: vectors must be finite")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def end(self) -> int:
        """The catalogue's size with them."""
        return self.first + len(self)

    def rows(self, array: np.ndarray, fill: object, axis: int = 0) -> np.ndarray:
        """`array` (one entry per item along `axis`) with an entry `fill` per new item."""
        if array.shape[axis] != self.first:
            raise ValueError(
                f"new items: an array of {array.shape[axis]} items along axis {axis}, "
                f"the catalogue has {self.first}"
            )
        shape = list(array.shape)
        shape[axis] = len(self)
        return np.concatenate([array, np.full(shape, fill, dtype=array.dtype)], axis=axis)

    def csr_rows(self, matrix: sp.csr_matrix) -> sp.csr_matrix:
        """An item-by-x CSR matrix with an empty row per new item."""
        matrix = matrix.tocsr()
        if matrix.shape[0] != self.first:
            raise ValueError(f"new items: a matrix of {matrix.shape[0]} items, not {self.first}")
        indptr = np.concatenate([matrix.indptr, np.full(len(self), matrix.indptr[-1])])
        return sp.csr_matrix(
            (matrix.data, matrix.indices, indptr), shape=(self.end, matrix.shape[1])
        )

    def csr_columns(self, matrix: sp.csr_matrix) -> sp.csr_matrix:
        """An x-by-item CSR matrix with an empty column per new item."""
        matrix = matrix.tocsr()
        if matrix.shape[1] != self.first:
            raise ValueError(f"new items: a matrix of {matrix.shape[1]} items, not {self.first}")
        return sp.csr_matrix(
            (matrix.data, matrix.indices, matrix.indptr), shape=(matrix.shape[0], self.end)
        )
