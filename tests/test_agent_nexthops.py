"""Next hops under live facts, against the engine's real FIB (no engine, no namespace): a port
going down takes its adjacencies out of every group at once and brings them back, an empty
group points at the drop adjacency, gateway adjacencies take their MACs from the port and the
neighbour, routes are never touched, and Read keeps showing what was written."""

from __future__ import annotations

import pytest

from corridor.agent.config import parse
from corridor.agent.domain import Dataplane
from corridor.agent.fib_adapter import EngineFib
from corridor.agent.nexthops import DROP_ADJACENCY_ID, Gateway
from corridor.common.errors import InvalidBatch
from corridor.common.fib import Adjacency, DeleteAdjacency, NextHopGroup, Route, RouteKind

P0_MAC, P1_MAC, PEER_MAC, PEER2_MAC = (
    "02:00:00:00:00:10", "02:00:00:00:00:11", "02:00:00:00:00:20", "02:00:00:00:00:21",
)  # fmt: skip
ELECTION = 1


@pytest.fixture
def dataplane(tmp_path) -> Dataplane:
    config = parse(
        {
            "listen": {"unix": "a.sock"},
            "fib": {"v4_routes": 1000, "v6_routes": 1000, "groups": 64, "adjacencies": 64},
            "ports": [{"name": "p0"}, {"name": "p1", "vlans": [{"id": 20}]}],
        },
        base=tmp_path,
    )
    return Dataplane(config, EngineFib(config.fib, ["p0", "p1"]))


def fib_groups(dp: Dataplane) -> dict[int, list[tuple[int, int]]]:
    return {g: [tuple(m) for m in members] for g, members in dp._fib._fib.groups()}


def fib_adjacency(dp: Dataplane, adjacency_id: int) -> tuple:
    return next(a for a in dp._fib._fib.adjacencies() if a[0] == adjacency_id)


async def base(dp: Dataplane) -> None:
    await dp.write(
        ELECTION,
        [
            Adjacency(1, "p0", 0, P0_MAC, PEER_MAC),
            Adjacency(2, "p1", 0, P1_MAC, PEER_MAC),
            NextHopGroup(1, ((1, 1), (2, 1))),
            NextHopGroup(2, ((1, 1),)),
            Route("198.18.0.0/24", RouteKind.FORWARD, 1),
            Route("198.18.1.0/24", RouteKind.FORWARD, 2),
        ],
    )


async def test_a_port_down_leaves_every_group_and_comes_back(dataplane: Dataplane) -> None:
    await base(dataplane)
    routes = dataplane._fib._fib.routes()
    assert await dataplane.refresh({"p0": False, "p1": True}, {}, {}) > 0
    assert fib_groups(dataplane) == {1: [(2, 1)], 2: [(DROP_ADJACENCY_ID, 1)]}
    assert dataplane.next_hop_summary == {
        "adjacencies": 2, "unresolved": 0, "link_down": 1, "empty_groups": 1,
    }  # fmt: skip
    assert dataplane._fib._fib.routes() == routes  # routes untouched
    snapshot = await dataplane.snapshot()
    assert [g.members for g in snapshot.groups] == [((1, 1), (2, 1)), ((1, 1),)]
    assert snapshot.adjacency_states[1] == ("link_down", None)
    generation = dataplane.generation
    assert await dataplane.refresh({"p0": True, "p1": True}, {}, {}) > 0
    assert fib_groups(dataplane) == {1: [(1, 1), (2, 1)], 2: [(1, 1)]}
    assert dataplane.generation == generation  # not a writer's batch
    assert await dataplane.refresh({"p0": True, "p1": True}, {}, {}) == 0  # nothing changed


async def test_a_written_group_skips_members_that_cannot_forward(dataplane: Dataplane) -> None:
    await base(dataplane)
    await dataplane.refresh({"p0": False, "p1": True}, {}, {})
    await dataplane.write(ELECTION, [NextHopGroup(3, ((1, 2), (2, 3)))])
    assert fib_groups(dataplane)[3] == [(2, 3)]
    # An adjacency moved onto the down port moves the groups that use it, unwritten.
    await dataplane.write(ELECTION, [Adjacency(2, "p0", 0, P0_MAC, PEER_MAC)])
    assert fib_groups(dataplane)[1] == [(DROP_ADJACENCY_ID, 1)]
    assert fib_groups(dataplane)[3] == [(DROP_ADJACENCY_ID, 1)]


async def test_an_adjacency_left_out_is_still_in_use(dataplane: Dataplane) -> None:
    await base(dataplane)
    await dataplane.refresh({"p0": False, "p1": True}, {}, {})
    with pytest.raises(InvalidBatch) as e:
        await dataplane.write(ELECTION, [DeleteAdjacency(1)])
    assert "adjacency 1: still used by 2 group(s)" in str(e.value)
    assert fib_adjacency(dataplane, 1)[0] == 1


async def test_a_gateway_takes_its_macs_from_port_and_neighbour(dataplane: Dataplane) -> None:
    await dataplane.write(
        ELECTION,
        [
            Adjacency(5, "p1", 20, "", "", "198.18.20.2"),
            Adjacency(6, "p1", 0, P1_MAC, PEER_MAC),
            NextHopGroup(5, ((5, 1), (6, 1))),
            Route("198.18.5.0/24", RouteKind.FORWARD, 5),
        ],
    )
    assert dataplane.gateways == {Gateway("p1", 20, "198.18.20.2")}
    await dataplane.refresh({"p0": True, "p1": True}, {"p1": P1_MAC}, {})
    assert fib_groups(dataplane)[5] == [(6, 1)]  # unresolved: left out
    assert dataplane.next_hop_summary["unresolved"] == 1
    gateway = Gateway("p1", 20, "198.18.20.2")
    await dataplane.refresh({"p0": True, "p1": True}, {"p1": P1_MAC}, {gateway: PEER_MAC})
    assert fib_adjacency(dataplane, 5) == (5, 1, 20, P1_MAC, PEER_MAC)
    assert fib_groups(dataplane)[5] == [(5, 1), (6, 1)]
    await dataplane.refresh({"p0": True, "p1": True}, {"p1": P1_MAC}, {gateway: PEER2_MAC})
    assert fib_adjacency(dataplane, 5) == (5, 1, 20, P1_MAC, PEER2_MAC)  # the MAC moved
    snapshot = await dataplane.snapshot()
    written = next(a for a in snapshot.adjacencies if a.id == 5)
    assert (written.src_mac, written.dst_mac, written.gateway) == ("", "", "198.18.20.2")
    assert snapshot.adjacency_states[5] == ("usable", PEER2_MAC)


async def test_the_gateway_form_over_grpc(agent) -> None:
    import grpc

    from corridor.agent import client as c
    from corridor.v1 import dataplane_pb2

    def gateway_op(raw: bytes, **macs: bytes) -> dataplane_pb2.Operation:
        adjacency = dataplane_pb2.Adjacency(id=9, port="cor-test1", vlan=100, gateway=raw, **macs)
        return dataplane_pb2.Operation(action=dataplane_pb2.ACTION_SET, adjacency=adjacency)

    for op, field, words in (
        (gateway_op(b"\xc6\x12\x00"), "adjacency.gateway", "is 3 bytes"),
        (gateway_op(bytes([198, 18, 100, 2]), src_mac=b"\x02" * 6), "adjacency.src_mac",
         "not both forms"),
        (gateway_op(bytes([224, 0, 0, 1])), "adjacency.gateway", "cannot be a next hop"),
    ):  # fmt: skip
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await agent.stub.Write(c.write_request(ELECTION, [op]), timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        (v,) = c.write_error(e.value).violations
        assert v.field == f"operations[0].{field}" and words in v.description, v
    ok = gateway_op(bytes([198, 18, 100, 2]))
    await agent.stub.Write(c.write_request(ELECTION, [ok, c.set_group(9, [(9, 1)])]), timeout=10)
    installed = await c.read(agent.stub)
    (a,) = installed.adjacencies
    assert a.gateway == bytes([198, 18, 100, 2]) and not a.src_mac and not a.dst_mac
    # No watch here: the port's MAC is unknown, so the gateway cannot be used yet.
    assert a.state == dataplane_pb2.ADJACENCY_STATE_UNRESOLVED and not a.neighbour_mac
    counters = await agent.stub.GetCounters(dataplane_pb2.GetCountersRequest(), timeout=10)
    assert counters.next_hops.unresolved == 1 and counters.next_hops.empty_groups == 1
