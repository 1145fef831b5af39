"""Approximate nearest-neighbour search by inner product, behind one interface.

Why inner product: the iALS score of (user, item) is the dot product u·v of their
factors (seed 004, "ALS": R ≈ U Vᵀ), so the best items for a user are exactly the
maximum-inner-product items for u. hnswlib's "ip" space returns distance 1 - u·v and
faiss's METRIC_INNER_PRODUCT returns u·v; both are turned back into the score u·v.
Normalising vectors (cosine) would drop the item norms that carry popularity.

All backends take `(n, d)` float32 queries and return `(ids (n, k) int64, scores (n, k)
float32)`, best first, padded with id -1 / score -inf where fewer than k exist.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import faiss
import hnswlib
import numpy as np

from candidates.base import top_k_batch
from recsys.config import ANNConfig

META_FILE = "ann.json"


class AnnIndex(Protocol):
    backend: str

    @property
    def size(self) -> int: ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def save(self, directory: Path) -> None: ...


def build_index(vectors: np.ndarray, config: ANNConfig) -> AnnIndex:
    vectors = _as_matrix(vectors, "vectors")
    backend = BACKENDS[config.backend]
    return backend.build(vectors, config)


def load_index(directory: Path, config: ANNConfig) -> AnnIndex:
    meta = json.loads((directory / META_FILE).read_text())
    return BACKENDS[meta["backend"]].load(directory, meta, config)


class ExactIndex:
    """Brute-force reference: the answer other backends are measured against."""

    backend = "exact"

    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors = vectors

    @classmethod
    def build(cls, vectors: np.ndarray, config: ANNConfig) -> ExactIndex:
        return cls(vectors)

    @property
    def size(self) -> int:
        return len(self.vectors)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries, k = _as_matrix(queries, "queries", self.vectors.shape[1]), _check_k(k)
        scores = queries @ self.vectors.T
        ids = top_k_batch(scores, k)  # padded with -1 past the index size
        best = np.take_along_axis(scores, np.maximum(ids, 0), axis=1)
        return ids, np.where(ids >= 0, best, -np.inf).astype(np.float32)

    def save(self, directory: Path) -> None:
        np.save(directory / "exact_vectors.npy", self.vectors)
        _write_meta(directory, self.backend, self.vectors.shape[1])

    @classmethod
    def load(cls, directory: Path, meta: dict, config: ANNConfig) -> ExactIndex:
        return cls(np.load(directory / "exact_vectors.npy"))


class HnswIndex:
    """hnswlib graph in the "ip" space (seed 004, "HNSW")."""

    backend = "hnsw"
    FILE = "hnsw.bin"

    def __init__(self, index: hnswlib.Index) -> None:
        self.index = index

    @classmethod
    def build(cls, vectors: np.ndarray, config: ANNConfig) -> HnswIndex:
        index = hnswlib.Index(space="ip", dim=vectors.shape[1])
        index.init_index(
            max_elements=max(len(vectors), 1),
            M=config.hnsw_m,
            ef_construction=config.hnsw_ef_construction,
            random_seed=42,
        )
        index.add_items(vectors, np.arange(len(vectors)))
        index.set_ef(config.hnsw_ef_search)  # hnswlib searches with max(ef, k)
        return cls(index)

    @property
    def size(self) -> int:
        return self.index.get_current_count()

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries, k = _as_matrix(queries, "queries", self.index.dim), _check_k(k)
        take = min(k, self.size)
        if take == 0:
            return _pad(np.empty((len(queries), 0), np.int64), np.empty((len(queries), 0)), k)
        labels, distances = self.index.knn_query(queries, k=take, num_threads=1)
        return _pad(labels.astype(np.int64), 1.0 - distances, k)

    def save(self, directory: Path) -> None:
        self.index.save_index(str(directory / self.FILE))
        _write_meta(directory, self.backend, self.index.dim, ef=self.index.ef)

    @classmethod
    def load(cls, directory: Path, meta: dict, config: ANNConfig) -> HnswIndex:
        index = hnswlib.Index(space="ip", dim=meta["dim"])
        index.load_index(str(directory / cls.FILE))
        index.set_ef(config.hnsw_ef_search)
        return cls(index)


class FaissIndex:
    """faiss HNSW or IVF-Flat with the inner-product metric."""

    FILE = "faiss.index"
    backend: str

    def __init__(self, index: faiss.Index, backend: str) -> None:
        self.index = index
        self.backend = backend

    @classmethod
    def build(cls, vectors: np.ndarray, config: ANNConfig) -> FaissIndex:
        dim = vectors.shape[1]
        if config.backend == "faiss-hnsw":
            index = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = config.hnsw_ef_construction
        else:
            # faiss wants >= 39 training points per list; small catalogs get fewer lists.
            nlist = max(1, min(config.faiss_nlist, len(vectors) // 39))
            quantizer = faiss.IndexFlatIP(dim)
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
            index.train(vectors)
        index.add(vectors)
        built = cls(index, config.backend)
        built.tune(config)
        return built

    def tune(self, config: ANNConfig) -> None:
        if self.backend == "faiss-hnsw":
            self.index.hnsw.efSearch = config.hnsw_ef_search
        else:
            self.index.nprobe = min(config.faiss_nprobe, self.index.nlist)

    @property
    def size(self) -> int:
        return self.index.ntotal

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries, k = _as_matrix(queries, "queries", self.index.d), _check_k(k)
        take = min(k, self.size)
        if self.backend == "faiss-hnsw":
            # faiss HNSW explores max(efSearch, k) like hnswlib; make that explicit.
            params = faiss.SearchParametersHNSW(efSearch=max(self.index.hnsw.efSearch, take))
            scores, ids = self.index.search(queries, take, params=params)
        else:
            scores, ids = self.index.search(queries, take)
        scores = np.where(ids < 0, -np.inf, scores)
        return _pad(ids.astype(np.int64), scores, k)

    def save(self, directory: Path) -> None:
        faiss.write_index(self.index, str(directory / self.FILE))
        _write_meta(directory, self.backend, self.index.d)

    @classmethod
    def load(cls, directory: Path, meta: dict, config: ANNConfig) -> FaissIndex:
        loaded = cls(faiss.read_index(str(directory / cls.FILE)), meta["backend"])
        loaded.tune(config)
        return loaded


BACKENDS: dict[str, type] = {
    "exact": ExactIndex,
    "hnsw": HnswIndex,
    "faiss-hnsw": FaissIndex,
    "faiss-ivf": FaissIndex,
}


def _as_matrix(values: np.ndarray, what: str, dim: int | None = None) -> np.ndarray:
    values = np.ascontiguousarray(values, dtype=np.float32)
    if values.ndim != 2:
        raise ValueError(f"{what} must be a 2-d array (n, d), got shape {values.shape}")
    if dim is not None and values.shape[1] != dim:
        raise ValueError(f"{what} have dimension {values.shape[1]}, the index has {dim}")
    if not np.isfinite(values).all():
        raise ValueError(f"{what} contain NaN or infinity")
    return values


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
