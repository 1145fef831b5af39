"""The on-disk cache of compiled rankers: built once, reused, rebuilt when damaged."""

from __future__ import annotations

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
