"""SIGHUP on the real processes: the daemon keeps serving, applies what a reload can (the log,
TLS files, the election's lists, the drift interval, nodes), says what waits for a restart,
and keeps its running configuration whole when the new file is refused."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from controller_support import agent_document as local_agent_document
from controller_support import toml
from corridor.agent import client as c
from corridor.v1 import controller_pb2, controller_pb2_grpc, dataplane_pb2_grpc
from daemon_support import Daemon
from pki_support import Pki, make_ca, make_leaf
from test_logs import TEXT_LINE

pytestmark = pytest.mark.slow  # processes started and signalled

RELOADED = r"INFO corridor\.reload: reloaded "


async def serving(target: str, credentials: grpc.ChannelCredentials | None = None) -> int:
    """The health status at `target` (SERVING is 1); raises AioRpcError when unreachable."""
    if credentials is None:
        channel = grpc.aio.insecure_channel(target)
    else:
        channel = grpc.aio.secure_channel(target, credentials)
    async with channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
    return int(reply.status)


async def hangup(daemon: Daemon, expect: str) -> str:
    """SIGHUP, then the line that says how the reload went."""
    after = len(daemon.lines)
    daemon.signal(signal.SIGHUP)
    return await daemon.wait_for(expect, after=after)


def agent_document(tmp: Path, **more: object) -> dict:
    return {
        "workers": 1,
        "listen": {"unix": str(tmp / "agent.sock")},
        "fib": {"v4_routes": 1000, "v6_routes": 1000, "groups": 64, "adjacencies": 64},
        **more,
    }


async def test_the_agent_reloads_keeps_serving_and_keeps_its_config_on_a_bad_file(
    tmp_path: Path,
) -> None:
    config = tmp_path / "agent.toml"
    document = agent_document(tmp_path)
    config.write_text(toml(document))
    agent = await Daemon("agent", "--config", str(config)).start()
    target = f"unix:{tmp_path / 'agent.sock'}"
    try:
        await agent.wait_for("serving corridor.v1.Dataplane")
        line = await hangup(agent, RELOADED)
        assert line.endswith("nothing that a reload applies has changed"), line
        icmp = {"source_rate": 5, "sources": 8192}  # rates apply; the table's size waits
        changed = {**document, "log": {"level": "debug"}, "icmp": icmp}
        changed["election"] = {"admins": ["noc.example.net"]}
        config.write_text(toml(changed))
        after = len(agent.lines)
        line = await hangup(agent, RELOADED)
        assert "election" in line and "icmp" in line and "log.level debug" in line, line
        warning = await agent.wait_for("in force only after a restart", after=after)
        assert warning.endswith(": icmp.sources"), warning
        # Refused: a bad value, and a file that is not TOML. Nothing of either is applied.
        for bad, problem in (
            (toml({**changed, "log": {"level": "info"}, "workers": 0}), "workers: 0 is not"),
            ("workers = ", "not valid TOML"),
        ):
            config.write_text(bad)
            after = len(agent.lines)
            await hangup(agent, f"ERROR corridor.reload: reload refused: .*{problem}")
            await agent.wait_for("the running configuration of the agent stays", after=after)
        # What runs is still `changed` (the level stayed debug): reloading it changes nothing.
        config.write_text(toml(changed))
        line = await hangup(agent, RELOADED)
        assert line.endswith("nothing that a reload applies has changed"), line
        # A burst of SIGHUPs (logrotate on many files) neither stops nor stacks reloads.
        for _ in range(5):
            agent.signal(signal.SIGHUP)
        assert await serving(target) == health_pb2.HealthCheckResponse.SERVING
        async with grpc.aio.insecure_channel(target) as channel:
            stub = dataplane_pb2_grpc.DataplaneStub(channel)
            request = c.write_request(1 << 64, [c.set_route("198.18.0.0/15", "blackhole")])
            assert (await stub.Write(request, timeout=10)).generation == 1
    finally:
        assert await agent.stop() == 0
    assert not (tmp_path / "agent.sock").exists(), "the socket outlived the agent"
    assert not [line for line in agent.lines if "Traceback" in line], agent.lines


def server_leaf(name: str, ca: str, directory: Path) -> None:
    leaf = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
    san = "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
    make_leaf(name, ca, leaf + san, directory)


async def test_the_agent_takes_new_tls_files_for_new_connections(tmp_path: Path, pki: Pki) -> None:
    """The certificate is renewed under the same path (by another CA, to tell them apart):
    after SIGHUP a client that trusts only the new CA connects; a key that does not match is
    refused and the certificate in force stays."""
    make_ca("renewed-ca", tmp_path)
    server_leaf("renewed", "renewed-ca", tmp_path)
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    cert.write_bytes(pki.pem("server.pem"))
    key.write_bytes(pki.pem("server.key"))
    port = _free_port()
    config = tmp_path / "agent.toml"
    tls = {"cert": str(cert), "key": str(key), "client_ca": str(pki.dir / "ca.pem")}
    document = agent_document(tmp_path, tls=tls)
    document["listen"]["tcp"] = f"127.0.0.1:{port}"
    config.write_text(toml(document))
    target = f"127.0.0.1:{port}"

    def trusting(ca: bytes) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(ca, pki.pem("client.key"), pki.pem("client.pem"))

    old, new = trusting(pki.pem("ca.pem")), trusting((tmp_path / "renewed-ca.pem").read_bytes())
    agent = await Daemon("agent", "--config", str(config)).start()
    try:
        await agent.wait_for("serving corridor.v1.Dataplane")
        assert await serving(target, old) == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError):
            await serving(target, new)
        cert.write_bytes((tmp_path / "renewed.pem").read_bytes())  # the key does not match yet
        await hangup(agent, r"reload refused: tls\.key: .* is not the key of tls\.cert")
        assert await serving(target, old) == health_pb2.HealthCheckResponse.SERVING
        key.write_bytes((tmp_path / "renewed.key").read_bytes())
        line = await hangup(agent, RELOADED)
        assert "tls: " in line and "read again" in line, line
        assert await serving(target, new) == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError):
            await serving(target, old)
        # A client whose certificate the agent refuses: gRPC's core says nothing on stderr
        # by default (it would in its own format); every line stays in the log's shape.
        stranger = grpc.ssl_channel_credentials(
            (tmp_path / "renewed-ca.pem").read_bytes(),
            pki.pem("stranger.key"),
            pki.pem("stranger.pem"),
        )
        with pytest.raises(grpc.aio.AioRpcError):
            await serving(target, stranger)
    finally:
        assert await agent.stop() == 0
    for line in agent.lines:
        assert TEXT_LINE.match(line), line


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_the_controller_registers_new_nodes_and_changes_the_drift_interval(
    tmp_path: Path,
) -> None:
    config = tmp_path / "controller.toml"
    document = {
        "listen": {"unix": str(tmp_path / "controller.sock")},
        "store": {"path": str(tmp_path / "intent.db")},
        "reconcile": {"drift_check_seconds": 10},
        "nodes": [{"name": "a", "address": "unix:/nonexistent/a.sock"}],
    }
    config.write_text(toml(document))
    controller = await Daemon("controller", "--config", str(config)).start()
    try:
        await controller.wait_for("serving corridor.v1.Controller")
        changed = {
            **document,
            "reconcile": {"drift_check_seconds": 2},
            "store": {"path": str(tmp_path / "other.db")},
            "nodes": [{"name": "b", "address": "unix:/nonexistent/b.sock"}],
        }
        config.write_text(toml(changed))
        after = len(controller.lines)
        line = await hangup(controller, RELOADED)
        assert "reconcile.drift_check_seconds 2" in line and "node b registered" in line, line
        warning = await controller.wait_for("in force only after a restart", after=after)
        assert warning.endswith(": store"), warning
        await controller.wait_for("no longer in the file but still registered, .*: a", after=after)
        async with grpc.aio.insecure_channel(f"unix:{tmp_path / 'controller.sock'}") as channel:
            stub = controller_pb2_grpc.ControllerStub(channel)
            nodes = await stub.ListNodes(controller_pb2.ListNodesRequest(), timeout=10)
            assert sorted(n.node.name for n in nodes.nodes) == ["a", "b"]
            config.write_text(toml({**changed, "nodes": [{"name": "c", "address": "nowhere"}]}))
            await hangup(controller, r"reload refused: .*nodes\[0\]\.address")
            nodes = await stub.ListNodes(controller_pb2.ListNodesRequest(), timeout=10)
            assert sorted(n.node.name for n in nodes.nodes) == ["a", "b"]
        assert not (tmp_path / "other.db").exists()
    finally:
        assert await controller.stop() == 0


async def test_up_reloads_both_halves(tmp_path: Path) -> None:
    config = tmp_path / "up.toml"
    agent = local_agent_document(tmp_path / "agent.sock")
    del agent["ports"]  # the FIB alone: no engine
    document = {
        "listen": {"unix": str(tmp_path / "controller.sock")},
        "store": {"path": str(tmp_path / "intent.db")},
        "agent": agent,
    }
    config.write_text(toml(document))
    up = await Daemon("up", "--config", str(config)).start()
    try:
        await up.wait_for("serving corridor.v1.Controller")
        changed = {**document, "log": {"format": "json"}, "agent": {**agent, "workers": 2}}
        changed["reconcile"] = {"drift_check_seconds": 3}
        config.write_text(toml(changed))
        after = len(up.lines)
        line = await hangup(up, "reloaded ")
        assert "drift_check_seconds 3" in line and "log.format json" in line, line
        await up.wait_for(r"in force only after a restart: agent\.workers", after=after)
        for sock in ("controller.sock", "agent.sock"):
            assert await serving(f"unix:{tmp_path / sock}") == 1
    finally:
        assert await up.stop() == 0


class Notifications:
    """A socket standing in for systemd's NOTIFY_SOCKET: the daemon's datagrams, in order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.received: list[dict[str, str]] = []

    def until(self, key: str, within: float = 30.0) -> dict[str, str]:
        """The next message that holds `key`, in `within` seconds."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                time.sleep(0.02)
                continue
            message = dict(line.split("=", 1) for line in data.decode().splitlines())
            self.received.append(message)
            if key in message:
                return message
        raise AssertionError(f"no {key} from the daemon in {within} s: {self.received}")


@pytest.mark.parametrize("command", ["agent", "controller"])
async def test_systemd_hears_ready_reloading_and_stopping(tmp_path: Path, command: str) -> None:
    """With Type=notify (deploy/systemd), `systemctl start` returns at READY=1 and `systemctl
    reload` at the READY=1 after RELOADING=1."""
    config = tmp_path / f"{command}.toml"
    if command == "agent":
        config.write_text(toml(agent_document(tmp_path)))
    else:
        document = {
            "listen": {"unix": str(tmp_path / "controller.sock")},
            "store": {"path": str(tmp_path / "intent.db")},
        }
        config.write_text(toml(document))
    notifications = Notifications(tmp_path / "notify")
    env = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "notify"))
    daemon = await Daemon(command, "--config", str(config), env=env).start()
    try:
        ready = notifications.until("READY")
        assert ready["READY"] == "1" and ready["STATUS"].startswith("serving corridor.v1.")
        sock = tmp_path / f"{command}.sock"
        assert await serving(f"unix:{sock}") == 1  # ready means serving
        daemon.signal(signal.SIGHUP)
        reloading = notifications.until("RELOADING")
        assert int(reloading["MONOTONIC_USEC"]) <= time.monotonic_ns() // 1000
        assert notifications.until("READY")["STATUS"] == "serving; reloaded"
    finally:
        assert await daemon.stop() == 0
    try:
        assert notifications.until("STOPPING", within=5)["STOPPING"] == "1"
    finally:
        notifications.sock.close()


async def test_a_sighup_while_starting_is_answered_once_serving(tmp_path: Path) -> None:
    """A SIGHUP between the process's start and the reload handler's install (the daemon
    loading, binding, starting the engine) is neither fatal nor lost: the reload runs once
    the handler is in place. Without one, installing reloads nothing."""
    from corridor.common.reload import Hangup, Reloaded, defer_hangups

    applied = asyncio.Event()

    async def apply(config: str) -> Reloaded:
        applied.set()
        return Reloaded(applied=[config])

    previous = signal.getsignal(signal.SIGHUP)
    loop = asyncio.get_running_loop()
    try:
        for sent in (True, False):
            applied.clear()
            defer_hangups()
            if sent:
                os.kill(os.getpid(), signal.SIGHUP)
                await asyncio.sleep(0.05)  # the signal handled, while "starting"
            hangup = Hangup("the test daemon", str(tmp_path / "x.toml"), str, apply)
            hangup.install()
            if sent:
                await asyncio.wait_for(applied.wait(), 10)
            await asyncio.sleep(0.1)  # no reload that was not asked for
            assert hangup.reloads == (1 if sent else 0), sent
            loop.remove_signal_handler(signal.SIGHUP)
    finally:
        signal.signal(signal.SIGHUP, previous)
