"""A request as every stage sees it, one generator's answer, and the union of the answers
with every source kept (DESIGN.md §3, §5).

An item found by three generators says so, and keeps each one's score and rank: the
ranking features (ranking.features) read them, missing where a generator did not find it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from recsys.arrays import NO_ITEMS, distinct_and_slots, run_positions

T = TypeVar("T")


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
    # int64 per sequence item: Unix seconds of its latest event; None: not known (the session
    # models then read the latest items, whatever their gaps)
    sequence_times: np.ndarray | None = field(default=None, compare=False, repr=False)
    request_id: str = ""
    # the user's iALS vector from the nearline store (serving.user_vectors), fresher than
    # the bundle's; None: the bundle's row, if the bundle knows the user
    user_vector: np.ndarray | None = field(default=None, compare=False, repr=False)
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


@dataclass(frozen=True)
class CandidateSet:
    items: np.ndarray  # int64, distinct, ascending
    names: tuple[str, ...]  # generator names, one column each below
    scores: np.ndarray  # float32 (n_items, n_generators); NaN where a generator missed it
    ranks: np.ndarray  # float32 (n_items, n_generators), 0 = a generator's best; NaN missed
    sources: np.ndarray  # object (n_items,): tuple of the names that found the item

    def __len__(self) -> int:
        return len(self.items)

    def take(self, keep: np.ndarray) -> CandidateSet:
        """The rows selected by a bool mask or index array (e.g. what the filters kept)."""
        return CandidateSet(
            self.items[keep], self.names, self.scores[keep], self.ranks[keep], self.sources[keep]
        )


def union(answers: list[Candidates]) -> CandidateSet:
    """Distinct items of all answers with per-generator scores, ranks and source tuples.

    All answers are concatenated and scattered into the (item, generator) tables at once.
    Sources are a bitmask per item (bit g = answers[g] found it), turned into tuples
    through a table of all 2^G combinations, so no loop runs over items.
    """
    names = tuple(a.source for a in answers)
    if not answers:
        nothing = np.empty((0, 0), dtype=np.float32)
        return CandidateSet(np.empty(0, np.int64), names, nothing, nothing, np.empty(0, object))
    found = np.concatenate([a.item_ids for a in answers])
    lengths = np.array([len(a) for a in answers], dtype=np.int64)
    generator = np.repeat(np.arange(len(answers)), lengths)  # answer of each found item
    rank = run_positions(np.zeros(len(answers), np.int64), lengths)  # place in its answer
    items, rows = distinct_and_slots(found)
    scores = np.full((len(items), len(answers)), np.nan, dtype=np.float32)
    ranks = np.full((len(items), len(answers)), np.nan, dtype=np.float32)
    scores[rows, generator] = np.concatenate([a.scores for a in answers])
    ranks[rows, generator] = rank
    found_by = np.zeros(len(items), dtype=np.int64)
    np.bitwise_or.at(found_by, rows, 1 << generator)
    return CandidateSet(items, names, scores, ranks, _source_tuples(names)[found_by])


@functools.lru_cache(maxsize=64)
def _source_tuples(names: tuple[str, ...]) -> np.ndarray:
    """All 2^G source tuples, indexed by bitmask; built once per generator list, not per request."""
    combos = np.empty(1 << len(names), dtype=object)
    combos[:] = [
        tuple(name for bit, name in enumerate(names) if mask >> bit & 1)
        for mask in range(len(combos))
    ]
    combos.flags.writeable = False
    return combos
