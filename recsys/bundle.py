"""Versioned model bundles: `artifacts/<version>/` with a manifest, and a `current` pointer.

Publishing writes into a hidden staging directory, fsyncs every file, renames the
directory into place and then replaces `current` atomically (write a temporary file,
fsync, os.replace). A reader therefore sees either the old bundle or the whole new one.
Loading re-checks every file's SHA-256 against the manifest, so a corrupt or partial
bundle is refused with a clear error instead of being served.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recsys.files import fsync_path, sha256_file, write_atomically

MANIFEST = "manifest.json"
CURRENT = "current"
FORMAT_VERSION = 2  # 2: the interactions component (R, for the nearline worker)
STAGING_PREFIX = ".staging-"
LOCK_FILE = ".publish.lock"
NIGHTLY_LOCK_FILE = ".nightly.lock"
NEARLINE_LOCK_FILE = ".nearline.lock"


class BundleError(RuntimeError):
    """A bundle is missing, partial or corrupt; the message names the file."""


@dataclass(frozen=True)
class Manifest:
    version: str
    created_at: str  # ISO 8601, UTC
    data_fingerprint: str
    config: dict[str, Any]
    files: dict[str, str]  # relative path -> sha256
    metrics: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @classmethod
    def from_json(cls, text: str, where: Path) -> Manifest:
        try:
            raw = json.loads(text)
            manifest = cls(**raw)
        except (ValueError, TypeError) as err:
            raise BundleError(f"{where}: unreadable manifest: {err}") from None
        if manifest.format_version != FORMAT_VERSION:
            raise BundleError(
                f"{where}: format version {manifest.format_version}, expected {FORMAT_VERSION} "
                "(built by another release; run `recsys nightly` to build a current one)"
            )
        return manifest


def publish_bundle(
    root: str | Path,
    write: Callable[[Path], None],
    *,
    data_fingerprint: str,
    config: dict[str, Any],
    metrics: dict[str, Any],
    keep: int,
    make_current: bool = True,
) -> Manifest:
    """Write a new bundle with `write(directory)`, then (optionally) make it current."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with _publish_lock(root):
        return _publish_locked(root, write, data_fingerprint, config, metrics, keep, make_current)


@contextmanager
def _publish_lock(root: Path) -> Iterator[None]:
    """One publisher per artifacts root: pruning must not remove another run's staging."""
    with open(root / LOCK_FILE, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BundleError(
                f"{root}: another publish is in progress (lock {LOCK_FILE})"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def nightly_lock(root: str | Path) -> Iterator[None]:
    """One nightly run per artifacts root, for the whole run: two would both train for an
    hour and both publish. The lock is the kernel's (flock), so a killed run leaves none."""
    with run_lock(root, NIGHTLY_LOCK_FILE, "recsys nightly"):
        yield


@contextmanager
def run_lock(root: str | Path, lock_file: str, command: str) -> Iterator[None]:
    """Hold `root/lock_file` (flock) while `command` runs: a second one is refused with
    who holds it. A killed holder leaves no lock behind."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / lock_file, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise BundleError(
                f"{root}: another {command} is running ({holder}; lock "
                f"{lock_file}); wait for it or use another artifacts root"
            ) from None
        try:
            handle.seek(0)
            handle.truncate()
            started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            handle.write(f"pid {os.getpid()} since {started}")
            handle.flush()
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _publish_locked(
    root: Path,
    write: Callable[[Path], None],
    data_fingerprint: str,
    config: dict[str, Any],
    metrics: dict[str, Any],
    keep: int,
    make_current: bool,
) -> Manifest:
    version = _new_version(root)
    staging = root / f"{STAGING_PREFIX}{version}"
    try:
        staging.mkdir()
        write(staging)
        manifest = Manifest(
            version=version,
            created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            data_fingerprint=data_fingerprint,
            config=config,
            files=_checksums(staging),
            metrics=metrics,
        )
        (staging / MANIFEST).write_text(json.dumps(asdict(manifest), indent=2, sort_keys=True))
        for path in staging.rglob("*"):
            fsync_path(path)
        fsync_path(staging)
        staging.rename(root / version)
        fsync_path(root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if make_current:
        set_current(root, version)
        prune(root, keep)
    return manifest


def set_current(root: Path, version: str) -> None:
    verify_bundle(root / version)
    write_atomically(root / CURRENT, lambda f: f.write(f"{version}\n".encode()))


def current_version(root: str | Path) -> str | None:
    """The version `current` names, None if there is none yet. BundleError if it names
    anything but a directory directly inside `root` (a path, "..", a hidden name): whoever
    can write that one file must not point serving at files outside the artifacts."""
    pointer = Path(root) / CURRENT
    try:
        version = pointer.read_text().strip()
    except FileNotFoundError:
        return None
    if version and (version != Path(version).name or version.startswith(".") or "\\" in version):
        raise BundleError(f"{pointer} names {version[:100]!r}, not a bundle directory in {root}")
    return version or None


def open_current(root: str | Path) -> tuple[Path, Manifest]:
    """The verified current bundle; BundleError if none or if it is damaged."""
    root = Path(root)
    version = current_version(root)
    if version is None:
        raise BundleError(f"{root}: no current bundle; run `recsys nightly` first")
    return root / version, verify_bundle(root / version)


def folded_log_offsets(root: str | Path, version: str | None) -> dict[str, int]:
    """Where the nightly that built `version` stopped reading the event log (segment ->
    bytes): the events before are in the bundle. {} when unknown (no bundle, no record);
    read without verifying checksums, so it costs one small file."""
    if version is None:
        return {}
    path = Path(root) / version / MANIFEST
    try:
        offsets = json.loads(path.read_text())["metrics"]["event_log"]["offsets"]
        return {str(name): int(size) for name, size in offsets.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def verify_bundle(directory: Path) -> Manifest:
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{directory}: no {MANIFEST} (missing or partial bundle)")
    manifest = Manifest.from_json(manifest_path.read_text(), manifest_path)
    for relative, expected in manifest.files.items():
        path = directory / relative
        if not path.is_file():
            raise BundleError(f"{directory}: file {relative} listed in the manifest is missing")
        if sha256_file(path) != expected:
            raise BundleError(f"{directory}: file {relative} is corrupt (checksum mismatch)")
    return manifest


def list_versions(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / MANIFEST).is_file())


def prune(root: Path, keep: int) -> list[str]:
    """Delete all but the newest `keep` versions; never the current one. Returns the deleted."""
    current = current_version(root)
    old = [v for v in list_versions(root)[: -keep or None] if v != current] if keep > 0 else []
    for version in old:
        shutil.rmtree(root / version)
    for stale in root.glob(f"{STAGING_PREFIX}*"):  # left by a crashed publish
        shutil.rmtree(stale, ignore_errors=True)
    return old


def drop_stale_per_bundle(root: Path, directory: str) -> None:
    """What lies in `root/directory/<bundle version>/` (a nearline journal, published
    session weights) goes with its bundle once that is pruned."""
    kept = set(list_versions(root))
    for per_bundle in (root / directory).glob("*"):
        if per_bundle.name not in kept:
            shutil.rmtree(per_bundle, ignore_errors=True)


def _new_version(root: Path) -> str:
    """A UTC timestamp to the microsecond: names sort in publishing order, even after pruning."""
    existing = set(list_versions(root))
    while True:
        version = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        if version not in existing and not (root / f"{STAGING_PREFIX}{version}").exists():
            return version


def _checksums(directory: Path) -> dict[str, str]:
    return {
        str(path.relative_to(directory)): sha256_file(path)
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }
