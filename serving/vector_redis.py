"""The user vectors in Redis, for serving processes on several machines (`nearline.store =
"redis"`): seed 004's key-value store of user embeddings, read once per request.

One hash per bundle version and kind, `recsys:vectors:<version>:user` and `...:item`, field =
external id, value = the float32 vector's bytes. User vectors are read per request; item
vectors (the items new since the bundle, for `nearline.fresh_slots`) are read whole at most
every `ITEMS_REFRESH_SECONDS`. The nearline worker writes each batch with one pipelined HSET after
the batch is in its journal (the journal is its checkpoint; a crash between the two is
repaired by publishing the journal again at start). Hashes of other versions are deleted when
the worker moves to a new bundle.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import redis

KEY_PREFIX = "recsys:vectors:"

log = logging.getLogger(__name__)


ITEMS_REFRESH_SECONDS = 0.25
# After a failed call, requests do not try Redis again for this long: a Redis that hangs
# would otherwise cost every request its socket timeout.
BACKOFF_SECONDS = 1.0


def vector_key(version: str, kind: str) -> str:
    return f"{KEY_PREFIX}{version}:{kind}"


class RedisVectors:
    def __init__(self, url: str, version: str, timeout_seconds: float = 0.05) -> None:
        # a short timeout: a slow Redis costs a request its fresh vector, not its deadline
        self.client = redis.Redis.from_url(
            url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds
        )
        self.version = version
        self.key = vector_key(version, "user")
        self.item_key = vector_key(version, "item")
        self._warned = False
        self._items: dict[str, np.ndarray] = {}
        self._items_read = -ITEMS_REFRESH_SECONDS
        self.items_changed = 0
        self._down_until = 0.0

    def user_vector(self, user_id: str) -> np.ndarray | None:
        if time.monotonic() < self._down_until:
            return None
        try:
            raw = self.client.hget(self.key, user_id)
        except redis.RedisError as err:
            self._unavailable(err)
            return None
        self._warned = False
        return None if raw is None else np.frombuffer(raw, dtype=np.float32)

    def item_vectors(self) -> tuple[int, dict[str, np.ndarray]]:
        """The item vectors, read again at most every ITEMS_REFRESH_SECONDS (what was read
        last time while Redis is down), and a number that changes when they do."""
        now = time.monotonic()
        if now - self._items_read >= ITEMS_REFRESH_SECONDS and now >= self._down_until:
            self._items_read = time.monotonic()
            try:
                raw = self.client.hgetall(self.item_key)
            except redis.RedisError as err:
                self._unavailable(err)
                return self.items_changed, self._items
            items = {k.decode(): np.frombuffer(v, dtype=np.float32) for k, v in raw.items()}
            if items.keys() != self._items.keys() or any(
                not np.array_equal(items[k], self._items[k]) for k in items
            ):
                self._items, self.items_changed = items, self.items_changed + 1
        return self.items_changed, self._items

    def publish(
        self,
        user_ids: np.ndarray,
        user_vectors: np.ndarray,
        item_ids: np.ndarray | None = None,
        item_vectors: np.ndarray | None = None,
    ) -> None:
        pipe = self.client.pipeline(transaction=False)
        for key, ids, vectors in (
            (self.key, user_ids, user_vectors),
            (self.item_key, item_ids, item_vectors),
        ):
            if ids is None or not len(ids):
                continue
            vectors = np.ascontiguousarray(vectors, dtype=np.float32)
            for external, vector in zip(ids.tolist(), vectors, strict=True):
                pipe.hset(key, external, vector.tobytes())
        pipe.execute()

    def _unavailable(self, err: Exception) -> None:
        self._down_until = time.monotonic() + BACKOFF_SECONDS
        if not self._warned:  # once: a down Redis must not flood the log per request
            log.warning("redis vectors unavailable, serving the bundle's: %s", err)
            self._warned = True

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
