"""Client library for the Recommender service; returns the same plain objects as the pipeline."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protos.recsys.v1 import recommender_pb2 as pb
from protos.recsys.v1 import recommender_pb2_grpc as pb_grpc
from serving.events import Event
from serving.pipeline import Recommendation, ScoredItem


def channel_target(address: str) -> tuple[str, list[tuple[str, object]]]:
    """gRPC target and channel options for "host:port", or for "ip:port1,port2,..." (the
    workers' own ports that `recsys serve` prints): those get the round_robin policy, which
    spreads every call over the workers instead of pinning a connection to one."""
    host, _, ports = address.rpartition(":")
    if "," not in ports:
        return address, []
    try:
        numbers = [int(port) for port in ports.split(",")]
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise ValueError(
            f"address {address!r}: several ports need an IP address and numeric ports, "
            "e.g. 127.0.0.1:50061,50062"
        ) from None
    scheme = "ipv6" if ":" in host else "ipv4"
    target = f"{scheme}:" + ",".join(f"{host}:{port}" for port in numbers)
    return target, [("grpc.lb_policy_name", "round_robin")]


class RecommenderClient:
    def __init__(self, address: str, timeout: float = 5.0) -> None:
        self.address = address
        self.timeout = timeout
        target, options = channel_target(address)
        self.channel = grpc.insecure_channel(target, options=options)
        self.stub = pb_grpc.RecommenderStub(self.channel)
        self.health_stub = health_pb2_grpc.HealthStub(self.channel)

    def __enter__(self) -> RecommenderClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def wait_ready(self, timeout: float) -> None:
        """Block until the channel connects (raises grpc.FutureTimeoutError after `timeout`)."""
        grpc.channel_ready_future(self.channel).result(timeout=timeout)

    def recommend(
        self,
        user_id: str,
        k: int,
        *,
        region: str = "",
        exclude: Sequence[str] = (),
        basket: Sequence[str] = (),
        favorites: Sequence[str] = (),
        request_id: str = "",
    ) -> Recommendation:
        response = self.stub.Recommend(
            pb.RecommendRequest(
                user_id=user_id,
                k=k,
                region=region,
                exclude_item_ids=list(exclude),
                basket_item_ids=list(basket),
                favorite_item_ids=list(favorites),
                request_id=request_id,
            ),
            timeout=self.timeout,
        )
        return Recommendation(
            items=tuple(_items(response.items)),
            model_version=response.model_version,
            cold_start=response.cold_start,
            request_id=response.request_id,
        )

    def rank(self, user_id: str, item_ids: Sequence[str]) -> list[ScoredItem]:
        response = self.stub.Rank(
            pb.RankRequest(user_id=user_id, item_ids=list(item_ids)), timeout=self.timeout
        )
        return _items(response.items)

    def similar_items(self, item_id: str, k: int) -> list[ScoredItem]:
        response = self.stub.SimilarItems(
            pb.SimilarItemsRequest(item_id=item_id, k=k), timeout=self.timeout
        )
        return _items(response.items)

    def log_events(self, events: Sequence[Event]) -> int:
        """Append one batch, all or nothing; returns how many the server durably accepted."""
        response = self.stub.LogEvents(
            pb.LogEventsRequest(
                events=[
                    pb.Event(
                        user_id=e.user_id,
                        item_id=e.item_id,
                        event_type=e.event_type,
                        value=e.value,
                        timestamp=e.timestamp,
                    )
                    for e in events
                ]
            ),
            timeout=self.timeout,
        )
        return response.accepted

    def health(self, service: str = "") -> str:
        response = self.health_stub.Check(
            health_pb2.HealthCheckRequest(service=service), timeout=self.timeout
        )
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def _items(items: Sequence[pb.ScoredItem]) -> list[ScoredItem]:
    return [
        ScoredItem(
            item_id=i.item_id,
            score=i.score,
            sources=tuple(i.sources),
            stage=i.stage,
            explanations=tuple(i.explanations),
        )
        for i in items
    ]
