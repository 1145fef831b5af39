"""The on-disk cache of compiled rankers: built once, reused, rebuilt when damaged."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from ranking import native_cache
from ranking.native_cache import cache_key, cached_build


def test_a_file_is_built_once_reused_and_built_again_when_damaged(tmp_path) -> None:
    builds = []

    def build(partial: Path) -> None:
        assert not partial.exists() and partial.suffix == ".so"
        builds.append(partial)
        partial.write_bytes(b"machine code %d" % len(builds))

    cached = tmp_path / f"model-{cache_key('weights', b'more', 'cpu')}.so"
    assert cached_build(cached, build, "test model") == cached
    assert cached.read_bytes() == b"machine code 1"
    assert cached_build(cached, build, "test model") == cached
    assert len(builds) == 1  # intact: loaded, not built
    cached.write_bytes(b"machine code 1, torn")
    cached_build(cached, build, "test model")
    assert len(builds) == 2 and cached.read_bytes() == b"machine code 2"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [cached.name, f"{cached.stem}.sha256", f"{cached.stem}.lock"]
    )


def test_a_failed_build_leaves_nothing_to_load(tmp_path) -> None:
    def build(partial: Path) -> None:
        partial.write_bytes(b"half")
        raise RuntimeError("compiler crashed")

    cached = tmp_path / "model-x.so"
    with pytest.raises(RuntimeError, match="compiler crashed"):
        cached_build(cached, build, "test model")
    assert not cached.exists() and not list(tmp_path.glob("*partial*"))


def test_keys_differ_when_any_part_does() -> None:
    assert cache_key("a", "b") != cache_key("a", "c")
    assert cache_key("ab", "c") != cache_key("a", "bc")  # parts are separated


def test_only_the_most_recently_used_files_of_a_kind_are_kept(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(native_cache, "KEEP_PER_KIND", 2)

    def build(partial: Path) -> None:
        partial.write_bytes(partial.name.encode())

    other_kind = cached_build(tmp_path / "forest-a.o", build, "forest")
    first, second = (cached_build(tmp_path / f"dlrm-{k}.pt2", build, "dlrm") for k in "ab")
    os.utime(first.with_suffix(".sha256"), ns=(1, 1))  # long unused...
    os.utime(second.with_suffix(".sha256"), ns=(2, 2))
    cached_build(first, build, "dlrm")  # ...until loaded again now
    third = cached_build(tmp_path / "dlrm-c.pt2", build, "dlrm")
    assert first.is_file() and third.is_file() and other_kind.is_file()
    assert not second.exists() and not second.with_suffix(".sha256").exists()
    assert not second.with_suffix(".lock").exists()


def test_native_code_is_never_loaded_from_where_others_may_write(tmp_path, caplog) -> None:
    """The checksum beside a file is no defence against a person who can replace both."""
    builds = []

    def build(partial: Path) -> None:
        builds.append(partial)
        partial.write_bytes(b"our machine code")

    shared = tmp_path / "shared"
    shared.mkdir()
    cached = shared / "forest-k.so"
    assert cached_build(cached, build, "forest") == cached
    forged = b"someone else's machine code"
    cached.write_bytes(forged)
    (shared / "forest-k.sha256").write_text(hashlib.sha256(forged).hexdigest())
    os.chmod(cached, 0o666)  # a file others may write is not loaded...
    assert cached_build(cached, build, "forest") == cached and len(builds) == 2
    assert cached.read_bytes() == b"our machine code"
    assert "writable by other users" in caplog.text
    os.chmod(shared, 0o777)  # ...nor anything from a directory others may write
    elsewhere = cached_build(cached, build, "forest")
    assert elsewhere.parent != shared and len(builds) == 3
    assert elsewhere.read_bytes() == b"our machine code"
    assert not elsewhere.parent.stat().st_mode & 0o077  # a private directory of its own
