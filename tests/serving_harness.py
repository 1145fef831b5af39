"""Test helpers for the serving runtime: a load of client threads, and `recsys serve` as a
real process tree (supervisor + workers) with its own TOML configuration."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import grpc

from protos.recsys.v1 import recommender_pb2 as pb
from protos.recsys.v1 import recommender_pb2_grpc as pb_grpc


class Load:
    """Client threads calling Recommend until stopped; every outcome is kept."""

    def __init__(self, address: str, threads: int = 3, user: str = "u1", k: int = 10) -> None:
        self.channel = grpc.insecure_channel(address)
        self.stub = pb_grpc.RecommenderStub(self.channel)
        self.stop = threading.Event()
        self.versions: list[str] = []
        self.failures: list[grpc.RpcError] = []
        self.progress = threading.Condition()
        self.expected: str | None = None
        self.new_version = threading.Event()
        self.request = pb.RecommendRequest(user_id=user, k=k)
        self.threads = [threading.Thread(target=self._loop) for _ in range(threads)]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()
        self.channel.close()

    def wait_for(self, answered: int, timeout: float) -> bool:
        """Block until at least `answered` calls succeeded (or one failed)."""
        with self.progress:
            return self.progress.wait_for(
                lambda: len(self.versions) >= answered or self.failures, timeout
            )

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                reply = self.stub.Recommend(self.request, timeout=10)
            except grpc.RpcError as err:
                with self.progress:
                    self.failures.append(err)
                    self.progress.notify_all()
                continue
            with self.progress:
                self.versions.append(reply.model_version)
                self.progress.notify_all()
            if reply.model_version == self.expected:
                self.new_version.set()


def free_port() -> int:
    """A port free now, below the kernel's ephemeral range: a port the OS hands out for
    port 0 (a serving worker's own port, a client's connection) could take one picked from
    that range between this call and the server's bind ("Address already in use")."""
    low = _ephemeral_low()
    for port in random.Random().sample(range(10_000, low), 200):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in 10000-{low}")


def _ephemeral_low() -> int:
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default
    return max(low, 10_200)


def toml_text(sections: dict[str, dict[str, object]]) -> str:
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


class ServerProcess:
    """`recsys serve` in its own process group, its stderr (JSON logs) kept in a file."""

    def __init__(self, tmp: Path, sections: dict[str, dict[str, object]]) -> None:
        self.config_path = tmp / "serve.toml"
        self.config_path.write_text(toml_text(sections))
        self.log_path = tmp / "serve.log"
        self.process: subprocess.Popen | None = None
        self.port = 0

    def start(self) -> ServerProcess:
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "recsys_cli", "serve", "--config", str(self.config_path)],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                start_new_session=True,  # its own group: kill -9 reaches every worker
            )
        line = self.process.stdout.readline()  # "recsys serving on host:port (...)"
        if "serving on" not in line:
            self.process.wait(30)
            raise RuntimeError(f"server did not start: {line!r}\n{self.log_path.read_text()}")
        self.port = int(line.split()[3].rsplit(":", 1)[1])
        # "...; workers on 127.0.0.1:p1,p2)": each worker's port of its own
        self.workers_address = (
            line.split("workers on ")[-1].rstrip(")\n") if "workers on " in line else None
        )
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def kill_all(self) -> None:
        """kill -9 of the supervisor and every worker at once: no handler runs."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)

    def logs(self, message: str) -> list[dict]:
        entries = []
        for line in self.log_path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("message") == message:
                entries.append(entry)
        return entries

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill_all()
