"""One contract for every ANN backend, measured against brute-force search."""

import dataclasses

import numpy as np
import pytest

from candidates.ann import BACKENDS, build_index, load_index
from recsys.config import load_config

ALL_BACKENDS = sorted(BACKENDS)


def ann_config(backend: str):
    return dataclasses.replace(load_config().ann, backend=backend, faiss_nlist=16, faiss_nprobe=12)


@pytest.fixture(scope="module")
def vectors():
    rng = np.random.default_rng(0)
    # skewed norms, like ALS item factors (DESIGN.md §3)
    base = rng.normal(size=(3000, 16)).astype(np.float32)
    return base * rng.lognormal(sigma=0.8, size=(3000, 1)).astype(np.float32)


@pytest.fixture(scope="module")
def queries():
    return np.random.default_rng(1).normal(size=(40, 16)).astype(np.float32)


def exact_top(vectors, queries, k):
    scores = queries @ vectors.T
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_recall_against_brute_force(backend, vectors, queries):
    ids, scores = build_index(vectors, ann_config(backend)).search(queries, 50)
    truth = exact_top(vectors, queries, 50)
    recall = np.mean([len(set(a) & set(b)) / 50 for a, b in zip(ids, truth, strict=True)])
    assert recall >= 0.9, f"{backend}: recall@50 {recall:.3f}"
    assert (
        ids.shape == scores.shape == (40, 50)
        and ids.dtype == np.int64
        and scores.dtype == np.float32
    )


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_scores_are_inner_products_best_first(backend, vectors, queries):
    ids, scores = build_index(vectors, ann_config(backend)).search(queries, 10)
    expected = np.einsum("nd,nkd->nk", queries, vectors[ids])
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-3)
    assert (np.diff(scores, axis=1) <= 1e-5).all()


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_k_larger_than_the_index_is_padded(backend):
    small = np.eye(4, 8, dtype=np.float32) * np.arange(1, 5, dtype=np.float32)[:, None]
    ids, scores = build_index(small, ann_config(backend)).search(np.ones((2, 8), np.float32), 6)
    assert sorted(ids[0, :4]) == [0, 1, 2, 3] and list(ids[0, 4:]) == [-1, -1]
    assert np.isneginf(scores[:, 4:]).all()


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_save_load_gives_the_same_answers(backend, vectors, queries, tmp_path):
    index = build_index(vectors, ann_config(backend))
    index.save(tmp_path)
    loaded = load_index(tmp_path, ann_config(backend))
    assert loaded.backend == backend and loaded.size == len(vectors)
    for a, b in zip(index.search(queries, 20), loaded.search(queries, 20), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_bad_queries_are_refused(backend, vectors):
    index = build_index(vectors, ann_config(backend))
    with pytest.raises(ValueError, match="dimension 3, the index has 16"):
        index.search(np.ones((1, 3), np.float32), 5)
    with pytest.raises(ValueError, match="NaN"):
        index.search(np.full((1, 16), np.nan, np.float32), 5)
    with pytest.raises(ValueError, match="k must be positive"):
        index.search(np.ones((1, 16), np.float32), 0)
