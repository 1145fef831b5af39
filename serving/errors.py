"""Domain errors of the runtime; `serving.grpc_server` maps each to one gRPC status code."""


class RequestError(ValueError):
    """The request is malformed (-> INVALID_ARGUMENT). The message names the field."""


class NotFoundError(LookupError):
    """A required entity (e.g. the item of SimilarItems) is unknown (-> NOT_FOUND)."""


class UnavailableError(RuntimeError):
    """No model bundle is loaded yet (-> UNAVAILABLE)."""
