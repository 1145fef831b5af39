"""Native code built from a model for serving, cached on disk between processes.

Compiling a ranker takes seconds (LightGBM trees with lleaves: 1.6-5 s) to tens of seconds
(DLRM with AOTInductor: 15-40 s), and every serving process loads each bundle. The result
is kept under a key of everything it depends on (model, compiler version, host CPU), so a
second process, or a restart, loads it instead. A file is published atomically with its
sha256 beside it: no process loads a half-written file, and a damaged one is built again
rather than loaded as machine code. The checksum guards against accidents, not people: native
code is loaded only from a directory and a file that this user owns and no one else may
write. Processes that want the same file at once take turns
(a file lock): one builds it, the others then load it. Nightly retraining makes new models
every day, so only the most recently used KEEP_PER_KIND files of a kind are kept.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from recsys.files import sha256_file

log = logging.getLogger(__name__)

KEEP_PER_KIND = 8  # files named "<kind>-<key>.<suffix>": a week of nightly models and then some


def host_cpu() -> str:
    """The host CPU's name and features: native code built for one may not run on another."""
    import llvmlite.binding as llvm

    return f"{llvm.get_host_cpu_name()} {llvm.get_host_cpu_features().flatten()}"


def cache_key(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest.hexdigest()[:32]


def cached_build(cached: Path, build: Callable[[Path], None], what: str) -> Path:
    """`cached`, intact: built first by `build(path)`, which must write a new file at
    `path` (same suffix as `cached`), when it is missing or does not match its checksum."""
    cached.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not _private(cached.parent):
        # The checksum beside a file guards against a torn write, not against a person:
        # whoever may write the directory may replace both, and we would run their code.
        private = Path(tempfile.mkdtemp(prefix="recsys-compiled-"))
        log.warning(
            "%s is writable by other users (or not ours): not loading native code from it; "
            "building the %s in %s for this process (make the directory private: chmod 700)",
            cached.parent,
            what,
            private,
        )
        cached = private / cached.name
    digest_file = cached.with_suffix(".sha256")
    with _exclusive(cached.with_suffix(".lock")):
        if cached.is_file() and digest_file.is_file():
            digest = digest_file.read_text().strip()
            if not _private(cached):
                log.warning("%s is writable by other users; building it again", cached)
            elif sha256_file(cached) == digest:
                os.utime(digest_file)  # "last used", for the pruning below
                log.info("loading the %s %s (sha256 %s)", what, cached, digest[:16])
                return cached
            else:
                log.warning("%s %s does not match its checksum; building it again", what, cached)
        partial = cached.with_name(f"{cached.stem}.{os.getpid()}.partial{cached.suffix}")
        partial.unlink(missing_ok=True)  # some compilers write only where no file exists
        try:
            build(partial)
            # whatever the umask, no one else may write it (or its load would refuse it)
            os.chmod(partial, stat.S_IMODE(partial.stat().st_mode) & ~(stat.S_IWGRP | stat.S_IWOTH))
            _replace_text(digest_file, sha256_file(partial))
            os.replace(partial, cached)
        finally:
            partial.unlink(missing_ok=True)
        _prune(cached)
    log.info("built the %s %s", what, cached)
    return cached


def _prune(cached: Path) -> None:
    """Remove the files of `cached`'s kind beyond the KEEP_PER_KIND most recently used."""
    kind = cached.name.split("-", 1)[0]
    builds = [
        path
        for path in cached.parent.glob(f"{kind}-*{cached.suffix}")
        if ".partial" not in path.name
    ]
    builds.sort(key=_last_used, reverse=True)
    for old in builds[KEEP_PER_KIND:]:
        for path in (old, old.with_suffix(".sha256"), old.with_suffix(".lock")):
            path.unlink(missing_ok=True)


def _private(path: Path) -> bool:
    """Owned by this process's user and writable by no one else."""
    info = path.stat()
    return info.st_uid == os.geteuid() and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


@contextmanager
def _exclusive(lock_file: Path) -> Iterator[None]:
    with open(lock_file, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
        yield


def _last_used(cached: Path) -> int:
    digest_file = cached.with_suffix(".sha256")  # touched on every load; the file never is
    return digest_file.stat().st_mtime_ns if digest_file.is_file() else 0


def _replace_text(path: Path, text: str) -> None:
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    partial.write_text(text)
    os.replace(partial, path)
