"""How the Atlas methods and server reflection are registered with a gRPC server.

* **Request bytes that do not parse** (garbage, truncated messages, a filter nested deeper than
  protobuf's recursion limit) would make grpcio log a traceback and answer INTERNAL. Here every
  Atlas method parses its request leniently: a message that does not parse reaches the method as
  an ``Unparsable`` value, which it answers INVALID_ARGUMENT (reason ``malformed_request``) — or,
  inside an Ingest stream, reports as that item's error.
* **Reflection** is served as ``grpc.reflection.v1`` (what grpcurl, Postman and Kreya ask for
  today) and as the older ``grpc.reflection.v1alpha``. grpcio-reflection ships only v1alpha; the
  two protocols are the same messages under another package name (same field numbers), so the
  v1alpha servicer answers both.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"

_MAKE = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


@dataclass(frozen=True)
class Unparsable:
    """A request message whose bytes did not parse as `message_type`."""

    message_type: str
    problem: str

    def describe(self) -> str:
        return (f"the request bytes do not parse as {self.message_type} ({self.problem}); send a "
                f"well-formed message (filters nest at most 32 levels)")


def _lenient(message_class):
    def parse(data: bytes):
        try:
            return message_class.FromString(data)
        except Exception as exc:  # protobuf raises DecodeError, RecursionError...
            return Unparsable(message_class.DESCRIPTOR.full_name, type(exc).__name__)

    return parse


def add_service(servicer, service_descriptor, messages_module, server: grpc.Server) -> None:
    """Register every method of `service_descriptor` on `server`, parsing requests leniently."""
    handlers = {}
    for method in service_descriptor.methods:
        request_class = getattr(messages_module, method.input_type.name)
        response_class = getattr(messages_module, method.output_type.name)
        make = _MAKE[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = make(getattr(servicer, method.name), request_deserializer=_lenient(request_class),
                                     response_serializer=response_class.SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service_descriptor.full_name, handlers),))


def add_reflection(service_names, server: grpc.Server) -> None:
    """Server reflection under both v1 and v1alpha, listing `service_names` and both reflections."""
    names = (*service_names, REFLECTION_V1, reflection.SERVICE_NAME)
    servicer = reflection.ReflectionServicer(names)
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString)
    server.add_generic_rpc_handlers(tuple(
        grpc.method_handlers_generic_handler(name, {"ServerReflectionInfo": handler})
        for name in (REFLECTION_V1, reflection.SERVICE_NAME)))
