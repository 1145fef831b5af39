"""Generators run off the request thread; a late or failing one is dropped, the request goes on."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from recsys.context import Candidates, RequestContext
from serving.fanout import GeneratorFanout, run_inline


class Fixed:
    def __init__(self, name: str, items: list[int]) -> None:
        self.name = name
        self.items = np.asarray(items, dtype=np.int64)

    def generate(self, ctx: RequestContext, budget: int) -> Candidates:
        items = self.items[:budget]
        return Candidates(items, np.ones(len(items), np.float32), self.name)


class Hangs:
    """Blocks until released: a generator stuck on a dead dependency."""

    name = "hangs"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def generate(self, ctx: RequestContext, budget: int) -> Candidates:
        self.calls += 1
        self.release.wait()
        return Candidates(np.array([9]), np.ones(1, np.float32), self.name)


class Raises:
    name = "raises"

    def generate(self, ctx: RequestContext, budget: int) -> Candidates:
        raise RuntimeError("index file vanished")


@pytest.fixture()
def fanout():
    fanout = GeneratorFanout(threads=4)
    yield fanout
    fanout.shutdown()


def test_every_answer_in_generator_order(fanout) -> None:
    generators = [Fixed("a", [1, 2, 3]), Fixed("b", [4]), Fixed("c", [5, 6])]
    result = fanout.run(generators, RequestContext(0), lambda name: 2, time.monotonic() + 5)
    assert [c.source for c in result.answers] == ["a", "b", "c"]
    assert result.answers[0].item_ids.tolist() == [1, 2]  # the budget reached each generator
    assert set(result.seconds) == {"a", "b", "c"} and result.dropped == {}


def test_a_hung_generator_is_dropped_at_the_deadline_and_skipped_until_it_returns(
    fanout,
) -> None:
    hangs = Hangs()
    generators = [Fixed("a", [1]), hangs]
    try:
        first = fanout.run(generators, RequestContext(0), lambda name: 5, time.monotonic() + 0.05)
        assert [(c.source, len(c)) for c in first.answers] == [("a", 1), ("hangs", 0)]
        assert first.dropped == {"hangs": "deadline"}
        # its call is still running: the next request does not queue another one behind it
        second = fanout.run(generators, RequestContext(0), lambda name: 5, time.monotonic() + 5)
        assert second.dropped == {"hangs": "deadline"} and hangs.calls == 1
    finally:
        hangs.release.set()
    assert fanout.wait_for_late_calls(timeout=5)
    third = fanout.run(generators, RequestContext(0), lambda name: 5, time.monotonic() + 5)
    assert [c.source for c in third.answers] == ["a", "hangs"] and third.dropped == {}


def test_a_generator_that_raises_is_dropped_and_the_others_answer(fanout) -> None:
    result = fanout.run(
        [Raises(), Fixed("b", [4])], RequestContext(0), lambda name: 5, time.monotonic() + 5
    )
    assert [(c.source, len(c)) for c in result.answers] == [("raises", 0), ("b", 1)]
    assert result.dropped == {"raises": "error"}


def test_inline_runs_drop_what_would_start_late_and_what_raises() -> None:
    generators = [Fixed("a", [1]), Raises(), Fixed("b", [2])]
    result = run_inline(generators, RequestContext(0), lambda name: 5, time.monotonic() + 5)
    assert [(c.source, len(c)) for c in result.answers] == [("a", 1), ("raises", 0), ("b", 1)]
    assert result.dropped == {"raises": "error"}
    late = run_inline(generators, RequestContext(0), lambda name: 5, time.monotonic() - 1)
    assert late.dropped == {"a": "deadline", "raises": "deadline", "b": "deadline"}
    assert all(len(c) == 0 for c in late.answers)


def test_a_generator_queued_behind_a_hung_one_misses_only_that_request() -> None:
    fanout = GeneratorFanout(threads=4, chains=1)
    hangs = Hangs()
    generators = [Fixed("a", [1]), hangs, Fixed("b", [2])]  # one chain: a, hangs, b
    try:
        first = fanout.run(generators, RequestContext(0), lambda name: 5, time.monotonic() + 0.05)
        assert first.dropped == {"hangs": "deadline", "b": "deadline"}
        assert [len(c) for c in first.answers] == [1, 0, 0]
        second = fanout.run(generators, RequestContext(0), lambda name: 5, time.monotonic() + 5)
        assert second.dropped == {"hangs": "deadline"} and hangs.calls == 1
        assert [len(c) for c in second.answers] == [1, 0, 1]
    finally:
        hangs.release.set()
        fanout.shutdown()


def test_chains_keep_other_generators_clear_of_a_hung_one() -> None:
    fanout = GeneratorFanout(threads=4, chains=2)
    hangs = Hangs()
    generators = [hangs, Fixed("a", [1]), Fixed("b", [2])]  # chains: (hangs, b) and (a)
    try:
        result = fanout.run(generators, RequestContext(0), lambda name: 5, time.monotonic() + 0.05)
        assert result.dropped == {"hangs": "deadline", "b": "deadline"}
        assert [len(c) for c in result.answers] == [0, 1, 0]
    finally:
        hangs.release.set()
        fanout.shutdown()


def test_fanout_rejects_no_threads_or_chains() -> None:
    with pytest.raises(ValueError, match="chains"):
        GeneratorFanout(threads=2, chains=0)


def test_shutdown_waits_for_late_calls_and_names_those_still_running(caplog) -> None:
    fanout = GeneratorFanout(threads=2)
    hangs = Hangs()
    fanout.run([hangs], RequestContext(0), lambda name: 5, time.monotonic() + 0.02)
    try:
        assert not fanout.shutdown(wait_seconds=0.05)
        assert "generator calls still running at shutdown: ['hangs']" in caplog.text
    finally:
        hangs.release.set()
    second = GeneratorFanout(threads=2)
    released = Hangs()
    second.run([released], RequestContext(0), lambda name: 5, time.monotonic() + 0.02)
    released.release.set()
    assert second.shutdown(wait_seconds=5)
