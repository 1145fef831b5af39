"""The thin servicer: convert protobuf to plain requests, call the pipeline, convert back."""

from __future__ import annotations

import logging
import signal
import threading
import uuid
from concurrent import futures
from dataclasses import dataclass

import faiss
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from threadpoolctl import threadpool_limits

from protos.recsys.v1 import recommender_pb2 as pb
from protos.recsys.v1 import recommender_pb2_grpc as pb_grpc
from recsys.config import Config
from serving.errors import NotFoundError, RequestError, UnavailableError
from serving.holder import BundleHolder
from serving.pipeline import RecommendRequest, ScoredItem

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Recommender"].full_name
STATUS_OF = {
    RequestError: grpc.StatusCode.INVALID_ARGUMENT,
    NotFoundError: grpc.StatusCode.NOT_FOUND,
    UnavailableError: grpc.StatusCode.UNAVAILABLE,
}


def _to_status(context: grpc.ServicerContext, err: Exception) -> None:
    for kind, code in STATUS_OF.items():
        if isinstance(err, kind):
            context.abort(code, str(err))
    log.exception("internal error")
    context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(err).__name__}")


def _items(items: list[ScoredItem] | tuple[ScoredItem, ...]) -> list[pb.ScoredItem]:
    return [
        pb.ScoredItem(item_id=i.item_id, score=i.score, sources=i.sources, stage=i.stage)
        for i in items
    ]


class RecommenderServicer(pb_grpc.RecommenderServicer):
    def __init__(self, holder: BundleHolder) -> None:
        self.holder = holder

    def Recommend(
        self, request: pb.RecommendRequest, context: grpc.ServicerContext
    ) -> pb.RecommendResponse:
        request_id = request.request_id or uuid.uuid4().hex
        try:
            pipeline = self.holder.pipeline()
            result = pipeline.recommend(
                RecommendRequest(
                    user_id=request.user_id,
                    k=request.k,
                    region=request.region,
                    exclude_item_ids=tuple(request.exclude_item_ids),
                    basket_item_ids=tuple(request.basket_item_ids),
                    favorite_item_ids=tuple(request.favorite_item_ids),
                    request_id=request_id,
                )
            )
        except Exception as err:  # one place maps every failure to a status
            _to_status(context, err)
        log.debug(
            "recommend request_id=%s user=%s removed=%s",
            request_id,
            request.user_id,
            result.removed_by_filter,
        )
        return pb.RecommendResponse(
            items=_items(result.items),
            model_version=result.model_version,
            cold_start=result.cold_start,
            request_id=request_id,
        )

    def Rank(self, request: pb.RankRequest, context: grpc.ServicerContext) -> pb.RankResponse:
        try:
            pipeline = self.holder.pipeline()
            ranked = pipeline.rank(request.user_id, tuple(request.item_ids))
        except Exception as err:
            _to_status(context, err)
        return pb.RankResponse(items=_items(ranked), model_version=pipeline.version)

    def SimilarItems(
        self, request: pb.SimilarItemsRequest, context: grpc.ServicerContext
    ) -> pb.SimilarItemsResponse:
        try:
            pipeline = self.holder.pipeline()
            similar = pipeline.similar_items(request.item_id, request.k)
        except Exception as err:
            _to_status(context, err)
        return pb.SimilarItemsResponse(items=_items(similar), model_version=pipeline.version)


@dataclass
class RunningServer:
    server: grpc.Server
    port: int
    health: health.HealthServicer
    holder: BundleHolder
    stop_watching: threading.Event

    def stop(self, grace: float = 5.0) -> None:
        """NOT_SERVING first so load balancers drain us, then finish in-flight calls."""
        self.health.enter_graceful_shutdown()
        self.stop_watching.set()
        self.server.stop(grace).wait()


def start_server(config: Config, *, watch: bool = True) -> RunningServer:
    """Load the current bundle and serve on config.serving host:port (port 0: any free one)."""
    holder = BundleHolder(config)
    holder.refresh()
    if holder.version is None:
        log.warning("starting without a model bundle; calls get UNAVAILABLE until one is published")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=config.serving.workers))
    pb_grpc.add_RecommenderServicer_to_server(RecommenderServicer(holder), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (
            SERVICE_NAME,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    address = f"{config.serving.host}:{config.serving.port}"
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    server.start()
    serving = health_pb2.HealthCheckResponse.SERVING
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, serving)
    stop_watching = threading.Event()
    if watch:
        holder.watch(stop_watching)
    log.info("listening on %s:%d, bundle %s", config.serving.host, port, holder.version)
    return RunningServer(server, port, health_servicer, holder, stop_watching)


def serve_forever(config: Config) -> None:
    """Run until SIGTERM or SIGINT, then drain gracefully."""
    # DESIGN.md §5: one BLAS/OpenMP thread per request; the gRPC thread pool already uses
    # both cores, and nested thread pools would oversubscribe them.
    threadpool_limits(1)
    faiss.omp_set_num_threads(1)
    running = start_server(config)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    print(
        f"recsys serving on {config.serving.host}:{running.port} (bundle {running.holder.version})",
        flush=True,
    )
    done.wait()
    running.stop()
