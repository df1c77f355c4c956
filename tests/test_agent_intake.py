"""The agent's two ways into the FIB give the same answers: a WriteRequest of routes only is
read in Rust straight into the engine's batch (read_route_write, Dataplane.write_routes);
any other, and any the fast path leaves, is read by the generated code (translate_write,
Dataplane.write). Each batch here goes both ways, into two agents' FIBs, and the replies,
the violations and what is installed must match; the fast path must also step aside where
the agent's own entries (attached subnets, host routes, reserved ids) are at stake."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from corridor._dataplane import read_route_write
from corridor.agent import client as c
from corridor.agent.api import NO_RESERVED_GROUP, translate_write
from corridor.agent.config import parse
from corridor.agent.domain import Dataplane
from corridor.agent.fib_adapter import EngineFib
from corridor.agent.glean import HostTable, attached_subnets
from corridor.common.errors import InvalidBatch
from corridor.common.fib import Adjacency, GleanRoute, NextHopGroup, Route, RouteKind
from corridor.v1 import common_pb2, dataplane_pb2

ELECTION = 7
PORT_MAC, HOST_MAC = "02:00:00:00:00:10", "02:00:00:00:00:20"
FIRST_ID = 56  # the glean table's first reserved adjacency and group ids


def _dataplane(tmp_path: Path, glean: bool) -> Dataplane:
    document = {
        "listen": {"unix": "a.sock"},
        "fib": {"v4_routes": 1000, "v6_routes": 1000, "groups": 64, "adjacencies": 64},
        "ports": [{"name": "p0", "addresses": ["198.18.0.1/24"]}],
    }
    if glean:
        document["glean"] = {"hosts": 8}
    config = parse(document, base=tmp_path)
    dp = Dataplane(config, EngineFib(config.fib, ["p0"]))
    if glean:
        dp.glean = HostTable(attached_subnets(config.ports), config.glean, FIRST_ID, FIRST_ID)
    return dp


def _route(address: bytes, length: int, kind: int, group: int = 0) -> dataplane_pb2.Operation:
    route = dataplane_pb2.Route(
        prefix=common_pb2.IpPrefix(address=address, length=length), kind=kind,
        next_hop_group_id=group,
    )  # fmt: skip
    return dataplane_pb2.Operation(action=dataplane_pb2.ACTION_SET, route=route)


SETUP = [c.set_adjacency(1, "p0", 0, PORT_MAC, HOST_MAC), c.set_group(1, [(1, 1)])]

BATCHES = {
    "every kind, both families": [
        c.set_route("198.18.64.0/18", 1),
        c.set_route("0.0.0.0/0", "unreachable"),
        c.set_route("198.19.255.0/24", "blackhole"),
        c.set_route("198.19.0.1/32", "local"),
        c.set_route("2001:db8::/32", 1),
        c.set_route("2001:db8:ffff::/48", "blackhole"),
        c.set_route("::/0", "unreachable"),
    ],
    "replace and delete": [
        c.set_route("198.19.255.0/24", 1),
        c.delete_route("2001:db8:ffff::/48"),
        c.delete_route("203.0.113.0/24"),  # absent: fine
    ],
    "groups that do not exist": [
        c.set_route("198.18.64.0/18", 1),
        c.set_route("198.18.128.0/24", 7),
        c.set_route("2001:db8:1::/48", 9),
    ],
    "a bad prefix": [c.set_route("198.18.7.0/24", 1), _route(bytes([198, 18, 7, 1]), 24, 2)],
    "a FORWARD route without a group": [_route(bytes([198, 18, 7, 0]), 24, 1)],
    "a BLACKHOLE route with a group": [_route(bytes([198, 18, 7, 0]), 24, 2, 1)],
    "no kind": [_route(bytes([198, 18, 7, 0]), 24, 0)],
    "a reserved group": [c.set_route("198.18.7.0/24", FIRST_ID + 1)],
    "an attached subnet": [c.set_route("198.18.9.0/24", 1), c.set_route("198.18.0.0/24", 1)],
    "an attached subnet deleted": [c.delete_route("198.18.0.0/24")],
    "a host route of the agent's": [c.set_route("198.18.0.5/32", "blackhole")],
}
# Batches the fast path must leave to the generated code's (with glean / without).
SLOW = {
    "a bad prefix", "a FORWARD route without a group", "a BLACKHOLE route with a group",
    "no kind",
}  # fmt: skip
SLOW_WITH_GLEAN = {"a reserved group", "an attached subnet", "an attached subnet deleted",
                   "a host route of the agent's"}  # fmt: skip


async def _slow(dp: Dataplane, data: bytes):
    try:
        election, operations = translate_write(dataplane_pb2.WriteRequest.FromString(data), dp)
        return await dp.write(election, operations)
    except InvalidBatch as e:
        return e.violations


async def _fast(dp: Dataplane, data: bytes):
    """The fast path, or "slow" where it steps aside (nothing applied then)."""
    glean = dp.glean
    read = read_route_write(data, NO_RESERVED_GROUP if glean is None else glean.first_group)
    if read is None:
        return "slow"
    election, batch_id, batch = read
    assert (election, batch_id) == (ELECTION, 3)
    try:
        result = await dp.write_routes(election, batch)
    except InvalidBatch as e:
        return e.violations
    return "slow" if result is None else result


async def _with_own_host(dp: Dataplane) -> None:
    """The attached subnet's glean route and a host route of the agent's, 198.18.0.5/32."""
    ops = [GleanRoute("198.18.0.0/24"), Adjacency(FIRST_ID, "p0", 0, PORT_MAC, HOST_MAC),
           NextHopGroup(FIRST_ID, ((FIRST_ID, 1),)),
           Route("198.18.0.5/32", RouteKind.FORWARD, FIRST_ID)]  # fmt: skip
    assert await dp.apply_own(ops) == []
    dp.own_routes.add("198.18.0.5/32")


@pytest.mark.parametrize("glean", [False, True], ids=["plain", "glean"])
@pytest.mark.parametrize("name", list(BATCHES))
async def test_both_ways_give_the_same_answers(tmp_path: Path, glean: bool, name: str) -> None:
    slow, fast = _dataplane(tmp_path / "a", glean), _dataplane(tmp_path / "b", glean)
    for dp in (slow, fast):
        if glean:
            await _with_own_host(dp)
        await _slow(dp, c.write_request(ELECTION, SETUP).SerializeToString())
        await _slow(
            dp, c.write_request(ELECTION, BATCHES["every kind, both families"]).SerializeToString()
        )
    data = c.write_request(ELECTION, BATCHES[name], batch_id=3).SerializeToString()
    want = await _slow(slow, data)
    got = await _fast(fast, data)
    steps_aside = name in SLOW or (glean and name in SLOW_WITH_GLEAN)
    if steps_aside:
        assert got == "slow", got
        got = await _slow(fast, data)
    else:
        assert got != "slow", "the fast path stepped aside"
    assert got == want
    assert fast._fib.entries() == slow._fib.entries()
    assert fast.generation == slow.generation and fast.own_routes == slow.own_routes
    assert fast.stats == slow.stats


def test_what_is_not_a_plain_route_write_is_left_alone() -> None:
    routes = [c.set_route("198.18.7.0/24", 1)]
    assert read_route_write(c.write_request(ELECTION, routes).SerializeToString(), 1 << 32)
    for data in (
        b"",
        b"\xff\xff",  # not protobuf
        c.write_request(0, routes).SerializeToString(),  # election 0: the slow path names it
        c.write_request(ELECTION, []).SerializeToString(),
        c.write_request(ELECTION, routes + SETUP).SerializeToString(),
        c.write_request(ELECTION, [c.set_route("198.18.7.0/24", 1)]).SerializeToString()[:-1],
    ):
        assert read_route_write(data, 1 << 32) is None, data
    # A group from first_group up is the agent's.
    assert read_route_write(c.write_request(ELECTION, routes).SerializeToString(), 1) is None


async def test_bytes_that_are_not_a_write_request_are_refused(agent) -> None:
    write = agent.channel.unary_unary("/corridor.v1.Dataplane/Write")
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await write(b"\xff\xff\xff", timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a corridor.v1.WriteRequest" in e.value.details()
    # Routes alone, through the server: the fast path, answered as before.
    reply = await agent.stub.Write(
        c.write_request(ELECTION, [c.set_route("198.18.7.0/24", "blackhole")], 5), timeout=10
    )
    assert (reply.batch_id, reply.operations, reply.generation) == (5, 1, 1)
