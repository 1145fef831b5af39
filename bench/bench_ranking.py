"""Per-request ranking latency of the real cascade on real features (MovieLens-100k bundle).

For each of `--requests` known users: the pipeline's candidates, topped up with random
eligible items to exactly N rows (N = 200 and 1000), then timed one request at a time on
one thread: feature assembly, LightGBM predict (its own and compiled by lleaves, checked
equal), DLRM predict as eager float32, INT8 dynamic quantized and TorchScript. Prints
p50/p99 per step and the TorchScript/eager, int8/float32 and compiled/booster ratios.

.venv/bin/python bench/bench_ranking.py [--requests 300]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from pipelines.nightly import run_nightly
from pipelines.ranking_data import with_random_negatives
from ranking.dlrm.ranker import KnownIds
from recsys.config import load_config
from serving.holder import BundleHolder
from serving.pipeline import RecommendRequest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    config = load_config().replace(artifacts={"root": tempfile.mkdtemp()})
    run_nightly(config, show_progress=False)
    holder = BundleHolder(config)
    holder.refresh()
    pipeline = holder.pipeline()
    lightgbm, dlrm = (pipeline.bundle.rankers.models[s] for s in ("lightgbm", "dlrm"))
    variants = {  # each as serving wraps it: ids past the tables map to "unknown"
        "dlrm eager": KnownIds(dlrm),
        "dlrm int8": KnownIds(dlrm.quantized()),
        "dlrm torchscript": KnownIds(dlrm.scripted()),
    }
    compiled = lightgbm.compiled()  # lleaves; the same scores (checked below)
    rng = np.random.default_rng(0)
    users = rng.choice(pipeline.bundle.users.ids, size=args.requests)
    torch.set_num_threads(1)
    print(f"trees in LightGBM: {lightgbm.best_iteration}; one thread; ms per request")
    with threadpool_limits(1):
        for rows in (200, 1000):
            timings: dict[str, list[float]] = {}
            for user in users:
                ctx = pipeline.context(RecommendRequest(user_id=str(user), k=10))
                found, _ = pipeline.candidates(ctx)
                found = with_random_negatives(pipeline, ctx, found, rows, rng)
                found = found.take(np.arange(min(rows, len(found))))
                start = time.perf_counter()
                frame = pipeline.features.build(ctx, found)
                timings.setdefault("features", []).append(time.perf_counter() - start)
                start = time.perf_counter()
                booster_scores = lightgbm.predict(frame)
                timings.setdefault("lightgbm", []).append(time.perf_counter() - start)
                start = time.perf_counter()
                compiled_scores = compiled.predict(frame)
                timings.setdefault("lightgbm compiled", []).append(time.perf_counter() - start)
                np.testing.assert_array_equal(compiled_scores, booster_scores)
                for name, model in variants.items():
                    start = time.perf_counter()
                    model.predict(frame)
                    timings.setdefault(name, []).append(time.perf_counter() - start)
            print(f"\n{rows} candidates (mean rows {len(frame)}):")
            p50 = {}
            for name, values in timings.items():
                ms = 1000 * np.array(values[10:])  # first calls warm caches up
                p50[name] = float(np.percentile(ms, 50))
                print(f"  {name:<18} p50 {p50[name]:6.2f}  p99 {np.percentile(ms, 99):6.2f}")
            print(
                f"  torchscript/eager {p50['dlrm torchscript'] / p50['dlrm eager']:.2f}  "
                f"int8/float32 {p50['dlrm int8'] / p50['dlrm eager']:.2f}  "
                f"lightgbm compiled/booster {p50['lightgbm compiled'] / p50['lightgbm']:.2f}"
            )


if __name__ == "__main__":
    main()
