"""End to end through a real gRPC server on a free loopback port, with a real client."""

import grpc
import pytest
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from protos.recsys.v1 import recommender_pb2 as pb
from protos.recsys.v1 import recommender_pb2_grpc as pb_grpc
from serving.grpc.client import RecommenderClient
from tests.catalog_truth import eligible_items, home_region


@pytest.fixture(scope="module")
def server(ml_server):
    return ml_server


@pytest.fixture(scope="module")
def client(server):
    with RecommenderClient(f"127.0.0.1:{server.port}") as client:
        client.wait_ready(10)
        yield client


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield pb_grpc.RecommenderStub(channel)


def test_health_and_reflection(client, server):
    assert client.health() == "SERVING"
    assert client.health("recsys.v1.Recommender") == "SERVING"
    services = set(ProtoReflectionDescriptorDatabase(client.channels[0]).get_services())
    assert {"recsys.v1.Recommender", "grpc.health.v1.Health"} <= services


def test_recommend_never_returns_filtered_items(client, ml_dataset, ml_nightly):
    result = client.recommend("196", 30, exclude=["1", "2"], basket=["3"])
    ids = [i.item_id for i in result.items]
    assert len(ids) == 30 and result.model_version == ml_nightly.manifest.version
    allowed = eligible_items(ml_dataset, "196", home_region(ml_dataset, "196")) - {"1", "2", "3"}
    assert set(ids) <= allowed
    assert all(i.sources for i in result.items) and result.request_id


def test_the_cascade_places_items_through_the_server(client, ml_config, ml_dataset):
    # a known user with a basket and favourites: personal, i2i, business and top sources
    result = client.recommend("196", 300, basket=["181"], favorites=["50", "no-such-item"])
    found = {source for item in result.items for source in item.sources}
    assert found <= set(ml_config.serving.generators)
    assert {"als", "business", "i2i_als"} <= found
    keep = ml_config.ranking.lightgbm_keep
    stages = [item.stage for item in result.items]
    # DLRM orders LightGBM's best `keep`; the rest stay in LightGBM's order, then backfill
    assert set(stages[:keep]) == {"dlrm"}
    assert set(stages[keep:]) <= {"lightgbm", "backfill"} and "lightgbm" in stages[keep:]
    dlrm_scores = [item.score for item in result.items[:keep]]
    assert dlrm_scores == sorted(dlrm_scores, reverse=True)
    allowed = eligible_items(ml_dataset, "196", home_region(ml_dataset, "196")) - {"181"}
    assert {i.item_id for i in result.items} <= allowed  # filters apply to every source


def test_rank_and_similar_items(client):
    ranked = client.rank("196", ["50", "181", "unknown-item"])
    assert [i.item_id for i in ranked][-1] == "unknown-item" and len(ranked) == 3
    similar = client.similar_items("50", 7)
    assert len(similar) == 7 and all(i.sources == ("als_cosine",) for i in similar)


def test_answers_carry_the_catalog_titles(client, ml_dataset):
    titles = dict(zip(ml_dataset.items["item_id"], ml_dataset.items["title"], strict=True))
    recommended = client.recommend("196", 500).items  # the tail is popularity backfill
    ranked = client.rank("196", ["50", "181", "unknown-item"])
    similar = client.similar_items("50", 5)
    for item in [*recommended, *ranked[:2], *similar]:
        assert item.title == titles[item.item_id] and item.title
    assert ranked[-1].title == ""  # an unknown item has no title
    assert recommended[-1].stage == "backfill"


def test_cold_start_is_not_an_error(client):
    result = client.recommend("someone-new-Ω", 5)
    assert result.cold_start and len(result.items) == 5


@pytest.mark.parametrize(
    ("request_", "code", "message"),
    [
        (
            pb.RecommendRequest(user_id="196", k=0),
            grpc.StatusCode.INVALID_ARGUMENT,
            "k must be positive",
        ),
        (
            pb.RecommendRequest(user_id="196", k=2**31 - 1),
            grpc.StatusCode.INVALID_ARGUMENT,
            "exceeds the maximum",
        ),
        (
            pb.RecommendRequest(user_id="", k=5),
            grpc.StatusCode.INVALID_ARGUMENT,
            "user_id must not be empty",
        ),
    ],
)
def test_bad_recommend_requests_get_clear_statuses(stub, request_, code, message):
    with pytest.raises(grpc.RpcError) as caught:
        stub.Recommend(request_, timeout=5)
    assert caught.value.code() == code and message in caught.value.details()


def test_unknown_item_in_similar_is_not_found(stub):
    with pytest.raises(grpc.RpcError) as caught:
        stub.SimilarItems(pb.SimilarItemsRequest(item_id="nope", k=3), timeout=5)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND and "'nope'" in caught.value.details()


def test_huge_or_unprintable_item_ids_are_invalid_not_echoed(stub):
    huge = "x" * 20_000  # echoed in a status, it exceeded the metadata limit
    calls = [
        lambda: stub.SimilarItems(pb.SimilarItemsRequest(item_id=huge, k=3), timeout=5),
        lambda: stub.Rank(pb.RankRequest(user_id="196", item_ids=["50", huge]), timeout=5),
        lambda: stub.Rank(pb.RankRequest(user_id="196", item_ids=["50", "a\x00b"]), timeout=5),
    ]
    for call, field in zip(calls, ["item_id", "item_ids[1]", "item_ids[1]"], strict=True):
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.details().startswith(field) and len(caught.value.details()) < 200


@pytest.mark.parametrize(
    "data",
    [b"\x0a\x05\xff\xfe\xfd\xfc\xfb", b"\x0a\x10abc", bytes(range(256)) * 4],
    ids=["bad-utf8", "truncated", "noise"],
)
def test_bytes_that_are_no_request_are_invalid_argument(server, data):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        call = channel.unary_unary("/recsys.v1.Recommender/Recommend")  # raw bytes
        with pytest.raises(grpc.RpcError) as caught:
            call(data, timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "recsys.v1.RecommendRequest" in caught.value.details()


def test_rank_answers_a_repeated_id_once(client):
    ranked = client.rank("196", ["50", "181", "50", "unknown", "unknown"])
    assert sorted(i.item_id for i in ranked) == ["181", "50", "unknown"]


def test_server_survives_a_burst_of_malformed_requests(stub, client):
    bad = [pb.RecommendRequest(user_id="\x00" * n, k=-n) for n in range(1, 40)] + [
        pb.RecommendRequest(user_id="u", k=k) for k in (0, -1, 501, 10**9)
    ]
    for request in bad:
        with pytest.raises(grpc.RpcError) as caught:
            stub.Recommend(request, timeout=5)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(client.recommend("1", 3).items) == 3


def test_worker_addresses_name_each_workers_own_port() -> None:
    from serving.grpc.client import worker_addresses

    assert worker_addresses("127.0.0.1:50051") == ["127.0.0.1:50051"]
    assert worker_addresses("127.0.0.1:50061,50062") == ["127.0.0.1:50061", "127.0.0.1:50062"]
    assert worker_addresses("[::1]:7,8") == ["[::1]:7", "[::1]:8"]
    with pytest.raises(ValueError, match="need an IP address"):
        worker_addresses("recsys.internal:7,8")
    with pytest.raises(ValueError, match="numeric ports"):
        worker_addresses("127.0.0.1:7,x")


def test_least_outstanding_sends_a_call_to_the_worker_with_fewer_in_flight() -> None:
    from serving.grpc.client import LeastOutstanding

    picker = LeastOutstanding(2)
    # one after another (nothing in flight): in turn
    turns = []
    for _ in range(4):
        with picker.call() as worker:
            turns.append(worker)
    assert turns == [0, 1, 0, 1]
    with picker.call() as slow:  # a slow call stays in flight on worker 0...
        assert slow == 0
        for _ in range(3):  # ...so the calls meanwhile go to worker 1
            with picker.call() as worker:
                assert worker == 1
        with picker.call() as second, picker.call() as third:  # 1 each in flight: in turn
            assert (second, third) == (1, 0)
            assert picker.in_flight == [2, 1]
    assert picker.in_flight == [0, 0]
    with pytest.raises(RuntimeError), picker.call():  # a failed call is no longer counted
        raise RuntimeError("the call failed")
    assert picker.in_flight == [0, 0]
    # a worker whose connection failed gets no calls while another can take them
    picker.set_usable(1, False)
    with picker.call() as first, picker.call() as second:
        assert (first, second) == (0, 0)
    picker.set_usable(0, False)  # none usable: calls still go somewhere, and fail there
    with picker.call() as worker:
        assert worker in (0, 1)


def test_a_worker_that_cannot_be_reached_gets_no_calls(server) -> None:
    """One of the two "workers" is a port nobody listens on (a worker being replaced):
    once its connection fails, every call goes to the live one and succeeds."""
    import time

    from tests.serving_harness import free_port

    with RecommenderClient(f"127.0.0.1:{server.port},{free_port()}", timeout=5) as client:
        deadline = time.monotonic() + 10
        while client.picker.usable[1] and time.monotonic() < deadline:
            time.sleep(0.01)  # polls a condition: the channel's state callback
        assert client.picker.usable == [True, False]
        for _ in range(10):
            assert len(client.recommend("1", 3).items) == 3
