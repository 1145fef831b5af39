"""Quorums (seed 004, "Кворумы"): personal candidates from per-category tops, TF-IDF style.

"пользователей будем считать "документами", а их айтемы-позитивы – "термами"", folded over
item categories so that the construction carries over to items outside training:

    score(user, item) = Σ_c TF(item, c) · UF(user, c) · IDF(c)
    UF(user, c)  = share of the user's distinct positive items that belong to c   (in [0, 1])
    TF(item, c)  = Σ_{user ∈ U(item)} UF(user, c) / |U(item)|,  U(item): users with a positive
    IDF(c)       = min(-log mean_user UF(user, c), γ)

Choices the lecture leaves open, made here:
- the IDF mean runs over ALL users of the training data; users without positives count as
  UF = 0; a category nobody likes (mean 0, -log = +inf) gets IDF = γ;
- items without categories still count in a user's share denominator (they are positives);
- OUR EXTENSION (not in the lecture): an item with no positive users has no TF by the
  formula; it gets a content prior: for each of its categories c, the mean TF(j, c) of the
  warm items j that belong to c (the mean over all warm (item, own category) pairs where c
  has no warm item). New items thus enter the category tops mid-pack and can be scored,
  without flooding them (a plain 1/|categories| prior outranked most warm items);
- a user the model has not seen (or seen without positives) gets UF computed on the fly
  from the request: the history if any, else basket ∪ favourites, with the same definition.

At runtime ("берут из каждого топа по N документов, считают для объединения эту функцию и
берут топ"): the user's `max_categories` categories by UF, `per_category` items from each
category's TF top, the union scored by the full sum over ALL the user's categories.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from candidates.base import register_generator
from recsys.arrays import NO_ITEMS, distinct_indices, rows_dot, run_positions, top_k
from recsys.components import Component, register_component
from recsys.config import QuorumConfig
from recsys.context import Candidates, RequestContext
from recsys.interactions import TrainingData

FILE = "quorum.npz"
NO_WEIGHTS = np.empty(0, dtype=np.float64)
# TF is also kept dense (see QuorumModel.score) when at least this share of its entries is
# stored: the dense float32 array is then no bigger than the CSR's data and indices.
DENSE_TF_MIN_DENSITY = 0.5
# A sparse TF is read by category (binary search of the items in each of the user's
# categories) for users with at most this many categories, else row by row. Per category
# the search reads one small column, the row gather one scattered entry per item. On the
# 100k-item shop (200 categories, 700 items, caches cold; bench/bench_quorum.py): 0.15 / 0.18
# vs 0.26 ms at 1 / 2 categories, even at 3, 0.44 vs 0.27 at 5. Shop users have 1.5 on average.
COLUMN_LOOKUP_MAX_CATEGORIES = 2


@dataclass(frozen=True)
class QuorumModel:
    uf: sp.csr_matrix  # float32 (n_users, n_categories): UF(user, c)
    tf: sp.csr_matrix  # float32 (n_items, n_categories): TF(item, c), cold items: content prior
    idf: np.ndarray  # float32 (n_categories,)
    item_categories: sp.csr_matrix  # bool (n_items, n_categories): UF of users not in training
    top_items: np.ndarray  # int64: each category's best items by TF, best first, concatenated
    top_offsets: np.ndarray  # int64 (n_categories + 1,): c's top is top_items[o[c] : o[c + 1]]
    # TF transposed to a dense (n_categories, n_items) array if dense enough, else None
    tf_by_category: np.ndarray | None = field(init=False, repr=False, compare=False)
    # TF transposed, sparse: category c's items (ascending, int64) and TF values are
    # tf_columns.indices / .data[indptr[c] : indptr[c + 1]]; None when tf_by_category is kept
    tf_columns: sp.csr_matrix | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n_categories = len(self.idf)
        shapes = {
            "uf": self.uf.shape[1],
            "tf": self.tf.shape[1],
            "item_categories": self.item_categories.shape[1],
            "top_offsets": len(self.top_offsets) - 1,
        }
        bad = {name: n for name, n in shapes.items() if n != n_categories}
        if bad:
            raise ValueError(f"quorum: {len(self.idf)} IDF categories but {bad}")
        if self.tf.shape[0] != self.item_categories.shape[0]:
            raise ValueError(
                f"quorum: TF has {self.tf.shape[0]} items, categories "
                f"{self.item_categories.shape[0]}"
            )
        if self.top_offsets[-1] != len(self.top_items):
            raise ValueError("quorum: top_offsets do not end at len(top_items)")
        dense = _dense_by_category(self.tf)
        object.__setattr__(self, "tf_by_category", dense)
        object.__setattr__(self, "tf_columns", None if dense is not None else _columns(self.tf))

    @property
    def n_users(self) -> int:
        return self.uf.shape[0]

    @property
    def n_items(self) -> int:
        return self.tf.shape[0]

    @classmethod
    def fit(cls, data: TrainingData, config: QuorumConfig) -> QuorumModel:
        n_items = len(data.items)
        if data.item_categories.shape[0] != n_items:
            raise ValueError(
                f"quorum: item_categories has {data.item_categories.shape[0]} rows, {n_items} items"
            )
        categories = data.item_categories.tocsr().astype(np.float64)
        categories.eliminate_zeros()
        positives = _positive_matrix(data)  # 1 per distinct (user, item) positive
        # seed 004, "Кворумы": UF(user, c) = share of the user's positive items lying in c
        uf = _row_normalised(positives) @ categories
        # TF(item, c) = Σ_{u ∈ U(item)} UF(u, c) / |U(item)|
        tf = _row_normalised(positives.T.tocsr()) @ uf
        # OUR EXTENSION: items nobody liked get the mean TF of warm items in their categories
        cold = np.bincount(positives.indices, minlength=n_items) == 0
        tf = (tf + _cold_item_prior(tf, categories, cold)).tocsr()
        tf = _float32_canonical(tf)
        return cls(
            uf=_float32_canonical(uf.tocsr()),
            tf=tf,
            idf=_idf(uf, len(data.users), config.gamma),
            item_categories=data.item_categories.tocsr().astype(bool),
            **_category_tops(tf, config.depth),
        )

    def user_weights(self, user_index: int) -> tuple[np.ndarray, np.ndarray]:
        """The stored UF row of a training user: (categories int64, UF float64)."""
        row = slice(self.uf.indptr[user_index], self.uf.indptr[user_index + 1])
        return self.uf.indices[row].astype(np.int64), self.uf.data[row].astype(np.float64)

    def weights_from_items(self, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """UF of a user known only by `items` (seed 004 "Кворумы", same definition as fit):
        the share of the distinct items in each category. Items newer than the model (index
        >= n_items) carry no categories here and are skipped."""
        items = np.asarray(items, dtype=np.int64).ravel()
        if len(items) and items.min() < 0:
            raise ValueError(f"quorum: negative item index {items.min()}")
        items = distinct_indices(items)
        items = items[items < self.n_items]
        if not len(items):
            return NO_ITEMS, NO_WEIGHTS
        indptr = self.item_categories.indptr
        positions = run_positions(indptr[items], indptr[items + 1] - indptr[items])
        counts = np.bincount(self.item_categories.indices[positions], minlength=len(self.idf))
        present = np.flatnonzero(counts)
        return present.astype(np.int64), counts[present].astype(np.float64) / len(items)

    def user_categories(self, ctx: RequestContext) -> tuple[np.ndarray, np.ndarray]:
        """The request's user's categories and UF: stored for training users with positives,
        else from the request (history, or basket and favourites)."""
        if 0 <= ctx.user_index < self.n_users:
            categories, user_uf = self.user_weights(ctx.user_index)
            if len(categories):
                return categories, user_uf
        # Not in training, or no positives there: UF from what the request tells us.
        if len(ctx.history):
            return self.weights_from_items(ctx.history)
        return self.weights_from_items(np.concatenate([ctx.basket, ctx.favorites]))

    def remembered_user_categories(self, ctx: RequestContext) -> tuple[np.ndarray, np.ndarray]:
        """user_categories(ctx), computed once per request (the generator and the ranking
        features both need it)."""
        return ctx.remember(("quorum_categories", id(self)), lambda: self.user_categories(ctx))

    def affinity(self, ctx: RequestContext, items: np.ndarray) -> np.ndarray:
        """The quorum score of `items` for the request's user, NaN for every item when the
        user has no categories: the `quorum_affinity` ranking feature, from the same
        per-request categories the generator reads."""
        categories, user_uf = self.remembered_user_categories(ctx)
        if not len(categories):
            return np.full(len(items), np.nan, np.float32)
        return self.score(categories, user_uf, items)

    def category_top_union(self, categories: np.ndarray, per_category: int) -> np.ndarray:
        """Distinct items among the first `per_category` of each category's TF top."""
        starts = self.top_offsets[categories]
        lengths = np.minimum(self.top_offsets[categories + 1] - starts, per_category)
        return distinct_indices(self.top_items[run_positions(starts, lengths)])

    def score(self, categories: np.ndarray, user_uf: np.ndarray, items: np.ndarray) -> np.ndarray:
        """seed 004 "Кворумы": Σ_c TF(item, c) · UF(user, c) · IDF(c) over all the user's
        categories, for each of `items`; float64. The (items x categories) TF rows times the
        dense vector UF · IDF: from the dense TF when there is one, else from the sparse TF
        by category (few categories) or by item (recsys.arrays).

        All three give rows_dot's answer bit for bit: the same float64 products, summed in
        the same order (categories ascending, the CSR's sorted order); the terms they add or
        leave out (a category the item or the user lacks) are 0.0 and change no sum."""
        category_weight = np.zeros(len(self.idf), dtype=np.float64)
        category_weight[categories] = user_uf * self.idf[categories]
        if self.tf_by_category is not None:  # 4x faster than the row gather
            return (self.tf_by_category.take(items, axis=1) * category_weight[:, None]).sum(axis=0)
        weighted = np.flatnonzero(category_weight)  # ascending
        if len(weighted) > COLUMN_LOOKUP_MAX_CATEGORIES:
            return rows_dot(self.tf, items, category_weight)
        total = np.zeros(len(items), dtype=np.float64)
        columns = self.tf_columns
        for category in weighted:
            start, end = columns.indptr[category], columns.indptr[category + 1]
            if start == end:
                continue
            column_items = columns.indices[start:end]
            at = np.minimum(np.searchsorted(column_items, items), end - start - 1)
            found = column_items[at] == items
            values = np.where(found, columns.data[start:end][at], np.float32(0.0))
            total += values * category_weight[category]
        return total

    def save(self, directory: Path) -> None:
        np.savez(
            directory / FILE,
            **_csr_arrays("uf", self.uf),
            **_csr_arrays("tf", self.tf),
            **_csr_arrays("item_categories", self.item_categories),
            idf=self.idf,
            top_items=self.top_items,
            top_offsets=self.top_offsets,
        )

    @classmethod
    def load(cls, directory: Path) -> QuorumModel:
        path = directory / FILE
        with np.load(path, allow_pickle=False) as stored:
            arrays = dict(stored)
        missing = sorted(set(_ARRAY_NAMES) - set(arrays))
        if missing:
            raise ValueError(f"{path}: missing arrays {', '.join(missing)}")
        return cls(
            uf=_csr_from(arrays, "uf"),
            tf=_csr_from(arrays, "tf"),
            item_categories=_csr_from(arrays, "item_categories").astype(bool),
            idf=arrays["idf"],
            top_items=arrays["top_items"],
            top_offsets=arrays["top_offsets"],
        )


class QuorumGenerator:
    """The user's strongest categories' TF tops, re-scored by the full quorum sum.

    Like the other generators it does not filter: `ctx.exclude`, stock and already-bought
    items are the early filters' job downstream."""

    name = "quorum"

    def __init__(self, model: QuorumModel, config: QuorumConfig) -> None:
        self.model = model
        self.config = config

    def generate(self, ctx: RequestContext, budget: int) -> Candidates:
        if budget < 0:
            raise ValueError(f"budget must not be negative, got {budget}")
        categories, user_uf = self.model.remembered_user_categories(ctx)
        if budget == 0 or not len(categories):
            return Candidates(NO_ITEMS, np.empty(0, np.float32), self.name)
        strongest = categories[top_k(user_uf, self.config.max_categories)]
        items = self.model.category_top_union(strongest, self.config.per_category)
        scores = self.model.score(categories, user_uf, items)
        best = top_k(scores, budget)
        return Candidates(items[best], scores[best].astype(np.float32), self.name)

    def save(self, directory: Path) -> None:
        self.model.save(directory)

    @classmethod
    def load(cls, directory: Path, config: QuorumConfig) -> QuorumGenerator:
        return cls(QuorumModel.load(directory), config)


def _positive_matrix(data: TrainingData) -> sp.csr_matrix:
    """(n_users, n_items) with 1.0 per distinct (user, item) that has a positive event."""
    users = data.event_users[data.event_positive]
    items = data.event_items[data.event_positive]
    matrix = sp.csr_matrix(
        (np.ones(len(users)), (users, items)), shape=(len(data.users), len(data.items))
    )  # duplicates are summed by the conversion; set them back to 1
    matrix.data[:] = 1.0
    return matrix


def _cold_item_prior(
    tf: sp.csr_matrix, categories: sp.csr_matrix, cold: np.ndarray
) -> sp.csr_matrix:
    """TF rows for cold items: per own category c, mean TF(j, c) over warm members j of c."""
    warm_members = sp.diags((~cold).astype(np.float64)) @ categories
    member_tf = warm_members.multiply(tf)  # TF(j, c) where j is warm and belongs to c
    sums = np.asarray(member_tf.sum(axis=0)).ravel()
    counts = np.asarray(warm_members.sum(axis=0)).ravel()
    overall = sums.sum() / counts.sum() if counts.sum() else 1.0
    mean_tf = np.where(counts > 0, sums / np.maximum(counts, 1), overall)
    return sp.csr_matrix(sp.diags(cold.astype(np.float64)) @ categories @ sp.diags(mean_tf))


def _row_normalised(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """Each row divided by its number of stored entries (a 0/1 matrix: rows sum to 1)."""
    matrix = sp.csr_matrix(matrix, dtype=np.float64, copy=True)
    matrix.eliminate_zeros()
    counts = np.diff(matrix.indptr)
    matrix.data = matrix.data / np.repeat(counts, counts)
    return matrix


def _idf(uf: sp.csr_matrix, n_users: int, gamma: float) -> np.ndarray:
    # seed 004, "Кворумы": IDF(c) = min(-log mean UF(., c), γ); the mean is over all users
    # (no positives: UF 0). A mean of 0 gives -log = inf, so the cap γ. Shares are <= 1, so
    # -log >= 0 but for rounding, which the clip removes.
    mean = np.asarray(uf.sum(axis=0)).ravel() / max(n_users, 1)
    with np.errstate(divide="ignore"):
        idf = np.minimum(-np.log(mean), gamma)
    return np.maximum(idf, 0.0).astype(np.float32)


def _category_tops(tf: sp.csr_matrix, depth: int) -> dict[str, np.ndarray]:
    """seed 004 "Кворумы", "Построим топы по TF по категориям в оффлайне": per category
    the `depth` items of largest TF, ties by item index; one sort of all nonzeros."""
    by_category = tf.T.tocsr()
    by_category.sort_indices()  # item order within a category: the stable sort keeps it for ties
    sizes = np.diff(by_category.indptr)
    category = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
    # Non-negative float32 values order like their bit patterns, so one int64 key sorts by
    # category, then TF descending, exactly (5x faster than a lexsort on the two keys).
    descending_tf = np.int64(2**31 - 1) - by_category.data.astype(np.float32).view(np.int32)
    order = np.argsort((category << 31) + descending_tf, kind="stable")
    # `order` keeps categories in blocks where they were, so rank = position - block start
    rank = np.arange(len(order)) - by_category.indptr[category]
    kept = sizes.clip(max=depth)
    return {
        "top_items": by_category.indices[order[rank < depth]].astype(np.int64),
        "top_offsets": np.concatenate([[0], np.cumsum(kept)]).astype(np.int64),
    }


def _dense_by_category(tf: sp.csr_matrix) -> np.ndarray | None:
    """TF as a C-ordered (n_categories, n_items) array, in TF's dtype; None when less than
    DENSE_TF_MIN_DENSITY of its entries are stored."""
    n_items, n_categories = tf.shape
    if tf.nnz < DENSE_TF_MIN_DENSITY * n_items * n_categories:
        return None
    return np.ascontiguousarray(tf.toarray().T)


def _columns(tf: sp.csr_matrix) -> sp.csr_matrix:
    """TF by category, items ascending within each, indices int64 (the request's item
    indices are int64: a search in int32 would copy the column to int64 first)."""
    columns = tf.T.tocsr()
    columns.sort_indices()
    columns.indices = columns.indices.astype(np.int64)
    columns.indptr = columns.indptr.astype(np.int64)
    return columns


def _float32_canonical(matrix: sp.csr_matrix) -> sp.csr_matrix:
    matrix = matrix.astype(np.float32)
    matrix.eliminate_zeros()
    matrix.sort_indices()
    return matrix


_CSR_PARTS = ("data", "indices", "indptr", "shape")
_ARRAY_NAMES = (
    *(f"{m}_{p}" for m in ("uf", "tf", "item_categories") for p in _CSR_PARTS),
    "idf",
    "top_items",
    "top_offsets",
)


def _csr_arrays(prefix: str, matrix: sp.csr_matrix) -> dict[str, np.ndarray]:
    return {
        f"{prefix}_data": matrix.data,
        f"{prefix}_indices": matrix.indices,
        f"{prefix}_indptr": matrix.indptr,
        f"{prefix}_shape": np.asarray(matrix.shape, dtype=np.int64),
    }


def _csr_from(arrays: dict[str, np.ndarray], prefix: str) -> sp.csr_matrix:
    parts = (arrays[f"{prefix}_data"], arrays[f"{prefix}_indices"], arrays[f"{prefix}_indptr"])
    return sp.csr_matrix(parts, shape=tuple(int(n) for n in arrays[f"{prefix}_shape"]))


register_component(
    Component(
        "quorum",
        fit=lambda given: QuorumModel.fit(given.data, given.config.quorum),
        load=lambda directory, config: QuorumModel.load(directory),
        step="quorums",
        # no categories known for them: no TF, no place in a category's top
        grow=lambda model, new: dataclasses.replace(
            model, tf=new.csr_rows(model.tf), item_categories=new.csr_rows(model.item_categories)
        ),
    )
)
register_generator(
    "quorum", lambda bundle, config, name: QuorumGenerator(bundle.quorum, config.quorum)
)
