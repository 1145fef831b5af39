"""ALS steps: fresh iALS vectors for some users or items with the other side held fixed.

seed 004, "Пошагаем": to get vectors for new users and items without a retrain, "сначала
посчитаем для новых айтемов" (one least-squares step from the latest user vectors), "теперь
шагнем в обратную сторону к пользователям"; step only through warmed vectors, those with large
norms ("полезно ходить только через пользователей и айтемы с большими нормами"). "Перестанем
шагать": steps drift from the optimum, so the nightly still retrains from scratch.
"Зачем еще нужны шаги": a step from fixed content vectors gives matching collaborative ones.

The step solves, for each row u, the iALS normal equations of seed 004 "ALS" with the
other side Y fixed, exactly as `implicit` (the library that trains the full model) does, so a
stepped vector lives in the same space as the trained ones:

    x_u = (YᵀY + λI + Σ_i (c_ui - 1) y_i y_iᵀ)⁻¹ Σ_{i: c_ui > 0} c_ui y_i,   c_ui = α R_ui

(implicit.cpu.als.user_linear_equation; a negative R_ui is a negative preference: it adds
|c_ui| - 1 to the confidence and nothing to the right-hand side). An item step is the same
system with users and items swapped.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares


def solve_rows(
    fixed: np.ndarray,
    rows: sp.csr_matrix,
    alpha: float,
    regularization: float,
    *,
    usable: np.ndarray | None = None,
) -> np.ndarray:
    """One least-squares step for every row of `rows` (R, rows x len(fixed)) with the
    vectors `fixed` held: returns (n_rows, f) float32, solved by implicit's own exact
    (Cholesky) solver, threaded over rows.

    `usable` (bool per fixed vector) limits the sum over observed entries to warmed vectors
    (seed 004, "Пошагаем"); an entry of an unusable vector is ignored. A row with no usable
    entry gets zeros.
    """
    if rows.shape[1] != len(fixed):
        raise ValueError(f"rows have {rows.shape[1]} columns for {len(fixed)} fixed vectors")
    rows = sp.csr_matrix(rows, dtype=np.float32)
    if usable is not None:  # drop the entries of unusable vectors, keep the row layout
        rows = rows.multiply(usable[np.newaxis, :].astype(np.float32)).tocsr()
        rows.eliminate_zeros()
    if not rows.shape[0]:
        return np.zeros((0, fixed.shape[1]), np.float32)
    solver = AlternatingLeastSquares(
        factors=fixed.shape[1], regularization=regularization, alpha=alpha, num_threads=1
    )
    solver.item_factors = np.ascontiguousarray(fixed, dtype=np.float32)
    return np.asarray(solver.recalculate_user(np.arange(rows.shape[0]), rows), np.float32)


class PendingItems:
    """Events per item since its last step: which items are due for one (seed 004,
    "Пошагаем": only hot items are worth a step between retrains)."""

    def __init__(self, n_items: int) -> None:
        self.counts = np.zeros(n_items, np.int64)

    def add(self, items: np.ndarray) -> None:
        if len(items) and items.max() >= len(self.counts):
            self.counts = np.r_[self.counts, np.zeros(items.max() + 1 - len(self.counts), np.int64)]
        np.add.at(self.counts, items, 1)

    def due(self, item_factors: np.ndarray, every: int) -> np.ndarray:
        """Items to step now, their counts reset: those with events and no vector yet, and
        (every > 0) those with at least `every` events since their last step."""
        pending = np.flatnonzero(self.counts)
        without = pending >= len(item_factors)
        known = pending[~without]
        without[~without] = ~np.any(item_factors[known] != 0, axis=1)
        hot = (self.counts[pending] >= every) if every > 0 else np.zeros(len(pending), bool)
        chosen = pending[without | hot]
        self.counts[chosen] = 0
        return chosen


def warm(vectors: np.ndarray, quantile: float) -> np.ndarray:
    """Which vectors a step may go through: norm at or above the `quantile` of the nonzero
    norms (0 = every nonzero vector)."""
    norms = np.linalg.norm(vectors, axis=1)
    nonzero = norms > 0
    if quantile <= 0 or not nonzero.any():
        return nonzero
    return nonzero & (norms >= np.quantile(norms[nonzero], quantile))


def step_items_then_users(
    user_factors: np.ndarray,
    item_factors: np.ndarray,
    items: np.ndarray,
    item_rows: sp.csr_matrix,
    users: np.ndarray,
    user_rows: sp.csr_matrix,
    alpha: float,
    regularization: float,
    warm_quantile: float = 0.0,
) -> None:
    """seed 004, "Пошагаем", in its order: first the vectors of `items` from the users'
    latest vectors, then those of `users` from the item vectors, the stepped ones included.
    `item_rows` holds R's row of each of `items` (items x users) and `user_rows` R's row of
    each of `users` (users x items), over everything known so far. Only warmed vectors
    (`warm`, `warm_quantile`) are stepped through. Updates the two arrays in place (a
    nearline worker's copies; an offline caller passes copies of its own)."""
    if len(items):
        item_factors[items] = solve_rows(
            user_factors, item_rows, alpha, regularization, usable=warm(user_factors, warm_quantile)
        )
    if len(users):
        user_factors[users] = solve_rows(
            item_factors, user_rows, alpha, regularization, usable=warm(item_factors, warm_quantile)
        )
