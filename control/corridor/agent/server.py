"""The agent's gRPC server: corridor.v1.Dataplane with health and reflection, served the
one way Corridor serves gRPC (`corridor.common.serving`).

Write and StreamWrite take their requests' bytes as they came (RAW_REQUESTS): a batch of
routes goes from them to the engine in Rust, without a protobuf object per route.
"""

from __future__ import annotations

from corridor.agent.api import DataplaneService
from corridor.agent.domain import Dataplane
from corridor.common.config import Listen, TlsFiles
from corridor.common.serving import GrpcServer, StartError, add_service, method_handlers, start
from corridor.v1 import dataplane_pb2

__all__ = ["AgentServer", "StartError", "start_server"]

_SERVICE = dataplane_pb2.DESCRIPTOR.services_by_name["Dataplane"]
SERVICE_NAME = _SERVICE.full_name
RAW_REQUESTS = frozenset({"Write", "StreamWrite"})  # the servicer takes the request's bytes

AgentServer = GrpcServer


async def start_server(
    dataplane: Dataplane, listen: Listen, tls: TlsFiles | None = None
) -> GrpcServer:
    """Binds every listener of `listen` and starts serving; raises StartError."""
    service = DataplaneService(dataplane)
    return await start(
        lambda server: add_service(
            server, SERVICE_NAME, method_handlers(_SERVICE, service, RAW_REQUESTS)
        ),
        SERVICE_NAME,
        listen,
        tls,
    )
