"""The offline builders of the i2i lists (seed 004, "i2i-списки"): every item gets its most
similar items, one list per kind:

- "als": cosine of the iALS item factors (seed 004, "ALS"; exact search with faiss);
- "npmi": co-occurrence in users' positive histories, scored by NPMI (seed 004,
  "Бизнесовые кандгены" names NPMI among the "топы по близости");
- "content": category Jaccard and TF-IDF cosine of the titles (seed 004, "i2i-списки":
  "возьмем все контентное, что сможем ... построить топчик по похожести");
- "cosine": cosine of co-occurrence in users' latest items of any event type (item-kNN),
  the lists the sequence-aware last_items generator and features read;
- "covisit": the same cosine over short windows of consecutive items of a user's sequence
  (items met close together), read by the sequence features.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import faiss
import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from candidates.i2i.lists import NeighborLists, TieOrder
from recsys.config import I2IConfig
from recsys.interactions import TrainingData

# Sparse products are cut into row blocks of at most this many multiply-adds, which also
# bounds the block's result (and the sort over it) to a few hundred MB.
BLOCK_PAIRS = 1 << 23
ALS_QUERY_BATCH = 16_384
# A title word shared by more items than this proposes no text candidates (it still counts
# in the exact cosine): it bounds the text product to nnz(TF-IDF) * TEXT_CANDIDATE_MAX_DF.
TEXT_CANDIDATE_MAX_DF = 200
PAIR_CHUNK = 1 << 20  # candidate pairs scored at once


def item_popularity(data: TrainingData) -> np.ndarray:
    """Number of positive events per item: the tie-break of every list."""
    return np.bincount(data.event_items[data.event_positive], minlength=len(data.items))


def _row_blocks(cost: np.ndarray, max_rows: int, show: bool, what: str) -> Iterator[slice]:
    """Consecutive row slices whose summed cost stays near BLOCK_PAIRS (a row above it gets
    a block of its own), at most `max_rows` rows each."""
    total = np.cumsum(cost, dtype=np.int64)
    n, start = len(cost), 0
    with tqdm(total=n, disable=not show, desc=what, unit="item") as progress:
        while start < n:
            spent = total[start - 1] if start else 0
            stop = int(np.searchsorted(total, spent + BLOCK_PAIRS, side="right"))
            stop = min(max(stop, start + 1), start + max_rows, n)
            yield slice(start, stop)
            progress.update(stop - start)
            start = stop


def _key_bits(n_items: int) -> tuple[int, int]:
    """Bits of the packed sort key (row | score | tie rank): (row bits, rank bits)."""
    rank_bits = max(1, (n_items - 1).bit_length())
    return 64 - 32 - rank_bits, rank_bits


def _descending_score_bits(scores: np.ndarray) -> np.ndarray:
    """uint32 codes of float32 scores whose ascending order is the scores' descending one."""
    bits = scores.astype(np.float32).view(np.uint32)
    ascending = np.where(bits >> 31 == 1, ~bits, bits | np.uint32(1 << 31))
    return ~ascending


def _scores_from_bits(codes: np.ndarray) -> np.ndarray:
    ascending = ~codes.astype(np.uint32)
    bits = np.where(ascending >> 31 == 1, ascending & np.uint32((1 << 31) - 1), ~ascending)
    return bits.view(np.float32)


def top_per_row(
    rows: np.ndarray, cols: np.ndarray, scores: np.ndarray, n_rows: int, k: int, order: TieOrder
) -> NeighborLists:
    """The k best (row, col, score) triplets per row: score descending, then the tie order.

    One np.sort of packed uint64 keys (row, descending score bits, tie rank of col): much
    faster than a lexsort over three arrays, and exact (float32 scores keep all their bits).
    `rows` must be < 2 ** row bits of `_key_bits` (blocks are cut to fit).
    """
    row_bits, rank_bits = _key_bits(len(order.rank))
    if n_rows > 1 << row_bits:
        raise ValueError(f"{n_rows} rows do not fit a {row_bits}-bit row key")
    keys = (
        (rows.astype(np.uint64) << np.uint64(32 + rank_bits))
        | (_descending_score_bits(scores).astype(np.uint64) << np.uint64(rank_bits))
        | order.rank[cols].astype(np.uint64)
    )
    keys.sort()
    rows = (keys >> np.uint64(32 + rank_bits)).astype(np.int64)
    counts = np.bincount(rows, minlength=n_rows)
    position = np.arange(len(keys)) - np.repeat(np.cumsum(counts) - counts, counts)
    keep = position < k
    keys, rows, position = keys[keep], rows[keep], position[keep]
    rank = (keys & np.uint64((1 << rank_bits) - 1)).astype(np.int64)
    score_bits = (keys >> np.uint64(rank_bits)) & np.uint64(0xFFFFFFFF)
    result = NeighborLists.empty(n_rows, k)
    result.ids[rows, position] = order.items[rank]
    result.scores[rows, position] = _scores_from_bits(score_bits)
    return result


def drop_self(ids: np.ndarray, scores: np.ndarray, own: np.ndarray, k: int) -> NeighborLists:
    """Remove each row's own item (and -1s), keep the order, cut or pad to k columns."""
    ids = np.where(ids == own[:, None], -1, ids)
    order = np.argsort(ids < 0, axis=1, kind="stable")[:, :k]
    ids = np.take_along_axis(ids, order, axis=1)
    scores = np.where(ids >= 0, np.take_along_axis(scores, order, axis=1), -np.inf)
    missing = k - ids.shape[1]
    if missing > 0:
        ids = np.pad(ids, ((0, 0), (0, missing)), constant_values=-1)
        scores = np.pad(scores, ((0, 0), (0, missing)), constant_values=-np.inf)
    return NeighborLists(ids.astype(np.int64), scores.astype(np.float32))


def _write(target: NeighborLists, rows: slice, block: NeighborLists) -> None:
    target.ids[rows] = block.ids
    target.scores[rows] = block.scores


# --- "als": cosine of ALS item factors -----------------------------------------------------


def als_neighbors(unit: np.ndarray, k: int, show_progress: bool = False) -> NeighborLists:
    """Top-k items by cosine of the unit ALS factors (seed 004, "ALS" vectors, "i2i-списки").

    Exact inner-product search in faiss (IndexFlatIP): at 100k x 64, top-51, on the 2-core
    box it took 2.9 s per 20k queries against 20.4 s for chunked matmul + top_k_batch (its
    heap selection avoids argpartition's extra passes over each 100k-score row). Zero rows
    (items ALS never saw) are neither queried nor indexed: their lists stay empty.
    """
    n_items, dim = unit.shape
    result = NeighborLists.empty(n_items, k)
    seen = np.flatnonzero(np.abs(unit).sum(axis=1) > 0)
    if len(seen) < 2:
        return result
    index = faiss.IndexFlatIP(dim)
    index.add(unit[seen])
    depth = min(k + 1, len(seen))  # + 1: the item itself comes back (cosine 1)
    batches = range(0, len(seen), ALS_QUERY_BATCH)
    for start in tqdm(batches, disable=not show_progress, desc="i2i als", unit="batch"):
        queries = seen[start : start + ALS_QUERY_BATCH]
        scores, found = index.search(unit[queries], depth)
        found = np.where(found >= 0, seen[np.maximum(found, 0)], -1)
        block = drop_self(found, scores, queries, k)
        result.ids[queries], result.scores[queries] = block.ids, block.scores
    return result


# --- "npmi": co-occurrence in positive histories -------------------------------------------


def recent_positive_matrix(data: TrainingData, history_limit: int) -> sp.csr_matrix:
    """Binary users x items: each user's last `history_limit` distinct positive items.

    The cap bounds the quadratic cost of co-occurrence (a user with h items adds h² pairs);
    an item positive again later counts as recent.
    """
    return recent_item_matrix(data, history_limit, data.event_positive)


def recent_item_matrix(
    data: TrainingData, history_limit: int, counted: np.ndarray | None = None
) -> sp.csr_matrix:
    """Binary users x items: each user's last `history_limit` distinct items among the
    `counted` events (bool per event; None: every event)."""
    counted = np.ones(len(data.event_items), bool) if counted is None else counted
    chosen = np.flatnonzero(counted)[::-1]  # events are in time order: newest first
    users, items = data.event_users[chosen], data.event_items[chosen]
    _, latest = np.unique(users * len(data.items) + items, return_index=True)
    latest.sort()  # distinct (user, item) pairs, newest first
    users, items = users[latest], items[latest]
    by_user = np.argsort(users, kind="stable")  # grouped by user, newest first within
    users, items = users[by_user], items[by_user]
    counts = np.bincount(users, minlength=len(data.users))
    recency = np.arange(len(users)) - np.repeat(np.cumsum(counts) - counts, counts)
    keep = recency < history_limit
    return sp.csr_matrix(
        (np.ones(int(keep.sum()), np.float32), (users[keep], items[keep])),
        shape=(len(data.users), len(data.items)),
    )


def npmi(pair_count: np.ndarray, count_i: np.ndarray, count_j: np.ndarray, n: int) -> np.ndarray:
    """NPMI(i, j) = log(p(i,j) / (p(i) p(j))) / (-log p(i,j)) with p = count / n
    (seed 004, "Бизнесовые кандгены": NPMI); 1 where p(i,j) = 1 (the limit of the formula)."""
    log_pair = np.log(pair_count / n)
    pmi = log_pair - np.log(count_i / n) - np.log(count_j / n)
    return np.divide(pmi, -log_pair, out=np.ones_like(pmi), where=log_pair < 0)


def npmi_neighbors(
    data: TrainingData, config: I2IConfig, order: TieOrder, show_progress: bool = False
) -> NeighborLists:
    """Top items by NPMI of co-occurrence in users' recent positive histories.

    N = users with positives; pairs seen by fewer than `npmi_min_count` users are dropped,
    and so are pairs with NPMI <= 0 (no more often together than by chance: not neighbours).
    """
    histories = recent_positive_matrix(data, config.history_limit)
    n_users = int((np.diff(histories.indptr) > 0).sum())
    return _cooccurrence_neighbors(
        histories,
        lambda together, count_i, count_j: npmi(together, count_i, count_j, n_users),
        config.npmi_min_count,
        config.neighbors,
        order,
        show_progress,
        "i2i npmi",
    )


def cosine(together: np.ndarray, count_i: np.ndarray, count_j: np.ndarray) -> np.ndarray:
    """Cosine of two binary columns from their co-occurrence: together / sqrt(n_i * n_j)."""
    return together / np.sqrt(count_i * count_j)


def cosine_neighbors(
    data: TrainingData, config: I2IConfig, order: TieOrder, show_progress: bool = False
) -> NeighborLists:
    """Top items by cosine of co-occurrence in users' latest items of any event type:
    together / sqrt(count_i * count_j), the item-kNN of the last-item baselines (a view or a
    low rating says what the user looked at next, which is what a next-item list wants)."""
    histories = recent_item_matrix(data, config.history_limit)
    return _cooccurrence_neighbors(
        histories,
        cosine,
        1,
        config.neighbors,
        order,
        show_progress,
        "i2i cosine",
    )


def covisit_neighbors(
    data: TrainingData, config: I2IConfig, order: TieOrder, show_progress: bool = False
) -> NeighborLists:
    """Top items by cosine of co-occurrence within windows of `config.covisit_window`
    consecutive items of each user's latest `history_limit` items (any event type): rows
    are the windows, not the users, so only items met close together co-occur. Windows start
    every half window, so every pair less than half a window apart shares one."""
    windows = sequence_windows(data, config.history_limit, config.covisit_window)
    return _cooccurrence_neighbors(
        windows,
        cosine,
        1,
        config.neighbors,
        order,
        show_progress,
        "i2i covisit",
    )


def sequence_windows(data: TrainingData, history_limit: int, window: int) -> sp.csr_matrix:
    """Binary windows x items: each user's latest `history_limit` events in time order (an
    item repeated back to back counts once), cut into windows of `window` items starting
    every `window // 2` items."""
    by_user = np.argsort(data.event_users, kind="stable")  # events are in time order
    users, items = data.event_users[by_user], data.event_items[by_user]
    repeat = np.r_[False, (users[1:] == users[:-1]) & (items[1:] == items[:-1])]
    users, items = users[~repeat], items[~repeat]
    counts = np.bincount(users, minlength=len(data.users))
    from_end = np.repeat(np.cumsum(counts), counts) - np.arange(len(users))  # 1 = newest
    keep = from_end <= history_limit
    users, items, position = users[keep], items[keep], (history_limit - from_end[keep])
    step = max(window // 2, 1)
    rows, columns = [], []
    offset = 0
    for shift in range(0, window, step):  # each shift tiles the sequence with windows
        key = users * (history_limit // step + 2) + (position + shift) // window
        unique, row = np.unique(key, return_inverse=True)
        rows.append(row + offset)
        columns.append(items)
        offset += len(unique)
    matrix = sp.csr_matrix(
        (
            np.ones(sum(len(r) for r in rows), np.float32),
            (np.concatenate(rows), np.concatenate(columns)),
        ),
        shape=(offset, len(data.items)),
    )
    matrix.data[:] = 1.0  # an item twice in a window counts once
    return matrix


def _cooccurrence_neighbors(
    histories: sp.csr_matrix,
    score_of: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
    min_count: int,
    k: int,
    order: TieOrder,
    show_progress: bool,
    what: str,
) -> NeighborLists:
    """Top-k items per item by score_of(pair count, count_i, count_j) of co-occurrence in
    the binary users x items `histories`; C = Xᵀ X in blocks of item rows (never the full
    item x item product). Pairs seen fewer than `min_count` times or scoring <= 0 are no
    neighbours."""
    n_items = histories.shape[1]
    result = NeighborLists.empty(n_items, k)
    if not histories.nnz:
        return result
    item_users = histories.T.tocsr()
    item_count = np.diff(item_users.indptr).astype(np.float64)
    # Multiply-adds of row i of Xᵀ X: Σ over its users of their history length.
    cost = item_users @ np.diff(histories.indptr).astype(np.int64)
    row_bits, _ = _key_bits(n_items)
    for rows in _row_blocks(cost, 1 << row_bits, show_progress, what):
        pairs = item_users[rows] @ histories
        local = np.repeat(np.arange(pairs.shape[0]), np.diff(pairs.indptr))
        item, other, together = local + rows.start, pairs.indices, pairs.data
        keep = (other != item) & (together >= min_count)
        local, item, other, together = local[keep], item[keep], other[keep], together[keep]
        score = score_of(together.astype(np.float64), item_count[item], item_count[other])
        keep = score > 0
        block = top_per_row(local[keep], other[keep], score[keep], pairs.shape[0], k, order)
        _write(result, rows, block)
    return result


# --- "content": category Jaccard and title TF-IDF ------------------------------------------


def category_signatures(categories: sp.csr_matrix) -> tuple[np.ndarray, sp.csr_matrix]:
    """Distinct category sets: (signature index per item, bool signatures x categories).

    Jaccard depends on the set only, and catalogs repeat a few sets over many items, so the
    set-to-set work is done once per distinct set. Sets are told apart by a 64-bit sum of
    random per-category codes, then checked exactly (a collision would raise).
    """
    categories = categories.tocsr().astype(bool)
    categories.sum_duplicates()
    code = np.random.default_rng(0).integers(0, 2**63, categories.shape[1], dtype=np.uint64)
    running = np.concatenate([[np.uint64(0)], np.cumsum(code[categories.indices], dtype=np.uint64)])
    set_code = running[categories.indptr[1:]] - running[categories.indptr[:-1]]  # wraps mod 2**64
    _, first, signature = np.unique(set_code, return_index=True, return_inverse=True)
    signatures = categories[first]
    if (signatures[signature] != categories).nnz:
        raise ValueError("category set codes collided; change the seed in category_signatures")
    return signature.astype(np.int64), signatures


def _signature_heads(
    signature: np.ndarray, n_signatures: int, depth: int, order: TieOrder
) -> sp.csr_matrix:
    """signatures x items, 1 for the first `depth` items of each signature in tie order."""
    items = order.items[np.argsort(signature[order.items], kind="stable")]
    owner = signature[items]
    counts = np.bincount(owner, minlength=n_signatures)
    position = np.arange(len(items)) - np.repeat(np.cumsum(counts) - counts, counts)
    head = position < depth
    return sp.csr_matrix(
        (np.ones(int(head.sum()), np.float32), (owner[head], items[head])),
        shape=(n_signatures, len(signature)),
    )


def jaccard_candidates(
    categories: sp.csr_matrix, depth: int, order: TieOrder, show_progress: bool = False
) -> tuple[np.ndarray, NeighborLists]:
    """Per distinct category set, the `depth` items of highest Jaccard (ties: tie order).

    Returns (signature per item, lists per signature). Items of one set share a list, which
    may hold the item itself. For a set s only the head (first `depth` items) of every other
    set t can make the list, so J(s, ·) @ heads is all that is scored.
    """
    signature, signatures = category_signatures(categories)
    n_signatures = signatures.shape[0]
    result = NeighborLists.empty(n_signatures, depth)
    members = signatures.astype(np.float32)
    size = np.asarray(members.sum(axis=1)).ravel()
    heads = _signature_heads(signature, n_signatures, depth, order)
    head_size = np.asarray(heads.sum(axis=1)).ravel()
    # Upper bound on the entries of row s of J @ heads: Σ over its categories' sets' heads.
    cost = (members @ (members.T @ head_size)).astype(np.int64)
    row_bits, _ = _key_bits(len(signature))
    for rows in _row_blocks(cost, 1 << row_bits, show_progress, "i2i content sets"):
        inter = (members[rows] @ members.T).tocsr()
        local = np.repeat(np.arange(inter.shape[0]), np.diff(inter.indptr))
        inter.data = inter.data / (size[local + rows.start] + size[inter.indices] - inter.data)
        scored = (inter @ heads).tocsr()  # each item sits in one set: no sums, just J
        local = np.repeat(np.arange(scored.shape[0]), np.diff(scored.indptr))
        block = top_per_row(local, scored.indices, scored.data, scored.shape[0], depth, order)
        _write(result, rows, block)
    return signature, result


def title_tfidf(texts: np.ndarray) -> sp.csr_matrix | None:
    """L2-normalised TF-IDF rows of the titles (so a dot product is the cosine); None when
    no title has a word."""
    if not any(len(str(text).strip()) for text in texts):
        return None
    # Offline only: importing scikit-learn here keeps the serving start-up light.
    from sklearn.feature_extraction.text import TfidfVectorizer

    try:
        return TfidfVectorizer(dtype=np.float32).fit_transform(texts.astype(str)).tocsr()
    except ValueError:  # "empty vocabulary": only one-letter words or stop words
        return None


def _pair_dot(matrix: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Row-wise dot products matrix[rows[p]] · matrix[cols[p]] for every pair p, in chunks
    (each gathers two pairs x columns matrices)."""
    chunks = [
        np.asarray(
            matrix[rows[s : s + PAIR_CHUNK]].multiply(matrix[cols[s : s + PAIR_CHUNK]]).sum(1)
        )
        for s in range(0, len(rows), PAIR_CHUNK)
    ]
    return np.concatenate(chunks).ravel() if chunks else np.empty(0, np.float32)


def content_neighbors(
    data: TrainingData, config: I2IConfig, order: TieOrder, show_progress: bool = False
) -> NeighborLists:
    """Top items by (1 - w) * Jaccard(categories) + w * cosine(TF-IDF of titles), w =
    text_weight (seed 004, "i2i-списки": content similarity); the text part is 0 without text.

    Without titles the lists are exactly the top Jaccard sets' heads. With titles each
    item's candidates are its set's 2k+1 best Jaccard items plus every item sharing a title
    word used by at most TEXT_CANDIDATE_MAX_DF items; the candidates are then scored exactly.
    """
    n_items, k, weight = len(data.items), config.neighbors, config.text_weight
    text = title_tfidf(data.item_text)
    depth = k + 1 if text is None else 2 * k + 1
    signature, by_set = jaccard_candidates(data.item_categories, depth, order, show_progress)
    result = NeighborLists.empty(n_items, k)
    if text is None:
        for rows in _row_blocks(np.full(n_items, depth), n_items, False, ""):
            own = np.arange(rows.start, rows.stop)
            ids, scores = by_set.ids[signature[rows]], by_set.scores[signature[rows]]
            _write(result, rows, drop_self(ids, (1.0 - weight) * scores, own, k))
        return result
    members = data.item_categories.tocsr().astype(np.float32)
    size = np.asarray(members.sum(axis=1)).ravel()
    rare = np.diff(text.tocsc().indptr) <= TEXT_CANDIDATE_MAX_DF
    rare_text = (text @ sp.diags(rare.astype(np.float32))).tocsr()
    rare_text.eliminate_zeros()
    rare_text.data[:] = 1.0
    cost = (rare_text @ np.asarray(rare_text.sum(axis=0)).ravel()).astype(np.int64) + depth
    row_bits, _ = _key_bits(n_items)
    for rows in _row_blocks(cost, 1 << row_bits, show_progress, "i2i content items"):
        local, cols = _content_pairs(rows, signature, by_set, rare_text)
        item = local + rows.start
        inter = _pair_dot(members, item, cols)
        union = size[item] + size[cols] - inter
        jaccard = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        score = (1.0 - weight) * jaccard + weight * _pair_dot(text, item, cols)
        keep = score > 0
        block = top_per_row(local[keep], cols[keep], score[keep], rows.stop - rows.start, k, order)
        _write(result, rows, block)
    return result


def _content_pairs(
    rows: slice, signature: np.ndarray, by_set: NeighborLists, rare_text: sp.csr_matrix
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct candidate pairs (local row, item) of an item block, without self pairs:
    the set's Jaccard heads and the items sharing a rare title word."""
    heads = by_set.ids[signature[rows]]
    head_rows = np.repeat(np.arange(heads.shape[0]), heads.shape[1])
    shared = (rare_text[rows] @ rare_text.T).tocsr()
    text_rows = np.repeat(np.arange(shared.shape[0]), np.diff(shared.indptr))
    local = np.concatenate([head_rows, text_rows])
    cols = np.concatenate([heads.ravel(), shared.indices.astype(np.int64)])
    keep = (cols >= 0) & (cols != local + rows.start)
    n_items = len(signature)
    pair = np.sort(local[keep] * n_items + cols[keep])  # sort-based: np.unique hashes, slower
    pair = pair[np.concatenate([[True], pair[1:] != pair[:-1]])]
    return pair // n_items, pair % n_items
