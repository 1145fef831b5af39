"""TLS and mutual TLS over a real gRPC server, with certificates made by openssl."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess

import grpc
import pytest

from serving.grpc.client import RecommenderClient
from serving.grpc.server import start_server
from serving.grpc.tls import channel_credentials, server_credentials
from tests.test_node_client import needs_node, node_call

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def _openssl(*args: str, cwd) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _signed(name: str, extension: str, cwd) -> None:
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
             "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=cwd)  # fmt: skip
    (cwd / f"{name}.ext").write_text(extension)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", f"{name}.pem", "-days", "1",
             "-extfile", f"{name}.ext", cwd=cwd)  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by it;
    and a stranger's client certificate from another CA."""
    root = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
             "-out", "ca.pem", "-days", "1", "-subj", "/CN=test-ca", cwd=root)  # fmt: skip
    _signed("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\n", root)
    _signed("client", "extendedKeyUsage=clientAuth\n", root)
    stranger = root / "stranger"
    stranger.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "client.key",
             "-out", "client.pem", "-days", "1", "-subj", "/CN=stranger", cwd=stranger)  # fmt: skip
    return root


@pytest.fixture(scope="module")
def mutual(ml_config, ml_nightly, pki):
    config = ml_config.replace(
        serving={
            "tls_cert_file": str(pki / "server.pem"),
            "tls_key_file": str(pki / "server.key"),
            "tls_client_ca_file": str(pki / "ca.pem"),
        }
    )
    running = start_server(config, watch=False)
    yield f"127.0.0.1:{running.port}"
    running.stop(grace=0)


@needs_node
def test_the_node_client_speaks_mutual_tls(mutual, pki):
    request = {"user_id": "196", "k": 3}
    mine = {"RECSYS_TLS_CA": str(pki / "ca.pem")}
    mine |= {"RECSYS_TLS_CERT": str(pki / "client.pem"), "RECSYS_TLS_KEY": str(pki / "client.key")}
    done = node_call(mutual, "Recommend", request, mine)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["items"]) == 3
    plaintext = node_call(mutual, "Recommend", request)
    assert plaintext.returncode == 1 and plaintext.stderr.startswith("UNAVAILABLE")
    half = node_call(mutual, "Recommend", request, {"RECSYS_TLS_CERT": str(pki / "client.pem")})
    assert half.returncode == 2 and "needs RECSYS_TLS_CA" in half.stderr


def test_a_client_with_a_certificate_of_our_ca_is_served(mutual, pki):
    credentials = channel_credentials(
        str(pki / "ca.pem"), str(pki / "client.pem"), str(pki / "client.key")
    )
    with RecommenderClient(mutual, timeout=10, credentials=credentials) as client:
        assert len(client.recommend("196", 5).items) == 5


@pytest.mark.parametrize("who", ["plaintext", "no certificate", "a stranger's certificate"])
def test_anyone_else_cannot_even_connect(mutual, pki, who):
    credentials = {
        "plaintext": None,
        "no certificate": channel_credentials(str(pki / "ca.pem")),
        "a stranger's certificate": channel_credentials(
            str(pki / "ca.pem"),
            str(pki / "stranger" / "client.pem"),
            str(pki / "stranger" / "client.key"),
        ),
    }[who]
    with (
        RecommenderClient(mutual, timeout=5, credentials=credentials) as client,
        pytest.raises(grpc.RpcError) as refused,
    ):
        client.recommend("196", 5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_tls_settings_are_checked_by_name(ml_config, pki, tmp_path):
    serving = ml_config.serving
    with pytest.raises(ValueError, match="go together"):
        server_credentials(dataclasses.replace(serving, tls_cert_file="x.pem"))
    (tmp_path / "key.pem").write_text("not a key")
    bad_key = {"tls_cert_file": str(pki / "server.pem"), "tls_key_file": str(tmp_path / "key.pem")}
    with pytest.raises(ValueError, match="serving.tls_key_file: .* is not a PEM private key"):
        server_credentials(dataclasses.replace(serving, **bad_key))
    with pytest.raises(ValueError, match="needs the server's CA"):
        channel_credentials("", str(pki / "client.pem"), str(pki / "client.key"))
