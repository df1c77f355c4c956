"""The agent's domain: write batches of FIB operations (corridor.common.fib), the writers'
election, and the ports and counters as writers see them. It knows no gRPC (api.py
translates) and no engine: the FIB adapter and the running engine it is given do the work,
in the default executor so that the event loop never waits on them.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Protocol

from corridor.agent.config import AgentConfig, PortConfig
from corridor.agent.neighbours import kernel_ifindex, kernel_link_state
from corridor.agent.nexthops import Gateway, NextHops
from corridor.common.edge import EdgePolicy
from corridor.common.errors import InvalidBatch, Violation, format_election_id
from corridor.common.fib import (
    Adjacency,
    DeleteAdjacency,
    DeleteMember,
    DeleteRoute,
    FibOperation,
    Member,
    NextHopGroup,
    Route,
    RouteKind,
)

if TYPE_CHECKING:
    from corridor._dataplane import Batch, FibStats, PortStatus, SampleStats
    from corridor.agent.engine_host import Counters
    from corridor.agent.glean import HostTable

# A Write holds at most this many operations: enough for a large slice of a full table per
# round trip, small enough that one batch never holds the agent for long (StreamWrite is the
# way to load more).
MAX_OPERATIONS_PER_WRITE = 100_000


log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Snapshot:
    generation: int
    adjacencies: list[Adjacency]
    groups: list[NextHopGroup]
    routes: list[Route]
    members: list[Member] = field(default_factory=list)
    # adjacency id -> (state name: "usable", "unresolved", "link_down"; neighbour MAC or None)
    adjacency_states: dict[int, tuple[str, str | None]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Lookup:
    """An address's route; for a forwarding route its group and members, and their states
    as in Snapshot."""

    route: Route | None
    group: NextHopGroup | None = None
    adjacencies: list[Adjacency] = field(default_factory=list)
    adjacency_states: dict[int, tuple[str, str | None]] = field(default_factory=dict)
    # A blackhole route's drops while the engine runs (RTBH: who is attacked, how hard).
    blackhole_dropped: int | None = None


class NotPrimary(PermissionError):
    """A writer presented an election id below the highest the agent has seen."""

    def __init__(self, presented: int, highest: int) -> None:
        self.presented = presented
        self.highest = highest
        super().__init__(
            f"election id {format_election_id(presented)} is below the primary's "
            f"{format_election_id(highest)}; only the writer with the highest id may write"
        )


class PolicyRefused(RuntimeError):
    """The engine could not take an edge policy (its XDP maps are full); nothing of the
    request stays in force."""


class Election:
    """One writer at a time: the highest election id ever presented wins, and is never
    forgotten while the agent runs (so a deposed primary that comes back stays deposed)."""

    def __init__(self) -> None:
        self.highest = 0
        self.changes = 0  # how often a new primary took over
        self.refusals = 0

    def present(self, election_id: int) -> None:
        """Admits the writer of `election_id`, the new primary if it is the highest yet, or
        raises NotPrimary. Zero is no id (the request is refused for that): it changes
        nothing here."""
        if 0 < election_id < self.highest:
            self.refusals += 1
            raise NotPrimary(election_id, self.highest)
        if election_id > self.highest:
            self.highest = election_id
            self.changes += 1

    def reset(self) -> int:
        """Forgets the highest id (an operator's act); returns it. The next id presented wins."""
        previous = self.highest
        self.highest = 0
        return previous


class Fib(Protocol):
    """What the domain needs of the FIB; fib_adapter.EngineFib provides it. Its methods block
    (the engine releases the GIL) and are called from the default executor, one at a time."""

    def apply(self, operations: Sequence[FibOperation]) -> None:
        """Validates the whole batch, then applies it; raises InvalidBatch, naming operations
        by index, with nothing applied."""

    def apply_batch(self, batch: Batch) -> None:
        """apply() for an engine Batch whose entry i is operation i."""

    def entries(self) -> tuple[list[Adjacency], list[NextHopGroup], list[Route]]: ...

    def stats(self) -> FibStats: ...

    def lookup(self, address: str) -> Route | None:
        """The longest-prefix match of an address (text), or None."""

    def blackhole_slot(self, prefix: str) -> int | None:
        """The engine's counter slot of the blackhole route for exactly `prefix`."""

    def has_route(self, prefix: str) -> bool:
        """Whether a route for exactly `prefix` is installed."""

    def take_adjacency_used(self, ids: list[int]) -> list[bool]:
        """Each adjacency's hit bit (a frame left by it since the last call), cleared."""


class RunningEngine(Protocol):
    """What the domain reads of the engine while it forwards; engine_host.EngineHost provides
    it. Both block for a moment (the GIL released): from the executor or a scrape thread."""

    def ports(self) -> list[PortStatus]: ...

    def counters(self) -> Counters: ...

    def set_policy(
        self, port: str, vlan: int, policy: EdgePolicy, member_macs: tuple[str, ...] = ()
    ) -> None:
        """Puts a sub-interface's edge policy in force in the data path; `member_macs`
        are its members' MACs (allowed under port security)."""

    def refused_macs(self) -> list[RefusedMac]: ...

    def blackhole_dropped(self, slot: int) -> int: ...

    def sample_stats(self) -> list[SampleStats]: ...


@dataclass(frozen=True, slots=True)
class RefusedMac:
    """A source MAC the MAC filter dropped: where, how often, when last (Unix time)."""

    port: str
    vlan: int
    mac: str
    packets: int
    last_seen: float


class LinkState(enum.Enum):
    UP = "up"
    DOWN = "down"
    NOT_PRESENT = "not_present"


@dataclass(frozen=True, slots=True)
class PortState:
    """A configured port as it is now: the engine's view while it runs (socket and XDP
    modes, MAC, recoveries), else the kernel's link state of the interface, if any."""

    config: PortConfig
    link: LinkState
    engine: PortStatus | None = None
    # The kernel's ifindex of the port (key 0) and of each VLAN device, by VLAN; 0 (or no
    # key) when the device is missing.
    ifindexes: dict[int, int] = field(default_factory=dict)


class WriteObserver(Protocol):
    def written(self, seconds: float, operations: int, outcome: str) -> None: ...


@dataclass(frozen=True, slots=True)
class WriteResult:
    operations: int
    generation: int


class Dataplane:
    """The node's data plane as writers see it: the FIB behind one election, written one
    batch at a time in the order batches arrive."""

    def __init__(
        self,
        config: AgentConfig,
        fib: Fib,
        observer: WriteObserver | None = None,
    ) -> None:
        self.config = config
        self.ports: tuple[PortConfig, ...] = config.ports
        self._port_vlans = {p.name: tuple(v.id for v in p.vlans) for p in config.ports}
        self._fib = fib
        self._observer = observer
        self.election = Election()
        self.generation = 0
        self.stats = fib.stats()  # refreshed after every batch, so scrapes need not ask the FIB
        self._lock = asyncio.Lock()
        # Written next hops and what the engine holds of them; changed only under _lock.
        self.next_hops = NextHops()
        self.next_hop_summary = self.next_hops.summary()
        self.refreshes = 0  # batches the agent applied by itself (links, neighbours)
        self.engine: RunningEngine | None = None  # while the engine runs
        # Called (on the loop) after adjacencies changed.
        self.on_next_hops_written: Callable[[], None] | None = None
        self.gateways: frozenset[Gateway] = frozenset()  # of every adjacency in use
        # Exchange members as written, by id (the engine's counter row); changed under _lock.
        self.members: dict[int, Member] = {}
        # Why the last change of members' MACs is not in force under port security, if so.
        self.port_security_error = ""
        # A device's ifindex in the ports' namespace: the link watch's while the engine runs
        # (set by whoever starts it), else sysfs in the agent's own namespace.
        self.ifindex_of: Callable[[str], int] = kernel_ifindex
        # Hosts on attached subnets (glean.py), while the engine runs: its reserved ids and
        # prefixes are refused to writers. The host routes it installed, by prefix, changed
        # under _lock: not the writers', so not in a snapshot; a writer's route for one of
        # them takes it over (on_taken is told, on the loop).
        self.glean: HostTable | None = None
        self.own_routes: set[str] = set()
        self.on_taken: Callable[[list[str]], None] | None = None
        # Each sub-interface's edge policy, (port, VLAN) -> policy: the configuration's,
        # then as writers set them. The engine is given them when it starts and on change.
        self.policies: dict[tuple[str, int], EdgePolicy] = {
            (p.name, vlan): policy for p in config.ports for vlan, policy in p.policies().items()
        }

    def port_vlans(self, port: str) -> tuple[int, ...] | None:
        """The VLANs configured on `port`; None if it is not a configured port."""
        return self._port_vlans.get(port)

    def port_states(self) -> list[PortState]:
        """Blocking (reads the engine or sysfs): call it from the executor."""
        engine = self.engine
        running = {p["name"]: p for p in engine.ports()} if engine is not None else {}
        out = []
        for p in self.ports:
            status = running.get(p.name)
            if status is None:
                # The agent's namespace: right when the ports live there, a guess otherwise.
                state = kernel_link_state(p.name)
                link = LinkState.NOT_PRESENT if state is None else LinkState(state)
            else:
                link = LinkState.UP if status["link_up"] else LinkState.DOWN
            ifindex = self.ifindex_of
            ifindexes = {0: ifindex(p.name)}
            ifindexes.update((v.id, ifindex(f"{p.name}.{v.id}")) for v in p.vlans)
            out.append(PortState(p, link, status, ifindexes))
        return out

    async def counters(self) -> Counters | None:
        """The engine's counters; None without an engine."""
        engine = self.engine
        if engine is None:
            return None
        return await asyncio.get_running_loop().run_in_executor(None, engine.counters)

    async def write(self, election_id: int, operations: Sequence[FibOperation]) -> WriteResult:
        """Applies one batch for the writer of `election_id`. Raises NotPrimary, or
        InvalidBatch with every violation the FIB found; in both cases nothing is applied."""
        next_hops_written = any(type(op) in (Adjacency, DeleteAdjacency) for op in operations)
        result = await self._write(
            election_id, len(operations), partial(self._apply, operations), next_hops_written
        )
        if result is None:
            raise AssertionError("_apply always applies or raises")
        return result

    async def write_routes(self, election_id: int, batch: Batch) -> WriteResult | None:
        """Applies a batch of routes read straight from a writer's bytes (read_route_write:
        checked as write() checks them, the agent's reserved groups too). Raises as write()
        does; returns None, with nothing applied, when a route is for an attached subnet or
        one of the agent's host routes: write() must take that batch (it names the fault,
        or hands the host route over to the writer)."""
        return await self._write(election_id, len(batch), partial(self._apply_routes, batch))

    async def _write(
        self,
        election_id: int,
        count: int,
        apply: Callable[[], tuple[FibStats, list[str]] | None],
        next_hops_written: bool = False,
    ) -> WriteResult | None:
        loop = asyncio.get_running_loop()
        async with self._lock:
            started = time.perf_counter()
            try:
                self.election.present(election_id)
            except NotPrimary:
                self._observe(started, count, "not_primary")
                raise
            if not count:
                return WriteResult(0, self.generation)
            applying = loop.run_in_executor(None, apply)
            try:
                applied = await asyncio.shield(applying)
            except InvalidBatch:
                self._observe(started, count, "invalid")
                raise
            except asyncio.CancelledError:
                # The engine finishes the batch whatever the caller does: keep the lock (and
                # the count of batches) true to it before letting the cancellation through.
                await asyncio.wait([applying])
                if applying.exception() is None and (done := applying.result()) is not None:
                    self._applied(*done)
                raise
            if applied is None:
                return None
            self._applied(*applied)
            self._observe(started, count, "applied")
            if next_hops_written and self.on_next_hops_written is not None:
                self.on_next_hops_written()
            return WriteResult(count, self.generation)

    def _applied(self, stats: FibStats, taken: list[str]) -> None:
        """On the loop, under _lock: a batch is in the engine."""
        self.stats = stats
        self.generation += 1
        if taken and self.on_taken is not None:
            self.on_taken(taken)

    async def set_policies(
        self, election_id: int, policies: Sequence[tuple[str, int, EdgePolicy]]
    ) -> None:
        """Sets sub-interfaces' edge policies for the writer of `election_id`, all or none:
        raises NotPrimary, or InvalidBatch naming each entry that is not a configured
        sub-interface or names one twice."""
        violations = []
        seen: dict[tuple[str, int], int] = {}
        for i, (port, vlan, _) in enumerate(policies):
            key = (port, vlan)
            if key not in self.policies:
                vlans = self.port_vlans(port)
                if vlans is None:
                    known = ", ".join(p.name for p in self.ports) or "none"
                    text = f"{port!r} is not a configured port; configured: {known}"
                    violations.append(Violation(i, f"policies[{i}].port", text))
                else:
                    choices = ", ".join(map(str, (0, *vlans)))
                    text = f"{vlan} is not a sub-interface of port {port}; use one of {choices}"
                    violations.append(Violation(i, f"policies[{i}].vlan", text))
            elif key in seen:
                text = f"port {port} VLAN {vlan} is already policies[{seen[key]}]"
                violations.append(Violation(i, f"policies[{i}]", text))
            seen.setdefault(key, i)
        loop = asyncio.get_running_loop()
        async with self._lock:
            self.election.present(election_id)
            if violations:
                raise InvalidBatch(violations)
            done: list[tuple[str, int, EdgePolicy]] = []
            for port, vlan, policy in policies:
                engine = self.engine
                if engine is not None:
                    macs = self.member_macs(port, vlan)
                    try:
                        await loop.run_in_executor(
                            None, engine.set_policy, port, vlan, policy, macs
                        )
                    except (RuntimeError, ValueError) as e:
                        # The engine's maps are full, say: put back what this request set.
                        for p, v, _ in reversed(done):
                            old = self.policies[(p, v)]
                            await loop.run_in_executor(
                                None, engine.set_policy, p, v, old, self.member_macs(p, v)
                            )
                        raise PolicyRefused(f"port {port} VLAN {vlan}: {e}") from None
                done.append((port, vlan, policy))
            for port, vlan, policy in done:
                self.policies[(port, vlan)] = policy

    def member_macs(self, port: str, vlan: int) -> tuple[str, ...]:
        """The MACs of the members written on (port, VLAN), sorted."""
        key = (port, vlan)
        return tuple(sorted({m.mac for m in self.members.values() if (m.port, m.vlan) == key}))

    def _follow_members(self, before: dict[int, Member]) -> None:
        """In the executor, under _lock, after a batch changed members: the sub-interfaces
        under port security whose members' MACs changed get the new set in the XDP program
        (new MACs allowed before old ones go). A set the program cannot take (its maps
        full) keeps the old one, and is logged and kept in `port_security_error`."""
        engine = self.engine
        if engine is None:
            return
        changed = {(m.port, m.vlan) for m in before.values()}
        changed |= {(m.port, m.vlan) for m in self.members.values()}
        for key in sorted(changed):
            policy = self.policies.get(key)
            if policy is None or not policy.port_security:
                continue
            old = tuple(sorted({m.mac for m in before.values() if (m.port, m.vlan) == key}))
            new = self.member_macs(*key)
            if old == new:
                continue
            try:
                engine.set_policy(key[0], key[1], policy, new)
            except (RuntimeError, ValueError) as e:
                self.port_security_error = f"port {key[0]} VLAN {key[1]}: {e}"
                log.warning("port security: the members' MACs not in force: %s", e)

    async def refused_macs(self) -> list[RefusedMac]:
        engine = self.engine
        if engine is None:
            return []
        return await asyncio.get_running_loop().run_in_executor(None, engine.refused_macs)

    def refuse(self, operations: int) -> None:
        """Counts a batch refused before it reached write() (its syntax was bad)."""
        if self._observer is not None:
            self._observer.written(0.0, operations, "invalid")

    async def snapshot(self) -> Snapshot:
        """Everything installed, consistent: taken while no batch is being applied."""
        loop = asyncio.get_running_loop()
        async with self._lock:
            _, _, routes = await loop.run_in_executor(None, self._fib.entries)
            own = self.own_routes
            if own:
                routes = [r for r in routes if r.prefix not in own]
            # Adjacencies and groups as written: the engine holds them as they forward now.
            next_hops = self.next_hops
            adjacencies = [next_hops.adjacencies[i] for i in sorted(next_hops.adjacencies)]
            groups = [NextHopGroup(i, next_hops.groups[i]) for i in sorted(next_hops.groups)]
            states = {
                a.id: (next_hops.state(a).value, next_hops.neighbour_mac(a)) for a in adjacencies
            }
            members = [self.members[i] for i in sorted(self.members)]
            return Snapshot(self.generation, adjacencies, groups, routes, members, states)

    async def head(self) -> tuple[int, list[Member]]:
        """The generation and the members, consistent with each other, without walking the
        FIB: what Read's first message carries, for readers that need no more."""
        async with self._lock:
            return self.generation, [self.members[i] for i in sorted(self.members)]

    async def lookup(self, address: str) -> Lookup:
        """The route `address` (text) takes now, with its group and members as written and
        their states; taken while no batch is being applied."""
        loop = asyncio.get_running_loop()
        async with self._lock:
            route = await loop.run_in_executor(None, self._fib.lookup, address)
            next_hops = self.next_hops
            if route is not None and route.kind is RouteKind.BLACKHOLE:
                engine = self.engine
                slot = await loop.run_in_executor(None, self._fib.blackhole_slot, route.prefix)
                if engine is None or slot is None:
                    return Lookup(route)
                dropped = await loop.run_in_executor(None, engine.blackhole_dropped, slot)
                return Lookup(route, blackhole_dropped=dropped)
            if route is None or route.kind is not RouteKind.FORWARD:
                return Lookup(route)
            members = next_hops.groups.get(route.group, ())
            group = NextHopGroup(route.group, members)
            written = next_hops.adjacencies
            adjacencies = [written[a] for a, _ in members if a in written]
            states = {
                a.id: (next_hops.state(a).value, next_hops.neighbour_mac(a)) for a in adjacencies
            }
            return Lookup(route, group, adjacencies, states)

    def _apply(self, operations: Sequence[FibOperation]) -> tuple[FibStats, list[str]]:
        """In the executor, under _lock: the written batch as the engine must get it (gateway
        MACs filled, unusable members left out), then any follow-up it caused (an adjacency
        that changed port or gateway moves the groups that use it). Returns the FIB's stats
        and the agent's host routes the batch wrote or deleted (now the writer's)."""
        next_hops = self.next_hops
        engine_ops, violations, needs_drop = next_hops.translate(operations)
        if self.glean is not None:
            violations = sorted(violations + self.glean.violations(operations), key=_by_index)
        if violations:
            raise InvalidBatch(violations)
        if needs_drop:
            drop = next_hops.drop_adjacency()
            self._fib.apply([drop])
            next_hops.committed_refresh([drop])
        self._fib.apply(engine_ops)
        next_hops.committed(operations, engine_ops)
        members_before = None
        for op in operations:
            if type(op) is Member:
                if members_before is None:
                    members_before = dict(self.members)
                self.members[op.id] = op
            elif type(op) is DeleteMember:
                if members_before is None:
                    members_before = dict(self.members)
                self.members.pop(op.id, None)
        if members_before is not None:
            self._follow_members(members_before)
        if any(type(op) in (Adjacency, DeleteAdjacency) for op in operations):
            self.gateways = frozenset(next_hops.gateways())
            follow_up = next_hops.refresh()
            if follow_up:
                self._fib.apply(follow_up)
                next_hops.committed_refresh(follow_up)
        self.next_hop_summary = next_hops.summary()
        taken: list[str] = []
        if self.own_routes:
            own = self.own_routes
            taken = [
                op.prefix
                for op in operations
                if (type(op) is Route or type(op) is DeleteRoute) and op.prefix in own
            ]
            own.difference_update(taken)
        return self._fib.stats(), taken

    def _apply_routes(self, batch: Batch) -> tuple[FibStats, list[str]] | None:
        """In the executor, under _lock: write_routes' batch, unless it touches what is
        the agent's (then None, nothing applied)."""
        watched = list(self.own_routes)
        if self.glean is not None:
            watched += self.glean.prefixes
        if watched and batch.touches(watched):
            return None
        self._fib.apply_batch(batch)
        return self._fib.stats(), []

    async def apply_own(self, operations: Sequence[FibOperation]) -> list[str]:
        """Applies the agent's own operations (glean routes, host routes and their groups
        and adjacencies) between writers' batches. A host route is not installed over a
        route that is there (a writer's wins), nor is a route deleted that is no longer
        the agent's: returns the prefixes of the host routes not installed."""
        loop = asyncio.get_running_loop()
        async with self._lock:
            clashed = await asyncio.shield(loop.run_in_executor(None, self._apply_own, operations))
            self.stats = await loop.run_in_executor(None, self._fib.stats)
            return clashed

    def _apply_own(self, operations: Sequence[FibOperation]) -> list[str]:
        kept: list[FibOperation] = []
        clashed: list[str] = []
        for op in operations:
            if type(op) is Route and self._fib.has_route(op.prefix):
                clashed.append(op.prefix)
            elif type(op) is not DeleteRoute or op.prefix in self.own_routes:
                kept.append(op)
        self._fib.apply(kept)
        for op in kept:
            if type(op) is Route:
                self.own_routes.add(op.prefix)
            elif type(op) is DeleteRoute:
                self.own_routes.discard(op.prefix)
        return clashed

    def adjacency_used(self, ids: list[int]) -> list[bool]:
        """Blocking (the FIB, GIL released): the hit bits of `ids`, cleared."""
        return self._fib.take_adjacency_used(ids)

    async def refresh(
        self, link_up: dict[str, bool], port_mac: dict[str, str], neighbours: dict[Gateway, str]
    ) -> int:
        """Applies the live facts (link state and MAC by port name, resolved neighbours by
        Gateway): groups drop the members that cannot forward and take back those that can,
        gateway adjacencies follow their neighbour's MAC. Routes are not touched. Returns
        the number of engine operations it took (0: nothing changed)."""
        loop = asyncio.get_running_loop()
        async with self._lock:
            next_hops = self.next_hops
            next_hops.link_up = dict(link_up)
            next_hops.port_mac = dict(port_mac)
            next_hops.neighbours = dict(neighbours)
            ops = next_hops.refresh()
            if ops:
                await asyncio.shield(loop.run_in_executor(None, self._fib.apply, ops))
                next_hops.committed_refresh(ops)
                self.refreshes += 1
                self.stats = await loop.run_in_executor(None, self._fib.stats)
            self.next_hop_summary = next_hops.summary()
            return len(ops)

    def glean_summary(self) -> dict[str, int] | None:
        """Host routes on attached subnets and what became of the engine's glean queue."""
        return None if self.glean is None else self.glean.summary()

    def _observe(self, started: float, operations: int, outcome: str) -> None:
        if self._observer is not None:
            self._observer.written(time.perf_counter() - started, operations, outcome)


def _by_index(v: Violation) -> int:
    return -1 if v.index is None else v.index
