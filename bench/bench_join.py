"""What a join of new items costs a serving process (`nearline.join_seconds`): the join's
own time, and `Recommend` latency while joins run beside it.

A bundle is built (the default config: the whole cascade) or reused, and loaded in a
`BundleHolder` as `recsys serve` loads it; its vector store is a stand-in that hands out
`--new-items` new item vectors (mixes of catalogue items' vectors) before each join, and
with `--moved` new vectors for that many known items (the nearline's steps of hot items).
With `--stages none` the bundle is built in memory, with no nightly (no stage gate, no
rankers: the iALS order), which is what a large catalogue's run can afford here.
The main thread sends `Recommend` for random users at `--rps` (open loop, in-process: the
GIL a join holds is what a request waits for); first `--seconds` without joins, then the
same with a join every `--every` seconds on a thread at the priority of serving's joiner
(nice 10). Prints the join times, the resident memory each join left, and both request
latency percentiles. Resident memory grows by the copy a join builds beside the bundle in
service and by what the allocator keeps for reuse; the bundles swapped out must be gone
(counted through weak references).

    python bench/bench_join.py                          # MovieLens-100k
    python bench/bench_join.py --data DIR --stages none # a shop of your own, iALS order only
    python bench/bench_join.py --moved 1000 --backend faiss-hnsw  # with hot items stepped
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import threading
import time
import weakref
from pathlib import Path

import numpy as np

from candidates.live_tops import attach_live_tops
from pipelines.build import build_bundle
from pipelines.nightly import run_nightly
from pipelines.sources import load_training_source
from recsys.bundle import current_version
from recsys.config import load_config
from serving.holder import BundleHolder, _lower_this_thread_priority
from serving.pipeline import RecommendPipeline, RecommendRequest


class StandInVectors:
    """A vector store with no user vectors and `add`-ed item vectors."""

    def __init__(self) -> None:
        self.items: dict[str, np.ndarray] = {}
        self.changes = 0

    def user_vector(self, user_id: str) -> np.ndarray | None:
        return None

    def item_vectors(self) -> tuple[int, dict[str, np.ndarray]]:
        return self.changes, self.items

    def add(self, vectors: dict[str, np.ndarray]) -> None:
        self.items = {**self.items, **vectors}
        self.changes += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="bring-your-own data directory (default MovieLens-100k)")
    parser.add_argument("--artifacts", help="reuse the bundle here (built if empty)")
    parser.add_argument("--stages", choices=("default", "none"), default="default")
    parser.add_argument("--new-items", type=int, default=10, help="items per join")
    parser.add_argument(
        "--moved", type=int, default=0, help="known items per join with a stepped vector"
    )
    parser.add_argument("--backend", help="ANN backend (default: the config's)")
    parser.add_argument("--every", type=float, default=2.0, help="seconds between joins")
    parser.add_argument("--seconds", type=float, default=30.0, help="per phase")
    parser.add_argument("--rps", type=float, default=50.0)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-join-"))
    root = Path(args.artifacts or work / "artifacts")
    overrides: dict[str, dict] = {"artifacts": {"root": str(root)}}
    if args.data:
        overrides["data"] = {"source": args.data}
    if args.stages == "none":
        overrides["ranking"] = {"stages": []}
    if args.backend:
        overrides["ann"] = {"backend": args.backend}
    config = load_config().replace(**overrides)
    holder, store = BundleHolder(config), StandInVectors()
    started = time.perf_counter()
    if args.stages == "none":
        bundle = build_bundle(load_training_source(config).dataset, config).bundle
    else:
        if current_version(root) is None:
            run_nightly(config, show_progress=True)
        assert holder.refresh(), "the bundle did not load"
        bundle = holder.pipeline().bundle
    print(f"built or loaded the bundle in {time.perf_counter() - started:.0f} s", flush=True)
    attach_live_tops(bundle, config)
    holder._pipeline = RecommendPipeline(bundle, config, None, store)  # reads the stand-in
    users = [str(user) for user in bundle.users.ids]
    factors, known = bundle.als.model.item_factors, bundle.items.ids
    print(
        f"bundle {bundle.version}: {len(users):,} users, {len(bundle.items):,} items, "
        f"stages {list(config.ranking.stages)}",
        flush=True,
    )

    quiet = _load(holder, users, args.rps, args.seconds, None)
    joins: list[float] = []
    memory: list[float] = []
    replaced: list[weakref.ref] = []  # the bundles each join swapped out: they must go
    stop = threading.Event()
    rng = np.random.default_rng(0)

    def join_now() -> None:
        base = rng.integers(0, len(factors), size=(args.new_items, 3))
        mixed = factors[base].mean(axis=1).astype(np.float32)
        store.add({f"joined-{len(joins)}-{i}": mixed[i] for i in range(args.new_items)})
        # the nearline's steps of hot items: known items whose vector moved since the last
        moved = rng.choice(len(known), size=args.moved, replace=False)
        # a step moves every vector (an item iALS left at zero too)
        stepped = factors[moved] * rng.uniform(0.8, 1.2, size=(args.moved, 1))
        stepped = (stepped + rng.normal(scale=1e-3, size=stepped.shape)).astype(np.float32)
        store.add({str(known[i]): vector for i, vector in zip(moved, stepped, strict=True)})
        replaced.append(weakref.ref(holder.pipeline().bundle))
        started = time.perf_counter()
        joined = holder.join_new_items()
        assert joined == args.new_items + args.moved, f"{joined} items joined or moved"
        joins.append(time.perf_counter() - started)
        memory.append(_rss_mb())

    def joiner() -> None:
        _lower_this_thread_priority()  # as serving's joiner thread runs
        while not stop.wait(args.every):
            join_now()

    thread = threading.Thread(target=joiner, daemon=True)
    before = _rss_mb()
    thread.start()
    busy = _load(holder, users, args.rps, args.seconds, stop)
    thread.join()

    print(
        f"{len(joins)} joins of {args.new_items} new and {args.moved} moved items "
        f"({bundle.als.index.backend}; {len(bundle.items):,} -> "
        f"{len(holder.pipeline().bundle.items):,} items): "
        f"{_ms(joins)}; resident memory {before:.0f} -> {memory[-1] if memory else before:.0f} MB "
        f"(peak {_peak_mb():.0f} MB)"
    )
    del bundle
    alive = sum(ref() is not None for ref in replaced)
    print(f"bundles swapped out by a join and still alive: {alive} of {len(replaced)}")
    print(f"Recommend without joins: {_ms(quiet)}")
    print(f"Recommend with a join every {args.every:g} s: {_ms(busy)}")


def _load(holder, users, rps, seconds, stop) -> list[float]:
    """Open loop: a request every 1/rps s; latency counted from when it was due."""
    rng = np.random.default_rng(1)
    latencies, due = [], time.perf_counter()
    end = due + seconds
    while due < end:
        now = time.perf_counter()
        if now < due:
            time.sleep(due - now)
        holder.pipeline().recommend(RecommendRequest(str(rng.choice(users)), 20))
        latencies.append(time.perf_counter() - due)
        due += 1.0 / rps
    if stop is not None:
        stop.set()
    return latencies


def _ms(seconds: list[float]) -> str:
    if not seconds:
        return "none"
    p50, p99 = np.percentile(seconds, [50, 99])
    return f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {max(seconds) * 1000:.1f} ms"


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main()
