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
import ssl
import stat
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.protobuf import descriptor, message_factory
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from corridor.common.config import ConfigError, Listen, TlsFiles
from corridor.common.paths import obstacle

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
    service_name: str = ""
    made: tuple[Path, ...] = ()  # directories made for the socket, deepest first
    tls: ServerTls | None = None  # the TCP listener's certificates, when it has TLS

    def reload_tls(self, tls: TlsFiles, where: str = "") -> None:
        """Blocking (reads files): new connections present the certificate and trust the
        client CA of `tls` from now on; connections made before keep theirs. Raises
        ConfigError, changing nothing, when the files do not fit together."""
        assert self.tls is not None, "a listener without TLS gets TLS only by a restart"
        problems = _tls_problems(tls, where)
        if problems:
            raise ConfigError(*problems)
        try:
            pem = _read_pem(tls)
        except StartError as e:  # gone since the check
            raise ConfigError(f"{where}{e}") from None
        self.tls.replace(pem)

    async def serve(self) -> None:
        """Starts answering on the bound listeners."""
        await self.server.start()
        for name in ("", self.service_name):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float = 5.0) -> None:
        """Tells health watchers, finishes calls in flight for up to `grace` seconds, and
        removes the socket file."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        if self.unix_path is not None:
            _remove_socket_file(self.unix_path)

    async def unbind(self) -> None:
        """Undoes a bind that is not to serve after all: closes the listeners and removes
        the socket file and the directories made for it, leaving the disk as it was."""
        await self.server.stop(None)
        if self.unix_path is not None:
            _remove_socket_file(self.unix_path)
        _remove_made(self.made)


def method_handlers(
    service: descriptor.ServiceDescriptor,
    servicer: object,
    raw_requests: Collection[str] = (),
    raw_responses: Collection[str] = (),
) -> dict[str, grpc.RpcMethodHandler]:
    """The handlers of every method of `service` on `servicer`, from its descriptor, with
    their protobuf codecs but for `raw_requests`' requests (the servicer takes the bytes as
    they came) and `raw_responses`' responses (it gives serialized bytes). Clients see the
    methods and types the generated code declares."""
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in service.methods:
        name = method.name
        request = message_factory.GetMessageClass(method.input_type)
        response = message_factory.GetMessageClass(method.output_type)
        make: Callable[..., grpc.RpcMethodHandler] = {
            (False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler,
        }[(method.client_streaming, method.server_streaming)]
        handlers[name] = make(
            getattr(servicer, name),
            request_deserializer=None if name in raw_requests else request.FromString,
            response_serializer=None if name in raw_responses else response.SerializeToString,
        )
    return handlers


def add_service(
    server: grpc.aio.Server, name: str, handlers: dict[str, grpc.RpcMethodHandler]
) -> None:
    """Registers `handlers` as the service called `name` (its full name)."""
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
    server.add_registered_method_handlers(name, handlers)


def check(listen: Listen, tls: TlsFiles | None, where: str = "") -> list[str]:
    """What would stop `start` for reasons of its configuration, found without changing
    anything: a socket path too long, in the way or in a directory that cannot be made; TLS
    files unreadable, not PEM, a key that is not the certificate's. One problem a line,
    naming its field (under `where`, such as "agent.")."""
    problems = []
    if listen.unix is not None:
        path = listen.unix.absolute()
        if (problem := _socket_path_problem(path)) is not None:
            problems.append(f"{where}listen.unix: {problem}")
    if tls is not None:
        problems += _tls_problems(tls, where)
    return problems


async def start(
    add_service: Callable[[grpc.aio.Server], None],
    service_name: str,
    listen: Listen,
    tls: TlsFiles | None = None,
) -> GrpcServer:
    """Serves what `add_service` registers, as `service_name`, on every listener of
    `listen`; raises StartError."""
    server = await bind(add_service, service_name, listen, tls)
    try:
        await server.serve()
    except BaseException:
        await server.unbind()
        raise
    return server


async def bind(
    add_service: Callable[[grpc.aio.Server], None],
    service_name: str,
    listen: Listen,
    tls: TlsFiles | None = None,
) -> GrpcServer:
    """Binds every listener of `listen` for what `add_service` registers, without answering
    yet (`serve` does); raises StartError, leaving nothing made on disk."""
    problems = check(listen, tls)
    if problems:
        raise StartError(problems[0])
    loop = asyncio.get_running_loop()
    server = grpc.aio.server(options=SERVER_OPTIONS)
    add_service(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (service_name, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    bound = GrpcServer(server, None, None, health_servicer, service_name=service_name)
    try:
        if listen.unix is not None:
            unix_path = listen.unix.absolute()
            bound.made = await loop.run_in_executor(None, _claim_socket_path, unix_path)
            _bind(server.add_insecure_port, f"unix:{unix_path}", f"unix socket {unix_path}")
            bound.unix_path = unix_path
            os.chmod(unix_path, UNIX_SOCKET_MODE)
        if listen.tcp is not None:
            address = str(listen.tcp)
            if tls is None:
                bound.port = _bind(server.add_insecure_port, address, f"TCP {address}")
            else:
                bound.tls = await loop.run_in_executor(None, ServerTls, tls)
                credentials = bound.tls.credentials
                bound.port = _bind(
                    lambda a: server.add_secure_port(a, credentials), address, f"TCP {address}"
                )
    except BaseException:
        await bound.unbind()
        raise
    return bound


def _bind(add_port: Callable[[str], int], address: str, what: str) -> int:
    try:
        port: int = add_port(address)
    except RuntimeError as e:
        raise StartError(f"cannot listen on {what}: {e}") from None
    if port == 0 and not address.endswith(":0"):
        raise StartError(f"cannot listen on {what}: in use, or not an address of this host")
    return port


class ServerTls:
    """A TLS listener's credentials that a reload can change: gRPC asks `_fetch` before each
    handshake (on a thread of its own) and takes a configuration when one is waiting."""

    def __init__(self, tls: TlsFiles) -> None:
        self._lock = threading.Lock()
        self._waiting: grpc.ServerCertificateConfiguration | None = None
        # Clients must present a certificate signed by client_ca: no certificate, no call.
        self.credentials = grpc.dynamic_ssl_server_credentials(
            _configuration(_read_pem(tls)), self._fetch, require_client_authentication=True
        )

    def replace(self, pem: dict[str, bytes]) -> None:
        with self._lock:
            self._waiting = _configuration(pem)

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            waiting, self._waiting = self._waiting, None
        return waiting


def _read_pem(tls: TlsFiles) -> dict[str, bytes]:
    pem = {}
    for name in ("cert", "key", "client_ca"):
        path = getattr(tls, name)
        try:
            pem[name] = path.read_bytes()
        except OSError as e:
            raise StartError(f"tls.{name}: cannot read {path}: {e.strerror}") from None
    return pem


def _configuration(pem: dict[str, bytes]) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(pem["key"], pem["cert"])], root_certificates=pem["client_ca"]
    )


def tls_problems(tls: TlsFiles, where: str = "") -> list[str]:
    """What would keep the TLS files from serving (see `_tls_problems`)."""
    return _tls_problems(tls, where)


def _tls_problems(tls: TlsFiles, where: str) -> list[str]:
    """The TLS files as gRPC will need them, read by OpenSSL (which gRPC uses too): gRPC
    itself only says "Failed to bind" when they do not fit together."""
    problems = []
    readable = {}
    for name in ("cert", "key", "client_ca"):
        path = getattr(tls, name)
        try:
            readable[name] = b"-----BEGIN " in path.read_bytes()
        except OSError as e:
            problems.append(f"{where}tls.{name}: cannot read {path}: {e.strerror}")
            continue
        if not readable[name]:
            problems.append(f"{where}tls.{name}: {path} is not a PEM file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if readable.get("cert"):
        try:
            context.load_verify_locations(cafile=tls.cert)
        except ssl.SSLError:
            problems.append(f"{where}tls.cert: {tls.cert} holds no certificate")
        else:
            if readable.get("key"):
                try:
                    context.load_cert_chain(tls.cert, tls.key, password=lambda: b"")
                except ssl.SSLError as e:
                    if e.reason == "KEY_VALUES_MISMATCH":
                        problems.append(
                            f"{where}tls.key: {tls.key} is not the key of {where}tls.cert "
                            f"{tls.cert}"
                        )
                    else:
                        problems.append(
                            f"{where}tls.key: {tls.key} holds no private key that can be "
                            "read (an unencrypted PEM key is needed)"
                        )
    if readable.get("client_ca"):
        try:
            context.load_verify_locations(cafile=tls.client_ca)
        except ssl.SSLError:
            problems.append(f"{where}tls.client_ca: {tls.client_ca} holds no certificate")
    return problems


def _socket_path_problem(path: Path) -> str | None:
    """What keeps a socket from being made at `path`, short of another server on it."""
    if len(os.fsencode(path)) > UNIX_PATH_MAX:
        return f"{path} is longer than {UNIX_PATH_MAX} bytes"
    found = obstacle(path.parent)
    if found is not None:
        place, why = found
        if place == path.parent:
            return f"cannot create {path}: {place} {why}"
        return f"cannot make {path.parent}: {place} {why}"
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"cannot use {path}: {e.strerror}"
    if not stat.S_ISSOCK(mode):
        return f"{path} exists and is not a socket; not replacing it"
    return None


def _claim_socket_path(path: Path) -> tuple[Path, ...]:
    """Makes `path` free for a new socket: a socket file that nobody listens on (left by a
    killed agent) is removed; one that answers, or a file that is not a socket, is kept.
    Returns the directories it made, deepest first."""
    made = []
    directory = path.parent
    while not directory.exists():
        made.append(directory)
        directory = directory.parent
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return tuple(made)
    if not stat.S_ISSOCK(mode):
        _remove_made(tuple(made))
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
    return tuple(made)


def _remove_made(directories: tuple[Path, ...]) -> None:
    for directory in directories:
        try:
            directory.rmdir()
        except OSError:
            return  # not empty any more: someone else's now


def _remove_socket_file(path: Path) -> None:
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            path.unlink()
    except FileNotFoundError:
        pass
