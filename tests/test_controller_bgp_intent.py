"""BGP routes beside the operator's, through a real controller and real agents in this
process (routes handed to the core as the FPM feed hands them): the operator's route wins
and BGP's comes back when it goes; BGP groups never share ids with the operator's; a drain
reaches BGP groups; ListRoutes by source, with `active`, paging across the sources, and
refusing what it cannot read; GetStats and NodeStatus count per source; and a restarted
controller with a feed adopts the node's BGP routes (nothing withdrawn) until the hold
time ends."""

from __future__ import annotations

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
from corridor.common.fib import RouteKind
from corridor.controller.domain import Intent, prefix_sort_key
from corridor.v1 import controller_pb2, dataplane_pb2

pytestmark = pytest.mark.timeout(120)

NODE = "a"
HOP_A = (("198.18.0.2", "cor-c0", 0), 1)
HOP_B = (("198.19.0.2", "cor-c1", 100), 1)
STATIC, BGP = controller_pb2.ROUTE_SOURCE_STATIC, controller_pb2.ROUTE_SOURCE_BGP


def bgp_route(*hops: tuple[tuple[str, str, int], int]) -> Intent:
    return Intent(RouteKind.FORWARD, tuple(sorted(hops)))


async def node_routes(agent: LocalAgent, prefix: str, want, within: float = 30):  # type: ignore[no-untyped-def]
    """Waits until `want(route)` holds for the node's route to `prefix` (None: no route)."""

    async def holds():  # type: ignore[no-untyped-def]
        return want((await agent.routes()).get(prefix))

    await eventually(holds, within, f"{prefix} on the node")


async def group_members(agent: LocalAgent, group: int) -> set[tuple[str, int, bytes]]:
    from corridor.agent import client as agent_client

    installed = await agent_client.read(agent.stub)
    adjacencies = {a.id: (a.port, a.vlan, a.gateway) for a in installed.adjacencies}
    for g in installed.next_hop_groups:
        if g.id == group:
            return {adjacencies[m.adjacency_id] for m in g.members}
    raise AssertionError(f"no group {group} on the node")


@pytest.fixture
async def world(tmp_path: Path):
    agent = await LocalAgent(tmp_path / "a.sock").start()
    running = await start_controller(controller_document(tmp_path, {NODE: agent.address}), tmp_path)
    channel, stub = controller_stub(tmp_path / "controller.sock")
    try:
        await wait_in_sync(stub, NODE, 0)
        yield agent, running, stub
    finally:
        await channel.close()
        await running.stop(0)
        await agent.stop()


async def list_all(stub, source: int = 0, page_size: int = 10_000, **fields):  # type: ignore[no-untyped-def]
    from corridor.agent import client as agent_client

    request = controller_pb2.ListRoutesRequest(page_size=page_size, source=source, **fields)
    out, pages = [], 0
    while True:
        page = await stub.ListRoutes(request)
        pages += 1
        assert len(page.sources) == len(page.active) == len(page.routes)
        out += [
            (r.node, agent_client.prefix_text(r.prefix), s, a)
            for r, s, a in zip(page.routes, page.sources, page.active, strict=True)
        ]
        if not page.next_page_token:
            return out, pages
        request.page_token = page.next_page_token


async def test_the_operators_route_wins_and_bgps_comes_back(world) -> None:  # type: ignore[no-untyped-def]
    agent, running, stub = world
    core = running.controller
    await core.bgp_routes(NODE, {"198.18.64.0/24": bgp_route(HOP_A, HOP_B)}, ())
    await node_routes(agent, "198.18.64.0/24", lambda r: r is not None and r[0] == 1)
    bgp_group = (await agent.routes())["198.18.64.0/24"][1]
    assert await group_members(agent, bgp_group) == {
        ("cor-c0", 0, bytes([198, 18, 0, 2])),
        ("cor-c1", 100, bytes([198, 19, 0, 2])),
    }

    # The operator's route for every node beats BGP's; the same next hops are another group.
    reply = await stub.Apply(controller_pb2.ApplyRequest(routes=[
        route("198.18.64.0/24", ("198.18.0.2", "cor-c0", 0, 1), ("198.19.0.2", "cor-c1", 100, 1)),
        route("198.18.65.0/24", kind=2),
    ]))  # fmt: skip
    await wait_in_sync(stub, NODE, reply.revision)
    static_group = (await agent.routes())["198.18.64.0/24"][1]
    assert static_group != bgp_group
    listed, _ = await list_all(stub)
    assert listed == [
        ("", "198.18.64.0/24", STATIC, True),
        ("", "198.18.65.0/24", STATIC, True),
        (NODE, "198.18.64.0/24", BGP, False),
    ]
    # The node's own operator route beats it too; BGP's comes back when both are gone.
    reply = await stub.Apply(controller_pb2.ApplyRequest(
        routes=[route("198.18.64.0/24", kind=3, node=NODE)]
    ))  # fmt: skip
    await wait_in_sync(stub, NODE, reply.revision)
    assert (await agent.routes())["198.18.64.0/24"] == (3, 0)
    await stub.Delete(controller_pb2.DeleteRequest(routes=[key("198.18.64.0/24", NODE)]))
    await stub.Delete(controller_pb2.DeleteRequest(routes=[key("198.18.64.0/24")]))
    await node_routes(agent, "198.18.64.0/24", lambda r: r == (1, bgp_group))
    assert await group_members(agent, bgp_group) == {
        ("cor-c0", 0, bytes([198, 18, 0, 2])),
        ("cor-c1", 100, bytes([198, 19, 0, 2])),
    }

    # A drained next hop leaves BGP's groups as it leaves the operator's.
    reply = await stub.SetNextHopState(controller_pb2.SetNextHopStateRequest(
        node=NODE, gateway=bytes([198, 19, 0, 2]), port="cor-c1", vlan=100, drained=True
    ))  # fmt: skip
    await wait_in_sync(stub, NODE, reply.revision)

    async def drained():  # type: ignore[no-untyped-def]
        return await group_members(agent, bgp_group) == {("cor-c0", 0, bytes([198, 18, 0, 2]))}

    await eventually(drained, 30, "the drain in the BGP group")

    # Withdrawn: gone from the node, and the group with it.
    await core.bgp_routes(NODE, {}, ["198.18.64.0/24"])
    await node_routes(agent, "198.18.64.0/24", lambda r: r is None)
    stats = await stub.GetStats(controller_pb2.GetStatsRequest())
    assert stats.bgp.ipv4_routes == 0 and stats.intent.ipv4_routes == 1


async def test_list_routes_by_source_pages_across_sources(world) -> None:  # type: ignore[no-untyped-def]
    agent, running, stub = world
    core = running.controller
    statics = [f"198.18.{i}.0/24" for i in range(100, 107)]
    reply = await stub.Apply(controller_pb2.ApplyRequest(
        routes=[route(p, kind=2, node=NODE) for p in statics]
    ))  # fmt: skip
    await wait_in_sync(stub, NODE, reply.revision)
    bgps = {f"198.19.{i}.0/24": bgp_route(HOP_A) for i in range(10, 19)}
    bgps["2001:db8:5::/48"] = Intent(RouteKind.BLACKHOLE)
    bgps["198.18.100.0/24"] = bgp_route(HOP_A)  # beaten by the operator's
    await core.bgp_routes(NODE, bgps, ())
    await node_routes(agent, "2001:db8:5::/48", lambda r: r == (2, 0))

    whole, _ = await list_all(stub)
    assert [(p, s) for _, p, s, _ in whole[: len(statics)]] == [(p, STATIC) for p in statics]
    bgp_part = whole[len(statics) :]
    assert [p for _, p, _, _ in bgp_part] == sorted(bgps, key=prefix_sort_key)
    assert {p for _, p, _, active in bgp_part if not active} == {"198.18.100.0/24"}
    for size in (1, 3, 7, 8):  # pages that end inside either source and at the boundary
        paged, pages = await list_all(stub, page_size=size)
        assert paged == whole and pages >= len(whole) // size
    only_bgp, _ = await list_all(stub, BGP, page_size=4)
    assert only_bgp == bgp_part
    only_static, _ = await list_all(stub, STATIC, page_size=4)
    assert only_static == whole[: len(statics)]
    v6, _ = await list_all(stub, BGP, kind=dataplane_pb2.ROUTE_KIND_BLACKHOLE)
    assert [p for _, p, _, _ in v6] == ["2001:db8:5::/48"]

    stats = await stub.GetStats(controller_pb2.GetStatsRequest())
    assert (stats.bgp.ipv4_routes, stats.bgp.ipv6_routes) == (10, 1)
    assert (stats.intent.ipv4_routes, stats.intent.ipv6_routes) == (7, 0)


async def test_list_routes_refuses_what_it_cannot_read(world) -> None:  # type: ignore[no-untyped-def]
    _, running, stub = world
    await running.controller.bgp_routes(NODE, {"198.19.1.0/24": bgp_route(HOP_A)}, ())
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stub.ListRoutes(controller_pb2.ListRoutesRequest(source=7))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "source: 7 is not a route source" in e.value.details()
    first = await stub.ListRoutes(controller_pb2.ListRoutesRequest(page_size=1, source=BGP))
    assert not first.next_page_token  # one route: one page
    await running.controller.bgp_routes(NODE, {"198.19.2.0/24": bgp_route(HOP_A)}, ())
    first = await stub.ListRoutes(controller_pb2.ListRoutesRequest(page_size=1, source=BGP))
    assert first.next_page_token
    # A token is good for the query (source included) that gave it.
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stub.ListRoutes(controller_pb2.ListRoutesRequest(
            page_size=1, source=STATIC, page_token=first.next_page_token
        ))  # fmt: skip
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in e.value.details()


async def test_a_restarted_controller_adopts_the_nodes_bgp_routes_until_the_hold_time(
    tmp_path: Path,
) -> None:
    agent = await LocalAgent(tmp_path / "a.sock").start()
    document = controller_document(tmp_path, {NODE: agent.address})
    document["fpm"] = [{"node": NODE, "listen": "127.0.0.1:0", "stale_seconds": 3}]
    channel, stub = controller_stub(tmp_path / "controller.sock")
    running = await start_controller(document, tmp_path)
    try:
        await wait_in_sync(stub, NODE, 0)
        reply = await stub.Apply(controller_pb2.ApplyRequest(
            routes=[route("198.18.70.0/24", kind=2, node=NODE)]
        ))  # fmt: skip
        await wait_in_sync(stub, NODE, reply.revision)
        await running.controller.bgp_routes(
            NODE, {"198.19.1.0/24": bgp_route(HOP_A), "198.19.2.0/24": bgp_route(HOP_A, HOP_B)},
            (),
        )  # fmt: skip
        await node_routes(agent, "198.19.2.0/24", lambda r: r is not None)
        before = await agent.routes()
        await running.stop(0)

        # Restarted: the node's routes that are not the operator's are BGP's, kept stale.
        running = await start_controller(document, tmp_path)
        status = await eventually(
            lambda: _bgp_status(stub, lambda b: b.stale_routes == 2), 30, "the adoption"
        )
        assert status.routes == 2 and not status.connected
        assert await agent.routes() == before, "the restart changed the node"
        listed, _ = await list_all(stub, BGP)
        assert [p for _, p, _, _ in listed] == ["198.19.1.0/24", "198.19.2.0/24"]
        # zebra never came back: removed after the hold time, the operator's route stays.
        await node_routes(agent, "198.19.2.0/24", lambda r: r is None, within=30)
        routes = await agent.routes()
        assert "198.19.1.0/24" not in routes and routes["198.18.70.0/24"] == (2, 0)
        status = await _bgp_status(stub, lambda b: True)
        assert status.swept == 2 and status.stale_routes == 0
    finally:
        await channel.close()
        await running.stop(0)
        await agent.stop()


async def _bgp_status(stub, check):  # type: ignore[no-untyped-def]
    status = await stub.GetNodeStatus(controller_pb2.GetNodeStatusRequest(name=NODE))
    assert status.HasField("bgp")
    return status.bgp if check(status.bgp) else None


async def test_nodes_without_a_feed_show_no_bgp_status(world) -> None:  # type: ignore[no-untyped-def]
    _, _, stub = world
    status = await stub.GetNodeStatus(controller_pb2.GetNodeStatusRequest(name=NODE))
    assert not status.HasField("bgp")


async def test_bad_fpm_input_is_counted_and_the_controller_keeps_serving(tmp_path: Path) -> None:
    """zebra's socket of a real controller: routes it can install are, the rest is counted
    by reason (the in-process agent's ports have no kernel interface: every interface is
    unknown to it), garbage ends the connection without withdrawing anything, and the API
    answers throughout."""
    import asyncio

    from fpm_support import frame, route_message

    agent = await LocalAgent(tmp_path / "a.sock").start()
    document = controller_document(tmp_path, {NODE: agent.address})
    document["fpm"] = [{"node": NODE, "listen": "127.0.0.1:0"}]
    channel, stub = controller_stub(tmp_path / "controller.sock")
    running = await start_controller(document, tmp_path)
    writer = None
    try:
        await wait_in_sync(stub, NODE, 0)
        feeds = running.controller.feeds
        assert feeds is not None
        ((_, _, port),) = feeds.listeners
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        flood = [f"198.19.{i // 256}.{i % 256}/32" for i in range(20_000)]
        wide = [{"gateway": f"198.18.0.{i % 250 + 2}", "oif": 77} for i in range(300)]
        stream = b"".join([
            frame(route_message("198.18.64.0/24", rtype=6)),  # blackhole: installable
            frame(route_message("198.18.65.0/24", gateway="198.18.0.2", oif=77)),
            frame(route_message("198.18.66.0/24", multipath=wide)),
            frame(b"\x08\x01protobuf", kind=2),  # another FPM encoding: skipped
            *(frame(route_message(p, rtype=7)) for p in flood),  # unreachable, 20 000
        ])  # fmt: skip
        writer.write(stream)
        await writer.drain()
        # The API answers while the flood is taken in.
        listed = await stub.ListRoutes(controller_pb2.ListRoutesRequest(page_size=1))
        assert len(listed.routes) <= 1
        await node_routes(agent, flood[-1], lambda r: r == (3, 0), within=60)
        writer.write(b"GET / HTTP/1.1\r\n\r\n")  # garbage: the stream cannot be resynchronised
        await writer.drain()
        assert await reader.read() == b"", "the listener closed the connection"
        bgp = await eventually(
            lambda: _bgp_status(stub, lambda b: not b.connected), 30, "the connection closed"
        )
        assert dict(bgp.not_installed) == {"unowned_interface": 1, "too_many_next_hops": 1}
        assert dict(bgp.fpm_errors) == {"unknown_fpm_type": 1, "bad_fpm_version": 1}
        # zebra's routes of the lost session, installed or not, are all stale
        assert bgp.routes == 1 + len(flood) and bgp.stale_routes == 3 + len(flood)
        routes = await agent.routes()
        assert routes["198.18.64.0/24"] == (2, 0) and "198.18.65.0/24" not in routes
        # Nothing withdrawn by the lost connection; the API still takes writes.
        reply = await stub.Apply(controller_pb2.ApplyRequest(
            routes=[route("198.18.67.0/24", kind=2, node=NODE)]
        ))  # fmt: skip
        await wait_in_sync(stub, NODE, reply.revision)
        assert len(await agent.routes()) == 2 + len(flood)
    finally:
        if writer is not None:
            writer.close()
        await channel.close()
        await running.stop(0)
        await agent.stop()
