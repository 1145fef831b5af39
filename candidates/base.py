"""Contracts shared by every generator: what it is given and what it returns."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol, TypeVar

import numpy as np
import scipy.sparse as sp

from pipelines.idmap import IdMap

log = logging.getLogger(__name__)

NO_ITEMS = np.empty(0, dtype=np.int64)
# TrainingData.newest_time: a tail of at most this share of the events, lying more than the
# gap beyond the rest, is not the data's "now"
OUTLIER_SHARE = 1e-3
OUTLIER_GAP_SECONDS = 7 * 86400
T = TypeVar("T")


def first_positions(values: np.ndarray) -> np.ndarray:
    """Positions of the first occurrence of each distinct value, in order of appearance:
    `values[first_positions(values)]` is `values` without repeats, order kept."""
    _, first = np.unique(values, return_index=True)
    return np.sort(first)


# Request-time set operations on a few hundred item indices. Since NumPy 2.3 np.unique hashes
# before it sorts, and np.isin picks its method at every call: at these sizes each costs
# 30-80 µs, several times the cost of a scratch table or a sort.


def distinct_indices(indices: np.ndarray) -> np.ndarray:
    """np.unique(indices) for a 1-D array of non-negative integers (item or category indices),
    by marking them in a bool table of max + 1 entries: a fifth of np.unique's time at a
    few hundred indices below 2k, still a little under it with 100k items."""
    if not len(indices):
        return indices.copy()
    if indices.min() < 0:
        raise ValueError(f"indices must be >= 0, got {indices.min()}")
    present = np.zeros(int(indices.max()) + 1, dtype=bool)
    present[indices] = True
    return np.flatnonzero(present).astype(indices.dtype, copy=False)


def distinct_and_slots(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """distinct_indices(indices), and the slot of each index in it:
    np.unique(indices, return_inverse=True)."""
    distinct = distinct_indices(indices)
    slot_of = np.empty(int(distinct[-1]) + 1 if len(distinct) else 0, dtype=np.intp)
    slot_of[distinct] = np.arange(len(distinct))
    return distinct, slot_of[indices]


def is_member(values: np.ndarray, members: np.ndarray) -> np.ndarray:
    """np.isin(values, members) for integer arrays (values of any shape): a binary search
    of each value in the sorted members; free when there are no members."""
    if not np.size(members):
        return np.zeros(np.shape(values), dtype=bool)
    ordered = np.sort(members, axis=None)
    nearest = ordered.take(np.searchsorted(ordered, values), mode="clip")
    return nearest == values


@dataclass(frozen=True)
class RequestContext:
    """A request after external ids became dense indices (-1: unknown user).

    `history` is the user's recent positives, most recent first (from the bundle's user
    profiles); `sequence` the user's latest items of any event type, newest first (the
    session's, then the bundle's); `favorites` and `basket` come with the request. All are
    int64 item indices.
    """

    user_index: int
    region: str = ""
    exclude: np.ndarray = field(default_factory=lambda: NO_ITEMS)  # items not wanted
    basket: np.ndarray = field(default_factory=lambda: NO_ITEMS)  # items in the basket
    favorites: np.ndarray = field(default_factory=lambda: NO_ITEMS)
    history: np.ndarray = field(default_factory=lambda: NO_ITEMS)
    sequence: np.ndarray = field(default_factory=lambda: NO_ITEMS)
    request_id: str = ""
    last_active: int = 0  # Unix seconds of the user's newest known event (0: none known)
    # values derived from the request that several stages need (e.g. the i2i seeds of
    # both i2i generators, the quorum weights of the generator and the ranking features)
    memo: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def known_user(self) -> bool:
        return self.user_index >= 0

    def remember(self, key: Hashable, compute: Callable[[], T]) -> T:
        """compute() once per request for `key`, however many stages ask. Concurrent
        generators may both compute it: the values are equal, so the race is harmless."""
        if key not in self.memo:
            self.memo[key] = compute()
        return self.memo[key]


@dataclass(frozen=True)
class Candidates:
    """One generator's answer: item indices with its scores, best first."""

    item_ids: np.ndarray  # int64
    scores: np.ndarray  # float32, same length
    source: str

    def __post_init__(self) -> None:
        if self.item_ids.shape != self.scores.shape:
            raise ValueError(
                f"{self.source}: {len(self.item_ids)} ids but {len(self.scores)} scores"
            )

    def __len__(self) -> int:
        return len(self.item_ids)


class Generator(Protocol):
    name: str  # travels to the response as the source of each item

    def generate(self, ctx: RequestContext, budget: int) -> Candidates: ...


@dataclass(frozen=True)
class TrainingData:
    """What offline fitting sees: id maps, the weighted user x item matrix, event arrays,
    and the catalog and user attributes generators need (categories, freshness, regions).

    Events are in time order. Item-side arrays are indexed like `items`, user-side like
    `users`; category and region codes index `category_names` / `region_names`.
    """

    users: IdMap
    items: IdMap
    interactions: sp.csr_matrix  # float32 (n_users, n_items): R in seed 004 "ALS"
    event_users: np.ndarray  # int64 per event
    event_items: np.ndarray  # int64 per event
    event_weights: np.ndarray  # float32 per event, the event's contribution to R
    event_times: np.ndarray  # int64 Unix seconds per event
    event_types: np.ndarray  # int8 per event: index into recsys.config.EVENT_TYPES
    event_positive: np.ndarray  # bool per event: counts as a positive (config [data])
    item_categories: sp.csr_matrix  # bool (n_items, n_categories)
    category_names: tuple[str, ...]
    item_created: np.ndarray  # int64 Unix seconds per item
    item_price: np.ndarray  # float32 per item
    item_text: np.ndarray  # object (str) per item: the catalog title, "" if none
    user_region: np.ndarray  # int32 per user: index into region_names, -1 if unknown
    region_names: tuple[str, ...]

    @functools.cached_property
    def newest_time(self) -> int:
        """The data's "now", where windows (tops, trends, ages) end: the newest event,
        unless a thin tail of events lies far beyond the rest (one event stamped today in a
        1998 log, a clock gone wrong). Then the newest event within OUTLIER_GAP_SECONDS of
        the 99.9th percentile: one stray event must not empty every windowed top."""
        if not len(self.event_times):
            return 0
        times = np.sort(self.event_times)
        bulk = times[int(np.ceil((1 - OUTLIER_SHARE) * len(times))) - 1]
        now = int(times[np.searchsorted(times, bulk + OUTLIER_GAP_SECONDS, side="right") - 1])
        if now < times[-1]:
            ahead = int(np.count_nonzero(times > now))
            log.warning(
                "%d events lie more than %d days beyond the rest of the data (newest %s); "
                "windows end at %s instead",
                ahead,
                OUTLIER_GAP_SECONDS // 86400,
                _utc(int(times[-1])),
                _utc(now),
            )
        return now


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest scores, best first (argpartition, then sort only k)."""
    k = min(k, len(scores))
    if k <= 0:
        return NO_ITEMS
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.argsort(-scores[part], kind="stable")].astype(np.int64)


def top_k_batch(scores: np.ndarray, k: int, exclude: sp.csr_matrix | None = None) -> np.ndarray:
    """Row-wise top-k of a (n, m) score block, best first, skipping `exclude`'s nonzeros.

    Returns (n, k) int64, padded with -1 where a row has fewer than k allowed items.
    """
    scores = np.array(scores, dtype=np.float32, copy=True)
    if exclude is not None and exclude.nnz:
        rows = np.repeat(np.arange(exclude.shape[0]), np.diff(exclude.indptr))
        scores[rows, exclude.indices] = -np.inf
    take = min(k, scores.shape[1])
    part = np.argpartition(-scores, take - 1, axis=1)[:, :take]
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    ids = np.take_along_axis(part, order, axis=1).astype(np.int64)
    ids[~np.isfinite(np.take_along_axis(part_scores, order, axis=1))] = -1
    if take < k:
        ids = np.pad(ids, ((0, 0), (0, k - take)), constant_values=-1)
    return ids


def _utc(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M")
