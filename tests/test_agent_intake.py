"""The agent's two ways into the FIB give the same answers: a WriteRequest of routes only is
read in Rust straight into the engine's batch (read_route_write, Dataplane.write_routes);
any other, and any the fast path leaves, is read by the generated code (translate_write,
Dataplane.write). Each batch here goes both ways, into two agents' FIBs, and the replies,
the violations and what is installed must match; the fast path must also step aside where
the agent's own entries (attached subnets, host routes, reserved ids) are at stake. A
property test sends generated requests, damaged bytes among them, both ways: whatever the
fast path takes, the generated code reads as the same routes and applies alike."""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from corridor._dataplane import read_route_write
from corridor.agent import client as c
from corridor.agent.api import NO_RESERVED_GROUP, translate_write
from corridor.agent.config import parse
from corridor.agent.domain import Dataplane, NotPrimary
from corridor.agent.fib_adapter import EngineFib
from corridor.agent.glean import HostTable, attached_subnets
from corridor.common.errors import InvalidBatch
from corridor.common.fib import Adjacency, GleanRoute, NextHopGroup, Route, RouteKind
from corridor.v1 import common_pb2, dataplane_pb2
from properties_support import prefixes
from test_properties_agent import operations

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


# --- any request, both ways ----------------------------------------------------------------


VALID_PREFIXES = [
    common_pb2.IpPrefix(address=ipaddress.ip_network(p).network_address.packed,
                        length=ipaddress.ip_network(p).prefixlen)
    for p in ("198.18.7.0/24", "198.19.0.0/16", "0.0.0.0/0", "198.18.0.9/32",
              "2001:db8::/32", "2001:db8:1::/48", "::/0", "2001:db8::1/128")
]  # fmt: skip
VALID_SETS = st.one_of(
    st.tuples(st.just(1), st.sampled_from([1, 2, 9, FIRST_ID])),  # FORWARD to a group
    st.tuples(st.sampled_from([2, 3, 4]), st.just(0)),
)
NEAR_MISSES = st.tuples(st.sampled_from([0, 1, 2, 5]), st.sampled_from([0, 1]))


@st.composite
def route_operations(draw: st.DrawFn, clean: bool) -> dataplane_pb2.Operation:
    """Route operations the fast path takes (`clean`), or near misses among them: any
    prefix bytes and length, a kind with a group it must not have, unknown actions."""
    actions = [1, 1, 2] if clean else [1, 1, 2, 0, 7]
    op = dataplane_pb2.Operation(action=draw(st.sampled_from(actions)))  # type: ignore[arg-type]
    valid = st.sampled_from(VALID_PREFIXES)
    op.route.prefix.CopyFrom(draw(valid if clean else st.one_of(valid, prefixes())))
    kind, group = draw(VALID_SETS if clean else st.one_of(VALID_SETS, NEAR_MISSES))
    op.route.kind, op.route.next_hop_group_id = kind, group  # type: ignore[assignment]
    return op


REQUESTS = st.tuples(
    st.one_of(st.just(ELECTION), st.integers(0, 2**128 - 1)),
    st.one_of(
        st.lists(route_operations(clean=True), max_size=6),
        st.lists(st.one_of(route_operations(clean=False), operations()), max_size=6),
    ),
    # Damage to the encoded bytes, half the time: (position per mille, byte) to overwrite.
    st.one_of(st.none(), st.tuples(st.integers(0, 999), st.integers(0, 255))),
)


async def _both_ways(election: int, ops: list[dataplane_pb2.Operation], mutation) -> None:
    data = bytearray(c.write_request(election, ops, batch_id=3).SerializeToString())
    if mutation is not None and data:
        data[mutation[0] * len(data) // 1000] = mutation[1]
    fast_dp, slow_dp = (_dataplane(Path("/nonexistent"), False) for _ in range(2))
    for dp in (fast_dp, slow_dp):
        await _slow(dp, c.write_request(ELECTION, SETUP).SerializeToString())
    read = read_route_write(bytes(data), NO_RESERVED_GROUP)
    if read is None:
        return  # the generated code's, as every other request (the cases above)
    # What the fast path takes, the generated code reads as the same routes and applies alike.
    request = dataplane_pb2.WriteRequest.FromString(bytes(data))
    assert request.operations and all(
        op.WhichOneof("entry") == "route" for op in request.operations
    )
    election_id, batch_id, batch = read
    assert (election_id, batch_id, len(batch)) == (
        (request.election_id.high << 64) | request.election_id.low, request.batch_id,
        len(request.operations))  # fmt: skip
    try:
        got = await fast_dp.write_routes(election_id, batch)
    except (InvalidBatch, NotPrimary) as e:
        got = getattr(e, "violations", "not primary")
    assert got is not None, "stepped aside without the agent's own routes"
    assert got == await _slow_or_refused(slow_dp, bytes(data))
    assert fast_dp._fib.entries() == slow_dp._fib.entries()
    assert fast_dp.generation == slow_dp.generation and fast_dp.stats == slow_dp.stats


async def _slow_or_refused(dp: Dataplane, data: bytes):
    try:
        return await _slow(dp, data)
    except NotPrimary:
        return "not primary"


@given(REQUESTS)
def test_any_request_the_fast_path_takes_is_read_and_applied_as_the_generated_code_does(
    request,
) -> None:
    asyncio.run(_both_ways(*request))
