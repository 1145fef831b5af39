"""`recsys serve` as operators run it: a supervisor and one worker per core on one port.
Kill -9 must not lose an acknowledged event; SIGTERM must not fail an in-flight call."""

from __future__ import annotations

import os
import signal
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import pytest

from protos.recsys.v1 import recommender_pb2 as pb
from protos.recsys.v1 import recommender_pb2_grpc as pb_grpc
from serving.grpc.client import RecommenderClient
from tests.conftest import DATA_CACHE
from tests.frames import logged_events
from tests.serving_harness import Load, ServerProcess, free_port


@pytest.fixture()
def serve(tmp_path, ml_config, ml_nightly):
    metrics_port = free_port()
    server = ServerProcess(
        tmp_path,
        {
            "data": {"cache_dir": str(DATA_CACHE)},
            "artifacts": {"root": ml_config.artifacts.root},
            "serving": {"port": 0, "processes": 2, "metrics_port": metrics_port},
            "events": {"log_dir": str(tmp_path / "events")},
        },
    )
    server.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    server.events_dir = tmp_path / "events"
    yield server.start()
    server.stop()


def worker_pids(supervisor: int) -> list[int]:
    """The supervisor's worker processes (spawned; not multiprocessing's resource tracker)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (proc / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue  # not a process, or gone meanwhile
        if parent == supervisor and b"spawn_main" in command and b"resource_tracker" not in command:
            pids.append(int(proc.name))
    return pids


def metric(url: str, line_start: str) -> list[str]:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return [line for line in text.splitlines() if line.startswith(line_start)]


def test_acknowledged_events_survive_kill_minus_9(serve) -> None:
    acked: list[str] = []
    stop = threading.Event()
    progress = threading.Condition()

    def send(thread: int) -> None:
        with grpc.insecure_channel(serve.address) as channel:
            stub = pb_grpc.RecommenderStub(channel)
            for batch in range(10_000):
                if stop.is_set():
                    return
                ids = [f"t{thread}-b{batch}-e{i}" for i in range(20)]
                events = [
                    pb.Event(
                        user_id=f"u{thread}",
                        item_id=item,
                        event_type="view",
                        value=1,
                        timestamp=int(time.time()),
                    )
                    for item in ids
                ]
                try:
                    stub.LogEvents(pb.LogEventsRequest(events=events), timeout=10)
                except grpc.RpcError:
                    return  # the server is gone; this batch was never acknowledged
                with progress:
                    acked.extend(ids)
                    progress.notify_all()

    senders = [threading.Thread(target=send, args=(t,)) for t in range(3)]
    for sender in senders:
        sender.start()
    with progress:
        assert progress.wait_for(lambda: len(acked) >= 2000, timeout=60)
    serve.kill_all()  # mid-stream: batches are in flight in every sender
    stop.set()
    for sender in senders:
        sender.join()
    logged = set(logged_events(serve.events_dir)["item_id"])
    assert len(acked) >= 2000
    missing = [item for item in acked if item not in logged]
    assert missing == []


def test_workers_share_the_port_and_sigterm_under_load_drains_every_call(serve) -> None:
    with grpc.insecure_channel(serve.address) as channel:
        stub = pb_grpc.RecommenderStub(channel)
        for _ in range(10):
            assert len(stub.Recommend(pb.RecommendRequest(user_id="196", k=5), timeout=10).items)
    # /metrics adds up both workers' samples
    answered = metric(serve.metrics_url, 'recsys_requests_total{code="OK",method="Recommend"}')
    assert answered and float(answered[0].split()[-1]) == 10.0
    assert len(metric(serve.metrics_url, "recsys_bundle_info{")) == 2  # a gauge per worker
    assert metric(serve.metrics_url, 'recsys_stage_seconds_count{stage="dlrm"}')

    # each worker has a port of its own too: the client sends each call to the worker with
    # fewer calls in flight, so 10 calls one after another alternate, 5 each; plus 5 direct
    # calls to each port
    assert serve.workers_address and len(serve.workers_address.split(",")) == 2
    with RecommenderClient(serve.workers_address, timeout=10) as balanced:
        for _ in range(10):
            assert len(balanced.recommend("196", 5).items) == 5
    host, ports = serve.workers_address.rsplit(":", 1)
    for port in ports.split(","):
        with RecommenderClient(f"{host}:{port}", timeout=10) as one_worker:
            for _ in range(5):
                assert len(one_worker.recommend("196", 5).items) == 5
    # each worker stays on a CPU of its own (serving.pin_cpus), when there are enough CPUs
    pinned = [os.sched_getaffinity(pid) for pid in worker_pids(serve.process.pid)]
    assert len(pinned) == 2
    if len(os.sched_getaffinity(0)) >= 2:
        assert [len(cpus) for cpus in pinned] == [1, 1] and pinned[0] != pinned[1]

    with Load(serve.address, threads=4, user="196", k=100) as load:
        assert load.wait_for(40, timeout=60) and not load.failures
        serve.signal(signal.SIGTERM)
        assert serve.wait(60) == 0
    drained = serve.logs("drained")
    assert len(drained) == 2, serve.log_path.read_text()[-2000:]
    for worker in drained:  # nothing begun was left unfinished
        assert worker["calls_begun"] == worker["calls_ended"]
        assert worker["calls_ended"] >= 10  # 5 balanced and 5 to its own port, at least
    # every call a worker finished reached its client as a success...
    assert sum(worker["calls_ended"] for worker in drained) == len(load.versions) + 30
    # ...and what failed was refused at the door once the shutdown began
    # (UNAVAILABLE, or CANCELLED for a stream reset by the closing connection: the
    # accounting above shows no servicer had begun it)
    assert {err.code() for err in load.failures} <= {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.CANCELLED,
    }


def test_a_killed_worker_is_replaced_on_its_cpu_and_its_own_port(serve) -> None:
    before = worker_pids(serve.process.pid)
    cpus_before = sorted(min(os.sched_getaffinity(pid)) for pid in before)
    os.kill(before[0], signal.SIGKILL)
    # each worker's own port answers again: the survivor's, and the replacement's once it
    # has loaded the bundle (it listens only then; the channel retries until it does)
    host, ports = serve.workers_address.rsplit(":", 1)
    for port in ports.split(","):
        with RecommenderClient(f"{host}:{port}", timeout=30) as client:
            client.wait_ready(120)
            assert len(client.recommend("196", 5).items) == 5
    after = worker_pids(serve.process.pid)
    assert len(after) == 2 and before[0] not in after
    if len(os.sched_getaffinity(0)) >= 2:  # the replacement took its predecessor's CPU
        assert sorted(min(os.sched_getaffinity(pid)) for pid in after) == cpus_before
    assert "starting another" in serve.log_path.read_text()


def test_the_supervisor_does_not_load_the_model_stack() -> None:
    """The supervisor only spawns, watches and sums metrics. It once imported the pipeline
    (torch, LightGBM, faiss) through serving.metrics in its watcher thread right after
    announcing, which took about 4 s of CPU from the workers in their first seconds."""
    import subprocess
    import sys

    heavy = ("torch", "lightgbm", "faiss", "serving.pipeline")
    code = (
        "import sys, serving.grpc.supervisor, serving.metrics;"
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == ""


def _gone(pid: int, timeout: float) -> bool:
    """Whether process `pid` ends (or is a zombie nobody reaps yet) within `timeout` s."""
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.1)  # polling a process we cannot wait on (it is not our child)
    return False


def test_a_second_serve_on_a_port_in_use_fails_clearly(serve, tmp_path) -> None:
    (tmp_path / "second").mkdir()
    second = ServerProcess(
        tmp_path / "second",
        {
            "data": {"cache_dir": str(DATA_CACHE)},
            "artifacts": {"root": str(tmp_path / "no-bundles")},
            "serving": {"port": serve.port, "processes": 2, "metrics_port": 0},
            "events": {"log_dir": str(tmp_path / "second" / "events")},
        },
    )
    with pytest.raises(RuntimeError, match="server did not start"):
        second.start()
    assert second.wait(60) == 1
    assert f"127.0.0.1:{serve.port} is in use" in second.log_path.read_text()
    with RecommenderClient(serve.address, timeout=30) as client:  # the first one still serves
        assert len(client.recommend("196", 5).items) == 5


def test_workers_drain_and_exit_when_their_supervisor_is_killed(serve) -> None:
    workers = worker_pids(serve.process.pid)
    assert len(workers) == 2
    os.kill(serve.process.pid, signal.SIGKILL)  # no handler runs: only the pipe tells them
    serve.process.wait(30)
    assert all(_gone(pid, timeout=60) for pid in workers)
    with pytest.raises(grpc.RpcError) as refused, RecommenderClient(serve.address, 5) as client:
        client.recommend("196", 5)
    assert refused.value.code() in {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


@pytest.mark.slow  # 45 s: the real backoff, 1 + 2 + 4 + 8 + 16 s between five failed starts
def test_the_supervisor_retries_then_exits_non_zero_when_no_worker_can_start(serve) -> None:
    # replacements cannot open their event log: every start fails the same way
    events = serve.events_dir
    events.rename(events.with_name("events-moved"))
    events.write_text("not a directory")
    for pid in worker_pids(serve.process.pid):
        os.kill(pid, signal.SIGKILL)
    assert serve.wait(300) == 1
    log_text = serve.log_path.read_text()
    assert log_text.count("trying again in") >= 4  # a growing pause between the attempts
    assert "no worker left and 5 starts in a row failed" in log_text
