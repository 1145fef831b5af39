"""The user vectors in Redis, for serving processes on several machines (`nearline.store =
"redis"`): seed 004's key-value store of user embeddings, read once per request.

One hash per bundle version, `recsys:vectors:<version>:user`, field = external user id, value =
the float32 vector's bytes. The nearline worker writes each batch with one pipelined HSET after
the batch is in its journal (the journal is its checkpoint; a crash between the two is
repaired by publishing the journal again at start). Hashes of other versions are deleted when
the worker moves to a new bundle.
"""

from __future__ import annotations

import logging

import numpy as np
import redis

KEY_PREFIX = "recsys:vectors:"

log = logging.getLogger(__name__)


def user_key(version: str) -> str:
    return f"{KEY_PREFIX}{version}:user"


class RedisVectors:
    def __init__(self, url: str, version: str, timeout_seconds: float = 0.05) -> None:
        # a short timeout: a slow Redis costs a request its fresh vector, not its deadline
        self.client = redis.Redis.from_url(
            url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds
        )
        self.version = version
        self.key = user_key(version)
        self._warned = False

    def user_vector(self, user_id: str) -> np.ndarray | None:
        try:
            raw = self.client.hget(self.key, user_id)
        except redis.RedisError as err:
            if not self._warned:  # once: a down Redis must not flood the log per request
                log.warning("redis vectors unavailable, serving the bundle's: %s", err)
                self._warned = True
            return None
        self._warned = False
        return None if raw is None else np.frombuffer(raw, dtype=np.float32)

    def publish(self, user_ids: np.ndarray, vectors: np.ndarray) -> None:
        if not len(user_ids):
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        pipe = self.client.pipeline(transaction=False)
        for user_id, vector in zip(user_ids.tolist(), vectors, strict=True):
            pipe.hset(self.key, user_id, vector.tobytes())
        pipe.execute()

    def drop_other_versions(self) -> int:
        """Delete the vectors of every other bundle version; returns how many hashes."""
        stale = [
            key
            for key in self.client.scan_iter(match=f"{KEY_PREFIX}*", count=1000)
            if key.decode() != self.key
        ]
        if stale:
            self.client.delete(*stale)
        return len(stale)
