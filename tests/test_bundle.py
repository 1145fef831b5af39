import json

import pytest

from recsys.bundle import (
    CURRENT,
    FORMAT_VERSION,
    LOCK_FILE,
    BundleError,
    current_version,
    list_versions,
    nightly_lock,
    open_current,
    publish_bundle,
    verify_bundle,
)


def writer(payload: str):
    def write(directory):
        (directory / "model").mkdir()
        (directory / "model" / "weights.bin").write_text(payload)

    return write


def publish(root, payload="v", keep=3, **kw):
    return publish_bundle(
        root,
        writer(payload),
        data_fingerprint="fp",
        config={"a": 1},
        metrics={"m": 0.5},
        keep=keep,
        **kw,
    )


def test_publish_writes_manifest_and_switches_current(tmp_path):
    manifest = publish(tmp_path)
    assert current_version(tmp_path) == manifest.version
    directory, loaded = open_current(tmp_path)
    assert loaded == manifest
    assert set(loaded.files) == {"model/weights.bin"}
    on_disk = json.loads((directory / "manifest.json").read_text())
    assert on_disk["data_fingerprint"] == "fp" and on_disk["metrics"] == {"m": 0.5}


def test_corrupt_file_is_refused_with_its_name(tmp_path):
    manifest = publish(tmp_path)
    (tmp_path / manifest.version / "model" / "weights.bin").write_text("tampered")
    with pytest.raises(
        BundleError, match=r"file model/weights.bin is corrupt \(checksum mismatch\)"
    ):
        open_current(tmp_path)


def test_missing_file_and_missing_manifest_are_refused(tmp_path):
    manifest = publish(tmp_path)
    (tmp_path / manifest.version / "model" / "weights.bin").unlink()
    with pytest.raises(BundleError, match="model/weights.bin listed in the manifest is missing"):
        verify_bundle(tmp_path / manifest.version)
    (tmp_path / manifest.version / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="unreadable manifest"):
        verify_bundle(tmp_path / manifest.version)
    with pytest.raises(BundleError, match="no manifest.json"):
        verify_bundle(tmp_path / "nothing-here")


def test_failed_write_leaves_previous_bundle_current_and_no_debris(tmp_path):
    good = publish(tmp_path)

    def explode(directory):
        (directory / "half").write_text("partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        publish_bundle(tmp_path, explode, data_fingerprint="x", config={}, metrics={}, keep=3)
    assert current_version(tmp_path) == good.version
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CURRENT, LOCK_FILE, good.version])


def test_a_bundle_of_another_format_version_is_refused_with_what_to_do(tmp_path):
    manifest = publish(tmp_path)
    path = tmp_path / manifest.version / "manifest.json"
    raw = json.loads(path.read_text())
    path.write_text(json.dumps({**raw, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(BundleError, match=r"format version \d+, expected \d+ .*recsys nightly"):
        open_current(tmp_path)


def test_prune_keeps_the_newest_and_never_the_current(tmp_path):
    versions = [publish(tmp_path, payload=str(i), keep=2).version for i in range(4)]
    assert list_versions(tmp_path) == versions[-2:]
    aside = publish(tmp_path, payload="aside", keep=2, make_current=False)
    assert current_version(tmp_path) == versions[-1]
    assert aside.version in list_versions(tmp_path)


def test_no_current_bundle_is_a_clear_error(tmp_path):
    with pytest.raises(BundleError, match="no current bundle; run `recsys nightly` first"):
        open_current(tmp_path)


def test_a_second_concurrent_publish_is_refused_not_interleaved(tmp_path):
    first = publish(tmp_path)

    def nested_publish(directory):
        (directory / "x").write_text("x")
        publish(tmp_path)  # a second writer while the first holds the lock

    with pytest.raises(BundleError, match="another publish is in progress"):
        publish_bundle(
            tmp_path, nested_publish, data_fingerprint="f", config={}, metrics={}, keep=3
        )
    assert current_version(tmp_path) == first.version
    assert list_versions(tmp_path) == [first.version]


def test_a_second_nightly_on_one_artifacts_root_is_refused_before_it_trains(tmp_path):
    from pipelines.nightly import run_nightly
    from tests.conftest import isolated_config

    config = isolated_config(tmp_path, data={"source": str(tmp_path / "no-such-data")})
    refused = r"another recsys nightly is running \(pid \d+"
    with nightly_lock(config.artifacts.root), pytest.raises(BundleError, match=refused):
        run_nightly(config, show_progress=False)
    with pytest.raises(Exception, match="no-such-data"):  # free again: this run gets to the data
        run_nightly(config, show_progress=False)


@pytest.mark.parametrize("pointer", ["../elsewhere", "/etc", "a/b", "..", ".staging-x", "a\\b"])
def test_current_never_points_outside_the_artifacts_root(tmp_path, pointer):
    root = tmp_path / "artifacts"
    publish(root)
    (tmp_path / "elsewhere").mkdir()
    (root / CURRENT).write_text(pointer + "\n")
    with pytest.raises(BundleError, match="not a bundle directory in"):
        current_version(root)
    with pytest.raises(BundleError, match="not a bundle directory in"):
        open_current(root)
