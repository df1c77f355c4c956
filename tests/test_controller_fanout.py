"""Update groups: nodes whose intent is the routes for every node share one intended FIB,
one installed FIB, one diff and the same encoded writes. A node that diverges (a route or a
drain of its own, an agent restarted empty) leaves the group and is brought to its own
intent alone, and every node's FIB stays exactly what intent says."""

from __future__ import annotations

import ipaddress
from pathlib import Path

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

GW_A = ("198.18.0.2", "cor-c0", 0, 1)
GW_B = ("198.19.0.2", "cor-c1", 100, 2)
COMMON = [f"10.{i >> 8}.{i & 255}.0/24" for i in range(3000)]


@pytest.fixture
async def lab(tmp_path: Path):
    a = await LocalAgent(tmp_path / "a.sock").start()
    b = await LocalAgent(tmp_path / "b.sock").start()
    running = await start_controller(
        controller_document(tmp_path, {"a": a.address, "b": b.address}, drift=600), tmp_path
    )
    channel, stub = controller_stub(tmp_path / "controller.sock")
    agents = {"a": a, "b": b}
    try:
        yield agents, running, stub
    finally:
        await channel.close()
        await running.stop(0)
        for agent in agents.values():
            await agent.stop()


async def apply(stub, routes) -> int:
    reply = await stub.Apply(controller_pb2.ApplyRequest(routes=routes), timeout=30)
    return reply.revision


async def in_sync(stub, revision: int) -> None:
    for name in ("a", "b"):
        await wait_in_sync(stub, name, revision)


async def fib(agent: LocalAgent) -> dict[str, tuple[int, tuple[tuple[str, int], ...]]]:
    """prefix -> (kind, the gateways and weights of its group): what forwarding does."""
    installed = await agent_client.read(agent.stub)
    gateways = {a.id: str(ipaddress.ip_address(a.gateway)) for a in installed.adjacencies}
    groups = {
        g.id: tuple(sorted((gateways[m.adjacency_id], m.weight) for m in g.members))
        for g in installed.next_hop_groups
    }
    return {
        agent_client.prefix_text(r.prefix): (r.kind, groups.get(r.next_hop_group_id, ()))
        for r in installed.routes
    }


def expected(routes: dict[str, tuple[int, tuple[tuple[str, int], ...]]], **own):
    out = dict(routes)
    out.update(own)
    return out


BOTH = (1, ((GW_A[0], 1), (GW_B[0], 2)))
ONLY_A = (1, ((GW_A[0], 1),))
BLACKHOLE = (2, ())


async def test_nodes_share_a_group_and_leave_it_when_they_diverge(lab) -> None:
    agents, running, stub = lab
    sessions = running.controller.sessions
    revision = await apply(stub, [route(p, GW_A, GW_B) for p in COMMON])
    await in_sync(stub, revision)
    common = dict.fromkeys(COMMON, BOTH)
    assert await fib(agents["a"]) == common and await fib(agents["b"]) == common
    group = sessions["a"].group
    assert group is not None and sessions["b"].group is group
    assert sessions["a"].desired is sessions["b"].desired is group.desired

    # a's own routes: one overriding a common prefix, one new; a leaves, b stays.
    revision = await apply(
        stub, [route(COMMON[0], node="a", kind=2), route("198.18.9.0/24", node="a", kind=2)]
    )
    await in_sync(stub, revision)
    assert sessions["a"].group is None and sessions["b"].group is group
    own = {COMMON[0]: BLACKHOLE, "198.18.9.0/24": BLACKHOLE}
    assert await fib(agents["a"]) == expected(common, **own)
    assert await fib(agents["b"]) == common

    # A common change reaches the group and the node alone alike.
    revision = await apply(stub, [route(p, GW_A) for p in COMMON[:10]])
    await in_sync(stub, revision)
    common.update(dict.fromkeys(COMMON[:10], ONLY_A))
    assert await fib(agents["a"]) == expected(common, **own)
    assert await fib(agents["b"]) == common

    # Its own routes gone, a joins again (at its next pass) and holds the common FIB.
    deleted = await stub.Delete(
        controller_pb2.DeleteRequest(
            routes=[key(COMMON[0], node="a"), key("198.18.9.0/24", node="a")]
        )
    )
    revision = await apply(stub, [route(COMMON[-1], GW_A)])
    assert revision == deleted.revision + 1
    await in_sync(stub, revision)
    common[COMMON[-1]] = ONLY_A
    await eventually(
        lambda: _async(sessions["a"].group is group is sessions["b"].group), 10, "a rejoined"
    )
    assert await fib(agents["a"]) == common and await fib(agents["b"]) == common

    # A drain on a alone: a leaves again; its groups lose the drained next hop, b's do not.
    drained = await stub.SetNextHopState(
        controller_pb2.SetNextHopStateRequest(
            node="a", gateway=bytes([198, 19, 0, 2]), port="cor-c1", vlan=100, drained=True
        )
    )
    await in_sync(stub, drained.revision)
    assert sessions["a"].group is None and sessions["b"].group is group
    a_fib = await fib(agents["a"])
    assert {v for p, v in a_fib.items()} == {ONLY_A}
    assert await fib(agents["b"]) == common


async def test_a_member_restarted_empty_is_repaired_and_rejoins(lab, tmp_path: Path) -> None:
    agents, running, stub = lab
    sessions = running.controller.sessions
    revision = await apply(stub, [route(p, GW_A, GW_B) for p in COMMON])
    await in_sync(stub, revision)
    group = sessions["b"].group
    assert group is not None and sessions["a"].group is group
    # b's agent restarts with an empty FIB: its session fails, leaves, reads and repairs.
    await agents["b"].stop()
    agents["b"] = await LocalAgent(tmp_path / "b.sock").start()
    assert await fib(agents["b"]) == {}
    common = dict.fromkeys(COMMON, BOTH)

    async def repaired():
        status = await stub.GetNodeStatus(controller_pb2.GetNodeStatusRequest(name="b"))
        return status.reconnects >= 1 and status.in_sync and await fib(agents["b"]) == common

    await eventually(repaired, 30, "b repaired")
    # Then a change reaches both, b on its own path or in the group, with no further failure.
    revision = await apply(stub, [route(p, GW_A) for p in COMMON[:5]])
    common.update(dict.fromkeys(COMMON[:5], ONLY_A))
    await in_sync(stub, revision)
    assert await fib(agents["a"]) == common and await fib(agents["b"]) == common
    status = await stub.GetNodeStatus(controller_pb2.GetNodeStatusRequest(name="b"))
    assert status.reconnects == 1 and not status.last_error, status
    # Both hold all of intent again: the next change finds them in one group.
    revision = await apply(stub, [route(COMMON[5], GW_A)])
    await in_sync(stub, revision)
    common[COMMON[5]] = ONLY_A
    await eventually(
        lambda: _async(sessions["a"].group is not None and sessions["a"].group is
                       sessions["b"].group), 10, "b rejoined",
    )  # fmt: skip
    assert await fib(agents["a"]) == common and await fib(agents["b"]) == common


async def _record_is_the_node(session, agent: LocalAgent) -> None:
    """The session's record of what its node holds equals what the node reports, reference
    counts included (the record decides what the next diff writes)."""
    from corridor.controller.domain import NodeFib
    from corridor.controller.reconciler import _read

    node, _, _, _ = await _read(agent.stub)
    record = session._installed
    assert isinstance(record, NodeFib) and isinstance(node, NodeFib)
    for field in ("routes", "groups", "adjacencies", "v6_routes"):
        assert getattr(record, field) == getattr(node, field), field
    for field in ("group_refs", "adjacency_refs"):  # a zero count is no reference
        assert +getattr(record, field) == +getattr(node, field), field


async def test_a_full_sync_records_what_the_node_then_holds(lab, tmp_path: Path) -> None:
    """A full sync takes the FIB it wrote toward as its record of the node once every batch
    is acknowledged, instead of recording batch by batch: the record must be the node's FIB,
    and the changes after it must be written exactly."""
    agents, running, stub = lab
    v6 = [f"2001:db8:{i:x}::/48" for i in range(300)]
    revision = await apply(stub, [route(p, GW_A, GW_B) for p in COMMON + v6])
    # A route of b's own keeps it out of the update group: its session records alone.
    revision = await apply(stub, [route("198.18.200.0/24", GW_A, node="b")])
    await in_sync(stub, revision)
    # b restarts empty: a full sync writes its whole table.
    await agents["b"].stop()
    agents["b"] = await LocalAgent(tmp_path / "b.sock").start()

    async def repaired():
        status = await stub.GetNodeStatus(controller_pb2.GetNodeStatusRequest(name="b"))
        return status.reconnects >= 1 and status.in_sync

    await eventually(repaired, 30, "b repaired")
    session = running.controller.sessions["b"]
    assert session.group is None
    await _record_is_the_node(session, agents["b"])
    # Changes after it: routes re-pointed (a group let go, one taken), others deleted.
    revision = await apply(stub, [route(p, GW_A) for p in COMMON[:100]])
    await stub.Delete(controller_pb2.DeleteRequest(routes=[key(p) for p in v6[:50]]), timeout=30)
    revision = await apply(stub, [route(p, GW_B) for p in COMMON[100:110]])
    await in_sync(stub, revision)
    await _record_is_the_node(running.controller.sessions["b"], agents["b"])
    want = dict.fromkeys(COMMON, BOTH) | dict.fromkeys(COMMON[:100], ONLY_A)
    assert {p: v for p, v in (await fib(agents["b"])).items() if ":" not in p} == want | {
        p: (1, (("198.19.0.2", 2),)) for p in COMMON[100:110]
    } | {"198.18.200.0/24": ONLY_A}
    assert sum(":" in p for p in await fib(agents["b"])) == 250


async def _async(value):
    return value
