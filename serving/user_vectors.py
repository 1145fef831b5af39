"""Where a serving process finds the users' fresh iALS vectors: the nearline worker's store
(`nearline.store`), read per request, for the bundle version being served."""

from __future__ import annotations

import logging
from typing import Protocol

import numpy as np

from recsys.config import Config
from serving.vector_journal import JournalReader

log = logging.getLogger(__name__)


class UserVectors(Protocol):
    def user_vector(self, user_id: str) -> np.ndarray | None: ...

    def item_vectors(self) -> tuple[int, dict[str, np.ndarray]]:
        """Every item vector the worker solved, and a number that changes when they do."""
        ...


def open_user_vectors(config: Config, version: str) -> UserVectors:
    if config.nearline.store == "redis":
        from serving.vector_redis import RedisVectors  # only where Redis is configured

        return RedisVectors(config.nearline.redis_url, version)
    return JournalReader(config.artifacts.root, version)


def checked_vector(vectors: UserVectors | None, user_id: str, factors: int) -> np.ndarray | None:
    """The store's vector for the user if it has one of the bundle's width (a store
    written for another model must not break a request: it is ignored)."""
    if vectors is None:
        return None
    vector = vectors.user_vector(user_id)
    if vector is None or vector.shape != (factors,) or not np.isfinite(vector).all():
        return None
    return vector
