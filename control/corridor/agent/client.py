"""For clients of corridor.v1.Dataplane (tests, tools, benchmarks): operations built from
text, the WriteError of a refused write, and a whole Read gathered into lists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from corridor.common import addresses
from corridor.common.status import election_id_to_pb, write_error
from corridor.v1 import common_pb2, dataplane_pb2, dataplane_pb2_grpc

__all__ = [
    "Installed",
    "delete_adjacency",
    "delete_group",
    "delete_route",
    "election_id",
    "prefix",
    "prefix_text",
    "read",
    "set_adjacency",
    "set_group",
    "set_route",
    "write_error",
    "write_request",
]

_KINDS = {
    "blackhole": dataplane_pb2.ROUTE_KIND_BLACKHOLE,
    "unreachable": dataplane_pb2.ROUTE_KIND_UNREACHABLE,
    "local": dataplane_pb2.ROUTE_KIND_LOCAL,
}


election_id = election_id_to_pb
prefix = addresses.checked_prefix_to_pb  # "198.18.0.0/15" as an IpPrefix; no host bits


def prefix_text(pb: common_pb2.IpPrefix) -> str:
    return addresses.prefix_text(pb.address, pb.length)


def set_route(prefix_: str, target: int | str) -> dataplane_pb2.Operation:
    """A route to next-hop group `target`, or of kind "blackhole", "unreachable" or "local"."""
    if isinstance(target, int):
        route = dataplane_pb2.Route(
            prefix=prefix(prefix_),
            kind=dataplane_pb2.ROUTE_KIND_FORWARD,
            next_hop_group_id=target,
        )
    else:
        route = dataplane_pb2.Route(prefix=prefix(prefix_), kind=_KINDS[target])
    return dataplane_pb2.Operation(action=dataplane_pb2.ACTION_SET, route=route)


def delete_route(prefix_: str) -> dataplane_pb2.Operation:
    route = dataplane_pb2.Route(prefix=prefix(prefix_))
    return dataplane_pb2.Operation(action=dataplane_pb2.ACTION_DELETE, route=route)


def set_group(id: int, members: list[tuple[int, int]]) -> dataplane_pb2.Operation:
    """Group `id` of (adjacency id, weight) members."""
    group = dataplane_pb2.NextHopGroup(
        id=id,
        members=[dataplane_pb2.NextHopGroup.Member(adjacency_id=a, weight=w) for a, w in members],
    )
    return dataplane_pb2.Operation(action=dataplane_pb2.ACTION_SET, next_hop_group=group)


def delete_group(id: int) -> dataplane_pb2.Operation:
    group = dataplane_pb2.NextHopGroup(id=id)
    return dataplane_pb2.Operation(action=dataplane_pb2.ACTION_DELETE, next_hop_group=group)


def set_adjacency(
    id: int, port: str, vlan: int, src_mac: str, dst_mac: str
) -> dataplane_pb2.Operation:
    """MACs as "aa:bb:cc:dd:ee:ff"."""
    adjacency = dataplane_pb2.Adjacency(
        id=id,
        port=port,
        vlan=vlan,
        src_mac=bytes.fromhex(src_mac.replace(":", "")),
        dst_mac=bytes.fromhex(dst_mac.replace(":", "")),
    )
    return dataplane_pb2.Operation(action=dataplane_pb2.ACTION_SET, adjacency=adjacency)


def delete_adjacency(id: int) -> dataplane_pb2.Operation:
    adjacency = dataplane_pb2.Adjacency(id=id)
    return dataplane_pb2.Operation(action=dataplane_pb2.ACTION_DELETE, adjacency=adjacency)


def set_member(
    id: int,
    port: str,
    vlan: int,
    mac: str,
    name: str = "",
    sources: Sequence[str] | None = None,
) -> dataplane_pb2.Operation:
    """Member `id`: the router with `mac` ("aa:bb:...") on `port`, `vlan`; `sources`, its
    source filter (BCP 38) as prefix texts, None for none."""
    member = dataplane_pb2.Member(
        id=id,
        port=port,
        vlan=vlan,
        mac=bytes.fromhex(mac.replace(":", "")),
        name=name,
        filter_sources=sources is not None,
        allowed_sources=[addresses.checked_prefix_to_pb(p) for p in sources or ()],
    )
    return dataplane_pb2.Operation(action=dataplane_pb2.ACTION_SET, member=member)


def delete_member(id: int) -> dataplane_pb2.Operation:
    member = dataplane_pb2.Member(id=id)
    return dataplane_pb2.Operation(action=dataplane_pb2.ACTION_DELETE, member=member)


def write_request(
    election: int, operations: list[dataplane_pb2.Operation], batch_id: int = 0
) -> dataplane_pb2.WriteRequest:
    return dataplane_pb2.WriteRequest(
        election_id=election_id(election), operations=operations, batch_id=batch_id
    )


@dataclass
class Installed:
    """Everything one Read returned."""

    generation: int = 0
    ports: list[dataplane_pb2.Port] = field(default_factory=list)
    adjacencies: list[dataplane_pb2.Adjacency] = field(default_factory=list)
    next_hop_groups: list[dataplane_pb2.NextHopGroup] = field(default_factory=list)
    routes: list[dataplane_pb2.Route] = field(default_factory=list)
    members: list[dataplane_pb2.Member] = field(default_factory=list)


async def read(stub: dataplane_pb2_grpc.DataplaneStub) -> Installed:
    """Gathers one Read; bound its time with the caller's asyncio.timeout."""
    installed = Installed()
    async for response in stub.Read(dataplane_pb2.ReadRequest()):
        installed.generation = response.generation
        installed.ports.extend(response.ports)
        installed.adjacencies.extend(response.adjacencies)
        installed.next_hop_groups.extend(response.next_hop_groups)
        installed.routes.extend(response.routes)
        installed.members.extend(response.members)
    return installed
