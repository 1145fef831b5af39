"""Bearer tokens for the Recommender service: who may read lists, who may write events.

Without a tokens file (serving.tokens_file = "") every caller may call everything: fine on
loopback, where the default config listens, and nowhere else. With one, each call carries
`authorization: Bearer <token>` metadata, and the token's role decides:

- "read":  Recommend, Rank, SimilarItems;
- "write": those and LogEvents (a forged LogEvents rewrites a user's next lists: ten fake
  purchases hide a whole top 10, across restarts, because the log is the system of record).

Health checks and reflection stay open, as load balancers call them without credentials.
The file holds one `<role> <sha256 of the token>` per line (`#` starts a comment), so
reading it gives no usable token away; `recsys token ROLE` makes a token and its line.
Tokens rotate without a restart: a changed file is read again at the next call (write the
new file beside it and rename it over the old one, so no call sees half a file); a file
that no longer reads (malformed, empty, gone) keeps the tokens that were in force, and says
why in the log once per change.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import threading
from collections.abc import Callable
from pathlib import Path

import grpc

from protos.recsys.v1 import recommender_pb2 as pb

log = logging.getLogger(__name__)

SERVICE = pb.DESCRIPTOR.services_by_name["Recommender"].full_name
ROLES = ("read", "write")
WRITE_METHODS = frozenset({f"/{SERVICE}/LogEvents"})
HEADER = "authorization"
SCHEME = "Bearer "


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(role: str) -> tuple[str, str]:
    """A fresh random token and its line for the tokens file."""
    if role not in ROLES:
        raise ValueError(f"role {role!r} unknown; one of {', '.join(ROLES)}")
    token = secrets.token_urlsafe(32)
    return token, f"{role} {token_digest(token)}"


def read_tokens(path: str | Path) -> dict[str, str]:
    """sha256 digest -> role, from a tokens file; ValueError naming the line if malformed."""
    roles: dict[str, str] = {}
    for number, raw in enumerate(Path(path).read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0] not in ROLES or not _is_digest(parts[1]):
            raise ValueError(
                f"{path}, line {number}: expected '<{'|'.join(ROLES)}> <sha256 hex of a token>'"
            )
        roles[parts[1].lower()] = parts[0]
    if not roles:
        raise ValueError(f"{path} holds no token: every call would be refused")
    return roles


def _is_digest(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdefABCDEF" for c in text)


class TokenAuth(grpc.ServerInterceptor):
    """Refuses Recommender calls without a token of a sufficient role, from the tokens file
    as it is now (read again when its modification time, size or inode change)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._version = self._stat()
        self.roles = read_tokens(self.path)  # a bad file at start is an error: no server
        self._lock = threading.Lock()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            stat = os.stat(self.path)
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size, stat.st_ino)

    def _current_roles(self) -> dict[str, str]:
        version = self._stat()
        if version == self._version:
            return self.roles
        with self._lock:
            if version != self._version:
                self._version = version
                try:
                    self.roles = read_tokens(self.path)
                    log.info("tokens: %s read again, %d tokens", self.path, len(self.roles))
                except (OSError, ValueError) as err:
                    log.error("tokens: keeping the %d tokens in force: %s", len(self.roles), err)
        return self.roles

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        if not details.method.startswith(f"/{SERVICE}/"):
            return continuation(details)  # health checks, reflection
        role = self._role_of(dict(details.invocation_metadata).get(HEADER, ""))
        if role is None:
            return _refusal(grpc.StatusCode.UNAUTHENTICATED, "a valid bearer token is required")
        if details.method in WRITE_METHODS and role != "write":
            return _refusal(grpc.StatusCode.PERMISSION_DENIED, "this token may not write events")
        return continuation(details)

    def _role_of(self, header: str) -> str | None:
        if not header.startswith(SCHEME):
            return None
        digest = token_digest(header[len(SCHEME) :].strip())
        for known, role in self._current_roles().items():  # constant time per entry
            if hmac.compare_digest(known, digest):
                return role
        return None


def _refusal(code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    def refuse(request: object, context: grpc.ServicerContext) -> None:
        context.abort(code, message)

    return grpc.unary_unary_rpc_method_handler(refuse)  # the request bytes are never decoded


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying `token`."""
    return ((HEADER, f"{SCHEME}{token}"),)
