"""Write and Read of corridor.v1.Dataplane against a real agent and the engine's FIB: every
entry kind, replay, references, malformed batches (each refused whole with a precise
WriteError and the FIB left as it was), and the election between writers."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from corridor.agent import client as c
from corridor.agent.domain import MAX_OPERATIONS_PER_WRITE
from corridor.v1 import common_pb2, dataplane_pb2

PRIMARY = 10
MAC_A, MAC_B, MAC_C = "02:00:00:00:00:0a", "02:00:00:00:00:0b", "02:00:00:00:00:0c"


def base_operations() -> list[dataplane_pb2.Operation]:
    """Two adjacencies (one tagged), two groups, routes of every kind in both families."""
    return [
        c.set_adjacency(1, "cor-test0", 0, MAC_A, MAC_B),
        c.set_adjacency(2, "cor-test1", 100, MAC_A, MAC_C),
        c.set_group(1, [(1, 1)]),
        c.set_group(2, [(1, 3), (2, 1)]),
        c.set_route("198.18.0.0/15", 1),
        c.set_route("198.18.128.0/24", 2),
        c.set_route("0.0.0.0/0", "unreachable"),
        c.set_route("198.19.255.0/24", "blackhole"),
        c.set_route("198.18.0.1/32", "local"),
        c.set_route("2001:db8::/32", 2),
        c.set_route("2001:db8:ffff::/48", "blackhole"),
    ]


def summary(installed: c.Installed) -> dict:
    """What Read returned, as plain values that compare and print well."""
    kinds = {v: k for k, v in dataplane_pb2.RouteKind.items()}
    return {
        "adjacencies": sorted(
            (a.id, a.port, a.vlan, a.src_mac.hex(":"), a.dst_mac.hex(":"))
            for a in installed.adjacencies
        ),
        "groups": sorted(
            (g.id, tuple((m.adjacency_id, m.weight) for m in g.members))
            for g in installed.next_hop_groups
        ),
        "routes": sorted(
            (c.prefix_text(r.prefix), kinds[r.kind], r.next_hop_group_id) for r in installed.routes
        ),
    }


async def write(agent, operations, election=PRIMARY, batch_id=0):
    return await agent.stub.Write(c.write_request(election, operations, batch_id), timeout=30)


async def state(agent) -> dict:
    async with asyncio.timeout(60):
        return summary(await c.read(agent.stub))


async def test_write_then_read_every_kind(agent) -> None:
    reply = await write(agent, base_operations(), batch_id=7)
    assert (reply.batch_id, reply.operations, reply.generation) == (7, 11, 1)
    installed = await c.read(agent.stub)
    assert installed.generation == 1
    assert [p.name for p in installed.ports] == ["cor-test0", "cor-test1"]
    assert summary(installed) == {
        "adjacencies": [(1, "cor-test0", 0, MAC_A, MAC_B), (2, "cor-test1", 100, MAC_A, MAC_C)],
        "groups": [(1, ((1, 1),)), (2, ((1, 3), (2, 1)))],
        "routes": sorted(
            [
                ("0.0.0.0/0", "ROUTE_KIND_UNREACHABLE", 0),
                ("198.18.0.0/15", "ROUTE_KIND_FORWARD", 1),
                ("198.18.0.1/32", "ROUTE_KIND_LOCAL", 0),
                ("198.18.128.0/24", "ROUTE_KIND_FORWARD", 2),
                ("198.19.255.0/24", "ROUTE_KIND_BLACKHOLE", 0),
                ("2001:db8::/32", "ROUTE_KIND_FORWARD", 2),
                ("2001:db8:ffff::/48", "ROUTE_KIND_BLACKHOLE", 0),
            ]
        ),
    }


async def test_a_head_only_read_is_the_first_message_alone(agent, monkeypatch) -> None:
    """What a drift check and a members' sync read: the generation, ports and members in one
    message, the same as a full Read's first, without the agent walking its FIB for it."""
    await write(agent, [*base_operations(), c.set_member(0, "cor-test0", 0, MAC_C, "alpha")])
    await write(agent, [c.set_route("198.19.0.0/16", 1)])
    fib = agent.dataplane._fib
    walks = []
    entries = fib.entries
    monkeypatch.setattr(fib, "entries", lambda: walks.append(1) or entries())
    async with asyncio.timeout(60):
        full = [r async for r in agent.stub.Read(dataplane_pb2.ReadRequest())]
        assert len(walks) == 1
        head = [r async for r in agent.stub.Read(dataplane_pb2.ReadRequest(head_only=True))]
    assert len(walks) == 1, "a head-only Read walked the FIB"
    assert len(head) == 1 and head[0] == full[0]
    assert head[0].generation == 2 and [m.name for m in head[0].members] == ["alpha"]
    assert [p.name for p in head[0].ports] == ["cor-test0", "cor-test1"]
    assert sum(len(r.routes) for r in full) == 8 and not head[0].routes


async def test_replay_gives_the_same_state(agent) -> None:
    await write(agent, base_operations())
    first = await state(agent)
    for _ in range(3):
        await write(agent, base_operations())
    assert await state(agent) == first


async def test_replace_and_delete(agent) -> None:
    await write(agent, base_operations())
    await write(
        agent,
        [
            c.set_route("198.18.0.0/15", 2),  # re-pointed
            c.set_group(1, [(2, 5)]),  # re-membered
            c.delete_route("2001:db8:ffff::/48"),
            c.delete_route("198.19.255.0/24"),
        ],
    )
    now = await state(agent)
    assert (1, ((2, 5),)) in now["groups"]
    assert ("198.18.0.0/15", "ROUTE_KIND_FORWARD", 2) in now["routes"]
    assert len(now["routes"]) == 5
    # Everything out again, in an order the references allow.
    reply = await write(
        agent,
        [c.delete_route(p) for p in ("198.18.0.0/15", "198.18.128.0/24", "2001:db8::/32")]
        + [c.delete_group(1), c.delete_group(2), c.delete_adjacency(1), c.delete_adjacency(2)],
    )
    assert reply.operations == 7
    now = await state(agent)
    assert now["adjacencies"] == [] and now["groups"] == []
    assert len(now["routes"]) == 2


async def test_deleting_what_is_absent_is_fine(agent) -> None:
    await write(agent, base_operations())
    before = await state(agent)
    reply = await write(
        agent, [c.delete_route("203.0.113.0/24"), c.delete_group(99), c.delete_adjacency(99)]
    )
    assert reply.operations == 3
    assert await state(agent) == before


async def test_an_empty_batch_claims_primacy(agent) -> None:
    reply = await write(agent, [], election=PRIMARY + 1)
    assert reply.operations == 0
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await write(agent, base_operations(), election=PRIMARY)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED


def _route_op(address: bytes, length: int, kind=dataplane_pb2.ROUTE_KIND_BLACKHOLE, group=0):
    route = dataplane_pb2.Route(
        prefix=common_pb2.IpPrefix(address=address, length=length),
        kind=kind,
        next_hop_group_id=group,
    )
    return dataplane_pb2.Operation(action=dataplane_pb2.ACTION_SET, route=route)


V4 = bytes([198, 18, 7, 0])

# (name, the bad operation, its field, words its description must hold)
MALFORMED = [
    ("host bits", _route_op(bytes([198, 18, 0, 1]), 15), "route.prefix.address",
     "198.18.0.1/15: host bits set (the IPv4 network is 198.18.0.0/15)"),
    ("address family", _route_op(b"\xc6\x12\x00\x00\x00", 24), "route.prefix.address",
     "is 5 bytes; an IPv4 address is 4 bytes and an IPv6 address 16"),
    ("no address", _route_op(b"", 0), "route.prefix.address", "is 0 bytes"),
    ("v4 length", _route_op(V4, 33), "route.prefix.length",
     "198.18.7.0/33: prefix length 33 exceeds 32"),
    ("v6 length", _route_op(bytes(16), 129), "route.prefix.length",
     "::/129: prefix length 129 exceeds 128"),
    ("unknown group", c.set_route("198.18.7.0/24", 99), "", "group 99 does not exist"),
    ("forward without group", _route_op(V4, 24, dataplane_pb2.ROUTE_KIND_FORWARD),
     "route.next_hop_group_id", "a FORWARD route needs a group id"),
    ("blackhole with group", _route_op(V4, 24, group=1), "route.next_hop_group_id",
     "a BLACKHOLE route has no next-hop group"),
    ("no kind", _route_op(V4, 24, dataplane_pb2.ROUTE_KIND_UNSPECIFIED), "route.kind",
     "is not a route kind"),
    ("group in use", c.delete_group(2), "", "group 2: still used by 3 route(s)"),
    ("adjacency in use", c.delete_adjacency(1), "", "adjacency 1: still used by 2 group(s)"),
    ("missing member", c.set_group(3, [(1, 1), (42, 1)]), "",
     "group 3: member adjacency 42 does not exist"),
    ("zero weight", c.set_group(3, [(1, 0)]), "next_hop_group.members[0].weight", "is 0"),
    ("no members", c.set_group(3, []), "", "group 3: no members"),
    ("group id 0", c.set_group(0, [(1, 1)]), "next_hop_group.id", "is 0; ids start at 1"),
    ("unknown port", c.set_adjacency(3, "eth9", 0, MAC_A, MAC_B), "adjacency.port",
     "'eth9' is not a configured port; configured: cor-test0, cor-test1"),
    ("unknown vlan", c.set_adjacency(3, "cor-test1", 300, MAC_A, MAC_B), "adjacency.vlan",
     "300 is not a VLAN of port cor-test1; use 0 (untagged) or one of its VLANs: 100, 200"),
    ("short mac", dataplane_pb2.Operation(
        action=dataplane_pb2.ACTION_SET,
        adjacency=dataplane_pb2.Adjacency(id=3, port="cor-test0", src_mac=bytes(6),
                                          dst_mac=bytes(5))),
     "adjacency.dst_mac", "is 5 bytes; a MAC address is 6"),
    ("no action", dataplane_pb2.Operation(route=dataplane_pb2.Route()), "action",
     "0 is not an action; use ACTION_SET or ACTION_DELETE"),
    ("no entry", dataplane_pb2.Operation(action=dataplane_pb2.ACTION_SET), "entry",
     "is missing; set one of adjacency, next_hop_group, route"),
    ("twice in a batch", c.set_route("198.18.0.0/15", "blackhole"), "",
     "route 198.18.0.0/15: already changed by entry 0 of this batch"),
]  # fmt: skip


@pytest.mark.parametrize(("op", "field", "words"), [m[1:] for m in MALFORMED],
                         ids=[m[0] for m in MALFORMED])  # fmt: skip
async def test_a_malformed_operation_refuses_the_batch(agent, op, field, words) -> None:
    await write(agent, base_operations())
    before = await state(agent)
    # The bad operation at index 2, between good ones that would apply on their own.
    batch = [c.set_route("198.18.0.0/15", 2), c.set_route("203.0.113.0/24", "blackhole"), op]
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await write(agent, batch, batch_id=42)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = c.write_error(e.value)
    assert details is not None and details.batch_id == 42
    assert len(details.violations) == 1, details
    (v,) = details.violations
    assert v.HasField("operation") and v.operation == 2
    assert v.field == (f"operations[2].{field}" if field else "operations[2]")
    assert words in v.description, v.description
    assert words in e.value.details()  # the message says it too
    assert await state(agent) == before  # nothing applied


async def test_every_bad_operation_is_named(agent) -> None:
    await write(agent, base_operations())
    before = await state(agent)
    batch = [
        _route_op(V4, 40),
        c.set_route("198.18.7.0/24", "blackhole"),
        _route_op(bytes(3), 8),
        c.set_group(0, [(1, 1)]),
    ]
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await write(agent, batch)
    details = c.write_error(e.value)
    assert [(v.operation, v.field) for v in details.violations] == [
        (0, "operations[0].route.prefix.length"),
        (2, "operations[2].route.prefix.address"),
        (3, "operations[3].next_hop_group.id"),
    ]
    # The message names every one of them, not the first and a count.
    message = e.value.details()
    assert "more)" not in message
    for v in details.violations:
        assert f"operation {v.operation}: {v.description}" in message, message
    # Good syntax, bad references: the FIB names each of them as well.
    batch = [c.set_route("198.18.7.0/24", 7), c.delete_group(2), c.set_route("2001:db8::/48", 8)]
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await write(agent, batch)
    details = c.write_error(e.value)
    assert [v.operation for v in details.violations] == [0, 1, 2]
    assert await state(agent) == before


async def test_an_oversized_batch_is_refused_whole(agent) -> None:
    await write(agent, base_operations())
    before = await state(agent)
    batch = [
        c.delete_route(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}/32")
        for i in range(MAX_OPERATIONS_PER_WRITE + 1)
    ]
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await write(agent, batch)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    (v,) = c.write_error(e.value).violations
    assert not v.HasField("operation") and v.field == "operations"
    assert v.description.startswith("100001 operations exceed the maximum of 100000 per batch")
    assert await state(agent) == before


async def test_many_violations_fit_in_the_trailer(agent) -> None:
    batch = [_route_op(V4, 33 + i % 90) for i in range(5000)]
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await write(agent, batch)
    details = c.write_error(e.value)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    listed = details.violations
    assert 10 < len(listed) < 5000
    assert listed[-1].description == f"{5000 - len(listed) + 1} more violations not listed"
    assert [v.operation for v in listed[:-1]] == list(range(len(listed) - 1))


async def test_the_election(agent) -> None:
    await write(agent, base_operations(), election=PRIMARY)
    before = await state(agent)
    for election, words in [(PRIMARY - 1, "is below the primary's 0:10"), (0, "missing or zero")]:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await write(agent, [c.set_route("198.18.7.0/24", "blackhole")], election=election)
        (v,) = c.write_error(e.value).violations
        assert v.field == "election_id" and words in v.description, v.description
        expected = (
            grpc.StatusCode.PERMISSION_DENIED if election else grpc.StatusCode.INVALID_ARGUMENT
        )
        assert e.value.code() == expected
    # A deposed writer is refused before its batch is even looked at.
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await write(agent, [_route_op(V4, 33)], election=PRIMARY - 1)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert await state(agent) == before
    # A higher id (in the high half) takes over for good; the old primary stays out.
    new = (1 << 64) | 1
    await write(agent, [c.set_route("198.18.7.0/24", "blackhole")], election=new)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await write(agent, [c.delete_route("198.18.7.0/24")], election=PRIMARY)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "1:1" in e.value.details()
    assert agent.dataplane.election.highest == new


async def test_a_higher_id_counts_even_when_its_batch_is_refused(agent) -> None:
    await write(agent, [], election=PRIMARY)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await write(agent, [_route_op(V4, 33)], election=PRIMARY + 1)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await write(agent, [], election=PRIMARY)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_two_writers_race(agent) -> None:
    """Two writers interleave their batches; once the higher id has written, every batch of
    the lower one is refused, and none of them is half-applied."""
    await write(agent, base_operations())
    low, high = PRIMARY + 1, PRIMARY + 2
    results: dict[int, list] = {low: [], high: []}

    async def writer(election: int, target: str) -> None:
        for i in range(30):
            batch = [
                c.set_route(f"203.0.113.{i}/32", target),
                c.set_route("198.51.100.0/24", target),
            ]
            try:
                reply = await write(agent, batch, election=election)
                results[election].append(("ok", reply.generation))
            except grpc.aio.AioRpcError as e:
                assert e.code() == grpc.StatusCode.PERMISSION_DENIED, e
                results[election].append(("denied", None))
            await asyncio.sleep(0)

    await asyncio.gather(writer(low, "blackhole"), writer(high, "unreachable"))
    assert all(outcome == "ok" for outcome, _ in results[high])
    first_high = min(g for _, g in results[high])
    low_applied = [g for outcome, g in results[low] if outcome == "ok"]
    assert all(g < first_high for g in low_applied)
    assert len(low_applied) < 30, "the lower writer was never refused: no race happened"
    routes = {r[0]: r[1] for r in (await state(agent))["routes"]}
    assert routes["198.51.100.0/24"] == "ROUTE_KIND_UNREACHABLE"
    for i in range(30):
        assert routes[f"203.0.113.{i}/32"] == "ROUTE_KIND_UNREACHABLE"


@pytest.mark.parametrize(
    ("first", "deadline"),
    [
        ([], 0.002),  # routes only: read in Rust straight into the engine's batch, fast
        ([c.set_adjacency(1, "cor-test0", 0, MAC_A, MAC_B)], 0.05),  # read by generated code
    ],
    ids=["routes", "mixed"],
)
async def test_a_cancelled_write_leaves_a_consistent_fib(agent, first, deadline) -> None:
    """A client that gives up mid-batch: the batch is applied whole or not at all, and Read's
    generation counts it if it was."""
    batch = first + [_route_op(bytes([10, i >> 8, i & 255, 0]), 24) for i in range(50_000)]
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await agent.stub.Write(c.write_request(PRIMARY, batch), timeout=deadline)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    async with asyncio.timeout(60):
        installed = await c.read(agent.stub)
    assert (installed.generation, len(installed.routes)) in [(0, 0), (1, 50_000)]
