"""Recall@100 against exact search and queries/s of every ANN backend, on ALS-like vectors.

.venv/bin/python bench/bench_ann.py                          # iALS on a synthetic shop, 100k x 64
.venv/bin/python bench/bench_ann.py --vectors lognormal      # random vectors, skewed norms; quicker
.venv/bin/python bench/bench_ann.py --items 20000 --queries 500

Item vectors are the iALS item factors (candidates.als.ALSModel fitted on
pipelines.synthetic data), queries are user factors, as in serving; or, with
`--vectors lognormal`, Gaussian directions with lognormal norms whose max/median is ≈ 19 (the
skew DESIGN.md §3 measured on ALS factors) and Gaussian queries. Truth is the exact top-k by
inner product (the "exact" backend, so its own recall is 1 by construction).

single q/s: one query per call on one thread, as serving calls it; batch q/s: all queries in
one call on every core. Other processes on the machine make both noisy.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass

import faiss
import numpy as np
from scipy.stats import norm
from threadpoolctl import threadpool_limits

from candidates.als import ALSModel
from candidates.ann import AnnIndex, build_index
from pipelines.synthetic import generate_synthetic
from pipelines.training_data import build_training_data
from recsys.config import ANNConfig, load_config

ADDED_ITEMS = 1000


@dataclass(frozen=True)
class Row:
    backend: str
    setting: str
    build_seconds: float
    recall: float
    single_qps: float
    batch_qps: float


def als_vectors(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """iALS item factors and a sample of user factors from a synthetic shop."""
    started = time.perf_counter()
    config = load_config().replace(als={"factors": args.dim, "iterations": args.als_iterations})
    dataset = generate_synthetic(args.users, args.items, args.events, seed=args.seed)
    data = build_training_data(dataset, config)
    model = ALSModel.fit(data.interactions, config.als)
    users = np.random.default_rng(args.seed).choice(
        len(model.user_factors), size=min(args.queries, len(model.user_factors)), replace=False
    )
    print(
        f"vectors      iALS, {args.users:,} users x {args.items:,} items x {args.events:,} events,"
        f" {args.dim} factors, {args.als_iterations} iterations"
        f" ({time.perf_counter() - started:.0f} s)"
    )
    return model.item_factors, model.user_factors[users]


def lognormal_vectors(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian directions, lognormal norms with max/median ≈ 19 over `items` draws."""
    rng = np.random.default_rng(args.seed)
    directions = rng.normal(size=(args.items, args.dim)).astype(np.float32)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    # The median of a lognormal is e^0; its expected max over n draws is about e^(σ z), z the
    # 1 - 1/n normal quantile, so σ = ln 19 / z puts max/median near 19.
    sigma = np.log(19.0) / norm.ppf(1.0 - 1.0 / args.items)
    norms = rng.lognormal(sigma=sigma, size=(args.items, 1)).astype(np.float32)
    print(f"vectors      Gaussian directions x lognormal(σ={sigma:.2f}) norms, {args.dim} dims")
    return directions * norms, rng.normal(size=(args.queries, args.dim)).astype(np.float32)


def recall_at_k(ids: np.ndarray, truth: np.ndarray) -> float:
    # ids are distinct within a row and -1 never occurs in truth, so hits count each match once.
    hits = (ids[:, :, None] == truth[:, None, :]).any(axis=2).sum(axis=1)
    return float(hits.mean() / truth.shape[1])


def single_query_qps(index: AnnIndex, queries: np.ndarray, k: int) -> float:
    threads = faiss.omp_get_max_threads()
    with threadpool_limits(1):
        faiss.omp_set_num_threads(1)
        started = time.perf_counter()
        for row in range(len(queries)):
            index.search(queries[row : row + 1], k)
        seconds = time.perf_counter() - started
    faiss.omp_set_num_threads(threads)
    return len(queries) / seconds


def measure(
    index: AnnIndex, setting: str, build_seconds: float, queries: np.ndarray, truth: np.ndarray
) -> Row:
    k = truth.shape[1]
    started = time.perf_counter()
    ids, _ = index.search(queries, k)
    batch_qps = len(queries) / (time.perf_counter() - started)
    return Row(
        index.backend,
        setting,
        build_seconds,
        recall_at_k(ids, truth),
        single_query_qps(index, queries, k),
        batch_qps,
    )


def timed_build(vectors: np.ndarray, config: ANNConfig) -> tuple[AnnIndex, float]:
    started = time.perf_counter()
    index = build_index(vectors, config)
    return index, time.perf_counter() - started


def print_row(row: Row) -> None:
    print(
        f"{row.backend:<11} {row.setting:<12} {row.build_seconds:>8.1f} {row.recall:>10.4f}"
        f" {row.single_qps:>11,.0f} {row.batch_qps:>11,.0f}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--vectors", choices=("als", "lognormal"), default="als")
    parser.add_argument("--users", type=int, default=300_000, help="als: synthetic users")
    parser.add_argument("--events", type=int, default=6_000_000, help="als: synthetic events")
    parser.add_argument("--als-iterations", type=int, default=5)
    parser.add_argument("--ef", type=int, nargs="+", default=[100, 200, 400])
    parser.add_argument("--nprobe", type=int, nargs="+", default=[32, 96, 128])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--stale-joins",
        type=int,
        default=5,
        help="faiss-hnsw: joins moving a tenth of the items each (0: none)",
    )
    args = parser.parse_args(argv)

    items, queries = (als_vectors if args.vectors == "als" else lognormal_vectors)(args)
    norms = np.linalg.norm(items, axis=1)
    print(f"item norms   max/median {norms.max() / np.median(norms):.1f}")
    base = load_config().ann
    print(
        f"indexes      HNSW M={base.hnsw_m} efConstruction={base.hnsw_ef_construction};"
        f" IVF-Flat nlist={base.faiss_nlist}; {len(queries):,} queries, top-{args.k}"
    )
    print(
        f"{'backend':<11} {'setting':<12} {'build s':>8} {'recall@' + str(args.k):>10}"
        f" {'single q/s':>11} {'batch q/s':>11}"
    )

    exact, exact_seconds = timed_build(items, dataclasses.replace(base, backend="exact"))
    truth, _ = exact.search(queries, args.k)
    # a join: new items, and the nearline's steps of as many known ones (moved vectors)
    rng = np.random.default_rng(args.seed + 1)
    added = rng.normal(size=(ADDED_ITEMS, args.dim)).astype(np.float32)
    moved = rng.choice(len(items), size=ADDED_ITEMS, replace=False)
    moved_vectors = items[moved] * rng.uniform(0.5, 1.5, size=(ADDED_ITEMS, 1)).astype(np.float32)
    join = (added, moved, moved_vectors)
    joined_truth, _ = exact.with_changes(*join).search(queries, args.k)
    joins = {}
    plans = [
        ("hnsw", "ef", args.ef),
        ("faiss-hnsw", "ef", args.ef),
        ("faiss-ivf", "nprobe", args.nprobe),
        ("faiss-flat", "", [None]),
    ]
    for backend, setting, values in plans:
        index, seconds = timed_build(items, dataclasses.replace(base, backend=backend))
        for value in values:
            tuned = index.with_search_params(**{setting: value}) if setting else index
            print_row(
                measure(tuned, f"{setting} {value}" if setting else "-", seconds, queries, truth)
            )
        joins[backend] = timed_join(tuned, join, queries, joined_truth)
        del index, tuned
    print_row(measure(exact, "-", exact_seconds, queries, truth))
    print(
        f"a join of {ADDED_ITEMS:,} new and {ADDED_ITEMS:,} moved items (last setting above):"
        " one copy s / two copies s (before session 20) / recall after"
    )
    for backend, (one, two, after) in joins.items():
        print(f"  {backend:<11} {one:6.2f} / {two:6.2f} ({two / one:.1f}x) / {after:.3f}")
    if args.stale_joins:
        stale_rows(items, queries, dataclasses.replace(base, backend="faiss-hnsw"), args, exact)
    return 0


def stale_rows(
    items: np.ndarray, queries: np.ndarray, config: ANNConfig, args, exact: AnnIndex
) -> None:
    """faiss HNSW after joins that each move a tenth of the items: every move leaves a stale
    element its searches pass over (a bitmap selector) until the nightly's rebuild."""
    index, ex = build_index(items, config), exact
    rng = np.random.default_rng(args.seed + 2)
    fresh = single_query_qps(index, queries, args.k)
    print("faiss-hnsw after joins that each move a tenth of the items (up to the stale cap):")
    for joins in range(args.stale_joins + 1):
        if joins:
            moved = rng.choice(len(items), size=len(items) // 10, replace=False)
            scale = rng.uniform(0.5, 1.5, size=(len(moved), 1)).astype(np.float32)
            stepped = items[moved] * scale
            index = index.with_changes(moved=moved, moved_vectors=stepped)
            ex = ex.with_changes(moved=moved, moved_vectors=stepped)
        qps = single_query_qps(index, queries, args.k) if joins else fresh
        truth, _ = ex.search(queries, args.k)
        print(
            f"  {joins} joins: {index.index.ntotal - index.size:,} stale elements,"
            f" recall@{args.k} {recall_at_k(index.search(queries, args.k)[0], truth):.4f},"
            f" single q/s {qps:,.0f} ({qps / fresh:.2f}x the fresh graph's)"
        )


def timed_join(
    index: AnnIndex, join: tuple, queries: np.ndarray, truth: np.ndarray
) -> tuple[float, float, float]:
    """Seconds of `with_changes` in one call and in two (the added items, then the moved),
    and the joined index's recall against exact search over the joined vectors."""
    added, moved, moved_vectors = join
    started = time.perf_counter()
    joined = index.with_changes(added, moved, moved_vectors)
    one = time.perf_counter() - started
    started = time.perf_counter()
    index.with_changes(added).with_changes(moved=moved, moved_vectors=moved_vectors)
    two = time.perf_counter() - started
    return one, two, recall_at_k(joined.search(queries, truth.shape[1])[0], truth)


if __name__ == "__main__":
    raise SystemExit(main())
