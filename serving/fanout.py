"""Candidate generators run concurrently against the request's deadline (DESIGN.md §5).

A generator that has not answered when the deadline comes is dropped for that request:
the request goes on with the others. A dropped call cannot be killed (Python threads
cannot be), so the generator is also skipped by later requests until that call returns:
one hung generator costs one pool thread, not one thread per request. A generator that
raises is dropped and logged the same way; a bug in one source must not fail the request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import numpy as np

from candidates.base import NO_ITEMS, Candidates, Generator, RequestContext

log = logging.getLogger(__name__)


@dataclass
class FanoutResult:
    answers: list[Candidates]  # one per generator, in order; empty for a dropped one
    seconds: dict[str, float] = field(default_factory=dict)  # per generator that answered
    dropped: dict[str, str] = field(default_factory=dict)  # generator -> "deadline" | "error"


class GeneratorFanout:
    """Process-wide: one thread pool shared by every request and every bundle."""

    def __init__(self, threads: int) -> None:
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="generator")
        self._late: dict[str, Future] = {}  # generator -> its call that missed a deadline
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
        calls: dict[Future, Generator] = {}
        with self._lock:
            stuck = {name for name, call in self._late.items() if not call.done()}
        for generator in generators:
            if generator.name in stuck:
                result.dropped[generator.name] = "deadline"
                continue
            calls[self.pool.submit(_timed, generator, ctx, budget_of(generator.name))] = generator
        wait(calls, timeout=max(0.0, deadline - time.monotonic()))  # a raise counts as done
        answered = {g.name: self._collect(call, g, result, ctx) for call, g in calls.items()}
        # a dropped generator answers "nothing": its feature columns stay, all missing
        result.answers = [answered.get(g.name) or _nothing(g.name) for g in generators]
        return result

    def _collect(
        self, call: Future, generator: Generator, result: FanoutResult, ctx: RequestContext
    ) -> Candidates | None:
        """The call's answer, or None with the reason in `result.dropped`."""
        name = generator.name
        if not call.done():
            result.dropped[name] = "deadline"
            with self._lock:
                self._late[name] = call
            log.warning("generator %s missed the deadline (request %s)", name, ctx.request_id)
            return None
        if call.exception() is not None:
            result.dropped[name] = "error"
            log.error(
                "generator %s failed (request %s)",
                name,
                ctx.request_id,
                exc_info=call.exception(),
            )
            return None
        answer, result.seconds[name] = call.result()
        return answer

    def wait_for_late_calls(self, timeout: float) -> bool:
        """Wait until every call that missed its deadline has returned; False on timeout."""
        with self._lock:
            late = list(self._late.values())
        _, pending = wait(late, timeout=timeout)
        return not pending

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


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
