"""Explicit ALS with user and item biases (seed 004, "ALS": "то, что мы описали ... – eALS").

The loss of the slide, over the observed entries R only:

    L = Σ_{(u,i)∈R} (r_ui − μ − b_u − b_i − p_u·q_i)²
        + λ_emb (Σ_u ‖p_u‖² + Σ_i ‖q_i‖²) + λ_bias (Σ_u b_u² + Σ_i b_i²)

The slide writes the residual as (r̂_ui − r_ui − b_u − b_i)²; we add a global mean μ, the
mean observed r, fixed and unregularised, so that the biases and factors model deviations
from it and the penalties shrink predictions towards μ rather than towards 0.

"Можно поочередно фризить пользовательские и айтемные параметры и решать систему
уравнений": with the items fixed, each user's x_u = [p_u; b_u] is a ridge regression on
the user's observed items with features z_i = [q_i; 1] and targets r_ui − μ − b_i:

    (Σ_i z_i z_iᵀ + diag(λ_emb·I_f, λ_bias)) x_u = Σ_i z_i (r_ui − μ − b_i)

and symmetrically for the items. Every step minimises L exactly over one side, so L never
increases. The per-user Gram matrices are built for all users at once as a sparse product
(the observed pattern times the per-item upper-triangle products z_a·z_b), then solved in
batches with np.linalg.solve; chunks of users and of (a, b) pairs bound the memory.

Its prediction μ + b_u + b_i + p_u·q_i is a ranking feature, not a candidate generator.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.components import Component, register_component
from recsys.config import Config, EALSConfig, load_config
from recsys.dataset import Dataset
from recsys.ids import IdMap
from recsys.interactions import event_weights

log = logging.getLogger(__name__)

RATING = "rating"  # the event type eALS fits when a dataset has any

FILE = "eals.npz"
ARRAYS = ("global_mean", "user_bias", "item_bias", "user_factors", "item_factors")
INIT_SCALE = 0.1  # std of the random initial factors
WORK_BYTES = 256 << 20  # bound on each float64 work array of a solve step
LOSS_CHUNK = 1 << 20  # observed entries scored together in `loss`


@dataclass(frozen=True)
class EALSModel:
    global_mean: float  # μ: the mean observed rating of the training data
    user_bias: np.ndarray  # (n_users,) float32
    item_bias: np.ndarray  # (n_items,) float32
    user_factors: np.ndarray  # (n_users, f) float32
    item_factors: np.ndarray  # (n_items, f) float32

    def __post_init__(self) -> None:
        n_users, n_items = len(self.user_bias), len(self.item_bias)
        f = self.user_factors.shape[1] if self.user_factors.ndim == 2 else -1
        if self.user_factors.shape != (n_users, f) or self.item_factors.shape != (n_items, f):
            raise ValueError(
                f"eALS arrays disagree: user_bias {self.user_bias.shape}, user_factors "
                f"{self.user_factors.shape}, item_bias {self.item_bias.shape}, item_factors "
                f"{self.item_factors.shape}"
            )
        if not np.isfinite(self.global_mean):
            raise ValueError(f"eALS global_mean is {self.global_mean}")

    @property
    def factors(self) -> int:
        return self.user_factors.shape[1]

    # ---------------------------------------------------------------------- training

    @classmethod
    def fit(cls, ratings: sp.csr_matrix, config: EALSConfig) -> EALSModel:
        """`config.iterations` alternations (users, then items) from a seeded start.

        `ratings` is users x items; its stored nonzero values are the observations (an
        explicit zero is not one), at most one per (user, item). factors = 0 fits the
        biases-only model (b_u and b_i alternating)."""
        began, model = time.perf_counter(), None
        for model in cls.fit_iterations(ratings, config):  # noqa: B007 - the last one is kept
            pass
        log.info(
            "eALS fit: %s ratings %s, %d factors, %d iterations in %.1f s",
            ratings.nnz,
            ratings.shape,
            config.factors,
            config.iterations,
            time.perf_counter() - began,
        )
        return model if model is not None else cls.initial(ratings, config)

    @classmethod
    def initial(cls, ratings: sp.csr_matrix, config: EALSConfig) -> EALSModel:
        """The starting point of `fit`: μ, zero biases, small random factors."""
        observed = _observed(ratings)
        rng = np.random.default_rng(config.random_state)
        n_users, n_items = observed.shape
        return cls(
            global_mean=float(observed.data.mean()),
            user_bias=np.zeros(n_users, np.float32),
            item_bias=np.zeros(n_items, np.float32),
            user_factors=rng.normal(0, INIT_SCALE, (n_users, config.factors)).astype(np.float32),
            item_factors=rng.normal(0, INIT_SCALE, (n_items, config.factors)).astype(np.float32),
        )

    @classmethod
    def fit_iterations(cls, ratings: sp.csr_matrix, config: EALSConfig) -> Iterator[EALSModel]:
        """The model after each of `config.iterations` alternations (for loss curves).

        Parameters stay float64 between steps; each yielded model is their float32 copy."""
        observed = _observed(ratings)
        by_item = observed.T.tocsr()  # the item step's rows, transposed once
        start = cls.initial(observed, config)
        mu = start.global_mean
        penalty = _penalty(config.factors, config.lambda_emb, config.lambda_bias)
        users = np.column_stack([start.user_factors, start.user_bias]).astype(np.float64)
        items = np.column_stack([start.item_factors, start.item_bias]).astype(np.float64)
        for iteration in range(config.iterations):
            began = time.perf_counter()
            users = _solve_side(observed, items, mu, penalty)
            items = _solve_side(by_item, users, mu, penalty)
            log.debug("eALS iteration %d: %.2f s", iteration + 1, time.perf_counter() - began)
            yield cls._from_stacked(mu, users, items)

    def solve_users(self, ratings: sp.csr_matrix, config: EALSConfig) -> EALSModel:
        """One least-squares step for the users of `ratings` (its rows) against this model's
        items, μ kept (seed 004, "Пошагаем": new users get vectors by one LS step)."""
        observed = _observed(ratings, n_items=len(self.item_bias))
        penalty = _penalty(self.factors, config.lambda_emb, config.lambda_bias)
        users = _solve_side(observed, self._stacked_items(), self.global_mean, penalty)
        return EALSModel._from_stacked(self.global_mean, users, self._stacked_items())

    def solve_items(self, ratings: sp.csr_matrix, config: EALSConfig) -> EALSModel:
        """The symmetric step: items of `ratings` (its columns) against this model's users."""
        observed = _observed(ratings, n_users=len(self.user_bias))
        penalty = _penalty(self.factors, config.lambda_emb, config.lambda_bias)
        items = _solve_side(observed.T.tocsr(), self._stacked_users(), self.global_mean, penalty)
        return EALSModel._from_stacked(self.global_mean, self._stacked_users(), items)

    # ---------------------------------------------------------------------- scoring

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """μ + b_u + b_i + p_u·q_i for broadcast (user, item) index arrays, float32.

        Index -1 is an unknown user or item: its bias and factors count as 0, so an unknown
        user with a known item gets μ + b_i, and both unknown get μ."""
        users = _indices(users, len(self.user_bias), "user")
        items = _indices(items, len(self.item_bias), "item")
        if users.ndim == 0 and (items >= 0).all():
            return self._predict_one_user(int(users), items)
        users, items = np.broadcast_arrays(users, items)
        shape = users.shape
        users, items = users.ravel(), items.ravel()
        out = np.full(users.shape, self.global_mean, dtype=np.float32)
        known_user, known_item = users >= 0, items >= 0
        out[known_user] += self.user_bias[users[known_user]]
        out[known_item] += self.item_bias[items[known_item]]
        both = known_user & known_item
        out[both] += np.einsum(
            "ij,ij->i", self.user_factors[users[both]], self.item_factors[items[both]]
        )
        return out.reshape(shape)

    def _predict_one_user(self, user: int, items: np.ndarray) -> np.ndarray:
        """predict for one user (-1 = unknown) and known items, without the broadcast and
        masks: serving's per-request call. The same float32 sums in the same order."""
        out = np.full(items.shape, self.global_mean, dtype=np.float32)
        if user >= 0:
            out += self.user_bias[user]
        out += self.item_bias[items]
        if user >= 0:
            out += np.einsum("...j,j->...", self.item_factors[items], self.user_factors[user])
        return out

    def loss(self, ratings: sp.csr_matrix, config: EALSConfig) -> float:
        """The objective L of seed 004, "ALS" (module docstring) with config's λ, in float64."""
        observed = _observed(ratings, len(self.user_bias), len(self.item_bias))
        rows = np.repeat(np.arange(observed.shape[0]), np.diff(observed.indptr))
        squared = 0.0
        for start in range(0, observed.nnz, LOSS_CHUNK):
            part = slice(start, start + LOSS_CHUNK)
            users, items = rows[part], observed.indices[part]
            pred = self.global_mean + self.user_bias[users].astype(np.float64)
            pred += self.item_bias[items]
            pred += np.einsum(
                "ij,ij->i",
                self.user_factors[users].astype(np.float64),
                self.item_factors[items].astype(np.float64),
            )
            squared += float(np.sum((observed.data[part] - pred) ** 2))
        embeddings = _sum_squares(self.user_factors) + _sum_squares(self.item_factors)
        biases = _sum_squares(self.user_bias) + _sum_squares(self.item_bias)
        return squared + config.lambda_emb * embeddings + config.lambda_bias * biases

    # ---------------------------------------------------------------------- storage

    def save(self, directory: Path) -> None:
        np.savez(
            directory / FILE,
            global_mean=np.float64(self.global_mean),
            user_bias=self.user_bias,
            item_bias=self.item_bias,
            user_factors=self.user_factors,
            item_factors=self.item_factors,
        )

    @classmethod
    def load(cls, directory: Path) -> EALSModel:
        path = directory / FILE
        with np.load(path) as data:
            missing = [name for name in ARRAYS if name not in data.files]
            if missing:
                raise ValueError(f"{path}: missing array(s) {missing}")
            return cls(
                global_mean=float(data["global_mean"]),
                user_bias=data["user_bias"],
                item_bias=data["item_bias"],
                user_factors=data["user_factors"],
                item_factors=data["item_factors"],
            )

    # ---------------------------------------------------------------------- helpers

    def _stacked_users(self) -> np.ndarray:
        return np.column_stack([self.user_factors, self.user_bias]).astype(np.float64)

    def _stacked_items(self) -> np.ndarray:
        return np.column_stack([self.item_factors, self.item_bias]).astype(np.float64)

    @classmethod
    def _from_stacked(cls, mu: float, users: np.ndarray, items: np.ndarray) -> EALSModel:
        """[factors | bias] rows of both sides -> a model of float32 arrays."""
        return cls(
            global_mean=mu,
            user_bias=users[:, -1].astype(np.float32),
            item_bias=items[:, -1].astype(np.float32),
            user_factors=np.ascontiguousarray(users[:, :-1], dtype=np.float32),
            item_factors=np.ascontiguousarray(items[:, :-1], dtype=np.float32),
        )


def _penalty(factors: int, lambda_emb: float, lambda_bias: float) -> np.ndarray:
    """diag(λ_emb·I_f, λ_bias): the ridge penalty of x = [p; b]."""
    if lambda_emb < 0 or lambda_bias < 0:
        raise ValueError(f"eALS penalties must be >= 0, got {lambda_emb=}, {lambda_bias=}")
    return np.append(np.full(factors, lambda_emb, np.float64), lambda_bias)


def _solve_side(
    observed: sp.csr_matrix, other: np.ndarray, mu: float, penalty: np.ndarray
) -> np.ndarray:
    """Ridge solutions [p; b] for every row of `observed` against the other side's stacked
    [q | b] rows `other` (seed 004, "ALS": the system from setting the derivative to zero).

    Row u's system: (Σ_i z_i z_iᵀ + diag(penalty)) x_u = Σ_i z_i (r_ui − μ − b_i), with
    z_i = [q_i; 1] over the row's observed columns i. Its Gram's upper triangle, for all
    rows at once, is the 0/1 pattern of `observed` times the columns z_a·z_b (a <= b)."""
    z = other.copy()
    z[:, -1] = 1.0
    # Same structure, other values; the index arrays are shared, not copied.
    structure = (observed.indices, observed.indptr)
    targets = sp.csr_matrix(
        (observed.data - mu - other[observed.indices, -1], *structure), shape=observed.shape
    )
    pattern = sp.csr_matrix((np.ones_like(observed.data), *structure), shape=observed.shape)
    groups = _triangle_groups(z.shape[1], len(z))
    # The products are kept whole when they fit (usually when z is the item side).
    whole = _triangle_products(z, *groups[0]) if len(groups) == 1 else None
    rows_per_chunk = max(1, WORK_BYTES // (8 * z.shape[1] ** 2))
    solution = np.empty((observed.shape[0], z.shape[1]), np.float64)
    for start in range(0, observed.shape[0], rows_per_chunk):
        chunk = slice(start, start + rows_per_chunk)
        rows = pattern[chunk]
        if whole is not None:
            gram_upper = rows @ whole
        else:
            gram_upper = np.hstack([rows @ _triangle_products(z, *g) for g in groups])
        systems = _symmetric(gram_upper, z.shape[1])
        systems[:, *np.diag_indices(z.shape[1])] += penalty
        # A row without observations has a zero right-hand side: its answer is 0 (and an
        # identity system keeps it solvable when a penalty is 0).
        systems[np.diff(rows.indptr) == 0] = np.eye(z.shape[1])
        solution[chunk] = _solve(systems, targets[chunk] @ z)
    return solution


def _triangle_groups(dim: int, n_rows: int) -> list[tuple[int, int]]:
    """Consecutive triangle rows [a, a_stop) whose product columns fit WORK_BYTES together."""
    groups, first, width = [], 0, 0
    for a in range(dim):
        if width and (width + dim - a) * n_rows * 8 > WORK_BYTES:
            groups.append((first, a))
            first, width = a, 0
        width += dim - a
    groups.append((first, dim))
    return groups


def _triangle_products(z: np.ndarray, a_start: int, a_stop: int) -> np.ndarray:
    """Columns z_a·z_b for a in [a_start, a_stop), b in [a, dim): row-major upper triangle."""
    dim = z.shape[1]
    width = sum(dim - a for a in range(a_start, a_stop))
    out = np.empty((len(z), width), np.float64)
    column = 0
    for a in range(a_start, a_stop):  # slices, not fancy indexing: several times faster
        np.multiply(z[:, a : a + 1], z[:, a:], out=out[:, column : column + dim - a])
        column += dim - a
    return out


def _symmetric(upper: np.ndarray, dim: int) -> np.ndarray:
    """(n, dim, dim) symmetric matrices from their row-major upper triangles (n, pairs)."""
    out = np.empty((len(upper), dim, dim), np.float64)
    column = 0
    for a in range(dim):
        out[:, a, a:] = upper[:, column : column + dim - a]
        out[:, a + 1 :, a] = upper[:, column + 1 : column + dim - a]
        column += dim - a
    return out


def _solve(systems: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    try:
        return np.linalg.solve(systems, rhs[..., None])[..., 0]
    except np.linalg.LinAlgError:
        raise ValueError(
            "eALS: a least-squares system is singular (a row with fewer observations "
            "than factors + 1 and a zero penalty); use lambda_emb, lambda_bias > 0"
        ) from None


def _observed(
    ratings: sp.spmatrix | sp.sparray, n_users: int | None = None, n_items: int | None = None
) -> sp.csr_matrix:
    """Float64 CSR of the observations after checking them: sorted, no explicit zeros."""
    if not sp.issparse(ratings) or ratings.ndim != 2:
        raise ValueError(f"ratings must be a 2-D scipy.sparse matrix, got {type(ratings).__name__}")
    if n_users is not None and ratings.shape[0] != n_users:
        raise ValueError(f"ratings has {ratings.shape[0]} rows, the model {n_users} users")
    if n_items is not None and ratings.shape[1] != n_items:
        raise ValueError(f"ratings has {ratings.shape[1]} columns, the model {n_items} items")
    observed = sp.csr_matrix(ratings, dtype=np.float64, copy=True)
    if not np.isfinite(observed.data).all():
        raise ValueError("ratings hold NaN or inf values")
    observed.eliminate_zeros()
    observed.sort_indices()
    rows = np.repeat(np.arange(observed.shape[0]), np.diff(observed.indptr))
    repeated = (np.diff(observed.indices) == 0) & (np.diff(rows) == 0)
    if repeated.any():
        at = int(np.flatnonzero(repeated)[0])
        raise ValueError(
            f"ratings hold several values for (user {rows[at]}, item {observed.indices[at]}); "
            "pass one (the last) rating per pair"
        )
    if observed.nnz == 0:
        raise ValueError("ratings hold no observed (nonzero) value")
    return observed


def _indices(values: np.ndarray, size: int, what: str) -> np.ndarray:
    values = np.asarray(values)
    if not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"{what} indices must be integers, got dtype {values.dtype}")
    if values.size and (values.min() < -1 or values.max() >= size):
        raise ValueError(
            f"{what} indices must be in [-1, {size}), got {values.min()}..{values.max()}"
        )
    return values.astype(np.int64, copy=False)


def _sum_squares(values: np.ndarray) -> float:
    return float(np.sum(values.astype(np.float64) ** 2))


def explicit_ratings(
    dataset: Dataset, users: IdMap, items: IdMap, config: Config | None = None
) -> sp.csr_matrix:
    """float32 (len(users), len(items)) matrix of what eALS fits; ids outside the maps are
    dropped. With rating events: the last rating of each pair (events are in time order),
    other event types ignored. Without any: log1p(Σ event weight) per pair, the weights of
    `config` [als.event_weights] (the packaged defaults when None). A zero value is no
    observation (eALS skips zeros)."""
    events = dataset.events
    is_rating = (events["event_type"] == RATING).to_numpy()
    if is_rating.any():
        events = events[is_rating]
        values = events["value"].to_numpy(np.float32)
    else:
        values = event_weights(events, config or load_config())
    user_index = users.to_index(events["user_id"].to_numpy())
    item_index = items.to_index(events["item_id"].to_numpy())
    known = (user_index >= 0) & (item_index >= 0)
    pairs = pd.DataFrame(
        {"user": user_index[known], "item": item_index[known], "value": values[known]}
    )
    if is_rating.any():
        per_pair = pairs.groupby(["user", "item"], sort=False)["value"].last()
    else:
        per_pair = np.log1p(pairs.groupby(["user", "item"], sort=False)["value"].sum())
    return sp.csr_matrix(
        (
            per_pair.to_numpy(np.float32),
            (
                per_pair.index.get_level_values("user").to_numpy(),
                per_pair.index.get_level_values("item").to_numpy(),
            ),
        ),
        shape=(len(users), len(items)),
    )


# a ranking feature (seed 004: eALS "в фичах модели"), not a generator
register_component(
    Component(
        "eals",
        fit=lambda given: EALSModel.fit(
            explicit_ratings(given.dataset, given.data.users, given.data.items, given.config),
            given.config.eals,
        ),
        load=lambda directory, config: EALSModel.load(directory),
        # no bias or factors for items no rating has taught (as for `predict`'s unknown item)
        grow=lambda model, new: dataclasses.replace(
            model,
            item_bias=new.rows(model.item_bias, 0.0),
            item_factors=new.rows(model.item_factors, 0.0),
        ),
    )
)
