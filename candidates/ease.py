"""EASE (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019).

Closed form over the binary user x item matrix X: P = (XᵀX + λI)⁻¹, B = I - P / diag(P)
(column j divided by P_jj), diag(B) = 0; a user's scores are x_u B. A strong, cheap baseline
and generator where the catalogue is small enough for a dense n_items² matrix
(`ease.max_items`); larger catalogues build no EASE (the generator then answers nothing).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from candidates.base import NO_ITEMS, Candidates, RequestContext, top_k
from recsys.config import EASEConfig

log = logging.getLogger(__name__)

FILE = "ease.npy"


@dataclass(frozen=True)
class EASEModel:
    weights: np.ndarray  # (n_items, n_items) float32, zero diagonal

    @classmethod
    def fit(cls, interactions: sp.csr_matrix, config: EASEConfig) -> EASEModel | None:
        """None when the catalogue exceeds `config.max_items` (logged)."""
        n_items = interactions.shape[1]
        if n_items > config.max_items:
            log.info("ease: %d items > ease.max_items = %d, not built", n_items, config.max_items)
            return None
        binary = interactions.astype(bool).astype(np.float64)
        gram = (binary.T @ binary).toarray()
        gram[np.diag_indices(n_items)] += config.regularization
        inverse = np.linalg.inv(gram)
        weights = -inverse / np.diag(inverse)  # B_ij = -P_ij / P_jj
        weights[np.diag_indices(n_items)] = 0.0
        return cls(weights=weights.astype(np.float32))

    @property
    def n_items(self) -> int:
        return self.weights.shape[0]

    def score_items(self, items: np.ndarray) -> np.ndarray:
        """(n_items,) float32 scores for a user who interacted with `items`: Σ rows of B."""
        items = np.unique(np.asarray(items, dtype=np.int64))
        return self.weights[items].sum(axis=0, dtype=np.float32)

    def score_users(self, interactions: sp.csr_matrix) -> np.ndarray:
        """(n_users, n_items) float32 scores of the users whose rows these are."""
        return np.asarray(interactions.astype(bool).astype(np.float32) @ self.weights)

    def save(self, directory: Path) -> None:
        np.save(directory / FILE, self.weights)

    @classmethod
    def load(cls, directory: Path) -> EASEModel | None:
        path = directory / FILE
        if not path.exists():
            return None  # built without EASE (catalogue over ease.max_items)
        weights = np.load(path)
        if weights.ndim != 2 or weights.shape[0] != weights.shape[1]:
            raise ValueError(f"{path}: EASE weights must be square, got {weights.shape}")
        return cls(weights=weights)


class EASEGenerator:
    """x_u B over the user's seen items and the session's latest, seen items excluded."""

    name = "ease"

    def __init__(self, model: EASEModel, seen_of) -> None:
        self.model = model
        self.seen_of = seen_of  # user index -> int64 items the bundle saw the user touch

    @classmethod
    def of(cls, model: EASEModel | None, profiles) -> EASEGenerator:
        if model is None:
            raise ValueError(
                "serving.generators names 'ease' but the bundle has no EASE model "
                "(the catalogue exceeds ease.max_items); remove it from serving.generators"
            )
        return cls(model, profiles.seen_items)

    def user_scores(self, ctx: RequestContext) -> tuple[np.ndarray, np.ndarray]:
        """(scores over every item, items the user touched); memoised per request so the
        ranking features read the same vector."""
        return ctx.remember(("ease", id(self.model)), lambda: self._scores(ctx))

    def _scores(self, ctx: RequestContext) -> tuple[np.ndarray, np.ndarray]:
        touched = np.concatenate([self.seen_of(ctx.user_index), ctx.sequence]).astype(np.int64)
        if not len(touched):
            return np.zeros(self.model.n_items, np.float32), NO_ITEMS
        return self.model.score_items(touched), np.unique(touched)

    def generate(self, ctx: RequestContext, budget: int) -> Candidates:
        if budget < 0:
            raise ValueError(f"{self.name}: budget must be >= 0, got {budget}")
        scores, touched = self.user_scores(ctx)
        if not len(touched):
            return Candidates(NO_ITEMS, np.empty(0, np.float32), self.name)
        scores = scores.copy()
        scores[touched] = -np.inf
        best = top_k(scores, budget)
        best = best[np.isfinite(scores[best])]
        return Candidates(best, scores[best], self.name)
