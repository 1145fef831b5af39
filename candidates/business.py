"""Business candidates (seed 004, "Бизнесовые кандгены"): what the user already showed us.

"история покупок, ... текущая корзина, ... избранное, разные топы по близости к ним":
the user's favourites and recent positives themselves (repeat purchases), and the i2i
neighbours (candidates.i2i) of the basket, the favourites and the recent history.

Scores are on one scale so the three parts can be merged: an item proposed directly
gets its part's weight (favourites 1.0, history 1.0 - rank / n, i.e. newer is better);
a neighbour gets Σ over seeds of seed weight × its similarity to the seed, where the
seed weight is 1.0 for basket and favourites and the same recency weight for history.
An item proposed several ways keeps its best score. Filters downstream decide whether
seen items may come back (e.g. `already_interacted` removes repeat purchases).
"""

from __future__ import annotations

import numpy as np

from candidates.base import register_generator
from candidates.i2i.model import I2IModel
from recsys.arrays import NO_ITEMS, distinct_and_slots, top_k
from recsys.config import BusinessConfig
from recsys.context import Candidates, RequestContext


class BusinessGenerator:
    name = "business"

    def __init__(self, i2i: I2IModel, config: BusinessConfig) -> None:
        self.i2i = i2i
        self.config = config

    def generate(self, ctx: RequestContext, budget: int) -> Candidates:
        if budget < 0:
            raise ValueError(f"budget must not be negative, got {budget}")
        history = ctx.history[: self.config.history_items]
        recency = 1.0 - np.arange(len(history), dtype=np.float32) / max(len(history), 1)
        seeds = np.concatenate([ctx.basket, ctx.favorites, history]).astype(np.int64)
        if budget == 0 or not len(seeds):
            return Candidates(NO_ITEMS, np.empty(0, np.float32), self.name)
        seed_weights = np.concatenate(
            [np.ones(len(ctx.basket) + len(ctx.favorites), np.float32), recency]
        )
        ids, sims = self.i2i.neighbors(
            self.config.neighbor_kind, seeds, self.config.neighbors_per_item
        )
        found = ids >= 0
        neighbours = ids[found]
        neighbour_scores = (sims * seed_weights[:, None])[found]
        # Direct proposals: favourites and history items themselves; the basket is not
        # proposed (it is being bought right now), only its neighbours are.
        direct = np.concatenate([ctx.favorites, history]).astype(np.int64)
        direct_scores = np.concatenate([np.ones(len(ctx.favorites), np.float32), recency])
        items, inverse = distinct_and_slots(np.concatenate([neighbours, direct]))
        summed = np.zeros(len(items), np.float32)
        np.add.at(summed, inverse[: len(neighbours)], neighbour_scores)
        best = summed.copy()
        np.maximum.at(best, inverse[len(neighbours) :], direct_scores)
        chosen = top_k(best, budget)
        return Candidates(items[chosen], best[chosen].astype(np.float32), self.name)


register_generator(
    "business", lambda bundle, config, name: BusinessGenerator(bundle.i2i, config.business)
)
