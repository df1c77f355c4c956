"""The controller's gRPC server as a value: start_server() binds, starts and returns it with
its port; stop() drains it. corridor.v1.Controller, gRPC health checking and server
reflection on a Unix socket and/or TCP, with mutual TLS on TCP when certificates are given.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from corridor.agent.config import Listen, TlsFiles

# The agent's listeners, socket-file handling and TLS: one way to serve gRPC in Corridor.
from corridor.agent.server import (
    SERVER_OPTIONS,
    UNIX_SOCKET_MODE,
    StartError,
    _bind,
    _claim_socket_path,
    _remove_socket_file,
    _server_credentials,
)
from corridor.controller.api import ControllerService
from corridor.controller.core import Controller
from corridor.v1 import controller_pb2, controller_pb2_grpc

__all__ = ["ControllerServer", "StartError", "start_server"]

SERVICE_NAME = controller_pb2.DESCRIPTOR.services_by_name["Controller"].full_name


@dataclass
class ControllerServer:
    server: grpc.aio.Server
    port: int | None
    unix_path: Path | None
    health: health.aio.HealthServicer

    async def stop(self, grace: float = 5.0) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        if self.unix_path is not None:
            _remove_socket_file(self.unix_path)


async def start_server(
    controller: Controller, listen: Listen, tls: TlsFiles | None = None
) -> ControllerServer:
    """Binds every listener of `listen` and starts serving; raises StartError."""
    loop = asyncio.get_running_loop()
    server = grpc.aio.server(options=SERVER_OPTIONS)
    controller_pb2_grpc.add_ControllerServicer_to_server(ControllerService(controller), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    port = None
    unix_path = None
    try:
        if listen.unix is not None:
            unix_path = listen.unix.absolute()
            await loop.run_in_executor(None, _claim_socket_path, unix_path)
            _bind(server.add_insecure_port, f"unix:{unix_path}", f"unix socket {unix_path}")
        if listen.tcp is not None:
            address = str(listen.tcp)
            if tls is None:
                port = _bind(server.add_insecure_port, address, f"TCP {address}")
            else:
                credentials = await loop.run_in_executor(None, _server_credentials, tls)
                port = _bind(
                    lambda a: server.add_secure_port(a, credentials), address, f"TCP {address}"
                )
        await server.start()
    except BaseException:
        await server.stop(None)
        raise
    if unix_path is not None:
        os.chmod(unix_path, UNIX_SOCKET_MODE)
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return ControllerServer(server, port, unix_path, health_servicer)
