"""Exchange members through corridor.v1.Dataplane against a real agent and the engine's FIB:
written, read back, listed in the counters; bad members refused whole with the field named;
the election guards them like every write."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from corridor.agent import client as c
from corridor.common.status import write_error
from corridor.v1 import dataplane_pb2

PRIMARY = 10
A, B, C = "02:00:00:00:aa:01", "02:00:00:00:bb:02", "02:00:00:00:cc:03"


async def write(agent, operations, election=PRIMARY):
    return await agent.stub.Write(c.write_request(election, operations), timeout=30)


async def members(agent) -> list[tuple[int, str, int, str, str]]:
    async with asyncio.timeout(60):
        installed = await c.read(agent.stub)
    return sorted((m.id, m.port, m.vlan, m.mac.hex(":"), m.name) for m in installed.members)


async def test_members_written_read_and_counted(agent) -> None:
    await write(
        agent,
        [
            c.set_member(0, "cor-test0", 0, A, "alpha"),
            c.set_member(1, "cor-test0", 0, B, "bravo"),
            c.set_member(2, "cor-test1", 100, C, "charlie"),
        ],
    )
    assert await members(agent) == [
        (0, "cor-test0", 0, A, "alpha"),
        (1, "cor-test0", 0, B, "bravo"),
        (2, "cor-test1", 100, C, "charlie"),
    ]
    assert agent.dataplane._fib.members() == [
        (0, "cor-test0", 0, A),
        (1, "cor-test0", 0, B),
        (2, "cor-test1", 100, C),
    ]
    counters = await agent.stub.GetCounters(dataplane_pb2.GetCountersRequest(), timeout=30)
    listed = [(m.id, m.name, m.port, m.vlan, m.rx_packets, m.unknown) for m in counters.members]
    assert listed == [
        (0, "alpha", "cor-test0", 0, 0, False),
        (1, "bravo", "cor-test0", 0, 0, False),
        (2, "charlie", "cor-test1", 100, 0, False),
    ]
    # Replaced by id, deleted by id; deleting what is absent is fine.
    await write(agent, [c.set_member(1, "cor-test1", 0, B, "bravo"), c.delete_member(2)])
    await write(agent, [c.delete_member(2), c.delete_member(999)])
    assert await members(agent) == [
        (0, "cor-test0", 0, A, "alpha"),
        (1, "cor-test1", 0, B, "bravo"),
    ]


@pytest.mark.parametrize(
    ("operation", "field", "words"),
    [
        (c.set_member(0, "nope", 0, A), "member.port", "not a configured port"),
        (c.set_member(0, "cor-test0", 7, A), "member.vlan", "not a VLAN of port cor-test0"),
        (c.set_member(0, "cor-test0", 0, "01:00:5e:00:00:01"), "member.mac", "not a unicast"),
        (c.set_member(0, "cor-test0", 0, "00:00:00:00:00:00"), "member.mac", "not a unicast"),
        (c.set_member(1024, "cor-test0", 0, A), "member.id", "not between 0 and 1023"),
        (c.delete_member(5000), "member.id", "not between 0 and 1023"),
        (c.set_member(0, "cor-test0", 0, A, "x" * 65), "member.name", "at most 64"),
    ],
)
async def test_bad_members_refused_whole(agent, operation, field, words) -> None:
    good = c.set_member(3, "cor-test0", 0, C)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await write(agent, [good, operation])
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    error = write_error(e.value)
    assert error is not None
    assert [(v.operation, v.field) for v in error.violations] == [(1, f"operations[1].{field}")]
    assert words in error.violations[0].description
    assert await members(agent) == [], "nothing of the batch applied"


async def test_a_short_mac_and_a_taken_mac_are_refused(agent) -> None:
    short = c.set_member(0, "cor-test0", 0, A)
    short.member.mac = b"\x02\x00\x00"
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await write(agent, [short])
    assert "is 3 bytes; a MAC address is 6" in (e.value.details() or "")
    await write(agent, [c.set_member(0, "cor-test0", 0, A)])
    # The engine refuses a second member with the same MAC on the same sub-interface.
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await write(agent, [c.set_member(1, "cor-test0", 0, A)])
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "is member 0's" in (e.value.details() or "")
    # On another VLAN the same MAC is another member.
    await write(agent, [c.set_member(1, "cor-test1", 100, A)])
    assert [m[0] for m in await members(agent)] == [0, 1]


async def test_election_guards_members(agent) -> None:
    await write(agent, [c.set_member(0, "cor-test0", 0, A)], election=PRIMARY)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await write(agent, [c.delete_member(0)], election=PRIMARY - 1)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert [m[0] for m in await members(agent)] == [0]


async def test_source_filters_written_read_and_replaced(agent) -> None:
    own = ["198.18.0.0/24", "2001:db8:1::/48", "198.18.0.0/24"]
    await write(agent, [c.set_member(0, "cor-test0", 0, A, "alpha", sources=own)])
    async with asyncio.timeout(60):
        [m] = (await c.read(agent.stub)).members
    assert m.filter_sources
    assert [(p.address, p.length) for p in m.allowed_sources] == [
        (bytes([198, 18, 0, 0]), 24),
        (bytes.fromhex("20010db8000100000000000000000000"), 48),
    ], "each once, IPv4 first"
    assert agent.dataplane._fib.member_sources(0) == ["198.18.0.0/24", "2001:db8:1::/48"]
    # An empty filter is a filter: nothing may be sent.
    await write(agent, [c.set_member(0, "cor-test0", 0, A, "alpha", sources=[])])
    assert agent.dataplane._fib.member_sources(0) == []
    await write(agent, [c.set_member(0, "cor-test0", 0, A, "alpha")])
    assert agent.dataplane._fib.member_sources(0) is None


def _filtered(*prefixes: tuple[bytes, int], on: bool = True) -> dataplane_pb2.Operation:
    op = c.set_member(0, "cor-test0", 0, A, "alpha", sources=[])
    op.member.filter_sources = on
    for address, length in prefixes:
        op.member.allowed_sources.add(address=address, length=length)
    return op


@pytest.mark.parametrize(
    ("operation", "field", "words"),
    [
        (_filtered((bytes([198, 18, 0, 1]), 24)), "member.allowed_sources[0].address", "host bits"),
        (_filtered((bytes([198, 18, 0, 0]), 33)), "member.allowed_sources[0].length", "exceeds 32"),
        (_filtered((b"\xc6\x12", 16)), "member.allowed_sources[0].address", "is 2 bytes"),
        (
            _filtered((bytes([198, 18, 0, 0]), 24), on=False),
            "member.allowed_sources",
            "without filter_sources",
        ),
        (
            _filtered(*[(bytes([198, 18, i >> 8, i & 255]), 32) for i in range(4097)]),
            "member.allowed_sources",
            "4097 prefixes exceed the limit of 4096",
        ),
    ],
)
async def test_bad_source_filters_refused_whole(agent, operation, field, words) -> None:
    good = c.set_member(3, "cor-test0", 0, C)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await write(agent, [good, operation])
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    error = write_error(e.value)
    assert error is not None
    assert [(v.operation, v.field) for v in error.violations] == [(1, f"operations[1].{field}")]
    assert words in error.violations[0].description
    assert await members(agent) == [], "nothing of the batch applied"
