"""The agent's gRPC server: corridor.v1.Dataplane with health and reflection, served the
one way Corridor serves gRPC (`corridor.common.serving`).
"""

from __future__ import annotations

from corridor.agent.api import DataplaneService
from corridor.agent.domain import Dataplane
from corridor.common.config import Listen, TlsFiles
from corridor.common.serving import GrpcServer, StartError, start
from corridor.v1 import dataplane_pb2, dataplane_pb2_grpc

__all__ = ["AgentServer", "StartError", "start_server"]

SERVICE_NAME = dataplane_pb2.DESCRIPTOR.services_by_name["Dataplane"].full_name

AgentServer = GrpcServer


async def start_server(
    dataplane: Dataplane, listen: Listen, tls: TlsFiles | None = None
) -> GrpcServer:
    """Binds every listener of `listen` and starts serving; raises StartError."""
    service = DataplaneService(dataplane)
    return await start(
        lambda server: dataplane_pb2_grpc.add_DataplaneServicer_to_server(service, server),
        SERVICE_NAME,
        listen,
        tls,
    )
