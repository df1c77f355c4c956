"""corridor.v1.Dataplane over gRPC: protobuf in, domain values to the Dataplane, protobuf and
status codes out. Syntax is checked here, where the field paths are known; what the FIB
checks comes back as domain violations. `_refuse` is the one place errors become statuses.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, NoReturn, TypeVar

import grpc
from google.protobuf import timestamp_pb2
from google.protobuf.message import DecodeError

from corridor._dataplane import read_route_write
from corridor.agent import domain
from corridor.agent.config import PortConfig
from corridor.agent.domain import MAX_OPERATIONS_PER_WRITE, LinkState, NotPrimary
from corridor.agent.engine_host import Counters
from corridor.common import status
from corridor.common.addresses import (
    address_from_pb,
    address_to_bytes,
    gateway_from_pb,
    prefix_from_pb,
    prefix_order,
    prefix_to_pb,
    set_prefix,
)
from corridor.common.edge import policy_from_pb, policy_to_pb
from corridor.common.errors import FieldError, InvalidBatch, Violation, echo, format_election_id
from corridor.common.fib import (
    MEMBER_SOURCES_MAX,
    MEMBERS_MAX,
    Adjacency,
    DeleteAdjacency,
    DeleteGroup,
    DeleteMember,
    DeleteRoute,
    FibOperation,
    Member,
    NextHopGroup,
    Route,
    RouteKind,
    new_route,
)
from corridor.common.status import Context as _Context
from corridor.common.status import election_id_from_pb, election_id_to_pb, refuse
from corridor.v1 import common_pb2, dataplane_pb2, dataplane_pb2_grpc

if TYPE_CHECKING:
    from corridor._dataplane import MemberCounters

log = logging.getLogger("corridor.agent")

READ_CHUNK = 10_000  # entries per ReadResponse
NO_RESERVED_GROUP = 1 << 32  # read_route_write's first_group without glean: all the writers'
COUNTERS_INTERVAL_MS = (100, 3_600_000)

_KIND_FROM_PB = {kind.value: kind for kind in RouteKind}
_T = TypeVar("_T")


class DataplaneService(dataplane_pb2_grpc.DataplaneServicer):
    def __init__(self, dataplane: domain.Dataplane) -> None:
        self.dataplane = dataplane

    async def Write(self, request: bytes, context: _Context) -> dataplane_pb2.WriteResponse:
        """`request` is the WriteRequest as it came (server.RAW_REQUESTS)."""
        return await self._write(request, context)

    async def StreamWrite(
        self, request_iterator: AsyncIterator[bytes], context: _Context
    ) -> AsyncIterator[dataplane_pb2.WriteResponse]:
        # One batch at a time: the next is read only once this one is applied and
        # acknowledged, so HTTP/2 flow control paces a client that runs ahead.
        async for request in request_iterator:
            yield await self._write(request, context)

    async def _write(
        self, request: bytes | dataplane_pb2.WriteRequest, context: _Context
    ) -> dataplane_pb2.WriteResponse:
        """A batch of routes only (a table, as a controller sends it) goes from its bytes to
        the engine in Rust; any other batch, or one the fast path leaves (a fault to name, a
        route of the agent's own), is read with the generated code."""
        if not isinstance(request, bytes):
            return await self._write_request(request, context)
        loop = asyncio.get_running_loop()
        glean = self.dataplane.glean
        first_group = NO_RESERVED_GROUP if glean is None else glean.first_group
        routes = await loop.run_in_executor(None, read_route_write, request, first_group)
        if routes is not None:
            election_id, batch_id, batch = routes
            writers = self.dataplane.config.election.writers
            if writers and not _admitted(context, writers):
                await _refuse_writer(context, batch_id)
            try:
                self.dataplane.election.present(election_id)
                result = await self.dataplane.write_routes(election_id, batch)
            except InvalidBatch as e:
                await _refuse(context, grpc.StatusCode.INVALID_ARGUMENT, e, batch_id, e.violations)
            except NotPrimary as e:
                violation = Violation(None, "election_id", str(e))
                await _refuse(context, grpc.StatusCode.PERMISSION_DENIED, e, batch_id, [violation])
            if result is not None:
                return dataplane_pb2.WriteResponse(
                    batch_id=batch_id, operations=result.operations, generation=result.generation
                )
        try:
            parsed = dataplane_pb2.WriteRequest.FromString(request)
        except DecodeError as e:
            error = ValueError(f"not a corridor.v1.WriteRequest: {e}")
            violation = Violation(None, "operations", str(error))
            await _refuse(context, grpc.StatusCode.INVALID_ARGUMENT, error, 0, [violation])
        return await self._write_request(parsed, context)

    async def _write_request(
        self, request: dataplane_pb2.WriteRequest, context: _Context
    ) -> dataplane_pb2.WriteResponse:
        loop = asyncio.get_running_loop()
        batch_id = request.batch_id
        writers = self.dataplane.config.election.writers
        if writers and not _admitted(context, writers):
            await _refuse_writer(context, batch_id)
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

    async def ResetElection(
        self, request: dataplane_pb2.ResetElectionRequest, context: _Context
    ) -> dataplane_pb2.ResetElectionResponse:
        if not _admitted(context, self.dataplane.config.election.admins):
            await status.abort(
                context,
                grpc.StatusCode.PERMISSION_DENIED,
                f"{_who(context)} may not reset the election: only the agent's Unix socket "
                "and the certificate names of election.admins may",
            )
        previous = self.dataplane.election.reset()
        log.warning(
            "election reset by %s: the highest id was %s; the next writer's id wins",
            _who(context), format_election_id(previous),
        )  # fmt: skip
        return dataplane_pb2.ResetElectionResponse(previous=election_id_to_pb(previous))

    async def SetPortPolicies(
        self, request: dataplane_pb2.SetPortPoliciesRequest, context: _Context
    ) -> dataplane_pb2.SetPortPoliciesResponse:
        writers = self.dataplane.config.election.writers
        if writers and not _admitted(context, writers):
            await status.abort(
                context,
                grpc.StatusCode.PERMISSION_DENIED,
                f"{_who(context)} is not among election.writers of this agent",
            )
        election_id = election_id_from_pb(request.election_id)
        violations: list[Violation] = []
        if election_id == 0:
            violations.append(
                Violation(None, "election_id", "is missing or zero; every write needs one above 0")
            )
        policies = []
        for i, pb in enumerate(request.policies):
            try:
                policy = policy_from_pb(pb.policy, f"policies[{i}].policy")
            except FieldError as f:
                violations.append(Violation(i, f.field, f.description))
                continue
            policies.append((pb.port, pb.vlan, policy))
        try:
            if violations:
                raise InvalidBatch(violations)
            await self.dataplane.set_policies(election_id, policies)
        except InvalidBatch as e:
            await refuse(
                context, grpc.StatusCode.INVALID_ARGUMENT, str(e), e.violations, items="policies"
            )
        except NotPrimary as e:
            violation = Violation(None, "election_id", str(e))
            await refuse(
                context, grpc.StatusCode.PERMISSION_DENIED, str(e), [violation], items="policies"
            )
        except domain.PolicyRefused as e:
            await status.abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(e))
        return dataplane_pb2.SetPortPoliciesResponse()

    async def ListPortPolicies(
        self, request: dataplane_pb2.ListPortPoliciesRequest, context: _Context
    ) -> dataplane_pb2.ListPortPoliciesResponse:
        response = dataplane_pb2.ListPortPoliciesResponse()
        for (port, vlan), policy in self.dataplane.policies.items():
            response.policies.add(port=port, vlan=vlan, policy=policy_to_pb(policy))
        for r in await self.dataplane.refused_macs():
            pb = response.refused_macs.add(
                port=r.port,
                vlan=r.vlan,
                mac=bytes.fromhex(r.mac.replace(":", "")),
                packets=r.packets,
            )
            pb.last_seen.FromNanoseconds(int(r.last_seen * 1e9))
        return response

    async def Read(
        self, request: dataplane_pb2.ReadRequest, context: _Context
    ) -> AsyncIterator[dataplane_pb2.ReadResponse]:
        loop = asyncio.get_running_loop()
        if request.head_only:  # no FIB: a drift check's or a members' sync's cheap read
            snapshot = None
            generation, members = await self.dataplane.head()
        else:
            snapshot = await self.dataplane.snapshot()
            generation, members = snapshot.generation, snapshot.members
        ports = await loop.run_in_executor(None, self.dataplane.port_states)
        yield dataplane_pb2.ReadResponse(
            generation=generation,
            ports=ports_to_pb(ports),
            members=[member_to_pb(m) for m in members],
        )
        if snapshot is None:
            return
        states = snapshot.adjacency_states
        for adjacencies in _chunks(snapshot.adjacencies):
            yield dataplane_pb2.ReadResponse(
                generation=generation,
                adjacencies=[adjacency_to_pb(a, states.get(a.id)) for a in adjacencies],
            )
        for groups in _chunks(snapshot.groups):
            yield dataplane_pb2.ReadResponse(
                generation=generation, next_hop_groups=[group_to_pb(g) for g in groups]
            )
        for routes in _chunks(snapshot.routes):
            yield await loop.run_in_executor(None, routes_response, routes, generation)

    async def GetCounters(
        self, request: dataplane_pb2.GetCountersRequest, context: _Context
    ) -> dataplane_pb2.Counters:
        return counters_to_pb(self.dataplane, await self.dataplane.counters())

    async def StreamCounters(
        self, request: dataplane_pb2.StreamCountersRequest, context: _Context
    ) -> AsyncIterator[dataplane_pb2.Counters]:
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
            yield counters_to_pb(self.dataplane, await self.dataplane.counters())
            # Keep the cadence: sleep to the next tick, not a full interval after the send.
            deadline = max(deadline + interval, loop.time())
            await asyncio.sleep(deadline - loop.time())

    async def ListPorts(
        self, request: dataplane_pb2.ListPortsRequest, context: _Context
    ) -> dataplane_pb2.ListPortsResponse:
        loop = asyncio.get_running_loop()
        ports = await loop.run_in_executor(None, self.dataplane.port_states)
        return dataplane_pb2.ListPortsResponse(ports=ports_to_pb(ports))

    async def Lookup(
        self, request: dataplane_pb2.LookupRequest, context: _Context
    ) -> dataplane_pb2.LookupResponse:
        try:
            address = address_from_pb(request.address, "address")
        except FieldError as f:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{f.field}: {f.description}")
        return lookup_to_pb(await self.dataplane.lookup(address))


async def _refuse_writer(context: _Context, batch_id: int) -> NoReturn:
    e = PermissionError(
        f"{_who(context)} is not among election.writers of this agent; its election "
        "id is not taken (only the writers' certificate names may present one)"
    )
    violation = Violation(None, "election_id", str(e))
    await _refuse(context, grpc.StatusCode.PERMISSION_DENIED, e, batch_id, [violation])


async def _refuse(
    context: _Context,
    code: grpc.StatusCode,
    error: Exception,
    batch_id: int,
    violations: Sequence[Violation],
) -> NoReturn:
    """Ends the call with `code`, the error's message, and a WriteError in the details."""
    await refuse(context, code, str(error), violations, items="operations", batch_id=batch_id)


# --- protobuf -> domain --------------------------------------------------------------


def translate_write(
    request: dataplane_pb2.WriteRequest, dataplane: domain.Dataplane
) -> tuple[int, list[FibOperation]]:
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
    operations: list[FibOperation] = []
    for i, op in enumerate(request.operations):
        try:
            operations.append(operation_from_pb(op, dataplane))
        except FieldError as fault:
            violations.append(Violation(i, f"operations[{i}].{fault.field}", fault.description))
    if violations:
        dataplane.refuse(count)
        raise InvalidBatch(violations)
    return election_id, operations


def operation_from_pb(op: dataplane_pb2.Operation, dataplane: domain.Dataplane) -> FibOperation:
    entry = op.WhichOneof("entry")
    action = op.action
    if entry is None:
        raise FieldError("entry", "is missing; set one of adjacency, next_hop_group, route, member")
    if action == dataplane_pb2.ACTION_SET:
        if entry == "route":
            return route_from_pb(op.route)
        if entry == "next_hop_group":
            return group_from_pb(op.next_hop_group)
        if entry == "member":
            return member_from_pb(op.member, dataplane)
        return adjacency_from_pb(op.adjacency, dataplane)
    if action == dataplane_pb2.ACTION_DELETE:
        if entry == "route":
            return DeleteRoute(prefix_from_pb(op.route.prefix, "route.prefix"))
        if entry == "next_hop_group":
            return DeleteGroup(_id(op.next_hop_group.id, "next_hop_group.id"))
        if entry == "member":
            return DeleteMember(_member_id(op.member.id))
        return DeleteAdjacency(_id(op.adjacency.id, "adjacency.id"))
    raise FieldError("action", f"{action} is not an action; use ACTION_SET or ACTION_DELETE")


def route_from_pb(route: dataplane_pb2.Route) -> Route:
    prefix = prefix_from_pb(route.prefix, "route.prefix")
    pb_kind = route.kind
    group = route.next_hop_group_id
    kind = _KIND_FROM_PB.get(pb_kind)
    if kind is None:
        raise FieldError(
            "route.kind",
            f"{pb_kind} is not a route kind; use FORWARD, BLACKHOLE, UNREACHABLE or LOCAL",
        )
    if kind is RouteKind.FORWARD:
        if group == 0:
            raise FieldError(
                "route.next_hop_group_id", f"route {prefix}: a FORWARD route needs a group id"
            )
        return new_route((prefix, kind, group))
    if group != 0:
        raise FieldError(
            "route.next_hop_group_id",
            f"route {prefix}: a {kind.name} route has no next-hop group; leave it 0",
        )
    return new_route((prefix, kind, 0))


def group_from_pb(group: dataplane_pb2.NextHopGroup) -> NextHopGroup:
    group_id = _id(group.id, "next_hop_group.id")
    members = []
    for j, m in enumerate(group.members):
        _id(m.adjacency_id, f"next_hop_group.members[{j}].adjacency_id")
        if m.weight == 0:
            raise FieldError(f"next_hop_group.members[{j}].weight", "is 0; a weight is 1 or more")
        members.append((m.adjacency_id, m.weight))
    return NextHopGroup(group_id, tuple(members))


def adjacency_from_pb(adjacency: dataplane_pb2.Adjacency, dataplane: domain.Dataplane) -> Adjacency:
    adjacency_id = _id(adjacency.id, "adjacency.id")
    gateway = _gateway(adjacency)
    port = adjacency.port
    vlans = dataplane.port_vlans(port)
    if vlans is None:
        configured = ", ".join(p.name for p in dataplane.ports) or "none"
        raise FieldError(
            "adjacency.port",
            f"{echo(port)} is not a configured port; configured: {configured}",
        )
    if adjacency.vlan != 0 and adjacency.vlan not in vlans:
        choices = ", ".join(map(str, vlans)) or "none"
        raise FieldError(
            "adjacency.vlan",
            f"{adjacency.vlan} is not a VLAN of port {port}; use 0 (untagged) "
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


def member_from_pb(member: dataplane_pb2.Member, dataplane: domain.Dataplane) -> Member:
    member_id = _member_id(member.id)
    port = member.port
    vlans = dataplane.port_vlans(port)
    if vlans is None:
        configured = ", ".join(p.name for p in dataplane.ports) or "none"
        raise FieldError(
            "member.port", f"{echo(port)} is not a configured port; configured: {configured}"
        )
    if member.vlan != 0 and member.vlan not in vlans:
        choices = ", ".join(map(str, vlans)) or "none"
        raise FieldError(
            "member.vlan",
            f"{member.vlan} is not a VLAN of port {port}; use 0 (untagged) "
            f"or one of its VLANs: {choices}",
        )
    mac = member.mac
    if len(mac) != 6:
        raise FieldError("member.mac", f"is {len(mac)} bytes; a MAC address is 6")
    if not any(mac) or mac[0] & 1:
        raise FieldError(
            "member.mac",
            f"{mac.hex(':')} is not a unicast station address; give the member router's MAC",
        )
    if len(member.name) > 64 or not member.name.isprintable():
        raise FieldError("member.name", f"{echo(member.name)}: at most 64 printable characters")
    sources = None
    if member.filter_sources:
        sources = member_sources_from_pb(member.allowed_sources, "member.allowed_sources")
    elif member.allowed_sources:
        raise FieldError(
            "member.allowed_sources", "is set without filter_sources; set both or neither"
        )
    return Member(member_id, port, member.vlan, mac.hex(":"), member.name, sources)


def member_sources_from_pb(prefixes: Sequence[common_pb2.IpPrefix], field: str) -> tuple[str, ...]:
    """A member's source filter: canonical prefixes, sorted, each once; FieldError naming
    the first bad one, or too many."""
    if len(prefixes) > MEMBER_SOURCES_MAX:
        raise FieldError(
            field, f"{len(prefixes)} prefixes exceed the limit of {MEMBER_SOURCES_MAX}"
        )
    texts = {prefix_from_pb(p, f"{field}[{i}]") for i, p in enumerate(prefixes)}
    return tuple(sorted(texts, key=prefix_order))


def _member_id(value: int) -> int:
    if not 0 <= value < MEMBERS_MAX:
        raise FieldError("member.id", f"{value} is not between 0 and {MEMBERS_MAX - 1}")
    return value


def member_to_pb(m: Member) -> dataplane_pb2.Member:
    return dataplane_pb2.Member(
        id=m.id,
        port=m.port,
        vlan=m.vlan,
        mac=bytes.fromhex(m.mac.replace(":", "")),
        name=m.name,
        filter_sources=m.sources is not None,
        allowed_sources=[prefix_to_pb(p) for p in m.sources or ()],
    )


def _gateway(adjacency: dataplane_pb2.Adjacency) -> str | None:
    """The gateway form's address text, None for the explicit form."""
    raw = adjacency.gateway
    if not raw:
        return None
    address = gateway_from_pb(raw, "adjacency.gateway")
    for name in ("src_mac", "dst_mac"):
        if getattr(adjacency, name):
            raise FieldError(
                f"adjacency.{name}",
                f"is set with gateway {address}; give either the gateway (the agent resolves"
                " the MACs) or both MACs, not both forms",
            )
    return address


def _certificate_names(context: _Context) -> list[str]:
    """The names a TLS client's certificate gives: common name, subject alternative names,
    whole subject. None without TLS."""
    auth = context.auth_context()
    names: list[str] = []
    for key in ("x509_common_name", "x509_subject_alternative_name", "x509_subject"):
        names += [v.decode(errors="replace") for v in auth.get(key, ())]
    return names


def _admitted(context: _Context, allowed: Sequence[str]) -> bool:
    """Local (the Unix socket), or a TLS client whose certificate carries a name in `allowed`."""
    if context.peer().startswith("unix:"):
        return True
    return any(name in allowed for name in _certificate_names(context))


def _who(context: _Context) -> str:
    if context.peer().startswith("unix:"):
        return "a local client"
    names = _certificate_names(context)
    if not names:
        return f"the client at {echo(context.peer())} (no TLS certificate)"
    return f"the client with certificate {', '.join(echo(n) for n in names[:4])}"


def _id(value: int, field: str) -> int:
    if value == 0:
        raise FieldError(field, "is 0; ids start at 1")
    return value


def _mac(value: bytes, field: str) -> str:
    """A station's MAC address: the source an adjacency's frames leave from (no group
    address), or the destination they go to (not all zero)."""
    if len(value) != 6:
        raise FieldError(field, f"is {len(value)} bytes; a MAC address is 6")
    text = value.hex(":")
    source = field.endswith("src_mac")
    if not source and not any(value):
        raise FieldError(field, f"{text} is all zero; give the next hop's MAC address")
    if source and value[0] & 1:
        kind = "broadcast" if value == b"\xff" * 6 else "multicast"
        raise FieldError(
            field, f"{text} is a {kind} address; a source MAC is the port's own, unicast"
        )
    return text


# --- domain -> protobuf --------------------------------------------------------------


def routes_response(routes: Iterable[Route], generation: int) -> dataplane_pb2.ReadResponse:
    """One ReadResponse of routes; filled in place, the cheapest way to build many."""
    response = dataplane_pb2.ReadResponse(generation=generation)
    add = response.routes.add
    for r in routes:
        pb = add()
        set_prefix(pb.prefix, r.prefix)
        pb.kind = r.kind  # RouteKind's values are the protobuf's
        if r.group:
            pb.next_hop_group_id = r.group
    return response


def lookup_to_pb(found: domain.Lookup) -> dataplane_pb2.LookupResponse:
    response = dataplane_pb2.LookupResponse()
    if found.route is None:
        return response
    response.route.CopyFrom(routes_response([found.route], 0).routes[0])
    if found.blackhole_dropped is not None:
        response.blackhole_dropped_packets = found.blackhole_dropped
    if found.group is not None:
        response.group.CopyFrom(group_to_pb(found.group))
    response.adjacencies.extend(
        adjacency_to_pb(a, found.adjacency_states.get(a.id)) for a in found.adjacencies
    )
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
    a: Adjacency, state: tuple[str, str | None] | None = None
) -> dataplane_pb2.Adjacency:
    """As written (the gateway form without MACs), with its state and neighbour's MAC."""
    pb = dataplane_pb2.Adjacency(
        id=a.id,
        port=a.port,
        vlan=a.vlan,
        src_mac=bytes.fromhex(a.src_mac.replace(":", "")),
        dst_mac=bytes.fromhex(a.dst_mac.replace(":", "")),
    )
    if a.gateway is not None:
        pb.gateway = address_to_bytes(a.gateway)
    if state is not None:
        pb.state = _STATE_TO_PB[state[0]]
        if state[1] is not None:
            pb.neighbour_mac = bytes.fromhex(state[1].replace(":", ""))
    return pb


def _addresses_to_pb(
    addresses: Iterable[ipaddress.IPv4Interface | ipaddress.IPv6Interface],
) -> list[common_pb2.InterfaceAddress]:
    return [
        common_pb2.InterfaceAddress(address=a.ip.packed, prefix_length=a.network.prefixlen)
        for a in addresses
    ]


_LINK_TO_PB = {
    LinkState.UP: dataplane_pb2.LINK_STATE_UP,
    LinkState.DOWN: dataplane_pb2.LINK_STATE_DOWN,
    LinkState.NOT_PRESENT: dataplane_pb2.LINK_STATE_NOT_PRESENT,
}
_MODE_TO_PB = {"zero-copy": dataplane_pb2.PORT_MODE_ZERO_COPY, "copy": dataplane_pb2.PORT_MODE_COPY}
_XDP_TO_PB = {"native": dataplane_pb2.XDP_MODE_NATIVE, "generic": dataplane_pb2.XDP_MODE_GENERIC}


def ports_to_pb(ports: Iterable[domain.PortState]) -> list[dataplane_pb2.Port]:
    """With the engine, its view: link state as its supervisor last saw it, socket and XDP
    modes, the port's MAC; without, the configuration and the kernel's link state."""
    out = []
    for state in ports:
        p: PortConfig = state.config
        pb = dataplane_pb2.Port(
            name=p.name,
            mode=dataplane_pb2.PORT_MODE_UNSPECIFIED,
            queues=p.queues,
            mtu=p.mtu,
            addresses=_addresses_to_pb(p.addresses),
            sub_interfaces=[
                dataplane_pb2.SubInterface(
                    vlan=v.id,
                    addresses=_addresses_to_pb(v.addresses),
                    ifindex=state.ifindexes.get(v.id, 0),
                )
                for v in p.vlans
            ],
            link_state=_LINK_TO_PB[state.link],
            ifindex=state.ifindexes.get(0, 0),
        )
        e = state.engine
        if e is not None:
            pb.mode = _MODE_TO_PB.get(e["mode"], dataplane_pb2.PORT_MODE_UNSPECIFIED)
            pb.xdp_mode = _XDP_TO_PB.get(e["xdp_mode"], dataplane_pb2.XDP_MODE_UNSPECIFIED)
            pb.mac = bytes.fromhex(e["mac"].replace(":", ""))
            pb.queues = e["queues"]
            pb.mtu = e["mtu"]
            pb.link_recoveries = e["recoveries"]
        out.append(pb)
    return out


def counters_to_pb(
    dataplane: domain.Dataplane, counters: Counters | None = None
) -> dataplane_pb2.Counters:
    """From the engine's counters; without an engine every interface and worker is present
    and has counted 0."""
    time = timestamp_pb2.Timestamp()
    time.GetCurrentTime()
    summary = dataplane.next_hop_summary
    next_hops = dataplane_pb2.NextHopState(
        adjacencies=summary["adjacencies"],
        unresolved=summary["unresolved"],
        link_down=summary["link_down"],
        empty_groups=summary["empty_groups"],
    )
    if counters is None:
        interfaces = [
            dataplane_pb2.InterfaceCounters(port=p.name, vlan=vlan)
            for p in dataplane.ports
            for vlan in (0, *(v.id for v in p.vlans))
        ]
        workers = [dataplane_pb2.WorkerCounters(worker=w) for w in range(dataplane.config.workers)]
        return dataplane_pb2.Counters(
            time=time,
            interfaces=interfaces,
            workers=workers,
            next_hops=next_hops,
            members=members_to_pb(dataplane, None),
        )
    raw = counters.engine
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
        worker = w["worker"]
        rx_ring_dropped = counters.rx_ring_dropped.get(worker, 0)
        workers.append(
            dataplane_pb2.WorkerCounters(
                worker=worker,
                rx_packets=w["rx_packets"],
                tx_packets=w["tx_packets"],
                dropped_packets=sum(w["drops"].values()) + w["tx_ring_full"] + rx_ring_dropped,
                rx_ring_dropped=rx_ring_dropped,
            )
        )
        for port, reasons in w["port_drops"].items():
            for reason, packets in reasons.items():
                drops.append(
                    dataplane_pb2.DropCounters(
                        reason=reason, worker=worker, packets=packets, port=port
                    )
                )
        for reason, packets in (
            ("tx_ring_full", w["tx_ring_full"]),
            ("rx_ring_dropped", rx_ring_dropped),
        ):
            drops.append(dataplane_pb2.DropCounters(reason=reason, worker=worker, packets=packets))
    # Dropped by the XDP program's edge filters, before any worker: listed as worker 0's.
    for port, reasons in raw.get("edge", {}).items():
        for reason, packets in reasons.items():
            drops.append(
                dataplane_pb2.DropCounters(reason=reason, worker=0, packets=packets, port=port)
            )
    return dataplane_pb2.Counters(
        time=time,
        interfaces=interfaces,
        workers=workers,
        drops=drops,
        next_hops=next_hops,
        members=members_to_pb(dataplane, raw["members"]),
        glean=glean_to_pb(dataplane, counters.glean),
    )


def glean_to_pb(
    dataplane: domain.Dataplane, engine: Mapping[str, int] | None
) -> dataplane_pb2.GleanState | None:
    """The agent's host routes and the engine's glean queue; None without either."""
    summary = dataplane.glean_summary()
    if summary is None and engine is None:
        return None
    state = dataplane_pb2.GleanState(**(summary or {}))
    if engine is not None:
        state.queued = engine["queued"]
        state.deduplicated = engine["deduplicated"]
        state.engine_rate_limited = engine["rate_limited"]
        state.full = engine["full"]
    return state


def members_to_pb(
    dataplane: domain.Dataplane, raw: Mapping[int, MemberCounters] | None
) -> list[dataplane_pb2.MemberCounters]:
    """Every written member (zeros when nothing was counted), and the unknown row when the
    engine counted any."""
    raw = raw or {}
    out = []
    for member_id in sorted(dataplane.members):
        m = dataplane.members[member_id]
        pb = dataplane_pb2.MemberCounters(
            id=m.id, name=m.name, port=m.port, vlan=m.vlan, mac=member_to_pb(m).mac
        )
        out.append(_member_counters(raw.get(member_id), pb))
    unknown = raw.get(MEMBERS_MAX)
    if unknown is not None:
        pb = dataplane_pb2.MemberCounters(id=MEMBERS_MAX, unknown=True)
        out.append(_member_counters(unknown, pb))
    return out


def _member_counters(
    raw: MemberCounters | None, pb: dataplane_pb2.MemberCounters
) -> dataplane_pb2.MemberCounters:
    if raw is None:
        return pb
    pb.rx_packets = raw["rx_packets"]
    pb.rx_bytes = raw["rx_bytes"]
    pb.tx_packets = raw["tx_packets"]
    pb.tx_bytes = raw["tx_bytes"]
    pb.drops.extend(
        dataplane_pb2.MemberCounters.Drop(reason=r, packets=n)
        for r, n in sorted(raw["drops"].items())
    )
    return pb


def _chunks(items: Sequence[_T]) -> Iterable[Sequence[_T]]:
    for start in range(0, len(items), READ_CHUNK):
        yield items[start : start + READ_CHUNK]
