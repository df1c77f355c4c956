"""Member source filters derived from BGP (BCP 38): which prefixes of a node's BGP routes are
which member's, kept as zebra's feed changes, and the filter each member gets from that.

Attribution. A BGP route of the node (bgp.py: zebra's selected routes, mapped to next hops
(gateway, port, VLAN)) with a next hop that is one of a member's next-hop addresses on the
member's port and VLAN is that member's announcement. The addresses are the operator's (the
member router's peering-LAN addresses, which the exchange assigns), and the member's EUI-64
link-local address counts too (zebra installs IPv6 routes learnt on a LAN via the peer's
link-local address). Not the MAC that ARP resolves a next hop to: a member that answered ARP
for another's address would widen its own filter. A route server keeps the announcing
member's next hop, so routes learnt through one are attributed the same way.

Sticky, because FPM carries zebra's best paths only: once attributed, a prefix stays the
member's while the node has a BGP route for it, whatever its next hops become (a multihomed
member's prefix that becomes best via another member is still its own). It leaves `hold`
seconds after the node's last route for it went, and only once zebra has been connected for
`hold` seconds: a flap, a reconnection (bgp.py keeps routes stale meanwhile) or a replay never
takes a prefix away, and while zebra is away nothing is taken away at all. A filter derived
while zebra is away or replaying (or restored as over the limit) is not applied until zebra
has been connected for `hold`: a filter from an incomplete table would drop the member's
own traffic.

Never a truncated filter: a member whose prefixes (with the static ones, aggregated) are more
than the engine takes (MEMBER_SOURCES_MAX) is not filtered at all until it has fewer, said in
the log, counted, and shown (`over_limit`). No gRPC and no store here: the core pushes what
`flush` reports and saves the derived sets with the members, so that a restarted controller
starts from them.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from corridor.common.addresses import prefix_order
from corridor.common.fib import MEMBER_SOURCES_MAX
from corridor.controller.domain import AdjacencyKey, Intent
from corridor.controller.members import BGP_SAVED_MAX, MemberRecord, link_local

log = logging.getLogger("corridor.controller")

DEFAULT_HOLD_SECONDS = 60.0  # [[fpm]] filter_hold_seconds
FLUSH_SECONDS = 1.0  # at most one rewrite of a node's members per this, however busy the feed
_CACHED_INTENTS = 65_536  # per node; a full table names a few thousand distinct next-hop sets


@dataclass(slots=True)
class Derived:
    """One member's filter from BGP."""

    node: str
    keys: frozenset[AdjacencyKey]  # its next hops on its port and VLAN
    static: tuple[str, ...]  # the operator's prefixes beside the derived ones
    prefixes: set[str] = field(default_factory=set)  # attributed now
    saved: tuple[str, ...] | None = ()  # as the store holds them (None: over BGP_SAVED_MAX)
    # Restored from the store at start, or derived while zebra had not replayed: checked
    # against the node's routes once zebra has been connected for the hold time. `pending`:
    # not filtered until then (derived while zebra was away or replaying, or saved as over
    # the limit): a filter from an incomplete table would drop the member's own traffic.
    unconfirmed: bool = False
    pending: bool = False
    in_force: tuple[str, ...] | None = None  # what the agent gets (None: no filter)
    over_limit: bool = False


def aggregate(prefixes: Iterable[str]) -> tuple[str, ...]:
    """The same addresses in the fewest prefixes: covered ones dropped, siblings merged."""
    v4: list[ipaddress.IPv4Network] = []
    v6: list[ipaddress.IPv6Network] = []
    for p in prefixes:
        n = ipaddress.ip_network(p)
        (v4 if n.version == 4 else v6).append(n)  # type: ignore[arg-type]
    merged = [*ipaddress.collapse_addresses(v4), *ipaddress.collapse_addresses(v6)]
    return tuple(sorted((str(n) for n in merged), key=prefix_order))


def in_force(static: tuple[str, ...], derived: set[str]) -> tuple[str, ...] | None:
    """The filter of a member: its static and derived prefixes, aggregated if they are too
    many; None (no filter) if even that is more than the engine takes."""
    if len(derived) > BGP_SAVED_MAX:
        return None
    union = derived.union(static)
    if len(union) > MEMBER_SOURCES_MAX:
        merged = aggregate(union)
        return merged if len(merged) <= MEMBER_SOURCES_MAX else None
    return tuple(sorted(union, key=prefix_order))


def member_keys(member: MemberRecord) -> frozenset[AdjacencyKey]:
    """The next hops (gateway, port, VLAN) whose routes are the member's."""
    gateways = {*(member.bgp_next_hops or ()), link_local(member.mac)}
    return frozenset((g, member.port, member.vlan) for g in gateways)


class BgpFilters:
    """The derived filters of every member whose filter comes from BGP, over every node.
    `table(node)`: the node's BGP routes now (prefix -> intent); `up_since(node)`: since when
    (time.monotonic) zebra has been connected, None while it is not; `hold(node)`: the
    node's hold time."""

    def __init__(
        self,
        table: Callable[[str], Mapping[str, Intent]],
        up_since: Callable[[str], float | None],
        hold: Callable[[str], float],
    ) -> None:
        self.table = table
        self.up_since = up_since
        self.hold = hold
        self.members: dict[str, Derived] = {}
        self.hops: dict[str, dict[AdjacencyKey, str]] = {}  # node -> next hop -> member
        self.owners: dict[str, dict[str, tuple[str, ...]]] = {}  # node -> prefix -> members
        self.leaving: dict[str, dict[str, float]] = {}  # node -> prefix -> due (monotonic)
        self.dirty: set[str] = set()
        self.over_limit_total = 0  # times a member went over the limit, monotonic
        self._cache: dict[str, dict[int, tuple[Intent, tuple[str, ...]]]] = {}

    # -- members

    def owner_of(self, node: str, keys: Iterable[AdjacencyKey], but: str) -> tuple[str, str]:
        """(member, gateway) of the first of `keys` another member than `but` has on
        `node`; ('', '') if none."""
        hops = self.hops.get(node, {})
        for key in sorted(keys):
            other = hops.get(key)
            if other is not None and other != but:
                return other, key[0]
        return "", ""

    def track(self, member: MemberRecord, restore: bool = False) -> None:
        """Derives `member`'s filter from now on (its next hops or static prefixes may have
        changed). `restore`: from the prefixes the store saved (a controller's start);
        otherwise from the node's BGP routes now."""
        keys = member_keys(member)
        old = self.members.get(member.name)
        if old is not None and old.keys == keys and old.node == member.node and not restore:
            old.static = member.sources or ()
            old.saved = member.bgp_sources
            self._compute(member.name, old)
            return
        self.untrack(member.name)
        d = Derived(member.node, keys, member.sources or ())
        self.members[member.name] = d
        hops = self.hops.setdefault(member.node, {})
        for key in keys:
            hops[key] = member.name
        self._cache.pop(member.node, None)
        d.saved = member.bgp_sources
        if restore:
            d.unconfirmed = True
            d.pending = member.bgp_sources is None
            self._attribute_all(member.node, member.name, member.bgp_sources or ())
        else:
            self._attribute_all(member.node, member.name, self._scan(member.node, keys))
            if not self.replayed(member.node):
                d.unconfirmed = d.pending = True
        self._compute(member.name, d)

    def replayed(self, node: str, now: float | None = None) -> bool:
        """Whether zebra has been connected for the hold time: its table is whole."""
        up = self.up_since(node)
        now = time.monotonic() if now is None else now
        return up is not None and now - up >= self.hold(node)

    def preview(self, member: MemberRecord) -> tuple[str, ...] | None:
        """The derived prefixes `track(member)` would give, as the store holds them, without
        taking anything in: what the core stores before it tracks."""
        old = self.members.get(member.name)
        keys = member_keys(member)
        if old is not None and old.keys == keys and old.node == member.node:
            found: Iterable[str] = old.prefixes
        else:
            found = self._scan(member.node, keys)
        found = set(found)
        return None if len(found) > BGP_SAVED_MAX else tuple(sorted(found, key=prefix_order))

    def _scan(self, node: str, keys: frozenset[AdjacencyKey]) -> list[str]:
        """The prefixes of the node's BGP routes now with a next hop among `keys`: one pass
        over the table, one look per shared intent."""
        seen: dict[int, bool] = {}
        out = []
        for prefix, intent in self.table(node).items():
            hit = seen.get(id(intent))
            if hit is None:
                hit = seen[id(intent)] = any(a in keys for a, _ in intent.group or ())
            if hit:
                out.append(prefix)
        return out

    def untrack(self, name: str) -> None:
        d = self.members.pop(name, None)
        if d is None:
            return
        hops = self.hops.get(d.node, {})
        for key in d.keys:
            if hops.get(key) == name:
                del hops[key]
        owners = self.owners.get(d.node, {})
        for prefix in d.prefixes:
            left = tuple(n for n in owners.get(prefix, ()) if n != name)
            if left:
                owners[prefix] = left
            else:
                owners.pop(prefix, None)
                self.leaving.get(d.node, {}).pop(prefix, None)
        self._cache.pop(d.node, None)
        self.dirty.discard(name)

    def clear(self) -> None:
        """Forgets everything (a leader stepping down: the next one restores from the store)."""
        for name in list(self.members):
            self.untrack(name)
        self.hops.clear()
        self.owners.clear()
        self.leaving.clear()

    def filter_of(self, member: MemberRecord) -> tuple[str, ...] | None:
        """The filter the member's agent gets."""
        d = self.members.get(member.name)
        return member.sources if d is None else d.in_force

    def view(self, name: str) -> tuple[tuple[str, ...], int, bool, bool]:
        """(derived prefixes, how many, over the limit, pending) of a member, for
        ListMembers: the prefixes only while they are at most BGP_SAVED_MAX."""
        d = self.members.get(name)
        if d is None:
            return (), 0, False, False
        shown = (
            tuple(sorted(d.prefixes, key=prefix_order)) if len(d.prefixes) <= BGP_SAVED_MAX else ()
        )
        return shown, len(d.prefixes), d.over_limit, d.pending

    # -- the feed (called with every change of a node's BGP routes, see core.bgp_routes)

    def observe(self, node: str, routes: Mapping[str, Intent], deleted: Iterable[str]) -> None:
        hops = self.hops.get(node)
        owners = self.owners.get(node)
        if not hops and not owners:
            return  # no member of this node derives its filter: nothing per route
        leaving = self.leaving.setdefault(node, {})
        if hops:
            cache = self._cache.setdefault(node, {})
            for prefix, intent in routes.items():
                # Intents are shared per next-hop set (bgp.py): one look per set, by identity
                # (the cache holds the intent, so its id is not reused meanwhile).
                hit = cache.get(id(intent))
                if hit is None:
                    if len(cache) >= _CACHED_INTENTS:
                        cache.clear()
                    names = tuple(sorted({hops[a] for a, _ in intent.group or () if a in hops}))
                    hit = cache[id(intent)] = (intent, names)
                if hit[1]:
                    self._attribute(node, prefix, hit[1])
                elif leaving:
                    leaving.pop(prefix, None)  # back, via another member: kept (sticky)
        elif leaving:
            for prefix in routes:
                leaving.pop(prefix, None)
        if owners:
            due = time.monotonic() + self.hold(node)
            for prefix in deleted:
                if prefix in owners:
                    leaving[prefix] = due

    def _attribute(self, node: str, prefix: str, names: tuple[str, ...]) -> None:
        owners = self.owners.setdefault(node, {})
        current = owners.get(prefix, ())
        for name in names:
            d = self.members.get(name)
            if d is not None and name not in current:
                current += (name,)
                d.prefixes.add(prefix)
                self.dirty.add(name)
        owners[prefix] = current
        leaving = self.leaving.get(node)
        if leaving:
            leaving.pop(prefix, None)

    def _attribute_all(self, node: str, name: str, prefixes: Iterable[str]) -> None:
        for prefix in prefixes:
            self._attribute(node, prefix, (name,))

    # -- what changed: at most once per FLUSH_SECONDS

    def flush(self, now: float | None = None) -> list[str]:
        """Takes away what is due (see the module's doc) and recomputes the filters of the
        members whose prefixes changed. Returns those whose filter in force changed or whose
        saved prefixes are out of date: the core pushes and saves them (`saved`)."""
        now = time.monotonic() if now is None else now
        for node in {d.node for d in self.members.values()} | set(self.leaving):
            if self.replayed(node, now):  # else zebra is away or replaying: nothing goes
                self._expire(node, now)
        out = []
        for name in sorted(self.dirty):
            d = self.members.get(name)
            if d is None:
                continue
            before = d.in_force
            self._compute(name, d)
            if d.in_force != before or self.to_save(name) != d.saved:
                out.append(name)
        self.dirty.clear()
        return out

    def _expire(self, node: str, now: float) -> None:
        leaving = self.leaving.get(node, {})
        gone = [p for p, due in leaving.items() if due <= now]
        owners = self.owners.get(node, {})
        for prefix in gone:
            del leaving[prefix]
            for name in owners.pop(prefix, ()):
                d = self.members.get(name)
                if d is not None:
                    d.prefixes.discard(prefix)
                    self.dirty.add(name)
        table = self.table(node)
        for name, d in self.members.items():
            if d.node != node or not d.unconfirmed:
                continue
            # Restored prefixes the node no longer routes: zebra has replayed without them.
            d.unconfirmed = False
            d.pending = False
            for prefix in [p for p in d.prefixes if p not in table and p not in leaving]:
                d.prefixes.discard(prefix)
                left = tuple(n for n in owners.get(prefix, ()) if n != name)
                if left:
                    owners[prefix] = left
                else:
                    owners.pop(prefix, None)
            self.dirty.add(name)

    def _compute(self, name: str, d: Derived) -> None:
        d.in_force = None if d.pending else in_force(d.static, d.prefixes)
        over = d.in_force is None and not d.pending
        if over and not d.over_limit:
            self.over_limit_total += 1
            log.warning(
                "member %s: %d prefixes from BGP (with %d static) are more than the %d a "
                "member's filter takes, even aggregated: the member is NOT filtered until "
                "it announces fewer",
                name, len(d.prefixes), len(d.static), MEMBER_SOURCES_MAX,
            )  # fmt: skip
        elif d.over_limit and not over:
            log.info("member %s: %d prefixes from BGP: filtered again", name, len(d.prefixes))
        d.over_limit = over

    def to_save(self, name: str) -> tuple[str, ...] | None:
        """The derived prefixes as the store should hold them."""
        d = self.members[name]
        if len(d.prefixes) > BGP_SAVED_MAX:
            return None
        return tuple(sorted(d.prefixes, key=prefix_order))

    def saved(self, name: str, value: tuple[str, ...] | None) -> None:
        d = self.members.get(name)
        if d is not None:
            d.saved = value
