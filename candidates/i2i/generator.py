"""The i2i generator (seed 004, "i2i-списки"): "В рантайме будем брать позитивы из истории,
выбирать из них разнообразные ... и по ним лукапить топы списков" — `diverse_seeds` picks the
diverse recent positives, `I2IGenerator` merges their lists.
"""

from __future__ import annotations

import numpy as np

from candidates.base import register_generator
from candidates.i2i.model import I2IModel
from recsys.arrays import (
    NO_ITEMS,
    distinct_and_slots,
    first_positions,
    is_member,
    top_k,
)
from recsys.config import I2I_KINDS, I2IConfig
from recsys.context import Candidates, RequestContext


def recency_weights(n: int) -> np.ndarray:
    """Weight of the r-th most recent positive (r = 0 first): 1 / (1 + r).

    Harmonic decay: the latest positive counts most, older ones fade but never vanish
    within the `recent` window the request looks at.
    """
    return (1.0 / (1.0 + np.arange(n))).astype(np.float32)


def diverse_seeds(similarity: np.ndarray, count: int) -> np.ndarray:
    """Positions of `count` diverse items among m recent positives (most recent first),
    given their (m, m) similarity (seed 004, "i2i-списки": "выбирать из них разнообразные").

    Greedy, like maximal marginal relevance: start with the most recent item, then
    repeatedly add the item maximising recency_weight * (1 - max similarity to the items
    already picked), similarity clipped to [0, 1]. A near-duplicate of a picked item gains
    almost nothing, so an older but different positive goes first. Returns int64 positions
    in pick order. The loop runs `count` times (a handful), each step vectorised.
    """
    m = similarity.shape[0]
    if similarity.shape != (m, m):
        raise ValueError(f"similarity must be square, got {similarity.shape}")
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    count = min(count, m)
    if count == 0:
        return NO_ITEMS
    closeness = np.clip(np.asarray(similarity, dtype=np.float32), 0.0, 1.0)
    weight = recency_weights(m)
    picked = np.empty(count, dtype=np.int64)
    picked[0] = 0
    available = np.ones(m, dtype=bool)
    available[0] = False
    nearest_picked = closeness[0].copy()  # max similarity of each item to the picked ones
    for step in range(1, count):
        gain = np.where(available, weight * (1.0 - nearest_picked), -np.inf)
        chosen = int(np.argmax(gain))
        picked[step] = chosen
        available[chosen] = False
        nearest_picked = np.maximum(nearest_picked, closeness[chosen])
    return picked


def recent_positives(ctx: RequestContext, recent: int) -> np.ndarray:
    """The first `recent` distinct items of the history, else of the basket, else of the
    favourites; most recent (or first listed) first."""
    source = next((s for s in (ctx.history, ctx.basket, ctx.favorites) if len(s)), NO_ITEMS)
    source = np.asarray(source, dtype=np.int64)
    return source[first_positions(source)][:recent]


class I2IGenerator:
    """Looks up the lists of the user's diverse recent positives and merges them:
    score(item) = Σ over seeds of recency_weight(seed) * neighbour score(seed, item)."""

    def __init__(self, model: I2IModel, kind: str, config: I2IConfig) -> None:
        if kind not in I2I_KINDS:
            raise ValueError(f"unknown i2i kind {kind!r}; known: {', '.join(I2I_KINDS)}")
        if kind not in model.kinds:
            raise ValueError(f"the i2i model has no {kind!r} lists; built: {model.kinds}")
        self.model = model
        self.kind = kind
        self.config = config
        self.name = f"i2i_{kind}"

    def generate(self, ctx: RequestContext, budget: int) -> Candidates:
        if budget < 0:
            raise ValueError(f"{self.name}: budget must be >= 0, got {budget}")
        if budget == 0:
            return Candidates(NO_ITEMS, np.empty(0, np.float32), self.name)
        # every i2i kind of the request starts from the same diverse seeds
        key = ("i2i_seeds", id(self.model), self.config.recent, self.config.seeds)
        seeds, seed_weights = ctx.remember(key, lambda: self._seeds(ctx))
        if len(seeds) == 0:
            return Candidates(NO_ITEMS, np.empty(0, np.float32), self.name)
        ids, scores = self.model.neighbors(self.kind, seeds, self.model.list_length(self.kind))
        contribution = scores * seed_weights[:, None]
        keep = (ids >= 0) & ~is_member(ids, seeds)
        items, slot = distinct_and_slots(ids[keep])
        merged = np.bincount(slot, weights=contribution[keep], minlength=len(items))
        merged = merged.astype(np.float32)
        best = top_k(merged, budget)
        return Candidates(items[best], merged[best], self.name)

    def _seeds(self, ctx: RequestContext) -> tuple[np.ndarray, np.ndarray]:
        """The diverse recent positives to look up, and their recency weights."""
        recent = recent_positives(ctx, self.config.recent)
        if len(recent) == 0:
            return NO_ITEMS, np.empty(0, np.float32)
        picked = diverse_seeds(self.model.similarity(recent), self.config.seeds)
        return recent[picked], recency_weights(len(recent))[picked]


register_generator(
    "i2i_",
    lambda bundle, config, name: I2IGenerator(bundle.i2i, name.removeprefix("i2i_"), config.i2i),
    prefix=True,
    example="i2i_<kind> (" + ", ".join(f"i2i_{kind}" for kind in I2I_KINDS) + ")",
)
