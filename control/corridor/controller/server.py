"""The controller's gRPC server: corridor.v1.Controller with health and reflection, served
the one way Corridor serves gRPC (`corridor.common.serving`).

Two methods are registered with pass-through codecs: Apply hands its request's bytes to the
Rust reader as they came (no protobuf object of a million routes on the event loop, nor its
re-serialization), and Watch sends the bytes the api encoded once for every watcher. Clients
see the same methods and types as the generated code declares.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
from google.protobuf import message_factory

from corridor.common.config import Listen, TlsFiles
from corridor.common.serving import GrpcServer, StartError, bind, start
from corridor.controller.api import ControllerService
from corridor.controller.core import Controller
from corridor.v1 import controller_pb2

__all__ = ["ControllerServer", "StartError", "bind_server", "start_server"]

_SERVICE = controller_pb2.DESCRIPTOR.services_by_name["Controller"]
SERVICE_NAME = _SERVICE.full_name
RAW_REQUESTS = frozenset({"Apply"})  # the servicer takes the serialized request (bytes)
RAW_RESPONSES = frozenset({"Watch"})  # the servicer yields serialized responses (bytes)

ControllerServer = GrpcServer


def method_handlers(service: ControllerService) -> dict[str, grpc.RpcMethodHandler]:
    """corridor.v1.Controller's handlers, from its descriptor: every method with its
    protobuf codecs but for RAW_REQUESTS' requests and RAW_RESPONSES' responses."""
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in _SERVICE.methods:
        name = method.name
        request = message_factory.GetMessageClass(method.input_type)
        response = message_factory.GetMessageClass(method.output_type)
        deserializer = None if name in RAW_REQUESTS else request.FromString
        serializer = None if name in RAW_RESPONSES else response.SerializeToString
        if method.client_streaming:
            raise AssertionError(f"{name}: no client-streaming method is served here")
        make: Callable[..., grpc.RpcMethodHandler] = (
            grpc.unary_stream_rpc_method_handler
            if method.server_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        handlers[name] = make(
            getattr(service, name),
            request_deserializer=deserializer,
            response_serializer=serializer,
        )
    return handlers


def _add_service(service: ControllerService, server: grpc.aio.Server) -> None:
    handlers = method_handlers(service)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


async def start_server(
    controller: Controller, listen: Listen, tls: TlsFiles | None = None
) -> GrpcServer:
    """Binds every listener of `listen` and starts serving; raises StartError."""
    service = ControllerService(controller)
    return await start(lambda server: _add_service(service, server), SERVICE_NAME, listen, tls)


async def bind_server(
    controller: Controller, listen: Listen, tls: TlsFiles | None = None
) -> GrpcServer:
    """Binds every listener of `listen`, not answering until `serve()`; raises StartError."""
    service = ControllerService(controller)
    return await bind(lambda server: _add_service(service, server), SERVICE_NAME, listen, tls)
