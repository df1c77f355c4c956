"""corridor.v1.Dataplane over gRPC: protobuf in, domain values to the Dataplane, protobuf and
status codes out. Syntax is checked here, where the field paths are known; what the FIB
checks comes back as domain violations. `_refuse` is the one place errors become statuses.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import NoReturn

import grpc
from google.protobuf import any_pb2, timestamp_pb2

from corridor.agent import domain
from corridor.agent.client import STATUS_DETAILS_KEY
from corridor.agent.config import PortConfig
from corridor.agent.domain import (
    MAX_OPERATIONS_PER_WRITE,
    Adjacency,
    DeleteAdjacency,
    DeleteGroup,
    DeleteRoute,
    InvalidBatch,
    NextHopGroup,
    NotPrimary,
    Operation,
    Route,
    RouteKind,
    Violation,
)
from corridor.v1 import common_pb2, dataplane_pb2, dataplane_pb2_grpc

READ_CHUNK = 10_000  # entries per ReadResponse
COUNTERS_INTERVAL_MS = (100, 3_600_000)
# Trailing metadata must stay well below gRPC's default 8 KiB limit of clients, so the
# violations listed in a status stop at this many bytes; a last one counts the rest.
DETAILS_BUDGET = 4096

_KIND_FROM_PB = {
    dataplane_pb2.ROUTE_KIND_FORWARD: RouteKind.FORWARD,
    dataplane_pb2.ROUTE_KIND_BLACKHOLE: RouteKind.BLACKHOLE,
    dataplane_pb2.ROUTE_KIND_UNREACHABLE: RouteKind.UNREACHABLE,
    dataplane_pb2.ROUTE_KIND_LOCAL: RouteKind.LOCAL,
}
_KIND_TO_PB = {kind: pb for pb, kind in _KIND_FROM_PB.items()}
_FAMILY = {4: (socket.AF_INET, 32, "IPv4"), 16: (socket.AF_INET6, 128, "IPv6")}


class DataplaneService(dataplane_pb2_grpc.DataplaneServicer):
    def __init__(self, dataplane: domain.Dataplane) -> None:
        self.dataplane = dataplane

    async def Write(self, request, context):
        return await self._write(request, context)

    async def StreamWrite(self, request_iterator, context):
        # One batch at a time: the next is read only once this one is applied and
        # acknowledged, so HTTP/2 flow control paces a client that runs ahead.
        async for request in request_iterator:
            yield await self._write(request, context)

    async def _write(self, request, context) -> dataplane_pb2.WriteResponse:
        loop = asyncio.get_running_loop()
        batch_id = request.batch_id
        try:
            # An id counts from the moment it is presented, whatever becomes of its batch,
            # and a deposed writer hears so before anything else is said about its batch.
            self.dataplane.election.present(election_id_from_pb(request.election_id))
            # Translation is Python work proportional to the batch: off the event loop.
            election_id, operations = await loop.run_in_executor(
                None, translate_write, request, self.dataplane
            )
            result = await self.dataplane.write(election_id, operations)
        except InvalidBatch as e:
            await _refuse(context, grpc.StatusCode.INVALID_ARGUMENT, e, batch_id, e.violations)
        except NotPrimary as e:
            violation = Violation(None, "election_id", str(e))
            await _refuse(context, grpc.StatusCode.PERMISSION_DENIED, e, batch_id, [violation])
        return dataplane_pb2.WriteResponse(
            batch_id=batch_id, operations=result.operations, generation=result.generation
        )

    async def Read(self, request, context) -> AsyncIterator[dataplane_pb2.ReadResponse]:
        loop = asyncio.get_running_loop()
        snapshot = await self.dataplane.snapshot()
        generation = snapshot.generation
        ports = await loop.run_in_executor(None, ports_to_pb, self.dataplane)
        yield dataplane_pb2.ReadResponse(generation=generation, ports=ports)
        states = snapshot.adjacency_states
        for chunk in _chunks(snapshot.adjacencies):
            adjacencies = [
                adjacency_to_pb(a, self.dataplane.ports, states.get(a.id)) for a in chunk
            ]
            yield dataplane_pb2.ReadResponse(generation=generation, adjacencies=adjacencies)
        for chunk in _chunks(snapshot.groups):
            groups = [group_to_pb(g) for g in chunk]
            yield dataplane_pb2.ReadResponse(generation=generation, next_hop_groups=groups)
        for chunk in _chunks(snapshot.routes):
            yield await loop.run_in_executor(None, routes_response, chunk, generation)

    async def GetCounters(self, request, context) -> dataplane_pb2.Counters:
        return await _counters(self.dataplane)

    async def StreamCounters(self, request, context) -> AsyncIterator[dataplane_pb2.Counters]:
        low, high = COUNTERS_INTERVAL_MS
        if not low <= request.interval_ms <= high:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"interval_ms: {request.interval_ms} is not between {low} and {high}",
            )
        loop = asyncio.get_running_loop()
        interval = request.interval_ms / 1000
        deadline = loop.time()
        while True:  # until the client cancels or the server stops
            yield await _counters(self.dataplane)
            # Keep the cadence: sleep to the next tick, not a full interval after the send.
            deadline = max(deadline + interval, loop.time())
            await asyncio.sleep(deadline - loop.time())

    async def ListPorts(self, request, context) -> dataplane_pb2.ListPortsResponse:
        loop = asyncio.get_running_loop()
        ports = await loop.run_in_executor(None, ports_to_pb, self.dataplane)
        return dataplane_pb2.ListPortsResponse(ports=ports)


async def _counters(dataplane: domain.Dataplane) -> dataplane_pb2.Counters:
    engine = dataplane.engine
    raw = None
    if engine is not None:
        raw = await asyncio.get_running_loop().run_in_executor(None, engine.counters)
    return counters_to_pb(dataplane, raw)


async def _refuse(
    context: grpc.aio.ServicerContext,
    code: grpc.StatusCode,
    error: Exception,
    batch_id: int,
    violations: Sequence[Violation],
) -> NoReturn:
    """Ends the call with `code`, the error's message, and a WriteError in the details."""
    message = str(error)
    details = dataplane_pb2.WriteError(batch_id=batch_id)
    for i, v in enumerate(violations):
        details.violations.append(violation_to_pb(v))
        if details.ByteSize() > DETAILS_BUDGET and i + 1 < len(violations):
            details.violations[-1].CopyFrom(
                dataplane_pb2.WriteError.Violation(
                    field="operations",
                    description=f"{len(violations) - i} more violations not listed",
                )
            )
            break
    packed = any_pb2.Any()
    packed.Pack(details)
    status = common_pb2.Status(code=code.value[0], message=message, details=[packed])
    await context.abort(
        code, message, trailing_metadata=((STATUS_DETAILS_KEY, status.SerializeToString()),)
    )
    raise AssertionError("context.abort returned")


def violation_to_pb(v: Violation) -> dataplane_pb2.WriteError.Violation:
    pb = dataplane_pb2.WriteError.Violation(field=v.field, description=v.description)
    if v.index is not None:
        pb.operation = v.index
    return pb


# --- protobuf -> domain --------------------------------------------------------------


def translate_write(
    request: dataplane_pb2.WriteRequest, dataplane: domain.Dataplane
) -> tuple[int, list[Operation]]:
    """The election id and operations of a request, or InvalidBatch naming every fault."""
    count = len(request.operations)
    if count > MAX_OPERATIONS_PER_WRITE:
        raise InvalidBatch(
            [
                Violation(
                    None,
                    "operations",
                    f"{count} operations exceed the maximum of {MAX_OPERATIONS_PER_WRITE} "
                    "per batch; split them (StreamWrite takes any number of batches)",
                )
            ]
        )
    election_id = election_id_from_pb(request.election_id)
    violations: list[Violation] = []
    if election_id == 0:
        violations.append(
            Violation(None, "election_id", "is missing or zero; every write needs one above 0")
        )
    operations: list[Operation] = []
    for i, op in enumerate(request.operations):
        try:
            operations.append(operation_from_pb(op, dataplane))
        except _Fault as fault:
            violations.append(Violation(i, f"operations[{i}].{fault.field}", fault.description))
    if violations:
        dataplane.refuse(count)
        raise InvalidBatch(violations)
    return election_id, operations


def election_id_from_pb(election_id: common_pb2.ElectionId) -> int:
    return (election_id.high << 64) | election_id.low


class _Fault(Exception):
    def __init__(self, field: str, description: str) -> None:
        self.field = field
        self.description = description


def operation_from_pb(op: dataplane_pb2.Operation, dataplane: domain.Dataplane) -> Operation:
    entry = op.WhichOneof("entry")
    action = op.action
    if entry is None:
        raise _Fault("entry", "is missing; set one of adjacency, next_hop_group, route")
    if action == dataplane_pb2.ACTION_SET:
        if entry == "route":
            return route_from_pb(op.route)
        if entry == "next_hop_group":
            return group_from_pb(op.next_hop_group)
        return adjacency_from_pb(op.adjacency, dataplane)
    if action == dataplane_pb2.ACTION_DELETE:
        if entry == "route":
            return DeleteRoute(prefix_from_pb(op.route.prefix, "route.prefix"))
        if entry == "next_hop_group":
            return DeleteGroup(_id(op.next_hop_group.id, "next_hop_group.id"))
        return DeleteAdjacency(_id(op.adjacency.id, "adjacency.id"))
    raise _Fault("action", f"{action} is not an action; use ACTION_SET or ACTION_DELETE")


def route_from_pb(route: dataplane_pb2.Route) -> Route:
    prefix = prefix_from_pb(route.prefix, "route.prefix")
    pb_kind = route.kind
    group = route.next_hop_group_id
    kind = _KIND_FROM_PB.get(pb_kind)
    if kind is None:
        raise _Fault(
            "route.kind",
            f"{pb_kind} is not a route kind; use FORWARD, BLACKHOLE, UNREACHABLE or LOCAL",
        )
    if kind is RouteKind.FORWARD:
        if group == 0:
            raise _Fault(
                "route.next_hop_group_id", f"route {prefix}: a FORWARD route needs a group id"
            )
        return Route(prefix, kind, group)
    if group != 0:
        raise _Fault(
            "route.next_hop_group_id",
            f"route {prefix}: a {kind.name} route has no next-hop group; leave it 0",
        )
    return Route(prefix, kind)


def prefix_from_pb(prefix: common_pb2.IpPrefix, field: str) -> str:
    # Runs once per route of a full table: each protobuf field is read once.
    address = prefix.address
    length = prefix.length
    family = _FAMILY.get(len(address))
    if family is None:
        raise _Fault(
            f"{field}.address",
            f"is {len(address)} bytes; an IPv4 address is 4 bytes and an IPv6 address 16",
        )
    af, bits, name = family
    text = socket.inet_ntop(af, address)
    if length > bits:
        raise _Fault(f"{field}.length", f"{text}/{length}: prefix length {length} exceeds {bits}")
    value = int.from_bytes(address)
    host = value & ((1 << (bits - length)) - 1)
    if host:
        network = socket.inet_ntop(af, (value ^ host).to_bytes(len(address)))
        raise _Fault(
            f"{field}.address",
            f"{text}/{length}: host bits set (the {name} network is {network}/{length})",
        )
    return f"{text}/{length}"


def group_from_pb(group: dataplane_pb2.NextHopGroup) -> NextHopGroup:
    group_id = _id(group.id, "next_hop_group.id")
    members = []
    for j, m in enumerate(group.members):
        _id(m.adjacency_id, f"next_hop_group.members[{j}].adjacency_id")
        if m.weight == 0:
            raise _Fault(f"next_hop_group.members[{j}].weight", "is 0; a weight is 1 or more")
        members.append((m.adjacency_id, m.weight))
    return NextHopGroup(group_id, tuple(members))


def adjacency_from_pb(adjacency: dataplane_pb2.Adjacency, dataplane: domain.Dataplane) -> Adjacency:
    adjacency_id = _id(adjacency.id, "adjacency.id")
    gateway = _gateway(adjacency)
    port = dataplane.port_index(adjacency.port)
    if port is None:
        configured = ", ".join(p.name for p in dataplane.ports) or "none"
        raise _Fault(
            "adjacency.port",
            f"{adjacency.port!r} is not a configured port; configured: {configured}",
        )
    vlans = dataplane.port_vlans(port)
    if adjacency.vlan != 0 and adjacency.vlan not in vlans:
        choices = ", ".join(map(str, vlans)) or "none"
        raise _Fault(
            "adjacency.vlan",
            f"{adjacency.vlan} is not a VLAN of port {adjacency.port}; use 0 (untagged) "
            f"or one of its VLANs: {choices}",
        )
    if gateway is not None:
        return Adjacency(adjacency_id, port, adjacency.vlan, "", "", gateway)
    return Adjacency(
        adjacency_id,
        port,
        adjacency.vlan,
        _mac(adjacency.src_mac, "adjacency.src_mac"),
        _mac(adjacency.dst_mac, "adjacency.dst_mac"),
    )


def _gateway(adjacency: dataplane_pb2.Adjacency) -> str | None:
    """The gateway form's address text, None for the explicit form."""
    raw = adjacency.gateway
    if not raw:
        return None
    if len(raw) not in (4, 16):
        raise _Fault(
            "adjacency.gateway",
            f"is {len(raw)} bytes; an IPv4 address is 4 bytes and an IPv6 address 16",
        )
    address = ipaddress.ip_address(raw)
    if address.is_multicast or address.is_unspecified or address.is_loopback:
        raise _Fault("adjacency.gateway", f"{address} cannot be a next hop (a unicast address)")
    for name in ("src_mac", "dst_mac"):
        if getattr(adjacency, name):
            raise _Fault(
                f"adjacency.{name}",
                f"is set with gateway {address}; give either the gateway (the agent resolves"
                " the MACs) or both MACs, not both forms",
            )
    return str(address)


def _id(value: int, field: str) -> int:
    if value == 0:
        raise _Fault(field, "is 0; ids start at 1")
    return value


def _mac(value: bytes, field: str) -> str:
    if len(value) != 6:
        raise _Fault(field, f"is {len(value)} bytes; a MAC address is 6")
    return value.hex(":")


# --- domain -> protobuf --------------------------------------------------------------


def routes_response(routes: Iterable[Route], generation: int) -> dataplane_pb2.ReadResponse:
    """One ReadResponse of routes; filled in place, the cheapest way to build many."""
    response = dataplane_pb2.ReadResponse(generation=generation)
    add = response.routes.add
    forward = RouteKind.FORWARD
    pton = socket.inet_pton
    for r in routes:
        pb = add()
        address, _, length = r.prefix.partition("/")
        prefix = pb.prefix
        prefix.address = pton(socket.AF_INET6 if ":" in address else socket.AF_INET, address)
        prefix.length = int(length)
        if r.kind is forward:
            pb.kind = dataplane_pb2.ROUTE_KIND_FORWARD
            pb.next_hop_group_id = r.group
        else:
            pb.kind = _KIND_TO_PB[r.kind]
    return response


def group_to_pb(group: NextHopGroup) -> dataplane_pb2.NextHopGroup:
    members = [
        dataplane_pb2.NextHopGroup.Member(adjacency_id=a, weight=w) for a, w in group.members
    ]
    return dataplane_pb2.NextHopGroup(id=group.id, members=members)


_STATE_TO_PB = {
    "usable": dataplane_pb2.ADJACENCY_STATE_USABLE,
    "unresolved": dataplane_pb2.ADJACENCY_STATE_UNRESOLVED,
    "link_down": dataplane_pb2.ADJACENCY_STATE_LINK_DOWN,
}


def adjacency_to_pb(
    a: Adjacency, ports: Sequence[PortConfig], state: tuple[str, str | None] | None = None
) -> dataplane_pb2.Adjacency:
    """As written (the gateway form without MACs), with its state and neighbour's MAC."""
    pb = dataplane_pb2.Adjacency(
        id=a.id,
        port=ports[a.port].name,
        vlan=a.vlan,
        src_mac=bytes.fromhex(a.src_mac.replace(":", "")),
        dst_mac=bytes.fromhex(a.dst_mac.replace(":", "")),
    )
    if a.gateway is not None:
        pb.gateway = ipaddress.ip_address(a.gateway).packed
    if state is not None:
        pb.state = _STATE_TO_PB[state[0]]
        if state[1] is not None:
            pb.neighbour_mac = bytes.fromhex(state[1].replace(":", ""))
    return pb


def _addresses_to_pb(addresses) -> list[common_pb2.InterfaceAddress]:
    return [
        common_pb2.InterfaceAddress(address=a.ip.packed, prefix_length=a.network.prefixlen)
        for a in addresses
    ]


def link_state(name: str) -> int:
    """Without an engine: the kernel's operational state of the interface, if it is here."""
    try:
        state = (Path("/sys/class/net") / name / "operstate").read_text().strip()
    except OSError:
        return dataplane_pb2.LINK_STATE_NOT_PRESENT
    # "unknown" is what interfaces without carrier detection (veth peers, tun) report up.
    up = state in ("up", "unknown")
    return dataplane_pb2.LINK_STATE_UP if up else dataplane_pb2.LINK_STATE_DOWN


_MODE_TO_PB = {"zero-copy": dataplane_pb2.PORT_MODE_ZERO_COPY, "copy": dataplane_pb2.PORT_MODE_COPY}
_XDP_TO_PB = {"native": dataplane_pb2.XDP_MODE_NATIVE, "generic": dataplane_pb2.XDP_MODE_GENERIC}


def ports_to_pb(dataplane: domain.Dataplane) -> list[dataplane_pb2.Port]:
    """Blocking (reads the engine or sysfs): call it from the executor. With the engine, its
    view: link state as its supervisor last saw it, socket and XDP modes, the port's MAC."""
    engine = dataplane.engine
    running = {p["name"]: p for p in engine.ports()} if engine is not None else {}
    out = []
    for p in dataplane.ports:
        pb = dataplane_pb2.Port(
            name=p.name,
            mode=dataplane_pb2.PORT_MODE_UNSPECIFIED,
            queues=p.queues,
            mtu=p.mtu,
            addresses=_addresses_to_pb(p.addresses),
            sub_interfaces=[
                dataplane_pb2.SubInterface(vlan=v.id, addresses=_addresses_to_pb(v.addresses))
                for v in p.vlans
            ],
        )
        e = running.get(p.name)
        if e is None:
            # The agent's namespace: right when the ports live there, a guess otherwise.
            pb.link_state = link_state(p.name)
        else:
            up = e["link_up"]
            pb.link_state = dataplane_pb2.LINK_STATE_UP if up else dataplane_pb2.LINK_STATE_DOWN
            pb.mode = _MODE_TO_PB.get(e["mode"], dataplane_pb2.PORT_MODE_UNSPECIFIED)
            pb.xdp_mode = _XDP_TO_PB.get(e["xdp_mode"], dataplane_pb2.XDP_MODE_UNSPECIFIED)
            pb.mac = bytes.fromhex(e["mac"].replace(":", ""))
            pb.queues = e["queues"]
            pb.mtu = e["mtu"]
            pb.link_recoveries = e["recoveries"]
        out.append(pb)
    return out


def counters_to_pb(dataplane: domain.Dataplane, raw: dict | None = None) -> dataplane_pb2.Counters:
    """From the engine's counters (`raw`, Engine.counters()); without an engine every
    interface and worker is present and has counted 0."""
    time = timestamp_pb2.Timestamp()
    time.GetCurrentTime()
    summary = dataplane.next_hop_summary
    next_hops = dataplane_pb2.NextHopState(
        adjacencies=summary["adjacencies"],
        unresolved=summary["unresolved"],
        link_down=summary["link_down"],
        empty_groups=summary["empty_groups"],
    )
    if raw is None:
        interfaces = [
            dataplane_pb2.InterfaceCounters(port=p.name, vlan=vlan)
            for p in dataplane.ports
            for vlan in (0, *(v.id for v in p.vlans))
        ]
        workers = [dataplane_pb2.WorkerCounters(worker=w) for w in range(dataplane.config.workers)]
        return dataplane_pb2.Counters(
            time=time, interfaces=interfaces, workers=workers, next_hops=next_hops
        )
    interfaces = [
        dataplane_pb2.InterfaceCounters(
            port=e["name"],
            vlan=e["vlan"],
            rx_packets=e["rx_packets"],
            rx_bytes=e["rx_bytes"],
            tx_packets=e["tx_packets"],
            tx_bytes=e["tx_bytes"],
        )
        for e in raw["ports"]
    ]
    workers = []
    drops = []
    for w in raw["workers"]:
        workers.append(
            dataplane_pb2.WorkerCounters(
                worker=w["worker"],
                rx_packets=w["rx_packets"],
                tx_packets=w["tx_packets"],
                dropped_packets=sum(w["drops"].values()) + w["tx_ring_full"] + w["rx_ring_dropped"],
                rx_ring_dropped=w["rx_ring_dropped"],
            )
        )
        for reason, packets in w["drops"].items():
            drops.append(
                dataplane_pb2.DropCounters(reason=reason, worker=w["worker"], packets=packets)
            )
        for reason in ("tx_ring_full", "rx_ring_dropped"):
            drops.append(
                dataplane_pb2.DropCounters(reason=reason, worker=w["worker"], packets=w[reason])
            )
    return dataplane_pb2.Counters(
        time=time, interfaces=interfaces, workers=workers, drops=drops, next_hops=next_hops
    )


def _chunks(items: Sequence) -> Iterable[Sequence]:
    for start in range(0, len(items), READ_CHUNK):
        yield items[start : start + READ_CHUNK]
