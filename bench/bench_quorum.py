"""How fast QuorumModel.score reads a sparse TF: by item (row gather) or by category
(column search), by the number of the user's categories, with caches cold and hot.

.venv/bin/python bench/bench_quorum.py                               # synthetic 100k-item shop
.venv/bin/python bench/bench_quorum.py --artifacts artifacts-shop    # a bundle's quorum model

In serving the score runs twice per request (the quorum generator, the quorum_affinity
feature) on a few hundred items, between stages that walk megabytes of other tables, so
its data is mostly out of cache: "cold" writes a 64 MB buffer before each call. The
crossover decides candidates.quorum.COLUMN_LOOKUP_MAX_CATEGORIES.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from shop_scale import add_shop_size_arguments

import candidates.quorum as quorum_module
from candidates.quorum import QuorumModel
from pipelines.synthetic import generate_synthetic
from pipelines.training_data import build_training_data
from recsys.config import load_config

CATEGORY_COUNTS = (1, 2, 3, 5, 10, 20)


def load_model(args: argparse.Namespace) -> QuorumModel:
    if args.artifacts:
        root = Path(args.artifacts)
        version = (root / "current").read_text().strip()
        return QuorumModel.load(root / version / "quorum")
    config = load_config()
    dataset = generate_synthetic(
        args.users, args.items, args.events, n_categories=args.categories, seed=args.seed
    )
    return QuorumModel.fit(build_training_data(dataset, config), config.quorum)


def timed_ms(call, flush: np.ndarray | None, repeats: int) -> np.ndarray:
    times = np.empty(repeats)
    for i in range(repeats):
        if flush is not None:
            flush += 1  # evicts TF (and everything else) from the caches
        start = time.perf_counter()
        call()
        times[i] = time.perf_counter() - start
    return times * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_shop_size_arguments(parser)
    parser.set_defaults(users=100_000, events=3_000_000)
    parser.add_argument("--artifacts", help="read the quorum model of this bundle root")
    parser.add_argument("--candidates", type=int, default=700, help="items scored per call")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    model = load_model(args)
    n_items, n_categories = model.tf.shape
    if model.tf_columns is None:
        raise SystemExit("this TF is kept dense: score never reads the sparse layouts")
    print(f"TF {n_items:,} items x {n_categories} categories, {model.tf.nnz:,} entries")
    rng = np.random.default_rng(args.seed)
    flush = np.ones(8_000_000)
    print("| categories | caches | by item p50 / p99 ms | by category p50 / p99 ms | ratio |")
    print("|---|---|---|---|---|")
    for count in CATEGORY_COUNTS:
        categories = np.sort(rng.choice(n_categories, size=count, replace=False))
        uf = rng.dirichlet(np.ones(count))
        items = rng.choice(n_items, size=args.candidates, replace=False)

        def score_with(column_max: int, c=categories, u=uf, i=items) -> np.ndarray:
            quorum_module.COLUMN_LOOKUP_MAX_CATEGORIES = column_max
            return model.score(c, u, i)

        assert np.array_equal(score_with(0), score_with(n_categories))
        for caches, buffer in (("cold", flush), ("hot", None)):
            rows = timed_ms(lambda: score_with(0), buffer, args.repeats)
            columns = timed_ms(lambda: score_with(n_categories), buffer, args.repeats)
            print(
                f"| {count} | {caches} | {np.median(rows):.3f} / {np.percentile(rows, 99):.3f}"
                f" | {np.median(columns):.3f} / {np.percentile(columns, 99):.3f}"
                f" | {np.median(columns) / np.median(rows):.2f} |"
            )


if __name__ == "__main__":
    main()
