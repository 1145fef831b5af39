"""Prometheus metrics of the runtime, and the /metrics endpoint.

With several server processes (`serving.processes`), each writes its samples to files in
PROMETHEUS_MULTIPROC_DIR (prometheus_client's multiprocess mode; the supervisor sets it
before any worker starts) and the supervisor's endpoint adds them up. A single process
uses the default registry.
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
)

if TYPE_CHECKING:  # the supervisor imports this module: it must not pull in torch and co.
    from serving.pipeline import Trace

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Latency buckets around the serving budget: sub-ms stages up to deadline-sized requests.
SECONDS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
CANDIDATES = (0, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)

REQUESTS = Counter(
    "recsys_requests", "Calls answered, by method and gRPC status", ["method", "code"]
)
REQUEST_SECONDS = Histogram(
    "recsys_request_seconds", "Server-side latency per call", ["method"], buckets=SECONDS
)
STAGE_SECONDS = Histogram(
    "recsys_stage_seconds",
    "Recommend latency per pipeline stage (candidates, filters, features, each ranker)",
    ["stage"],
    buckets=SECONDS,
)
GENERATOR_SECONDS = Histogram(
    "recsys_generator_seconds", "Latency per candidate generator", ["generator"], buckets=SECONDS
)
GENERATOR_DROPPED = Counter(
    "recsys_generator_dropped",
    "Generators left out of a request: missed the deadline or raised",
    ["generator", "reason"],
)
SHED = Counter(
    "recsys_calls_shed",
    "Ranking calls refused unworked: the queue was full, or their deadline passed in it",
    ["reason"],
)
STAGE_CANDIDATES = Histogram(
    "recsys_candidates",
    "Items after each stage of Recommend (generated, filtered, returned)",
    ["stage"],
    buckets=CANDIDATES,
)
EVENTS_LOGGED = Counter("recsys_events_logged", "Events durably appended by LogEvents")
SESSION_CATCH_UP_CUT = Counter(
    "recsys_session_catch_up_cut",
    "Requests that answered with logged events still to apply (events.request_catch_up)",
)
BUNDLE = Gauge(
    "recsys_bundle_info",
    "1 for the model bundle version a process serves",
    ["version"],
    multiprocess_mode="liveall",
)


@functools.lru_cache(maxsize=4096)
def child(metric, *labels: str):
    """`metric.labels(*labels)`, looked up once: a request records about twenty samples,
    and the lookup (locks, label checks) costs more than the sample itself."""
    return metric.labels(*labels)


def observe_trace(trace: Trace) -> None:
    for stage, seconds in trace.seconds.items():
        child(STAGE_SECONDS, stage).observe(seconds)
    for generator, seconds in trace.generator_seconds.items():
        child(GENERATOR_SECONDS, generator).observe(seconds)
    for generator, reason in trace.dropped.items():
        child(GENERATOR_DROPPED, generator, reason).inc()
    for stage, count in trace.counts.items():
        child(STAGE_CANDIDATES, stage).observe(count)


def bundle_swapped(previous: str | None, current: str) -> None:
    if previous is not None:
        BUNDLE.labels(previous).set(0)
    BUNDLE.labels(current).set(1)


def serve_metrics(host: str, port: int) -> None:
    """Expose /metrics on host:port: every process's samples in multiprocess mode."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        start_http_server(port, addr=host, registry=registry)
    else:
        start_http_server(port, addr=host)


def process_exited(pid: int) -> None:
    """Drop a dead worker's live gauges (its counters stay in the totals)."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)
