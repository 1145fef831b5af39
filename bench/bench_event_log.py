"""Serving start-up and latency with a large event log, before and after the nightly folds
it in and retires it (issue "Hardening": 1M logged events -> start-up < 3 s, normal p50).

Writes `--events` view events of MovieLens-100k users and items through `EventLog` (as
`LogEvents` would), then times an in-process `start_server` and 300 sequential `Recommend`
calls: (1) with a bundle built without the log (every event is replayed into sessions);
(2) after a nightly that folds the log in and archives it (nothing to replay; the first
start probes the new bundle in a child process); (3) that start again (the probe's verdict
is remembered). The bundles use `ranking.stages = []`, so the nightly is quick.

    python bench/bench_event_log.py                  # 1M events
    python bench/bench_event_log.py --events 200000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from pipelines.nightly import run_nightly
from recsys.config import load_config
from serving.events import Event, EventLog
from serving.grpc.client import RecommenderClient
from serving.grpc.server import start_server

BATCH = 10_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-event-log-"))
    config = load_config().replace(
        artifacts={"root": str(work / "artifacts")},
        events={"log_dir": str(work / "events")},
        serving={"port": 0, "metrics_port": 0},
        ranking={"stages": []},
    )
    rng = np.random.default_rng(0)
    now = int(time.time()) - 3600
    log = EventLog(config.events.log_dir, config.events.segment_bytes)
    started = time.perf_counter()
    for batch in range(args.events // BATCH):
        users, items = rng.integers(1, 944, BATCH), rng.integers(1, 1683, BATCH)
        pairs = zip(users, items, strict=True)
        log.append([Event(str(u), str(i), "view", 1.0, now + batch) for u, i in pairs])
    log.close()
    size = sum(p.stat().st_size for p in Path(config.events.log_dir).glob("*.jsonl")) >> 20
    print(f"logged {args.events} events ({size} MB) in {time.perf_counter() - started:.0f} s")

    run_nightly(config.replace(events={"log_dir": str(work / "no-log")}), show_progress=False)
    _start(config, "a bundle without the log: every event replayed")
    started = time.perf_counter()
    manifest = run_nightly(config, force=True, show_progress=False).manifest
    archive = sum(p.stat().st_size for p in (Path(config.events.log_dir) / "archive").glob("*"))
    print(
        f"nightly folding {manifest.metrics['event_log']['events']} logged events: "
        f"{time.perf_counter() - started:.0f} s; JSONL segments left: "
        f"{len(list(Path(config.events.log_dir).glob('*.jsonl')))}, archive {archive >> 20} MB"
    )
    _start(config, "after the nightly (its new bundle probed in a child first)")
    _start(config, "after the nightly, restarted (the probe's verdict remembered)")


def _start(config, label: str) -> None:
    started = time.perf_counter()
    server = start_server(config, watch=False)
    seconds = time.perf_counter() - started
    sessions = len(server.servicer.sessions)
    latencies = []
    with RecommenderClient(f"127.0.0.1:{server.port}") as client:
        client.recommend("196", 10)
        for user in range(1, 301):
            begun = time.perf_counter()
            client.recommend(str(user), 20)
            latencies.append(time.perf_counter() - begun)
    server.stop(grace=0)
    p50, p99 = np.percentile(latencies, [50, 99]) * 1000
    print(
        f"{label}: start-up {seconds:.1f} s, {sessions} sessions, "
        f"Recommend p50 {p50:.1f} ms, p99 {p99:.1f} ms"
    )


if __name__ == "__main__":
    main()
