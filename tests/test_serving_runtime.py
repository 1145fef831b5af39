"""The runtime under stress, through a real gRPC server on loopback: hot-swap under load,
a hung generator against the deadline, LogEvents feeding the next request, fuzzed input."""

from __future__ import annotations

import contextlib
import random
import shutil
import threading
import time
from dataclasses import dataclass

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from pipelines.nightly import run_nightly
from protos.recsys.v1 import recommender_pb2 as pb
from protos.recsys.v1 import recommender_pb2_grpc as pb_grpc
from recsys.bundle import CURRENT
from recsys.context import Candidates
from serving import pipeline as pipeline_module
from serving.grpc.client import RecommenderClient
from serving.grpc.server import start_server
from tests.conftest import shop_config
from tests.serving_harness import Load

NOW_S = 1_700_000_000


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.slow  # 75 s: two nightlies and 25 s of load; the holder tests swap too
def test_hot_swap_under_load_fails_no_request_and_refuses_a_corrupt_bundle(
    tmp_path, shop_dir
) -> None:
    config = shop_config(tmp_path, shop_dir)
    first = run_nightly(config, show_progress=False).manifest.version
    running = start_server(config, watch=True)  # polls `current` every 0.2 s
    try:
        with Load(f"127.0.0.1:{running.port}") as load:
            second = run_nightly(config, force=True, show_progress=False).manifest.version
            load.expected = second
            assert load.new_version.wait(60), "the server never switched to the new bundle"
            # a damaged copy published as `current`: refused, the good bundle stays
            root = tmp_path / "artifacts"
            bad = "99990101T000000000000Z"
            shutil.copytree(root / second, root / bad)
            victim = next((root / bad / "als").glob("*.npz"))
            victim.write_bytes(victim.read_bytes()[:-10])
            (root / "pointer.tmp").write_text(bad)  # as a disk fault would leave it
            (root / "pointer.tmp").replace(root / CURRENT)
            assert not running.holder.refresh()
            assert load.wait_for(len(load.versions) + 20, timeout=30)  # still serving
        assert load.failures == []
        assert set(load.versions) == {first, second}
        assert load.versions[-1] == second and running.holder.version == second
    finally:
        running.stop()


class Hangs:
    """A generator stuck on a dead dependency until the test ends."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.release = threading.Event()

    def generate(self, ctx, budget: int) -> Candidates:
        self.release.wait()
        return Candidates(np.array([0]), np.ones(1, np.float32), self.name)


def test_a_hung_generator_is_dropped_and_requests_answer_within_the_deadline(
    ml_config, ml_nightly, monkeypatch
) -> None:
    hangs = Hangs("quorum")  # the rankers know the source; its index has "gone away"
    make = pipeline_module.make_generators
    monkeypatch.setattr(
        pipeline_module,
        "make_generators",
        lambda bundle, config, names: [
            hangs if g.name == hangs.name else g for g in make(bundle, config, names)
        ],
    )
    config = ml_config.replace(serving={"deadline_ms": 150, "ranking_reserve_ms": 50})
    running = start_server(config, watch=False)
    dropped_before = counter(
        "recsys_generator_dropped_total", generator="quorum", reason="deadline"
    )
    try:
        with RecommenderClient(f"127.0.0.1:{running.port}", timeout=2.0) as client:
            latencies = []
            for user in ["196", "186", "22", "new-user"] * 10:
                start = time.perf_counter()
                result = client.recommend(user, 10)  # a client deadline of 2 s: the cap is 150 ms
                latencies.append(time.perf_counter() - start)
                assert len(result.items) == 10
                assert all("quorum" not in item.sources for item in result.items)
                assert result.degraded and result.trace.dropped == {"quorum": "deadline"}
        assert max(latencies) < 2.0  # no request waited for the hung generator's answer
        dropped = counter("recsys_generator_dropped_total", generator="quorum", reason="deadline")
        assert dropped - dropped_before == 40  # counted on every request it missed
    finally:
        hangs.release.set()
        running.stop()


@pytest.fixture(scope="module")
def server(ml_config, ml_nightly, tmp_path_factory):
    """Its own event log: the fuzzed events below must not reach other tests' sessions."""
    config = ml_config.replace(events={"log_dir": str(tmp_path_factory.mktemp("events"))})
    running = start_server(config, watch=False)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield pb_grpc.RecommenderStub(channel)


def event(user: str, item: str, kind: str) -> pb.Event:
    return pb.Event(
        user_id=user, item_id=item, event_type=kind, value=1, timestamp=int(time.time())
    )


def test_logged_events_shape_the_very_next_request(stub) -> None:
    before = stub.Recommend(pb.RecommendRequest(user_id="session-user", k=20), timeout=5)
    assert before.cold_start
    bought = before.items[0].item_id
    reply = stub.LogEvents(
        pb.LogEventsRequest(
            events=[event("session-user", "50", "view"), event("session-user", bought, "purchase")]
        ),
        timeout=5,
    )
    assert reply.accepted == 2
    after = stub.Recommend(pb.RecommendRequest(user_id="session-user", k=20), timeout=5)
    ids = [item.item_id for item in after.items]
    assert bought not in ids  # just bought: not offered again
    sources = {s for item in after.items for s in item.sources}
    assert {"i2i_als", "business"} & sources  # the viewed item seeds the item-to-item lists


def test_a_flood_of_logged_events_is_applied_a_share_per_request(ml_config, ml_nightly, tmp_path):
    """A bulk import of 5,000 events lands in the log (another process's segment): each
    request applies at most events.request_catch_up of them before answering, and counts
    itself cut while more wait. The follower thread, which would take the rest between
    requests, only wakes once an hour here, so every share is the requests' own."""
    from serving.events import Event, EventLog

    config = ml_config.replace(
        events={
            "log_dir": str(tmp_path / "events"),
            "request_catch_up": 2000,
            "follow_seconds": 3600,
        }
    )
    running = start_server(config, watch=False)
    try:
        EventLog(config.events.log_dir, 1 << 20).append(
            [
                Event(f"flood{i % 300}", str(1 + i % 1682), "view", 1.0, NOW_S + i)
                for i in range(5000)
            ]
        )
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.RecommenderStub(channel)
            cut = counter("recsys_session_catch_up_cut_total")
            for expected_cut in (1, 2, 2):  # 2,000, 2,000, then the last 1,000: not cut
                reply = stub.Recommend(pb.RecommendRequest(user_id="flood7", k=10), timeout=10)
                assert len(reply.items) == 10
                assert counter("recsys_session_catch_up_cut_total") - cut == expected_cut
            assert len(running.servicer.sessions) == 300  # every flooded user's session
    finally:
        running.stop()


def test_a_batch_with_one_bad_event_is_refused_whole(stub, server) -> None:
    from tests.frames import logged_events

    logged = len(logged_events(server.event_log.directory))
    batch = [event("u", "1", "view"), event("u", "2", "like"), event("u", "3", "view")]
    with pytest.raises(grpc.RpcError) as caught:
        stub.LogEvents(pb.LogEventsRequest(events=batch), timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "events[1].event_type 'like' unknown" in caught.value.details()
    assert len(logged_events(server.event_log.directory)) == logged  # nothing half-written


def _fuzzed(rng: random.Random) -> tuple[str, object]:
    """One malformed or odd request: method name and message (or raw bytes)."""
    text = rng.choice(
        ["", "196", "Ω☃𝄞", "\x00\x01", "u" * 300, "\u202e", "1; DROP TABLE", "🙂" * 70]
    )
    k = rng.choice([-(2**31), -1, 0, 1, 20, 500, 501, 2**31 - 1])
    ids = [rng.choice(["1", "50", "", "Ω", "x" * 1000]) for _ in range(rng.randrange(0, 30))]
    kind = rng.randrange(5)
    if kind == 0:
        return "Recommend", pb.RecommendRequest(
            user_id=text, k=k, region=text, exclude_item_ids=ids, basket_item_ids=ids
        )
    if kind == 1:
        return "Rank", pb.RankRequest(user_id=text, item_ids=ids * rng.randrange(1, 40))
    if kind == 2:
        return "SimilarItems", pb.SimilarItemsRequest(item_id=text, k=k)
    if kind == 3:
        events = [
            pb.Event(
                user_id=text,
                item_id=rng.choice(ids or [""]),
                event_type=rng.choice(["view", "like", "", "purchase"]),
                value=rng.choice([1.0, float("nan"), float("inf")]),
                timestamp=rng.choice([0, -5, 1_700_000_000, 2**62]),
            )
            for _ in range(rng.randrange(0, 4))
        ]
        return "LogEvents", pb.LogEventsRequest(events=events)
    return rng.choice(["Recommend", "Rank", "LogEvents"]), rng.randbytes(rng.randrange(1, 64))


def test_a_thousand_malformed_requests_get_clear_statuses_and_the_server_keeps_serving(
    server, stub
) -> None:
    rng = random.Random(11)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    raw = {
        name: channel.unary_unary(f"/recsys.v1.Recommender/{name}")
        for name in ("Recommend", "Rank", "SimilarItems", "LogEvents")
    }
    codes: dict[str, int] = {}
    for _ in range(1000):
        method, message = _fuzzed(rng)
        payload = message if isinstance(message, bytes) else message.SerializeToString()
        try:
            raw[method](payload, timeout=10)
            code = "OK"
        except grpc.RpcError as err:
            code = err.code().name
            assert err.details(), f"{method} answered {code} without a message"
            if code == "INTERNAL":  # only for bytes that are not a message of the rpc at all
                assert isinstance(message, bytes), (method, message, err.details())
        codes[code] = codes.get(code, 0) + 1
    channel.close()
    assert set(codes) <= {"OK", "INVALID_ARGUMENT", "NOT_FOUND", "INTERNAL"}, codes
    assert codes["INVALID_ARGUMENT"] > 300 and codes.get("OK", 0) > 10, codes
    reply = stub.Recommend(pb.RecommendRequest(user_id="196", k=5), timeout=5)
    assert len(reply.items) == 5


class StuckDisk:
    """The event log of a server whose disk stops answering: append blocks until freed."""

    def __init__(self, log) -> None:
        self.log = log
        self.entered = threading.Event()
        self.release = threading.Event()

    def append(self, events) -> None:
        self.entered.set()
        self.release.wait(30)
        self.log.append(events)


@pytest.mark.parametrize("side_threads", [1, 0])
def test_a_logevents_stuck_on_its_fsync_does_not_hold_recommends(
    ml_config, ml_nightly, tmp_path, side_threads
) -> None:
    config = ml_config.replace(  # no queue: the pool is `workers` + `side_threads` threads
        serving={"side_threads": side_threads, "max_queued_calls": 0},
        events={"log_dir": str(tmp_path)},
    )
    running = start_server(config, watch=False)
    disk = StuckDisk(running.servicer.event_log)
    running.servicer.event_log = disk
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.RecommenderStub(channel)
            logged = stub.LogEvents.future(
                pb.LogEventsRequest(events=[event("disk-user", "50", "view")]), timeout=60
            )
            assert disk.entered.wait(30)  # the LogEvents call now holds a handler thread
            request = pb.RecommendRequest(user_id="196", k=10)
            if side_threads:
                for _ in range(3):  # answered while the LogEvents still waits for its disk
                    assert len(stub.Recommend(request, timeout=30).items) == 10
                assert not logged.done()
            else:  # every handler thread is taken: the Recommend waits past its deadline
                with pytest.raises(grpc.RpcError) as waited:
                    stub.Recommend(request, timeout=1.0)
                assert waited.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            disk.release.set()
            assert logged.result().accepted == 1  # and it is still acknowledged, durably
    finally:
        disk.release.set()
        running.stop()


class HeldPipeline:
    """The served pipeline behind a gate: each Recommend waits until the test lets it go."""

    def __init__(self, holder) -> None:
        self.real = holder.pipeline()
        self.entered: list[str] = []
        self.release = threading.Event()

    def pipeline(self):
        return self

    def recommend(self, request):
        self.entered.append(request.user_id)
        self.release.wait()
        return self.real.recommend(request)


@dataclass
class OneTurnHeld:
    """A server with one ranking turn, held by a first call (user 196) at work, and a
    second call (user 22) waiting for the turn."""

    running: object
    held: HeldPipeline
    channel: grpc.Channel
    stub: pb_grpc.RecommenderStub
    working: grpc.Future
    queued: grpc.Future
    until: float  # a bound for the tests' own waits


@contextlib.contextmanager
def one_turn_held(config, queued_timeout: float):
    running = start_server(config, watch=False)
    held = HeldPipeline(running.holder)
    running.servicer.holder = held
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.RecommenderStub(channel)
            working = stub.Recommend.future(pb.RecommendRequest(user_id="196", k=5), timeout=60)
            until = time.monotonic() + 30
            while not held.entered:  # the first call is at work (and holds the one turn)
                assert time.monotonic() < until
                time.sleep(0.01)
            request = pb.RecommendRequest(user_id="22", k=5)
            queued = stub.Recommend.future(request, timeout=queued_timeout)
            while running.servicer.ranking_turns.waiting < 1:  # the second waits its turn
                assert time.monotonic() < until
                time.sleep(0.01)
            yield OneTurnHeld(running, held, channel, stub, working, queued, until)
    finally:
        held.release.set()
        running.stop()


def test_overload_is_refused_at_once_and_health_and_logevents_still_answer(
    ml_config, ml_nightly, tmp_path
) -> None:
    config = ml_config.replace(
        serving={"workers": 1, "max_queued_calls": 1, "side_threads": 1},
        events={"log_dir": str(tmp_path)},
    )
    late_before = counter("recsys_calls_shed_total", reason="late")
    with one_turn_held(config, queued_timeout=2) as server:
        stub = server.stub
        # the server had the call by now: its deadline there is at most 2 s from here
        # (the client's own deadline passes a little earlier, as the call took time to get
        # there; releasing the turn in between would legitimately serve the call)
        server_deadline = time.monotonic() + 2
        with pytest.raises(grpc.RpcError) as refused:  # a third: the queue is full
            stub.Recommend(pb.RecommendRequest(user_id="186", k=5), timeout=30)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "overloaded" in refused.value.details()
        health = health_pb2_grpc.HealthStub(server.channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        logged = stub.LogEvents(
            pb.LogEventsRequest(events=[event("busy-user", "50", "view")]), timeout=5
        )
        assert logged.accepted == 1
        with pytest.raises(grpc.RpcError) as expired:  # the queued one's deadline passes
            server.queued.result()
        assert expired.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        while time.monotonic() <= server_deadline:  # the property tested is a deadline
            time.sleep(0.01)
        server.held.release.set()
        assert len(server.working.result().items) == 5
        while counter("recsys_calls_shed_total", reason="late") == late_before:
            assert time.monotonic() < server.until + 30  # its turn came: refused, not worked on
            time.sleep(0.01)
        assert server.held.entered == ["196"]


def test_a_call_the_queue_left_without_time_to_rank_is_shed_not_worked_on(
    ml_config, ml_nightly, tmp_path
) -> None:
    """Waiting for its turn ate the call's deadline down to under ranking_reserve_ms: it is
    refused when its turn comes (DEADLINE_EXCEEDED), not answered with a backfill."""
    config = ml_config.replace(
        serving={
            "workers": 1,
            "max_queued_calls": 1,
            "deadline_ms": 3000,
            "ranking_reserve_ms": 2900,
        },
        events={"log_dir": str(tmp_path)},
    )
    late_before = counter("recsys_calls_shed_total", reason="late")
    with one_turn_held(config, queued_timeout=3) as server:
        # it has waited since before now: 150 ms more leaves it under 2.9 s of its 3 s
        waited_enough = time.monotonic() + 0.15
        while time.monotonic() < waited_enough:  # the property tested is a deadline
            time.sleep(0.01)
        server.held.release.set()
        with pytest.raises(grpc.RpcError) as shed:
            server.queued.result()
        assert shed.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "serving.ranking_reserve_ms" in shed.value.details()
        assert len(server.working.result().items) == 5  # it had its turn at once: worked on
        assert server.held.entered == ["196"]
        assert counter("recsys_calls_shed_total", reason="late") == late_before + 1
