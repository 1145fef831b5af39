"""Recommend while a flood of events is logged (a bulk import through LogEvents): what a
request pays for catching up with the log (issue "Near-realtime ALS steps": a backlog of
logged events used to be applied, sessions and live tops both, by the request that met it).

A writer process appends `--events` view events in batches of 10,000 to the server's event
log (its own segments, as LogEvents of another worker would) while one client calls
Recommend in a loop, or (idle) once, a second after the writer is done. Three settings: no
follower thread (every request applies the whole backlog it meets, the behaviour before
session 15); a follower while requests are idle (the default); and a follower with
`events.request_catch_up = 2000`. Prints Recommend's latency percentiles during the flood
(and the requests counted as cut), and the idle case's next Recommend.

    python bench/bench_flood.py                    # 200,000 events
    python bench/bench_flood.py --events 500000
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from pathlib import Path

import numpy as np
from prometheus_client import REGISTRY

from pipelines.nightly import run_nightly
from recsys.config import load_config
from serving.events import Event, EventLog
from serving.grpc.client import RecommenderClient
from serving.grpc.server import start_server

BATCH = 10_000
IDLE_SECONDS = 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-flood-"))
    config = load_config().replace(
        artifacts={"root": str(work / "artifacts")},
        serving={"port": 0, "metrics_port": 0},
        ranking={"stages": []},
    )
    run_nightly(config.replace(events={"log_dir": str(work / "no-log")}), show_progress=False)
    follow = config.events.follow_seconds
    runs = (
        ("no follower, every event per request (before session 15)", 0, 0.0),
        (f"a follower when idle {follow} s, every event per request (default)", 0, follow),
        (f"a follower when idle {follow} s, at most 2000 per request", 2000, follow),
    )
    for label, limit, seconds in runs:
        for idle in (False, True):
            events = {
                "log_dir": str(work / f"events-{limit}-{seconds}-{idle}"),
                "request_catch_up": limit,
                "follow_seconds": seconds,
            }
            flood(config.replace(events=events), args.events, label, idle)


def write(directory: str, segment_bytes: int, events: int) -> None:
    """Another process's LogEvents: `events` views in batches, as fast as it can."""
    log = EventLog(directory, segment_bytes)
    rng = np.random.default_rng(0)
    now = int(time.time()) - 3600
    for batch in range(events // BATCH):
        users, items = rng.integers(1, 944, BATCH), rng.integers(1, 1683, BATCH)
        pairs = zip(users, items, strict=True)
        log.append([Event(str(u), str(i), "view", 1.0, now + batch) for u, i in pairs])
    log.close()


def flood(config, events: int, label: str, idle: bool) -> None:
    """Recommend in a loop while the writer logs (`idle`: no requests while it does, then
    one after an idle second)."""
    server = start_server(config, watch=False)
    writer = multiprocessing.get_context("spawn").Process(
        target=write, args=(config.events.log_dir, config.events.segment_bytes, events)
    )
    cut = REGISTRY.get_sample_value("recsys_session_catch_up_cut_total") or 0.0
    latencies = []
    with RecommenderClient(f"127.0.0.1:{server.port}") as client:
        client.recommend("196", 10)
        writer.start()
        while writer.is_alive():
            if idle:
                writer.join()
                time.sleep(IDLE_SECONDS)  # a quiet second after the flood
            begun = time.perf_counter()
            client.recommend(str(1 + len(latencies) % 943), 20)
            latencies.append(time.perf_counter() - begun)
    server.stop(grace=0)
    cuts = (REGISTRY.get_sample_value("recsys_session_catch_up_cut_total") or 0.0) - cut
    ms = np.array(latencies) * 1000
    if idle:
        print(f"{label}, idle during the flood: the next Recommend {ms[-1]:.1f} ms")
        return
    p50, p90, p99, top = np.percentile(ms, [50, 90, 99, 100])
    print(
        f"{label}, during the flood: {len(ms)} Recommends; p50 {p50:.1f} ms, p90 {p90:.1f}, "
        f"p99 {p99:.1f}, max {top:.1f}; {cuts:.0f} cut"
    )


if __name__ == "__main__":
    main()
