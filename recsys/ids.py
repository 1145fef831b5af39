"""Persistent external-id -> dense-index maps.

Indices are positions in `ids`; extending a map appends, so an index once given never
changes. Lookups are vectorised through a pandas Index (hash table), -1 for unknown ids.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

UNKNOWN = -1


@dataclass(frozen=True)
class IdMap:
    ids: np.ndarray  # object array of str, index -> external id
    _index: pd.Index = field(repr=False, compare=False)

    @classmethod
    def from_values(cls, values: Iterable[object], base: IdMap | None = None) -> IdMap:
        """Map of the distinct values (first-appearance order), appended to `base` if given."""
        if isinstance(getattr(values, "dtype", None), pd.CategoricalDtype):
            # 20M categorical ids: distinct codes first, then strings for those only
            series = pd.Series(values)
            codes = pd.unique(series.cat.codes.to_numpy())
            categories = np.asarray(series.cat.categories)[codes[codes >= 0]]
            fresh = pd.unique(pd.Series(categories).astype(str).to_numpy())
        else:
            fresh = pd.unique(pd.Series(np.asarray(values)).astype(str).to_numpy())
        if base is None:
            ids = np.asarray(fresh, dtype=object)
        else:
            new = fresh[base.to_index(fresh) == UNKNOWN]
            ids = np.concatenate([base.ids, np.asarray(new, dtype=object)])
        return cls(ids=ids, _index=pd.Index(ids))

    def __len__(self) -> int:
        return len(self.ids)

    def to_index(self, external: Iterable[object]) -> np.ndarray:
        """int64 indices of external ids; UNKNOWN (-1) where an id is not in the map."""
        if isinstance(getattr(external, "dtype", None), pd.CategoricalDtype):
            series = pd.Series(external)  # look up each category once, then index by codes
            by_category = self.to_index(np.asarray(series.cat.categories))
            codes = series.cat.codes.to_numpy()
            return np.where(codes >= 0, by_category[codes], UNKNOWN).astype(np.int64)
        values = np.asarray(external if hasattr(external, "__len__") else list(external))
        if not len(values):  # most requests carry no exclusions/basket: skip pandas entirely
            return np.empty(0, dtype=np.int64)
        return self._index.get_indexer(pd.Index(values.astype(str))).astype(np.int64)

    def index_of(self, external: str) -> int:
        """Index of one id, UNKNOWN if absent."""
        try:
            return int(self._index.get_loc(external))
        except KeyError:
            return UNKNOWN

    def to_external(self, indices: np.ndarray) -> np.ndarray:
        return self.ids[np.asarray(indices, dtype=np.int64)]

    def save(self, path: Path) -> None:
        pq.write_table(pa.table({"id": pa.array(self.ids.tolist(), pa.string())}), path)

    @classmethod
    def load(cls, path: Path) -> IdMap:
        ids = np.asarray(pq.read_table(path).column("id").to_pylist(), dtype=object)
        return cls(ids=ids, _index=pd.Index(ids))
