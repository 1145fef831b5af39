"""Offline evaluation metrics: top-k ranking, beyond-accuracy and pointwise prediction.

Which metrics: seed 002, "Таблица 2: Иерархия метрик" (RMSE/MAE; NDCG, MRR, MAP;
Precision@K, Recall@K; novelty, diversity) and seed 003 §V.E "3) Метрики" (Recall@K, MRR@K).
The seeds name the metrics without formulas; each formula below names its usual source.

Ranking inputs, shared by every ranking metric:

recommended  (n_users, K) int64 item indices, best first, padded with -1 where a list is
             shorter than K; -1 never matches. An item repeated within one list counts as a
             hit at its first position only.
relevant     scipy.sparse (n_users, n_items), nonzero = held-out relevant item of that user.
k            cut-off, 1 <= k <= K.

Every ranking metric is the mean over users with at least one relevant item; users with
none are left out (they cannot score), and if no user has one the mean is undefined and
a ValueError is raised. All hot paths are vectorised over users; loops run over the k
positions (or over fixed-size blocks of users) only.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.stats import rankdata

__all__ = [
    "auc",
    "catalog_coverage",
    "hit_rate_at_k",
    "hits_matrix",
    "intra_list_diversity",
    "logloss",
    "mae",
    "map_at_k",
    "mrr_at_k",
    "ndcg_at_k",
    "novelty",
    "precision_at_k",
    "ranking_report",
    "recall_at_k",
    "rmse",
]

PADDING = -1
_HITS_BLOCK_USERS = 4096  # users whose relevant keys are searched together (cache-sized)
_DIVERSITY_BLOCK_USERS = 4096  # rows of the (block, d) float64 accumulator of ILD

# ---------------------------------------------------------------------------- validation


def _check_recommended(recommended: np.ndarray, k: int) -> np.ndarray:
    """The first k columns as int64, after checking dims, dtype and k."""
    recommended = np.asarray(recommended)
    if recommended.ndim != 2:
        raise ValueError(f"recommended must be 2-D (n_users, K), got shape {recommended.shape}")
    if not np.issubdtype(recommended.dtype, np.integer):
        raise ValueError(f"recommended must hold integer item ids, got dtype {recommended.dtype}")
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise ValueError(f"k must be an int, got {type(k).__name__}")
    n_columns = recommended.shape[1]
    if k <= 0 or k > n_columns:
        raise ValueError(f"k must be in [1, K={n_columns}] (K = recommended.shape[1]), got {k}")
    top = recommended[:, :k].astype(np.int64, copy=False)
    if top.size and top.min() < PADDING:
        raise ValueError(f"recommended holds item id {top.min()}; ids are >= 0, or -1 for padding")
    return top


def _check_item_range(top: np.ndarray, n_items: int, what: str) -> None:
    if top.size and top.max() >= n_items:
        raise ValueError(
            f"recommended holds item id {top.max()} outside {what} (n_items={n_items})"
        )


def _relevant_keys(relevant: sp.sparray | sp.spmatrix, n_users: int) -> tuple[np.ndarray, int]:
    """Sorted unique keys user * n_items + item of every nonzero entry, and n_items."""
    if not sp.issparse(relevant):
        raise ValueError(f"relevant must be a scipy.sparse matrix, got {type(relevant).__name__}")
    if relevant.ndim != 2:
        raise ValueError(f"relevant must be 2-D (n_users, n_items), got shape {relevant.shape}")
    csr = relevant.tocsr()
    n_rows, n_items = csr.shape
    if n_rows != n_users:
        raise ValueError(
            f"relevant has {n_rows} rows but recommended has {n_users} (n_users must match)"
        )
    if n_users * n_items >= 2**62:
        raise ValueError(f"relevant shape {csr.shape} is too large for int64 user-item keys")
    rows = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(csr.indptr))
    keep = csr.data != 0  # explicit zeros are not relevant
    keys = rows[keep] * n_items + csr.indices[keep].astype(np.int64)
    if not csr.has_canonical_format:  # unsorted or duplicated indices
        keys = np.unique(keys)
    return keys, n_items


def _hits_and_counts(
    recommended: np.ndarray, relevant: sp.sparray | sp.spmatrix, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """(hits (n_users, k) bool, n_relevant (n_users,) int64) after validating everything."""
    top = _check_recommended(recommended, k)
    n_users = top.shape[0]
    keys, n_items = _relevant_keys(relevant, n_users)
    _check_item_range(top, n_items, "relevant's columns")
    n_relevant = (
        np.bincount(keys // n_items, minlength=n_users)
        if n_items
        else np.zeros(n_users, dtype=np.int64)
    )

    hits = np.zeros(top.shape, dtype=bool)
    if keys.size == 0:
        return hits, n_relevant
    # keys are sorted by user, so a block of users searches only its own slice of keys: a
    # haystack that fits in cache (about 2x faster than one search over all keys at 1M users).
    key_starts = np.searchsorted(keys, np.arange(0, n_users + 1, dtype=np.int64) * n_items)
    for start in range(0, n_users, _HITS_BLOCK_USERS):
        stop = min(start + _HITS_BLOCK_USERS, n_users)
        haystack = keys[key_starts[start] : key_starts[stop]]
        if haystack.size == 0:
            continue
        block = top[start:stop]
        query = (np.arange(start, stop, dtype=np.int64) * n_items)[:, None] + block
        found = np.searchsorted(haystack, query)
        np.minimum(found, haystack.size - 1, out=found)
        # block >= 0 matters: user u's key for -1 is user u-1's key for item n_items-1.
        hits[start:stop] = (haystack[found] == query) & (block >= 0)

    # A repeated item hits once, at its first position. Only hits can repeat a hit, so
    # dedupe among them; np.nonzero is row-major, so the first occurrence comes first.
    hit_users, hit_positions = np.nonzero(hits)
    hit_keys = hit_users * n_items + top[hit_users, hit_positions]
    _, first = np.unique(hit_keys, return_index=True)
    if first.size < hit_keys.size:
        repeat = np.ones(hit_keys.size, dtype=bool)
        repeat[first] = False
        hits[hit_users[repeat], hit_positions[repeat]] = False
    return hits, n_relevant


def _evaluated(hits: np.ndarray, n_relevant: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of users with at least one relevant item; ValueError if there are none."""
    scored = n_relevant > 0
    if not scored.any():
        raise ValueError("relevant has no user with a relevant item; the mean is undefined")
    return hits[scored], n_relevant[scored].astype(np.float64)


# ------------------------------------------------------------- per-user scores from hits


def _discounts(k: int) -> np.ndarray:
    """1 / log2(rank + 1) for ranks 1..k."""
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


def _recall(hits: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    # hits / |relevant| (not / min(|relevant|, k)): a user with more relevant items than k
    # cannot reach 1.
    return hits.sum(axis=1) / n_relevant


def _precision(hits: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    # hits / k; padded slots count as misses.
    return hits.sum(axis=1) / hits.shape[1]


def _ndcg(hits: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    # Järvelin & Kekäläinen (2002), binary gains: DCG = Σ_hits 1/log2(rank+1);
    # IDCG = the DCG of min(|relevant|, k) hits at ranks 1..min(|relevant|, k).
    k = hits.shape[1]
    discounts = _discounts(k)
    dcg = np.zeros(hits.shape[0])
    for position in range(k):
        dcg += hits[:, position] * discounts[position]
    n_ideal = np.minimum(n_relevant, k).astype(np.int64)
    idcg = np.cumsum(discounts)[n_ideal - 1]
    return dcg / idcg


def _mrr(hits: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    # 1 / rank of the first hit within the top k; 0 when there is none.
    any_hit = hits.any(axis=1)
    first_rank = hits.argmax(axis=1) + 1
    return np.where(any_hit, 1.0 / first_rank, 0.0)


def _average_precision(hits: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    # AP@k = Σ_{hit ranks r <= k} precision@r / min(|relevant|, k), the usual top-k
    # normalisation (e.g. Kaggle's apk), so a perfect list scores 1 even when |relevant| > k.
    k = hits.shape[1]
    running_hits = np.zeros(hits.shape[0])
    precision_sum = np.zeros(hits.shape[0])
    for position in range(k):
        column = hits[:, position]
        running_hits += column
        precision_sum += column * (running_hits / (position + 1))
    return precision_sum / np.minimum(n_relevant, k)


def _hit_rate(hits: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    return hits.any(axis=1).astype(np.float64)


_PER_USER = {
    "recall": _recall,
    "precision": _precision,
    "ndcg": _ndcg,
    "mrr": _mrr,
    "map": _average_precision,
    "hitrate": _hit_rate,
}


def _ranking_mean(name: str, recommended: np.ndarray, relevant, k: int) -> float:
    hits, n_relevant = _evaluated(*_hits_and_counts(recommended, relevant, k))
    return float(_PER_USER[name](hits, n_relevant).mean())


# -------------------------------------------------------------------- ranking, public


def hits_matrix(recommended: np.ndarray, relevant: sp.sparray | sp.spmatrix, k: int) -> np.ndarray:
    """(n_users, k) bool: hits[u, j] = recommended[u, j] is relevant to u (first occurrence)."""
    hits, _ = _hits_and_counts(recommended, relevant, k)
    return hits


def recall_at_k(recommended: np.ndarray, relevant: sp.sparray | sp.spmatrix, k: int) -> float:
    """Mean over users of hits@k / |relevant|."""
    return _ranking_mean("recall", recommended, relevant, k)


def precision_at_k(recommended: np.ndarray, relevant: sp.sparray | sp.spmatrix, k: int) -> float:
    """Mean over users of hits@k / k."""
    return _ranking_mean("precision", recommended, relevant, k)


def ndcg_at_k(recommended: np.ndarray, relevant: sp.sparray | sp.spmatrix, k: int) -> float:
    """Mean over users of binary-gain DCG@k / IDCG@k (ideal: min(|relevant|, k) hits on top)."""
    return _ranking_mean("ndcg", recommended, relevant, k)


def mrr_at_k(recommended: np.ndarray, relevant: sp.sparray | sp.spmatrix, k: int) -> float:
    """Mean over users of 1 / rank of the first hit in the top k (0 without a hit)."""
    return _ranking_mean("mrr", recommended, relevant, k)


def map_at_k(recommended: np.ndarray, relevant: sp.sparray | sp.spmatrix, k: int) -> float:
    """Mean over users of AP@k = Σ_hit precision@rank / min(|relevant|, k)."""
    return _ranking_mean("map", recommended, relevant, k)


def hit_rate_at_k(recommended: np.ndarray, relevant: sp.sparray | sp.spmatrix, k: int) -> float:
    """Share of users with at least one hit in the top k."""
    return _ranking_mean("hitrate", recommended, relevant, k)


def ranking_report(
    recommended: np.ndarray, relevant: sp.sparray | sp.spmatrix, k: int
) -> dict[str, float]:
    """All six ranking metrics from one hits matrix: {"recall@k": ..., "hitrate@k": ...}."""
    hits, n_relevant = _evaluated(*_hits_and_counts(recommended, relevant, k))
    return {
        f"{name}@{k}": float(per_user(hits, n_relevant).mean())
        for name, per_user in _PER_USER.items()
    }


# ------------------------------------------------------------------- beyond accuracy


def catalog_coverage(recommended: np.ndarray, n_items: int, k: int) -> float:
    """Share of the n_items catalog that appears in at least one top-k list."""
    top = _check_recommended(recommended, k)
    if isinstance(n_items, bool) or not isinstance(n_items, int | np.integer) or n_items <= 0:
        raise ValueError(f"n_items must be a positive int, got {n_items!r}")
    _check_item_range(top, n_items, "the catalog")
    shown = np.zeros(n_items, dtype=bool)
    shown[top[top >= 0]] = True
    return float(shown.mean())


def _valid_lists(top: np.ndarray, min_items: int) -> tuple[np.ndarray, np.ndarray]:
    """(top rows with at least min_items valid ids, their valid mask); ValueError if none."""
    valid = top >= 0
    keep = valid.sum(axis=1) >= min_items
    if not keep.any():
        raise ValueError(
            f"recommended has no list with at least {min_items} valid item(s) in the top k"
        )
    return top[keep], valid[keep]


def novelty(
    recommended: np.ndarray, item_popularity: np.ndarray, k: int, *, eps: float = 1e-12
) -> float:
    """Mean over lists of the mean self-information -log2 p(i) of their valid top-k items.

    item_popularity[i] = p(i), the fraction of users who interacted with item i (already
    normalised, in [0, 1]); p is clipped to [eps, 1] so a never-seen item scores -log2(eps)
    instead of infinity. Lists with no valid item are left out.
    """
    # Zhou et al. (2010), "Solving the apparent diversity-accuracy dilemma", novelty as
    # self-information of the recommended items, averaged per list then over lists.
    top = _check_recommended(recommended, k)
    popularity = np.asarray(item_popularity, dtype=np.float64)
    if popularity.ndim != 1:
        raise ValueError(f"item_popularity must be 1-D (n_items,), got shape {popularity.shape}")
    if np.isnan(popularity).any() or (popularity < 0).any() or (popularity > 1).any():
        raise ValueError("item_popularity must be fractions in [0, 1] without NaN")
    _check_item_range(top, popularity.size, "item_popularity")
    top, valid = _valid_lists(top, min_items=1)
    information = -np.log2(np.clip(popularity, eps, 1.0))
    # A trailing 0 makes padding (-1) index a zero: padded slots add nothing to the sum.
    per_slot = np.append(information, 0.0)[top]
    return float((per_slot.sum(axis=1) / valid.sum(axis=1)).mean())


def intra_list_diversity(recommended: np.ndarray, item_vectors: np.ndarray, k: int) -> float:
    """Mean over lists of the mean pairwise cosine distance (1 - cos) among valid top-k items.

    Lists with fewer than two valid items are left out. Every recommended item needs a
    nonzero vector.
    """
    # Ziegler et al. (2005) intra-list similarity, as a distance. With unit vectors e_i the
    # pair sum needs no k×k matmul: Σ_{i<j} cos(i, j) = (‖Σ_i e_i‖² − m) / 2 for m items.
    top = _check_recommended(recommended, k)
    vectors = np.asarray(item_vectors, dtype=np.float64)
    if vectors.ndim != 2:
        raise ValueError(f"item_vectors must be 2-D (n_items, d), got shape {vectors.shape}")
    if not np.isfinite(vectors).all():
        raise ValueError("item_vectors holds NaN or inf")
    _check_item_range(top, vectors.shape[0], "item_vectors")
    top, valid = _valid_lists(top, min_items=2)
    norms = np.linalg.norm(vectors, axis=1)
    zero = norms == 0
    if zero.any() and zero[top[valid]].any():
        raise ValueError(
            f"item_vectors has a zero vector for recommended item {top[valid][zero[top[valid]]][0]}"
        )
    # A trailing zero row makes padding (-1) gather a zero vector, which adds nothing.
    unit = np.vstack([vectors / np.where(zero, 1.0, norms)[:, None], np.zeros(vectors.shape[1])])

    n_in_list = valid.sum(axis=1).astype(np.float64)
    pair_cosine_sum = np.empty(top.shape[0])
    for start in range(0, top.shape[0], _DIVERSITY_BLOCK_USERS):
        block_top = top[start : start + _DIVERSITY_BLOCK_USERS]
        summed = np.zeros((block_top.shape[0], unit.shape[1]))
        for position in range(k):
            summed += unit[block_top[:, position]]
        squared_norm = np.einsum("ij,ij->i", summed, summed)
        pair_cosine_sum[start : start + block_top.shape[0]] = (
            squared_norm - n_in_list[start : start + block_top.shape[0]]
        ) / 2
    n_pairs = n_in_list * (n_in_list - 1) / 2
    return float((1.0 - pair_cosine_sum / n_pairs).mean())


# ------------------------------------------------------------------------- prediction


def _check_pair(
    y_true: np.ndarray, y_other: np.ndarray, other_name: str
) -> tuple[np.ndarray, np.ndarray]:
    """Both as flat float64 after checking: non-empty, equal shapes, no NaN/inf."""
    true = np.asarray(y_true, dtype=np.float64)
    other = np.asarray(y_other, dtype=np.float64)
    if true.shape != other.shape:
        raise ValueError(
            f"y_true and {other_name} must have the same shape, got {true.shape} and {other.shape}"
        )
    if true.size == 0:
        raise ValueError(f"y_true and {other_name} are empty")
    for name, values in (("y_true", true), (other_name, other)):
        if not np.isfinite(values).all():
            raise ValueError(f"{name} holds NaN or inf")
    return true.ravel(), other.ravel()


def _check_binary(y_true: np.ndarray) -> None:
    if not np.isin(y_true, (0.0, 1.0)).all():
        raise ValueError("y_true must hold binary labels 0/1")


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Root mean squared error."""
    true, pred = _check_pair(y_true, y_pred, "y_pred")
    return float(np.sqrt(np.mean((true - pred) ** 2)))


def mae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean absolute error."""
    true, pred = _check_pair(y_true, y_pred, "y_pred")
    return float(np.mean(np.abs(true - pred)))


def auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """ROC AUC = P(score of a random positive > a random negative), ties counting 1/2."""
    # Mann–Whitney U (Hanley & McNeil 1982): AUC = (R₊ − n₊(n₊+1)/2) / (n₊ n₋), R₊ the sum
    # of the positives' ranks; average ranks for ties give each tied pair 1/2.
    true, score = _check_pair(y_true, y_score, "y_score")
    _check_binary(true)
    positive = true == 1.0
    n_positive = int(positive.sum())
    n_negative = true.size - n_positive
    if n_positive == 0 or n_negative == 0:
        raise ValueError("y_true holds a single class; AUC needs both 0 and 1")
    ranks = rankdata(score, method="average")
    rank_sum = ranks[positive].sum()
    return float((rank_sum - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative))


def logloss(y_true: np.ndarray, y_prob: np.ndarray, eps: float = 1e-15) -> float:
    """Mean binary cross-entropy, natural log; y_prob clipped to [eps, 1 - eps]."""
    true, prob = _check_pair(y_true, y_prob, "y_prob")
    _check_binary(true)
    if (prob < 0).any() or (prob > 1).any():
        raise ValueError("y_prob must be probabilities in [0, 1]")
    prob = np.clip(prob, eps, 1.0 - eps)
    return float(-np.mean(true * np.log(prob) + (1.0 - true) * np.log1p(-prob)))


def per_user(
    name: str, recommended: np.ndarray, relevant: sp.sparray | sp.spmatrix, k: int
) -> np.ndarray:
    """One value per user with a relevant item (users without one are left out): the terms
    whose mean the *_at_k functions report, for standard errors and paired comparisons.
    `name` is one of recall, precision, ndcg, mrr, map, hitrate."""
    if name not in _PER_USER:
        raise ValueError(f"unknown metric {name!r}; known: {', '.join(_PER_USER)}")
    hits, n_relevant = _evaluated(*_hits_and_counts(recommended, relevant, k))
    return _PER_USER[name](hits, n_relevant)


def mean_and_error(values: np.ndarray) -> tuple[float, float]:
    """Mean and its standard error (sample standard deviation / sqrt(n))."""
    values = np.asarray(values, dtype=np.float64)
    if not len(values):
        raise ValueError("no values: the mean is undefined")
    error = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else 0.0
    return float(values.mean()), float(error)
