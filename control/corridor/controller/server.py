"""The controller's gRPC server: corridor.v1.Controller with health and reflection, served
the one way Corridor serves gRPC (`corridor.common.serving`).
"""

from __future__ import annotations

from corridor.common.config import Listen, TlsFiles
from corridor.common.serving import GrpcServer, StartError, bind, start
from corridor.controller.api import ControllerService
from corridor.controller.core import Controller
from corridor.v1 import controller_pb2, controller_pb2_grpc

__all__ = ["ControllerServer", "StartError", "bind_server", "start_server"]

SERVICE_NAME = controller_pb2.DESCRIPTOR.services_by_name["Controller"].full_name

ControllerServer = GrpcServer


async def start_server(
    controller: Controller, listen: Listen, tls: TlsFiles | None = None
) -> GrpcServer:
    """Binds every listener of `listen` and starts serving; raises StartError."""
    service = ControllerService(controller)
    return await start(
        lambda server: controller_pb2_grpc.add_ControllerServicer_to_server(service, server),
        SERVICE_NAME,
        listen,
        tls,
    )


async def bind_server(
    controller: Controller, listen: Listen, tls: TlsFiles | None = None
) -> GrpcServer:
    """Binds every listener of `listen`, not answering until `serve()`; raises StartError."""
    service = ControllerService(controller)
    return await bind(
        lambda server: controller_pb2_grpc.add_ControllerServicer_to_server(service, server),
        SERVICE_NAME,
        listen,
        tls,
    )
