"""The reservoir of past sessions kept for online updates (seed 003 §II.D.2).

"Random Sampling with a Reservoir" (Vitter's Algorithm R): of a stream of t sessions, the
first R all enter; the t-th, t > R, enters with probability R / t and replaces one held
session chosen uniformly. Every session of the stream is then held with probability R / t,
whatever its place: a uniform sample of the history in bounded memory.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np

from candidates.session.sessions import Sessions

T = TypeVar("T")
RESERVOIR_FILE = "reservoir.npz"


class Reservoir(Generic[T]):
    def __init__(self, capacity: int, seed: int = 0) -> None:
        if capacity <= 0:
            raise ValueError(f"a reservoir holds at least one session, got capacity {capacity}")
        self.capacity = capacity
        self.held: list[T] = []
        self.seen = 0  # sessions offered so far: t
        self._random = np.random.default_rng(seed)

    def offer(self, session: T) -> bool:
        """Offer the next session of the stream; True if it was taken."""
        self.seen += 1
        if len(self.held) < self.capacity:
            self.held.append(session)
            return True
        slot = int(self._random.integers(self.seen))  # uniform in [0, t): < R with prob. R/t
        if slot < self.capacity:
            self.held[slot] = session  # the slot is uniform among the R held
            return True
        return False

    def extend(self, sessions: Iterable[T]) -> None:
        for session in sessions:
            self.offer(session)

    def __len__(self) -> int:
        return len(self.held)


class SavedReservoir:
    """A reservoir as stored (the bundle's, drawn from its training sessions, and each
    publication's): its sessions with their users (`sessions.users`: the bundle's user
    indices, -1 for a user it does not know), their users' MF vectors, and how many sessions
    the stream it was drawn from had."""

    def __init__(self, sessions: Sessions, user_vectors: np.ndarray, seen: int = 0) -> None:
        if len(user_vectors) != len(sessions):
            raise ValueError(f"{len(user_vectors)} user vectors for {len(sessions)} sessions")
        self.sessions = sessions
        self.user_vectors = user_vectors
        self.seen = max(seen, len(sessions))  # sessions of the stream it was drawn from

    def save(self, directory: Path) -> None:
        np.savez(
            directory / RESERVOIR_FILE,
            items=self.sessions.items,
            offsets=self.sessions.offsets,
            users=self.sessions.users,
            user_vectors=self.user_vectors,
            seen=self.seen,
        )

    @classmethod
    def load(cls, directory: Path) -> SavedReservoir | None:
        path = directory / RESERVOIR_FILE
        if not path.exists():
            return None
        with np.load(path) as saved:
            items, offsets, vectors = saved["items"], saved["offsets"], saved["user_vectors"]
            seen = int(saved["seen"])
            # reservoirs saved before the users were kept: users unknown
            users = saved["users"] if "users" in saved.files else np.full(len(vectors), -1)
        if offsets[0] != 0 or offsets[-1] != len(items) or np.any(np.diff(offsets) < 0):
            raise ValueError(f"{path}: session offsets do not fit {len(items)} items")
        n = len(offsets) - 1
        if len(users) != n:
            raise ValueError(f"{path}: {len(users)} users for {n} sessions")
        zeros = np.zeros(n, np.int64)
        sessions = Sessions(
            items.astype(np.int64), offsets.astype(np.int64), users.astype(np.int64), zeros, zeros
        )
        return cls(sessions, vectors, seen)
