"""The controller's BGP source: the routes one node's routing daemon (FRR's zebra) selects,
received over FPM (corridor.fpm), turned into intents for that node beside the operator's.

Soft state. The routes live in memory only, never in the store: zebra replays its whole table
on every (re)connection. So a lost connection withdraws nothing: every route stays as it was,
marked stale, and those the next session has not refreshed `stale_seconds` after the loss
are removed (what BGP graceful restart does for a restarting peer). A controller that starts
adopts the routes it finds on the node the same way (`adopt`).

What is installed, and why:
- Only the main table (254): Corridor has one table per node, the default VRF's.
- Routes whose protocol is a routing daemon's (zebra marks BGP 186, OSPF 188, its static
  routes 196, ...). Protocols 0 to 4 are the kernel's own and by-hand routes: unspec,
  redirect, kernel (2: the connected routes of the router's interfaces, which zebra also
  sends), boot and static (3, 4: `ip route add` without or with `proto static`). Those are
  facts of the router's kernel, not routing decisions, and a connected route has no gateway
  Corridor could resolve. A route of such a protocol replaces (so removes) a daemon's route
  to the same prefix, as it does in zebra's FIB, and is counted as `filtered`.
- Unicast routes through gateways on interfaces Corridor owns: each next hop's ifindex is
  mapped to (port, VLAN) through the ports the node's agent reported. A route with a next hop
  through any other interface (the management port), with no gateway (on-link), or with more
  next hops than a group holds is not installed, and is counted by reason, per node; so is a
  route via 169.254.0.1, FRR's placeholder for an IPv6 next hop when it sends no next-hop
  objects (its IPv6 address is lost: use `fpm use-next-hop-groups`). None stops the feed,
  and such a route is installed once a later update or the agent's ports make it
  installable. An IPv4 route may have IPv6 gateways (RFC 8950): adjacencies have no family.
- blackhole -> BLACKHOLE; unreachable and prohibit -> UNREACHABLE (Corridor answers both
  with an ICMP destination unreachable).

zebra sends a changed route as a delete and an add in one FPM frame, so they arrive in one
batch: a batch is coalesced per prefix (the last update wins) before it reaches the core, and
such a change never removes the route for a moment.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from ipaddress import ip_address
from typing import Protocol

from corridor.common.addresses import gateway_from_pb
from corridor.common.config import HostPort, Table, host_port_from
from corridor.common.errors import FieldError
from corridor.common.fib import Adjacency, Members, Route, RouteKind
from corridor.common.serving import StartError
from corridor.controller.bgp_filters import DEFAULT_HOLD_SECONDS
from corridor.controller.domain import (
    MAX_NEXT_HOPS,
    AdjacencyKey,
    GroupKey,
    Intent,
    RouteKey,
    check_node_name,
    prefix_sort_key,
)
from corridor.fpm import (
    DEFAULT_PORT,
    FpmListener,
    NextHop,
    Operation,
    Peer,
    RouteType,
    RouteUpdate,
    Update,
)
from corridor.fpm import start_listener as start_fpm_listener

log = logging.getLogger("corridor.controller")

DEFAULT_STALE_SECONDS = 120.0
RT_TABLE_MAIN = 254
KERNEL_PROTOCOLS = frozenset(range(5))  # RTPROT_UNSPEC, REDIRECT, KERNEL, BOOT, STATIC

# Why a route from zebra is not installed (stable names: status and metrics use them).
UNOWNED_INTERFACE = "unowned_interface"  # a next hop through an interface no port is
NO_INTERFACE = "no_interface"  # a next hop without an interface (ifindex 0)
ON_LINK = "on_link"  # a next hop without a gateway
BAD_GATEWAY = "bad_gateway"  # not an address a neighbour can have
TOO_MANY_NEXT_HOPS = "too_many_next_hops"
# FRR without next-hop objects writes an IPv4 route via an IPv6 next hop (RFC 8950) as via
# 169.254.0.1 on-link, its placeholder: the IPv6 address is lost, nothing answers for the
# placeholder on the link, and installing the route would only drop its traffic.
HIDDEN_IPV6_NEXT_HOP = "hidden_ipv6_next_hop"
RFC8950_PLACEHOLDER = ip_address("169.254.0.1")
PORTS_UNKNOWN = "ports_unknown"  # the agent has not reported its ports yet: waits, not counted
MAPPED_SETS = 65_536  # sets of next hops whose intent is kept (see BgpSource._intent)

_KINDS = {
    RouteType.BLACKHOLE: RouteKind.BLACKHOLE,
    RouteType.UNREACHABLE: RouteKind.UNREACHABLE,
    RouteType.PROHIBIT: RouteKind.UNREACHABLE,
}


class BgpTarget(Protocol):
    """Where the source's intents go (the core). Called with a node's routes that changed:
    `routes` to install or replace, `deleted` to remove. Awaited: a slow target slows zebra."""

    async def bgp_routes(
        self, node: str, routes: Mapping[str, Intent], deleted: Sequence[str]
    ) -> None: ...


Interfaces = Mapping[int, tuple[str, int]]  # ifindex -> (port, VLAN)


@dataclass(slots=True)
class BgpCounters:
    """Monotonic counts of one node's feed, and the routes not installed now, by reason."""

    received: int = 0  # route updates from zebra
    filtered: int = 0  # of the kernel's protocols or another table: ignored by design
    swept: int = 0  # stale routes removed after stale_seconds
    not_installed_total: Counter[str] = field(default_factory=Counter)  # by reason, monotonic
    not_installed: Counter[str] = field(default_factory=Counter)  # by reason, now


class BgpSource:
    """Implements corridor.fpm.FpmSink for one `[[fpm]]` entry: the routes of `node`."""

    def __init__(
        self,
        node: str,
        target: BgpTarget,
        interfaces: Callable[[], Interfaces | None],
        stale_seconds: float = DEFAULT_STALE_SECONDS,
    ) -> None:
        """`interfaces`: the node's ports by ifindex as its agent last reported them (None
        until it has); call `ports_changed` when they change."""
        self.node = node
        self.target = target
        self.interfaces = interfaces
        self.stale_seconds = stale_seconds
        self.counters = BgpCounters()
        self.routes: dict[str, Intent] = {}  # installed: what the target was given
        self.sent: dict[str, RouteUpdate] = {}  # zebra's routes as sent, for remapping
        self.reasons: dict[str, str] = {}  # prefix -> why it is not installed now
        self.session = 0  # counts connections; 0 is "before this controller"
        self.peers: dict[Peer, int] = {}  # live connections and their session
        self.up_since: float | None = None  # time.monotonic() since zebra is connected
        self.seen: dict[str, int] = {}  # prefix -> the session that last sent it
        self._per_session: Counter[int] = Counter()  # prefixes by the session that sent them
        self._stale_below = 0  # prefixes of sessions below this are stale
        self._sweeps: set[asyncio.TimerHandle] = set()
        self._intents: dict[tuple[RouteKind, GroupKey | None], Intent] = {}  # shared objects
        # The intent of each set of next hops zebra sent, for the interfaces it was mapped
        # with: a full table names a few sets a million times.
        self._mapped: dict[tuple[NextHop, ...], tuple[Intent | None, str | None]] = {}
        self._mapped_for: Interfaces | None = None
        self._lock = asyncio.Lock()  # one change at a time reaches the target, in order

    # -- what status shows

    @property
    def stale(self) -> int:
        """Routes of an earlier session not (yet) refreshed."""
        below = self._stale_below
        return sum(n for s, n in self._per_session.items() if s < below)

    @property
    def connected(self) -> bool:
        return bool(self.peers)

    # -- FpmSink

    async def connection_up(self, peer: Peer) -> None:
        self.session += 1
        if not self.peers:
            self.up_since = time.monotonic()
        self.peers[peer] = self.session
        log.info("bgp %s: zebra connected from %s (session %d)", self.node, peer, self.session)

    async def connection_down(self, peer: Peer, reason: str) -> None:
        session = self.peers.pop(peer, None)
        if session is None:
            return
        if not self.peers:
            self.up_since = None
        # Every route sent so far is stale; the replay of the next session refreshes it.
        self._stale_below = max(self._stale_below, session + 1)
        log.warning(
            "bgp %s: zebra's connection from %s down (%s): its %d routes kept, stale; those "
            "not sent again within %g s are removed",
            self.node, peer, reason, len(self.seen), self.stale_seconds,
        )  # fmt: skip
        self._sweep_later(session)

    async def updates(self, peer: Peer, batch: Sequence[Update]) -> None:
        session = self.peers.get(peer, self.session)
        # The last update of each prefix in the batch wins (zebra's delete + add of a change).
        last: dict[str, RouteUpdate | None] = {}
        counters = self.counters
        for update in batch:
            if not isinstance(update, RouteUpdate):
                continue  # next-hop objects: the listener resolved them into the routes
            counters.received += 1
            if update.table != RT_TABLE_MAIN:
                counters.filtered += 1
                continue
            prefix = update.prefix
            if update.op is Operation.DELETE:
                last[prefix] = None
            elif update.protocol in KERNEL_PROTOCOLS:
                counters.filtered += 1
                last[prefix] = None  # zebra selected a kernel route there: ours is gone
            else:
                last[prefix] = update
        if last:
            await self._change(last, session)

    # -- the node's ports

    async def ports_changed(self) -> None:
        """The agent reported its ports (again): every route is mapped afresh."""
        await self._change(None, None)

    async def adopt(self, routes: Mapping[str, Intent]) -> None:
        """Routes found on the node when the controller started that are not the operator's:
        taken as a previous session's, kept, and removed after `stale_seconds` unless zebra
        sends them again. Prefixes already known are left alone."""
        async with self._lock:
            new = {p: i for p, i in routes.items() if p not in self.seen}
            for prefix, intent in new.items():
                self.routes[prefix] = intent
                self.seen[prefix] = 0
            self._per_session[0] += len(new)
            self._stale_below = max(self._stale_below, 1)
        if new:
            log.info(
                "bgp %s: %d routes on the node adopted as stale until zebra sends them again",
                self.node, len(new),
            )  # fmt: skip
            await self.target.bgp_routes(self.node, new, ())
        self._sweep_later(0)

    async def stop(self) -> None:
        for handle in self._sweeps:
            handle.cancel()
        self._sweeps.clear()

    # -- internals

    async def _change(
        self, last: Mapping[str, RouteUpdate | None] | None, session: int | None
    ) -> None:
        """Applies the updates (None: delete) of one batch, from `session`. `last` None: maps
        every route afresh, which refreshes nothing (`session` None)."""
        async with self._lock:
            if last is None:
                last = dict(self.sent)
            interfaces = self.interfaces()
            routes, sent, reasons = self.routes, self.sent, self.reasons
            waiting = self.counters.not_installed
            set_: dict[str, Intent] = {}
            deleted: list[str] = []
            for prefix, update in last.items():
                if session is not None:
                    self._saw(prefix, None if update is None else session)
                old_reason = reasons.pop(prefix, None)
                if old_reason is not None:
                    waiting[old_reason] -= 1
                if update is None:
                    sent.pop(prefix, None)
                    if routes.pop(prefix, None) is not None:
                        deleted.append(prefix)
                    continue
                sent[prefix] = update
                intent, reason = self._intent(update, interfaces)
                if intent is None:
                    assert reason is not None
                    reasons[prefix] = reason
                    waiting[reason] += 1
                    if reason != PORTS_UNKNOWN:
                        self.counters.not_installed_total[reason] += 1
                    if routes.pop(prefix, None) is not None:
                        deleted.append(prefix)
                elif routes.get(prefix) != intent:
                    routes[prefix] = intent
                    set_[prefix] = intent
            if set_ or deleted:
                await self.target.bgp_routes(self.node, set_, deleted)

    def _saw(self, prefix: str, session: int | None) -> None:
        old = self.seen.pop(prefix, None)
        if old is not None:
            self._per_session[old] -= 1
        if session is not None:
            self.seen[prefix] = session
            self._per_session[session] += 1

    def _intent(
        self, update: RouteUpdate, interfaces: Interfaces | None
    ) -> tuple[Intent | None, str | None]:
        kind = _KINDS.get(update.type)
        if kind is not None:
            return self._shared(kind, None), None
        if interfaces is None:
            return None, PORTS_UNKNOWN
        if interfaces is not self._mapped_for:
            self._mapped.clear()
            self._mapped_for = interfaces
        mapped = self._mapped.get(update.next_hops)
        if mapped is None:
            if len(self._mapped) >= MAPPED_SETS:
                self._mapped.clear()
            mapped = self._mapped[update.next_hops] = self._map(update, interfaces)
        return mapped

    def _map(self, update: RouteUpdate, interfaces: Interfaces) -> tuple[Intent | None, str | None]:
        if len(update.next_hops) > MAX_NEXT_HOPS:
            return None, TOO_MANY_NEXT_HOPS
        hops: dict[AdjacencyKey, int] = {}
        for hop in update.next_hops:
            if hop.gateway is None:
                return None, ON_LINK
            if hop.gateway == RFC8950_PLACEHOLDER:
                return None, HIDDEN_IPV6_NEXT_HOP
            if not hop.ifindex:
                return None, NO_INTERFACE
            where = interfaces.get(hop.ifindex)
            if where is None:
                return None, UNOWNED_INTERFACE
            try:
                gateway = gateway_from_pb(hop.gateway.packed, "gateway")
            except FieldError:
                return None, BAD_GATEWAY
            key = (gateway, where[0], where[1])
            hops[key] = hops.get(key, 0) + hop.weight
        return self._shared(RouteKind.FORWARD, tuple(sorted(hops.items()))), None

    def _shared(self, kind: RouteKind, group: GroupKey | None) -> Intent:
        key = (kind, group)
        intent = self._intents.get(key)
        if intent is None:
            intent = self._intents[key] = Intent(kind, group)
        return intent

    def _sweep_later(self, session: int) -> None:
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle

        def fire() -> None:
            self._sweeps.discard(handle)
            task = loop.create_task(self._sweep(session))
            task.add_done_callback(_log_failure)

        handle = loop.call_later(self.stale_seconds, fire)
        self._sweeps.add(handle)

    async def _sweep(self, session: int) -> None:
        """Removes the routes last sent in `session` or before: the hold time is over."""
        async with self._lock:
            stale = [p for p, s in self.seen.items() if s <= session]
            deleted = []
            for prefix in stale:
                self._saw(prefix, None)
                self.sent.pop(prefix, None)
                reason = self.reasons.pop(prefix, None)
                if reason is not None:
                    self.counters.not_installed[reason] -= 1
                if self.routes.pop(prefix, None) is not None:
                    deleted.append(prefix)
            self.counters.swept += len(stale)
            if stale:
                log.warning(
                    "bgp %s: %d stale routes not sent again within %g s removed",
                    self.node, len(stale), self.stale_seconds,
                )  # fmt: skip
            if deleted:
                await self.target.bgp_routes(self.node, {}, deleted)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("bgp: removing stale routes failed", exc_info=task.exception())


def not_installed(sources: Iterable[BgpSource]) -> dict[str, int]:
    """Routes not installed now, by reason, over `sources` (for status)."""
    total: Counter[str] = Counter()
    for source in sources:
        total.update(source.counters.not_installed)
    return {reason: n for reason, n in total.items() if n}


# -- the BGP routes of every node, beside the operator's intent ----------------------------


class BgpIntent:
    """Every node's BGP routes, in memory only, and the ids of their next-hop groups and
    adjacencies. The operator's intent (domain.IntentState) consults it for the prefixes it
    has no route for: the operator's route wins.

    Ids come from the same spaces as the operator's, lowest free first (the agents' tables are
    dense and may be smaller than the controller's bounds), taken only between two commits
    (the core holds its commit turn), and are entered in the state's id -> key maps so that
    neither side takes one the other uses. They are never stored: a restarted controller
    maps the node's groups again (see `found_routes`). A BGP group and an operator's group
    with the same next hops are two groups on the node: they never share an id, so the store
    never names one it did not write."""

    def __init__(
        self,
        group_keys: dict[int, GroupKey],
        adjacency_keys: dict[int, AdjacencyKey],
        max_groups: int,
        max_adjacencies: int,
    ) -> None:
        """`group_keys`, `adjacency_keys`: the state's maps, shared (ids of both sources)."""
        self.group_keys = group_keys
        self.adjacency_keys = adjacency_keys
        self.max_groups = max_groups
        self.max_adjacencies = max_adjacencies
        self.routes: dict[str, dict[str, Intent]] = {}  # node -> prefix -> intent
        self.group_ids: dict[GroupKey, int] = {}
        self.group_refs: Counter[GroupKey] = Counter()  # routes per group
        self.adjacency_ids: dict[AdjacencyKey, int] = {}
        self.adjacency_refs: Counter[AdjacencyKey] = Counter()  # groups per adjacency
        self.groups: set[int] = set()  # the ids of BGP groups
        self.v6_routes = 0
        self.route_total = 0
        self.ids_exhausted = 0  # routes refused for want of an id, monotonic
        # Ids a node already uses for groups and adjacencies it holds (see `prefer`).
        self._preferred_groups: dict[GroupKey, int] = {}
        self._preferred_adjacencies: dict[AdjacencyKey, int] = {}

    def prefer(
        self, groups: Mapping[GroupKey, int], adjacencies: Mapping[AdjacencyKey, int]
    ) -> None:
        """Ids to take for these groups and adjacencies when they are needed and free: those
        a node holds them under, so that adopting its routes rewrites nothing."""
        self._preferred_groups.update(groups)
        self._preferred_adjacencies.update(adjacencies)

    def table(self, node: str) -> dict[str, Intent]:
        return self.routes.get(node, _EMPTY)

    def sizes(self) -> tuple[int, int, int, int]:
        v6 = self.v6_routes
        return (self.route_total - v6, v6, len(self.group_ids), len(self.adjacency_ids))

    def apply(
        self, node: str, routes: Mapping[str, Intent], deleted: Iterable[str]
    ) -> tuple[list[str], list[str], list[GroupKey]]:
        """Sets and deletes BGP routes of `node`. Returns the prefixes that changed, those
        refused (no id left for their group: counted, logged by the caller), and the groups
        no route uses any more: `forget` them once every session has been refreshed."""
        table = self.routes.setdefault(node, {})
        refs = self.group_refs
        changed: list[str] = []
        refused: list[str] = []
        let_go: set[GroupKey] = set()
        v6 = total = 0
        for prefix, intent in routes.items():
            group = intent.group
            if group is not None and group not in self.group_ids and not self._take(group):
                refused.append(prefix)
                continue
            old = table.get(prefix)
            if old is intent:
                continue
            table[prefix] = intent
            changed.append(prefix)
            if group is not None:
                refs[group] += 1  # at once: the next route may share it
            if old is None:
                total += 1
                v6 += ":" in prefix
            elif old.group is not None:
                refs[old.group] -= 1
                let_go.add(old.group)
        for prefix in deleted:
            old = table.pop(prefix, None)
            if old is None:
                continue
            changed.append(prefix)
            total -= 1
            v6 -= ":" in prefix
            if old.group is not None:
                refs[old.group] -= 1
                let_go.add(old.group)
        self.ids_exhausted += len(refused)
        self.route_total += total
        self.v6_routes += v6
        unused = [g for g in let_go if refs[g] <= 0]
        return changed, refused, unused

    def forget(self, groups: Iterable[GroupKey]) -> None:
        """Frees the ids of groups no route uses (after every session was refreshed)."""
        for group in groups:
            if self.group_refs.get(group, 0) > 0 or group not in self.group_ids:
                continue
            del self.group_refs[group]
            id_ = self.group_ids.pop(group)
            self.groups.discard(id_)
            self.group_keys.pop(id_, None)
            for adjacency, _ in group:
                self.adjacency_refs[adjacency] -= 1
                if self.adjacency_refs[adjacency] <= 0:
                    del self.adjacency_refs[adjacency]
                    self.adjacency_keys.pop(self.adjacency_ids.pop(adjacency), None)

    def _take(self, group: GroupKey) -> bool:
        """Ids for a new group and its new adjacencies; False (nothing taken) if none left."""
        new_adjacencies = [a for a, _ in group if a not in self.adjacency_ids]
        wanted = [self._preferred_adjacencies.pop(a, None) for a in new_adjacencies]
        usable = [
            i
            if i is not None and i <= self.max_adjacencies and i not in self.adjacency_keys
            else None
            for i in wanted
        ]
        if len({i for i in usable if i is not None}) < sum(1 for i in usable if i is not None):
            usable = [None] * len(usable)  # two claim one id: none is trusted
        taken = {i for i in usable if i is not None}
        free = _free(
            {**self.adjacency_keys, **dict.fromkeys(taken)},
            self.max_adjacencies,
            usable.count(None),
        )
        preferred_group = self._preferred_groups.pop(group, None)
        if (
            preferred_group is not None
            and preferred_group <= self.max_groups
            and preferred_group not in self.group_keys
        ):
            group_id: list[int] | None = [preferred_group]
        else:
            group_id = _free(self.group_keys, self.max_groups, 1)
        if free is None or group_id is None:
            return False
        free_iter = iter(free)
        adjacency_ids = [i if i is not None else next(free_iter) for i in usable]
        for adjacency, id_ in zip(new_adjacencies, adjacency_ids, strict=True):
            self.adjacency_ids[adjacency] = id_
            self.adjacency_keys[id_] = adjacency
        for adjacency, _ in group:
            self.adjacency_refs[adjacency] += 1
        (id_,) = group_id
        self.group_ids[group] = id_
        self.group_keys[id_] = group
        self.groups.add(id_)
        return True

    def members(
        self, group: int, live: Callable[[AdjacencyKey], bool]
    ) -> tuple[tuple[int, int], ...]:
        """A BGP group's members on a node: those `live` (not drained) unless none is."""
        key = self.group_keys[group]
        ids = self.adjacency_ids
        chosen = [(ids[a], w) for a, w in key if live(a)]
        return tuple(sorted(chosen or [(ids[a], w) for a, w in key]))

    def group_id(self, group: GroupKey) -> int:
        return self.group_ids[group]


_EMPTY: dict[str, Intent] = {}


def _free(used: Mapping[int, object], limit: int, count: int) -> list[int] | None:
    """The `count` lowest ids of 1..`limit` that `used` does not hold; None if fewer."""
    out: list[int] = []
    i = 1
    while len(out) < count and i <= limit:
        if i not in used:
            out.append(i)
        i += 1
    return out if len(out) == count else None


def found_routes(
    routes: Iterable[Route],
    groups: Mapping[int, Members],
    adjacencies: Mapping[int, Adjacency],
    skip: Callable[[str], bool],
) -> dict[str, Intent]:
    """The routes a node holds (as Read gives them) as intents, but those `skip` names (the
    operator's) and those Corridor cannot have written (LOCAL, explicit MACs): what a
    starting controller adopts as a previous session's BGP routes."""
    intents: dict[tuple[RouteKind, GroupKey | None], Intent] = {}
    made: dict[int, GroupKey | None] = {}  # group id -> key (None: not ours)
    out: dict[str, Intent] = {}
    for route in routes:
        if skip(route.prefix) or route.kind not in _ADOPTED:
            continue
        key: GroupKey | None = None
        if route.kind is RouteKind.FORWARD:
            if route.group not in made:
                made[route.group] = _group_key(groups.get(route.group), adjacencies)
            key = made[route.group]
            if key is None:
                continue
        intent = intents.get((route.kind, key))
        if intent is None:
            intent = intents[(route.kind, key)] = Intent(route.kind, key)
        out[route.prefix] = intent
    return out


_ADOPTED = (RouteKind.FORWARD, RouteKind.BLACKHOLE, RouteKind.UNREACHABLE)


def node_ids(
    groups: Mapping[int, Members], adjacencies: Mapping[int, Adjacency], skip: Callable[[int], bool]
) -> tuple[dict[GroupKey, int], dict[AdjacencyKey, int]]:
    """The ids a node holds its controller-written groups and adjacencies under, by key, but
    the groups `skip` names (the operator's): for BgpIntent.prefer."""
    group_ids: dict[GroupKey, int] = {}
    adjacency_ids: dict[AdjacencyKey, int] = {}
    for id_, members in groups.items():
        key = None if skip(id_) else _group_key(members, adjacencies)
        if key is None:
            continue
        group_ids.setdefault(key, id_)
        for adjacency_id, _ in members:
            a = adjacencies[adjacency_id]
            assert a.gateway, "_group_key took only gateway adjacencies"
            adjacency_ids.setdefault((a.gateway, a.port, a.vlan), adjacency_id)
    return group_ids, adjacency_ids


def _group_key(members: Members | None, adjacencies: Mapping[int, Adjacency]) -> GroupKey | None:
    if not members:
        return None
    hops = []
    for adjacency_id, weight in members:
        a = adjacencies.get(adjacency_id)
        if a is None or not a.gateway:
            return None  # explicit MACs: not written by a controller
        hops.append(((a.gateway, a.port, a.vlan), weight))
    return tuple(sorted(hops))


def list_routes(
    tables: Mapping[str, Mapping[str, Intent]],
    node: str | None,
    within: str | None,
    kind: int,
    limit: int,
    after: tuple[str, bytes] | None,
) -> list[tuple[RouteKey, Intent, bytes]]:
    """BGP routes (`tables`: node -> prefix -> intent, as BgpIntent.routes) in (node, prefix)
    order as the store lists the operator's: of `node` (None: every node), inside `within`,
    of `kind` (0: any), after `after`, at most `limit`. Each page walks the node's table once
    (a full table: about a second): give it copies and call it off the event loop."""
    inside: Callable[[bytes], bool] | None = None
    if within is not None:
        w = prefix_sort_key(within)
        bits, length = (len(w) - 2) * 8, w[-1]
        top = int.from_bytes(w[1:-1], "big") >> (bits - length)

        def inside(key: bytes) -> bool:
            return (
                key[0] == w[0]
                and key[-1] >= length
                and int.from_bytes(key[1:-1], "big") >> (bits - length) == top
            )

    nodes = sorted(tables) if node is None else [node] if node in tables else []
    out: list[tuple[RouteKey, Intent, bytes]] = []
    for name in nodes:
        if after is not None and name < after[0]:
            continue
        floor = after[1] if after is not None and name == after[0] else None
        rows = []
        for prefix, intent in tables[name].items():
            if kind and intent.kind != kind:
                continue
            key = prefix_sort_key(prefix)
            if (floor is not None and key <= floor) or (inside is not None and not inside(key)):
                continue
            rows.append((key, prefix, intent))
        for key, prefix, intent in heapq.nsmallest(limit - len(out), rows):
            out.append(((name, prefix), intent, key))
        if len(out) >= limit:
            break
    return out


# -- configuration: [[fpm]] -----------------------------------------------------------------

EXAMPLE = """\
[[fpm]]                                   # one per routing daemon (zebra) feeding a node
node = "local"                            # the node whose routes this zebra selects
listen = "127.0.0.1:2620"                 # zebra's `fpm address 127.0.0.1 port 2620`
# allowed_peers = ["192.0.2.10"]          # required when listen is beyond loopback
# netns = "router"                        # listen inside this `ip netns`, where zebra runs
# stale_seconds = 120                     # hold time of routes after zebra's connection drops
# filter_hold_seconds = 60                # members' filters from BGP keep a withdrawn prefix
"""


@dataclass(frozen=True)
class FpmConfig:
    """One `[[fpm]]` table: a listener for one zebra, whose routes go to `node`."""

    node: str
    listen: HostPort = field(default_factory=lambda: HostPort("127.0.0.1", DEFAULT_PORT))
    allowed_peers: tuple[str, ...] | None = None
    stale_seconds: float = DEFAULT_STALE_SECONDS
    netns: str | None = None
    # A prefix leaves a member's filter derived from BGP this long after its last route went
    # (bgp_filters.py).
    filter_hold_seconds: float = DEFAULT_HOLD_SECONDS


def fpm_from(top: Table) -> tuple[FpmConfig, ...]:
    """The `[[fpm]]` tables of a controller's file, problems noted in `top` (see Table)."""
    out: list[FpmConfig] = []
    bad_listen: set[int] = set()
    for i, t in enumerate(top.tables("fpm")):
        node = t.required_string("node")
        if not t.failed("node") and (problem := check_node_name(node)) is not None:
            t.fail("node", problem)
        listen = host_port_from(t, "listen") or HostPort("127.0.0.1", DEFAULT_PORT)
        peers = _peers(t)
        stale = t.integer("stale_seconds", 1, 86400, default=int(DEFAULT_STALE_SECONDS))
        hold = t.integer("filter_hold_seconds", 1, 86400, default=int(DEFAULT_HOLD_SECONDS))
        netns = t.string("netns")
        if netns is not None and (
            not netns or len(netns) > 255 or any(c in netns for c in "/\0 \t\n")
        ):
            t.fail("netns", f"{netns!r} is not a network namespace name as `ip netns add` takes")
        t.done()
        if not t.failed("listen") and peers is None and not _loopback(listen.host):
            t.fail(
                "allowed_peers",
                f"is required: listen {listen} is beyond loopback and FPM has no "
                "authentication; list the addresses zebra connects from (or listen on "
                "127.0.0.1)",
            )
        for j, other in enumerate(out):
            same = (other.listen, other.netns) == (listen, netns)
            if same and not t.failed("listen") and j not in bad_listen:
                t.fail("listen", f"{listen} is already fpm[{j}].listen")
            if other.node == node:
                t.fail("node", f"{node!r} is already fed by fpm[{j}]; one zebra per node")
        if t.failed("listen"):
            bad_listen.add(i)
        out.append(FpmConfig(node, listen, peers, float(stale), netns, float(hold)))
    return tuple(out)


def _peers(t: Table) -> tuple[str, ...] | None:
    values = t.get("allowed_peers", list, "an array of IP addresses")
    if values is None:
        return None
    peers = []
    for j, value in enumerate(values):
        try:
            peers.append(str(ip_address(value)))
        except (ValueError, TypeError):
            t.fail(f"allowed_peers[{j}]", f"{value!r} is not an IPv4 or IPv6 address")
    if not values:
        t.fail("allowed_peers", "is empty; list the addresses zebra connects from")
    return tuple(peers)


def _loopback(host: str) -> bool:
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


# -- running: the listeners of a controller ------------------------------------------------


class BgpFeeds:
    """The controller's FPM listeners, one per `[[fpm]]`, and their sources: started and
    stopped with the controller. `interfaces_of(node)`: the node's ports by ifindex as its
    agent last reported them (None until then)."""

    def __init__(
        self,
        configs: Sequence[FpmConfig],
        target: BgpTarget,
        interfaces_of: Callable[[str], Interfaces | None],
    ) -> None:
        self.configs = tuple(configs)
        self.sources: dict[str, BgpSource] = {}
        for config in self.configs:
            node = config.node
            self.sources[node] = BgpSource(
                node, target, partial(interfaces_of, node), config.stale_seconds
            )
        self.listeners: list[tuple[FpmConfig, FpmListener, int]] = []

    async def start(self) -> None:
        """Listens for every zebra; on failure nothing is left listening (StartError naming
        the entry)."""
        try:
            for i, config in enumerate(self.configs):
                source = self.sources[config.node]
                try:
                    listener, port = await start_fpm_listener(
                        config.listen.host,
                        config.listen.port,
                        source,
                        allowed_peers=config.allowed_peers,
                        netns=config.netns,
                    )
                except (OSError, ValueError) as error:
                    raise StartError(
                        f"fpm[{i}].listen: cannot listen on {config.listen}: {error}"
                    ) from error
                self.listeners.append((config, listener, port))
                log.info(
                    "bgp: routes of node %s from zebra on %s port %d%s",
                    config.node, config.listen.host, port,
                    f" in {config.netns}" if config.netns else "",
                )  # fmt: skip
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        for _, listener, _ in self.listeners:
            await listener.stop()
        self.listeners.clear()
        for source in self.sources.values():
            await source.stop()
