"""The first ranker: the iALS dot product (seed 004, "В ранжировании": the dot product of
user and item embeddings is the basic ranking signal). Unknown users get item popularity.
"""

from __future__ import annotations

import numpy as np

from candidates.als import ALSModel
from candidates.popularity import PopularityTop
from recsys.context import RequestContext


class DotProductRanker:
    name = "als_dot"

    def __init__(self, model: ALSModel, popularity: PopularityTop) -> None:
        self.model = model
        self.popularity = popularity

    def score(self, ctx: RequestContext, items: np.ndarray) -> np.ndarray:
        vector = self.model.vector_of(ctx)
        if vector is not None:
            return (self.model.item_factors[items] @ vector).astype(np.float32)
        return self.popularity.scores[items]
