"""Bearer-token roles for the gRPC service: ``read`` (Embed, Search, Get, Info, Predict, Explain) and
``write`` (also Ingest, Delete, UpdateMetadata, TrainProbe, Cluster, Import). Every Atlas method must be
listed in ``METHOD_ROLES`` (a test checks it against the proto); one that is not is refused.

The token arrives as ``authorization: Bearer TOKEN`` metadata and is compared in constant time
against every configured token. Health checking and reflection stay open: load balancers probe
health without secrets, and reflection only describes the public wire contract.
"""

from __future__ import annotations

import hmac
import logging

import grpc

log = logging.getLogger(__name__)

SERVICE = "/ecg_atlas.v1.Atlas/"
#: The role each Atlas method needs; methods of other services (health, reflection) need none.
METHOD_ROLES = {
    "Embed": "read", "Search": "read", "Get": "read", "Info": "read",
    "Ingest": "write", "Delete": "write", "UpdateMetadata": "write",
    "Predict": "read", "Explain": "read", "TrainProbe": "write", "Cluster": "write",
    "GetSignal": "read", "ListProbes": "read", "EvaluateProbe": "read", "Export": "read",
    "ListClusterRuns": "read", "GetClusterRun": "read", "SuggestIds": "read",
    "Import": "write",
}
_RANK = {"read": 1, "write": 2}


def role_of(token: str, tokens: dict[str, str]) -> str | None:
    """The role of ``token``, comparing against every configured token in constant time."""
    found = None
    given = token.encode()
    for known, role in tokens.items():
        if hmac.compare_digest(given, known.encode()) and (found is None or _RANK[role] > _RANK[found]):
            found = role
    return found


def bearer_token(metadata) -> str | None:
    for key, value in metadata or ():
        if key == "authorization":
            scheme, _, token = str(value).partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


class TokenAuthInterceptor(grpc.ServerInterceptor):
    def __init__(self, tokens: dict[str, str]):
        self._tokens = dict(tokens)

    def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        if not method.startswith(SERVICE):
            return continuation(handler_call_details)
        needed = METHOD_ROLES.get(method[len(SERVICE):])
        token = bearer_token(handler_call_details.invocation_metadata)
        if token is None:
            return _denied(continuation(handler_call_details), grpc.StatusCode.UNAUTHENTICATED,
                           "missing bearer token: send metadata 'authorization: Bearer <token>'")
        role = role_of(token, self._tokens)
        if role is None:
            return _denied(continuation(handler_call_details), grpc.StatusCode.UNAUTHENTICATED,
                           "unknown bearer token")
        if needed is None:  # fail closed: an Atlas method nobody gave a role is refused
            return _denied(continuation(handler_call_details), grpc.StatusCode.PERMISSION_DENIED,
                           f"{method[len(SERVICE):]} is not an Atlas method this server grants")
        if _RANK[role] < _RANK[needed]:
            log.info("refused %s for a %s token", method, role)
            return _denied(continuation(handler_call_details), grpc.StatusCode.PERMISSION_DENIED,
                           f"{method[len(SERVICE):]} needs a {needed} token; this token has the {role} role")
        return continuation(handler_call_details)


def _denied(handler: grpc.RpcMethodHandler | None, code: grpc.StatusCode, message: str):
    """A handler of the same shape as ``handler`` that fails with ``code``."""

    def abort(_request, context):
        context.abort(code, message)

    if handler is None:
        return None
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort)
    return grpc.unary_unary_rpc_method_handler(abort)
