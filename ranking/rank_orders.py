"""The orders `Rank`'s input may take (`ranking.rank_orders`): what `Rank` serves where no
ranker stage earns its place there, and what a stage must beat to be kept by `Rank`.

`Rank` orders items a caller chose (a category page, a search result, a basket's neighbours);
its input was the iALS dot product alone. On the synthetic shop the rankers order such items
worse than that input, and EASE orders them better (held-out item + 99 sampled, 20k users,
session 22: EASE 0.721 against the iALS order's 0.653). Nightly's `Rank` pass serves each
configured order on validation and keeps the best (pipelines/stage_gate.py); the bundle
records it (`TrainedRankers.rank_order`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from candidates.ease import EASEGenerator, RecentEASEGenerator, required
from candidates.popularity import PopularityTop
from ranking.dot import DotProductRanker
from recsys.config import RANK_ORDERS, Config
from recsys.context import RequestContext
from recsys.loaded_bundle import LoadedBundle

LABELS = {"als": "iALS", "ease": "EASE", "recent_ease": "recent EASE"}  # for reports


class EASEOrder:
    """A user's EASE scores of the given items (`generator`'s x_u B, memoised per request like
    the generator's). Items EASE does not model (beyond `ease.max_items`) follow the modelled
    ones in popularity order; a user EASE knows nothing of gets popularity, as iALS's order
    gives an unknown user."""

    def __init__(self, generator: EASEGenerator, popularity: PopularityTop) -> None:
        self.generator = generator
        self.popularity = popularity
        self.name = generator.name

    def score(self, ctx: RequestContext, items: np.ndarray) -> np.ndarray:
        scores, touched = self.generator.user_scores(ctx)
        if not len(touched):
            return self.popularity.scores[items]
        given = scores[items].astype(np.float32)
        unmodelled = np.isnan(given)
        if unmodelled.any():
            floor = float(given[~unmodelled].min()) if not unmodelled.all() else 0.0
            popular = np.argsort(
                np.argsort(-self.popularity.scores[items[unmodelled]], kind="stable")
            )
            given[unmodelled] = floor - 1.0 - popular / len(popular)
        return given


Order = DotProductRanker | EASEOrder  # each has .name and .score(ctx, items)

_FACTORIES: dict[str, Callable[[LoadedBundle, Config], Order]] = {
    "als": lambda bundle, config: DotProductRanker(bundle.als.model, bundle.popularity),
    "ease": lambda bundle, config: EASEOrder(
        EASEGenerator(required(bundle.ease, "Rank's order 'ease'"), bundle.profiles.seen_items),
        bundle.popularity,
    ),
    "recent_ease": lambda bundle, config: EASEOrder(
        RecentEASEGenerator(
            required(bundle.ease, "Rank's order 'recent_ease'"),
            bundle.profiles.seen_items,
            config.sequence.ease_decay,
        ),
        bundle.popularity,
    ),
}


def rank_order(name: str, bundle: LoadedBundle, config: Config) -> Order:
    """The scorer of order `name` (one of recsys.config.RANK_ORDERS) over `bundle`."""
    if name not in _FACTORIES:
        raise ValueError(f"unknown Rank order {name!r}; known: {', '.join(RANK_ORDERS)}")
    return _FACTORIES[name](bundle, config)
