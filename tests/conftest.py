"""Shared fixtures: each test session builds its own bundles in temporary directories,
on free loopback ports, never touching the user's artifacts."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys.config import Config, load_config

REPO = Path(__file__).resolve().parents[1]
DATA_CACHE = REPO / ".cache" / "recsys"  # download cache shared with `make demo`


def isolated_config(tmp: Path, **sections: dict) -> Config:
    base = {
        "artifacts": {"root": str(tmp / "artifacts")},
        "data": {"cache_dir": str(DATA_CACHE)},
        "serving": {"port": 0, "bundle_poll_seconds": 0.2, "metrics_port": 0},
        "events": {"log_dir": str(tmp / "events")},
        "nearline": {"metrics_port": 0},
        "evaluation": {"report_dir": str(tmp / "reports"), "max_users": 300},
        # small but real: two period bundles, a few hundred training requests
        # every stage served, so that the session's MovieLens server runs the whole cascade;
        # the gate itself is tested in test_evaluation.py
        "ranking": {
            "periods": 2,
            "requests_per_user": 2,
            "max_requests": 600,
            "stage_gate": False,
        },
        "dlrm": {"epochs": 3},
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return load_config().replace(**base)


@pytest.fixture(scope="session")
def ml_config(tmp_path_factory) -> Config:
    return isolated_config(tmp_path_factory.mktemp("movielens"))


@pytest.fixture(scope="session")
def ml_nightly(ml_config):
    from pipelines.nightly import run_nightly

    return run_nightly(ml_config, show_progress=False)


@pytest.fixture(scope="session")
def ml_dataset(ml_config):
    from pipelines.movielens import load_movielens_100k

    return load_movielens_100k(ml_config.data.cache_dir)


@pytest.fixture(scope="session")
def ml_server(ml_config, ml_nightly):
    """A real gRPC server on a free loopback port, serving the MovieLens bundle."""
    from serving.grpc.server import start_server

    running = start_server(ml_config, watch=False)
    yield running
    running.stop()


@pytest.fixture(scope="session")
def ml_pipeline(ml_config, ml_nightly):
    from serving.holder import BundleHolder

    holder = BundleHolder(ml_config)
    assert holder.refresh()
    return holder.pipeline()


@pytest.fixture(scope="session")
def shop_dir(tmp_path_factory) -> Path:
    """A small synthetic shop written as Parquet files: the bring-your-own-data path."""
    from pipelines.loaders import save_dataset_dir
    from pipelines.synthetic import generate_synthetic

    dataset = generate_synthetic(n_users=400, n_items=300, n_events=12_000, n_categories=12, seed=7)
    return save_dataset_dir(dataset, tmp_path_factory.mktemp("shop"))


def shop_config(tmp: Path, shop_dir: Path) -> Config:
    """Small, fast models on the synthetic shop."""
    return isolated_config(
        tmp,
        data={"source": str(shop_dir)},
        als={"factors": 16, "iterations": 5},
        artifacts={"keep": 3},
    )


@pytest.fixture(scope="session")
def shop_bundle(shop_dir, tmp_path_factory):
    """(bundle, config, dataset): every component of the shop, the session models included,
    built in memory with no rankers."""
    from pipelines.build import build_bundle
    from pipelines.loaders import load_dataset_dir

    config = shop_config(tmp_path_factory.mktemp("contracts"), shop_dir).replace(
        ranking={"stages": []},
        sessions={
            "models": ["ssrm", "gag", "mgia"],
            "timeout_seconds": 86400,
            "ssrm": {"epochs": 2},
            "gag": {"epochs": 2},
            "mgia": {"epochs": 2},
        },
    )
    dataset = load_dataset_dir(shop_dir)
    return build_bundle(dataset, config).bundle, config, dataset
