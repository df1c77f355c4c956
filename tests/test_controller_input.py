"""Bad input the controller must refuse, and refusals that stay small: nodes with TLS files
that do not exist or addresses that are none, a drain for a VLAN that cannot exist, a page
token that is not one the controller gave, and refused calls that echo 10 kB names."""

from __future__ import annotations

import base64
from pathlib import Path

import grpc
import pytest

from controller_support import (
    LocalAgent,
    controller_document,
    controller_stub,
    eventually,
    key,
    route,
    start_controller,
    wait_in_sync,
)
from corridor.agent import client as agent_client
from corridor.v1 import controller_pb2

GW = ("198.18.0.2", "cor-c0", 0, 1)
TRAILER_BUDGET = 8192  # gRPC clients' default limit on received metadata


@pytest.fixture
async def controller(tmp_path: Path):
    """A controller with one node (a real agent on a Unix socket) and a channel to it."""
    agent = await LocalAgent(tmp_path / "a.sock").start()
    running = await start_controller(controller_document(tmp_path, {"a": agent.address}), tmp_path)
    channel, stub = controller_stub(tmp_path / "controller.sock")
    try:
        yield stub
    finally:
        await channel.close()
        await running.stop(0)
        await agent.stop()


async def refused(call, request) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call(request, timeout=30)
    return e.value


def assert_small(e: grpc.aio.AioRpcError) -> None:
    """What travels in trailers stays far below the clients' limit."""
    size = sum(len(k) + len(v) for k, v in e.trailing_metadata() or ())
    assert size + len(e.details().encode()) < TRAILER_BUDGET, size


# --- RegisterNode ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "words"),
    [
        ("unix:relative.sock", "absolute"),
        ("unix:", "socket path"),
        ("not an address:1", "not an agent address"),
        ("host:99999", "not an agent address"),
        ("[::1:50051", "not an agent address"),
        ("-bad-.example:50051", "not an agent address"),
    ],
)
async def test_register_refuses_an_address_that_is_none(controller, address, words) -> None:
    node = controller_pb2.Node(name="b", address=address)
    e = await refused(controller.RegisterNode, controller_pb2.RegisterNodeRequest(node=node))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
    [v] = agent_client.write_error(e).violations
    assert v.field == "node.address"
    assert words in v.description


@pytest.mark.parametrize(
    "address", ["unix:/run/corridor/agent.sock", "198.18.0.1:50051", "[2001:db8::1]:50051",
                "agent-1.example.net:50051", "localhost:1"],
)  # fmt: skip
async def test_register_takes_an_address(controller, address) -> None:
    node = controller_pb2.Node(name="b", address=address)
    reply = await controller.RegisterNode(controller_pb2.RegisterNodeRequest(node=node), timeout=30)
    assert reply.revision > 0


async def test_register_refuses_tls_files_that_do_not_exist(controller, tmp_path: Path, pki):
    tls = controller_pb2.NodeTls(
        ca=str(pki.dir / "ca.pem"),
        cert=str(tmp_path / "absent.pem"),
        key=str(pki.dir / "client.key"),
    )
    node = controller_pb2.Node(name="b", address="127.0.0.1:50051", tls=tls)
    e = await refused(controller.RegisterNode, controller_pb2.RegisterNodeRequest(node=node))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
    [v] = agent_client.write_error(e).violations
    assert v.field == "node.tls.cert"
    assert "absent.pem" in v.description and "No such file" in v.description
    # Readable files of the right kind are taken.
    node.tls.cert = str(pki.dir / "client.pem")
    reply = await controller.RegisterNode(controller_pb2.RegisterNodeRequest(node=node), timeout=30)
    assert reply.revision > 0


async def test_register_refuses_a_relative_tls_path(controller, pki) -> None:
    tls = controller_pb2.NodeTls(ca="ca.pem", cert=str(pki.dir / "client.pem"),
                                 key=str(pki.dir / "client.key"))  # fmt: skip
    node = controller_pb2.Node(name="b", address="127.0.0.1:50051", tls=tls)
    e = await refused(controller.RegisterNode, controller_pb2.RegisterNodeRequest(node=node))
    [v] = agent_client.write_error(e).violations
    assert v.field == "node.tls.ca"
    assert "absolute" in v.description


# --- SetNextHopState -------------------------------------------------------------------


@pytest.mark.parametrize("vlan", [4095, 4096, 70000])
async def test_a_drain_for_a_vlan_that_cannot_exist_is_refused(controller, vlan: int) -> None:
    request = controller_pb2.SetNextHopStateRequest(
        node="a", gateway=bytes([198, 18, 0, 2]), port="cor-c0", vlan=vlan, drained=True
    )
    e = await refused(controller.SetNextHopState, request)
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
    [v] = agent_client.write_error(e).violations
    assert v.field == "vlan"
    assert f"{vlan} is not a VLAN" in v.description


# --- ListRoutes page tokens ------------------------------------------------------------


async def pages(stub, **query) -> tuple[list[str], list[str]]:
    prefixes, tokens = [], []
    token = ""
    while True:
        page = await stub.ListRoutes(
            controller_pb2.ListRoutesRequest(page_size=3, page_token=token, **query), timeout=30
        )
        prefixes += [agent_client.prefix_text(r.prefix) for r in page.routes]
        token = page.next_page_token
        if not token:
            return prefixes, tokens
        tokens.append(token)


async def test_a_mangled_page_token_is_refused(controller) -> None:
    routes = [route(f"198.18.{i}.0/24", GW) for i in range(10)]
    await controller.Apply(controller_pb2.ApplyRequest(routes=routes), timeout=30)
    prefixes, tokens = await pages(controller)
    assert prefixes == [f"198.18.{i}.0/24" for i in range(10)]
    token = tokens[0]
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    flipped = base64.urlsafe_b64encode(raw[:-1] + bytes([raw[-1] ^ 1])).decode()
    mangled = {
        "one character changed": token[:5] + ("A" if token[5] != "A" else "B") + token[6:],
        "one bit flipped": flipped,
        "cut short": token[: len(token) // 2],
        "not base64": "%%%not a token%%%",
        "an old form": base64.urlsafe_b64encode(b"\x00" + b"\x04\xc6\x12\x03\x00\x18").decode(),
        "empty payload": base64.urlsafe_b64encode(b"\x01").decode(),
    }
    for what, bad in mangled.items():
        e = await refused(
            controller.ListRoutes, controller_pb2.ListRoutesRequest(page_size=3, page_token=bad)
        )
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, what
        assert "page_token" in e.details(), what


async def test_a_page_token_is_for_the_query_that_gave_it(controller) -> None:
    routes = [route(f"198.18.{i}.0/24", GW) for i in range(10)]
    await controller.Apply(controller_pb2.ApplyRequest(routes=routes), timeout=30)
    _, tokens = await pages(controller)
    e = await refused(
        controller.ListRoutes,
        controller_pb2.ListRoutesRequest(page_size=3, page_token=tokens[0], kind=2),
    )
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in e.details()


# --- echoes stay small -----------------------------------------------------------------


async def test_a_10_kB_node_name_in_a_refused_batch_reaches_the_client(controller) -> None:
    name = "n" * 10240
    routes = [route(f"198.18.{i}.0/24", GW, node=name) for i in range(100)]
    e = await refused(controller.Apply, controller_pb2.ApplyRequest(routes=routes))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
    details = agent_client.write_error(e)
    assert details is not None
    assert details.violations[0].field == "routes[0].node"
    assert "'" + "n" * 64 + "'… (10240 bytes)" in details.violations[0].description
    assert len(e.details().encode()) <= 1024
    assert_small(e)


async def test_a_10_kB_port_name_in_a_refused_batch_reaches_the_client(controller) -> None:
    async def ports_known():
        status = await controller.GetNodeStatus(controller_pb2.GetNodeStatusRequest(name="a"))
        return status.connected

    await eventually(ports_known, what="node a connected")
    port = "p" * 10240
    routes = [route(f"198.18.{i}.0/24", ("198.18.0.2", port, 0, 1)) for i in range(100)]
    e = await refused(controller.Apply, controller_pb2.ApplyRequest(routes=routes))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
    details = agent_client.write_error(e)
    assert details is not None
    assert "'" + "p" * 64 + "'… (10240 bytes)" in details.violations[0].description
    assert_small(e)


@pytest.mark.parametrize("call", ["RegisterNode", "GetNodeStatus", "DeregisterNode", "drain"])
async def test_a_10_kB_node_name_elsewhere_reaches_the_client(controller, call: str) -> None:
    name = "n" * 10240
    requests = {
        "RegisterNode": controller_pb2.RegisterNodeRequest(
            node=controller_pb2.Node(name=name, address="unix:/run/x.sock")
        ),
        "GetNodeStatus": controller_pb2.GetNodeStatusRequest(name=name),
        "DeregisterNode": controller_pb2.DeregisterNodeRequest(name=name),
        "drain": controller_pb2.SetNextHopStateRequest(
            node=name, gateway=bytes([198, 18, 0, 2]), port="cor-c0", drained=True
        ),
    }
    method = getattr(controller, "SetNextHopState" if call == "drain" else call)
    e = await refused(method, requests[call])
    assert e.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), e
    assert "… (10240 bytes)" in e.details()
    assert_small(e)


# --- a Delete that names a key twice ---------------------------------------------------


async def test_a_delete_that_names_a_route_twice_is_refused_and_changes_nothing(
    controller,
) -> None:
    """As Apply refuses a key twice in a batch, Delete does: counted twice, the route was
    taken out of intent's counts twice and out of the node's FIB twice (a KeyError after
    the commit, a group's reference count off by one)."""
    routes = [route("198.18.1.0/24", GW), route("198.18.2.0/24", GW)]
    applied = await controller.Apply(controller_pb2.ApplyRequest(routes=routes), timeout=30)
    await wait_in_sync(controller, "a", applied.revision)
    twice = [key("198.18.1.0/24"), key("198.18.2.0/24"), key("198.18.1.0/24")]
    e = await refused(controller.Delete, controller_pb2.DeleteRequest(routes=twice))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
    details = agent_client.write_error(e)
    assert details is not None
    assert [v.field for v in details.violations] == ["routes[2]"], details
    assert "routes[0]" in details.violations[0].description, details
    stats = await controller.GetStats(controller_pb2.GetStatsRequest(), timeout=10)
    assert stats.revision == applied.revision, "refused, yet committed"
    listed = await controller.ListRoutes(controller_pb2.ListRoutesRequest(), timeout=10)
    assert len(listed.routes) == 2
    # The same routes deleted properly afterwards: intent and the node end empty, in sync.
    deleted = await controller.Delete(controller_pb2.DeleteRequest(routes=twice[:2]), timeout=30)
    await wait_in_sync(controller, "a", deleted.revision)
    stats = await controller.GetStats(controller_pb2.GetStatsRequest(), timeout=10)
    assert (stats.intent.ipv4_routes, stats.intent.ipv6_routes) == (0, 0), stats
    # A long node name named twice is echoed short, within the trailers' budget.
    long = [key(f"198.18.{i}.0/24", "n" * 10240) for i in (1, 1, 2, 2)]
    e = await refused(controller.Delete, controller_pb2.DeleteRequest(routes=long))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
    assert_small(e)


async def test_a_route_for_every_node_and_the_same_for_one_node_in_one_batch(controller) -> None:
    """Both keys in one batch reach node a's FIB once: its own route wins, and when both
    are deleted the node holds no route and no group (taken twice, the group of the route
    for every node kept a reference it never gave back)."""
    other = ("198.18.0.3", "cor-c0", 0, 1)
    both = [route("198.18.1.0/24", GW), route("198.18.1.0/24", other, node="a")]
    applied = await controller.Apply(controller_pb2.ApplyRequest(routes=both), timeout=30)
    await wait_in_sync(controller, "a", applied.revision)
    deleted = await controller.Delete(
        controller_pb2.DeleteRequest(routes=[key("198.18.1.0/24"), key("198.18.1.0/24", "a")]),
        timeout=30,
    )
    await wait_in_sync(controller, "a", deleted.revision)
    status = await controller.GetNodeStatus(
        controller_pb2.GetNodeStatusRequest(name="a"), timeout=10
    )
    assert (status.installed.ipv4_routes, status.installed.next_hop_groups) == (0, 0), status
