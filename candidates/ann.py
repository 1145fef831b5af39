"""Approximate nearest-neighbour search by inner product, behind one interface.

seed 004, "KNN-индексы" / "HNSW": the candidates of a user are the items nearest to the user's
vector; DESIGN.md §3 puts hnswlib and Faiss (flat, IVF, HNSW; GPU when present) behind this
one interface, and tests/test_ann.py holds the one contract they all pass.

Why inner product (MIPS): the iALS score of (user, item) is the dot product u·v of their
factors (seed 004, "ALS": R ≈ U Vᵀ), so the best items for a user are exactly the
maximum-inner-product items for u. hnswlib's "ip" space ranks by the distance 1 - u·v (smallest
distance = largest u·v) and faiss's METRIC_INNER_PRODUCT ranks by u·v itself; both come back as
the score u·v, the same number ALSModel.score gives. Normalising vectors (cosine) would drop the
item norms that carry popularity, and L2 on raw vectors ranks by |v|² - 2u·v, a different order.
The MIPS→L2 augmentation trick (append sqrt(max|v|² - |v|²)) was measured to do worse with HNSW
(DESIGN.md §3), so the graphs search the inner product directly, with a large M instead.

All backends take `(n, d)` float32 queries and return `(ids (n, k) int64, scores (n, k)
float32)`, best first, padded with id -1 / score -inf where fewer than k exist.

Threads: an index object never changes after it is made. `search` may run from many threads at
once (hnswlib knn_query and faiss CPU search are safe for concurrent readers; a faiss GPU index
is not, so its searches take a lock). `with_changes` and `with_search_params` return a new
index and leave the one in service untouched, because hnswlib's add_items is not safe
concurrently with knn_query and faiss does not support add during search. The price is one
copy of the index per call (new items and moved ones together: a join does both at once):
to be used by the nightly/nearline jobs, never per request.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import faiss
import hnswlib
import numpy as np

from recsys.arrays import top_k_batch
from recsys.config import ANNConfig

META_FILE = "ann.json"
# ExactIndex scores queries in blocks of at most this many floats (64 MB), not all at once.
EXACT_BLOCK_FLOATS = 1 << 24
# faiss HNSW moves an item by adding an element (see FaissIndex): the stale ones it passes
# over may reach this share of its items; later moves wait for the nightly's rebuild, so a
# day of steps cannot grow every serving process's graph without bound.
FAISS_HNSW_STALE_SHARE = 0.5


log = logging.getLogger(__name__)


class AnnIndex(Protocol):
    backend: str

    @property
    def size(self) -> int: ...

    @property
    def on_gpu(self) -> bool: ...  # searches on a GPU (faiss flat and IVF, when one is lent)

    @property
    def search_params(self) -> dict[str, int]: ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def with_changes(
        self,
        added: np.ndarray | None = None,
        moved: np.ndarray | None = None,
        moved_vectors: np.ndarray | None = None,
    ) -> AnnIndex:
        """One copy of the index with the `added` vectors as items size..size+n-1 (items that
        join) and the items `moved` (distinct, already in the index) at `moved_vectors` (the
        nearline's steps of hot items); self when there is nothing to change."""
        ...

    def with_search_params(self, *, ef: int | None = None, nprobe: int | None = None) -> AnnIndex:
        """A copy searching with other settings: `ef` for the HNSW backends (hnswlib ef,
        faiss efSearch; both search max(ef, k)), `nprobe` for faiss-ivf. A setting the backend
        does not have is a ValueError."""
        ...

    def save(self, directory: Path) -> None: ...


def build_index(vectors: np.ndarray, config: ANNConfig) -> AnnIndex:
    vectors = _as_matrix(vectors, "vectors")
    backend = BACKENDS[config.backend]
    return _logged(backend.build(vectors, config), "built")


def load_index(directory: Path, config: ANNConfig) -> AnnIndex:
    """The saved index; search settings (ef, nprobe) come from `config`, not from the file,
    so they can be tuned without a rebuild."""
    meta = json.loads((directory / META_FILE).read_text())
    return _logged(BACKENDS[meta["backend"]].load(directory, meta, config), "loaded")


def _logged(index: AnnIndex, what: str) -> AnnIndex:
    where = "GPU" if index.on_gpu else "CPU"
    log.info(
        "ann: %s a %s index of %d items, searching on the %s",
        what,
        index.backend,
        index.size,
        where,
    )
    return index


class ExactIndex:
    """Brute-force reference: the answer other backends are measured against."""

    backend = "exact"
    on_gpu = False

    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors = vectors

    @classmethod
    def build(cls, vectors: np.ndarray, config: ANNConfig) -> ExactIndex:
        return cls(vectors)

    @property
    def size(self) -> int:
        return len(self.vectors)

    @property
    def search_params(self) -> dict[str, int]:
        return {}

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries, k = _as_matrix(queries, "queries", self.vectors.shape[1]), _check_k(k)
        rows = max(1, EXACT_BLOCK_FLOATS // max(self.size, 1))
        blocks = [
            self._search_block(queries[i : i + rows], k) for i in range(0, len(queries), rows)
        ]
        if not blocks:
            return np.empty((0, k), np.int64), np.empty((0, k), np.float32)
        ids, scores = zip(*blocks, strict=True)
        return np.concatenate(ids), np.concatenate(scores)

    def _search_block(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores = queries @ self.vectors.T
        ids = top_k_batch(scores, k)  # padded with -1 past the index size
        best = np.take_along_axis(scores, np.maximum(ids, 0), axis=1)
        return ids, np.where(ids >= 0, best, -np.inf).astype(np.float32)

    def with_changes(
        self,
        added: np.ndarray | None = None,
        moved: np.ndarray | None = None,
        moved_vectors: np.ndarray | None = None,
    ) -> ExactIndex:
        change = _Changes.of(added, moved, moved_vectors, self.size, self.vectors.shape[1])
        if change.empty:
            return self
        changed = np.concatenate([self.vectors, change.added])  # a new array either way
        changed[change.moved] = change.moved_vectors
        return ExactIndex(changed)

    def with_search_params(self, *, ef: int | None = None, nprobe: int | None = None) -> ExactIndex:
        _check_params(self.backend, (), ef=ef, nprobe=nprobe)
        return self

    def save(self, directory: Path) -> None:
        np.save(directory / "exact_vectors.npy", self.vectors)
        _write_meta(directory, self.backend, self.vectors.shape[1])

    @classmethod
    def load(cls, directory: Path, meta: dict, config: ANNConfig) -> ExactIndex:
        return cls(np.load(directory / "exact_vectors.npy"))


class HnswIndex:
    """hnswlib graph in the "ip" space (seed 004, "HNSW"); labels are the item indices."""

    backend = "hnsw"
    on_gpu = False
    FILE = "hnsw.bin"

    def __init__(self, index: hnswlib.Index) -> None:
        self.index = index
        self._warned = False  # the fewer-than-k warning is logged once per index

    @classmethod
    def build(cls, vectors: np.ndarray, config: ANNConfig) -> HnswIndex:
        index = hnswlib.Index(space="ip", dim=vectors.shape[1])
        index.init_index(
            max_elements=max(len(vectors), 1),
            M=config.hnsw_m,
            ef_construction=config.hnsw_ef_construction,
            random_seed=42,
        )
        # hnswlib inserts in parallel in whatever order its threads reach; one thread
        # builds the same graph from the same vectors and seed (config: ann.hnsw_build_threads)
        index.add_items(
            vectors, np.arange(len(vectors)), num_threads=config.hnsw_build_threads or -1
        )
        index.set_ef(config.hnsw_ef_search)  # hnswlib searches with max(ef, k)
        return cls(index)

    @property
    def size(self) -> int:
        return self.index.get_current_count()

    @property
    def search_params(self) -> dict[str, int]:
        return {"ef": self.index.ef}

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries, k = _as_matrix(queries, "queries", self.index.dim), _check_k(k)
        take = min(k, self.size)
        if take == 0:
            return _pad(np.empty((len(queries), 0), np.int64), np.empty((len(queries), 0)), k)
        # hnswlib answers up to 4 queries per thread in the calling thread, so a serving
        # request (one query) stays on its own thread; offline batches use all cores.
        try:
            labels, distances = self.index.knn_query(queries, k=take, num_threads=-1)
        except RuntimeError:
            # hnswlib refuses a query whose search finds fewer than k items: it happens when
            # the graph links items poorly (many near-zero vectors, e.g. over-regularised
            # iALS factors); answer each query with as many items as its search finds
            return self._search_each(queries, take, k)
        return _pad(labels.astype(np.int64), 1.0 - distances, k)

    def _search_each(self, queries: np.ndarray, take: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        if not self._warned:
            log.warning("hnsw: a search found fewer than %d items; answering with fewer", take)
            self._warned = True
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        for row, query in enumerate(queries):
            width = take
            while width > 0:
                try:
                    labels, distances = self.index.knn_query(query[None, :], k=width)
                except RuntimeError:
                    width //= 2
                    continue
                ids[row, :width] = labels[0]
                scores[row, :width] = 1.0 - distances[0]
                break
        return ids, scores

    def with_changes(
        self,
        added: np.ndarray | None = None,
        moved: np.ndarray | None = None,
        moved_vectors: np.ndarray | None = None,
    ) -> HnswIndex:
        """New items inserted into one copy of the graph; hnswlib's update moves the others:
        add_items of a label it holds moves that element and repairs its links."""
        change = _Changes.of(added, moved, moved_vectors, self.size, self.index.dim)
        if change.empty:
            return self
        changed = hnswlib.Index(self.index)  # a deep copy: add_items must not meet a search
        if len(change.added):
            changed.resize_index(self.size + len(change.added))
            changed.add_items(change.added, np.arange(self.size, self.size + len(change.added)))
        if len(change.moved):
            changed.add_items(change.moved_vectors, change.moved)
        return HnswIndex(changed)

    def with_search_params(self, *, ef: int | None = None, nprobe: int | None = None) -> HnswIndex:
        params = _check_params(self.backend, ("ef",), ef=ef, nprobe=nprobe)
        # ef lives inside the hnswlib object, so another ef means another copy of the graph.
        tuned = hnswlib.Index(self.index)
        tuned.set_ef(params.get("ef", self.index.ef))
        return HnswIndex(tuned)

    def save(self, directory: Path) -> None:
        self.index.save_index(str(directory / self.FILE))
        _write_meta(directory, self.backend, self.index.dim, ef=self.index.ef)

    @classmethod
    def load(cls, directory: Path, meta: dict, config: ANNConfig) -> HnswIndex:
        index = hnswlib.Index(space="ip", dim=meta["dim"])
        index.load_index(str(directory / cls.FILE))
        index.set_ef(config.hnsw_ef_search)
        return cls(index)


@dataclass(frozen=True)
class _GpuCopy:
    """A faiss index resident on the GPU. faiss GPU indexes are not safe for concurrent
    searches (they share scratch memory), hence the lock."""

    index: faiss.Index
    resources: object  # faiss.StandardGpuResources, kept alive as long as the index
    lock: threading.Lock


class FaissIndex:
    """faiss with the inner-product metric: exact (IndexFlatIP), HNSW or IVF-Flat.

    `index` is always the CPU index, the one saved to the bundle. When faiss sees a GPU,
    faiss-flat and faiss-ivf are also copied to it, built there, and searched there; the CPU
    copy stays in host memory for save and with_changes.

    faiss HNSW cannot move or remove an element of its graph, so a moved item is added again
    as a new element and its old one goes stale: `labels` maps each element to its item
    (None: element i is item i) and searches pass over stale elements (an IDSelector), so an
    item is found by its newest vector only. The stale ones go at the next nightly's build.
    """

    FILE = "faiss.index"
    LABELS_FILE = "faiss_labels.npy"
    GPU_BACKENDS = ("faiss-flat", "faiss-ivf")  # faiss has no GPU HNSW

    def __init__(
        self,
        index: faiss.Index,
        backend: str,
        params: dict[str, int],
        gpu: _GpuCopy | None = None,
        labels: np.ndarray | None = None,
    ) -> None:
        self.index = index
        self.backend = backend
        self.params = params
        self.gpu = gpu
        self.labels = labels
        live = _live_elements(labels, index.ntotal)
        self._stale = index.ntotal - int(live.sum())  # elements of items that moved since
        # A bitmap of the live elements (one bit each: cheaper to test than a set of the
        # stale ones); the selector points into the array, so both live as long as the index.
        self._live_bits, self._live = None, None
        if self._stale:
            self._live_bits = np.packbits(live, bitorder="little")
            self._live = faiss.IDSelectorBitmap(index.ntotal, faiss.swig_ptr(self._live_bits))

    @classmethod
    def build(cls, vectors: np.ndarray, config: ANNConfig) -> FaissIndex:
        index = _empty_faiss_index(vectors, config)
        gpu = _gpu_copy(index) if config.backend in cls.GPU_BACKENDS else None
        work = gpu.index if gpu is not None else index
        if not work.is_trained:  # IVF: k-means on the catalog for the list centroids
            work.train(vectors)
        work.add(vectors)
        if gpu is not None:
            index = _to_cpu(gpu.index)
        return cls(index, config.backend, _faiss_params(config), gpu)

    @property
    def size(self) -> int:
        return self.index.ntotal - self._stale

    @property
    def on_gpu(self) -> bool:
        return self.gpu is not None

    @property
    def search_params(self) -> dict[str, int]:
        return dict(self.params)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries, k = _as_matrix(queries, "queries", self.index.d), _check_k(k)
        take = min(k, self.size)
        if take == 0:
            return _pad(np.empty((len(queries), 0), np.int64), np.empty((len(queries), 0)), k)
        params = self._search_parameters(take)
        if self.gpu is not None:  # GPU branch: one search at a time on the device
            with self.gpu.lock:
                scores, ids = self.gpu.index.search(queries, take, params=params)
        else:
            scores, ids = self.index.search(queries, take, params=params)
        scores = np.where(ids < 0, -np.inf, scores)
        if self.labels is not None:
            ids = np.where(ids < 0, -1, self.labels[np.maximum(ids, 0)])
        return _pad(ids.astype(np.int64), scores, k)

    def _search_parameters(self, take: int) -> faiss.SearchParameters | None:
        # Per-call parameters, not index fields, so one index serves every setting at once.
        if self.backend == "faiss-hnsw":
            # faiss HNSW explores max(efSearch, k) like hnswlib; make that explicit.
            return faiss.SearchParametersHNSW(efSearch=max(self.params["ef"], take), sel=self._live)
        if self.backend == "faiss-ivf":
            return faiss.SearchParametersIVF(nprobe=min(self.params["nprobe"], self.index.nlist))
        return None

    def with_changes(
        self,
        added: np.ndarray | None = None,
        moved: np.ndarray | None = None,
        moved_vectors: np.ndarray | None = None,
    ) -> FaissIndex:
        """Flat: the rows replaced and appended in one new index; IVF: moved items removed
        and added again under their ids (into the lists of the existing centroids, which are
        not retrained; the nightly rebuild retrains them); HNSW: new elements for the added
        and the moved items, the moved ones' old elements stale (see the class)."""
        change = _Changes.of(added, moved, moved_vectors, self.size, self.index.d)
        if change.empty:
            return self
        labels = self.labels
        if self.backend == "faiss-flat":
            rows = np.concatenate([self.index.reconstruct_n(0, self.size), change.added])
            rows[change.moved] = change.moved_vectors
            changed = faiss.IndexFlatIP(self.index.d)
            changed.add(rows)
        elif self.backend == "faiss-ivf":
            changed = faiss.clone_index(self.index)
            if len(change.moved):
                changed.remove_ids(faiss.IDSelectorBatch(change.moved))
                changed.add_with_ids(change.moved_vectors, change.moved)
            if len(change.added):
                new_ids = np.arange(self.size, self.size + len(change.added), dtype=np.int64)
                changed.add_with_ids(change.added, new_ids)
        else:
            change = self._within_stale_share(change)
            if change.empty:
                return self
            changed = faiss.clone_index(self.index)
            changed.add(np.concatenate([change.added, change.moved_vectors]))
            known = labels if labels is not None else np.arange(self.index.ntotal)
            new_ids = np.arange(self.size, self.size + len(change.added), dtype=np.int64)
            labels = np.concatenate([known, new_ids, change.moved]).astype(np.int64)
        gpu = _gpu_copy(changed) if self.gpu is not None else None
        return FaissIndex(changed, self.backend, self.params, gpu, labels)

    def _within_stale_share(self, change: _Changes) -> _Changes:
        """faiss HNSW: the moves that keep its stale elements within FAISS_HNSW_STALE_SHARE
        of its items (those beyond keep their old vectors until the nightly; logged)."""
        items = self.size + len(change.added)
        room = max(int(FAISS_HNSW_STALE_SHARE * items) - self._stale, 0)
        if len(change.moved) <= room:
            return change
        # said once, when the cap is reached: joins every few seconds would repeat it
        log.log(
            logging.WARNING if room else logging.DEBUG,
            "faiss-hnsw: %d of %d moved items keep their old vectors until the nightly: "
            "the graph holds %d stale elements of moved items (at most %.0f%% of its items)",
            len(change.moved) - room,
            len(change.moved),
            self._stale,
            100 * FAISS_HNSW_STALE_SHARE,
        )
        return _Changes(change.added, change.moved[:room], change.moved_vectors[:room])

    def with_search_params(self, *, ef: int | None = None, nprobe: int | None = None) -> FaissIndex:
        params = _check_params(self.backend, tuple(self.params), ef=ef, nprobe=nprobe)
        # Shares the faiss index (and GPU copy and its lock): only per-call parameters differ.
        return FaissIndex(
            self.index, self.backend, {**self.params, **params}, self.gpu, self.labels
        )

    def save(self, directory: Path) -> None:
        faiss.write_index(self.index, str(directory / self.FILE))
        if self.labels is not None:
            np.save(directory / self.LABELS_FILE, self.labels)
        _write_meta(directory, self.backend, self.index.d)

    @classmethod
    def load(cls, directory: Path, meta: dict, config: ANNConfig) -> FaissIndex:
        backend = meta["backend"]
        index = faiss.read_index(str(directory / cls.FILE))
        labels_path = directory / cls.LABELS_FILE
        labels = (
            _checked_labels(np.load(labels_path), index.ntotal, labels_path)
            if labels_path.is_file()
            else None
        )
        gpu = _gpu_copy(index) if backend in cls.GPU_BACKENDS else None
        params = _faiss_params(config, backend)
        return cls(index, backend, params, gpu, labels)


def _live_elements(labels: np.ndarray | None, elements: int) -> np.ndarray:
    """bool per element: its item has no newer element (added later), i.e. the last of each
    label; all of them without labels."""
    if labels is None:
        return np.ones(elements, dtype=bool)
    _, last_from_end = np.unique(labels[::-1], return_index=True)
    live = np.zeros(elements, dtype=bool)
    live[elements - 1 - last_from_end] = True
    return live


def _checked_labels(labels: np.ndarray, elements: int, path: Path) -> np.ndarray:
    """A saved element-to-item map that fits its index: one item per element, and the items
    0..n-1 each present (a damaged file would send searches to the wrong items)."""
    if labels.ndim != 1 or len(labels) != elements or labels.dtype.kind not in "iu":
        raise ValueError(f"{path}: {labels.shape} labels for an index of {elements} elements")
    items = np.unique(labels)
    if len(items) and (items[0] != 0 or items[-1] != len(items) - 1):
        raise ValueError(f"{path}: the labels do not name the items 0..n-1 of the index")
    return labels.astype(np.int64)


def _empty_faiss_index(vectors: np.ndarray, config: ANNConfig) -> faiss.Index:
    dim = vectors.shape[1]
    if config.backend == "faiss-flat":
        return faiss.IndexFlatIP(dim)
    if config.backend == "faiss-hnsw":
        index = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = config.hnsw_ef_construction
        return index
    if len(vectors) == 0:
        raise ValueError("faiss-ivf needs at least one vector to train its lists")
    # faiss wants >= 39 training points per list; small catalogs get fewer lists.
    nlist = max(1, min(config.faiss_nlist, len(vectors) // 39))
    quantizer = faiss.IndexFlatIP(dim)
    return faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)


def _faiss_params(config: ANNConfig, backend: str | None = None) -> dict[str, int]:
    """The backend's search settings from the config; its keys are the settings it takes."""
    backend = backend or config.backend
    if backend == "faiss-hnsw":
        return {"ef": config.hnsw_ef_search}
    if backend == "faiss-ivf":
        return {"nprobe": config.faiss_nprobe}
    return {}


# --- GPU branch: used only where the faiss build has GPU support and sees a GPU. ---------


def _gpu_available() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _gpu_copy(index: faiss.Index) -> _GpuCopy | None:
    """The index copied to GPU 0 (works on an untrained IVF too), or None without a GPU.
    Note: faiss GPU search caps k and nprobe at 2048."""
    if not _gpu_available():
        return None
    resources = faiss.StandardGpuResources()
    return _GpuCopy(faiss.index_cpu_to_gpu(resources, 0, index), resources, threading.Lock())


def _to_cpu(device_index: faiss.Index) -> faiss.Index:
    return faiss.index_gpu_to_cpu(device_index)


# --------------------------------------------------------------------------------------------


BACKENDS: dict[str, type] = {
    "exact": ExactIndex,
    "hnsw": HnswIndex,
    "faiss-flat": FaissIndex,
    "faiss-hnsw": FaissIndex,
    "faiss-ivf": FaissIndex,
}


def _check_params(backend: str, known: tuple[str, ...], **given: int | None) -> dict[str, int]:
    """The given search settings, refusing those the backend does not have."""
    params = {name: value for name, value in given.items() if value is not None}
    for name, value in params.items():
        if name not in known:
            takes = ", ".join(known) or "no search settings"
            raise ValueError(f"{backend} has no search setting {name!r} (it takes: {takes})")
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")
    return {name: int(value) for name, value in params.items()}


def _as_matrix(values: np.ndarray, what: str, dim: int | None = None) -> np.ndarray:
    values = np.ascontiguousarray(values, dtype=np.float32)
    if values.ndim != 2:
        raise ValueError(f"{what} must be a 2-d array (n, d), got shape {values.shape}")
    if dim is not None and values.shape[1] != dim:
        raise ValueError(f"{what} have dimension {values.shape[1]}, the index has {dim}")
    if not np.isfinite(values).all():
        raise ValueError(f"{what} contain NaN or infinity")
    return values


@dataclass(frozen=True)
class _Changes:
    """`with_changes`' arguments checked: finite vectors of the index's dimension, and moved
    items distinct items of the index with one vector each; absent ones empty."""

    added: np.ndarray  # (n, d) float32
    moved: np.ndarray  # (m,) int64
    moved_vectors: np.ndarray  # (m, d) float32

    @classmethod
    def of(
        cls,
        added: np.ndarray | None,
        moved: np.ndarray | None,
        moved_vectors: np.ndarray | None,
        size: int,
        dim: int,
    ) -> _Changes:
        none = np.empty((0, dim), np.float32)
        added = _as_matrix(none if added is None else added, "vectors", dim)
        items = np.asarray(np.empty(0) if moved is None else moved).astype(np.int64)
        vectors = _as_matrix(none if moved_vectors is None else moved_vectors, "vectors", dim)
        if items.ndim != 1 or len(items) != len(vectors):
            raise ValueError(f"{len(vectors)} vectors for moved items of shape {items.shape}")
        if len(items) and (
            items.min() < 0 or items.max() >= size or len(np.unique(items)) < len(items)
        ):
            raise ValueError(f"items to move must be distinct items of the index [0, {size})")
        return cls(added, items, vectors)

    @property
    def empty(self) -> bool:
        return not len(self.added) and not len(self.moved)


def _check_k(k: int) -> int:
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    return int(k)


def _pad(ids: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    missing = k - ids.shape[1]
    scores = scores.astype(np.float32)
    if missing > 0:
        ids = np.pad(ids, ((0, 0), (0, missing)), constant_values=-1)
        scores = np.pad(scores, ((0, 0), (0, missing)), constant_values=-np.inf)
    return ids, scores


def _write_meta(directory: Path, backend: str, dim: int, **extra: object) -> None:
    (directory / META_FILE).write_text(json.dumps({"backend": backend, "dim": int(dim), **extra}))
