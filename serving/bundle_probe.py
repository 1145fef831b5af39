"""A new bundle is loaded in a throwaway child process before a serving process maps it.

hnswlib, faiss, LightGBM and compiled native code load their files with C++ that trusts
them: a file that passes its checksum but was written wrong (a bug, a disk that lied, a hand
edit followed by a new manifest) crashes whatever process loads it, with SIGSEGV and no
Python exception to catch. A worker that did so died, and each replacement with it. So a
child loads the bundle as a worker would (load, build the pipeline, warm it up; the worker
has verified the files' checksums just before), and only a child that exits cleanly lets
the worker load it itself.

The verdict is written to `.probes/<version>.json` in the artifacts root, tied to the
digest of the bundle's manifest (whose checksums cover every file), under a lock: the
other workers, and this one after a restart, take it without loading the bundle again.
A root the serving processes cannot write to only costs each of them its own probe.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import multiprocessing
import os
import signal
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path

from recsys.bundle import MANIFEST
from recsys.config import Config

log = logging.getLogger(__name__)

PROBES_DIR = ".probes"
SPAWN = multiprocessing.get_context("spawn")  # a fork would copy gRPC's threads' state


def probe_bundle(root: Path, version: str, config: Config) -> str | None:
    """None if bundle `version` under `root`, which the caller has just verified against its
    manifest, loads and serves in a child process; else the reason it does not (the child
    crashed, raised, or ran past the timeout)."""
    directory = root / version
    digest = hashlib.sha256((directory / MANIFEST).read_bytes()).hexdigest()
    with _probe_lock(root) as writable:
        known = _read_verdict(root, version, digest)
        if known is not None:
            return known or None
        reason, lasting = _load_in_child(directory, version, config)
        if writable and lasting:
            _write_verdict(root, version, digest, reason)
    if reason:
        log.error("bundle %s failed its load in a child process: %s", version, reason)
    return reason


def _load_in_child(directory: Path, version: str, config: Config) -> tuple[str | None, bool]:
    """(None, True) if a child loaded and warmed it; else (why not, whether that will hold
    next time: a crash or an error will, a timeout or SIGKILL, the OOM killer's, may not)."""
    receive, send = SPAWN.Pipe(duplex=False)
    child = SPAWN.Process(
        target=_child_main, args=(directory, version, config, send), name="bundle-probe"
    )
    child.start()
    send.close()  # ours; the child holds its own copy
    timeout = config.serving.probe_timeout_seconds
    message = None
    answered = receive.poll(timeout)  # True on a message and on the child's death alike
    if answered:
        with contextlib.suppress(EOFError):  # it died before saying anything
            message = receive.recv()
    receive.close()
    child.join(timeout=30 if answered else 0)
    if child.is_alive():
        child.kill()
        child.join()
        return f"it did not load in a child process within {timeout:g} s", False
    if child.exitcode == 0 and message == "ok":
        return None, True
    if child.exitcode < 0:
        name = signal.Signals(-child.exitcode).name
        lasting = -child.exitcode != signal.SIGKILL
        return f"loading it killed the child process with {name}", lasting
    if isinstance(message, str) and message != "ok":
        return message, True
    return f"the child process loading it exited with code {child.exitcode}", True


def _child_main(directory: Path, version: str, config: Config, send: Connection) -> None:
    """Load and warm up as a worker does (same code), report, exit. No second checksum pass:
    the worker verified the files just before asking."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # beside the serving processes: one core's worth at most
    try:
        from serving.pipeline import RecommendPipeline
        from serving.runtime import load_bundle

        bundle = load_bundle(directory, version, config)
        RecommendPipeline(bundle, config).warm_up()
    except Exception as err:  # anything that would stop a worker serving it
        send.send(f"{type(err).__name__}: {err}")
        raise SystemExit(1) from None
    send.send("ok")


@contextlib.contextmanager
def _probe_lock(root: Path) -> Iterator[bool]:
    """One probe at a time per artifacts root (the others wait, then read its verdict);
    yields whether the verdicts can be written there."""
    probes = root / PROBES_DIR
    try:
        probes.mkdir(exist_ok=True)
        handle = open(probes / ".lock", "a")  # noqa: SIM115 - held across the yield
    except OSError as err:
        log.warning("cannot keep bundle probe verdicts in %s (%s); probing alone", probes, err)
        yield False
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield True


def _read_verdict(root: Path, version: str, digest: str) -> str | None:
    """The recorded reason ("" = it loaded) for this very manifest, or None if none."""
    try:
        record = json.loads((root / PROBES_DIR / f"{version}.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("manifest_sha256") != digest:
        return None  # another bundle of the same name, or a damaged record: probe again
    reason = record.get("refused")
    return reason if isinstance(reason, str) else None


def _write_verdict(root: Path, version: str, digest: str, reason: str | None) -> None:
    path = root / PROBES_DIR / f"{version}.json"
    staging = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        staging.write_text(json.dumps({"manifest_sha256": digest, "refused": reason or ""}))
        os.replace(staging, path)
    except OSError as err:
        log.warning("cannot record the probe of bundle %s: %s", version, err)
