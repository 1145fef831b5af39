"""Per-request latency of the DLRM ranker (seed 000): float32 eager, INT8 dynamic quantized,
TorchScript, TorchScript of the INT8 model, and native code compiled ahead of time
(AOTInductor, `ranking.dlrm_serving = "compiled"`).

.venv/bin/python bench/bench_dlrm.py
.venv/bin/python bench/bench_dlrm.py --requests 1000 --candidates 200 500 1000

One request = one `predict` call on that many candidate rows of one user, on one thread
(torch.set_num_threads(1)), as a serving worker calls it; the call includes the input checks
and the numpy <-> torch conversion. Sizes are a production shop's: 40 dense features (a quarter
with missing values), sparse user (100k), item (20k), category (200), region (10), and the
[dlrm] section of recsys/default.toml (embedding_dim 16, bottom [64, 32], top [64, 32]). The
model is trained for a short while on a synthetic frame first, so BatchNorm statistics and
weights are realistic for the int8 drift, which is measured on held-out rows.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ranking.dlrm.ranker import DLRMRanker
from ranking.frame import RankingFrame
from recsys.config import load_config
from recsys.metrics import auc

CARDINALITIES = {"user": 100_000, "item": 20_000, "category": 200, "region": 10}
N_DENSE = 40


def synthetic_frame(
    n_requests: int, per_request: int, rng: np.random.Generator, weights: np.ndarray
) -> RankingFrame:
    """Random requests; the label follows a few dense features and a user-item taste match."""
    n = n_requests * per_request
    users = np.repeat(rng.integers(1, CARDINALITIES["user"], size=n_requests), per_request)
    items = rng.integers(1, CARDINALITIES["item"], size=n)
    dense = rng.normal(size=(n, N_DENSE)).astype(np.float32)
    dense[:, : N_DENSE // 4][rng.random((n, N_DENSE // 4)) < 0.3] = np.nan
    taste = np.where(users % 2 == items % 2, 1.0, -1.0)
    logit = np.nan_to_num(dense[:, :8]) @ weights + taste
    labels = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    sparse = np.c_[
        users,
        items,
        items % (CARDINALITIES["category"] - 1) + 1,
        np.repeat(rng.integers(0, CARDINALITIES["region"], size=n_requests), per_request),
    ].astype(np.int64)
    return RankingFrame(
        dense=dense,
        dense_names=tuple(f"f{i}" for i in range(N_DENSE)),
        sparse=sparse,
        sparse_names=tuple(CARDINALITIES),
        sparse_cardinalities=tuple(CARDINALITIES.values()),
        groups=np.repeat(np.arange(n_requests), per_request).astype(np.int64),
        labels=labels,
    )


def latencies_ms(ranker: DLRMRanker, requests: list[RankingFrame], warmup: int) -> np.ndarray:
    for frame in requests[:warmup]:
        ranker.predict(frame)
    times = np.empty(len(requests))
    for i, frame in enumerate(requests):
        started = time.perf_counter()
        ranker.predict(frame)
        times[i] = time.perf_counter() - started
    return times * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--candidates", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--train-requests", type=int, default=2000, help="x 100 rows each")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--fit-threads", type=int, default=1, help="small batches: more threads mostly contend"
    )
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    weights = rng.normal(size=8)
    config = load_config().dlrm
    config = type(config)(**{**config.__dict__, "epochs": args.epochs})
    train = synthetic_frame(args.train_requests, 100, rng, weights)
    valid = synthetic_frame(args.train_requests // 4, 100, rng, weights)

    started = time.perf_counter()
    eager = DLRMRanker.fit(train, valid, config, device="cpu", threads=args.fit_threads)
    seconds = time.perf_counter() - started
    print(
        f"fit          {len(train):,} rows x {args.epochs} epochs in {seconds:.1f} s "
        f"({len(train) * args.epochs / seconds:,.0f} rows/s, {args.fit_threads} threads),"
        f" valid AUC {eager.history[-1]['valid_auc']:.3f}"
    )
    torch.set_num_threads(1)
    variants = {"float32 eager": eager, "int8 dynamic": eager.quantized()}
    variants["torchscript"] = eager.scripted()
    started = time.perf_counter()
    variants["compiled"] = eager.compiled(None)  # no cache: compiled here, timed
    print(f"compiled ({variants['compiled'].variant}) in {time.perf_counter() - started:.1f} s")
    try:
        variants["torchscript int8"] = variants["int8 dynamic"].scripted()
    except Exception as error:  # report and go on: the other three still measure
        print(f"torchscript int8 failed: {error}")

    reference = eager.predict(valid)
    for name, ranker in variants.items():
        drift = np.abs(ranker.predict(valid) - reference)
        print(
            f"{name:16s} drift vs eager: max {drift.max():.2e} mean {drift.mean():.2e},"
            f" valid AUC {auc(valid.labels, ranker.predict(valid)):.4f}"
        )

    print(f"\nlatency per request, {args.requests} requests, 1 thread (ms)")
    for n in args.candidates:
        requests = [synthetic_frame(1, n, rng, weights) for _ in range(args.requests)]
        p50 = {}
        for name, ranker in variants.items():
            times = latencies_ms(ranker, requests, args.warmup)
            p50[name], p99 = np.percentile(times, [50, 99])
            print(f"{n:5d} cands  {name:16s} p50 {p50[name]:7.3f}  p99 {p99:7.3f}")
        eager_p50, int8_p50 = p50["float32 eager"], p50["int8 dynamic"]
        print(
            f"{n:5d} cands  torchscript/eager {p50['torchscript'] / eager_p50:.2f}"
            f"  compiled/torchscript {p50['compiled'] / p50['torchscript']:.2f}"
            f"  int8/float32 {int8_p50 / eager_p50:.2f}"
            + (
                f"  torchscript-int8/eager {p50['torchscript int8'] / eager_p50:.2f}"
                if "torchscript int8" in p50
                else ""
            )
        )


if __name__ == "__main__":
    main()
