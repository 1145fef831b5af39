"""Domain errors of the runtime; `serving.grpc_server` maps each to one gRPC status code."""

from recsys.dataset import MAX_ID_LENGTH


class RequestError(ValueError):
    """The request is malformed (-> INVALID_ARGUMENT). The message names the field."""


class NotFoundError(LookupError):
    """A required entity (e.g. the item of SimilarItems) is unknown (-> NOT_FOUND)."""


class UnavailableError(RuntimeError):
    """No model bundle is loaded yet (-> UNAVAILABLE)."""


class OverloadedError(RuntimeError):
    """Too many calls already wait for their turn (-> RESOURCE_EXHAUSTED): refused at once,
    so the caller can back off or go elsewhere instead of waiting past its deadline."""


class LateError(RuntimeError):
    """The call's deadline passed while it waited for its turn (-> DEADLINE_EXCEEDED): no
    work is done for an answer nobody waits for."""


def check_external_id(field: str, value: str) -> None:
    """An external user or item id from a caller: non-empty, printable, bounded."""
    if not value:
        raise RequestError(f"{field} must not be empty")
    if len(value) > MAX_ID_LENGTH or not value.isprintable():
        raise RequestError(f"{field} must be printable and at most {MAX_ID_LENGTH} characters")
