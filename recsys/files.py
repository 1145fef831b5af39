"""Small file utilities shared by the bundle store, the event log, the nearline journal and
the dataset fetcher."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync_path(path: Path) -> None:
    """Flush a file's bytes, or a directory's entries (a new or renamed name), to disk."""
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """`write(file)` under a temporary name beside `path`, fsync, rename over `path`, fsync
    the directory: a reader sees the old file or the whole new one, and a crash leaves no
    torn `path` (at most the temporary, `.<name>.tmp`, which the next write replaces)."""
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb") as out:
        write(out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    fsync_path(path.parent)
