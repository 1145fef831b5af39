"""Latency of `Recommend` through the real gRPC server, from one client on loopback.

Publishes a MovieLens-100k bundle into a temporary directory, starts the server in a
separate process (so client and server do not share a GIL), then sends sequential
requests for random known users (and a share of unknown ones) and prints percentiles.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time

import numpy as np

from pipelines.nightly import run_nightly
from recsys.config import load_config
from serving.grpc.client import RecommenderClient


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("-k", type=int, default=20)
    parser.add_argument("--cold-share", type=float, default=0.1)
    args = parser.parse_args()

    root = tempfile.mkdtemp()
    config = load_config().replace(artifacts={"root": root})
    result = run_nightly(config, show_progress=False)
    n_users = result.manifest.metrics["n_users"]
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "recsys_cli", "serve", "--artifacts", root, "--port", str(port)],
        stdout=subprocess.DEVNULL,
    )
    try:
        with RecommenderClient(f"127.0.0.1:{port}", timeout=10) as client:
            client.wait_ready(60)
            assert client.health() == "SERVING"  # set before the port is reported ready
            rng = np.random.default_rng(0)
            users = [
                f"cold-{i}" if rng.random() < args.cold_share else str(rng.integers(1, n_users + 1))
                for i in range(args.requests)
            ]
            for user in users[:200]:  # warm-up
                client.recommend(user, args.k)
            latencies = []
            start = time.perf_counter()
            for user in users:
                t0 = time.perf_counter()
                client.recommend(user, args.k)
                latencies.append(time.perf_counter() - t0)
            wall = time.perf_counter() - start
    finally:
        server.terminate()
        server.wait(30)
    ms = np.array(latencies) * 1000
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    print(
        f"Recommend k={args.k}, {args.requests} sequential calls, 1 client, loopback, "
        f"{args.cold_share:.0%} cold users"
    )
    print(
        f"p50={p50:.2f} ms  p95={p95:.2f} ms  p99={p99:.2f} ms  max={ms.max():.2f} ms  "
        f"throughput={args.requests / wall:.0f} req/s  p99/p50={p99 / p50:.2f}"
    )


if __name__ == "__main__":
    main()
