"""Array helpers for request-time code: set operations on item indices, top-k, and row
gathers from a CSR matrix in plain NumPy.

`matrix[rows]` in scipy builds a new sparse matrix (index validation, dtype checks, a
COO round trip), about 0.2 ms whatever the size; a request needs only a product or a
maximum over a few hundred rows, which a flat gather does in tens of microseconds.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

NO_ITEMS = np.empty(0, dtype=np.int64)


def run_positions(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """start[0], start[0] + 1, ... (lengths[0] of them), then the same for run 1, ...: the
    flat positions of slices of an array, without a Python loop over the slices."""
    run_start = np.cumsum(lengths) - lengths  # where each run begins in the output
    return np.repeat(starts - run_start, lengths) + np.arange(lengths.sum())


def row_entries(matrix: sp.csr_matrix, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat positions (into matrix.indices / matrix.data) of the rows' stored entries, row
    after row, and each row's entry count."""
    starts = matrix.indptr[rows]
    lengths = matrix.indptr[rows + 1] - starts
    return run_positions(starts, lengths), lengths


def rows_dot(matrix: sp.csr_matrix, rows: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """(matrix[rows] @ vector) as float64, without building matrix[rows]."""
    positions, lengths = row_entries(matrix, rows)
    owner = np.repeat(np.arange(len(rows)), lengths)
    products = matrix.data[positions] * vector[matrix.indices[positions]]
    return np.bincount(owner, weights=products, minlength=len(rows))


def rows_max_of(matrix: sp.csr_matrix, rows: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """For each row, the largest vector[column] over its stored columns (the matrix's
    values are ignored: a boolean membership matrix); 0 for a row with no entries."""
    positions, lengths = row_entries(matrix, rows)
    out = np.zeros(len(rows), dtype=vector.dtype)
    filled = lengths > 0
    if positions.size:
        values = vector[matrix.indices[positions]]
        offsets = (np.cumsum(lengths) - lengths)[filled]
        out[filled] = np.maximum.reduceat(values, offsets)
    return out


def first_positions(values: np.ndarray) -> np.ndarray:
    """Positions of the first occurrence of each distinct value, in order of appearance:
    `values[first_positions(values)]` is `values` without repeats, order kept."""
    _, first = np.unique(values, return_index=True)
    return np.sort(first)


# Request-time set operations on a few hundred item indices. Since NumPy 2.3 np.unique hashes
# before it sorts, and np.isin picks its method at every call: at these sizes each costs
# 30-80 µs, several times the cost of a scratch table or a sort.


def distinct_indices(indices: np.ndarray) -> np.ndarray:
    """np.unique(indices) for a 1-D array of non-negative integers (item or category indices),
    by marking them in a bool table of max + 1 entries: a fifth of np.unique's time at a
    few hundred indices below 2k, still a little under it with 100k items."""
    if not len(indices):
        return indices.copy()
    if indices.min() < 0:
        raise ValueError(f"indices must be >= 0, got {indices.min()}")
    present = np.zeros(int(indices.max()) + 1, dtype=bool)
    present[indices] = True
    return np.flatnonzero(present).astype(indices.dtype, copy=False)


def distinct_and_slots(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """distinct_indices(indices), and the slot of each index in it:
    np.unique(indices, return_inverse=True)."""
    distinct = distinct_indices(indices)
    slot_of = np.empty(int(distinct[-1]) + 1 if len(distinct) else 0, dtype=np.intp)
    slot_of[distinct] = np.arange(len(distinct))
    return distinct, slot_of[indices]


def is_member(values: np.ndarray, members: np.ndarray) -> np.ndarray:
    """np.isin(values, members) for integer arrays (values of any shape): a binary search
    of each value in the sorted members; free when there are no members."""
    if not np.size(members):
        return np.zeros(np.shape(values), dtype=bool)
    ordered = np.sort(members, axis=None)
    nearest = ordered.take(np.searchsorted(ordered, values), mode="clip")
    return nearest == values


# top_k over more scores than this first finds a threshold from a strided sample of them
SAMPLED_TOP_K_FROM = 20_000
TOP_K_SAMPLE = 2048


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest scores, best first (argpartition, then sort only k).

    Over a large array (a session model scoring a 100k-item catalogue per request) most of
    the cost is the partition of every score. So a threshold t is first read off a strided
    sample (about twice the scores needed above it), and only the scores >= t are
    partitioned. Exact: when at least k scores are >= t, the k-th largest is >= t, so all of
    the k largest are among them; otherwise (an unlucky sample) the full partition runs."""
    k = min(k, len(scores))
    if k <= 0:
        return NO_ITEMS
    pool = _above_sampled_threshold(scores, k) if len(scores) > SAMPLED_TOP_K_FROM else None
    if pool is None:
        part = np.argpartition(-scores, k - 1)[:k]
    else:
        part = pool[np.argpartition(-scores[pool], k - 1)[:k]]
    return part[np.argsort(-scores[part], kind="stable")].astype(np.int64)


def _above_sampled_threshold(scores: np.ndarray, k: int) -> np.ndarray | None:
    """Positions of the scores >= a threshold read off a strided sample, if at least k and at
    most a quarter of them; None if the sample cannot narrow the search."""
    stride = len(scores) // TOP_K_SAMPLE
    sample = scores[::stride]
    rank = 2 * k // stride + 8  # the sample's rank-th largest: ~2k scores above it
    if rank >= len(sample) // 4:
        return None
    threshold = np.partition(sample, len(sample) - rank)[len(sample) - rank]
    if not np.isfinite(threshold):  # -inf (excluded items) or NaN: no narrowing
        return None
    pool = np.flatnonzero(scores >= threshold)
    return pool if k <= len(pool) <= len(scores) // 4 else None


def top_k_batch(scores: np.ndarray, k: int, exclude: sp.csr_matrix | None = None) -> np.ndarray:
    """Row-wise top-k of a (n, m) score block, best first, skipping `exclude`'s nonzeros.

    Returns (n, k) int64, padded with -1 where a row has fewer than k allowed items.
    """
    scores = np.array(scores, dtype=np.float32, copy=True)
    if exclude is not None and exclude.nnz:
        rows = np.repeat(np.arange(exclude.shape[0]), np.diff(exclude.indptr))
        scores[rows, exclude.indices] = -np.inf
    take = min(k, scores.shape[1])
    part = np.argpartition(-scores, take - 1, axis=1)[:, :take]
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    ids = np.take_along_axis(part, order, axis=1).astype(np.int64)
    ids[~np.isfinite(np.take_along_axis(part_scores, order, axis=1))] = -1
    if take < k:
        ids = np.pad(ids, ((0, 0), (0, k - take)), constant_values=-1)
    return ids


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; zero rows (items ALS never saw) stay zero."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def checked_item_vectors(
    vectors: np.ndarray, n_items: int, name: str = "item_factors"
) -> np.ndarray:
    """One finite float32 row per item, C-contiguous (copied only when it is not already)."""
    array = np.ascontiguousarray(vectors, dtype=np.float32)
    if array.ndim != 2 or array.shape[0] != n_items:
        raise ValueError(f"{name} must be ({n_items}, d), got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} hold NaN or infinite values")
    return array
