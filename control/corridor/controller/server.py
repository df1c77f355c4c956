"""The controller's gRPC server: corridor.v1.Controller with health and reflection, served
the one way Corridor serves gRPC (`corridor.common.serving`).

Two methods are registered with pass-through codecs: Apply hands its request's bytes to the
Rust reader as they came (no protobuf object of a million routes on the event loop, nor its
re-serialization), and Watch sends the bytes the api encoded once for every watcher. Clients
see the same methods and types as the generated code declares.
"""

from __future__ import annotations

import grpc

from corridor.common.config import Listen, TlsFiles
from corridor.common.serving import (
    GrpcServer,
    StartError,
    add_service,
    bind,
    method_handlers,
    start,
)
from corridor.controller.api import ControllerService
from corridor.controller.core import Controller
from corridor.v1 import controller_pb2

__all__ = ["ControllerServer", "StartError", "bind_server", "start_server"]

_SERVICE = controller_pb2.DESCRIPTOR.services_by_name["Controller"]
SERVICE_NAME = _SERVICE.full_name
RAW_REQUESTS = frozenset({"Apply"})  # the servicer takes the serialized request (bytes)
RAW_RESPONSES = frozenset({"Watch"})  # the servicer yields serialized responses (bytes)

ControllerServer = GrpcServer


def _add_service(service: ControllerService, server: grpc.aio.Server) -> None:
    handlers = method_handlers(_SERVICE, service, RAW_REQUESTS, RAW_RESPONSES)
    add_service(server, SERVICE_NAME, handlers)


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
