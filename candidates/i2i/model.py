"""The i2i lists of one bundle: built offline (candidates.i2i.builders), saved, loaded and
looked up at request time."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from candidates.i2i.builders import (
    als_neighbors,
    content_neighbors,
    cosine_neighbors,
    covisit_neighbors,
    item_popularity,
    npmi_neighbors,
)
from candidates.i2i.lists import NeighborLists, TieOrder
from recsys.arrays import (
    checked_item_vectors,
    distinct_and_slots,
    row_entries,
    unit_rows,
)
from recsys.components import Component, register_component
from recsys.config import I2I_KINDS, I2IConfig
from recsys.interactions import TrainingData
from recsys.new_items import NewItems

log = logging.getLogger(__name__)

META_FILE = "i2i.json"
LIST_FILE = "i2i_{kind}.npz"
FACTORS_FILE = "i2i_unit_factors.npy"
CATEGORIES_FILE = "i2i_categories.npz"


@dataclass(frozen=True)
class I2IModel:
    """Neighbour lists per kind, plus what seed diversity needs: unit ALS factors if there
    are any, else the item categories (see `similarity`)."""

    lists: dict[str, NeighborLists]
    unit_factors: np.ndarray | None = None  # (n_items, f) float32, zero rows for unseen items
    item_categories: sp.csr_matrix | None = None  # bool (n_items, n_categories)

    def __post_init__(self) -> None:
        if self.unit_factors is None and self.item_categories is None:
            raise ValueError("I2IModel needs unit_factors or item_categories for seed diversity")
        unknown = sorted(set(self.lists) - set(I2I_KINDS))
        if unknown:
            raise ValueError(f"unknown i2i kind {unknown[0]!r}; known: {', '.join(I2I_KINDS)}")
        sizes = {len(lists.ids) for lists in self.lists.values()}
        sizes.add(self.n_items)
        if len(sizes) > 1:
            raise ValueError(f"i2i lists and item data disagree on the item count: {sizes}")

    @classmethod
    def build(
        cls,
        data: TrainingData,
        item_factors: np.ndarray | None,
        config: I2IConfig,
        kinds: tuple[str, ...] = I2I_KINDS,
        show_progress: bool = False,
    ) -> I2IModel:
        """All `kinds` of lists; "als" is skipped when there are no item factors."""
        unknown = sorted(set(kinds) - set(I2I_KINDS))
        if unknown:
            raise ValueError(f"unknown i2i kind {unknown[0]!r}; known: {', '.join(I2I_KINDS)}")
        n_items = len(data.items)
        unit = (
            None if item_factors is None else unit_rows(checked_item_vectors(item_factors, n_items))
        )
        order = TieOrder.by_popularity(item_popularity(data))
        builders = {
            "als": lambda: als_neighbors(unit, config.neighbors, show_progress),
            "npmi": lambda: npmi_neighbors(data, config, order, show_progress),
            "content": lambda: content_neighbors(data, config, order, show_progress),
            "cosine": lambda: cosine_neighbors(data, config, order, show_progress),
            "covisit": lambda: covisit_neighbors(data, config, order, show_progress),
        }
        lists = {}
        for kind in kinds:
            if kind == "als" and unit is None:
                log.info("i2i: no ALS factors, no 'als' lists")
                continue
            started = time.perf_counter()
            lists[kind] = builders[kind]()
            filled = float((lists[kind].ids >= 0).sum(axis=1).mean()) if n_items else 0.0
            log.info(
                "i2i %s lists: %d items, %.1f neighbours on average, %.1f s",
                kind,
                n_items,
                filled,
                time.perf_counter() - started,
            )
        categories = None if unit is not None else data.item_categories.tocsr()
        return cls(lists=lists, unit_factors=unit, item_categories=categories)

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(kind for kind in I2I_KINDS if kind in self.lists)

    @property
    def n_items(self) -> int:
        source = self.unit_factors if self.unit_factors is not None else self.item_categories
        return source.shape[0]

    def list_length(self, kind: str) -> int:
        return self._lists(kind).ids.shape[1]

    def neighbors(
        self, kind: str, items: np.ndarray, per_item: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The first `per_item` neighbours of each item: ((len(items), per_item) int64 ids
        padded with -1, float32 scores padded with -inf)."""
        lists = self._lists(kind)
        items = self._checked_items(items)
        if per_item < 0:
            raise ValueError(f"per_item must be >= 0, got {per_item}")
        ids, scores = lists.ids[items, :per_item], lists.scores[items, :per_item]
        missing = per_item - ids.shape[1]
        if missing > 0:
            ids = np.pad(ids, ((0, 0), (0, missing)), constant_values=-1)
            scores = np.pad(scores, ((0, 0), (0, missing)), constant_values=-np.inf)
        return ids, scores

    def similarity(self, items: np.ndarray) -> np.ndarray:
        """(n, n) float32 similarity among `items`, for seed diversity: cosine of the ALS
        factors when the model has them, else Jaccard of the category sets."""
        items = self._checked_items(items)
        if self.unit_factors is not None:
            vectors = self.unit_factors[items]
            return vectors @ vectors.T
        # The items' category rows gathered straight from the CSR arrays: a request looks at
        # ~20 items, where scipy's fancy indexing would cost more than the arithmetic.
        positions, lengths = row_entries(self.item_categories, items)
        categories = self.item_categories.indices[positions]
        present, column = distinct_and_slots(categories)
        member = np.zeros((len(items), len(present)), dtype=np.float32)
        member[np.repeat(np.arange(len(items)), lengths), column] = 1.0
        inter = member @ member.T
        size = np.diag(inter)
        union = size[:, None] + size[None, :] - inter
        return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)

    def grown(self, new: NewItems) -> I2IModel:
        """New items with empty neighbour lists (no one's co-occurrence is known yet) and
        their unit vectors for seed diversity (none of their categories are known)."""
        lists = {
            kind: NeighborLists(new.rows(lists.ids, -1), new.rows(lists.scores, -np.inf))
            for kind, lists in self.lists.items()
        }
        if self.unit_factors is None:
            return I2IModel(lists, item_categories=new.csr_rows(self.item_categories))
        unit = new.rows(self.unit_factors, 0.0)
        unit[new.first :] = unit_rows(new.vectors.astype(unit.dtype))
        unit[new.stepped] = unit_rows(new.stepped_vectors.astype(unit.dtype))
        return I2IModel(lists, unit_factors=unit)

    def save(self, directory: Path) -> None:
        meta = {"kinds": list(self.kinds), "n_items": self.n_items}
        (directory / META_FILE).write_text(json.dumps(meta))
        for kind, lists in self.lists.items():
            np.savez(directory / LIST_FILE.format(kind=kind), ids=lists.ids, scores=lists.scores)
        if self.unit_factors is not None:
            np.save(directory / FACTORS_FILE, self.unit_factors)
        else:
            sp.save_npz(directory / CATEGORIES_FILE, self.item_categories)

    @classmethod
    def load(cls, directory: Path) -> I2IModel:
        meta = json.loads((directory / META_FILE).read_text())
        lists = {}
        for kind in meta["kinds"]:
            with np.load(directory / LIST_FILE.format(kind=kind)) as stored:
                lists[kind] = NeighborLists(ids=stored["ids"], scores=stored["scores"])
        if (directory / FACTORS_FILE).exists():
            model = cls(lists=lists, unit_factors=np.load(directory / FACTORS_FILE))
        else:
            categories = sp.load_npz(directory / CATEGORIES_FILE).tocsr()
            model = cls(lists=lists, item_categories=categories)
        if model.n_items != meta["n_items"]:
            raise ValueError(
                f"{directory}: i2i data holds {model.n_items} items, {META_FILE} says "
                f"{meta['n_items']}"
            )
        return model

    def _lists(self, kind: str) -> NeighborLists:
        if kind not in self.lists:
            raise ValueError(f"no i2i {kind!r} lists; built kinds: {', '.join(self.kinds)}")
        return self.lists[kind]

    def _checked_items(self, items: np.ndarray) -> np.ndarray:
        items = np.asarray(items, dtype=np.int64)
        if items.size and (items.min() < 0 or items.max() >= self.n_items):
            raise ValueError(f"item index out of range [0, {self.n_items}): {items}")
        return items


register_component(
    Component(
        "i2i",
        fit=lambda given: I2IModel.build(
            given.data, given.built["ials"].item_factors, given.config.i2i
        ),
        load=lambda directory, config: I2IModel.load(directory),
        after=("ials",),
        step="i2i lists",
        grow=I2IModel.grown,
    )
)
