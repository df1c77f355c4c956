"""Hosts on the ports' attached subnets: the agent's half of glean (docs/engine.md). Each
attached subnet gets a `glean` route, so a frame to a host with no host route is dropped,
counted and its destination queued by the engine; the agent drains that queue, has the
kernel resolve the host, and once the kernel knows its MAC installs a host route (/32,
/128) to an adjacency of its own; it follows the host's MAC and removes the host route
when the engine's hit bit of its adjacency stayed clear for `age_seconds`.

Resolution goes through the kernel's own ARP/ND: a managed neighbour entry (NTF_EXT_MANAGED)
made and followed by the link watch exactly as for a gateway (neighbours.py), because the
kernel then sends the solicitations, applies its own retransmit timers, keeps the entry
fresh and notices a new MAC, and the entry is deleted by the same rule as a gateway's once
no host route or resolution wants it. Nothing here sends a frame itself.

`HostTable` is the bookkeeping (no engine, no netlink, no event loop: it computes FIB
operations and the neighbours it wants); `Glean` runs it: drains the engine off the event
loop, rate-limits, applies through the Dataplane (which serialises it with writers' batches).
The host routes, their adjacencies and groups use the top `glean.hosts` ids of the FIB's
tables, which writers may not use, and are left out of what the agent reports as written.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from corridor.agent.config import GLEAN_HOSTS_DEFAULT, GleanConfig, PortConfig
from corridor.agent.nexthops import Gateway
from corridor.common.errors import InvalidBatch, Violation
from corridor.common.fib import (
    Adjacency,
    DeleteAdjacency,
    DeleteGroup,
    DeleteRoute,
    FibOperation,
    GleanRoute,
    NextHopGroup,
    Route,
    RouteKind,
)

if TYPE_CHECKING:
    from corridor.agent.domain import Dataplane

log = logging.getLogger("corridor.agent")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# How often the engine's queue is drained: the first frames to a host wait this much more.
DRAIN_SECONDS = 0.05
DRAIN_MAX = 256


@dataclass(frozen=True, slots=True)
class AttachedSubnet:
    port: str
    vlan: int
    network: Network
    router: ipaddress.IPv4Address | ipaddress.IPv6Address  # the router's own address there


def attached_subnets(ports: Iterable[PortConfig]) -> list[AttachedSubnet]:
    """The subnets of the ports' and their VLANs' addresses, but for /32 and /128 (an
    address alone has no neighbours)."""
    out = []
    for p in ports:
        places = [(0, p.addresses)] + [(v.id, v.addresses) for v in p.vlans]
        for vlan, addresses in places:
            for a in addresses:
                if a.network.prefixlen < a.max_prefixlen:
                    out.append(AttachedSubnet(p.name, vlan, a.network, a.ip))
    return out


def host_room(hosts: int | None, subnets: bool, adjacencies: int, groups: int) -> int:
    """The host routes the agent keeps ids for: `glean.hosts` when set (ValueError when the
    FIB cannot spare that many), else GLEAN_HOSTS_DEFAULT or a quarter of the FIB's ids when that
    is fewer, and none without an attached subnet: a small FIB starts with the defaults."""
    room = min(adjacencies, groups)
    if hosts is None:
        return min(GLEAN_HOSTS_DEFAULT, room // 4) if subnets else 0
    if hosts >= room:
        raise ValueError(
            f"glean.hosts: {hosts} host routes need as many adjacency and group ids, but the "
            f"FIB has {adjacencies} adjacencies and {groups} groups (fib.adjacencies, "
            "fib.groups); lower glean.hosts or raise those"
        )
    return hosts


@dataclass(slots=True)
class Host:
    gateway: Gateway
    prefix: str
    slot: int  # adjacency id first_adjacency + slot, group id first_group + slot
    mac: str
    port_mac: str
    used_at: float


@dataclass
class GleanCounts:
    """What became of the destinations the engine queued (monotonic), and the gauges."""

    asked: int = 0  # destinations drained from the engine
    resolving: int = 0  # resolutions started
    resolved: int = 0  # host routes installed
    failed: int = 0  # no answer within resolve_seconds
    aged: int = 0  # host routes removed, unused for age_seconds
    lost: int = 0  # host routes removed, the kernel lost the neighbour (or its link)
    mac_changes: int = 0  # host adjacencies moved to a new MAC
    taken_over: int = 0  # a writer's route for the host's prefix replaced ours
    rate_limited: int = 0  # over resolve_rate
    table_full: int = 0  # glean.hosts host routes and resolutions under way
    ignored: int = 0  # not on an attached subnet, or the router's or subnet's own address


class HostTable:
    """The attached subnets, the hosts being resolved and those with a host route."""

    def __init__(
        self,
        subnets: Sequence[AttachedSubnet],
        config: GleanConfig,
        first_adjacency: int,
        first_group: int,
    ) -> None:
        self.subnets = list(subnets)
        self.config = config
        self.room = config.hosts or 0  # start_engine settles a default first
        self.first_adjacency = first_adjacency
        self.first_group = first_group
        self.prefixes = {str(s.network) for s in self.subnets}
        self.pending: dict[Gateway, float] = {}  # resolution started at
        self.held: dict[Gateway, float] = {}  # failed at: not asked again for a while
        self.hosts: dict[Gateway, Host] = {}
        self.by_prefix: dict[str, Gateway] = {}
        self._free = list(range(self.room - 1, -1, -1))  # slots, lowest last (popped first)
        self.counts = GleanCounts()
        self.given_up: list[Gateway] = []  # since the last take_given_up()
        self._tokens = float(config.resolve_rate)
        self._filled_at: float | None = None

    # --- what the engine and writers see -----------------------------------------------

    def glean_routes(self) -> list[str]:
        return sorted(self.prefixes)

    def violations(self, operations: Sequence[FibOperation]) -> list[Violation]:
        """Writers' operations that would touch what is the agent's: the reserved ids, and
        the attached subnets' own prefixes (their glean routes). Routes, a full table of
        them, take one type check and two tuple reads each."""
        out = []
        prefixes, first_group = self.prefixes, self.first_group
        route = Route
        for i, op in enumerate(operations):
            if type(op) is route:
                # (prefix, kind, group): a route that is not FORWARD has group 0.
                if op[0] not in prefixes and op[2] < first_group:
                    continue
            problem = self._problem(op)
            if problem is not None:
                out.append(Violation(i, f"operations[{i}]", problem))
        return out

    def _problem(self, op: FibOperation) -> str | None:
        if type(op) is Route or type(op) is DeleteRoute:
            problem = self._prefix_problem(op.prefix)
            if problem is None and type(op) is Route and op.kind is RouteKind.FORWARD:
                problem = self._reserved("group", op.group, self.first_group)
            return problem
        if type(op) is Adjacency or type(op) is DeleteAdjacency:
            return self._reserved("adjacency", op.id, self.first_adjacency)
        if type(op) is DeleteGroup:
            return self._reserved("group", op.id, self.first_group)
        if type(op) is NextHopGroup:
            problem = self._reserved("group", op.id, self.first_group)
            for adjacency, _ in op.members:
                problem = problem or self._reserved("adjacency", adjacency, self.first_adjacency)
            return problem
        if type(op) is GleanRoute:
            return f"route {op.prefix}: glean routes are the agent's own"
        return None

    def _prefix_problem(self, prefix: str) -> str | None:
        if prefix not in self.prefixes:
            return None
        return (
            f"route {prefix}: is an attached subnet of a port, whose hosts the agent resolves "
            "and routes itself; write a more or a less specific prefix"
        )

    def _reserved(self, what: str, id_: int, first: int) -> str | None:
        if id_ < first:
            return None
        return (
            f"{what} {id_}: ids from {first} up are the agent's host routes on attached "
            f"subnets (glean.hosts = {self.room}); use a lower id"
        )

    def owned(self, prefix: str) -> bool:
        return prefix in self.by_prefix

    # --- the engine's queue --------------------------------------------------------------

    def ask(self, addresses: Iterable[str], now: float) -> bool:
        """Starts resolving the hosts of `addresses` (text, from the engine's queue) that
        need it, within the rate and the table's room; True when the wanted set changed."""
        changed = False
        self._refill(now)
        for text in addresses:
            self.counts.asked += 1
            gateway = self._gateway(text)
            if gateway is None:
                self.counts.ignored += 1
                continue
            if gateway in self.pending or gateway in self.hosts:
                continue  # under way, or installed a moment ago
            held = self.held.get(gateway)
            if held is not None and now - held < self.config.resolve_seconds:
                continue
            self.held.pop(gateway, None)
            if len(self.pending) + len(self.hosts) >= self.room:
                self.counts.table_full += 1
                continue
            if self._tokens < 1:
                self.counts.rate_limited += 1
                continue
            self._tokens -= 1
            self.pending[gateway] = now
            self.counts.resolving += 1
            changed = True
        return changed

    def _refill(self, now: float) -> None:
        rate = self.config.resolve_rate
        if self._filled_at is not None:
            self._tokens = min(float(rate), self._tokens + (now - self._filled_at) * rate)
        self._filled_at = now

    def _gateway(self, text: str) -> Gateway | None:
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            return None
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        for s in self.subnets:
            if ip in s.network:
                if ip == s.router:
                    return None
                n = s.network
                if (
                    n.version == 4
                    and n.prefixlen <= 30
                    and ip
                    in (
                        n.network_address,
                        n.broadcast_address,
                    )
                ):
                    return None
                return Gateway(s.port, s.vlan, str(ip))
        return None

    # --- the kernel's answers ------------------------------------------------------------

    def wanted(self) -> frozenset[Gateway]:
        """The neighbours to keep resolved: those being resolved and those with a route."""
        return frozenset(self.pending) | frozenset(self.hosts)

    def follow(
        self, neighbours: dict[Gateway, str], port_mac: dict[str, str], now: float
    ) -> list[FibOperation]:
        """The FIB operations that bring the host routes to what the kernel knows now:
        resolved hosts installed, new MACs followed, hosts the kernel lost removed, and
        resolutions given up after resolve_seconds."""
        sets: list[FibOperation] = []
        deletes: list[FibOperation] = []
        for gateway, started in list(self.pending.items()):
            mac = neighbours.get(gateway)
            own = port_mac.get(gateway.port)
            if mac is not None and own is not None and self._free:
                del self.pending[gateway]
                host = Host(gateway, _host_prefix(gateway.address), self._free.pop(), mac, own, now)
                self.hosts[gateway] = host
                self.by_prefix[host.prefix] = gateway
                sets += self._install(host)
                self.counts.resolved += 1
            elif now - started >= self.config.resolve_seconds:
                del self.pending[gateway]
                self.held[gateway] = now
                self.given_up.append(gateway)
                self.counts.failed += 1
        for gateway, host in list(self.hosts.items()):
            mac = neighbours.get(gateway)
            if mac is None:
                deletes += self._remove(host, route=True)
                self.counts.lost += 1
                continue
            own = port_mac.get(gateway.port, host.port_mac)
            if (mac, own) != (host.mac, host.port_mac):
                if mac != host.mac:
                    self.counts.mac_changes += 1
                host.mac, host.port_mac = mac, own
                sets.append(self._adjacency(host))
        for gateway, at in list(self.held.items()):
            if now - at >= self.config.resolve_seconds:
                del self.held[gateway]
        return sets + deletes

    def age(self, used: dict[int, bool], now: float) -> list[FibOperation]:
        """Takes the engine's hit bits (by adjacency id) and removes the host routes whose
        adjacency sent nothing for age_seconds."""
        ops: list[FibOperation] = []
        for host in list(self.hosts.values()):
            if used.get(self.first_adjacency + host.slot):
                host.used_at = now
            elif now - host.used_at >= self.config.age_seconds:
                ops += self._remove(host, route=True)
                self.counts.aged += 1
        return ops

    def take_given_up(self) -> list[Gateway]:
        """The hosts whose resolution was given up since the last call."""
        out, self.given_up = self.given_up, []
        return out

    def adjacency_ids(self) -> list[int]:
        return [self.first_adjacency + h.slot for h in self.hosts.values()]

    def taken_over(self, prefixes: Iterable[str]) -> list[FibOperation]:
        """A writer wrote or deleted the route of these host prefixes: the route is theirs
        now; the host's group and adjacency go (the operator's route wins)."""
        ops: list[FibOperation] = []
        for prefix in prefixes:
            gateway = self.by_prefix.get(prefix)
            if gateway is not None:
                ops += self._remove(self.hosts[gateway], route=False)
                self.counts.taken_over += 1
        return ops

    # --- operations ------------------------------------------------------------------------

    def _adjacency(self, host: Host) -> Adjacency:
        g = host.gateway
        return Adjacency(self.first_adjacency + host.slot, g.port, g.vlan, host.port_mac, host.mac)

    def _install(self, host: Host) -> list[FibOperation]:
        adjacency = self.first_adjacency + host.slot
        group = self.first_group + host.slot
        return [
            self._adjacency(host),
            NextHopGroup(group, ((adjacency, 1),)),
            Route(host.prefix, RouteKind.FORWARD, group),
        ]

    def _remove(self, host: Host, route: bool) -> list[FibOperation]:
        del self.hosts[host.gateway]
        del self.by_prefix[host.prefix]
        self._free.append(host.slot)
        ops: list[FibOperation] = [DeleteRoute(host.prefix)] if route else []
        ops.append(DeleteGroup(self.first_group + host.slot))
        ops.append(DeleteAdjacency(self.first_adjacency + host.slot))
        return ops

    def summary(self) -> dict[str, int]:
        return {"hosts": len(self.hosts), "pending": len(self.pending), **self.counts.__dict__}


def _host_prefix(address: str) -> str:
    ip = ipaddress.ip_address(address)
    return f"{ip}/{ip.max_prefixlen}"


def in_order(ops: Sequence[FibOperation]) -> list[FibOperation]:
    """`ops` in the order that keeps every prefix of a batch valid: adjacencies and groups
    set, routes set and deleted, groups deleted, adjacencies deleted."""
    rank = {Adjacency: 0, NextHopGroup: 1, Route: 2, DeleteRoute: 2, DeleteGroup: 3}
    return sorted(ops, key=lambda op: rank.get(type(op), 4))


@dataclass
class Glean:
    """Runs a HostTable beside the engine: drains the engine's glean queue every
    DRAIN_SECONDS in the default executor, follows the link watch's neighbour facts and
    ages host routes by the engine's hit bits. `want` is told the neighbours it wants."""

    table: HostTable
    dataplane: Dataplane
    drain: Callable[[int], list[str]]  # Engine.drain_glean: blocking, GIL released
    want: Callable[[], None]  # tells the link watch the union of wanted neighbours
    facts: Callable[[], tuple[dict[Gateway, str], dict[str, str]]]  # neighbours, port MACs
    forget: Callable[[list[Gateway]], None]  # deletes the entries of given-up hosts now
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def start(self) -> None:
        """Installs the glean routes and starts draining and ageing."""
        routes = [GleanRoute(p) for p in self.table.glean_routes()]
        if routes:
            await self.dataplane.apply_own(routes)
            log.info(
                "glean routes for the attached subnets %s", ", ".join(r.prefix for r in routes)
            )
        loop = asyncio.get_running_loop()
        self._tasks = {loop.create_task(self._drain()), loop.create_task(self._age())}

    async def stop(self) -> None:
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        for t in tasks:
            try:
                await t
            except asyncio.CancelledError:
                pass
        self._tasks.clear()

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                addresses = await loop.run_in_executor(None, self.drain, DRAIN_MAX)
                if addresses and self.table.ask(addresses, time.monotonic()):
                    self.want()
                    await self.refresh()  # pending ones may resolve at once (kernel knows)
                elif self.table.pending or self.table.held:
                    await self.refresh()  # give up the unanswered ones
            except Exception:  # a bug here must not stop the resolution of others
                log.exception("glean: draining the engine's queue")
            await asyncio.sleep(DRAIN_SECONDS)

    async def _age(self) -> None:
        loop = asyncio.get_running_loop()
        period = max(0.5, self.table.config.age_seconds / 4)
        while True:
            await asyncio.sleep(period)
            try:
                async with self._lock:
                    ids = self.table.adjacency_ids()
                    if not ids:
                        continue
                    bits = await loop.run_in_executor(None, self.dataplane.adjacency_used, ids)
                    ops = self.table.age(dict(zip(ids, bits, strict=True)), time.monotonic())
                    await self._apply(ops)
                if ops:
                    self.want()
            except Exception:
                log.exception("glean: ageing host routes")

    async def refresh(self) -> None:
        """Brings the host routes to the link watch's facts (after a neighbour changed)."""
        async with self._lock:
            neighbours, port_mac = self.facts()
            before = self.table.wanted()
            ops = self.table.follow(neighbours, port_mac, time.monotonic())
            await self._apply(ops)
        if self.table.wanted() != before:
            self.want()
        given_up = self.table.take_given_up()
        if given_up:
            self.forget(given_up)

    def take_over(self, prefixes: list[str]) -> None:
        """On the loop, after a writer's batch wrote or deleted the route of these host
        prefixes: the route is the writer's; the host's group and adjacency go."""
        task = asyncio.get_running_loop().create_task(self._take_over(prefixes))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _take_over(self, prefixes: list[str]) -> None:
        try:
            async with self._lock:
                await self._apply(self.table.taken_over(prefixes))
            self.want()
        except Exception:
            log.exception("glean: giving host routes over to a writer")

    async def _apply(self, ops: Sequence[FibOperation]) -> None:
        if not ops:
            return
        try:
            clashed = await self.dataplane.apply_own(in_order(ops))
        except InvalidBatch as e:
            # A full route table, say: the hosts stay as the table has them and age out
            # (their hit bits stay clear), then are asked for again.
            log.warning("glean: the FIB refused host routes: %s", e)
            return
        if clashed:  # a writer's route came first: it stays, our group and adjacency go
            more = self.table.taken_over(clashed)
            if more:
                await self.dataplane.apply_own(in_order(more))
