"""Latency from a `LogEvents` acknowledgement to a `Recommend` served with the user's new
iALS vector, under a steady `Recommend` load (issue "Near-realtime ALS steps": p99 <= 1 s).

`recsys serve` (one worker per core) and `recsys nearline` run as processes of their own;
this process sends an open-loop `--rps` of `Recommend` for random users and, alongside,
probes: a user's list (k=50) is read, `LogEvents` sends three purchases for that user, and
the clock starts at its acknowledgement; then `Recommend` for the user is repeated every
`--poll-ms` until a score of an item present before and after has changed, which only a new
user vector does (the bundle is built with `ranking.stages = []`, so every served score is
the dot product u·v of the vector serving used; the purchases themselves only drop items
from the list). Prints the latency percentiles, the load actually held and its p99.

Then (ii), new items: the five users most like a chosen user (cosine of the bundle's iALS
vectors) buy an item id no bundle has seen; from the acknowledgement, `Recommend` (k=50)
for the chosen user is repeated until the item is in the list, placed by
`nearline.fresh_slots` (the server runs with 3 fresh slots, from 48; every probe's item
stays fresh for the rest of the run, so later probes' items compete with earlier ones).
From the same acknowledgement, `Rank` of the item for that user is asked until every
worker ranks it with the cascade (a stage, not the unknown item's ""): the item joined the
bundle in service (`nearline.join_seconds`, `--join-seconds`), so the ANN index, the
features and the rankers know it (`--join-timeout` bounds the wait).

    python bench/bench_nearline.py                 # MovieLens-100k, 100 RPS, 40 probes
    python bench/bench_nearline.py --rps 200 --probes 100
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
from bench_load import _start_server

from candidates.als import ALSModel
from pipelines.nightly import run_nightly
from protos.recsys.v1 import recommender_pb2 as pb
from protos.recsys.v1 import recommender_pb2_grpc as pb_grpc
from recsys.bundle import current_version
from recsys.components import COMPONENTS
from recsys.config import load_config
from recsys.loaded_bundle import load_ids

TARGET_S = 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rps", type=float, default=100.0)
    parser.add_argument("--probes", type=int, default=40)
    parser.add_argument("--new-item-probes", type=int, default=20)
    parser.add_argument("--poll-ms", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds a probe may wait")
    parser.add_argument("--artifacts", help="reuse the bundle here (built if empty)")
    parser.add_argument("--join-seconds", type=float, default=None, help="nearline.join_seconds")
    parser.add_argument("--join-timeout", type=float, default=30.0)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-nearline-"))
    root = Path(args.artifacts or work / "artifacts")
    config = load_config().replace(
        artifacts={"root": str(root)},
        events={"log_dir": str(work / "events")},
        ranking={"stages": []},
    )
    if current_version(root) is None:
        started = time.perf_counter()
        run_nightly(config, show_progress=True)
        print(f"built the bundle in {time.perf_counter() - started:.0f} s", flush=True)
    user_ids, item_ids = load_ids(root / current_version(root))
    users, items = list(user_ids.ids), list(item_ids.ids)
    vectors = ALSModel.load(root / current_version(root) / COMPONENTS["als"].subdirectory)
    args.neighbours = _neighbours(vectors.user_factors, users)

    join = config.nearline.join_seconds if args.join_seconds is None else args.join_seconds
    args.join_seconds = join
    overrides = {
        "ranking": {"stages": []},
        "nearline": {"fresh_slots": 3, "fresh_position": 48, "join_seconds": join},
    }
    shutil.rmtree(root / "nearline", ignore_errors=True)  # a reused root: no earlier journal
    server, shared, workers, _ = _start_server(config, 0, overrides, work)
    nearline_toml = work / "nearline.toml"
    nearline_toml.write_text(
        f'[artifacts]\nroot = "{root}"\n[events]\nlog_dir = "{config.events.log_dir}"\n'
    )
    with open(work / "nearline.log", "wb") as log:
        nearline = subprocess.Popen(
            [sys.executable, "-m", "recsys_cli", "nearline", "--config", str(nearline_toml)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        result = asyncio.run(_run(workers or shared, users, items, args))
    finally:
        for process in (nearline, server):
            process.terminate()
            process.wait(60)
    _report(result, args)
    print(f"logs: {work}")


async def _run(address: str, users: list[str], items: list[str], args) -> dict:
    targets = address.split(":")
    host, ports = targets[0], targets[1].split(",")
    channels = [grpc.aio.insecure_channel(f"{host}:{port}") for port in ports]
    stubs = [pb_grpc.RecommenderStub(channel) for channel in channels]
    stop = asyncio.Event()
    load_latencies: list[float] = []
    load = asyncio.create_task(_load(stubs, users, args.rps, stop, load_latencies))
    await asyncio.sleep(2.0)  # the load reaches its rate before the first probe
    rng = random.Random(7)
    probes = rng.sample(users, args.probes)
    latencies, misses = [], 0
    started = time.perf_counter()
    for user in probes:
        latency = await _probe(stubs, user, rng.sample(items, 3), args)
        if latency is None:
            misses += 1
        else:
            latencies.append(latency)
        await asyncio.sleep(0.2)
    new_item, new_misses, joined, join_misses = [], 0, [], 0
    for n in range(args.new_item_probes):
        chosen = rng.choice(users)
        fans = args.neighbours[chosen]
        item = f"bench-new-{n}-{rng.getrandbits(32):08x}"
        listed, ranked = await _new_item_probe(stubs, chosen, fans, item, args)
        if listed is None:
            new_misses += 1
        else:
            new_item.append(listed)
        if ranked is None:
            join_misses += 1
        else:
            joined.append(ranked)
        await asyncio.sleep(0.2)
    seconds = time.perf_counter() - started
    stop.set()
    sent = await load
    for channel in channels:
        await channel.close()
    return {
        "latencies": latencies,
        "misses": misses,
        "new_item": new_item,
        "new_item_misses": new_misses,
        "joined": joined,
        "join_misses": join_misses,
        "load": load_latencies,
        "achieved_rps": sent / (seconds + 2.0),
    }


async def _load(stubs, users, rps, stop, latencies) -> int:
    """Open loop: a request every 1/rps seconds whatever the answers do."""
    rng = random.Random(1)
    interval, sent, tasks = 1.0 / rps, 0, set()
    next_at = time.perf_counter()

    async def one(stub, user, scheduled):
        try:
            await stub.Recommend(pb.RecommendRequest(user_id=user, k=20), timeout=2.0)
            latencies.append(time.perf_counter() - scheduled)
        except grpc.aio.AioRpcError:
            latencies.append(float("inf"))

    while not stop.is_set():
        now = time.perf_counter()
        if now < next_at:
            await asyncio.sleep(next_at - now)
            continue
        task = asyncio.create_task(one(stubs[sent % len(stubs)], rng.choice(users), next_at))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        sent += 1
        next_at += interval
    await asyncio.gather(*tasks)
    return sent


async def _scores(stub, user: str) -> dict[str, float]:
    answer = await stub.Recommend(pb.RecommendRequest(user_id=user, k=50), timeout=2.0)
    return {item.item_id: item.score for item in answer.items}


def _purchases(users: list[str], items: list[str]) -> list[pb.Event]:
    now = int(time.time())
    return [
        pb.Event(user_id=user, item_id=item, event_type="purchase", value=1, timestamp=now)
        for user, item in zip(users, items, strict=True)
    ]


async def _until(stubs, events: list[pb.Event], seen, args) -> float | None:
    """Send `events`; from the acknowledgement, ask `seen(stub)` (each worker in turn: each
    must see it) every poll_ms until it answers True. Seconds taken, None past the timeout."""
    await stubs[0].LogEvents(pb.LogEventsRequest(events=events), timeout=5.0)
    acknowledged = time.perf_counter()
    turn = 0
    while time.perf_counter() - acknowledged < args.timeout:
        if await seen(turn % len(stubs)):
            return time.perf_counter() - acknowledged
        turn += 1
        await asyncio.sleep(args.poll_ms / 1000)
    return None


async def _probe(stubs, user: str, bought: list[str], args) -> float | None:
    before = [await _scores(stub, user) for stub in stubs]

    async def moved(worker: int) -> bool:  # a score of an item kept in the list changed
        after = await _scores(stubs[worker], user)
        common = set(before[worker]) & set(after)
        return any(abs(before[worker][item] - after[item]) > 1e-4 for item in common)

    return await _until(stubs, _purchases([user] * len(bought), bought), moved, args)


def _neighbours(vectors: np.ndarray, users: list[str], n: int = 5) -> dict[str, list[str]]:
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    similar = unit @ unit.T
    np.fill_diagonal(similar, -np.inf)
    best = np.argsort(-similar, axis=1)[:, :n]
    return {user: [users[j] for j in best[i]] for i, user in enumerate(users)}


async def _new_item_probe(
    stubs, chosen: str, fans: list[str], item: str, args
) -> tuple[float | None, float | None]:
    """Seconds from the acknowledgement to the item in the chosen user's list (fresh slots,
    any worker), and to every worker's cascade ranking it (joined); None: not within the
    timeout (`--timeout`, `--join-timeout`)."""
    await stubs[0].LogEvents(pb.LogEventsRequest(events=_purchases(fans, [item] * len(fans))))
    acknowledged = time.perf_counter()
    listed = joined = None
    ranking: set[int] = set()  # workers whose cascade ranks it
    turn = 0
    while time.perf_counter() - acknowledged < max(args.timeout, args.join_timeout):
        worker, elapsed = turn % len(stubs), time.perf_counter() - acknowledged
        if (
            listed is None
            and elapsed < args.timeout
            and item in await _scores(stubs[worker], chosen)
        ):
            listed = time.perf_counter() - acknowledged
        if joined is None and worker not in ranking:
            answer = await stubs[worker].Rank(
                pb.RankRequest(user_id=chosen, item_ids=[item]), timeout=2.0
            )
            if answer.items[0].stage:
                ranking.add(worker)
                if len(ranking) == len(stubs):
                    joined = time.perf_counter() - acknowledged
        if joined is not None and (listed is not None or elapsed >= args.timeout):
            break
        turn += 1
        await asyncio.sleep(args.poll_ms / 1000)
    return listed, joined


def _report(result: dict, args) -> None:
    _print_latencies("Recommend with the new vector", result["latencies"], result["misses"], args)
    _print_latencies(
        "a new item in the user's list", result["new_item"], result["new_item_misses"], args
    )
    joined = np.array(result["joined"])
    print(
        f"LogEvents ack -> a new item ranked by every worker's cascade ({len(joined)} probes, "
        f"{result['join_misses']} not within {args.join_timeout:.0f} s; "
        f"nearline.join_seconds = {args.join_seconds:g}):"
    )
    if len(joined):
        p50, p99 = np.percentile(joined, [50, 99])
        print(
            f"  p50 {p50 * 1000:.0f} ms  p99 {p99 * 1000:.0f} ms  max {joined.max() * 1000:.0f} ms"
        )
    load = np.array(result["load"])
    ok = load[np.isfinite(load)]
    print(
        f"Recommend load: {result['achieved_rps']:.0f} RPS achieved of {args.rps:.0f}; "
        f"p50 {np.percentile(ok, 50) * 1000:.1f} ms, p99 {np.percentile(ok, 99) * 1000:.1f} ms, "
        f"{len(load) - len(ok)} failed"
    )


def _print_latencies(what: str, seconds: list[float], misses: int, args) -> None:
    values = np.array(seconds)
    print(
        f"LogEvents ack -> {what} ({len(values)} probes, "
        f"{misses} not seen within {args.timeout:.0f} s):"
    )
    if len(values):
        p50, p95, p99 = np.percentile(values, [50, 95, 99])
        met = p99 <= TARGET_S and not misses
        print(
            f"  p50 {p50 * 1000:.0f} ms  p95 {p95 * 1000:.0f} ms  p99 {p99 * 1000:.0f} ms  "
            f"max {values.max() * 1000:.0f} ms  (target p99 <= {TARGET_S * 1000:.0f} ms: "
            f"{'met' if met else 'NOT met'})"
        )


if __name__ == "__main__":
    main()
