"""Sequence-aware candidates: the neighbours of the user's latest items.

The user's latest few items, of any event type and newest first (`RequestContext.sequence`:
the session's, then the bundle's), say more about the next one than any order-blind model
(issue "Ranking that earns its place": on MovieLens-100k leave-last-out the cosine
neighbours of the last 3 items reach NDCG@10 0.107 against 0.076 for tuned iALS). The score
of an item is Σ_r decay^r · cosine(item, r-th newest item), over the cosine i2i lists.
"""

from __future__ import annotations

import numpy as np

from candidates.base import NO_ITEMS, Candidates, RequestContext, distinct_and_slots, top_k
from candidates.i2i import I2IModel
from recsys.config import SequenceConfig

KIND = "cosine"  # the i2i lists the sequence reads


def sequence_weights(n: int, decay: float) -> np.ndarray:
    """Weight of the r-th newest item (r = 0 first): decay ** r."""
    return (decay ** np.arange(n)).astype(np.float32)


def last_items_scores(
    model: I2IModel, sequence: np.ndarray, config: SequenceConfig
) -> tuple[np.ndarray, np.ndarray]:
    """(items, scores): every neighbour of the newest `config.last_items` items with its
    decayed sum of cosines; the sequence's own items are left out."""
    seeds = np.asarray(sequence[: config.last_items], dtype=np.int64)
    if not len(seeds):
        return NO_ITEMS, np.empty(0, np.float32)
    ids, scores = model.neighbors(KIND, seeds, model.list_length(KIND))
    contribution = scores * sequence_weights(len(seeds), config.decay)[:, None]
    keep = (ids >= 0) & ~np.isin(ids, sequence)
    items, slot = distinct_and_slots(ids[keep])
    merged = np.bincount(slot, weights=contribution[keep], minlength=len(items))
    return items, merged.astype(np.float32)


def similarity_to_sequence(
    model: I2IModel, sequence: np.ndarray, items: np.ndarray, positions: int
) -> np.ndarray:
    """(len(items), positions) float32: cosine of each item to the r-th newest item of the
    sequence, from its cosine list (0 where the item is not in that list: not among its
    nearest; NaN where the sequence is shorter than r)."""
    result = np.full((len(items), positions), np.nan, dtype=np.float32)
    seeds = np.asarray(sequence[:positions], dtype=np.int64)
    if not len(seeds) or not len(items):
        return result
    ids, scores = model.neighbors(KIND, seeds, model.list_length(KIND))
    for r in range(len(seeds)):  # a handful of positions, each vectorised
        order = np.argsort(ids[r], kind="stable")
        listed, listed_scores = ids[r][order], scores[r][order]
        at = np.minimum(np.searchsorted(listed, items), len(listed) - 1)
        found = listed[at] == items
        result[:, r] = np.where(found, listed_scores[at], 0.0)
    return result


class LastItemsGenerator:
    """Candidates from the cosine lists of the user's latest items, decayed by position."""

    name = "last_items"

    def __init__(self, model: I2IModel, config: SequenceConfig) -> None:
        if KIND not in model.kinds:
            raise ValueError(
                f"last_items needs the i2i {KIND!r} lists; this bundle has {model.kinds} "
                "(rebuild it with `recsys nightly`)"
            )
        self.model = model
        self.config = config

    def generate(self, ctx: RequestContext, budget: int) -> Candidates:
        if budget < 0:
            raise ValueError(f"{self.name}: budget must be >= 0, got {budget}")
        items, scores = ctx.remember(
            ("last_items", id(self.model)),
            lambda: last_items_scores(self.model, ctx.sequence, self.config),
        )
        best = top_k(scores, budget)
        return Candidates(items[best], scores[best], self.name)
