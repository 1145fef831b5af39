"""Where a run's data comes from: the embedded MovieLens-100k or the user's own files."""

from __future__ import annotations

import hashlib

import pandas as pd

from pipelines.loaders import load_dataset_dir
from pipelines.movielens import load_movielens_100k
from recsys.config import DataConfig
from recsys.dataset import Dataset

MOVIELENS = "movielens-100k"


def load_dataset(config: DataConfig) -> Dataset:
    if config.source == MOVIELENS:
        return load_movielens_100k(config.cache_dir)
    return load_dataset_dir(config.source, config.max_clock_skew_seconds)


def fingerprint(dataset: Dataset) -> str:
    """SHA-256 over the rows of events and items: same data, same fingerprint."""
    digest = hashlib.sha256()
    for frame in (dataset.events, dataset.items):
        digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()
