"""TLS for the server and its clients, from PEM files named in the config.

The server: a certificate chain and its key make every port it listens on TLS-only; a
client CA on top makes it mutual (a client without a certificate that CA signed cannot
complete the handshake). The clients: the CA that signed the server's certificate, and
their own certificate and key when the server asks for one.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from recsys.config import ServingConfig


def server_credentials(serving: ServingConfig) -> grpc.ServerCredentials | None:
    """None for plaintext (no certificate configured)."""
    if not serving.tls_cert_file and not serving.tls_key_file:
        if serving.tls_client_ca_file:
            raise ValueError("serving.tls_client_ca_file needs tls_cert_file and tls_key_file")
        return None
    if not (serving.tls_cert_file and serving.tls_key_file):
        raise ValueError("serving.tls_cert_file and tls_key_file go together")
    key = _pem(serving.tls_key_file, "serving.tls_key_file", "PRIVATE KEY")
    chain = _pem(serving.tls_cert_file, "serving.tls_cert_file", "CERTIFICATE")
    client_ca = (
        _pem(serving.tls_client_ca_file, "serving.tls_client_ca_file", "CERTIFICATE")
        if serving.tls_client_ca_file
        else None
    )
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def channel_credentials(
    ca_file: str = "", cert_file: str = "", key_file: str = ""
) -> grpc.ChannelCredentials | None:
    """None for plaintext (no CA given); the client's own certificate only with its key."""
    if not ca_file:
        if cert_file or key_file:
            raise ValueError("a client certificate needs the server's CA (client_tls_ca_file)")
        return None
    if bool(cert_file) != bool(key_file):
        raise ValueError("client_tls_cert_file and client_tls_key_file go together")
    return grpc.ssl_channel_credentials(
        root_certificates=_pem(ca_file, "client_tls_ca_file", "CERTIFICATE"),
        private_key=_pem(key_file, "client_tls_key_file", "PRIVATE KEY") if key_file else None,
        certificate_chain=_pem(cert_file, "client_tls_cert_file", "CERTIFICATE")
        if cert_file
        else None,
    )


def _pem(path: str, setting: str, kind: str) -> bytes:
    """The file's bytes, refused early and by name when it is not PEM of the expected kind
    (grpc's own error for a bad file is a bare handshake failure, much later)."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise ValueError(f"{setting}: cannot read {path}: {err.strerror}") from None
    if b"-----BEGIN" not in data or kind.encode() not in data:
        raise ValueError(f"{setting}: {path} is not a PEM {kind.lower()}")
    return data
