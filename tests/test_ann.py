"""One contract for every ANN backend, measured against brute-force search."""

import dataclasses
import threading

import faiss
import numpy as np
import pytest

from candidates import ann
from candidates.ann import BACKENDS, HnswIndex, build_index, load_index
from recsys.config import load_config

ALL_BACKENDS = sorted(BACKENDS)
DIM = 16


def ann_config(backend: str, **changes):
    settings = {"backend": backend, "faiss_nlist": 16, "faiss_nprobe": 12, **changes}
    return dataclasses.replace(load_config().ann, **settings)


@pytest.fixture(scope="module", autouse=True)
def one_openmp_thread():
    # The data is tiny; on a busy machine OpenMP threads only spin against each other.
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(threads)


@pytest.fixture(scope="module")
def vectors():
    rng = np.random.default_rng(0)
    # skewed norms, like ALS item factors (DESIGN.md §3)
    base = rng.normal(size=(3000, DIM)).astype(np.float32)
    return base * rng.lognormal(sigma=0.8, size=(3000, 1)).astype(np.float32)


@pytest.fixture(scope="module")
def queries():
    return np.random.default_rng(1).normal(size=(40, DIM)).astype(np.float32)


@pytest.fixture(scope="module")
def built(vectors):
    """One index per backend for the module: indexes are immutable, so tests may share them."""
    cache = {}

    def get(backend):
        if backend not in cache:
            cache[backend] = build_index(vectors, ann_config(backend))
        return cache[backend]

    return get


@pytest.fixture(scope="module")
def new_items():
    # Huge norms: for a query along an added item's direction, u·v of that item beats any
    # catalog item (catalog norms are ~4 · lognormal(0.8), well under 1e3).
    directions = np.random.default_rng(2).normal(size=(3, DIM)).astype(np.float32)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return directions, directions * 1e4


def exact_top(vectors, queries, k):
    scores = queries @ vectors.T
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def recall(ids, truth):
    return np.mean([len(set(a) & set(b)) / truth.shape[1] for a, b in zip(ids, truth, strict=True)])


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_recall_against_brute_force(backend, built, vectors, queries):
    ids, scores = built(backend).search(queries, 50)
    found = recall(ids, exact_top(vectors, queries, 50))
    assert found >= 0.9, f"{backend}: recall@50 {found:.3f}"
    assert (
        ids.shape == scores.shape == (40, 50)
        and ids.dtype == np.int64
        and scores.dtype == np.float32
    )


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_scores_are_inner_products_best_first(backend, built, vectors, queries):
    ids, scores = built(backend).search(queries, 10)
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
def test_save_load_gives_the_same_answers(backend, built, vectors, queries, tmp_path):
    index = built(backend)
    index.save(tmp_path)
    loaded = load_index(tmp_path, ann_config(backend))
    assert loaded.backend == backend and loaded.size == len(vectors)
    for a, b in zip(index.search(queries, 20), loaded.search(queries, 20), strict=True):
        np.testing.assert_array_equal(a, b)


def test_hnsw_builds_the_same_graph_on_every_run(vectors, tmp_path):
    # Two nightlies on the same data must train their rankers on the same candidates; with
    # parallel insertion the graph's links depended on thread timing (hnsw_build_threads = 0).
    config = ann_config("hnsw", hnsw_m=16, hnsw_ef_construction=100)
    assert config.hnsw_build_threads == 1  # the shipped default
    for run in ("first", "second"):
        (tmp_path / run).mkdir()
        build_index(vectors, config).save(tmp_path / run)
    graph = HnswIndex.FILE
    assert (tmp_path / "first" / graph).read_bytes() == (tmp_path / "second" / graph).read_bytes()


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_bad_queries_are_refused(backend, built):
    index = built(backend)
    with pytest.raises(ValueError, match="dimension 3, the index has 16"):
        index.search(np.ones((1, 3), np.float32), 5)
    with pytest.raises(ValueError, match="NaN"):
        index.search(np.full((1, DIM), np.nan, np.float32), 5)
    with pytest.raises(ValueError, match="k must be positive"):
        index.search(np.ones((1, DIM), np.float32), 0)
    with pytest.raises(ValueError, match="dimension 3, the index has 16"):
        index.with_changes(np.ones((1, 3), np.float32))
    with pytest.raises(ValueError, match="infinity"):
        index.with_changes(np.full((1, DIM), np.inf, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        index.with_changes(moved=np.array([1]), moved_vectors=np.full((1, DIM), np.nan))


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_added_items_get_the_next_indices_and_are_found(backend, built, vectors, new_items):
    directions, items = new_items
    index = built(backend)
    grown = index.with_changes(items)
    assert grown.size == len(vectors) + 3 and index.size == len(vectors)  # original untouched
    ids, scores = grown.search(directions, 1)
    assert list(ids[:, 0]) == [3000, 3001, 3002]
    np.testing.assert_allclose(scores[:, 0], 1e4, rtol=1e-4)
    assert (index.search(directions, 1)[0] < 3000).all()
    assert grown.with_changes(np.empty((0, DIM), np.float32)) is grown  # nothing to copy


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_moved_items_are_found_by_their_new_vectors_only(
    backend, built, vectors, new_items, queries
):
    """The nearline's steps of hot items move them in a copy (faiss HNSW too: a new element
    per moved item, the old one passed over), and the index in service stays as it was."""
    directions, items = new_items
    index = built(backend)
    moved = index.with_changes(moved=np.array([7, 8, 9]), moved_vectors=items)
    assert moved.size == index.size == len(vectors)
    ids, scores = moved.search(directions, 1)
    assert list(ids[:, 0]) == [7, 8, 9]
    np.testing.assert_allclose(scores[:, 0], 1e4, rtol=1e-4)
    assert 7 not in index.search(directions, 1)[0]  # the index in service is untouched
    # every item found is scored by its newest vector (an old element of faiss HNSW, found
    # along its old vector, would be scored by that one), and listed once
    truth = vectors.copy()
    truth[[7, 8, 9]] = items
    asked = np.concatenate([vectors[[7, 8, 9]], queries])
    ids, scores = moved.search(asked, 20)
    expected = np.einsum("nd,nkd->nk", asked, truth[ids])
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-3)
    assert all(len(set(row)) == len(row) for row in ids)
    # the longest vector turned round: along its old direction the item was first, and now
    # is nowhere near (an old element still searched would put it first again)
    top = int(np.argmax(np.linalg.norm(vectors, axis=1)))
    along = vectors[top : top + 1]
    turned = index.with_changes(moved=np.array([top]), moved_vectors=-along)
    assert index.search(along, 1)[0][0, 0] == top and top not in turned.search(along, 20)[0]
    with pytest.raises(ValueError, match="distinct items of the index"):
        index.with_changes(moved=np.array([3000]), moved_vectors=items[:1])
    with pytest.raises(ValueError, match="distinct items of the index"):
        index.with_changes(moved=np.array([1, 1]), moved_vectors=items[:2])
    with pytest.raises(ValueError, match="2 vectors for moved items"):
        index.with_changes(moved=np.array([1]), moved_vectors=items[:2])


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_a_join_adds_and_moves_in_one_copy(backend, built, vectors, new_items, queries, tmp_path):
    """A join that brings new items and stepped ones: one call, the same index as the two
    changes made one after the other, and it saves and loads as it searches."""
    directions, items = new_items
    index = built(backend)
    both = index.with_changes(items[:1], np.array([5, 6]), items[1:])
    assert both is not index and both.size == len(vectors) + 1 == index.size + 1
    ids, _ = both.search(directions, 1)
    assert list(ids[:, 0]) == [3000, 5, 6]
    both.save(tmp_path)
    loaded = load_index(tmp_path, ann_config(backend))
    assert loaded.size == both.size
    asked = np.concatenate([directions, queries])
    for a, b in zip(both.search(asked, 20), loaded.search(asked, 20), strict=True):
        np.testing.assert_array_equal(a, b)
    again = loaded.with_changes(moved=np.array([5]), moved_vectors=directions[2:] * 2e4)
    assert again.search(directions[2:], 1)[0][0, 0] == 5 and again.size == both.size


def test_faiss_hnsw_refuses_damaged_labels(built, new_items, tmp_path):
    """faiss HNSW's element-to-item map is part of the index: a file that does not fit the
    graph is refused by name rather than sending searches to the wrong items."""
    _, items = new_items
    moved = built("faiss-hnsw").with_changes(moved=np.array([7]), moved_vectors=items[:1])
    moved.save(tmp_path)
    labels = np.load(tmp_path / "faiss_labels.npy")
    np.save(tmp_path / "faiss_labels.npy", labels[:-1])
    with pytest.raises(ValueError, match="faiss_labels.npy.*labels for an index of"):
        load_index(tmp_path, ann_config("faiss-hnsw"))
    labels[3] = 10**6
    np.save(tmp_path / "faiss_labels.npy", labels)
    with pytest.raises(ValueError, match="do not name the items 0..n-1"):
        load_index(tmp_path, ann_config("faiss-hnsw"))


def test_faiss_flat_is_exact(built, vectors, queries):
    ids, scores = built("faiss-flat").search(queries, 50)
    truth = exact_top(vectors, queries, 50)
    truth_scores = np.take_along_axis(queries @ vectors.T, truth, axis=1)
    np.testing.assert_allclose(scores, truth_scores, rtol=1e-5, atol=1e-5)
    # ids equal up to ties: where they differ, the two items score the same for that query
    differ = ids != truth
    tied = np.take_along_axis(queries @ vectors.T, np.where(differ, ids, truth), axis=1)
    np.testing.assert_allclose(tied[differ], truth_scores[differ], rtol=1e-5, atol=1e-5)
    assert differ.mean() < 0.01


def test_ivf_probing_every_list_is_exact(built, vectors, queries):
    ivf = built("faiss-ivf")
    truth = exact_top(vectors, queries, 50)
    assert recall(ivf.with_search_params(nprobe=16).search(queries, 50)[0], truth) == 1.0
    assert recall(ivf.with_search_params(nprobe=1).search(queries, 50)[0], truth) < 0.9


@pytest.mark.parametrize("backend", ["hnsw", "faiss-hnsw"])
def test_with_search_params_changes_ef_of_a_copy_only(backend, built):
    index = built(backend)
    tuned = index.with_search_params(ef=321)
    assert tuned.search_params == {"ef": 321}
    assert index.search_params == {"ef": ann_config(backend).hnsw_ef_search}


def test_load_takes_search_settings_from_the_config(built, tmp_path):
    built("faiss-ivf").save(tmp_path)
    assert load_index(tmp_path, ann_config("faiss-ivf", faiss_nprobe=5)).search_params == {
        "nprobe": 5
    }


@pytest.mark.parametrize(
    ("backend", "setting", "message"),
    [
        ("exact", {"ef": 10}, "exact has no search setting 'ef'"),
        ("faiss-flat", {"nprobe": 10}, "faiss-flat has no search setting 'nprobe'"),
        ("hnsw", {"nprobe": 10}, r"hnsw has no search setting 'nprobe' \(it takes: ef\)"),
        ("faiss-ivf", {"ef": 10}, "faiss-ivf has no search setting 'ef'"),
        ("faiss-hnsw", {"ef": 0}, "ef must be positive"),
    ],
)
def test_unknown_or_bad_search_settings_are_refused(backend, setting, message, built):
    with pytest.raises(ValueError, match=message):
        built(backend).with_search_params(**setting)


def test_ivf_needs_vectors_to_train():
    with pytest.raises(ValueError, match="faiss-ivf needs at least one vector"):
        build_index(np.empty((0, DIM), np.float32), ann_config("faiss-ivf"))


@pytest.mark.parametrize("backend", ["faiss-flat", "faiss-ivf"])
def test_cpu_path_without_a_gpu(backend, vectors, queries, monkeypatch):
    monkeypatch.setattr(ann, "_gpu_available", lambda: False)
    index = build_index(vectors, ann_config(backend, faiss_nprobe=16))
    assert not index.on_gpu
    assert recall(index.search(queries, 20)[0], exact_top(vectors, queries, 20)) == 1.0


@pytest.mark.parametrize("backend", ["faiss-flat", "faiss-ivf"])
def test_gpu_branch_wiring_with_a_stand_in_device(
    backend, vectors, queries, tmp_path, monkeypatch, caplog
):
    # No GPU here: a CPU clone stands in for the device copy, so the branch's flow (build on
    # the device, keep a CPU copy to save, search on the device, re-upload after adding, load
    # onto the device) runs and is checked against brute force.
    uploads = []

    def fake_gpu_copy(index):
        uploads.append(index.ntotal)
        return ann._GpuCopy(faiss.clone_index(index), None, threading.Lock())

    monkeypatch.setattr(ann, "_gpu_copy", fake_gpu_copy)
    monkeypatch.setattr(ann, "_to_cpu", faiss.clone_index)
    index = build_index(vectors, ann_config(backend, faiss_nprobe=16))
    assert index.on_gpu and index.index.ntotal == len(vectors)  # built there, copied back
    truth = exact_top(vectors, queries, 20)
    assert recall(index.search(queries, 20)[0], truth) == 1.0
    assert index.with_changes(vectors[:2]).on_gpu
    index.save(tmp_path)
    with caplog.at_level("INFO", logger="candidates.ann"):
        assert load_index(tmp_path, ann_config(backend, faiss_nprobe=16)).on_gpu
    assert f"loaded a {backend} index of {len(vectors)} items, searching on the GPU" in caplog.text
    assert uploads == [0, len(vectors) + 2, len(vectors)]  # empty at build, then re-uploads


class FindsFewer:
    """An hnswlib index whose searches find at most `found` items, as a poorly linked graph
    does (near-zero iALS factors of an over-regularised model): hnswlib then raises."""

    def __init__(self, index, found: int) -> None:
        self.index, self.found = index, found

    def knn_query(self, queries, k, num_threads=1):
        if k > self.found:
            raise RuntimeError("Cannot return the results in a contiguous 2D array.")
        return self.index.knn_query(queries, k=k, num_threads=num_threads)

    def get_current_count(self):
        return self.index.get_current_count()

    @property
    def dim(self):
        return self.index.dim


def test_hnsw_answers_with_fewer_items_when_its_search_finds_fewer(built, vectors, queries):
    full = built("hnsw")
    index = ann.HnswIndex(FindsFewer(full.index, 40))
    ids, scores = index.search(queries[:3], 100)
    expected_ids, expected_scores = full.search(queries[:3], 25)  # tries 100, 50, then 25
    assert ids.shape == (3, 100) and (ids[:, 25:] == -1).all() and np.isneginf(scores[:, 25:]).all()
    np.testing.assert_array_equal(ids[:, :25], expected_ids)
    np.testing.assert_allclose(scores[:, :25], expected_scores, rtol=1e-6)


def test_faiss_hnsw_stale_elements_stay_within_their_share(vectors, caplog):
    """Every move adds an element to faiss HNSW's graph; a day of steps must not grow it
    without bound: moves beyond the stale share wait for the nightly, and say so."""
    index = build_index(vectors[:200], ann_config("faiss-hnsw"))
    limit = int(ann.FAISS_HNSW_STALE_SHARE * 200)
    rng = np.random.default_rng(3)
    for _ in range(4):  # the same hot items stepped again and again
        moved = np.arange(40)
        index = index.with_changes(moved=moved, moved_vectors=rng.normal(size=(40, DIM)))
    assert index.size == 200 and index.index.ntotal == 200 + limit
    assert caplog.text.count("keep their old vectors until the nightly") == 1  # said once
    full = index.with_changes(moved=moved, moved_vectors=rng.normal(size=(40, DIM)))
    assert full is index  # no room left: nothing to copy
    ids, _ = index.search(vectors[:5], 50)
    assert all(len(set(row)) == len(row) for row in ids) and (ids < 200).all()
