"""Serving gRPC in Corridor, one way for every server: a value that start() binds and
starts and stop() drains. Unix socket and/or TCP, mutual TLS on TCP when certificates are
given, gRPC health checking and server reflection beside the service. The agent and the
controller both serve through here.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from corridor.common.config import Listen, TlsFiles

# A 100,000-operation batch is a few MB; leave room for large groups and adjacencies.
MAX_MESSAGE_BYTES = 64 << 20
UNIX_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1
UNIX_SOCKET_MODE = 0o660  # the owner and its group (an operators' group) may connect

SERVER_OPTIONS = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # gRPC sets SO_REUSEPORT by default, which would let a second server bind the same port
    # and take half the connections; one port, one server.
    ("grpc.so_reuseport", 0),
)


class StartError(RuntimeError):
    """The server could not start; the message says which address or file and why."""


@dataclass
class GrpcServer:
    server: grpc.aio.Server
    port: int | None  # the bound TCP port, if listening on TCP
    unix_path: Path | None
    health: health.aio.HealthServicer

    async def stop(self, grace: float = 5.0) -> None:
        """Tells health watchers, finishes calls in flight for up to `grace` seconds, and
        removes the socket file."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        if self.unix_path is not None:
            _remove_socket_file(self.unix_path)


async def start(
    add_service: Callable[[grpc.aio.Server], None],
    service_name: str,
    listen: Listen,
    tls: TlsFiles | None = None,
) -> GrpcServer:
    """Serves what `add_service` registers, as `service_name`, on every listener of
    `listen`; raises StartError."""
    loop = asyncio.get_running_loop()
    server = grpc.aio.server(options=SERVER_OPTIONS)
    add_service(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (service_name, health.SERVICE_NAME, reflection.SERVICE_NAME), server
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
    for name in ("", service_name):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return GrpcServer(server, port, unix_path, health_servicer)


def _bind(add_port: Callable[[str], int], address: str, what: str) -> int:
    try:
        port: int = add_port(address)
    except RuntimeError as e:
        raise StartError(f"cannot listen on {what}: {e}") from None
    if port == 0 and not address.endswith(":0"):
        raise StartError(f"cannot listen on {what}: in use, or not an address of this host")
    return port


def _server_credentials(tls: TlsFiles) -> grpc.ServerCredentials:
    pem = {}
    for name in ("cert", "key", "client_ca"):
        path = getattr(tls, name)
        try:
            pem[name] = path.read_bytes()
        except OSError as e:
            raise StartError(f"tls.{name}: cannot read {path}: {e.strerror}") from None
        if b"-----BEGIN " not in pem[name]:
            raise StartError(f"tls.{name}: {path} is not a PEM file")
    # Clients must present a certificate signed by client_ca: no certificate, no call.
    return grpc.ssl_server_credentials(
        [(pem["key"], pem["cert"])], root_certificates=pem["client_ca"], require_client_auth=True
    )


def _claim_socket_path(path: Path) -> None:
    """Makes `path` free for a new socket: a socket file that nobody listens on (left by a
    killed agent) is removed; one that answers, or a file that is not a socket, is kept."""
    if len(os.fsencode(path)) > UNIX_PATH_MAX:
        raise StartError(f"listen.unix: {path} is longer than {UNIX_PATH_MAX} bytes")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise StartError(f"listen.unix: {path} exists and is not a socket; not replacing it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(os.fspath(path))
    except OSError as e:
        if e.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise StartError(f"listen.unix: cannot probe {path}: {e.strerror}") from None
    else:
        raise StartError(f"listen.unix: {path} is in use by another running server")
    finally:
        probe.close()
    _remove_socket_file(path)


def _remove_socket_file(path: Path) -> None:
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            path.unlink()
    except FileNotFoundError:
        pass
