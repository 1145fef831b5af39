"""Candidate generators run off the request's thread, against its deadline (DESIGN.md §5).

A generator that has not answered when the deadline comes is dropped for that request:
the request goes on with the others. A dropped call cannot be killed (Python threads
cannot be), so the generator is also skipped by later requests until that call returns:
one hung generator costs one pool thread, not one thread per request. A generator that
raises is dropped and logged the same way; a bug in one source must not fail the request.

A request's generators are dealt into `chains`; each chain runs its generators one after
another on one pool thread while the request thread waits. One thread per generator would
be the textbook fan-out, but under the GIL the generators (NumPy on a few hundred items)
do not run in parallel anyway, and eight threads contending for the GIL cost 1.2-1.6 ms of
CPU per request on this machine (a third of the whole pipeline). A chain keeps what the
deadline needs: a generator stuck in a chain drops itself and the ones queued behind it
for that request only, since later requests skip it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from candidates.base import Generator
from recsys.arrays import NO_ITEMS
from recsys.context import Candidates, RequestContext

log = logging.getLogger(__name__)


@dataclass
class FanoutResult:
    answers: list[Candidates]  # one per generator, in order; empty for a dropped one
    seconds: dict[str, float] = field(default_factory=dict)  # per generator that answered
    dropped: dict[str, str] = field(default_factory=dict)  # generator -> "deadline" | "error"


class GeneratorFanout:
    """Process-wide: one thread pool shared by every request and every bundle."""

    def __init__(self, threads: int, chains: int = 1) -> None:
        if threads < 1 or chains < 1:
            raise ValueError(f"threads and chains must be >= 1, got {threads} and {chains}")
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="generator")
        self.chains = chains
        self._late: dict[str, threading.Event] = {}  # generator -> set when its late call returns
        self._lock = threading.Lock()

    def run(
        self,
        generators: Sequence[Generator],
        ctx: RequestContext,
        budget_of: Callable[[str], int],
        deadline: float,
    ) -> FanoutResult:
        """Every generator's answer that arrives by `deadline` (time.monotonic())."""
        result = FanoutResult(answers=[])
        with self._lock:
            stuck = {name for name, returned in self._late.items() if not returned.is_set()}
        runnable = [g for g in generators if g.name not in stuck]
        result.dropped |= {g.name: "deadline" for g in generators if g.name in stuck}
        chains = [
            _Chain(runnable[i :: self.chains], ctx, budget_of)
            for i in range(min(self.chains, len(runnable)))
        ]
        for chain in chains:
            self.pool.submit(chain.run)
        for chain in chains:
            chain.finished.wait(max(0.0, deadline - time.monotonic()))
        answered: dict[str, tuple[Candidates, float]] = {}
        failed: dict[str, Exception] = {}
        for chain in chains:
            answers, errors, running = chain.stop()
            answered |= answers
            failed |= errors
            for name, error in errors.items():
                result.dropped[name] = "error"
                log.error("generator %s failed (request %s)", name, ctx.request_id, exc_info=error)
            if running is not None:  # the chain finishes when that call returns
                with self._lock:
                    self._late[running] = chain.finished
        late = [g.name for g in runnable if g.name not in answered and g.name not in failed]
        if late:
            result.dropped |= dict.fromkeys(late, "deadline")
            log.warning("generators %s missed the deadline (request %s)", late, ctx.request_id)
        result.seconds = {name: seconds for name, (_, seconds) in answered.items()}
        # a dropped generator answers "nothing": its feature columns stay, all missing
        result.answers = [
            answered[g.name][0] if g.name in answered else _nothing(g.name) for g in generators
        ]
        return result

    def wait_for_late_calls(self, timeout: float) -> bool:
        """Wait until every call that missed its deadline has returned; False on timeout."""
        with self._lock:
            late = list(self._late.values())
        until = time.monotonic() + timeout
        return all(returned.wait(max(0.0, until - time.monotonic())) for returned in late)

    def shutdown(self, wait_seconds: float = 0.0) -> bool:
        """Stop the pool, first giving calls that missed their deadline up to `wait_seconds`
        to return (a drain: a generator writing a cache should finish). False, with a log
        line naming them, if some are still running."""
        finished = self.wait_for_late_calls(wait_seconds)
        if not finished:
            with self._lock:
                running = sorted(name for name, done in self._late.items() if not done.is_set())
            log.warning("generator calls still running at shutdown: %s", running)
        self.pool.shutdown(wait=False, cancel_futures=True)
        return finished


class _Chain:
    """Some of one request's generators, one after another on a pool thread, until the
    request stops waiting: what answered after that is not the request's any more."""

    def __init__(
        self,
        generators: Sequence[Generator],
        ctx: RequestContext,
        budget_of: Callable[[str], int],
    ) -> None:
        self.generators = generators
        self.ctx = ctx
        self.budget_of = budget_of
        self.finished = threading.Event()
        self._answers: dict[str, tuple[Candidates, float]] = {}
        self._failed: dict[str, Exception] = {}
        self._running: str | None = None  # the generator being called
        self._stopped = False
        self._lock = threading.Lock()

    def run(self) -> None:
        try:
            for generator in self.generators:
                name = generator.name
                with self._lock:
                    if self._stopped:
                        return
                    self._running = name
                try:
                    outcome = _timed(generator, self.ctx, self.budget_of(name))
                except Exception as error:
                    outcome = error
                with self._lock:
                    self._running = None
                    if self._stopped:
                        return
                    if isinstance(outcome, Exception):
                        self._failed[name] = outcome
                    else:
                        self._answers[name] = outcome
        finally:
            self.finished.set()

    def stop(
        self,
    ) -> tuple[dict[str, tuple[Candidates, float]], dict[str, Exception], str | None]:
        """Answers and failures so far, and the generator still running, if any; the chain
        starts nothing after this, so `finished` is set as soon as that call returns."""
        with self._lock:
            self._stopped = True
            return dict(self._answers), dict(self._failed), self._running


def run_inline(
    generators: Sequence[Generator],
    ctx: RequestContext,
    budget_of: Callable[[str], int],
    deadline: float | None,
) -> FanoutResult:
    """The generators one after another on the request's own thread (serving.generator_threads
    = 0): no thread hand-offs, but a hung generator holds the request. One that would start
    after the deadline is dropped; one that raises is dropped and logged, as in the fan-out."""
    result = FanoutResult(answers=[])
    for generator in generators:
        name = generator.name
        if deadline is not None and time.monotonic() >= deadline:
            result.dropped[name] = "deadline"
            result.answers.append(_nothing(name))
            continue
        try:
            answer, result.seconds[name] = _timed(generator, ctx, budget_of(name))
        except Exception:
            log.exception("generator %s failed (request %s)", name, ctx.request_id)
            result.dropped[name] = "error"
            answer = _nothing(name)
        result.answers.append(answer)
    return result


def _nothing(source: str) -> Candidates:
    return Candidates(NO_ITEMS, np.empty(0, dtype=np.float32), source)


def _timed(generator: Generator, ctx: RequestContext, budget: int) -> tuple[Candidates, float]:
    start = time.perf_counter()
    answer = generator.generate(ctx, budget)
    return answer, time.perf_counter() - start
