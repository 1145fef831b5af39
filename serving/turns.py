"""Turns: at most n holders at a time, served strictly in arrival order.

The server has more handler threads than ranking calls it answers at a time (a LogEvents
waiting on its fsync must not hold a Recommend), so the ranking calls take turns here.
A `threading.Semaphore` would let the thread that just released take the slot back before
the waiter it woke gets to run (under the GIL it usually does), so a queued call could be
passed over again and again. Here a released slot goes straight to the longest waiter.
"""

from __future__ import annotations

import threading
from collections import deque
from enum import IntEnum


class Admission(IntEnum):
    """How `Turns.enter` went; falsy only when refused."""

    REFUSED = 0
    AT_ONCE = 1  # a slot was free
    AFTER_WAITING = 2  # the caller waited in line for its slot


class Turns:
    def __init__(self, n: int) -> None:
        if n < 1:
            raise ValueError(f"turns need n >= 1, got {n}")
        self._free = n
        self._waiting: deque[threading.Lock] = deque()
        self._lock = threading.Lock()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def enter(self, max_waiting: int | None = None) -> Admission:
        """Take a slot, waiting in line if none is free; REFUSED at once, without one, when
        `max_waiting` callers wait already. Leave with `leave()` unless refused."""
        with self._lock:
            if self._free:  # free slots only while nobody waits
                self._free -= 1
                return Admission.AT_ONCE
            if max_waiting is not None and len(self._waiting) >= max_waiting:
                return Admission.REFUSED
            turn = threading.Lock()
            turn.acquire()
            self._waiting.append(turn)
        turn.acquire()  # released by the holder that hands its slot over
        return Admission.AFTER_WAITING

    def __enter__(self) -> None:
        self.enter()

    def __exit__(self, *exc: object) -> None:
        self.leave()

    def leave(self) -> None:
        with self._lock:
            if self._waiting:
                self._waiting.popleft().release()
            else:
                self._free += 1
