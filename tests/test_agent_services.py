"""The agent's other services: ports, counters (snapshot and stream), gRPC health checking,
server reflection, Prometheus metrics; the unix socket listener."""

from __future__ import annotations

import asyncio
import itertools
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from corridor.agent import client as c
from corridor.agent.server import StartError, start_server
from corridor.common.config import HostPort, Listen
from corridor.common.metrics import MetricsServer
from corridor.v1 import dataplane_pb2, dataplane_pb2_grpc


async def test_list_ports(agent) -> None:
    reply = await agent.stub.ListPorts(dataplane_pb2.ListPortsRequest(), timeout=10)
    test0, test1 = reply.ports
    assert (test0.name, test0.queues, test0.mtu) == ("cor-test0", 2, 1500)
    assert test0.link_state == dataplane_pb2.LINK_STATE_NOT_PRESENT  # no such interface here
    assert test0.mode == dataplane_pb2.PORT_MODE_UNSPECIFIED  # no engine attached yet
    assert [(bytes(a.address), a.prefix_length) for a in test0.addresses] == [
        (bytes([198, 18, 0, 1]), 24)
    ]
    assert (test1.mtu, [s.vlan for s in test1.sub_interfaces]) == (9000, [100, 200])
    assert [a.prefix_length for a in test1.addresses] == [24, 64]
    assert test1.sub_interfaces[0].addresses[0].address == bytes([198, 18, 100, 1])


async def test_counters_snapshot(agent) -> None:
    counters = await agent.stub.GetCounters(dataplane_pb2.GetCountersRequest(), timeout=10)
    assert [(i.port, i.vlan) for i in counters.interfaces] == [
        ("cor-test0", 0),
        ("cor-test1", 0),
        ("cor-test1", 100),
        ("cor-test1", 200),
    ]
    assert [w.worker for w in counters.workers] == [0, 1]
    assert counters.time.seconds > 0


async def test_counters_stream_at_the_interval(agent) -> None:
    call = agent.stub.StreamCounters(dataplane_pb2.StreamCountersRequest(interval_ms=100))
    times = []
    async with asyncio.timeout(10):
        for _ in range(4):
            counters = await call.read()
            times.append(counters.time.ToNanoseconds() / 1e9)
    call.cancel()
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(0.05 < g < 0.5 for g in gaps), gaps


@pytest.mark.parametrize("interval_ms", [0, 99, 3_600_001])
async def test_counters_stream_refuses_a_bad_interval(agent, interval_ms: int) -> None:
    call = agent.stub.StreamCounters(dataplane_pb2.StreamCountersRequest(interval_ms=interval_ms))
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call.read()
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"interval_ms: {interval_ms} is not between 100 and 3600000" in e.value.details()


async def test_health(agent) -> None:
    health = health_pb2_grpc.HealthStub(agent.channel)
    for service in ("", "corridor.v1.Dataplane"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_and_describes_the_services(agent) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(agent.channel)
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="corridor.v1.Dataplane"),
    ]
    replies = [r async for r in stub.ServerReflectionInfo(iter(requests), timeout=10)]
    names = {s.name for s in replies[0].list_services_response.service}
    assert {"corridor.v1.Dataplane", "grpc.health.v1.Health"} <= names
    assert replies[1].file_descriptor_response.file_descriptor_proto


async def test_the_unix_socket_serves_too(agent) -> None:
    path = agent.server.unix_path
    assert path.is_socket()
    assert path.stat().st_mode & 0o777 == 0o660
    async with grpc.aio.insecure_channel(f"unix:{path}") as channel:
        stub = dataplane_pb2_grpc.DataplaneStub(channel)
        reply = await stub.Write(c.write_request(3, [c.set_route("198.18.0.0/15", "blackhole")]))
        assert reply.generation == 1


async def test_metrics(agent) -> None:
    await agent.stub.Write(
        c.write_request(
            (1 << 64) | 2,
            [c.set_route("198.18.0.0/15", "blackhole"), c.set_route("2001:db8::/32", "local")],
        ),
        timeout=10,
    )
    with pytest.raises(grpc.aio.AioRpcError):
        await agent.stub.Write(c.write_request(1, []), timeout=10)
    server = MetricsServer(agent.metrics.registry, HostPort("127.0.0.1", 0))
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        loop = asyncio.get_running_loop()
        text = await loop.run_in_executor(None, _get, url)
    finally:
        server.stop()
    for line in [
        'corridor_agent_fib_entries{table="ipv4_routes"} 1.0',
        'corridor_agent_fib_entries{table="ipv6_routes"} 1.0',
        'corridor_agent_fib_capacity{table="ipv4_routes"} 2e+06',
        'corridor_agent_write_seconds_count{outcome="applied"} 1.0',
        'corridor_agent_write_operations_total{outcome="applied"} 2.0',
        "corridor_agent_election_id_high 1.0",
        "corridor_agent_election_id_low 2.0",
        "corridor_agent_election_primary_changes_total 1.0",
        "corridor_agent_election_refusals_total 1.0",
        "corridor_agent_fib_batches_applied_total 1.0",
    ]:
        assert line in text, line


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:  # loopback only
        return response.read().decode()


async def test_a_tcp_port_in_use_stops_the_start(agent) -> None:
    # gRPC would share the port (SO_REUSEPORT) and split the clients; the agent refuses.
    with pytest.raises(StartError, match=f"cannot listen on TCP 127.0.0.1:{agent.server.port}"):
        await start_server(agent.dataplane, Listen(tcp=HostPort("127.0.0.1", agent.server.port)))


async def test_health_says_not_serving_while_stopping(agent) -> None:
    health = health_pb2_grpc.HealthStub(agent.channel)
    watch = health.Watch(health_pb2.HealthCheckRequest(service="corridor.v1.Dataplane"))
    async with asyncio.timeout(10):
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        await agent.server.health.enter_graceful_shutdown()
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
    watch.cancel()
