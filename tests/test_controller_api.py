"""corridor.v1.Controller against real agents served in this process: routes applied once
reach every node, a node's own routes reach only it, malformed batches are refused whole
with precise errors (nothing stored, nothing sent), shared groups re-pointed by a drain,
list with filters and paging, watch, health."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from controller_support import (
    LocalAgent,
    controller_document,
    controller_stub,
    key,
    route,
    start_controller,
    wait_in_sync,
)
from corridor.agent import client as agent_client
from corridor.v1 import controller_pb2

GW_A = ("198.18.0.2", "cor-c0", 0, 1)
GW_B = ("198.19.0.2", "cor-c1", 100, 2)


@pytest.fixture
async def lab(tmp_path: Path, store_backend):
    """Two agents (nodes a and b) and a controller on each store backend, with a channel to
    it."""
    a = await LocalAgent(tmp_path / "a.sock").start()
    b = await LocalAgent(tmp_path / "b.sock").start()
    running = await start_controller(
        store_backend(controller_document(tmp_path, {"a": a.address, "b": b.address})), tmp_path
    )
    channel, stub = controller_stub(tmp_path / "controller.sock")
    try:
        yield a, b, running, stub
    finally:
        await channel.close()
        await running.stop(0)
        await a.stop()
        await b.stop()


async def apply(stub, *routes):
    return await stub.Apply(controller_pb2.ApplyRequest(routes=list(routes)), timeout=30)


async def test_routes_reach_every_node_and_node_routes_only_theirs(lab) -> None:
    a, b, _, stub = lab
    reply = await apply(
        stub,
        route("198.18.0.0/15", GW_A),
        route("2001:db8::/32", GW_A, GW_B),
        route("198.18.5.0/24", node="a", kind=2),
        route("198.18.0.0/15", GW_B, node="b"),  # overrides the every-node route on b
    )
    await wait_in_sync(stub, "a", reply.revision)
    await wait_in_sync(stub, "b", reply.revision)
    on_a, on_b = await a.routes(), await b.routes()
    assert set(on_a) == {"198.18.0.0/15", "2001:db8::/32", "198.18.5.0/24"}
    assert on_a["198.18.5.0/24"] == (2, 0)
    assert set(on_b) == {"198.18.0.0/15", "2001:db8::/32"}
    assert on_a["198.18.0.0/15"][1] != on_b["198.18.0.0/15"][1]  # different next-hop sets
    installed = await agent_client.read(a.stub)
    # Next hops by gateway address: the agent resolves them and fills both MACs itself.
    adjacencies = {(x.port, x.vlan, x.gateway, x.src_mac, x.dst_mac) for x in installed.adjacencies}
    assert adjacencies == {
        ("cor-c0", 0, bytes([198, 18, 0, 2]), b"", b""),
        ("cor-c1", 100, bytes([198, 19, 0, 2]), b"", b""),
    }

    # Deleting the node's override falls back to the every-node route.
    deleted = await stub.Delete(controller_pb2.DeleteRequest(routes=[key("198.18.0.0/15", "b")]))
    assert deleted.deleted == 1
    await wait_in_sync(stub, "b", deleted.revision)
    assert (await b.routes())["198.18.0.0/15"] == on_a["198.18.0.0/15"]


async def test_routes_with_one_next_hop_set_share_one_group(lab) -> None:
    a, _, _, stub = lab
    routes = [route(f"198.18.{i}.0/24", GW_A, GW_B) for i in range(200)]
    reply = await apply(stub, *routes)
    await wait_in_sync(stub, "a", reply.revision)
    installed = await agent_client.read(a.stub)
    assert len(installed.next_hop_groups) == 1 and len(installed.routes) == 200
    group = installed.next_hop_groups[0]
    assert sorted(m.weight for m in group.members) == [1, 2]

    # Draining a next hop re-points the one group: one write of one operation.
    generation = a.dataplane.generation
    drained = await stub.SetNextHopState(
        controller_pb2.SetNextHopStateRequest(
            gateway=bytes([198, 19, 0, 2]), port="cor-c1", vlan=100, drained=True
        )
    )
    assert drained.groups == 1
    await wait_in_sync(stub, "a", drained.revision)
    after = await agent_client.read(a.stub)
    assert a.dataplane.generation == generation + 1
    assert [len(g.members) for g in after.next_hop_groups] == [1]
    assert {r.next_hop_group_id for r in after.routes} == {group.id}


def violations(error: grpc.RpcError) -> list[tuple[int | None, str, str]]:
    details = agent_client.write_error(error)
    assert details is not None, "no WriteError in the status details"
    return [
        (v.operation if v.HasField("operation") else None, v.field, v.description)
        for v in details.violations
    ]


async def test_malformed_batches_are_refused_whole_nothing_stored_or_sent(lab) -> None:
    a, b, running, stub = lab
    ok = await apply(stub, route("198.18.0.0/24", GW_A))
    await wait_in_sync(stub, "a", ok.revision)
    await wait_in_sync(stub, "b", ok.revision)
    generations = (a.dataplane.generation, b.dataplane.generation)
    bad_prefix = route("198.18.0.0/24", GW_A)
    bad_prefix.prefix.length = 33
    host_bits = route("198.18.1.0/24", GW_A)
    host_bits.prefix.address = bytes([198, 18, 1, 7])
    cases = [
        (bad_prefix, "routes[1].prefix.length", "198.18.0.0/33: prefix length 33 exceeds 32"),
        (host_bits, "routes[1].prefix.address", "(the IPv4 network is 198.18.1.0/24)"),
        (route("198.18.2.0/24"), "routes[1].next_hops", "FORWARD route needs at least one"),
        (route("198.18.3.0/24", GW_A, kind=2), "routes[1].next_hops", "BLACKHOLE route has no"),
        (route("198.18.4.0/24", GW_A, node="zz"), "routes[1].node", "'zz' is not registered"),
        (route("198.18.5.0/24", ("198.18.0.2", "eth9", 0, 1)), "routes[1].next_hops[0]",
         "'eth9' is not a port of node a"),
        (route("198.18.6.0/24", ("198.18.0.2", "cor-c0", 7, 1)), "routes[1].next_hops[0]",
         "VLAN 7 is not configured on port cor-c0"),
        (route("198.18.7.0/24", ("224.0.0.1", "cor-c0", 0, 1)), "routes[1].next_hops[0].gateway",
         "not a unicast address"),
        (route("198.18.7.0/24", ("127.0.0.1", "cor-c0", 0, 1)), "routes[1].next_hops[0].gateway",
         "not a unicast address"),
        (route("198.18.8.0/24", GW_A, GW_A), "routes[1].next_hops[1]", "listed twice"),
        (route("198.18.0.0/24", GW_B), "routes[1]", "already routes[0] in this batch"),
    ]  # fmt: skip
    for bad, field, words in cases:
        with pytest.raises(grpc.RpcError) as raised:
            await apply(stub, route("198.18.0.0/24", GW_B), bad)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        found = violations(raised.value)
        assert found[0][0] == 1 and found[0][1] == field, found
        assert words in found[0][2], found
    # Several faults are all named, by index.
    with pytest.raises(grpc.RpcError) as raised:
        await apply(stub, bad_prefix, route("198.18.9.0/24", GW_A), route("198.18.2.0/24"))
    assert [v[0] for v in violations(raised.value)] == [0, 2]
    with pytest.raises(grpc.RpcError) as raised:
        await apply(stub)
    assert violations(raised.value) == [(None, "routes", "is empty; give at least one route")]

    await asyncio.sleep(1.5)  # past a drift check: still nothing written anywhere
    assert running.controller.state.revision == ok.revision
    listed = await stub.ListRoutes(controller_pb2.ListRoutesRequest())
    assert [agent_client.prefix_text(r.prefix) for r in listed.routes] == ["198.18.0.0/24"]
    assert (a.dataplane.generation, b.dataplane.generation) == generations


async def test_list_filters_and_pages(lab) -> None:
    _, _, _, stub = lab
    await apply(stub, *[route(f"198.18.{i}.0/24", GW_A) for i in range(25)])
    await apply(stub, route("2001:db8::/48", kind=3), route("198.19.0.0/16", node="b", kind=2))
    seen, token = [], ""
    while True:
        page = await stub.ListRoutes(
            controller_pb2.ListRoutesRequest(node="", page_size=10, page_token=token)
        )
        seen += [agent_client.prefix_text(r.prefix) for r in page.routes]
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == 26 and seen[:2] == ["198.18.0.0/24", "198.18.1.0/24"]
    assert seen[-1] == "2001:db8::/48"
    within = controller_pb2.ListRoutesRequest(within=agent_client.prefix("198.18.16.0/20"))
    page = await stub.ListRoutes(within)
    assert [agent_client.prefix_text(r.prefix) for r in page.routes] == [
        f"198.18.{i}.0/24" for i in range(16, 25)
    ]
    only_b = await stub.ListRoutes(controller_pb2.ListRoutesRequest(node="b"))
    assert [(r.node, r.kind) for r in only_b.routes] == [("b", 2)]
    blackholes = await stub.ListRoutes(controller_pb2.ListRoutesRequest(kind=3))
    assert len(blackholes.routes) == 1
    with pytest.raises(grpc.RpcError) as raised:
        await stub.ListRoutes(controller_pb2.ListRoutesRequest(page_size=20_000))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_watch_starts_with_a_snapshot_then_changes(lab) -> None:
    _, _, _, stub = lab
    first = await apply(stub, route("198.18.0.0/24", GW_A))
    call = stub.Watch(controller_pb2.WatchRequest())
    snapshot = await call.read()
    assert snapshot.snapshot and snapshot.snapshot_end and snapshot.revision == first.revision
    assert [agent_client.prefix_text(r.prefix) for r in snapshot.set] == ["198.18.0.0/24"]
    second = await apply(stub, route("198.18.1.0/24", kind=2))
    change = await asyncio.wait_for(call.read(), 10)
    assert change.revision == second.revision and not change.snapshot
    assert [agent_client.prefix_text(r.prefix) for r in change.set] == ["198.18.1.0/24"]
    gone = await stub.Delete(controller_pb2.DeleteRequest(routes=[key("198.18.0.0/24")]))
    change = await asyncio.wait_for(call.read(), 10)
    assert change.revision == gone.revision
    assert [agent_client.prefix_text(k.prefix) for k in change.deleted] == ["198.18.0.0/24"]
    call.cancel()


async def test_nodes_status_health_and_registration(lab, tmp_path: Path) -> None:
    _, _, running, stub = lab
    nodes = await stub.ListNodes(controller_pb2.ListNodesRequest())
    assert [n.node.name for n in nodes.nodes] == ["a", "b"]
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.server.port}")
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "corridor.v1.Controller"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    # Reflection lists the service, and a client that knows only its name gets Apply's
    # answer by name (the server registers Apply and Watch with pass-through codecs).
    reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = reflect.ServerReflectionInfo()
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    listed = await call.read()
    await call.done_writing()
    names = {s.name for s in listed.list_services_response.service}
    assert "corridor.v1.Controller" in names
    raw_apply = channel.unary_unary("/corridor.v1.Controller/Apply")
    bad = controller_pb2.ApplyRequest(routes=[route("198.18.0.0/15", ("198.18.0.2", "", 0, 1))])
    with pytest.raises(grpc.RpcError) as raised:
        await raw_apply(bad.SerializeToString(), timeout=30)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as raised:
        await raw_apply(b"\x0a\xff", timeout=30)  # truncated: not an ApplyRequest
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await channel.close()
    # A node whose agent is not there: registered, reported as not connected, with why.
    missing = controller_pb2.Node(name="c", address=f"unix:{tmp_path / 'none.sock'}")
    await stub.RegisterNode(controller_pb2.RegisterNodeRequest(node=missing))

    async def failing():
        s = await stub.GetNodeStatus(controller_pb2.GetNodeStatusRequest(name="c"))
        return s if s.last_error else None

    status = await asyncio.wait_for(_poll(failing), 20)
    assert not status.connected and "UNAVAILABLE" in status.last_error
    with pytest.raises(grpc.RpcError) as raised:
        await stub.RegisterNode(
            controller_pb2.RegisterNodeRequest(
                node=controller_pb2.Node(name="bad name", address="x")
            )
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(raised.value)[0][1] == "node.name"
    with pytest.raises(grpc.RpcError) as raised:
        await stub.GetNodeStatus(controller_pb2.GetNodeStatusRequest(name="zz"))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    await stub.DeregisterNode(controller_pb2.DeregisterNodeRequest(name="c"))
    nodes = await stub.ListNodes(controller_pb2.ListNodesRequest())
    assert [n.node.name for n in nodes.nodes] == ["a", "b"]


async def _poll(fn):
    while True:
        value = await fn()
        if value:
            return value
        await asyncio.sleep(0.05)
