"""corridor.v1.Controller over gRPC: protobuf in, domain values to the Controller, protobuf and
status codes out. Syntax is checked here, where field paths are known; the core checks the
rest. Refusals carry a corridor.v1.WriteError in the status details, as the agent's do.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import itertools
import os
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from ipaddress import ip_address
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

import grpc
from google.protobuf import timestamp_pb2
from google.protobuf.message import DecodeError

from corridor._dataplane import IntentRoutes, Prefixes, read_apply_request
from corridor.common import status
from corridor.common.addresses import (
    address_from_pb,
    address_to_bytes,
    endpoint_problem,
    gateway_from_pb,
    prefix_from_pb,
    prefix_to_pb,
    set_prefix,
)
from corridor.common.edge import policy_from_pb, policy_to_pb
from corridor.common.errors import FieldError, InvalidBatch, Violation, echo
from corridor.common.fib import RouteKind, vlan_problem
from corridor.common.status import Context as _Context
from corridor.controller import domain
from corridor.controller.core import WATCH_QUEUE, Controller, WatchEvent, WatchSnapshot
from corridor.controller.domain import (
    ALL_NODES,
    MAX_NEXT_HOPS,
    MAX_ROUTES_PER_BATCH,
    MAX_WEIGHT,
    IdsExhausted,
    Intent,
    RouteBatch,
    StoreUnavailable,
    UnknownNode,
    check_node_name,
)
from corridor.controller.etcd_store import NotLeader
from corridor.controller.members import MemberError, MemberRecord, NoBgpFeed
from corridor.controller.store import RouteQuery
from corridor.v1 import controller_pb2, controller_pb2_grpc, dataplane_pb2, dataplane_pb2_grpc

if TYPE_CHECKING:
    from corridor.controller.reconciler import NodeSession

LIST_PAGE = (1000, 10_000)  # default and largest page
AGENT_TIMEOUT = 10.0  # seconds for a read-only call the API makes to a node's agent
STATIC, BGP = 0, 1  # ListRoutes' phases: the operator's routes, then BGP's
_SOURCE_TO_PB = (controller_pb2.ROUTE_SOURCE_STATIC, controller_pb2.ROUTE_SOURCE_BGP)
_SOURCES = frozenset(controller_pb2.RouteSource.values())
WATCH_CHUNK = 10_000

_KINDS = {k.value: k for k in RouteKind}
_KIND_TO_PB: dict[RouteKind, dataplane_pb2.RouteKind] = {
    RouteKind.FORWARD: dataplane_pb2.ROUTE_KIND_FORWARD,
    RouteKind.BLACKHOLE: dataplane_pb2.ROUTE_KIND_BLACKHOLE,
    RouteKind.UNREACHABLE: dataplane_pb2.ROUTE_KIND_UNREACHABLE,
    RouteKind.LOCAL: dataplane_pb2.ROUTE_KIND_LOCAL,
}


_Request = TypeVar("_Request")
_Response = TypeVar("_Response")
_Method = Callable[[Any, _Request, _Context], Awaitable[_Response]]


def _store_errors(method: _Method[_Request, _Response]) -> _Method[_Request, _Response]:
    """For every call that commits: a store that could not commit (nothing was) ends the
    call with RESOURCE_EXHAUSTED when out of space, UNAVAILABLE when unwritable, with the
    store's own words; a retry succeeds once the operator has made room."""

    @functools.wraps(method)
    async def call(self: Any, request: _Request, context: _Context) -> _Response:
        try:
            return await method(self, request, context)
        except StoreUnavailable as e:
            code = grpc.StatusCode.RESOURCE_EXHAUSTED if e.full else grpc.StatusCode.UNAVAILABLE
            await status.abort(context, code, str(e))
        except NotLeader as e:
            await status.abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(e))

    return call


class ControllerService(controller_pb2_grpc.ControllerServicer):
    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.page_tokens = PageTokens()

    # -- nodes

    @_store_errors
    async def RegisterNode(
        self, request: controller_pb2.RegisterNodeRequest, context: _Context
    ) -> controller_pb2.RegisterNodeResponse:
        try:
            # Reads the TLS files it names: off the event loop.
            node = await asyncio.get_running_loop().run_in_executor(
                None, node_from_pb, request.node
            )
        except FieldError as f:
            await refuse(
                context, grpc.StatusCode.INVALID_ARGUMENT, [Violation(None, f.field, f.description)]
            )
        revision = await self.controller.register(node)
        return controller_pb2.RegisterNodeResponse(revision=revision)

    @_store_errors
    async def DeregisterNode(
        self, request: controller_pb2.DeregisterNodeRequest, context: _Context
    ) -> controller_pb2.DeregisterNodeResponse:
        try:
            revision = await self.controller.deregister(request.name)
        except UnknownNode as e:
            await status.abort(context, grpc.StatusCode.NOT_FOUND, str(e))
        return controller_pb2.DeregisterNodeResponse(revision=revision)

    async def ListNodes(
        self, request: controller_pb2.ListNodesRequest, context: _Context
    ) -> controller_pb2.ListNodesResponse:
        return controller_pb2.ListNodesResponse(nodes=self._statuses())

    async def GetNodeStatus(
        self, request: controller_pb2.GetNodeStatusRequest, context: _Context
    ) -> controller_pb2.NodeStatus:
        c = self.controller
        session = c.sessions.get(request.name)
        if session is None:
            node = c.state.nodes.get(request.name)
            if node is None or c.leading:
                await status.abort(context, grpc.StatusCode.NOT_FOUND, c.unknown_node(request.name))
            return followed_node_status(c, node)
        return node_status(c, session)

    def _statuses(self) -> list[controller_pb2.NodeStatus]:
        c = self.controller
        if not c.leading:  # a follower: the nodes as intent has them, and who leads
            return [followed_node_status(c, c.state.nodes[n]) for n in sorted(c.state.nodes)]
        return [node_status(c, c.sessions[name]) for name in sorted(c.sessions)]

    async def GetStats(
        self, request: controller_pb2.GetStatsRequest, context: _Context
    ) -> controller_pb2.Stats:
        c = self.controller
        return controller_pb2.Stats(
            revision=c.state.revision,
            intent=fib_sizes(c.intent_sizes),
            nodes=len(c.state.nodes),
            node_status=self._statuses(),
            bgp=fib_sizes(c.bgp_sizes),
            leadership=leadership(c),
        )

    # -- a node's agent, asked through the controller (read-only)

    async def GetNodeCounters(
        self, request: controller_pb2.GetNodeCountersRequest, context: _Context
    ) -> dataplane_pb2.Counters:
        async def call(stub: dataplane_pb2_grpc.DataplaneStub) -> dataplane_pb2.Counters:
            request_ = dataplane_pb2.GetCountersRequest()
            reply: dataplane_pb2.Counters = await stub.GetCounters(request_, timeout=AGENT_TIMEOUT)
            return reply

        return await self._ask_agent(request.node, context, call)

    async def ListNodePorts(
        self, request: controller_pb2.ListNodePortsRequest, context: _Context
    ) -> dataplane_pb2.ListPortsResponse:
        async def call(stub: dataplane_pb2_grpc.DataplaneStub) -> dataplane_pb2.ListPortsResponse:
            request_ = dataplane_pb2.ListPortsRequest()
            reply: dataplane_pb2.ListPortsResponse = await stub.ListPorts(
                request_, timeout=AGENT_TIMEOUT
            )
            return reply

        return await self._ask_agent(request.node, context, call)

    async def LookupRoute(
        self, request: controller_pb2.LookupRouteRequest, context: _Context
    ) -> dataplane_pb2.LookupResponse:
        try:
            address_from_pb(request.address, "address")
        except FieldError as f:
            await status.abort(
                context, grpc.StatusCode.INVALID_ARGUMENT, f"{f.field}: {f.description}"
            )

        async def call(stub: dataplane_pb2_grpc.DataplaneStub) -> dataplane_pb2.LookupResponse:
            request_ = dataplane_pb2.LookupRequest(address=request.address)
            reply: dataplane_pb2.LookupResponse = await stub.Lookup(request_, timeout=AGENT_TIMEOUT)
            return reply

        return await self._ask_agent(request.node, context, call)

    async def _ask_agent(
        self,
        name: str,
        context: _Context,
        call: Callable[[dataplane_pb2_grpc.DataplaneStub], Awaitable[_Response]],
    ) -> _Response:
        """`call` on a channel of its own to the node's agent; its failure, with its status
        code, as the agent's (NOT_FOUND for a node not registered)."""
        from corridor.controller.reconciler import agent_channel

        session = self.controller.sessions.get(name)
        if session is None:
            await status.abort(
                context, grpc.StatusCode.NOT_FOUND, self.controller.unknown_node(name)
            )
        channel = agent_channel(session.node)
        try:
            return await call(dataplane_pb2_grpc.DataplaneStub(channel))
        except grpc.RpcError as e:
            code, details = e.code(), e.details() or e.code().name
            await status.abort(
                context, code, f"node {name}'s agent at {session.node.address}: {details}"
            )
        finally:
            await channel.close(None)

    # -- edge policies

    @_store_errors
    async def SetPortPolicy(
        self, request: controller_pb2.SetPortPolicyRequest, context: _Context
    ) -> controller_pb2.SetPortPolicyResponse:
        pb = request.policy
        try:
            if not pb.port:
                raise FieldError("policy.port", "is empty; name the node's port")
            if (problem := vlan_problem(pb.vlan)) is not None:
                raise FieldError("policy.vlan", problem)
            policy = policy_from_pb(pb.policy, "policy.policy")
        except FieldError as f:
            await refuse(
                context, grpc.StatusCode.INVALID_ARGUMENT, [Violation(None, f.field, f.description)]
            )
        try:
            await self.controller.set_port_policy(request.node, pb.port, pb.vlan, policy)
        except UnknownNode as e:
            await status.abort(context, grpc.StatusCode.NOT_FOUND, str(e))
        except InvalidBatch as e:
            await refuse(context, grpc.StatusCode.INVALID_ARGUMENT, e.violations, str(e))
        return controller_pb2.SetPortPolicyResponse()

    async def ListPortPolicies(
        self, request: controller_pb2.ListNodePortPoliciesRequest, context: _Context
    ) -> controller_pb2.NodePortPolicies:
        from corridor.controller.reconciler import agent_channel

        session = self.controller.sessions.get(request.node)
        if request.node not in self.controller.state.nodes:
            await status.abort(
                context, grpc.StatusCode.NOT_FOUND, self.controller.unknown_node(request.node)
            )
        reply = controller_pb2.NodePortPolicies()
        stored = self.controller.port_policies.get(request.node, {})
        for (port, vlan), policy in sorted(stored.items()):
            reply.stored.add(port=port, vlan=vlan, policy=policy_to_pb(policy))
        if session is None:
            reply.agent_error = "this controller has no session to the node (it does not lead)"
            return reply
        reply.push_error = session.policy_error
        channel = agent_channel(session.node)
        try:
            stub = dataplane_pb2_grpc.DataplaneStub(channel)
            agent = await stub.ListPortPolicies(
                dataplane_pb2.ListPortPoliciesRequest(), timeout=AGENT_TIMEOUT
            )
            reply.in_force.extend(agent.policies)
            reply.refused_macs.extend(agent.refused_macs)
        except grpc.RpcError as e:
            reply.agent_error = f"{e.code().name}: {e.details()}"
        finally:
            await channel.close(None)
        return reply

    # -- members

    @_store_errors
    async def AddMember(
        self, request: controller_pb2.AddMemberRequest, context: _Context
    ) -> controller_pb2.MemberIntent:
        m = request.member
        if len(m.mac) != 6:
            await status.abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"member.mac: is {len(m.mac)} bytes; a MAC address is 6",
            )
        try:
            added = await self.controller.add_member(m.name, m.node, m.port, m.vlan, m.mac.hex(":"))
        except MemberError as e:
            await status.abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except UnknownNode as e:
            await status.abort(context, grpc.StatusCode.NOT_FOUND, str(e))
        return self._member_pb(added)

    @_store_errors
    async def RemoveMember(
        self, request: controller_pb2.RemoveMemberRequest, context: _Context
    ) -> controller_pb2.MemberIntent:
        try:
            removed = await self.controller.remove_member(request.name)
        except MemberError as e:
            await status.abort(context, grpc.StatusCode.NOT_FOUND, str(e))
        return self._member_pb(removed)

    @_store_errors
    async def SetMemberFilter(
        self, request: controller_pb2.SetMemberFilterRequest, context: _Context
    ) -> controller_pb2.MemberIntent:
        sources = None
        hops = None
        if request.filter_sources or request.from_bgp:
            try:
                sources = [
                    prefix_from_pb(p, f"allowed_sources[{i}]")
                    for i, p in enumerate(request.allowed_sources)
                ]
                if request.from_bgp:
                    hops = [
                        address_from_pb(a, f"bgp_next_hops[{i}]")
                        for i, a in enumerate(request.bgp_next_hops)
                    ]
            except FieldError as f:
                await refuse(
                    context,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    [Violation(None, f.field, f.description)],
                )
        elif request.allowed_sources:
            await status.abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "allowed_sources: set without filter_sources; set both or neither",
            )
        if request.bgp_next_hops and not request.from_bgp:
            await status.abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "bgp_next_hops: set without from_bgp; set both or neither",
            )
        try:
            updated = await self.controller.set_member_filter(request.name, sources, hops)
        except NoBgpFeed as e:
            await status.abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(e))
        except MemberError as e:
            code = (
                grpc.StatusCode.NOT_FOUND
                if request.name not in self.controller.members
                else grpc.StatusCode.INVALID_ARGUMENT
            )
            await status.abort(context, code, str(e))
        return self._member_pb(updated)

    async def ListMembers(
        self, request: controller_pb2.ListMembersRequest, context: _Context
    ) -> controller_pb2.ListMembersResponse:
        members = self.controller.members
        return controller_pb2.ListMembersResponse(
            members=[self._member_pb(members[n]) for n in sorted(members)]
        )

    def _member_pb(self, m: MemberRecord) -> controller_pb2.MemberIntent:
        pb = member_to_pb(m)
        if m.bgp_next_hops is not None:
            prefixes, count, over, pending = self.controller.filters.view(m.name)
            pb.bgp_sources.extend(prefix_to_pb(p) for p in prefixes)
            pb.bgp_prefixes = count
            pb.bgp_over_limit = over
            pb.bgp_pending = pending
        return pb

    @_store_errors
    async def ListMemberSamples(
        self, request: controller_pb2.ListMemberSamplesRequest, context: _Context
    ) -> controller_pb2.ListMemberSamplesResponse:
        start = request.start.seconds + request.start.nanos / 1e9
        end = request.end.seconds + request.end.nanos / 1e9 if request.HasField("end") else 2**62
        if end <= start:
            await status.abort(context, grpc.StatusCode.INVALID_ARGUMENT, "end: is not after start")
        samples = await self.controller.store.samples(request.name, start, end)
        out = []
        for s in samples:
            t = timestamp_pb2.Timestamp()
            t.FromNanoseconds(int(s.time * 1e9))
            out.append(
                controller_pb2.MemberSample(
                    time=t,
                    rx_bytes=s.rx_bytes,
                    tx_bytes=s.tx_bytes,
                    rx_packets=s.rx_packets,
                    tx_packets=s.tx_packets,
                )
            )
        return controller_pb2.ListMemberSamplesResponse(samples=out)

    # -- routes

    @_store_errors
    async def Apply(self, request: bytes, context: _Context) -> controller_pb2.ApplyResponse:
        """`request` is the ApplyRequest as it came (server.RAW_REQUESTS): read in Rust."""
        loop = asyncio.get_running_loop()
        try:
            batch = await loop.run_in_executor(None, batch_from_request, request)
            revision = await self.controller.apply(batch)
        except InvalidBatch as e:
            await refuse(context, grpc.StatusCode.INVALID_ARGUMENT, e.violations, str(e))
        except IdsExhausted as e:
            await refuse(
                context, grpc.StatusCode.RESOURCE_EXHAUSTED, [Violation(None, "routes", str(e))]
            )
        return controller_pb2.ApplyResponse(revision=revision, routes=len(batch))

    @_store_errors
    async def Delete(
        self, request: controller_pb2.DeleteRequest, context: _Context
    ) -> controller_pb2.DeleteResponse:
        try:
            keys = keys_from_pb(request)
            revision, deleted = await self.controller.delete(keys)
        except InvalidBatch as e:
            await refuse(context, grpc.StatusCode.INVALID_ARGUMENT, e.violations, str(e))
        return controller_pb2.DeleteResponse(revision=revision, deleted=deleted)

    @_store_errors
    async def SetNextHopState(
        self, request: controller_pb2.SetNextHopStateRequest, context: _Context
    ) -> controller_pb2.SetNextHopStateResponse:
        try:
            gateway = gateway_from_pb(request.gateway, "gateway")
            if not request.port:
                raise FieldError("port", "is empty; name the port the gateway is reached through")
            if (problem := vlan_problem(request.vlan)) is not None:
                raise FieldError("vlan", problem)
        except FieldError as f:
            await refuse(
                context, grpc.StatusCode.INVALID_ARGUMENT, [Violation(None, f.field, f.description)]
            )
        try:
            revision, groups = await self.controller.set_next_hop_state(
                request.node, (gateway, request.port, request.vlan), request.drained
            )
        except UnknownNode as e:
            await status.abort(context, grpc.StatusCode.NOT_FOUND, str(e))
        return controller_pb2.SetNextHopStateResponse(revision=revision, groups=groups)

    async def ListRoutes(
        self, request: controller_pb2.ListRoutesRequest, context: _Context
    ) -> controller_pb2.ListRoutesResponse:
        size = request.page_size or LIST_PAGE[0]
        if size > LIST_PAGE[1]:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"page_size: {size} exceeds the largest page of {LIST_PAGE[1]}",
            )
        within = None
        if request.HasField("within"):
            try:
                within = prefix_from_pb(request.within, "within")
            except FieldError as f:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{f.field}: {f.description}")
        if request.kind and request.kind not in _KINDS:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"kind: {request.kind} is not a route kind"
            )
        source = request.source
        if source not in _SOURCES:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"source: {source} is not a route source"
            )
        node = request.node if request.HasField("node") else None
        query_text = repr((node, within, request.kind, source))
        phase = BGP if source == controller_pb2.ROUTE_SOURCE_BGP else STATIC
        after: tuple[str, bytes] | None = None
        if request.page_token:
            try:
                phase, after_node, after_key = self.page_tokens.read(request.page_token, query_text)
            except ValueError as e:
                await status.abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"page_token: {e}")
            after = (after_node, after_key)
        c = self.controller
        # The operator's routes first, then BGP's: each source in (node, prefix) order.
        rows: list[tuple[domain.RouteKey, Intent, bytes, int]] = []
        if phase == STATIC:
            found = await c.list_routes(RouteQuery(node, within, request.kind, size + 1, after))
            rows += [(k, i, sort_key, STATIC) for k, i, sort_key in found]
            after = None
        if len(rows) <= size and source != controller_pb2.ROUTE_SOURCE_STATIC:
            query = RouteQuery(node, within, request.kind, size + 1 - len(rows), after)
            rows += [(k, i, sort_key, BGP) for k, i, sort_key in await c.list_bgp_routes(query)]
        response = controller_pb2.ListRoutesResponse()
        state = c.state
        for route_key, intent, _, from_ in rows[:size]:
            response.routes.append(route_to_pb(route_key, intent))
            response.sources.append(_SOURCE_TO_PB[from_])
            response.active.append(from_ == STATIC or not state.operators(*route_key))
        if len(rows) > size:
            (node_name, _), _, sort_key, from_ = rows[size - 1]
            response.next_page_token = self.page_tokens.make(query_text, from_, node_name, sort_key)
        return response

    async def Watch(
        self, request: controller_pb2.WatchRequest, context: _Context
    ) -> AsyncIterator[bytes]:
        """Yields WatchResponses already serialized (server.RAW_RESPONSES), the same bytes
        for every watcher of a snapshot or change."""
        node = request.node if request.HasField("node") else None
        watcher, snapshot = self.controller.watch(node)
        try:
            # Held while sent: a snapshot no watcher holds is no longer encoded.
            wire = _wire_snapshot(snapshot)
            for chunk in wire.chunks:
                yield await chunk
            del snapshot, wire
            while not watcher.behind:
                event = await watcher.queue.get()
                if event is None:
                    return
                yield await _wire_event(event)
            await status.abort(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the watcher fell more than {WATCH_QUEUE} changes behind; watch again",
            )
        finally:
            self.controller.unwatch(watcher)


def member_to_pb(m: MemberRecord) -> controller_pb2.MemberIntent:
    return controller_pb2.MemberIntent(
        name=m.name,
        node=m.node,
        port=m.port,
        vlan=m.vlan,
        mac=bytes.fromhex(m.mac.replace(":", "")),
        id=m.id,
        filter_sources=m.sources is not None,
        allowed_sources=[prefix_to_pb(p) for p in m.sources or ()],
        from_bgp=m.bgp_next_hops is not None,
        bgp_next_hops=[ip_address(a).packed for a in m.bgp_next_hops or ()],
    )


async def refuse(
    context: _Context,
    code: grpc.StatusCode,
    violations: Sequence[Violation],
    message: str | None = None,
) -> NoReturn:
    """Ends the call with `code` and a WriteError naming every violation in the details."""
    if message is None:
        message = str(InvalidBatch(violations))
    await status.refuse(context, code, message, violations, items="routes")


class PageTokens:
    """ListRoutes' page tokens: where the last page ended, (source, node, the route's sort
    key), made
    self-checking so that a mangled token is refused rather than read as "from the start" (a
    client would loop forever). A version byte, the position, and an HMAC over it and the
    query's filters with a key of this controller run: a token is good for the query that
    gave it, until the controller restarts."""

    VERSION = 2
    MAC_BYTES = 16

    def __init__(self) -> None:
        self._key = os.urandom(32)

    def _mac(self, query: str, body: bytes) -> bytes:
        digest = hmac.new(self._key, query.encode() + b"\0" + body, hashlib.sha256).digest()
        return digest[: self.MAC_BYTES]

    def make(self, query: str, phase: int, node: str, sort_key: bytes) -> str:
        name = node.encode()
        body = bytes((self.VERSION, phase, len(name))) + name + sort_key
        return base64.urlsafe_b64encode(body + self._mac(query, body)).decode().rstrip("=")

    def read(self, token: str, query: str) -> tuple[int, str, bytes]:
        """The position in `token` (phase, node, sort key); ValueError saying why it is not a
        token to go on from."""
        again = "list again from the first page"
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except ValueError:
            raise ValueError(f"not a token this controller gave; {again}") from None
        body, mac = raw[: -self.MAC_BYTES], raw[-self.MAC_BYTES :]
        if len(body) < 3 or body[0] != self.VERSION:
            raise ValueError(f"not a token this controller gave; {again}")
        if not hmac.compare_digest(mac, self._mac(query, body)):
            raise ValueError(
                "not a token this controller gave for this query (mangled, from another "
                f"query's filters, or from before the controller restarted); {again}"
            )
        phase, length = body[1], body[2]
        name, sort_key = body[3 : 3 + length], body[3 + length :]
        node = name.decode(errors="replace")
        family = sort_key[0] if sort_key else 0
        if (
            len(name) != length
            or (node and check_node_name(node) is not None)
            or family not in (4, 16)
            or len(sort_key) != family + 2
            or sort_key[-1] > family * 8
        ):
            raise ValueError(f"does not hold a position in the routes; {again}")
        return phase, node, sort_key


# --- Watch: encoded once, off the event loop, shared by every watcher -----------------------
# A snapshot of the full tables is over a million routes and a busy controller has hundreds
# of watchers: each snapshot chunk and each change is encoded once, in the executor, and the
# same bytes go to every watcher: Watch is registered with no response serializer
# (server.RAW_RESPONSES), so gRPC sends them as they are.

_INLINE_ROUTES = 256  # a change this small is encoded on the loop: cheaper than a thread hop
_snapshot_wires: weakref.WeakKeyDictionary[WatchSnapshot, _WireSnapshot] = (
    weakref.WeakKeyDictionary()
)
_event_wires: weakref.WeakKeyDictionary[WatchEvent, asyncio.Future[bytes]] = (
    weakref.WeakKeyDictionary()
)


class _WireSnapshot:
    """A snapshot's messages, encoded in order by one task; watchers send each as it is ready.
    It holds the snapshot's tables, not the snapshot: once no watcher holds that, encoding
    stops."""

    def __init__(self, snapshot: WatchSnapshot) -> None:
        loop = asyncio.get_running_loop()
        count = max(1, -(-snapshot.size // WATCH_CHUNK))
        self.chunks: list[asyncio.Future[bytes]] = [loop.create_future() for _ in range(count)]
        self._task = asyncio.create_task(
            self._encode(weakref.ref(snapshot), snapshot.revision, snapshot.tables)
        )

    async def _encode(
        self,
        snapshot: weakref.ref[WatchSnapshot],
        revision: int,
        tables: list[tuple[str, IntentRoutes]],
    ) -> None:
        loop = asyncio.get_running_loop()
        routes = (((n, p), i) for n, table in tables for p, i in table.items())
        last = len(self.chunks) - 1
        try:
            for index, chunk in enumerate(self.chunks):
                if snapshot() is None:
                    break  # every watcher of it has gone
                message = await loop.run_in_executor(
                    None, _encode_chunk, routes, revision, index == last
                )
                chunk.set_result(message)
        except BaseException as e:
            for chunk in self.chunks:
                if not chunk.done():
                    chunk.set_exception(e)
            raise
        finally:
            for chunk in self.chunks:
                if not chunk.done():
                    chunk.cancel()


def _wire_snapshot(snapshot: WatchSnapshot) -> _WireSnapshot:
    wire = _snapshot_wires.get(snapshot)
    if wire is None:
        wire = _snapshot_wires[snapshot] = _WireSnapshot(snapshot)
    return wire


def _encode_chunk(
    routes: Iterator[tuple[domain.RouteKey, Intent]], revision: int, last: bool
) -> bytes:
    """The next WATCH_CHUNK routes of a snapshot as one WatchResponse, encoded."""
    response = controller_pb2.WatchResponse(revision=revision, snapshot=True, snapshot_end=last)
    _fill_routes(response, itertools.islice(routes, WATCH_CHUNK))
    encoded: bytes = response.SerializeToString()
    return encoded


def _encode_event(event: WatchEvent) -> bytes:
    response = controller_pb2.WatchResponse(revision=event.revision)
    _fill_routes(response, event.set.items())
    add = response.deleted.add
    for node, prefix in event.deleted:
        set_prefix(add(node=node).prefix, prefix)
    encoded: bytes = response.SerializeToString()
    return encoded


def _wire_event(event: WatchEvent) -> asyncio.Future[bytes]:
    wire = _event_wires.get(event)
    if wire is None:
        loop = asyncio.get_running_loop()
        if len(event.set) + len(event.deleted) <= _INLINE_ROUTES:
            wire = loop.create_future()
            wire.set_result(_encode_event(event))
        else:
            wire = loop.run_in_executor(None, _encode_event, event)
        _event_wires[event] = wire
    return wire


def _fill_routes(
    response: controller_pb2.WatchResponse, routes: Iterable[tuple[domain.RouteKey, Intent]]
) -> None:
    """Appends `routes` to response.set, built in place (the cheapest way for many), the
    next hops of each distinct group built once."""
    add = response.set.add
    hops: dict[domain.GroupKey, list[controller_pb2.NextHop]] = {}
    for (node, prefix), intent in routes:
        route = add(node=node, kind=_KIND_TO_PB[intent.kind])
        set_prefix(route.prefix, prefix)
        group = intent.group
        if group is not None:
            pbs = hops.get(group)
            if pbs is None:
                pbs = hops[group] = [
                    controller_pb2.NextHop(
                        gateway=address_to_bytes(gateway), port=port, vlan=vlan, weight=weight
                    )
                    for (gateway, port, vlan), weight in group
                ]
            route.next_hops.extend(pbs)


# --- protobuf -> domain --------------------------------------------------------------------


def batch_from_request(request: controller_pb2.ApplyRequest | bytes) -> RouteBatch:
    """An ApplyRequest's routes, read in bulk (corridor._dataplane.read_apply_request: no
    protobuf object per route); a request with any fault is read again by routes_from_pb,
    which names every fault. InvalidBatch then."""
    data = request if isinstance(request, bytes) else request.SerializeToString()
    try:
        read = read_apply_request(data)
    except ValueError as e:
        raise InvalidBatch([Violation(None, "routes", str(e))]) from None
    if read is not None:
        batch = _checked_batch(*read)
        if batch is not None:
            return batch
    try:
        parsed = controller_pb2.ApplyRequest.FromString(data)
    except DecodeError as e:  # the Rust reader took bytes that protobuf refuses
        message = f"not a corridor.v1.ApplyRequest: {e}"
        raise InvalidBatch([Violation(None, "routes", message)]) from None
    return RouteBatch.of(routes_from_pb(parsed))


def _checked_batch(
    raw: list[tuple[int, list[NextHopParts]]],
    nodes: list[str],
    prefixes: Prefixes,
    index: list[int],
) -> RouteBatch | None:
    """The batch, with what the reader leaves to Python (node names, next hops) checked once
    per distinct value; None at the first fault."""
    if any(node and check_node_name(node) is not None for node in set(nodes)):
        return None
    groups: dict[domain.GroupKey, domain.GroupKey] = {}
    intents = []
    for kind, hops in raw:
        try:
            intent = intent_from_parts("", kind, hops)
        except FieldError:
            return None
        if intent.group is not None:
            intent = Intent(intent.kind, groups.setdefault(intent.group, intent.group))
        intents.append(intent)
    return RouteBatch(nodes, prefixes, index, intents)


def routes_from_pb(request: controller_pb2.ApplyRequest) -> list[tuple[domain.RouteKey, Intent]]:
    count = len(request.routes)
    if count > MAX_ROUTES_PER_BATCH:
        raise InvalidBatch(
            [
                Violation(
                    None,
                    "routes",
                    f"{count} routes exceed the maximum of {MAX_ROUTES_PER_BATCH} per batch; "
                    "split them",
                )
            ]
        )
    if count == 0:
        raise InvalidBatch([Violation(None, "routes", "is empty; give at least one route")])
    violations: list[Violation] = []
    out = []
    seen: dict[domain.RouteKey, int] = {}
    groups: dict[domain.GroupKey, domain.GroupKey] = {}  # one tuple per distinct group
    for i, route in enumerate(request.routes):
        try:
            key, intent = route_from_pb(route)
        except FieldError as f:
            violations.append(Violation(i, f"routes[{i}].{f.field}", f.description))
            continue
        first = seen.setdefault(key, i)
        if first != i:
            violations.append(
                Violation(
                    i, f"routes[{i}]", f"{_key_text(key)} is already routes[{first}] in this batch"
                )
            )
            continue
        if intent.group is not None:
            intent = Intent(intent.kind, groups.setdefault(intent.group, intent.group))
        out.append((key, intent))
    if violations:
        raise InvalidBatch(violations)
    return out


def _key_text(key: domain.RouteKey) -> str:
    node, prefix = key
    return f"route {prefix} for {'every node' if node == ALL_NODES else 'node ' + node}"


def route_from_pb(route: controller_pb2.RouteIntent) -> tuple[domain.RouteKey, Intent]:
    prefix = prefix_from_pb(route.prefix, "prefix")
    node = route.node
    if node and (problem := check_node_name(node)) is not None:
        raise FieldError("node", problem)
    hops = [(h.gateway, h.port, h.vlan, h.weight) for h in route.next_hops]
    return (node, prefix), intent_from_parts(prefix, route.kind, hops)


NextHopParts = tuple[bytes, str, int, int]  # gateway, port, vlan, weight as sent


def intent_from_parts(prefix: str, kind_value: int, next_hops: Sequence[NextHopParts]) -> Intent:
    """The intent of a route to `prefix` (for messages) from its kind and next hops as sent;
    FieldError (below the route) at the first fault."""
    kind = _KINDS.get(kind_value)
    if kind is None:
        if kind_value == 0:
            raise FieldError(
                "kind", f"route {prefix}: is unset; use FORWARD (with next_hops), BLACKHOLE, "
                "UNREACHABLE or LOCAL"
            )  # fmt: skip
        raise FieldError("kind", f"route {prefix}: {kind_value} is not a route kind")
    if kind is not RouteKind.FORWARD:
        if next_hops:
            raise FieldError("next_hops", f"route {prefix}: a {kind.name} route has no next hops")
        return Intent(kind)
    if not next_hops:
        raise FieldError(
            "next_hops", f"route {prefix}: a FORWARD route needs at least one next hop"
        )
    if len(next_hops) > MAX_NEXT_HOPS:
        raise FieldError(
            "next_hops",
            f"route {prefix}: {len(next_hops)} next hops exceed the limit of {MAX_NEXT_HOPS}",
        )
    hops: dict[domain.AdjacencyKey, int] = {}
    for j, (gateway_bytes, port, vlan, weight) in enumerate(next_hops):
        where = f"next_hops[{j}]"
        gateway = gateway_from_pb(gateway_bytes, f"{where}.gateway")
        if not port:
            raise FieldError(
                f"{where}.port", "is empty; name the port the gateway is reached through"
            )
        if (problem := vlan_problem(vlan)) is not None:
            raise FieldError(f"{where}.vlan", problem)
        if weight > MAX_WEIGHT:
            raise FieldError(f"{where}.weight", f"{weight} exceeds the largest weight {MAX_WEIGHT}")
        key = (gateway, port, vlan)
        if key in hops:
            raise FieldError(where, f"gateway {gateway} on {port} VLAN {vlan} is listed twice")
        hops[key] = weight or 1
    return Intent(kind, tuple(sorted(hops.items())))


def keys_from_pb(request: controller_pb2.DeleteRequest) -> list[domain.RouteKey]:
    if not request.routes:
        raise InvalidBatch([Violation(None, "routes", "is empty; give at least one route key")])
    if len(request.routes) > MAX_ROUTES_PER_BATCH:
        raise InvalidBatch(
            [Violation(None, "routes", f"more than {MAX_ROUTES_PER_BATCH} keys; split them")]
        )
    keys, violations = [], []
    seen: dict[domain.RouteKey, int] = {}
    for i, key in enumerate(request.routes):
        try:
            route_key = (key.node, prefix_from_pb(key.prefix, "prefix"))
        except FieldError as f:
            violations.append(Violation(i, f"routes[{i}].{f.field}", f.description))
            continue
        first = seen.setdefault(route_key, i)
        if first != i:  # as Apply refuses a key twice in a batch
            # Any node name may be deleted from (a deregistered node's too): echoed short.
            node = "every node" if key.node == ALL_NODES else f"node {echo(key.node)}"
            text = f"route {route_key[1]} for {node} is already routes[{first}]"
            violations.append(Violation(i, f"routes[{i}]", text))
            continue
        keys.append(route_key)
    if violations:
        raise InvalidBatch(violations)
    return keys


def node_from_pb(node: controller_pb2.Node) -> domain.Node:
    """A node to register. Its TLS files are read when the session connects: they must exist
    and be readable now, named by absolute paths (the controller's working directory is no
    place a caller knows)."""
    if (problem := check_node_name(node.name)) is not None:
        raise FieldError("node.name", problem)
    if (problem := endpoint_problem(node.address)) is not None:
        raise FieldError("node.address", problem)
    tls = None
    if node.HasField("tls"):
        for name in ("ca", "cert", "key"):
            path = getattr(node.tls, name)
            if not path:
                raise FieldError(f"node.tls.{name}", "is empty; TLS needs ca, cert and key files")
            if not path.startswith("/"):
                raise FieldError(f"node.tls.{name}", f"{echo(path, 256)} is not an absolute path")
            try:
                with open(path, "rb") as f:
                    pem = f.read(1 << 20)
            except OSError as e:
                raise FieldError(
                    f"node.tls.{name}",
                    f"cannot read {echo(path, 256)} on the controller: {e.strerror}",
                ) from None
            if b"-----BEGIN " not in pem:
                raise FieldError(f"node.tls.{name}", f"{echo(path, 256)} is not a PEM file")
        tls = domain.NodeTls(node.tls.ca, node.tls.cert, node.tls.key, node.tls.server_name)
    return domain.Node(node.name, node.address, tls)


# --- domain -> protobuf --------------------------------------------------------------------


def route_to_pb(key: domain.RouteKey, intent: Intent) -> controller_pb2.RouteIntent:
    node, prefix = key
    route = controller_pb2.RouteIntent(
        node=node, prefix=prefix_to_pb(prefix), kind=_KIND_TO_PB[intent.kind]
    )
    for (gateway, port, vlan), weight in intent.group or ():
        route.next_hops.add(gateway=address_to_bytes(gateway), port=port, vlan=vlan, weight=weight)
    return route


def key_to_pb(key: domain.RouteKey) -> controller_pb2.RouteKey:
    return controller_pb2.RouteKey(node=key[0], prefix=prefix_to_pb(key[1]))


def fib_sizes(sizes: tuple[int, int, int, int]) -> controller_pb2.FibSizes:
    v4, v6, groups, adjacencies = sizes
    return controller_pb2.FibSizes(
        ipv4_routes=v4, ipv6_routes=v6, next_hop_groups=groups, adjacencies=adjacencies
    )


def leadership(c: Controller) -> controller_pb2.Leadership:
    leader, since = c.leader_now()
    pb = controller_pb2.Leadership(
        backend=c.backend,
        leading=c.leading,
        leader=leader,
        election_id=c.election >> 64 if c.leading else 0,
        name=c.advertise,
        leader_changes=c.leader_changes,
    )
    if since:
        pb.leader_since.FromNanoseconds(int(since * 1e9))
    return pb


def followed_node_status(c: Controller, node: domain.Node) -> controller_pb2.NodeStatus:
    """A node as a follower knows it: registered, and who leads
    (the leader alone has a session to it: ask the leader for its sync state)."""
    pb = controller_pb2.NodeStatus(
        node=controller_pb2.Node(name=node.name, address=node.address),
        state=controller_pb2.SYNC_STATE_UNSPECIFIED,
        leadership=leadership(c),
    )
    return pb


def node_status(c: Controller, s: NodeSession) -> controller_pb2.NodeStatus:
    node = s.node
    pb = controller_pb2.NodeStatus(
        node=controller_pb2.Node(name=node.name, address=node.address),
        state=cast("controller_pb2.SyncState", s.sync_state),
        connected=s.connected,
        in_sync=s.in_sync,
        last_error=s.last_error,
        synced_revision=s.synced_revision,
        lag_seconds=s.lag_seconds(),
        intended=fib_sizes(s.desired.sizes() if s.desired is not None else (0, 0, 0, 0)),
        installed=fib_sizes(s.installed_sizes()),
        agent_generation=s.generation,
        reconnects=s.reconnects,
        drift_detected=s.drift_detected,
        drift_entries=s.drift_entries,
        last_full_sync_seconds=s.last_full_sync_seconds,
        last_full_sync_operations=s.last_full_sync_operations,
        counters=controller_pb2.CountersSummary(
            rx_packets=s.counters[0], tx_packets=s.counters[1], dropped_packets=s.counters[2]
        ),
        leadership=leadership(c),
    )
    if node.tls is not None:
        pb.node.tls.CopyFrom(
            controller_pb2.NodeTls(
                ca=node.tls.ca,
                cert=node.tls.cert,
                key=node.tls.key,
                server_name=node.tls.server_name,
            )
        )
    if s.last_error_time:
        pb.last_error_time.CopyFrom(timestamp_pb2.Timestamp(seconds=int(s.last_error_time)))
    pb.retries = s.retries
    if s.cleared_error_time:
        pb.cleared_error = s.cleared_error
        pb.cleared_error_time.CopyFrom(timestamp_pb2.Timestamp(seconds=int(s.cleared_error_time)))
    if c.feeds is not None and node.name in c.feeds.sources:
        pb.bgp.CopyFrom(bgp_status(c, node.name))
    return pb


def bgp_status(c: Controller, name: str) -> controller_pb2.BgpStatus:
    assert c.feeds is not None
    source = c.feeds.sources[name]
    counts = source.counters
    pb = controller_pb2.BgpStatus(
        connected=source.connected,
        sessions=source.session,
        routes=len(c.bgp.table(name)),
        active_routes=c.active_bgp_routes(name),
        stale_routes=source.stale,
        received=counts.received,
        filtered=counts.filtered,
        swept=counts.swept,
    )
    pb.not_installed.update({k: v for k, v in counts.not_installed.items() if v})
    pb.not_installed_total.update(counts.not_installed_total)
    for config, listener, port in c.feeds.listeners:
        if config.node == name:
            where = f" in netns {config.netns}" if config.netns else ""
            pb.listen = f"{config.listen.host}:{port}{where}"
            pb.fpm_errors.update(listener.counters.errors)
            pb.fpm_messages = listener.counters.messages
    return pb
