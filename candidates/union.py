"""The union of the generators' answers, with every source kept (DESIGN.md §3, §5).

An item found by three generators says so, and keeps each one's score and rank: the
ranking features (ranking.features) read them, missing where a generator did not find it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from candidates.base import Candidates, distinct_and_slots
from candidates.sparse_rows import run_positions


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
