"""A client from another gRPC implementation works: Node's @grpc/grpc-js, loading the same
.proto at run time (clients/node/recsys_client.js), against the real server on loopback."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

from protos.recsys.v1 import recommender_pb2 as pb
from serving.grpc.client import RecommenderClient
from tests.conftest import REPO

CLIENT_DIR = REPO / "clients" / "node"
NODE = shutil.which("node")

NEEDS_NODE = [
    pytest.mark.skipif(NODE is None, reason="node is not installed"),
    pytest.mark.skipif(
        not (CLIENT_DIR / "node_modules").is_dir(),
        reason="clients/node/node_modules is missing: run `make setup`",
    ),
]
pytestmark = NEEDS_NODE


def needs_node(test):
    """The skips of this module, for a Node test in another module."""
    for mark in NEEDS_NODE:
        test = mark(test)
    return test


@pytest.fixture(scope="module")
def server(ml_server):
    return ml_server


@pytest.fixture(scope="module")
def address(server) -> str:
    return f"127.0.0.1:{server.port}"


@pytest.fixture(scope="module")
def python_client(address):
    with RecommenderClient(address) as client:
        client.wait_ready(10)
        yield client


def node_call(
    address: str, method: str, request: dict, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """`env`: RECSYS_TOKEN, RECSYS_TLS_CA/CERT/KEY for the client (on top of ours)."""
    return subprocess.run(
        [NODE, str(CLIENT_DIR / "recsys_client.js"), address, method, json.dumps(request)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def node_ok(address: str, method: str, request: dict) -> dict:
    done = node_call(address, method, request)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_recommend_from_node_matches_the_python_client(address, python_client):
    request = {"user_id": "196", "k": 10, "exclude_item_ids": ["1"], "basket_item_ids": ["3"]}
    response = node_ok(address, "Recommend", request)
    items = response["items"]
    assert len(items) == 10 and response["cold_start"] is False and response["model_version"]
    assert all(item["item_id"] and item["stage"] and item["sources"] for item in items)
    # keepCase + defaults: every ScoredItem field of the .proto, snake_case, even when empty
    assert all(set(item) == set(pb.ScoredItem.DESCRIPTOR.fields_by_name) for item in items)

    expected = python_client.recommend("196", 10, exclude=["1"], basket=["3"])
    assert [item["item_id"] for item in items] == [item.item_id for item in expected.items]
    assert [item["stage"] for item in items] == [item.stage for item in expected.items]
    assert [item["score"] for item in items] == pytest.approx([i.score for i in expected.items])
    assert response["model_version"] == expected.model_version


def test_rank_from_node_returns_the_given_items(address):
    given = ["50", "181", "unknown-item"]
    items = node_ok(address, "Rank", {"user_id": "196", "item_ids": given})["items"]
    assert sorted(item["item_id"] for item in items) == sorted(given)
    assert items[-1]["item_id"] == "unknown-item"  # unknown ids come last


def test_unknown_item_gives_not_found_in_node(address):
    done = node_call(address, "SimilarItems", {"item_id": "nope", "k": 3})
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("NOT_FOUND: ") and "'nope'" in done.stderr


def test_k_zero_gives_invalid_argument_naming_k_in_node(address):
    done = node_call(address, "Recommend", {"user_id": "196", "k": 0})
    assert done.returncode == 1
    assert done.stderr.startswith("INVALID_ARGUMENT: ")
    assert re.search(r"\bk\b", done.stderr.removeprefix("INVALID_ARGUMENT: "))
