"""Bearer tokens over a real gRPC server: reading lists and writing events are separate
rights, and health checks stay open."""

from __future__ import annotations

import json
import time

import grpc
import pytest
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from recsys_cli.main import main
from serving.events import Event
from serving.grpc.auth import new_token, read_tokens, token_digest
from serving.grpc.client import RecommenderClient
from serving.grpc.server import start_server
from tests.test_node_client import needs_node, node_call


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    reader, read_line = new_token("read")
    writer, write_line = new_token("write")
    path = tmp_path_factory.mktemp("auth") / "tokens"
    path.write_text(f"# who may call\n{read_line}\n{write_line}  # the event feed\n")
    return {"read": reader, "write": writer, "file": path}


@pytest.fixture(scope="module")
def locked(ml_config, ml_nightly, tokens, tmp_path_factory):
    config = ml_config.replace(
        serving={"tokens_file": str(tokens["file"]), "reflection": False},
        events={"log_dir": str(tmp_path_factory.mktemp("events"))},
    )
    running = start_server(config, watch=False)
    yield f"127.0.0.1:{running.port}"
    running.stop(grace=0)


@pytest.mark.parametrize("role", ["read", "write"])
@needs_node
def test_the_node_client_sends_its_token(locked, tokens, role):
    done = node_call(
        locked, "Recommend", {"user_id": "196", "k": 3}, {"RECSYS_TOKEN": tokens[role]}
    )
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["items"]) == 3
    refused = node_call(
        locked, "Recommend", {"user_id": "196", "k": 3}, {"RECSYS_TOKEN": "guessed"}
    )
    assert refused.returncode == 1 and refused.stderr.startswith("UNAUTHENTICATED")


def purchase(user: str) -> Event:
    return Event(user, "50", "purchase", 1.0, int(time.time()))


@pytest.mark.parametrize("token", [None, "guessed", ""])
def test_no_valid_token_reads_nothing(locked, token):
    with RecommenderClient(locked, token=token) as client, pytest.raises(grpc.RpcError) as no:
        client.recommend("196", 5)
    assert no.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_read_token_reads_but_may_not_write_events(locked, tokens):
    with RecommenderClient(locked, token=tokens["read"]) as client:
        assert len(client.recommend("196", 5).items) == 5
        assert len(client.similar_items("50", 3)) == 3
        with pytest.raises(grpc.RpcError) as denied:
            client.log_events([purchase("196")])
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_write_token_writes_events_and_health_needs_none(locked, tokens):
    with RecommenderClient(locked, token=tokens["write"]) as client:
        assert client.log_events([purchase("196")]) == 1
    with RecommenderClient(locked) as anyone:  # load balancers check health without one
        assert anyone.health() == "SERVING"
        with pytest.raises(grpc.RpcError) as hidden:  # and reflection is off here
            ProtoReflectionDescriptorDatabase(anyone.channels[0]).get_services()
    assert hidden.value.code() == grpc.StatusCode.UNIMPLEMENTED


@pytest.mark.parametrize(
    "text, message",
    [
        ("admin " + "a" * 64, "line 1: expected"),
        ("read not-a-digest", "line 1: expected"),
        ("# only a comment\n", "holds no token"),
    ],
)
def test_a_bad_tokens_file_is_refused_naming_the_line(tmp_path, text, message):
    path = tmp_path / "tokens"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_tokens(path)


def test_recsys_token_prints_a_token_and_the_line_that_admits_it(tmp_path, capsys):
    assert main(["token", "write"]) == 0
    out = capsys.readouterr().out.splitlines()
    token = out[0].rsplit(" ", 1)[1]
    line = out[1].split(": ", 1)[1]
    (tmp_path / "tokens").write_text(line + "\n")
    assert read_tokens(tmp_path / "tokens") == {token_digest(token): "write"}


def test_tokens_rotate_without_a_restart_and_a_broken_file_keeps_the_old_ones(
    ml_config, ml_nightly, tmp_path, caplog
):
    old, old_line = new_token("read")
    new, new_line = new_token("read")
    path = tmp_path / "tokens"
    path.write_text(old_line + "\n")
    config = ml_config.replace(
        serving={"tokens_file": str(path)}, events={"log_dir": str(tmp_path / "events")}
    )
    running = start_server(config, watch=False)
    address = f"127.0.0.1:{running.port}"

    def code_with(token: str) -> grpc.StatusCode:
        with RecommenderClient(address, token=token) as client:
            try:
                client.recommend("196", 5)
            except grpc.RpcError as err:
                return err.code()
            return grpc.StatusCode.OK

    def replace_file(text: str) -> None:  # as an operator should: write beside, rename over
        staged = tmp_path / "tokens.new"
        staged.write_text(text)
        staged.replace(path)

    try:
        assert code_with(old) == grpc.StatusCode.OK
        replace_file(new_line + "\n")
        assert code_with(old) == grpc.StatusCode.UNAUTHENTICATED
        assert code_with(new) == grpc.StatusCode.OK
        with caplog.at_level("ERROR", logger="serving.grpc.auth"):
            replace_file("read not-a-digest\n")
            assert code_with(new) == grpc.StatusCode.OK  # the tokens in force stay
        assert "keeping the 1 tokens in force" in caplog.text and "line 1" in caplog.text
        path.unlink()
        assert code_with(new) == grpc.StatusCode.OK  # a deleted file opens no door
    finally:
        running.stop(grace=0)
