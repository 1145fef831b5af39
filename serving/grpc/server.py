"""The thin servicer: convert protobuf to plain requests, call the pipeline, convert back.

It also owns what is per process rather than per bundle: the generator fan-out, the
event log and the session store, and the metrics of every call.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from typing import TypeVar

import faiss
import grpc
import torch
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from threadpoolctl import threadpool_limits

from protos.recsys.v1 import recommender_pb2 as pb
from protos.recsys.v1 import recommender_pb2_grpc as pb_grpc
from ranking.dlrm.export import stop_builds
from recsys.bundle import folded_log_offsets
from recsys.config import Config
from serving import metrics
from serving.errors import (
    LateError,
    NotFoundError,
    OverloadedError,
    RequestError,
    UnavailableError,
)
from serving.events import Event, EventLog, EventLogTail, validate_events
from serving.fanout import GeneratorFanout
from serving.grpc.auth import TokenAuth
from serving.grpc.tls import server_credentials
from serving.holder import BundleHolder
from serving.pipeline import RecommendRequest, ScoredItem
from serving.sessions import Session, SessionStore
from serving.tops_feed import TopsFeed
from serving.turns import Admission, Turns

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Recommender"].full_name
STATUS_OF = {
    RequestError: grpc.StatusCode.INVALID_ARGUMENT,
    NotFoundError: grpc.StatusCode.NOT_FOUND,
    UnavailableError: grpc.StatusCode.UNAVAILABLE,
    OverloadedError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    LateError: grpc.StatusCode.DEADLINE_EXCEEDED,
    OSError: grpc.StatusCode.UNAVAILABLE,  # the event log's disk; the caller may retry
}
Reply = TypeVar("Reply")
# On shutdown, how long a bundle load in progress may take to end (its compile is stopped;
# what is left is the fallback model and the warm-up, 1-3 s on the 100k-item shop)
WATCHER_EXIT_SECONDS = 15.0
LATE_CALLS_EXIT_SECONDS = 1.0  # a drain waits this long for generator calls past deadline


def _status_of(err: Exception) -> tuple[grpc.StatusCode, str]:
    for kind, code in STATUS_OF.items():
        if isinstance(err, kind):
            return code, str(err)
    log.exception("internal error")
    return grpc.StatusCode.INTERNAL, f"internal error: {type(err).__name__}"


def _deadline(context: grpc.ServicerContext, longest_ms: int) -> float:
    """time.monotonic() by which to answer: the client's deadline, at most longest_ms."""
    remaining = context.time_remaining()
    longest = longest_ms / 1000
    return time.monotonic() + (longest if remaining is None else min(remaining, longest))


def _items(items: list[ScoredItem] | tuple[ScoredItem, ...]) -> list[pb.ScoredItem]:
    return [
        pb.ScoredItem(
            item_id=i.item_id,
            score=i.score,
            sources=i.sources,
            stage=i.stage,
            explanations=i.explanations,
            title=i.title,
        )
        for i in items
    ]


class RecommenderServicer(pb_grpc.RecommenderServicer):
    def __init__(
        self, holder: BundleHolder, event_log: EventLog, sessions: SessionStore, config: Config
    ) -> None:
        self.holder = holder
        self.event_log = event_log
        self.sessions = sessions
        self.config = config
        self.calls = CallCount()
        # ranking calls run `serving.workers` at a time, in arrival order; the side threads
        # keep LogEvents and health checks from queueing behind them
        self.ranking_turns = Turns(config.serving.workers)

    def Recommend(
        self, request: pb.RecommendRequest, context: grpc.ServicerContext
    ) -> pb.RecommendResponse:
        request_id = request.request_id or uuid.uuid4().hex

        def work() -> pb.RecommendResponse:
            session, deadline = self._session_and_deadline(request.user_id, context)
            result = self.holder.pipeline().recommend(
                RecommendRequest(
                    user_id=request.user_id,
                    k=request.k,
                    region=request.region,
                    exclude_item_ids=tuple(request.exclude_item_ids),
                    basket_item_ids=tuple(request.basket_item_ids),
                    favorite_item_ids=tuple(request.favorite_item_ids),
                    request_id=request_id,
                    session=session,
                    deadline=deadline,
                )
            )
            metrics.observe_trace(result.trace)
            log.info(
                "recommend",
                extra={
                    "fields": {
                        "request_id": request_id,
                        "user_id": request.user_id,
                        "k": request.k,
                        "returned": len(result.items),
                        "version": result.model_version,
                        "ms": {s: round(1000 * t, 3) for s, t in result.trace.seconds.items()},
                        "dropped": result.trace.dropped,
                        "removed_by_filter": result.removed_by_filter,
                    }
                },
            )
            return pb.RecommendResponse(
                items=_items(result.items),
                model_version=result.model_version,
                cold_start=result.cold_start,
                request_id=request_id,
                degraded=result.degraded,
                dropped_generators=[f"{g}: {why}" for g, why in result.trace.dropped.items()],
            )

        return self._answer("Recommend", context, work, self.ranking_turns)

    def Rank(self, request: pb.RankRequest, context: grpc.ServicerContext) -> pb.RankResponse:
        def work() -> pb.RankResponse:
            session, deadline = self._session_and_deadline(request.user_id, context)
            pipeline = self.holder.pipeline()
            ranked = pipeline.rank(
                request.user_id, tuple(request.item_ids), session=session, deadline=deadline
            )
            return pb.RankResponse(items=_items(ranked), model_version=pipeline.version)

        return self._answer("Rank", context, work, self.ranking_turns)

    def SimilarItems(
        self, request: pb.SimilarItemsRequest, context: grpc.ServicerContext
    ) -> pb.SimilarItemsResponse:
        def work() -> pb.SimilarItemsResponse:
            pipeline = self.holder.pipeline()
            similar = pipeline.similar_items(request.item_id, request.k)
            return pb.SimilarItemsResponse(items=_items(similar), model_version=pipeline.version)

        return self._answer("SimilarItems", context, work, self.ranking_turns)

    def LogEvents(
        self, request: pb.LogEventsRequest, context: grpc.ServicerContext
    ) -> pb.LogEventsResponse:
        def work() -> pb.LogEventsResponse:
            events = [
                Event(e.user_id, e.item_id, e.event_type, e.value, e.timestamp)
                for e in request.events
            ]
            validate_events(
                events,
                self.config.events.max_batch,
                max_clock_skew_seconds=self.config.data.max_clock_skew_seconds,
            )
            self.event_log.append(events)  # durable before we say so
            metrics.EVENTS_LOGGED.inc(len(events))
            return pb.LogEventsResponse(accepted=len(events))

        return self._answer("LogEvents", context, work)

    def _session_and_deadline(
        self, user_id: str, context: grpc.ServicerContext
    ) -> tuple[Session | None, float]:
        """The user's session, after catching up with every event any process acknowledged
        before this call (up to events.request_catch_up of them: the follower thread has
        the rest of a flood), and the monotonic time by which to answer."""
        limit = self.config.events.request_catch_up  # 0: every event logged so far
        if self.sessions.catch_up(limit) >= limit > 0:  # more wait: the follower has them
            metrics.SESSION_CATCH_UP_CUT.inc()
        return self.sessions.session_of(user_id), _deadline(
            context, self.config.serving.deadline_ms
        )

    def _answer(
        self,
        method: str,
        context: grpc.ServicerContext,
        work: Callable[[], Reply],
        turns: Turns | None = None,
    ) -> Reply:
        """Run one call, in its turn if it needs one: map every failure to a status (one
        place), count and time it (the wait for a turn included)."""
        start = time.perf_counter()
        code = grpc.StatusCode.OK
        self.calls.begin()
        try:
            if turns is None:
                return work()
            return self._in_turn(turns, context, work)
        except Exception as err:
            code, message = _status_of(err)
            context.abort(code, message)
        finally:
            self.calls.end()
            metrics.child(metrics.REQUESTS, method, code.name).inc()
            metrics.child(metrics.REQUEST_SECONDS, method).observe(time.perf_counter() - start)

    def _in_turn(self, turns: Turns, context: grpc.ServicerContext, work: Callable[[], Reply]):
        """`work` in its turn. Admission control: at most serving.max_queued_calls wait
        (each holds a handler thread, and the threads beyond them stay free for LogEvents
        and health checks). A call that waited until less than serving.ranking_reserve_ms
        of its deadline is left is not worked on: no generator could answer in that time,
        and its turn is better spent on the next call (the answer would be a popularity
        backfill the client no longer waits for)."""
        serving = self.config.serving
        admission = turns.enter(max_waiting=serving.max_queued_calls)
        if not admission:
            metrics.child(metrics.SHED, "queue_full").inc()
            raise OverloadedError(
                f"overloaded: {serving.max_queued_calls} calls already wait; retry later"
            )
        try:
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:
                metrics.child(metrics.SHED, "late").inc()
                raise LateError("the deadline passed while the call waited for its turn")
            reserve = serving.ranking_reserve_ms / 1000
            if (
                admission == Admission.AFTER_WAITING
                and remaining is not None
                and remaining < reserve
            ):
                metrics.child(metrics.SHED, "late").inc()
                raise LateError(
                    f"{remaining * 1000:.0f} ms of the deadline were left after the call waited "
                    f"for its turn, under serving.ranking_reserve_ms ({serving.ranking_reserve_ms})"
                )
            return work()
        finally:
            turns.leave()


@dataclass(frozen=True)
class Undecodable:
    """What a request's bytes became when they are not the method's request message."""

    expected: str  # the message's full name
    reason: str


def add_servicer(servicer: RecommenderServicer, server: grpc.Server) -> None:
    """What the generated add_RecommenderServicer_to_server does, except that bytes that are
    not the method's request message get INVALID_ARGUMENT: grpc's own deserializer answers
    INTERNAL and logs a traceback for every such call."""
    service = pb.DESCRIPTOR.services_by_name["Recommender"]
    handlers = {
        method.name: grpc.unary_unary_rpc_method_handler(
            _refusing_undecodable(getattr(servicer, method.name), method.name),
            request_deserializer=_decoder(getattr(pb, method.input_type.name)),
            response_serializer=getattr(pb, method.output_type.name).SerializeToString,
        )
        for method in service.methods
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    server.add_registered_method_handlers(service.full_name, handlers)


def _decoder(message_class: type) -> Callable[[bytes], object]:
    def decode(data: bytes) -> object:
        try:
            return message_class.FromString(data)
        except DecodeError as err:
            return Undecodable(message_class.DESCRIPTOR.full_name, str(err))

    return decode


def _refusing_undecodable(handle: Callable, method: str) -> Callable:
    def checked(request: object, context: grpc.ServicerContext) -> object:
        if isinstance(request, Undecodable):
            metrics.child(metrics.REQUESTS, method, "INVALID_ARGUMENT").inc()
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the request is not a valid {request.expected}: {request.reason}",
            )
        return handle(request, context)

    return checked


class CallCount:
    """Calls begun and ended, so that a shutdown can say what it drained."""

    def __init__(self) -> None:
        self.begun = 0
        self.ended = 0
        self._lock = threading.Lock()

    def begin(self) -> None:
        with self._lock:
            self.begun += 1

    def end(self) -> None:
        with self._lock:
            self.ended += 1

    @property
    def in_flight(self) -> int:
        return self.begun - self.ended


@dataclass
class RunningServer:
    server: grpc.Server
    port: int
    health: health.HealthServicer
    holder: BundleHolder
    stop_watching: threading.Event
    event_log: EventLog
    fanout: GeneratorFanout | None
    servicer: RecommenderServicer
    watcher: threading.Thread | None = None  # polls `current`, loads new bundles

    def stop(self, grace: float = 5.0) -> None:
        """NOT_SERVING first so load balancers drain us, then finish in-flight calls."""
        calls = self.servicer.calls
        in_flight = calls.in_flight
        self.health.enter_graceful_shutdown()
        self.stop_watching.set()
        self.server.stop(grace).wait()
        self.event_log.close()
        if self.watcher is not None:
            stop_builds(self.watcher)  # a bundle still compiling must not hold the exit
            self.watcher.join(WATCHER_EXIT_SECONDS)  # a load in progress ends, not dies in torch
        if self.fanout is not None:
            self.fanout.shutdown(wait_seconds=LATE_CALLS_EXIT_SECONDS)
        log.info(
            "drained",
            extra={
                "fields": {
                    "in_flight_at_stop": in_flight,
                    "calls_begun": calls.begun,
                    "calls_ended": calls.ended,
                }
            },
        )


def _interceptors(config: Config) -> list[grpc.ServerInterceptor]:
    """Token checks when serving.tokens_file names a file (a malformed one stops the start)."""
    if not config.serving.tokens_file:
        return []
    return [TokenAuth(config.serving.tokens_file)]


def _listen(server: grpc.Server, address: str, credentials: grpc.ServerCredentials | None) -> int:
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    return port


def _set_health(servicer: health.HealthServicer, status: int) -> None:
    for name in ("", SERVICE_NAME):  # the server as a whole, and the Recommender service
        servicer.set(name, status)


def start_server(
    config: Config, *, watch: bool = True, own_port: int | None = None
) -> RunningServer:
    """Load the current bundle and serve on config.serving host:port (port 0: any free one),
    and on `own_port` too when given (a worker's port of its own, for per-call balancing)."""
    threads = config.serving.generator_threads
    fanout = (  # 0 threads: generators run inline
        GeneratorFanout(threads, config.serving.generator_chains) if threads else None
    )
    health_servicer = health.HealthServicer()

    def swapped(previous: str | None, version: str) -> None:
        metrics.bundle_swapped(previous, version)
        _set_health(health_servicer, health_pb2.HealthCheckResponse.SERVING)

    holder = BundleHolder(config, fanout, on_swap=swapped)
    # NOT_SERVING until a bundle is loaded: a worker that answers every call UNAVAILABLE
    # must not pass a load balancer's health check (the first swap turns it SERVING)
    _set_health(health_servicer, health_pb2.HealthCheckResponse.NOT_SERVING)
    holder.refresh()
    if holder.version is None:
        log.warning("starting without a model bundle; calls get UNAVAILABLE until one is published")
    event_log = EventLog(config.events.log_dir, config.events.segment_bytes)
    # Sessions survive a restart: the log is replayed, from where the nightly of the bundle
    # being served stopped reading it (what came before is in the bundle's own history).
    feed = TopsFeed(holder.bundle_in_service, config) if config.tops.live else None
    if feed is not None:
        holder.prime_live_tops = feed.prime
    sessions = SessionStore(
        EventLogTail(
            config.events.log_dir, folded_log_offsets(config.artifacts.root, holder.version)
        ),
        config.events.session_items,
        config.events.exclude_viewed,
        listener=feed,
    )
    sessions.catch_up()
    server = grpc.server(
        futures.ThreadPoolExecutor(
            max_workers=config.serving.workers
            + config.serving.max_queued_calls
            + config.serving.side_threads
        ),
        interceptors=_interceptors(config),
        options=[("grpc.so_reuseport", 1)],  # several processes may share the port
        # calls beyond this are refused (RESOURCE_EXHAUSTED) before their messages are read:
        # memory stays bounded by this many requests of at most grpc's 4 MB each
        maximum_concurrent_rpcs=config.serving.max_concurrent_calls,
    )
    servicer = RecommenderServicer(holder, event_log, sessions, config)
    add_servicer(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if config.serving.reflection:  # lets grpcurl list the API; off where it should not show
        reflection.enable_server_reflection(
            (
                SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
    credentials = server_credentials(config.serving)  # None: plaintext
    port = _listen(server, f"{config.serving.host}:{config.serving.port}", credentials)
    if own_port is not None:
        _listen(server, f"{config.serving.host}:{own_port}", credentials)
    server.start()
    stop_watching = threading.Event()
    watcher = holder.watch(stop_watching) if watch else None
    if watch and config.nearline.join_seconds:
        holder.join_every(config.nearline.join_seconds, stop_watching)
    if config.events.follow_seconds:
        sessions.follow(stop_watching, config.events.follow_seconds)
    log.info("listening on %s:%d, bundle %s", config.serving.host, port, holder.version)
    return RunningServer(
        server, port, health_servicer, holder, stop_watching, event_log, fanout, servicer, watcher
    )


def serve_in_process(
    config: Config, ready: Callable[[RunningServer], None], own_port: int | None = None
) -> None:
    """One server process: serve until SIGTERM or SIGINT, then drain gracefully.

    `ready` is told once the port listens (the supervisor or the CLI prints it)."""
    # DESIGN.md §5: one BLAS/OpenMP thread per request; the processes already use every
    # core, and nested thread pools oversubscribe them. torch keeps its own count, which
    # threadpoolctl does not reach: with two intra-op threads on a busy core, one DLRM
    # call measured 47 ms instead of 1.3 ms (threads spinning at OpenMP barriers).
    threadpool_limits(1)
    faiss.omp_set_num_threads(1)
    torch.set_num_threads(1)
    running = start_server(config, own_port=own_port)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    ready(running)
    done.wait()
    running.stop(config.serving.drain_seconds)
