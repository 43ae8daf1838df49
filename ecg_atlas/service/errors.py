"""The one place where errors become gRPC statuses.

Every error an RPC raises on purpose is an ``AtlasError`` (or one of the batching queue's) with a
machine-readable ``reason`` and, where figures explain it, ``details``. Here it becomes a status
code, a message for the person, and a ``google.rpc.ErrorInfo`` in the status details (reason,
domain ``ecg-atlas``, the figures as metadata) that clients read instead of parsing messages.
Anything else is INTERNAL: logged at ERROR by type (the traceback only at DEBUG: it may hold
request data) and answered without details.
"""

from __future__ import annotations

import logging
from concurrent.futures import CancelledError
from contextlib import contextmanager

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from ecg_atlas.embedder.batching import DeadlineExpiredError, EncoderStoppedError, QueueFullError
from ecg_atlas.errors import (
    AtlasError,
    EncoderMismatchError,
    InvalidECGError,
    NotFoundError,
    SignalUnavailableError,
    StorageFullError,
    StorageUnavailableError,
    StoreError,
)

log = logging.getLogger(__name__)

DOMAIN = "ecg-atlas"


class Abort(Exception):
    """Raised by RPC code to answer with a given status (a refusal that is no AtlasError)."""

    def __init__(self, code: grpc.StatusCode, message: str, reason: str = "invalid_request",
                 details: dict | None = None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.details = details or {}


_STATUS = (  # most specific first
    (InvalidECGError, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFoundError, grpc.StatusCode.NOT_FOUND),
    (EncoderMismatchError, grpc.StatusCode.FAILED_PRECONDITION),
    (SignalUnavailableError, grpc.StatusCode.FAILED_PRECONDITION),
    (StorageFullError, grpc.StatusCode.RESOURCE_EXHAUSTED),  # the store's disk is full
    (StorageUnavailableError, grpc.StatusCode.UNAVAILABLE),  # another OS write error
    (StoreError, grpc.StatusCode.INVALID_ARGUMENT),  # bad filter, metadata type, k ...
    (QueueFullError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (DeadlineExpiredError, grpc.StatusCode.DEADLINE_EXCEEDED),
    (EncoderStoppedError, grpc.StatusCode.UNAVAILABLE),
    (AtlasError, grpc.StatusCode.INVALID_ARGUMENT),
)

_REASON_BY_CODE = {
    grpc.StatusCode.RESOURCE_EXHAUSTED: "overloaded", grpc.StatusCode.DEADLINE_EXCEEDED: "deadline",
    grpc.StatusCode.UNAVAILABLE: "unavailable", grpc.StatusCode.INVALID_ARGUMENT: "invalid_request",
    grpc.StatusCode.CANCELLED: "cancelled",
}


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """(status code, message for the caller) of an exception."""
    if isinstance(exc, Abort):
        return exc.code, str(exc)
    for kind, code in _STATUS:
        if isinstance(exc, kind):
            return code, str(exc)
    if isinstance(exc, (ValueError, TypeError)):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, CancelledError):
        return grpc.StatusCode.CANCELLED, "cancelled by the client"
    return grpc.StatusCode.INTERNAL, "internal server error (see the server log)"


def reason_of(exc: BaseException) -> str:
    """The machine-readable cause that goes on the wire beside the status code."""
    if isinstance(exc, (Abort, AtlasError)):
        return exc.reason
    return _REASON_BY_CODE.get(status_of(exc)[0], "internal")


def details_of(exc: BaseException) -> dict[str, str]:
    """The figures behind an error (e.g. duration_s, minimum_s), as strings for ErrorInfo."""
    details = getattr(exc, "details", None) or {}
    return {str(k): str(v) for k, v in details.items()}


def abort(context, exc: BaseException, rpc: str) -> None:
    """End the call with the status of `exc`, its ErrorInfo in the status details."""
    code, message = status_of(exc)
    if code == grpc.StatusCode.INTERNAL:
        log.error("%s failed: %s", rpc, type(exc).__name__, exc_info=log.isEnabledFor(logging.DEBUG))
    else:
        log.debug("%s refused: %s", rpc, message)
    info = error_details_pb2.ErrorInfo(reason=reason_of(exc), domain=DOMAIN, metadata=details_of(exc))
    detail = any_pb2.Any()
    detail.Pack(info)
    context.abort_with_status(rpc_status.to_status(
        status_pb2.Status(code=code.value[0], message=message, details=[detail])))


@contextmanager
def guarded(context, rpc: str):
    """Every exception inside becomes the status the caller can act on (``abort``)."""
    try:
        yield
    except Exception as exc:  # every error becomes a status the caller can act on
        abort(context, exc, rpc)
