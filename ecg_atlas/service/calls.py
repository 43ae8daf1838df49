"""What every Atlas method does around its own work: the ready check, lenient request parsing,
error mapping (``errors.guarded``), the call's total time, and the caller's deadline."""

from __future__ import annotations

import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from functools import wraps

import grpc

from . import handlers
from .errors import Abort, guarded

LOADING = Abort(grpc.StatusCode.UNAVAILABLE, "the server is loading its model; retry shortly (health reports "
                "SERVING when it is ready)", reason="loading")


def _checked(service, request) -> None:
    if not service.ready.is_set():
        raise LOADING
    if isinstance(request, handlers.Unparsable):
        raise Abort(grpc.StatusCode.INVALID_ARGUMENT, request.describe(), reason="malformed_request")


def rpc(method):
    """A unary-response Atlas method ``method(self, request, context, started) -> response``."""

    @wraps(method)
    def handler(self, request, context):
        started = time.perf_counter()
        with guarded(context, method.__name__):
            _checked(self, request)
            response = method(self, request, context, started)
        response.timing.total_ms = 1000 * (time.perf_counter() - started)
        return response

    return handler


def stream_rpc(method):
    """`rpc` for server-streaming methods: `method` yields the response messages."""

    @wraps(method)
    def handler(self, request, context):
        started = time.perf_counter()
        with guarded(context, method.__name__):
            _checked(self, request)
            yield from method(self, request, context, started)

    return handler


def remaining(context) -> float | None:
    """Seconds left before the caller's deadline; None without one (gRPC reports a huge number)."""
    left = context.time_remaining()
    return None if left is None or left > 1e7 else max(left, 0.0)


def deadline(context) -> float | None:
    """The caller's deadline on the ``time.monotonic`` clock, or None."""
    left = remaining(context)
    return None if left is None else time.monotonic() + left


def wait(future: Future, context, what: str = "the encoder worked"):
    """The future's result, given up (and cancelled) at the caller's deadline or cancellation."""
    context.add_callback(future.cancel)
    try:
        return future.result(timeout=remaining(context))
    except FutureTimeout:
        future.cancel()
        raise Abort(grpc.StatusCode.DEADLINE_EXCEEDED, f"the deadline passed while {what}", reason="deadline") from None


def ms_since(t: float) -> float:
    return 1000 * (time.perf_counter() - t)
