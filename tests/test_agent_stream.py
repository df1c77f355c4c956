"""StreamWrite: batches acknowledged in order, the first failure ends the stream with nothing
of it applied, and the full IPv4 Internet table goes in and comes back out by Read."""

from __future__ import annotations

import asyncio
import gzip
import socket
import time
from pathlib import Path

import grpc
import pytest

from corridor.agent import client as c
from corridor.v1 import common_pb2, dataplane_pb2

ELECTION = 5
BATCH = 50_000  # routes per streamed batch


def setup_operations() -> list[dataplane_pb2.Operation]:
    return [
        c.set_adjacency(1, "cor-test0", 0, "02:00:00:00:00:01", "02:00:00:00:00:02"),
        c.set_group(1, [(1, 1)]),
    ]


async def stream(agent, requests: list[dataplane_pb2.WriteRequest]) -> list:
    """Sends every request ahead of the acknowledgements and gathers the replies."""
    call = agent.stub.StreamWrite(iter(requests), timeout=600)
    return [reply async for reply in call]


async def test_batches_are_acknowledged_in_order(agent) -> None:
    requests = [c.write_request(ELECTION, setup_operations(), batch_id=100)]
    for b in range(5):
        routes = [c.set_route(f"198.18.{b}.{i * 4}/30", 1) for i in range(64)]
        requests.append(c.write_request(ELECTION, routes, batch_id=101 + b))
    replies = await stream(agent, requests)
    assert [(r.batch_id, r.operations) for r in replies] == [(100, 2)] + [
        (101 + b, 64) for b in range(5)
    ]
    assert [r.generation for r in replies] == [1, 2, 3, 4, 5, 6]
    installed = await c.read(agent.stub)
    assert len(installed.routes) == 5 * 64


async def test_the_first_bad_batch_ends_the_stream(agent) -> None:
    good = [c.set_route("198.18.1.0/24", 1)]
    bad = [c.set_route("198.18.2.0/24", 1), c.set_route("198.18.3.0/24", 9)]  # no group 9
    requests = [
        c.write_request(ELECTION, setup_operations(), batch_id=1),
        c.write_request(ELECTION, good, batch_id=2),
        c.write_request(ELECTION, bad, batch_id=3),
        c.write_request(ELECTION, [c.set_route("198.18.4.0/24", 1)], batch_id=4),
    ]
    call = agent.stub.StreamWrite(iter(requests), timeout=60)
    acknowledged = []
    with pytest.raises(grpc.aio.AioRpcError) as e:
        async for reply in call:
            acknowledged.append(reply.batch_id)
    assert acknowledged == [1, 2]
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = c.write_error(e.value)
    assert details.batch_id == 3
    assert [(v.operation, v.description) for v in details.violations] == [
        (1, "route 198.18.3.0/24: group 9 does not exist")
    ]
    routes = [c.prefix_text(r.prefix) for r in (await c.read(agent.stub)).routes]
    assert routes == ["198.18.1.0/24"]


async def test_a_deposed_writer_is_stopped_mid_stream(agent) -> None:
    queue: asyncio.Queue = asyncio.Queue()

    async def requests():
        for _ in range(3):  # bounded: three batches at most
            request = await queue.get()
            if request is None:
                return
            yield request

    call = agent.stub.StreamWrite(requests(), timeout=60)
    await queue.put(c.write_request(ELECTION, setup_operations(), batch_id=1))
    assert (await call.read()).batch_id == 1
    await agent.stub.Write(c.write_request(ELECTION + 1, []), timeout=10)  # a new primary
    await queue.put(c.write_request(ELECTION, [c.set_route("198.18.1.0/24", 1)], batch_id=2))
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call.read()
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert c.write_error(e.value).batch_id == 2
    await queue.put(None)
    assert (await c.read(agent.stub)).routes == []


def table_requests(path: Path, group: int) -> tuple[int, list[dataplane_pb2.WriteRequest]]:
    """The table at `path` (gzip, "prefix [asn]" per line) as batches of routes to `group`."""
    with gzip.open(path, "rt") as f:
        prefixes = [line.split(maxsplit=1)[0] for line in f if line.strip()]
    requests = []
    forward = dataplane_pb2.ROUTE_KIND_FORWARD
    set_ = dataplane_pb2.ACTION_SET
    for start in range(0, len(prefixes), BATCH):
        operations = []
        for text in prefixes[start : start + BATCH]:
            address, _, length = text.partition("/")
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            prefix = common_pb2.IpPrefix(
                address=socket.inet_pton(family, address), length=int(length)
            )
            route = dataplane_pb2.Route(prefix=prefix, kind=forward, next_hop_group_id=group)
            operations.append(dataplane_pb2.Operation(action=set_, route=route))
        requests.append(c.write_request(ELECTION, operations, batch_id=len(requests) + 1))
    return len(prefixes), requests


@pytest.mark.slow
async def test_the_full_ipv4_table(agent, data_dir: Path) -> None:
    count, requests = await asyncio.get_running_loop().run_in_executor(
        None, table_requests, data_dir / "ipv4-routeviews-2024-04-06.txt.gz", 1
    )
    assert count > 990_000
    await agent.stub.Write(c.write_request(ELECTION, setup_operations()), timeout=10)
    started = time.perf_counter()
    replies = await stream(agent, requests)
    loaded = time.perf_counter() - started
    assert [r.batch_id for r in replies] == list(range(1, len(requests) + 1))
    assert sum(r.operations for r in replies) == count
    assert agent.dataplane.stats["v4_routes"] == count

    started = time.perf_counter()
    installed = await c.read(agent.stub)
    read = time.perf_counter() - started
    assert len(installed.routes) == count
    assert installed.generation == len(requests) + 1
    sample = {c.prefix_text(r.prefix) for r in installed.routes[:: count // 1000]}
    with gzip.open(data_dir / "ipv4-routeviews-2024-04-06.txt.gz", "rt") as f:
        table = {line.split()[0] for line in f}
    assert sample <= table
    print(
        f"\nfull IPv4 table: {count} routes in {loaded:.1f} s over StreamWrite "
        f"({count / loaded:,.0f} routes/s, one process with the client); "
        f"Read back in {read:.1f} s ({count / read:,.0f} routes/s)"
    )
    # Replayed, the table changes nothing.
    replies = await stream(agent, requests[:2])
    assert agent.dataplane.stats["v4_routes"] == count
