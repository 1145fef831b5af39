"""recsys.metrics against hand-computed cases and independent brute-force references."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pytest
import scipy.sparse as sp

from recsys import metrics

# ------------------------------------------------------------------------------ helpers


def relevant_matrix(sets: list[set[int]], n_items: int) -> sp.csr_matrix:
    """csr (len(sets), n_items) bool with row u = sets[u]."""
    rows = [u for u, items in enumerate(sets) for _ in items]
    cols = [i for items in sets for i in sorted(items)]
    data = np.ones(len(rows), dtype=bool)
    return sp.csr_matrix((data, (rows, cols)), shape=(len(sets), n_items), dtype=bool)


def reference_per_user(ranked: list[int], relevant: set[int], k: int) -> dict[str, float]:
    """Textbook per-user definitions, one user at a time, no vectorisation."""
    seen: set[int] = set()
    hit_ranks = []
    for rank, item in enumerate(ranked[:k], start=1):
        if item >= 0 and item in relevant and item not in seen:
            hit_ranks.append(rank)
        seen.add(item)
    dcg = sum(1 / math.log2(rank + 1) for rank in hit_ranks)
    idcg = sum(1 / math.log2(rank + 1) for rank in range(1, min(len(relevant), k) + 1))
    precisions_at_hits = [(n + 1) / rank for n, rank in enumerate(hit_ranks)]
    return {
        "recall": len(hit_ranks) / len(relevant),
        "precision": len(hit_ranks) / k,
        "ndcg": dcg / idcg,
        "mrr": 1 / hit_ranks[0] if hit_ranks else 0.0,
        "map": sum(precisions_at_hits) / min(len(relevant), k),
        "hitrate": float(bool(hit_ranks)),
    }


def random_ranking_case(
    seed: int, n_users: int, n_items: int, big_k: int
) -> tuple[np.ndarray, list[set[int]]]:
    """Distinct-item lists with random -1 padding, and random relevant sets (some empty)."""
    rng = np.random.default_rng(seed)
    recommended = np.argsort(rng.random((n_users, n_items)), axis=1)[:, :big_k].astype(np.int64)
    lengths = rng.integers(0, big_k + 1, size=n_users)
    recommended[np.arange(big_k)[None, :] >= lengths[:, None]] = -1
    relevant_sets = []
    for _ in range(n_users):
        size = rng.integers(0, 8)
        relevant_sets.append(set(rng.choice(n_items, size=size, replace=False).tolist()))
    # plant a few hits from each list
    for u in range(n_users):
        valid = recommended[u][recommended[u] >= 0]
        if valid.size and rng.random() < 0.7:
            relevant_sets[u] |= set(rng.choice(valid, size=min(2, valid.size)).tolist())
    return recommended, relevant_sets


# Tiny case used by several tests. n_items = 6, K = 4.
#   user 0: list [0, 1, 2, 3], relevant {1, 3, 5} -> hits at ranks 2 and 4
#   user 1: list [4, 5, -1, -1] (padded), relevant {4} -> hit at rank 1
#   user 2: list [0, 1, 2, 3], relevant {} -> ignored by every mean
#   user 3: list [5, 4, 3, 2], relevant {0} -> no hit
TINY_RECOMMENDED = np.array(
    [[0, 1, 2, 3], [4, 5, -1, -1], [0, 1, 2, 3], [5, 4, 3, 2]], dtype=np.int64
)
TINY_RELEVANT = relevant_matrix([{1, 3, 5}, {4}, set(), {0}], n_items=6)

# ------------------------------------------------------------------------ hits matrix


def test_hits_matrix_tiny() -> None:
    expected = np.array(
        [[0, 1, 0, 1], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]],
        dtype=bool,
    )
    np.testing.assert_array_equal(metrics.hits_matrix(TINY_RECOMMENDED, TINY_RELEVANT, 4), expected)
    np.testing.assert_array_equal(
        metrics.hits_matrix(TINY_RECOMMENDED, TINY_RELEVANT, 2), expected[:, :2]
    )


def test_padding_never_matches_the_previous_users_last_item() -> None:
    # user * n_items + (-1) == (user - 1) * n_items + (n_items - 1): the key of user 0's
    # relevant last item; padding must still not hit.
    recommended = np.array([[0, -1], [-1, 2]], dtype=np.int64)
    relevant = relevant_matrix([{2}, {2}], n_items=3)
    np.testing.assert_array_equal(
        metrics.hits_matrix(recommended, relevant, 2), [[False, False], [False, True]]
    )


def test_repeated_item_hits_only_at_its_first_position() -> None:
    # list [1, 1, 3], relevant {1}: one hit at rank 1 -> recall 1/1 (not 2), precision 1/3
    recommended = np.array([[1, 1, 3]], dtype=np.int64)
    relevant = relevant_matrix([{1}], n_items=4)
    np.testing.assert_array_equal(metrics.hits_matrix(recommended, relevant, 3), [[1, 0, 0]])
    assert metrics.recall_at_k(recommended, relevant, 3) == pytest.approx(1.0)
    assert metrics.precision_at_k(recommended, relevant, 3) == pytest.approx(1 / 3)


def test_non_canonical_relevant_matrix() -> None:
    # Row 0 stores items 3, 1, 3 (unsorted, duplicated) and an explicit zero at item 2;
    # row 1 stores item 0 only as an explicit zero, so user 1 has no relevant item.
    data = np.array([1, 1, 1, 0, 0], dtype=np.int8)
    indices = np.array([3, 1, 3, 2, 0], dtype=np.int32)
    indptr = np.array([0, 4, 5], dtype=np.int32)
    relevant = sp.csr_matrix((data, indices, indptr), shape=(2, 4))
    relevant.has_sorted_indices = False
    recommended = np.array([[2, 3, 0], [0, 1, 2]], dtype=np.int64)
    np.testing.assert_array_equal(
        metrics.hits_matrix(recommended, relevant, 3), [[0, 1, 0], [0, 0, 0]]
    )
    # only user 0 counts: |relevant| = |{1, 3}| = 2, one hit -> recall 1/2
    assert metrics.recall_at_k(recommended, relevant, 3) == pytest.approx(0.5)


def test_accepts_csr_array_and_other_sparse_formats() -> None:
    expected = metrics.ranking_report(TINY_RECOMMENDED, TINY_RELEVANT, 4)
    for relevant in (sp.csr_array(TINY_RELEVANT), TINY_RELEVANT.tocoo(), TINY_RELEVANT.tocsc()):
        assert metrics.ranking_report(TINY_RECOMMENDED, relevant, 4) == pytest.approx(expected)


# ---------------------------------------------------------------- ranking, hand-computed

# Per user of the tiny case at k = 4 (user 2 ignored, so every mean is over 3 users):
#   user 0: hits at ranks 2, 4; |rel| = 3
#     recall 2/3; precision 2/4; DCG = 1/log2(3) + 1/log2(5);
#     IDCG = 1/log2(2) + 1/log2(3) + 1/log2(4) (min(3, 4) = 3 ideal hits);
#     MRR 1/2; AP = (1/2 + 2/4) / min(3, 4) = 1/3; hit 1
#   user 1: hit at rank 1; |rel| = 1 -> recall 1, precision 1/4, NDCG 1, MRR 1, AP 1, hit 1
#   user 3: no hit -> all 0
NDCG0_K4 = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3) + 1 / math.log2(4))
TINY_K4 = {
    "recall@4": (2 / 3 + 1 + 0) / 3,  # 5/9
    "precision@4": (2 / 4 + 1 / 4 + 0) / 3,  # 1/4
    "ndcg@4": (NDCG0_K4 + 1 + 0) / 3,
    "mrr@4": (1 / 2 + 1 + 0) / 3,  # 1/2
    "map@4": (1 / 3 + 1 + 0) / 3,  # 4/9
    "hitrate@4": (1 + 1 + 0) / 3,  # 2/3
}
# At k = 2 (k smaller than K):
#   user 0: list [0, 1], hit at rank 2; recall 1/3; precision 1/2;
#     NDCG = (1/log2(3)) / (1 + 1/log2(3)) (min(3, 2) = 2 ideal hits); MRR 1/2;
#     AP = (1/2) / min(3, 2) = 1/4; hit 1
#   user 1: list [4, 5], hit at rank 1: recall 1, precision 1/2, NDCG 1, MRR 1, AP 1, hit 1
#   user 3: all 0
NDCG0_K2 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
TINY_K2 = {
    "recall@2": (1 / 3 + 1 + 0) / 3,  # 4/9
    "precision@2": (1 / 2 + 1 / 2 + 0) / 3,  # 1/3
    "ndcg@2": (NDCG0_K2 + 1 + 0) / 3,
    "mrr@2": (1 / 2 + 1 + 0) / 3,  # 1/2
    "map@2": (1 / 4 + 1 + 0) / 3,  # 5/12
    "hitrate@2": (1 + 1 + 0) / 3,  # 2/3
}

FUNCTIONS = {
    "recall": metrics.recall_at_k,
    "precision": metrics.precision_at_k,
    "ndcg": metrics.ndcg_at_k,
    "mrr": metrics.mrr_at_k,
    "map": metrics.map_at_k,
    "hitrate": metrics.hit_rate_at_k,
}


@pytest.mark.parametrize(("k", "expected"), [(4, TINY_K4), (2, TINY_K2)])
def test_ranking_report_tiny(k: int, expected: dict[str, float]) -> None:
    report = metrics.ranking_report(TINY_RECOMMENDED, TINY_RELEVANT, k)
    assert list(report) == [f"{name}@{k}" for name in FUNCTIONS]
    assert report == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(("k", "expected"), [(4, TINY_K4), (2, TINY_K2)])
@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_each_ranking_metric_tiny(name: str, k: int, expected: dict[str, float]) -> None:
    value = FUNCTIONS[name](TINY_RECOMMENDED, TINY_RELEVANT, k)
    assert isinstance(value, float)
    assert value == pytest.approx(expected[f"{name}@{k}"], abs=1e-12)


def test_users_without_relevant_items_are_ignored() -> None:
    # Appending users with no relevant items (whatever their lists) changes no mean.
    extra = np.array([[0, 1, 2, 3], [-1, -1, -1, -1]], dtype=np.int64)
    recommended = np.vstack([TINY_RECOMMENDED, extra])
    relevant = sp.vstack([TINY_RELEVANT, sp.csr_matrix((2, 6), dtype=bool)]).tocsr()
    assert metrics.ranking_report(recommended, relevant, 4) == pytest.approx(TINY_K4)


def test_perfect_ranking() -> None:
    # Every user's relevant items fill the top of the list (|rel| <= k = 3): recall, NDCG,
    # MRR, MAP and hit rate are 1; precision = mean(|rel| / 3) = (3/3 + 1/3 + 2/3) / 3 = 2/3.
    recommended = np.array([[2, 0, 1, 5], [4, 0, 1, 2], [3, 5, -1, -1]], dtype=np.int64)
    relevant = relevant_matrix([{0, 1, 2}, {4}, {3, 5}], n_items=6)
    report = metrics.ranking_report(recommended, relevant, 3)
    assert report == pytest.approx(
        {
            "recall@3": 1.0,
            "precision@3": 2 / 3,
            "ndcg@3": 1.0,
            "mrr@3": 1.0,
            "map@3": 1.0,
            "hitrate@3": 1.0,
        }
    )


def test_perfect_ranking_with_more_relevant_than_k() -> None:
    # |rel| = 4 > k = 2, both top slots relevant: recall 2/4, precision 1, NDCG 1 (IDCG over
    # min(4, 2) = 2 ideal hits), MRR 1, AP = (1/1 + 2/2) / min(4, 2) = 1, hit 1.
    recommended = np.array([[0, 1, 2, 3]], dtype=np.int64)
    relevant = relevant_matrix([{0, 1, 2, 3}], n_items=4)
    assert metrics.ranking_report(recommended, relevant, 2) == pytest.approx(
        {
            "recall@2": 0.5,
            "precision@2": 1.0,
            "ndcg@2": 1.0,
            "mrr@2": 1.0,
            "map@2": 1.0,
            "hitrate@2": 1.0,
        }
    )


def test_worst_ranking() -> None:
    # No relevant item in any top-k list (user 1's hit is at rank 3 > k = 2): all zero.
    recommended = np.array([[3, 4, 5], [0, 1, 2]], dtype=np.int64)
    relevant = relevant_matrix([{0, 1}, {2}], n_items=6)
    report = metrics.ranking_report(recommended, relevant, 2)
    assert report == pytest.approx(dict.fromkeys(report, 0.0))


def test_only_padding_scores_zero() -> None:
    # An all-padded list hits nothing; precision still divides by k: 0 / 3.
    recommended = np.full((1, 3), -1, dtype=np.int64)
    relevant = relevant_matrix([{0}], n_items=2)
    report = metrics.ranking_report(recommended, relevant, 3)
    assert report == pytest.approx(dict.fromkeys(report, 0.0))


# ------------------------------------------------------------ ranking, against reference


@pytest.mark.parametrize("k", [1, 5, 20])
@pytest.mark.parametrize("block_users", [7, 4096])
def test_ranking_against_per_user_loop(
    k: int, block_users: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # block_users = 7 runs the blocked search over many small blocks, with ragged ends.
    monkeypatch.setattr(metrics, "_HITS_BLOCK_USERS", block_users)
    recommended, relevant_sets = random_ranking_case(seed=k, n_users=300, n_items=60, big_k=20)
    relevant = relevant_matrix(relevant_sets, n_items=60)

    scored = [u for u in range(len(relevant_sets)) if relevant_sets[u]]
    per_user = [reference_per_user(recommended[u].tolist(), relevant_sets[u], k) for u in scored]
    expected = {f"{name}@{k}": float(np.mean([r[name] for r in per_user])) for name in FUNCTIONS}

    assert metrics.ranking_report(recommended, relevant, k) == pytest.approx(expected, abs=1e-12)
    assert metrics.ndcg_at_k(recommended, relevant, k) == pytest.approx(
        expected[f"ndcg@{k}"], abs=1e-12
    )


def test_hits_matrix_against_set_membership() -> None:
    recommended, relevant_sets = random_ranking_case(seed=11, n_users=200, n_items=40, big_k=10)
    expected = np.array(
        [[item in relevant_sets[u] for item in recommended[u]] for u in range(200)], dtype=bool
    )
    got = metrics.hits_matrix(recommended, relevant_matrix(relevant_sets, 40), 10)
    np.testing.assert_array_equal(got, expected)


# ------------------------------------------------------------------------ beyond accuracy


def test_catalog_coverage() -> None:
    recommended = np.array([[0, 1, -1], [1, 2, 3]], dtype=np.int64)
    # k = 2: shown {0, 1} ∪ {1, 2} = {0, 1, 2} -> 3 / 10
    assert metrics.catalog_coverage(recommended, 10, 2) == pytest.approx(0.3)
    # k = 3: {0, 1} ∪ {1, 2, 3} = {0, 1, 2, 3} -> 4 / 10 (padding is no item)
    assert metrics.catalog_coverage(recommended, 10, 3) == pytest.approx(0.4)
    # every item shown -> 1
    assert metrics.catalog_coverage(recommended, 4, 3) == pytest.approx(1.0)


def test_novelty() -> None:
    # self-information -log2 p: p = 1/2 -> 1, 1/4 -> 2, 1/8 -> 3, 1 -> 0, 0 -> clipped to
    # eps = 2^-10 -> 10.
    popularity = np.array([0.5, 0.25, 0.125, 1.0, 0.0])
    recommended = np.array([[0, 1, -1], [2, 3, 4], [-1, -1, -1]], dtype=np.int64)
    # k = 3: list 0 (1 + 2) / 2 = 3/2; list 1 (3 + 0 + 10) / 3 = 13/3; list 2 has no item
    # and is left out -> (3/2 + 13/3) / 2 = 35/12
    assert metrics.novelty(recommended, popularity, 3, eps=2**-10) == pytest.approx(35 / 12)
    # k = 2: list 0 (1 + 2) / 2 = 3/2; list 1 (3 + 0) / 2 = 3/2 -> 3/2
    assert metrics.novelty(recommended, popularity, 2) == pytest.approx(1.5)
    # default eps = 1e-12: item 4 alone scores -log2(1e-12)
    assert metrics.novelty(np.array([[4]]), popularity, 1) == pytest.approx(-math.log2(1e-12))


def test_intra_list_diversity_tiny() -> None:
    # e0 = (1, 0), e1 = (0, 1), e2 = (1, 1) (cos with e0 and e1 = 1/√2), e3 = (2, 0) (= e0).
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0]])
    recommended = np.array([[0, 1, 2], [0, 3, -1], [1, -1, -1]], dtype=np.int64)
    # list 0: distances (0,1) 1, (0,2) 1 - 1/√2, (1,2) 1 - 1/√2 -> mean (3 - √2) / 3
    # list 1: (0,3) 1 - 1 = 0; list 2: one item, left out -> ((3 - √2) / 3 + 0) / 2
    expected = ((3 - math.sqrt(2)) / 3 + 0) / 2
    assert metrics.intra_list_diversity(recommended, vectors, 3) == pytest.approx(expected)
    # k = 2: list 0 (0,1) -> 1; list 1 (0,3) -> 0; list 2 left out -> 1/2
    assert metrics.intra_list_diversity(recommended, vectors, 2) == pytest.approx(0.5)
    # identical items only -> 0; orthogonal items only -> 1
    assert metrics.intra_list_diversity(np.array([[0, 3]]), vectors, 2) == pytest.approx(0.0)
    assert metrics.intra_list_diversity(np.array([[0, 1]]), vectors, 2) == pytest.approx(1.0)


@pytest.mark.parametrize("block_users", [5, 4096])
def test_intra_list_diversity_against_pairwise_loop(
    block_users: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics, "_DIVERSITY_BLOCK_USERS", block_users)
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((30, 8))
    recommended, _ = random_ranking_case(seed=3, n_users=50, n_items=30, big_k=6)
    k = 5
    per_list = []
    for row in recommended[:, :k]:
        items = [i for i in row if i >= 0]
        if len(items) < 2:
            continue
        distances = [
            1 - vectors[a] @ vectors[b] / (np.linalg.norm(vectors[a]) * np.linalg.norm(vectors[b]))
            for a, b in combinations(items, 2)
        ]
        per_list.append(np.mean(distances))
    got = metrics.intra_list_diversity(recommended, vectors, k)
    assert got == pytest.approx(np.mean(per_list), abs=1e-12)


# ------------------------------------------------------------------------- prediction


def test_rmse_and_mae() -> None:
    # errors 0, 0, 2: RMSE = sqrt(4 / 3), MAE = 2 / 3
    y_true, y_pred = np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 5.0])
    assert metrics.rmse(y_true, y_pred) == pytest.approx(math.sqrt(4 / 3))
    assert metrics.mae(y_true, y_pred) == pytest.approx(2 / 3)
    assert metrics.rmse(y_true, y_true) == 0.0


def test_auc_hand_computed() -> None:
    # positives 0.35, 0.8 vs negatives 0.1, 0.4: pairs won 1 + 0 + 1 + 1 = 3 of 4 -> 0.75
    assert metrics.auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    # with a tie: positives 0.5, 0.9 vs negatives 0.5, 0.2:
    # (0.5 vs 0.5) 1/2 + (0.5 vs 0.2) 1 + (0.9 vs 0.5) 1 + (0.9 vs 0.2) 1 = 3.5 of 4 -> 0.875
    assert metrics.auc([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]) == pytest.approx(0.875)
    # every score tied -> every pair 1/2 -> 0.5
    assert metrics.auc([0, 1, 1, 0, 1], [0.3] * 5) == pytest.approx(0.5)
    # perfect and worst orderings
    assert metrics.auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == pytest.approx(1.0)
    assert metrics.auc([0, 0, 1, 1], [0.4, 0.3, 0.2, 0.1]) == pytest.approx(0.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_against_pair_counting(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 2, size=300)
    # rounded scores carry many ties
    y_score = np.round(rng.random(300) + 0.3 * y_true, 1)
    positives, negatives = y_score[y_true == 1], y_score[y_true == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in positives for n in negatives)
    expected = wins / (len(positives) * len(negatives))
    assert metrics.auc(y_true, y_score) == pytest.approx(expected, abs=1e-12)


def test_logloss() -> None:
    # -(ln 0.8 + ln(1 - 0.4)) / 2
    expected = -(math.log(0.8) + math.log(0.6)) / 2
    assert metrics.logloss([1, 0], [0.8, 0.4]) == pytest.approx(expected)
    # p = 0 for a positive is clipped to eps: -ln(1e-15)
    assert metrics.logloss([1], [0.0]) == pytest.approx(-math.log(1e-15))
    # perfect confident predictions -> ~0
    assert metrics.logloss([1, 0], [1.0, 0.0]) == pytest.approx(0.0, abs=1e-12)


# ------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("recommended", "relevant", "k", "match"),
    [
        (np.array([0, 1]), TINY_RELEVANT, 1, "recommended must be 2-D"),
        (TINY_RECOMMENDED.astype(float), TINY_RELEVANT, 1, "recommended must hold integer"),
        (TINY_RECOMMENDED, TINY_RELEVANT, 0, r"k must be in \[1, K=4\]"),
        (TINY_RECOMMENDED, TINY_RELEVANT, 5, r"k must be in \[1, K=4\]"),
        (TINY_RECOMMENDED, TINY_RELEVANT, 2.0, "k must be an int"),
        (TINY_RECOMMENDED[:3], TINY_RELEVANT, 2, "n_users must match"),
        (TINY_RECOMMENDED, TINY_RELEVANT.toarray(), 2, "relevant must be a scipy.sparse"),
        (TINY_RECOMMENDED + 3, TINY_RELEVANT, 4, "item id 8 outside relevant's columns"),
        (TINY_RECOMMENDED - 2, TINY_RELEVANT, 4, "item id -3"),
        (
            TINY_RECOMMENDED,
            sp.csr_matrix((4, 6), dtype=bool),
            2,
            "no user with a relevant item",
        ),
    ],
)
def test_ranking_errors(recommended, relevant, k, match: str) -> None:
    for function in [metrics.hits_matrix, metrics.ranking_report, *FUNCTIONS.values()]:
        if function is metrics.hits_matrix and "no user" in match:
            continue  # the hits matrix itself is well defined without relevant items
        with pytest.raises(ValueError, match=match):
            function(recommended, relevant, k)


def test_beyond_accuracy_errors() -> None:
    with pytest.raises(ValueError, match="n_items must be a positive int"):
        metrics.catalog_coverage(TINY_RECOMMENDED, 0, 2)
    with pytest.raises(ValueError, match=r"outside the catalog \(n_items=5\)"):
        metrics.catalog_coverage(TINY_RECOMMENDED, 5, 2)
    with pytest.raises(ValueError, match=r"k must be in \[1, K=4\]"):
        metrics.catalog_coverage(TINY_RECOMMENDED, 6, 9)
    with pytest.raises(ValueError, match="item_popularity must be fractions"):
        metrics.novelty(TINY_RECOMMENDED, np.array([0.1, 2.0, 0.1, 0.1, 0.1, 0.1]), 2)
    with pytest.raises(ValueError, match="item_popularity must be 1-D"):
        metrics.novelty(TINY_RECOMMENDED, np.full((6, 1), 0.5), 2)
    with pytest.raises(ValueError, match="outside item_popularity"):
        metrics.novelty(TINY_RECOMMENDED, np.full(3, 0.5), 2)
    with pytest.raises(ValueError, match="no list with at least 1"):
        metrics.novelty(np.full((2, 2), -1), np.full(3, 0.5), 2)
    with pytest.raises(ValueError, match="item_vectors must be 2-D"):
        metrics.intra_list_diversity(TINY_RECOMMENDED, np.ones(6), 2)
    with pytest.raises(ValueError, match="item_vectors holds NaN"):
        metrics.intra_list_diversity(TINY_RECOMMENDED, np.full((6, 2), np.nan), 2)
    with pytest.raises(ValueError, match="zero vector for recommended item 1"):
        vectors = np.ones((6, 2))
        vectors[1] = 0
        metrics.intra_list_diversity(TINY_RECOMMENDED, vectors, 2)
    with pytest.raises(ValueError, match="no list with at least 2"):
        metrics.intra_list_diversity(np.array([[0, -1]]), np.ones((6, 2)), 2)


@pytest.mark.parametrize("function", [metrics.rmse, metrics.mae, metrics.auc, metrics.logloss])
def test_prediction_errors(function) -> None:
    with pytest.raises(ValueError, match="are empty"):
        function(np.array([]), np.array([]))
    with pytest.raises(ValueError, match=r"must have the same shape, got \(3,\) and \(2,\)"):
        function(np.array([0, 1, 1]), np.array([0.2, 0.5]))
    with pytest.raises(ValueError, match="y_true holds NaN"):
        function(np.array([0, np.nan]), np.array([0.2, 0.5]))
    with pytest.raises(ValueError, match=r"y_(pred|score|prob) holds NaN"):
        function(np.array([0, 1]), np.array([0.2, np.nan]))


def test_classification_specific_errors() -> None:
    with pytest.raises(ValueError, match="single class"):
        metrics.auc([1, 1, 1], [0.2, 0.4, 0.9])
    with pytest.raises(ValueError, match="binary labels"):
        metrics.auc([0, 2, 1], [0.2, 0.4, 0.9])
    with pytest.raises(ValueError, match="binary labels"):
        metrics.logloss([0, 0.5], [0.2, 0.4])
    with pytest.raises(ValueError, match=r"y_prob must be probabilities in \[0, 1\]"):
        metrics.logloss([0, 1], [0.2, 1.4])
