"""`recsys serve`: one server process per core on one port, a supervisor in front.

Python runs one request's Python code at a time per process (the GIL), so a single
process cannot keep both cores busy with the pipeline's Python glue. Each worker is a
whole server (bundle, fan-out, event log segment, session store) listening on the same
port with SO_REUSEPORT; the kernel spreads connections over them. The supervisor:
- reserves the port (port 0: picks a free one) before any worker binds it;
- sets PROMETHEUS_MULTIPROC_DIR for the workers and serves their summed /metrics;
- restarts a worker that dies, with a growing pause while replacements keep failing, and
  exits non-zero when no worker is left and none can be started;
- on SIGTERM/SIGINT forwards SIGTERM to every worker and waits while each drains its
  in-flight calls;
- holds one end of a pipe per worker: when the supervisor dies, however it dies, the
  worker reads end-of-file, drains and exits (no workers serving unsupervised).
Workers are spawned, not forked: gRPC's threads do not survive a fork.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
from multiprocessing.connection import Connection, wait

from recsys.config import Config
from serving.logs import configure_logging

log = logging.getLogger(__name__)

READY_TIMEOUT_SECONDS = 600.0  # loading a 1M-user bundle takes minutes, not hours
# A slot whose replacement fails is tried again after 1, 2, 4, ... s (at most a minute); with
# no worker left, the supervisor gives up after this many failed starts in a row.
RESTART_FIRST_PAUSE_SECONDS = 1.0
RESTART_MAX_PAUSE_SECONDS = 60.0
RESTART_ATTEMPTS = 5
SPAWN = multiprocessing.get_context("spawn")


def serve_forever(config: Config) -> None:
    """Serve on config.serving host:port with `processes` workers until SIGTERM/SIGINT."""
    configure_logging(config.serving.log_format)
    _refuse_a_port_in_use(config.serving.host, config.serving.port)
    processes = config.serving.processes or os.cpu_count() or 1
    if processes == 1:
        _single(config)
    else:
        Supervisor(config, processes).run()


def _single(config: Config) -> None:
    from serving import metrics
    from serving.grpc.server import serve_in_process

    if config.serving.metrics_port:
        metrics.serve_metrics(config.serving.metrics_host, config.serving.metrics_port)

    def ready(running) -> None:
        _announce(config, running.port, 1, running.holder.version)

    serve_in_process(config, ready)


def _announce(
    config: Config,
    port: int,
    processes: int,
    version: str | None,
    own_ports: list[int | None] | None = None,
) -> None:
    """The line operators (and tests, and bench/bench_load.py) read: the address, and each
    worker's own port when there are some (a client balancing calls by calls in flight
    over them loads every worker evenly; the shared port spreads connections, not calls)."""
    ports = [p for p in own_ports or [] if p is not None]
    workers = f"; workers on {config.serving.host}:{','.join(map(str, ports))}" if ports else ""
    print(
        f"recsys serving on {config.serving.host}:{port} "
        f"({processes} process{'es' if processes > 1 else ''}, bundle {version}{workers})",
        flush=True,
    )


class Supervisor:
    def __init__(self, config: Config, processes: int) -> None:
        self.config = config
        self.processes = processes
        self.stopping = threading.Event()
        self.workers: list[multiprocessing.Process] = []
        self.cpus = _worker_cpus(processes) if config.serving.pin_cpus else [None] * processes
        self.own_ports: list[int | None] = [None] * processes
        self.slot_of: dict[int, int] = {}  # worker pid -> its slot: CPU and port of its own
        self.lifelines: dict[int, Connection] = {}  # worker pid -> our end of its pipe
        self.gave_up: str | None = None  # why the supervisor stopped on its own

    def run(self) -> None:
        metrics_dir = tempfile.mkdtemp(prefix="recsys-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # before any worker starts
        reserved, port = _reserve_port(self.config.serving.host, self.config.serving.port)
        self.config = self.config.replace(serving={"port": port})
        own = []
        if self.config.serving.worker_ports:
            own = [_reserve_port(self.config.serving.host, 0) for _ in range(self.processes)]
            self.own_ports = [p for _, p in own]
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopping.set())
        try:
            starting = [self._spawn(slot) for slot in range(self.processes)]  # loads at once
            versions = [self._await_ready(*worker) for worker in starting]
            if self.config.serving.metrics_port:
                from serving import metrics  # after the env var: multiprocess mode

                metrics.serve_metrics(
                    self.config.serving.metrics_host, self.config.serving.metrics_port
                )
            _announce(self.config, port, self.processes, versions[0], self.own_ports)
            watcher = threading.Thread(target=self._restart_dead, name="worker-watch", daemon=True)
            watcher.start()
            self.stopping.wait()
        finally:
            self.stopping.set()
            self._stop_workers()
            reserved.close()
            for sock, _ in own:
                sock.close()
            shutil.rmtree(metrics_dir)
        if self.gave_up:
            raise RuntimeError(self.gave_up)

    def _spawn(self, slot: int) -> tuple[multiprocessing.Process, Connection]:
        """Start worker number `slot` (a replacement takes its predecessor's slot)."""
        parent, child = SPAWN.Pipe(duplex=False)
        lifeline, held = SPAWN.Pipe(duplex=False)  # never written: only its closing counts
        worker = SPAWN.Process(
            target=_worker_main,
            args=(self.config, child, self.cpus[slot], self.own_ports[slot], lifeline),
            daemon=False,
        )
        worker.start()
        child.close()
        lifeline.close()
        self.slot_of[worker.pid] = slot
        self.lifelines[worker.pid] = held
        return worker, parent

    def _forget(self, worker: multiprocessing.Process) -> int:
        """Drop a dead worker's records; its slot."""
        self.lifelines.pop(worker.pid).close()
        return self.slot_of.pop(worker.pid)

    def _await_ready(self, worker: multiprocessing.Process, parent: Connection) -> str | None:
        """Wait until the worker listens; the bundle version it serves."""
        if not parent.poll(READY_TIMEOUT_SECONDS):
            worker.kill()
            worker.join()
            self._forget(worker)
            raise RuntimeError(f"worker {worker.pid} did not start in {READY_TIMEOUT_SECONDS} s")
        try:
            version = parent.recv()
        except EOFError:
            worker.join()
            self._forget(worker)
            raise RuntimeError(
                f"worker {worker.pid} exited with code {worker.exitcode} before listening; "
                "its log above says why"
            ) from None
        self.workers.append(worker)
        return version

    def _restart_dead(self) -> None:
        """A worker that dies (a crash, the OOM killer) is replaced on its slot; the others
        keep serving. A replacement that fails is retried after a growing pause, for as
        long as another worker serves; with none left, RESTART_ATTEMPTS failures in a row
        stop the supervisor (exit code 1) rather than leave a port that answers nothing."""
        from serving.metrics import process_exited

        empty: list[int] = []  # slots without a worker
        failures = 0
        while not self.stopping.is_set():
            sentinels = {w.sentinel: w for w in self.workers}
            # the timeout only to notice `stopping`, or to get on with the empty slots
            ended = wait(list(sentinels), timeout=0 if empty else 1.0) if sentinels else []
            for sentinel in ended:
                worker = sentinels[sentinel]
                if self.stopping.is_set():
                    return
                log.error(
                    "worker %s exited with code %s; starting another", worker.pid, worker.exitcode
                )
                process_exited(worker.pid)
                self.workers.remove(worker)
                empty.append(self._forget(worker))
            if not empty or self.stopping.is_set():
                continue
            try:
                self._await_ready(*self._spawn(empty[0]))
            except RuntimeError as err:
                failures += 1
                if not self.workers and failures >= RESTART_ATTEMPTS:
                    self.gave_up = (
                        f"no worker left and {failures} starts in a row failed; the last: {err}"
                    )
                    log.critical("giving up: %s", self.gave_up)
                    self.stopping.set()
                    return
                pause = min(
                    RESTART_MAX_PAUSE_SECONDS, RESTART_FIRST_PAUSE_SECONDS * 2 ** (failures - 1)
                )
                log.error("could not replace a worker (%s); trying again in %g s", err, pause)
                self.stopping.wait(pause)
            else:
                empty.pop(0)
                failures = 0

    def _stop_workers(self) -> None:
        for worker in self.workers:
            if worker.is_alive():
                os.kill(worker.pid, signal.SIGTERM)
        for worker in self.workers:
            worker.join(self.config.serving.drain_seconds + 30)
            if worker.is_alive():
                log.error("worker %s did not drain in time; killing it", worker.pid)
                worker.kill()
                worker.join()


def _refuse_a_port_in_use(host: str, port: int) -> None:
    """The workers bind with SO_REUSEPORT, which lets a second `recsys serve` (or the
    orphans of a killed one) share the port silently; a plain bind fails if anything
    listens there. SO_REUSEADDR: a restart must not trip on its predecessor's TIME_WAITs."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            raise OSError(
                f"{host}:{port} is in use ({err.strerror}): another `recsys serve`, or "
                "something else, listens there; stop it or set serving.port"
            ) from None


def _reserve_port(host: str, port: int) -> tuple[socket.socket, int]:
    """Bind (not listen) the port with SO_REUSEPORT so the workers can share it; port 0
    becomes a free port the workers then all bind."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise OSError(f"cannot bind {host}:{port}: {err}") from None
    return sock, sock.getsockname()[1]


def _worker_cpus(processes: int) -> list[int | None]:
    """One CPU per worker, while there are enough: a worker that stays on its core keeps its
    caches warm (measured at 200 RPS: p99 50-110 ms pinned, 170-430 ms not, the same CPU
    per request). With more workers than CPUs, none is pinned."""
    if not hasattr(os, "sched_getaffinity"):
        return [None] * processes
    cpus = sorted(os.sched_getaffinity(0))
    if processes > len(cpus):
        log.info("%d workers on %d CPUs: not pinning them", processes, len(cpus))
        return [None] * processes
    return cpus[:processes]


def _worker_main(
    config: Config,
    ready: Connection,
    cpu: int | None = None,
    own_port: int | None = None,
    lifeline: Connection | None = None,
) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})  # before any thread starts: they all inherit it
    configure_logging(config.serving.log_format)
    if lifeline is not None:
        threading.Thread(
            target=_exit_with_supervisor, args=(lifeline,), name="lifeline", daemon=True
        ).start()
    from serving.grpc.server import serve_in_process

    def announce(running) -> None:
        ready.send(running.holder.version)
        ready.close()

    serve_in_process(config, announce, own_port)


def _exit_with_supervisor(lifeline: Connection) -> None:
    """Block until the supervisor's end of the pipe closes (it exited, or was killed), then
    drain and exit as on SIGTERM. A pipe, not prctl(PR_SET_PDEATHSIG): that signal fires
    when the parent *thread* that spawned us ends, and replacements are spawned by a
    watcher thread."""
    with contextlib.suppress(EOFError, OSError):
        lifeline.recv()
    log.error("the supervisor is gone; draining and exiting")
    os.kill(os.getpid(), signal.SIGTERM)
