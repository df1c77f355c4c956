"""Helpers of the controller tests: real agents served in this process, a real controller on
a Unix socket and TCP port 0, channels to both, and waits bounded in time."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import ipaddress
import time
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from corridor.agent import client as agent_client
from corridor.v1 import controller_pb2, controller_pb2_grpc, dataplane_pb2_grpc

PORTS = [
    {"name": "cor-c0", "queues": 1, "addresses": ["198.18.0.1/24"]},
    {"name": "cor-c1", "queues": 1, "addresses": ["198.19.0.1/24"], "vlans": [{"id": 100}]},
]


def agent_document(sock: Path) -> dict:
    return {
        "workers": 1,
        "listen": {"unix": str(sock)},
        "fib": {"v4_routes": 1_200_000, "v6_routes": 200_000, "groups": 1024, "adjacencies": 1024},
        "ports": copy.deepcopy(PORTS),
    }


@dataclass
class LocalAgent:
    """An agent in this process (the engine's FIB behind the real gRPC server)."""

    sock: Path
    server: object = None
    dataplane: object = None
    channel: grpc.aio.Channel | None = None
    stub: object = None

    @property
    def address(self) -> str:
        return f"unix:{self.sock}"

    async def start(self) -> LocalAgent:
        from corridor.agent.config import parse
        from corridor.agent.domain import Dataplane
        from corridor.agent.fib_adapter import EngineFib
        from corridor.agent.server import start_server

        config = parse(agent_document(self.sock))
        self.dataplane = Dataplane(config, EngineFib(config.fib, [p.name for p in config.ports]))
        self.server = await start_server(self.dataplane, config.listen)
        self.channel = grpc.aio.insecure_channel(
            self.address, options=(("grpc.max_receive_message_length", 64 << 20),)
        )
        self.stub = dataplane_pb2_grpc.DataplaneStub(self.channel)
        return self

    async def stop(self) -> None:
        await self.channel.close()
        await self.server.stop(0)

    async def routes(self) -> dict[str, tuple[int, int]]:
        async with asyncio.timeout(60):
            installed = await agent_client.read(self.stub)
        return {
            agent_client.prefix_text(r.prefix): (r.kind, r.next_hop_group_id)
            for r in installed.routes
        }


def toml(document: dict) -> str:
    """Just enough TOML for the test configurations (tables, arrays of tables, scalars)."""

    def value(v):
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + "}"
        return str(v)

    lines = [f"{k} = {value(v)}" for k, v in document.items() if not isinstance(v, dict | list)]
    lines += [
        f"{k} = {value(v)}"
        for k, v in document.items()
        if isinstance(v, list) and v and not isinstance(v[0], dict)
    ]
    for k, v in document.items():
        if isinstance(v, dict):
            lines.append(f"[{k}]")
            lines += [f"{kk} = {value(vv)}" for kk, vv in v.items()]
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            for item in v:
                lines.append(f"[[{k}]]")
                lines += [f"{kk} = {value(vv)}" for kk, vv in item.items()]
    text = "\n".join(lines) + "\n"
    assert tomllib.loads(text) == document
    return text


def controller_document(tmp: Path, nodes: dict[str, str], drift: int = 1) -> dict:
    return {
        "listen": {"unix": str(tmp / "controller.sock"), "tcp": "127.0.0.1:0"},
        "store": {"path": str(tmp / "intent.db")},
        "reconcile": {"drift_check_seconds": drift, "max_groups": 1024, "max_adjacencies": 1024},
        "nodes": [{"name": n, "address": a} for n, a in nodes.items()],
    }


async def start_controller(document: dict, tmp: Path):
    """A controller in this process; with an etcd store, once it leads."""
    from corridor.controller.config import parse
    from corridor.controller.main import start_controller as start

    running = await start(parse(document, base=tmp))
    if running.controller.backend == "etcd":
        deadline = time.monotonic() + 30
        while not running.controller.leading:
            if time.monotonic() > deadline:
                await running.stop(0)
                raise AssertionError("the controller did not take the lead in 30 s")
            await asyncio.sleep(0.02)
    return running


def controller_stub(sock: Path) -> tuple[grpc.aio.Channel, controller_pb2_grpc.ControllerStub]:
    channel = grpc.aio.insecure_channel(f"unix:{sock}")
    return channel, controller_pb2_grpc.ControllerStub(channel)


@contextlib.asynccontextmanager
async def one_node(
    tmp: Path, name: str = "a"
) -> AsyncIterator[tuple[LocalAgent, object, controller_pb2_grpc.ControllerStub]]:
    """An agent in this process and a controller (SQLite) programming it as node `name`, the
    node in sync at revision 0; all stopped afterwards."""
    agent = await LocalAgent(tmp / f"{name}.sock").start()
    try:
        running = await start_controller(controller_document(tmp, {name: agent.address}), tmp)
        channel, stub = controller_stub(tmp / "controller.sock")
        try:
            await wait_in_sync(stub, name, 0)
            yield agent, running, stub
        finally:
            await channel.close()
            await running.stop(0)
    finally:
        await agent.stop()


def route(prefix: str, *hops: tuple[str, str, int, int], node: str = "", kind: int = 1):
    network = ipaddress.ip_network(prefix)
    pb = controller_pb2.RouteIntent(
        node=node,
        prefix=agent_client.prefix(prefix),
        kind=kind if hops or kind != 1 else 1,
    )
    assert network
    for gateway, port, vlan, weight in hops:
        pb.next_hops.add(
            gateway=ipaddress.ip_address(gateway).packed, port=port, vlan=vlan, weight=weight
        )
    return pb


def key(prefix: str, node: str = "") -> controller_pb2.RouteKey:
    return controller_pb2.RouteKey(node=node, prefix=agent_client.prefix(prefix))


async def wait_in_sync(stub, node: str, revision: int, within: float = 30.0):
    """The node's status once it holds `revision`; fails with the last status after `timeout`."""
    deadline = time.monotonic() + within
    status = None
    while time.monotonic() < deadline:
        status = await stub.GetNodeStatus(controller_pb2.GetNodeStatusRequest(name=node))
        if status.in_sync and status.synced_revision >= revision:
            return status
        await asyncio.sleep(0.02)
    raise AssertionError(f"node {node} not in sync at revision {revision} in {within} s: {status}")


async def eventually(predicate, within: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} not reached in {within} s")
