"""iALS factors (`implicit`) and the generator that serves them through an ANN index.

seed 004, "ALS": iALS minimises Σ C_ij (P_ij - U_i V_jᵀ)² + λ(...) over the whole matrix,
with confidence C_ij = 1 + αR_ij; `implicit` takes R and applies exactly this C with its
`alpha` parameter. The user factors are the key-value store of the lecture ("Пользовательские
эмбеды кладем в какой-нибудь key-value storage"); item factors go into the ANN index.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import implicit
import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from candidates.ann import AnnIndex, build_index, load_index
from candidates.base import register_generator
from candidates.content_step import fill_cold_items
from recsys.arrays import NO_ITEMS, top_k_batch
from recsys.components import Component, FitInputs, holds_no_items, register_component
from recsys.config import ALSConfig, ANNConfig
from recsys.context import Candidates, RequestContext
from recsys.new_items import NewItems

log = logging.getLogger(__name__)

FACTORS_FILE = "als_factors.npz"
ANN_DIR = "ann"
INTERACTIONS_FILE = "interactions.npz"


@dataclass(frozen=True)
class ALSModel:
    user_factors: np.ndarray  # (n_users, f) float32
    item_factors: np.ndarray  # (n_items, f) float32

    @classmethod
    def fit(
        cls, interactions: sp.csr_matrix, config: ALSConfig, show_progress: bool = False
    ) -> ALSModel:
        use_gpu = implicit.gpu.HAS_CUDA
        # implicit parallelises itself; BLAS threads inside its threads would oversubscribe.
        # It warns about BLAS threads when the model is made, before it sees this limit.
        with threadpool_limits(1, "blas"), warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message="OpenBLAS is configured", category=RuntimeWarning
            )
            model = implicit.als.AlternatingLeastSquares(
                factors=config.factors,
                regularization=config.regularization,
                alpha=config.alpha,
                iterations=config.iterations,
                random_state=config.random_state,
                use_gpu=use_gpu,
            )
            model.fit(interactions.astype(np.float32).tocsr(), show_progress=show_progress)
        if use_gpu:
            model = model.to_cpu()
        return cls(
            user_factors=np.ascontiguousarray(model.user_factors, dtype=np.float32),
            item_factors=np.ascontiguousarray(model.item_factors, dtype=np.float32),
        )

    def score(self, user_index: int, items: np.ndarray) -> np.ndarray:
        return self.item_factors[items] @ self.user_factors[user_index]

    def vector_of(self, ctx: RequestContext) -> np.ndarray | None:
        """The user's vector for this request: the nearline worker's fresher one when the
        store has it (seed 004, "Пошагаем"), else the bundle's; None if neither knows them."""
        if ctx.user_vector is not None:
            return ctx.user_vector
        if ctx.known_user and ctx.user_index < len(self.user_factors):
            return self.user_factors[ctx.user_index]
        return None

    def recommend_batch(
        self, user_indices: np.ndarray, k: int, exclude: sp.csr_matrix, chunk: int = 1024
    ) -> np.ndarray:
        """Exact top-k by u·v for many users (offline evaluation); row r of `exclude` lists
        the items to skip for user_indices[r]. Returns (n, k) int64 padded with -1."""
        blocks = [
            top_k_batch(
                self.user_factors[user_indices[start : start + chunk]] @ self.item_factors.T,
                k,
                exclude[start : start + chunk],
            )
            for start in range(0, len(user_indices), chunk)
        ]
        return np.concatenate(blocks) if blocks else np.empty((0, k), np.int64)

    def save(self, directory: Path) -> None:
        np.savez(directory / FACTORS_FILE, users=self.user_factors, items=self.item_factors)

    @classmethod
    def load(cls, directory: Path) -> ALSModel:
        with np.load(directory / FACTORS_FILE) as data:
            return cls(user_factors=data["users"], item_factors=data["items"])


class ALSGenerator:
    """Nearest items to the user's vector by inner product (the nearline's, when it has one);
    silent for users without a vector."""

    name = "als"

    def __init__(self, model: ALSModel, index: AnnIndex) -> None:
        self.model = model
        self.index = index

    @classmethod
    def build(cls, model: ALSModel, config: ANNConfig) -> ALSGenerator:
        return cls(model, build_index(model.item_factors, config))

    def generate(self, ctx: RequestContext, budget: int) -> Candidates:
        if budget < 0:
            raise ValueError(f"budget must not be negative, got {budget}")
        vector = self.model.vector_of(ctx)
        if budget == 0 or vector is None:
            return Candidates(NO_ITEMS, np.empty(0, np.float32), self.name)
        ids, scores = self.index.search(vector[np.newaxis, :], budget)
        found = ids[0] >= 0
        return Candidates(ids[0][found], scores[0][found], self.name)

    def grown(self, new: NewItems) -> ALSGenerator:
        """New items' vectors, and the stepped ones of items it knows, in the model and in a
        copy of the index (`with_changes`, one copy for both: the index in service is never
        written while requests search it)."""
        model = ALSModel(self.model.user_factors, new.rows(self.model.item_factors, 0.0))
        model.item_factors[new.first :] = new.vectors
        model.item_factors[new.stepped] = new.stepped_vectors
        index = self.index.with_changes(new.vectors, new.stepped, new.stepped_vectors)
        return ALSGenerator(model, index)

    def save(self, directory: Path) -> None:
        self.model.save(directory)
        (directory / ANN_DIR).mkdir()
        self.index.save(directory / ANN_DIR)

    @classmethod
    def load(cls, directory: Path, config: ANNConfig) -> ALSGenerator:
        return cls(ALSModel.load(directory), load_index(directory / ANN_DIR, config))


@dataclass(frozen=True)
class SavedInteractions:
    """R as the bundle's iALS saw it (users x items): the nearline worker steps from it
    (seed 004, "Пошагаем" needs every user's and item's row, not only the new events).
    Serving never reads it: a loaded bundle holds only where it lies."""

    path: Path | None = None
    matrix: sp.csr_matrix | None = None  # set while the nightly builds the bundle

    def read(self) -> sp.csr_matrix:
        if self.matrix is not None:
            return self.matrix
        return sp.load_npz(self.path).tocsr()

    def save(self, directory: Path) -> None:
        sp.save_npz(directory / INTERACTIONS_FILE, self.read(), compressed=False)


# The iALS model is fitted for the ANN-indexed generator and the i2i "als" lists; it is
# stored inside the generator's directory, not on its own.
def _fit_ials(given: FitInputs) -> ALSModel:
    model = ALSModel.fit(given.data.interactions, given.config.als)
    if not given.config.als.cold_items_from_content:
        return model
    items = fill_cold_items(model.item_factors, given.data, given.config.als.content_regularization)
    return dataclasses.replace(model, item_factors=items)


register_component(Component("ials", fit=_fit_ials, saved=False))
register_component(
    Component(
        "als",
        fit=lambda given: ALSGenerator.build(given.built["ials"], given.config.ann),
        load=lambda directory, config: ALSGenerator.load(directory, config.ann),
        after=("ials",),
        step="ann index",
        grow=ALSGenerator.grown,
    )
)
register_component(
    Component(
        "interactions",
        fit=lambda given: SavedInteractions(matrix=given.data.interactions),
        load=lambda directory, config: SavedInteractions(path=directory / INTERACTIONS_FILE),
        grow=holds_no_items,  # serving never reads R; the nightly folds the log in
    )
)
register_generator("als", lambda bundle, config, name: bundle.als)
