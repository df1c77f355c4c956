"""The controller's core: checks what operators ask against intent and the nodes, commits it
to the store (the reply waits for the commit), then tells every node session and watcher.
One commit at a time, so revisions are a single sequence, and each whole: a commit that has
begun ends in the store and in memory alike, whatever becomes of the call that asked for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from corridor._dataplane import IntentRoutes
from corridor.common.edge import EdgePolicy
from corridor.common.errors import InvalidBatch, Violation, echo
from corridor.controller.bgp import BgpFeeds, BgpIntent, FpmConfig, found_routes, node_ids
from corridor.controller.bgp import list_routes as list_bgp_routes
from corridor.controller.bgp_filters import (
    DEFAULT_HOLD_SECONDS,
    FLUSH_SECONDS,
    BgpFilters,
    member_keys,
)
from corridor.controller.domain import (
    ALL_NODES,
    AdjacencyKey,
    Change,
    GroupKey,
    IdsExhausted,
    Intent,
    IntentState,
    Node,
    RouteBatch,
    RouteKey,
    StoreUnavailable,
    UnknownNode,
)
from corridor.controller.election import Election
from corridor.controller.etcd_store import EtcdStore, NotLeader
from corridor.controller.members import (
    SAMPLE_SECONDS,
    MemberError,
    MemberRecord,
    NoBgpFeed,
    Sample,
    check_member,
    check_next_hops,
    check_sources,
    next_id,
)
from corridor.controller.store import Loaded, PortPolicyRecord, RouteQuery, Store

if TYPE_CHECKING:
    from corridor.controller.domain import NodeFib
    from corridor.controller.metrics import ControllerMetrics
    from corridor.controller.reconciler import NodeSession

log = logging.getLogger("corridor.controller")

KNOWN_NODES_LISTED = 16  # in an error about an unknown node
WATCH_QUEUE = 1024  # changes a watcher may fall behind before it is ended
FOLLOW_SECONDS = 1.0  # a follower reads the store's head at least this often
SNAPSHOT_SHARED_CHANGES = 64  # commits after a snapshot that a new watcher may start with


_T = TypeVar("_T")


class CommitTurn:
    """One commit at a time, each whole. A commit runs in a task of its own that the
    caller's cancellation (a client's deadline or disconnect) does not reach; the next turn
    begins once it has ended. Used as `async with turn:` around check, plan and `run`."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._running: asyncio.Task[Any] | None = None

    async def __aenter__(self) -> None:
        await self._lock.acquire()
        running = self._running
        if running is not None and not running.done():
            try:  # a commit whose caller went away: it finishes first
                await asyncio.wait([running])
            except BaseException:
                self._lock.release()
                raise

    async def __aexit__(self, *exc: object) -> None:
        self._lock.release()

    async def run(self, commit: Awaitable[_T]) -> _T:
        task = asyncio.ensure_future(commit)
        task.add_done_callback(_orphaned)
        self._running = task
        return await asyncio.shield(task)


def default_name() -> str:
    import os
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


def _ended(task: asyncio.Task[Any]) -> None:
    """A task that must run as long as the controller ended: said loudly, with its cause."""
    if not task.cancelled() and task.exception() is not None:
        log.error("%s ended: %r", task.get_name(), task.exception(), exc_info=task.exception())


def _orphaned(task: asyncio.Task[Any]) -> None:
    """Says what became of a commit nobody waits for any more (its caller was cancelled)."""
    if not task.cancelled() and task.exception() is not None:
        log.debug("a commit ended in %r", task.exception())


class WatcherBehind(Exception):
    pass


@dataclass(eq=False)
class WatchSnapshot:
    """Intent at `revision` for watchers (of one node, or of every node): copies of the route
    tables, taken on the loop (a copy of a table is one C call) and read off it. A watcher
    that starts a few commits later shares it too, and gets those commits (`since`) first:
    under steady writes, hundreds of watchers still share one snapshot."""

    revision: int
    tables: list[tuple[str, IntentRoutes]]  # (node, prefix -> intent)
    size: int
    since: list[WatchEvent] | None = None  # commits after it; None once too many to share


@dataclass(eq=False)
class WatchEvent:
    """One commit as the watchers of one node (or of every node) hear it: the same object goes
    to each of them, so that it is put in wire form once."""

    revision: int
    set: dict[RouteKey, Intent]
    deleted: list[RouteKey]


@dataclass(eq=False)
class Watcher:
    node: str | None
    queue: asyncio.Queue[WatchEvent | None]  # None: the controller stopped
    behind: bool = False


# Makes the session of a node (node, intent, election id): reconciler.NodeSession.
SessionFactory = Callable[[Node, IntentState, int], "NodeSession"]


class Controller:
    """Intent and the sessions that carry it to nodes. `session_factory(node, state,
    election)` makes a session (reconciler.NodeSession) with start/stop/changed."""

    def __init__(
        self,
        store: Store,
        session_factory: SessionFactory,
        max_groups: int = 65536,
        max_adjacencies: int = 65536,
        metrics: ControllerMetrics | None = None,
        fpm: Sequence[FpmConfig] = (),
        advertise: str = "",
    ) -> None:
        self.store = store
        self.state = IntentState(max_groups, max_adjacencies)
        # BGP routes (soft state, beside the store's): fed by zebra over FPM, one `[[fpm]]`
        # per node; see bgp.py.
        self.bgp = BgpIntent(
            self.state.group_keys, self.state.adjacency_keys, max_groups, max_adjacencies
        )
        self.state.bgp = self.bgp
        # With etcd, the leader alone listens for zebra (see _take_lead).
        self.feeds = (
            BgpFeeds(fpm, self, self._interfaces)
            if fpm and not isinstance(store, EtcdStore)
            else None
        )
        self._bgp_unused: set[GroupKey] = set()  # groups no BGP route uses, ids still held
        self._adopted: set[str] = set()  # nodes whose routes found at start were adopted
        self.bgp_sizes = (0, 0, 0, 0)
        self.sessions: dict[str, NodeSession] = {}
        self.election = 0
        self._session_factory = session_factory
        self._metrics = metrics
        self._commit_lock = CommitTurn()
        self._watchers: list[Watcher] = []
        # The newest snapshot of each watched node (None: every node), while a watcher uses it.
        self._snapshots: weakref.WeakValueDictionary[str | None, WatchSnapshot] = (
            weakref.WeakValueDictionary()
        )
        self.intent_sizes = (0, 0, 0, 0)
        # Leadership. With the SQLite store this controller is the only one and leads from
        # its start; with etcd it leads only while it holds the leader key (election.py).
        self._fpm = tuple(fpm)
        self.advertise = advertise
        self.backend = "etcd" if isinstance(store, EtcdStore) else "sqlite"
        self.leading = False
        self.leader = ""  # the leader's advertised address, as last seen
        self.leader_since = 0.0  # when the leader took the lead (seconds since the epoch)
        self.leader_changes = 0  # times this controller took the lead
        self._election: Election | None = None
        self.configured: tuple[Node, ...] = ()  # the file's nodes, registered on taking the lead
        self._tasks: list[asyncio.Task[None]] = []
        # Edge policies by node, then (port, VLAN): the store's, read when this controller
        # starts to lead; each session pushes its node's to the agent.
        self.port_policies: dict[str, dict[tuple[str, int], EdgePolicy]] = {}
        # Exchange members by name (controller/members.py), pushed to their node's agent.
        self.members: dict[str, MemberRecord] = {}
        self._member_lock = asyncio.Lock()
        self._last_member_id = -1
        self.sample_seconds = SAMPLE_SECONDS
        self._sampler: asyncio.Task[None] | None = None
        self.samples_taken = 0
        # Members' source filters derived from their nodes' BGP routes (bgp_filters.py).
        self.filters = BgpFilters(self.bgp_table, self._feed_up_since, self._filter_hold)
        self.filter_flush_seconds = FLUSH_SECONDS
        self._filter_flusher: asyncio.Task[None] | None = None

    async def start(self, nodes: tuple[Node, ...] = ()) -> None:
        """Loads intent, takes a new election id (above any earlier run's, so a restarted
        controller is the primary), registers configured nodes, starts every session."""
        loaded: Loaded = await self.store.load()
        if loaded.accepted:
            # The store refuses to load a store that lost routes unless the operator said to
            # take it as it is; say what was taken, once, where operators look.
            log.warning(
                "intent taken as the store holds it, on --accept-empty-store: %s; every "
                "node is brought to it (%d routes)", loaded.accepted, len(loaded.routes),
            )  # fmt: skip
        s = self.state
        s.revision = loaded.revision
        s.group_ids = dict(loaded.group_ids)
        s.group_keys.update((i, k) for k, i in s.group_ids.items())  # shared with self.bgp
        s.adjacency_ids = dict(loaded.adjacency_ids)
        s.adjacency_keys.update((i, k) for k, i in s.adjacency_ids.items())
        s.drained = set(loaded.drained)
        for (node, prefix), intent in loaded.routes:
            s.node_routes(node)[prefix] = intent
            if intent.group is not None:
                s.group_refs[intent.group] += 1
        s.nodes = {n.name: n for n in loaded.nodes}
        self.members = {m.name: m for m in await self.store.list_members()}
        self._last_member_id = max((m.id for m in self.members.values()), default=-1)
        s.recount()
        self._update_sizes()
        if isinstance(self.store, EtcdStore):
            # A cluster member: it follows the store, and leads when it wins the election.
            self._election = Election(self.store, self.advertise or default_name())
            self.configured = nodes
            try:
                await self._election.look()  # who leads, from the first call on
            except StoreUnavailable as e:
                log.warning("no leader known yet: %s", e)
            log.info(
                "intent loaded from %s: revision %d, %d routes, %d nodes; following",
                self.store.describe(), s.revision, s.route_count(), len(s.nodes),
            )  # fmt: skip
            self._tasks = [
                asyncio.create_task(self._follow(), name="follow the store"),
                asyncio.create_task(self._campaign(), name="campaign"),
            ]
            for task in self._tasks:
                task.add_done_callback(_ended)
            self._sampler = asyncio.create_task(self._sample_members())
            self._filter_flusher = asyncio.create_task(self._flush_filters())
            return
        self.leading = True
        self.leader = self.advertise
        self.leader_since = time.time()
        self.leader_changes = 1
        # Each start takes the next id of the store: the high half, so ids stay distinct
        # from any a client could sensibly choose in the low half.
        self.election = (await self.store.next_election_id()) << 64
        log.info(
            "intent loaded: revision %d, %d routes, %d nodes; election id %d:0",
            s.revision, s.route_count(), len(s.nodes), self.election >> 64,
        )  # fmt: skip
        changed = [n for n in nodes if s.nodes.get(n.name) != n]
        if changed:
            await self._commit(Change(revision=s.revision + 1, nodes=changed))
        await self._load_port_policies()
        self._track_filters()
        for registered in s.nodes.values():
            self._start_session(registered)
        self._sampler = asyncio.create_task(self._sample_members())
        self._filter_flusher = asyncio.create_task(self._flush_filters())
        if self.feeds is not None:
            await self.feeds.start()

    async def _load_port_policies(self) -> None:
        self.port_policies = {}
        for r in await self.store.list_port_policies():
            self.port_policies.setdefault(r.node, {})[(r.port, r.vlan)] = r.policy

    async def stop(self) -> None:
        for task in (self._sampler, self._filter_flusher):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._sampler = self._filter_flusher = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks = []
        if self._election is not None:
            # Writes to the agents end first, then the lead is let go at once (a follower
            # takes it without waiting out the lease); a lead won but not yet taken up too.
            if self.leading:
                await self._step_down()
            await self._election.resign()
        if self.feeds is not None:
            await self.feeds.stop()
        async with self._commit_lock:  # a commit under way ends first
            pass
        for session in list(self.sessions.values()):
            await session.stop()
        self.sessions.clear()
        for w in self._watchers:
            # A watcher at its limit would have been ended at the next change: its stream
            # ends now without what it had still to read (it watches again from a snapshot).
            if w.queue.full():
                while not w.queue.empty():
                    w.queue.get_nowait()
            w.queue.put_nowait(None)

    def _start_session(self, node: Node) -> None:
        session = self._session_factory(node, self.state, self.election)
        session.set_policies(dict(self.port_policies.get(node.name, {})))
        session.members_for = partial(self.members_in_force, node.name)
        self.sessions[node.name] = session
        if self.feeds is not None and node.name in self.feeds.sources:
            session.on_read = self._node_read
        session.start()

    # -- operations

    async def apply(self, batch: RouteBatch) -> int:
        started = time.perf_counter()
        async with self._commit_lock:
            self._check_leading()
            try:
                self._check_routes(batch)
                change = self.state.plan_apply(batch)
            except (InvalidBatch, IdsExhausted):
                self._observe("apply", "invalid", started)
                raise
            await self._commit(change, "apply", started)
        self._observe("apply", "committed", started)
        return change.revision

    async def delete(self, keys: list[RouteKey]) -> tuple[int, int]:
        started = time.perf_counter()
        async with self._commit_lock:
            self._check_leading()
            # Any node name: the routes of a deregistered node can still be deleted.
            change = self.state.plan_delete(keys)
            await self._commit(change, "delete", started)
        self._observe("delete", "committed", started)
        return change.revision, len(change.deleted)

    async def register(self, node: Node) -> int:
        async with self._commit_lock:
            self._check_leading()
            change = Change(revision=self.state.revision + 1, nodes=[node])
            await self._commit(change)
            old = self.sessions.pop(node.name, None)
            if old is not None:
                await old.stop()
            self._start_session(node)
            return change.revision

    async def deregister(self, name: str) -> int:
        async with self._commit_lock:
            self._check_leading()
            if name not in self.state.nodes:
                raise UnknownNode(self.unknown_node(name))
            change = Change(revision=self.state.revision + 1, removed_nodes=[name])
            await self._commit(change)
            session = self.sessions.pop(name, None)
            if session is not None:
                await session.stop()
            return change.revision

    async def set_next_hop_state(
        self, node: str, key: AdjacencyKey, drained: bool
    ) -> tuple[int, int]:
        """Drains or restores a next hop; returns the revision and the groups holding it."""
        async with self._commit_lock:
            self._check_leading()
            if node != ALL_NODES and node not in self.state.nodes:
                raise UnknownNode(self.unknown_node(node))
            change = Change(revision=self.state.revision + 1)
            (change.drained if drained else change.restored).append((node, key))
            await self._commit(change)
            groups = sum(1 for g in self.state.group_ids if any(a == key for a, _ in g))
            return change.revision, groups

    async def set_port_policy(self, node: str, port: str, vlan: int, policy: EdgePolicy) -> None:
        """Stores a sub-interface's edge policy and has the node's session push it. The port
        and VLAN are checked against the node's when its agent has been read."""
        async with self._commit_lock:
            self._check_leading()
            if node not in self.state.nodes:
                raise UnknownNode(self.unknown_node(node))
            problem = self._port_problem(node, port, vlan)
            if problem is not None:
                raise InvalidBatch([Violation(None, "policy.port", problem)])
            await self.store.put_port_policy(PortPolicyRecord(node, port, vlan, policy))
            policies = self.port_policies.setdefault(node, {})
            policies[(port, vlan)] = policy
            session = self.sessions.get(node)
            if session is not None:
                session.set_policies(dict(policies))

    # -- members

    async def _sample_members(self) -> None:
        """Every `sample_seconds`, on the clock's multiples (00:00, 00:05, ... for 300), the
        counters of every member whose node streams them, into the store."""
        while True:
            now = time.time()
            period = self.sample_seconds
            await asyncio.sleep(period - now % period)
            try:
                await self.sample_members_now()
            except Exception:
                log.exception("member samples not stored; the next period tries again")

    async def sample_members_now(self) -> int:
        """Stores one sample of every member with fresh counters; returns how many. Only
        the leader samples (followers have no sessions, and must not write)."""
        if not self.leading:
            return 0
        now = time.time()
        samples = []
        by_node_id = {(m.node, m.id): m for m in self.members.values()}
        for name, session in self.sessions.items():
            # Counters older than two stream intervals are a node's that went away: no sample
            # (a gap), never a stale value.
            if not session.connected or now - session.member_counters_time > 5.0:
                continue
            for c in session.member_counters:
                m = by_node_id.get((name, c.id))
                if c.unknown or m is None or c.name != m.name:
                    continue
                samples.append(
                    Sample(m.name, now, c.rx_bytes, c.tx_bytes, c.rx_packets, c.tx_packets)
                )
        if samples:
            await self.store.add_samples(samples)
            self.samples_taken += len(samples)
        return len(samples)

    def members_of(self, node: str) -> list[MemberRecord]:
        return [m for m in self.members.values() if m.node == node]

    def members_in_force(self, node: str) -> list[MemberRecord]:
        """The node's members as its agent gets them: filters from BGP filled in."""
        out = []
        for m in self.members_of(node):
            if m.bgp_next_hops is not None:
                m = replace(m, sources=self.filters.filter_of(m))
            out.append(m)
        return out

    async def add_member(
        self, name: str, node: str, port: str, vlan: int, mac: str
    ) -> MemberRecord:
        """Records a member durably, then has its node's agent count it. `node` may be ''
        when exactly one node is registered. Raises MemberError or UnknownNode."""
        self._check_leading()
        async with self._member_lock:
            if not node:
                if len(self.state.nodes) != 1:
                    raise MemberError(
                        f"member {name}: give its node (--node); {len(self.state.nodes)} "
                        "nodes are registered"
                    )
                node = next(iter(self.state.nodes))
            if node not in self.state.nodes:
                raise UnknownNode(self.unknown_node(node))
            mac = check_member(name, node, port, vlan, mac)
            if name in self.members:
                raise MemberError(f"member {name} exists; remove it first to change it")
            for m in self.members.values():
                if (m.node, m.port, m.vlan, m.mac) == (node, port, vlan, mac):
                    raise MemberError(
                        f"member {name}: MAC {mac} on {node} port {port} VLAN {vlan} is "
                        f"member {m.name}'s"
                    )
            session = self.sessions.get(node)
            ports = session.ports if session is not None else None
            if ports is not None:  # once the node was read: its ports are known
                if port not in ports:
                    known = ", ".join(sorted(ports)) or "none"
                    raise MemberError(f"member {name}: {node} has no port {port!r}; ports: {known}")
                if vlan != 0 and vlan not in ports[port]:
                    vlans = ", ".join(map(str, sorted(ports[port]))) or "none"
                    raise MemberError(
                        f"member {name}: port {port} has no VLAN {vlan}; use 0 or one of {vlans}"
                    )
            member_id = next_id(
                (m.id for m in self.members.values() if m.node == node), self._last_member_id
            )
            member = MemberRecord(name, node, port, vlan, mac, member_id)
            await self.store.put_member(member)
            self.members[name] = member
            self._last_member_id = member_id
            if session is not None:
                session.members_changed()
            return member

    async def set_member_filter(
        self, name: str, sources: list[str] | None, bgp_next_hops: list[str] | None = None
    ) -> MemberRecord:
        """Sets (None: removes) a member's source filter (BCP 38), durably, then has its
        node's agent apply it with the member: whole, from one frame to the next. With
        `bgp_next_hops` the filter is derived from the node's BGP routes through them
        (bgp_filters.py), `sources` beside. Raises MemberError for an unknown member, a bad
        prefix or next hop, NoBgpFeed for a node without a feed (nothing stored then)."""
        self._check_leading()
        async with self._member_lock:
            member = self.members.get(name)
            if member is None:
                known = ", ".join(sorted(self.members)[:KNOWN_NODES_LISTED]) or "none"
                raise MemberError(f"member {echo(name)} does not exist; members: {known}")
            checked = None if sources is None else check_sources(name, sources)
            hops = None
            if bgp_next_hops is not None:
                hops = check_next_hops(name, bgp_next_hops)
                self._check_bgp_filter(member, hops)
                checked = checked or ()
            updated = replace(member, sources=checked, bgp_next_hops=hops, bgp_sources=())
            if hops is not None:
                updated = replace(updated, bgp_sources=self.filters.preview(updated))
            await self.store.put_member(updated)
            self._track_filter(updated)
            self.members[name] = updated
            session = self.sessions.get(member.node)
            if session is not None:
                session.members_changed()
            return updated

    async def remove_member(self, name: str) -> MemberRecord:
        self._check_leading()
        async with self._member_lock:
            member = self.members.get(name)
            if member is None:
                known = ", ".join(sorted(self.members)[:KNOWN_NODES_LISTED]) or "none"
                raise MemberError(f"member {echo(name)} does not exist; members: {known}")
            await self.store.delete_member(name)
            del self.members[name]
            self.filters.untrack(name)
            session = self.sessions.get(member.node)
            if session is not None:
                session.members_changed()
            return member

    def _check_bgp_filter(self, member: MemberRecord, hops: tuple[str, ...]) -> None:
        fed = {c.node for c in self._fpm}
        if member.node not in fed:
            raise NoBgpFeed(
                f"member {member.name}: node {member.node} has no BGP feed (no [[fpm]] with "
                f"node = {member.node!r} in the controller's configuration; fed: "
                f"{', '.join(sorted(fed)) or 'none'}); give its prefixes with --allow instead"
            )
        keys = member_keys(replace(member, bgp_next_hops=hops))  # its link-local one too
        other, gateway = self.filters.owner_of(member.node, keys, member.name)
        if other:
            raise MemberError(
                f"member {member.name}: next hop {gateway} on {member.port} VLAN "
                f"{member.vlan} is member {other}'s"
            )

    def _track_filter(self, member: MemberRecord, restore: bool = False) -> None:
        if member.bgp_next_hops is None:
            self.filters.untrack(member.name)
        else:
            self.filters.track(member, restore)

    def _track_filters(self) -> None:
        """Every member whose filter comes from BGP, from the prefixes the store saved."""
        self.filters.clear()
        for m in self.members.values():
            if m.bgp_next_hops is not None:
                self.filters.track(m, restore=True)

    async def _flush_filters(self) -> None:
        """Every `filter_flush_seconds`: the filters from BGP that changed go to their
        agents (one members write per node) and to the store."""
        while True:
            await asyncio.sleep(self.filter_flush_seconds)
            if not self.leading:
                continue
            try:
                await self.flush_filters_now()
            except Exception:
                log.exception("member filters from BGP not saved; the next pass tries again")

    async def flush_filters_now(self) -> None:
        """Pushes the filters from BGP that changed, and saves their prefixes (a failed
        save is tried again at the next pass; the agents have the filter meanwhile)."""
        changed = self.filters.flush()
        nodes = set()
        async with self._member_lock:
            for name in changed:
                member = self.members.get(name)
                if member is None:
                    continue
                nodes.add(member.node)
                value = self.filters.to_save(name)
                if value != member.bgp_sources:
                    member = replace(member, bgp_sources=value)
                    try:
                        await self.store.put_member(member)
                    except Exception as e:
                        log.warning("member %s: filter from BGP not saved: %s", name, e)
                        self.filters.dirty.add(name)
                        continue
                    self.members[name] = member
                self.filters.saved(name, value)
        for node in nodes:
            session = self.sessions.get(node)
            if session is not None:
                session.members_changed()

    def bgp_table(self, node: str) -> Mapping[str, Intent]:
        return self.bgp.table(node)

    def _feed_up_since(self, node: str) -> float | None:
        source = None if self.feeds is None else self.feeds.sources.get(node)
        return None if source is None else source.up_since

    def _filter_hold(self, node: str) -> float:
        hold = (c.filter_hold_seconds for c in self._fpm if c.node == node)
        return next(hold, DEFAULT_HOLD_SECONDS)

    async def list_routes(self, query: RouteQuery) -> list[tuple[RouteKey, Intent, bytes]]:
        """Routes of intent in (node, prefix) order, from the store."""
        return await self.store.list_routes(query)

    async def list_bgp_routes(self, query: RouteQuery) -> list[tuple[RouteKey, Intent, bytes]]:
        """BGP routes in (node, prefix) order, from memory: copies of the tables (one C call
        each) read off the event loop."""
        routes = self.bgp.routes
        node = query.node
        names = list(routes) if node is None else [node] if node in routes else []
        tables = {n: routes[n].copy() for n in names}
        return await asyncio.get_running_loop().run_in_executor(
            None,
            list_bgp_routes,
            tables, node, query.within, query.kind, query.limit, query.after,
        )  # fmt: skip

    def active_bgp_routes(self, node: str) -> int:
        """The BGP routes of `node` that no operator's route beats."""
        table = self.bgp.table(node)
        if not table:
            return 0
        own = self.state.routes.get(node)
        common = self.state.routes.get(ALL_NODES)
        beaten = 0 if own is None else sum(1 for p in own if p in table)
        if common is not None:
            beaten += sum(1 for p in common if p in table and (own is None or p not in own))
        return len(table) - beaten

    # -- checks a batch must pass whole

    def _check_routes(self, batch: RouteBatch) -> None:
        """Every route's node is registered, every next hop's port and VLAN exist on the
        nodes it goes to: checked once per distinct (node, intent), then named per route."""
        faults: dict[tuple[str, int], list[tuple[str, str]]] = {}
        one = batch.node()
        pairs: Iterable[tuple[str, int]] = (
            # A table for one node: no pair per route (every intent is some route's).
            [(one, i) for i in range(len(batch.intents))]
            if one is not None
            else dict.fromkeys(zip(batch.nodes, batch.index, strict=True))
        )
        for node, i in pairs:
            found = self._intent_faults(node, batch.intents[i])
            if found:
                faults[(node, i)] = found
        if not faults:
            return
        violations = [
            Violation(r, f"routes[{r}]{field}", problem)
            for r, pair in enumerate(zip(batch.nodes, batch.index, strict=True))
            for field, problem in faults.get(pair, ())
        ]
        raise InvalidBatch(violations)

    def _intent_faults(self, node: str, intent: Intent) -> list[tuple[str, str]]:
        """(field below the route, problem) for `intent` on `node`."""
        if node != ALL_NODES and node not in self.state.nodes:
            return [(".node", self.unknown_node(node))]
        faults = []
        targets = [node] if node != ALL_NODES else list(self.sessions)
        for j, ((_gateway, port, vlan), _) in enumerate(intent.group or ()):
            for target in targets:
                problem = self._port_problem(target, port, vlan)
                if problem is not None:
                    faults.append((f".next_hops[{j}]", problem))
                    break
        return faults

    def _port_problem(self, node: str, port: str, vlan: int) -> str | None:
        """Checked against the ports the node's agent reported (unknown until it connected)."""
        session = self.sessions.get(node)
        ports = None if session is None else session.ports
        if ports is None:
            return None
        vlans = ports.get(port)
        if vlans is None:
            return (
                f"port {echo(port)} is not a port of node {node}; its ports: "
                f"{', '.join(sorted(ports)) or 'none'}"
            )
        if vlan and vlan not in vlans:
            return (
                f"VLAN {vlan} is not configured on port {port} of node {node}; use 0 "
                f"(untagged) or one of: {', '.join(map(str, sorted(vlans))) or 'none'}"
            )
        return None

    def unknown_node(self, node: str) -> str:
        names = sorted(self.state.nodes)
        known = ", ".join(names[:KNOWN_NODES_LISTED]) or "none"
        if len(names) > KNOWN_NODES_LISTED:
            known += f" and {len(names) - KNOWN_NODES_LISTED} more"
        return (
            f"node {echo(node)} is not registered; registered nodes: {known} ('' means every node)"
        )

    # -- commit and tell

    async def _commit(self, change: Change, call: str = "", started: float = 0.0) -> None:
        """Commits `change` whole (see CommitTurn); a store that cannot take it raises
        StoreUnavailable with nothing committed, said in the log and the metric of `call`."""
        try:
            await self._commit_lock.run(self._commit_whole(change))
        except StoreUnavailable as e:
            log.error("%s", e)
            if call:
                self._observe(call, "store_full" if e.full else "store_unavailable", started)
            raise

    async def _commit_whole(self, change: Change) -> None:
        await self.store.commit(change)  # durable before anyone hears of it
        self._take_in(change)

    def _take_in(self, change: Change) -> None:
        """Takes a committed change into memory and tells sessions and watchers."""
        state = self.state
        state.commit(change)
        touched: dict[str, Sequence[str]] = {}
        batch = change.batch
        node = None if batch is None else batch.node()
        known = None
        if batch is not None and node is not None and not change.deleted:
            touched[node] = batch.prefixes
            # Every session's prefixes are then the batch's, in its order.
            known = (node, batch)
        else:
            loose: dict[str, list[str]] = {}
            for n, prefix in (*change.set, *change.deleted):
                loose.setdefault(n, []).append(prefix)
            touched.update(loose)
        common = touched.get(ALL_NODES, [])
        drains = change.drained or change.restored
        for name, session in self.sessions.items():
            prefixes = common
            if name in touched:
                # A prefix for every node and for this one in the same change is one prefix
                # of this node's FIB: refreshed twice, it was counted (and removed) twice.
                prefixes = (
                    list(dict.fromkeys([*common, *touched[name]])) if common else touched[name]
                )
            if prefixes:
                session.changed(prefixes, change.revision, known)
            if drains:
                session.groups_changed(change.revision)
            if not prefixes and not drains:
                # Nothing here for this node, yet it holds this revision once it holds the
                # ones before: a pass with nothing to write moves its synced revision on.
                session.changed((), change.revision)
        state.forget_freed(change)
        self._update_sizes()
        self._tell_watchers(change)

    # -- leadership (etcd store): follow the store, campaign, lead, step down

    def _check_leading(self) -> None:
        if self.leading:
            return
        name = self.advertise or "this controller"
        leader, since = self.leader_now()
        if leader:
            raise NotLeader(
                f"{name} does not lead: the leader is {leader} (since "
                f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(since))}); send "
                "writes to it"
            )
        raise StoreUnavailable(
            f"{name} does not lead and no controller does at the moment: etcd "
            f"{','.join(self._etcd().config.endpoints)} has no quorum, or an election is "
            "under way; nothing was committed, retry",
            full=False,
        )

    def _etcd(self) -> EtcdStore:
        assert isinstance(self.store, EtcdStore)
        return self.store

    async def _follow(self) -> None:
        """Keeps memory equal to the store's head: every change another controller commits
        reaches this one's watchers and readers (and its sessions, if it leads). Woken by
        etcd's watch of the head, and every FOLLOW_SECONDS in any case (a watch on a member
        that died may take that long to fail)."""
        store = self._etcd()
        wake = asyncio.Event()

        async def watch() -> None:
            async for _ in store.changes():
                wake.set()

        watcher = asyncio.create_task(watch(), name="watch the store's head")
        try:
            while True:
                try:
                    async with asyncio.timeout(FOLLOW_SECONDS):
                        await wake.wait()
                except TimeoutError:
                    pass
                wake.clear()
                try:
                    await self._catch_up()
                except Exception:
                    log.exception("following the store")
                    await asyncio.sleep(FOLLOW_SECONDS)
        finally:
            watcher.cancel()

    async def _catch_up(self) -> None:
        store = self._etcd()
        async with self._commit_lock:
            try:
                change = await store.read_head()
            except StoreUnavailable as e:
                log.debug("following the store: %s", e)
                return
            if change is not None:
                await self._commit_lock.run(self._followed(change))

    async def _followed(self, change: Change) -> None:
        self._take_in(change)

    async def _campaign(self) -> None:
        election = self._election
        assert election is not None
        while True:
            try:
                info = await election.campaign()
            except Exception:  # never end: a follower that stops campaigning never leads
                log.exception("campaign")
                await asyncio.sleep(1.0)
                continue
            try:
                await self._take_lead(info.since)
            except Exception as e:  # etcd failed under it, or lost the lead meanwhile
                log.warning("took the lead but could not start leading: %r", e)
                await self._step_down()
                await election.resign()
                await asyncio.sleep(1.0)
                continue
            reason = await election.keep()
            log.warning("lost the lead: %s; following", reason)
            await self._step_down()
            await election.resign()  # in case etcd still holds it: let it go now

    async def _take_lead(self, since: float) -> None:
        store = self._etcd()
        async with self._commit_lock:
            change = await store.read_head()  # the newest head, before any write
            if change is not None:
                await self._commit_lock.run(self._followed(change))
            await store.sweep()
            self.members = {m.name: m for m in await store.list_members()}
            self._last_member_id = max(
                (m.id for m in self.members.values()), default=self._last_member_id
            )
            self.election = (await store.next_election_id()) << 64
            s = self.state
            changed = [n for n in self.configured if s.nodes.get(n.name) != n]
            if changed:
                await self._commit_lock.run(
                    self._commit_whole(Change(revision=s.revision + 1, nodes=changed))
                )
            await self._load_port_policies()
            self._track_filters()
            if self._fpm:
                # BGP routes are this leader's soft state: zebra connects to the leader's
                # listener and replays; what nodes hold meanwhile is adopted on first read.
                self.feeds = BgpFeeds(self._fpm, self, self._interfaces)
                self._adopted.clear()
            for registered in s.nodes.values():
                self._start_session(registered)
            # Only now, with the nodes committed and their sessions started: a leader answers
            # ListNodes and node status from its sessions, and writes wait on the lock.
            self.leading = True
            self.leader = self.advertise
            self.leader_since = since
            self.leader_changes += 1
            log.info(
                "leading (etcd %s): revision %d, %d routes, %d nodes; election id %d:0",
                store.describe(), s.revision, s.route_count(), len(s.nodes), self.election >> 64,
            )  # fmt: skip
        if self.feeds is not None:
            await self.feeds.start()

    async def _step_down(self) -> None:
        """Stops every write to the agents at once: sessions end, FPM listeners close."""
        self.leading = False
        self.leader = ""
        async with self._commit_lock:
            pass
        for session in list(self.sessions.values()):
            await session.stop()
        self.sessions.clear()
        if self.feeds is not None:
            await self.feeds.stop()
            self.feeds = None
        self._forget_bgp()
        self.filters.clear()

    def _forget_bgp(self) -> None:
        """Drops the BGP routes this leader held: zebra's soft state, which the next leader
        takes from the nodes and from zebra again (a stale copy here must not be written
        if this controller leads again later)."""
        state, bgp = self.state, self.bgp
        for group, id_ in bgp.group_ids.items():
            if state.group_ids.get(group) != id_:
                state.group_keys.pop(id_, None)
        for adjacency, id_ in bgp.adjacency_ids.items():
            if state.adjacency_ids.get(adjacency) != id_:
                state.adjacency_keys.pop(id_, None)
        self.bgp = BgpIntent(
            state.group_keys, state.adjacency_keys, state.max_groups, state.max_adjacencies
        )
        state.bgp = self.bgp
        self._bgp_unused.clear()
        self.bgp_sizes = self.bgp.sizes()

    def leader_now(self) -> tuple[str, float]:
        """The leader's address and since when, as this controller last saw them."""
        if self.leading or self._election is None:
            return self.leader, self.leader_since
        info = self._election.leader
        if info is None:
            return "", 0.0
        return info.name, info.since

    def _update_sizes(self) -> None:
        self.intent_sizes = self.state.sizes()

    def _observe(self, call: str, outcome: str, started: float) -> None:
        if self._metrics is not None:
            self._metrics.applied(call, outcome, started)

    # -- BGP: routes from each node's zebra, beside the operator's (bgp.BgpTarget)

    async def bgp_routes(
        self, node: str, routes: Mapping[str, Intent], deleted: Sequence[str]
    ) -> None:
        """Sets and deletes BGP routes of `node` in memory and tells its session. Between two
        commits, so that ids taken for BGP groups never meet ids a commit under way took."""
        async with self._commit_lock:
            self._forget_bgp_groups()
            changed, refused, unused = self.bgp.apply(node, routes, deleted)
            self.filters.observe(node, routes, deleted)
            if refused:
                log.warning(
                    "bgp %s: %d routes not installed: every next-hop group or adjacency id is "
                    "taken (reconcile.max_groups %d, max_adjacencies %d)",
                    node, len(refused), self.state.max_groups, self.state.max_adjacencies,
                )  # fmt: skip
            self._bgp_unused.update(unused)
            session = self.sessions.get(node)
            if session is not None and changed:
                session.changed(changed, self.state.revision)
            self.bgp_sizes = self.bgp.sizes()

    def _forget_bgp_groups(self) -> None:
        """Frees the ids of BGP groups no route uses once every node is in sync: no node
        holds them then, so a new group may take the id without a route pointing at it."""
        if self._bgp_unused and all(
            s.in_sync and s.lag_seconds() == 0.0 for s in self.sessions.values()
        ):
            self.bgp.forget(self._bgp_unused)
            self._bgp_unused.clear()

    def _interfaces(self, node: str) -> Mapping[int, tuple[str, int]] | None:
        session = self.sessions.get(node)
        return None if session is None else session.interfaces

    async def _node_read(self, session: NodeSession, installed: NodeFib, ports: bool) -> None:
        """A node fed by zebra was read, before its session writes the difference: routes
        that waited for its ports (`ports`: they changed) are mapped, and, the first time,
        the routes it holds that are not the operator's are adopted as a previous session's
        BGP routes, so that a controller's restart withdraws nothing."""
        assert self.feeds is not None
        source = self.feeds.sources[session.name]
        if ports:
            await source.ports_changed()
        if session.name in self._adopted:
            return
        self._adopted.add(session.name)
        found = found_routes(
            installed.route_list(),
            installed.groups,
            installed.adjacencies,
            partial(self.state.operators, session.name),
        )
        # The ids the node holds them under, where free: adopting rewrites nothing.
        operators = self.state.group_keys.keys() - self.bgp.groups
        self.bgp.prefer(*node_ids(installed.groups, installed.adjacencies, operators.__contains__))
        await source.adopt(found)

    # -- watchers

    def watch(self, node: str | None) -> tuple[Watcher, WatchSnapshot]:
        """A new watcher of `node` (None: every node) and the snapshot it starts from, taken
        with no commit between; watchers that start at one revision share one snapshot."""
        watcher = Watcher(node, asyncio.Queue(WATCH_QUEUE))
        revision = self.state.revision
        snapshot = self._snapshots.get(node)
        if snapshot is None or snapshot.since is None:
            routes = self.state.routes
            names = list(routes) if node is None else [node] if node in routes else []
            tables = [(n, routes[n].copy()) for n in names]
            snapshot = WatchSnapshot(revision, tables, sum(len(t) for _, t in tables), [])
            self._snapshots[node] = snapshot
        for event in snapshot.since or ():
            watcher.queue.put_nowait(event)
        self._watchers.append(watcher)
        return watcher, snapshot

    def unwatch(self, watcher: Watcher) -> None:
        if watcher in self._watchers:
            self._watchers.remove(watcher)

    def _tell_watchers(self, change: Change) -> None:
        """Queues the change for every watcher, never waiting: one that is WATCH_QUEUE changes
        behind is dropped (its call ends and it watches again), so no watcher holds back a
        writer. One event per watched node, shared by its watchers."""
        if not (change.batch or change.set or change.deleted):
            return
        events: dict[str | None, WatchEvent | None] = {}

        def event_for(node: str | None) -> WatchEvent | None:
            if node in events:
                return events[node]
            event: WatchEvent | None
            if node is None:
                event = WatchEvent(change.revision, change.set, change.deleted)
            else:
                own = {k: v for k, v in change.set.items() if k[0] == node}
                gone = [k for k in change.deleted if k[0] == node]
                event = WatchEvent(change.revision, own, gone) if own or gone else None
            events[node] = event
            return event

        for node, snapshot in list(self._snapshots.items()):
            if snapshot.since is not None and (event := event_for(node)) is not None:
                snapshot.since.append(event)
                if len(snapshot.since) > SNAPSHOT_SHARED_CHANGES:
                    snapshot.since = None  # the next watcher takes a new snapshot
        for w in list(self._watchers):
            event = event_for(w.node)
            if event is None:
                continue
            try:
                w.queue.put_nowait(event)
            except asyncio.QueueFull:
                w.behind = True
                self._watchers.remove(w)
