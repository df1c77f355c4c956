"""Bad input the agent must refuse with a field path, and refusals that stay small: gateways
that are not a neighbour's unicast address, source MACs that are not a station's, an all-zero
destination MAC, and a refused batch whose echoed names are 10 kB long."""

from __future__ import annotations

import ipaddress

import grpc
import pytest

from corridor.agent import client as c
from corridor.v1 import dataplane_pb2

PRIMARY = 10
MAC_A, MAC_B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"


async def refused(agent, operations) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await agent.stub.Write(c.write_request(PRIMARY, operations), timeout=30)
    return e.value


def gateway_adjacency(gateway: str) -> dataplane_pb2.Operation:
    adjacency = dataplane_pb2.Adjacency(
        id=1, port="cor-test0", vlan=0, gateway=ipaddress.ip_address(gateway).packed
    )
    return dataplane_pb2.Operation(action=dataplane_pb2.ACTION_SET, adjacency=adjacency)


@pytest.mark.parametrize(
    "gateway",
    ["255.255.255.255", "240.0.0.1", "::ffff:127.0.0.1", "::ffff:198.18.0.2", "0.0.0.1",
     "224.0.0.5", "127.0.0.1", "::1", "::", "ff02::1"],
)  # fmt: skip
async def test_a_gateway_that_is_no_neighbour_is_refused(agent, gateway: str) -> None:
    e = await refused(agent, [gateway_adjacency(gateway)])
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = c.write_error(e)
    assert details is not None
    [v] = details.violations
    assert v.field == "operations[0].adjacency.gateway"
    assert "cannot be a next hop" in v.description


@pytest.mark.parametrize("gateway", ["198.18.0.2", "2001:db8::2", "fe80::1", "169.254.0.1"])
async def test_a_neighbours_gateway_is_taken(agent, gateway: str) -> None:
    reply = await agent.stub.Write(
        c.write_request(PRIMARY, [gateway_adjacency(gateway)]), timeout=30
    )
    assert reply.operations == 1


@pytest.mark.parametrize(
    ("src", "dst", "field", "words"),
    [
        ("01:00:5e:00:00:01", MAC_B, "src_mac", "multicast"),
        ("ff:ff:ff:ff:ff:ff", MAC_B, "src_mac", "broadcast"),
        (MAC_A, "00:00:00:00:00:00", "dst_mac", "all zero"),
    ],
)
async def test_macs_that_name_no_station_are_refused(agent, src, dst, field, words) -> None:
    e = await refused(agent, [c.set_adjacency(1, "cor-test0", 0, src, dst)])
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
    [v] = c.write_error(e).violations
    assert v.field == f"operations[0].adjacency.{field}"
    assert words in v.description


async def test_a_refusal_echoing_a_10_kB_port_name_reaches_the_client(agent) -> None:
    """The status and its details travel in trailers (8 KiB by default in clients): an echoed
    name is cut to its first characters and its length, whatever the client sent."""
    name = "p" * 10240
    operations = [c.set_adjacency(i + 1, name, 0, MAC_A, MAC_B) for i in range(50)]
    e = await refused(agent, operations)
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
    details = c.write_error(e)
    assert details is not None
    assert len(e.details().encode()) <= 1024
    assert details.ByteSize() <= 4096
    first = details.violations[0]
    assert first.field == "operations[0].adjacency.port"
    assert "'" + "p" * 64 + "'… (10240 bytes)" in first.description
    assert "more violations not listed" in details.violations[-1].description
