"""The controller's domain: routes as operators state them, the adjacencies and next-hop
groups derived from them, and the FIB each node should hold. No gRPC (api.py translates),
no storage (the Store commits what the domain decides), no agent (the reconciler talks to it).
"""

from __future__ import annotations

import re
import socket
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property, partial
from itertools import repeat
from operator import contains
from typing import TYPE_CHECKING

from corridor._dataplane import DirtyRoutes, IntentRoutes, Prefixes, RouteOps, RouteTable
from corridor.common.addresses import endpoint_problem, prefix_text
from corridor.common.errors import echo
from corridor.common.fib import (
    Adjacency,
    DeleteAdjacency,
    DeleteGroup,
    DeleteRoute,
    FibOperation,
    Members,
    NextHopGroup,
    Route,
    RouteKind,
)

if TYPE_CHECKING:
    from corridor.controller.bgp import BgpIntent

MAX_ROUTES_PER_BATCH = 100_000
MAX_NEXT_HOPS = 256  # the engine's largest group
MAX_WEIGHT = 65_535
NODE_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")  # fullmatch: "$" would pass a final "\n"
ALL_NODES = ""


# A next hop's key: (gateway text, port, vlan). A group's key: its next hops with weights,
# sorted, so every route with the same set shares one group.
AdjacencyKey = tuple[str, str, int]
GroupKey = tuple[tuple[AdjacencyKey, int], ...]


@dataclass(slots=True, frozen=True)
class Intent:
    """One route as intended: FORWARD routes carry their group's key."""

    kind: RouteKind
    group: GroupKey | None = None


RouteKey = tuple[str, str]  # (node, canonical prefix text)
# A batch just committed, for the refreshes it causes: its node and the batch, whose
# routes' intents are then read from its columns (see IntentState.refresh).
BatchIntents = tuple[str, "RouteBatch"]


@dataclass(frozen=True)
class NodeTls:
    ca: str
    cert: str
    key: str
    server_name: str = ""


@dataclass(frozen=True)
class Node:
    name: str
    address: str  # "unix:/path" or "host:port"
    tls: NodeTls | None = None


@dataclass(eq=False)
class RouteBatch:
    """Routes to set, in columns, as an Apply brings them (a full table is a million):
    route i is (nodes[i], prefixes[i]) -> intents[index[i]]; `intents` are the distinct
    ones, each one object however many routes share it. Keys are distinct (the readers
    refuse a key twice). From the Apply reader `prefixes` is a `Prefixes`, packed keys that
    the route tables and the store take whole (`packed`); a sequence of prefix texts to the
    rest.
    """

    nodes: list[str]
    prefixes: list[str] | Prefixes
    index: list[int]
    intents: list[Intent]
    _route_intents: list[Intent] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.prefixes)

    @classmethod
    def of(cls, routes: Sequence[tuple[RouteKey, Intent]]) -> RouteBatch:
        """A batch from (key, intent) pairs."""
        position: dict[int, int] = {}
        intents: list[Intent] = []
        index = []
        for _, intent in routes:
            i = position.get(id(intent))
            if i is None:
                i = position[id(intent)] = len(intents)
                intents.append(intent)
            index.append(i)
        return cls([n for (n, _), _ in routes], [p for (_, p), _ in routes], index, intents)

    def keys(self) -> list[RouteKey]:
        return list(zip(self.nodes, self.prefixes, strict=True))

    @property
    def packed(self) -> Prefixes | None:
        """The prefixes as packed keys, when the reader made them so."""
        return self.prefixes if isinstance(self.prefixes, Prefixes) else None

    def route_intents(self) -> list[Intent]:
        """The intent of each route (shared objects; the list is made once, not to be
        changed)."""
        if self._route_intents is None:
            self._route_intents = list(map(self.intents.__getitem__, self.index))
        return self._route_intents

    def node(self) -> str | None:
        """The one node every route is for, if there is one."""
        return self._one_node

    @cached_property
    def _one_node(self) -> str | None:
        # Found once: the plan, the checks, the store and the sessions each ask.
        nodes = self.nodes
        return nodes[0] if nodes and nodes.count(nodes[0]) == len(nodes) else None


@dataclass
class Change:
    """One committed change of intent, as the store records it and watchers see it."""

    revision: int = 0
    deleted: list[RouteKey] = field(default_factory=list)
    # Id allocations made by this change, and ids freed because nothing uses them anymore.
    new_groups: dict[GroupKey, int] = field(default_factory=dict)
    freed_groups: list[GroupKey] = field(default_factory=list)
    new_adjacencies: dict[AdjacencyKey, int] = field(default_factory=dict)
    freed_adjacencies: list[AdjacencyKey] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)  # registered or replaced
    removed_nodes: list[str] = field(default_factory=list)
    drained: list[tuple[str, AdjacencyKey]] = field(default_factory=list)
    restored: list[tuple[str, AdjacencyKey]] = field(default_factory=list)
    # Worked out while planning, so that nothing after the commit goes over every route
    # again: `set` in columns when it came as a batch, and what it does to the counts.
    batch: RouteBatch | None = None
    routes_added: tuple[int, int] = (0, 0)  # routes, of which IPv6 (negative: removed)
    group_refs: Counter[GroupKey] = field(default_factory=Counter)  # routes per group, delta
    _set: dict[RouteKey, Intent] | None = field(default=None, repr=False)

    @property
    def set(self) -> dict[RouteKey, Intent]:
        """The routes set, by key. Of a batch, made on first use: a batch's commit and its
        way to the nodes go by its columns; watchers and the stores' slow paths use this."""
        if self._set is None:
            batch = self.batch
            self._set = (
                {} if batch is None else dict(zip(batch.keys(), batch.route_intents(), strict=True))
            )
        return self._set

    @set.setter
    def set(self, routes: dict[RouteKey, Intent]) -> None:
        self._set = routes


# --- text forms -------------------------------------------------------------------------


def prefix_sort_key(prefix: str, _pton: Callable[[int, str], bytes] = socket.inet_pton) -> bytes:
    """Orders prefixes by family, address, then length; used as the store's key. `prefix`
    is canonical text (checked where it came in)."""
    address, _, length = prefix.partition("/")
    packed = _pton(socket.AF_INET6 if ":" in address else socket.AF_INET, address)
    return bytes((len(packed),)) + packed + bytes((int(length),))


def prefix_of_sort_key(sort_key: object) -> str | None:
    """The canonical text of the prefix a stored sort key stands for (family, address,
    length: see prefix_sort_key); None if it stands for none (host bits set, too long)."""
    if not isinstance(sort_key, bytes) or len(sort_key) not in (6, 18):
        return None
    bits = 8 * (len(sort_key) - 2)
    length = sort_key[-1]
    if sort_key[0] != len(sort_key) - 2 or length > bits:
        return None
    address = sort_key[1:-1]
    if int.from_bytes(address) & ((1 << (bits - length)) - 1):
        return None
    return prefix_text(address, length)


def group_text(group: GroupKey) -> str:
    return ";".join(f"{gw},{port},{vlan},{weight}" for (gw, port, vlan), weight in group)


def group_from_text(text: str) -> GroupKey:
    out = []
    for item in text.split(";"):
        gw, port, vlan, weight = item.rsplit(",", 3)
        out.append(((gw, port, int(vlan)), int(weight)))
    return tuple(out)


def adjacency_text(key: AdjacencyKey) -> str:
    return f"{key[0]},{key[1]},{key[2]}"


def adjacency_from_text(text: str) -> AdjacencyKey:
    gw, port, vlan = text.rsplit(",", 2)
    return (gw, port, int(vlan))


# --- adjacencies: by gateway address ------------------------------------------------------
# The agent resolves a gateway through a kernel neighbour entry it manages and fills both
# MACs itself (its port's, the neighbour's), so an adjacency is stated as (port, VLAN,
# gateway). Read gives back the same form plus what the agent found (state, neighbour MAC),
# which the controller does not compare: it changes with the network, not with intent. One
# written with explicit MACs (by someone else) never equals intent: a full sync replaces it.


def adjacency_of(adjacency: int, key: AdjacencyKey) -> Adjacency:
    """Adjacency `adjacency` to the next hop `key`, as the controller writes it."""
    gateway, port, vlan = key
    return Adjacency(adjacency, port, vlan, "", "", gateway)


# --- a node's FIB --------------------------------------------------------------------------

MembersOf = Callable[[int], Members]  # a group's members, by group id
AdjacencyById = Callable[[int], Adjacency]


RefCounts = tuple[list[tuple[int, int]], list[tuple[int, int]]]  # (added, dropped) per group


class NodeFib:
    """A FIB in the agent's terms (ids), with reference counts so that groups and adjacencies
    live exactly as long as something uses them. The reconciler keeps two per node: what the
    node should hold and what it is known to hold. Changes mark keys dirty for the next diff.

    The routes are a `RouteTable` (corridor-intent's `table`, in Rust): a full table is a
    million of them per FIB, and as dicts of `Route` tuples a table coming in cost a tuple
    and four dict passes per route between refresh, diff and record."""

    def __init__(self) -> None:
        self.routes = RouteTable()
        self.groups: dict[int, Members] = {}
        self.adjacencies: dict[int, Adjacency] = {}
        self.group_refs: Counter[int] = Counter()
        self.adjacency_refs: Counter[int] = Counter()
        # Groups and adjacencies changed since the last diff (the routes keep their own).
        self.dirty_groups: set[int] = set()
        self.dirty_adjacencies: set[int] = set()

    @property
    def v6_routes(self) -> int:
        return int(self.routes.v6)

    def sizes(self) -> tuple[int, int, int, int]:
        v6 = self.v6_routes
        return (len(self.routes) - v6, v6, len(self.groups), len(self.adjacencies))

    def route(self, prefix: str) -> Route | None:
        made = self.routes.get(prefix)
        return None if made is None else _new_route((prefix, RouteKind(made[0]), made[1]))

    def route_list(self) -> list[Route]:
        """Every route, in no order (a slow path: a node's first read, tests)."""
        return [_new_route((p, RouteKind(k), g)) for p, k, g in self.routes.items()]

    def set_routes(
        self,
        prefixes: Sequence[str],
        entries: Sequence[Route | None],
        members: MembersOf,
        contents: AdjacencyById,
    ) -> None:
        """Sets the route to each of `prefixes` to its entry (None: removes it). For a new
        group, `members` gives its members and `contents` an adjacency by id."""
        refs = self.routes.set_entries(prefixes, list(entries))
        self._take_refs(refs, members, contents)

    def set_routes_made(
        self,
        prefixes: Sequence[str],
        index: list[int],
        made: list[tuple[int, int] | None],
        members: MembersOf,
        contents: AdjacencyById,
    ) -> None:
        """`set_routes` in columns, as a refresh has them: prefix i's route is
        made[index[i]], (kind, group id) or None. In bulk: a full table comes through here
        once per node (or update group)."""
        if len(made) == 1 and made[0] is not None:
            refs = self.routes.set_uniform(prefixes, *made[0])
        else:
            refs = self.routes.set_indexed(prefixes, index, made)
        self._take_refs(refs, members, contents)

    def _take_refs(self, refs: RefCounts, members: MembersOf, contents: AdjacencyById) -> None:
        added, dropped = refs
        # Groups taken before groups let go: one that only changes hands stays.
        for group, count in added:
            self._ref_group(group, count, members, contents)
        for group, count in dropped:
            self._unref_group(group, count)

    def set_group_members(self, group: int, members: Members, contents: AdjacencyById) -> None:
        """Re-points a group in use (a drain or restore)."""
        old = self.groups[group]
        if old == members:
            return
        for a, _ in members:
            self._ref_adjacency(a, contents)
        for a, _ in old:
            self._unref_adjacency(a)
        self.groups[group] = members
        self.dirty_groups.add(group)

    def _ref_group(
        self, group: int, count: int, members_of: MembersOf, contents: AdjacencyById
    ) -> None:
        if self.group_refs[group] == 0:
            members = members_of(group)
            self.groups[group] = members
            self.dirty_groups.add(group)
            for a, _ in members:
                self._ref_adjacency(a, contents)
        self.group_refs[group] += count

    def _unref_group(self, group: int, count: int) -> None:
        self.group_refs[group] -= count
        if self.group_refs[group] == 0:
            del self.group_refs[group]
            for a, _ in self.groups.pop(group):
                self._unref_adjacency(a)
            self.dirty_groups.add(group)

    def _ref_adjacency(self, adjacency: int, contents: AdjacencyById) -> None:
        if self.adjacency_refs[adjacency] == 0:
            self.adjacencies[adjacency] = contents(adjacency)
            self.dirty_adjacencies.add(adjacency)
        self.adjacency_refs[adjacency] += 1

    def _unref_adjacency(self, adjacency: int) -> None:
        self.adjacency_refs[adjacency] -= 1
        if self.adjacency_refs[adjacency] == 0:
            del self.adjacency_refs[adjacency]
            del self.adjacencies[adjacency]
            self.dirty_adjacencies.add(adjacency)

    def clone(self) -> NodeFib:
        """An independent copy, references and dirty keys included (a node leaving its
        update group takes copies of the group's FIBs)."""
        copy = NodeFib()
        copy.routes = self.routes.copy()
        copy.groups = dict(self.groups)
        copy.adjacencies = dict(self.adjacencies)
        copy.group_refs = Counter(self.group_refs)
        copy.adjacency_refs = Counter(self.adjacency_refs)
        copy.dirty_groups = set(self.dirty_groups)
        copy.dirty_adjacencies = set(self.dirty_adjacencies)
        return copy

    def dirty(self) -> bool:
        return bool(self.routes.has_dirty() or self.dirty_groups or self.dirty_adjacencies)

    def take_dirty(self) -> tuple[DirtyRoutes, set[int], set[int]]:
        dirty = (self.routes.take_dirty(), self.dirty_groups, self.dirty_adjacencies)
        self.dirty_groups, self.dirty_adjacencies = set(), set()
        return dirty

    def mark_dirty(self, routes: DirtyRoutes, groups: set[int], adjacencies: set[int]) -> None:
        """Marks again what `take_dirty` gave and was not written; what was marked since
        is newer and stays."""
        self.routes.mark_dirty(routes)
        self.dirty_groups |= groups
        self.dirty_adjacencies |= adjacencies

    @classmethod
    def installed(
        cls,
        adjacencies: Iterable[Adjacency],
        groups: Iterable[NextHopGroup],
        routes: Iterable[Route],
    ) -> NodeFib:
        """The FIB a node reported, as it is (references counted, nothing dirty)."""
        fib = cls()
        fib.adjacencies = {a.id: a for a in adjacencies}
        fib.groups = {g.id: g.members for g in groups}
        routes = list(routes)
        added, _ = fib.routes.set_entries([r.prefix for r in routes], routes)
        fib.routes.take_dirty()
        for members in fib.groups.values():
            for a, _ in members:
                fib.adjacency_refs[a] += 1
        fib.group_refs.update(dict(added))
        return fib


class Ops:
    """Operations from `diff`, in the order that keeps every prefix of the sequence valid:
    adjacencies set, groups set (`before`), routes set then deleted (`routes`, from the
    route table's diff, written and recorded from its keys), groups deleted, adjacencies
    deleted (`after`). A slice is an Ops of the operations in it, as a list's would be."""

    __slots__ = ("after", "before", "routes")

    def __init__(self, before: list[FibOperation], routes: RouteOps, after: list[FibOperation]):
        self.before = before
        self.routes = routes
        self.after = after

    def __len__(self) -> int:
        return len(self.before) + len(self.routes) + len(self.after)

    def __bool__(self) -> bool:
        return len(self) > 0

    def __getitem__(self, part: slice) -> Ops:
        start, stop, step = part.indices(len(self))
        assert step == 1, "slices of step 1"
        b, r = len(self.before), len(self.routes)

        def within(first: int, size: int) -> slice:
            return slice(min(max(start - first, 0), size), min(max(stop - first, 0), size))

        return Ops(
            self.before[within(0, b)],
            self.routes[within(b, r)],
            self.after[within(b + r, len(self.after))],
        )

    def operations(self) -> list[FibOperation | RouteOps]:
        """For write_request_bytes: the routes as one `RouteOps` among the rest."""
        return [*self.before, self.routes, *self.after]

    def tuples(self) -> list[FibOperation]:
        """Every operation as corridor.common.fib values (tests, messages)."""
        routes = [
            _new_route((t[0], RouteKind(t[1]), t[2])) if len(t) == 3 else _delete_route(t)
            for t in self.routes.tuples()
        ]
        return [*self.before, *routes, *self.after]


def diff(
    have: NodeFib,
    want: NodeFib,
    routes: DirtyRoutes | None = None,
    groups: Iterable[int] | None = None,
    adjacencies: Iterable[int] | None = None,
) -> Ops:
    """The operations that take `have` to `want` for the given keys (None: every key).
    `routes` is `want`'s dirty routes (take_dirty): what each prefix is in `want` is read
    from there."""
    if groups is None:
        groups = have.groups.keys() | want.groups.keys()
    if adjacencies is None:
        adjacencies = have.adjacencies.keys() | want.adjacencies.keys()
    adjacency_ids = sorted(adjacencies)
    group_ids = sorted(groups)
    before: list[FibOperation] = []
    for a in adjacency_ids:
        content = want.adjacencies.get(a)
        if content is not None and have.adjacencies.get(a) != content:
            before.append(content)
    for g in group_ids:
        members = want.groups.get(g)
        if members is not None and have.groups.get(g) != members:
            before.append(NextHopGroup(g, members))
    after: list[FibOperation] = []
    for g in group_ids:
        if g not in want.groups and g in have.groups:
            after.append(DeleteGroup(g))
    for a in adjacency_ids:
        if a not in want.adjacencies and a in have.adjacencies:
            after.append(DeleteAdjacency(a))
    return Ops(before, want.routes.diff(have.routes, routes), after)


def apply_operations(fib: NodeFib, ops: Ops | Sequence[FibOperation]) -> None:
    """Records in `fib` (what a node holds) operations the node acknowledged."""
    if isinstance(ops, Ops):
        _record_others(fib, ops.before)
        refs = fib.routes.apply(ops.routes)
        others: Sequence[FibOperation] = ops.after
    else:
        routes = [op for op in ops if type(op) is Route or type(op) is DeleteRoute]
        refs = fib.routes.apply_tuples(routes)
        others = ops
    added, dropped = refs
    group_refs = fib.group_refs
    for group, count in added:
        group_refs[group] += count
    for group, count in dropped:
        group_refs[group] -= count
    _record_others(fib, others)


def _record_others(fib: NodeFib, ops: Iterable[FibOperation]) -> None:
    """apply_operations for groups and adjacencies, one by one, in order."""
    for op in ops:
        if type(op) is NextHopGroup:
            for a, _ in fib.groups.get(op.id, ()):
                fib.adjacency_refs[a] -= 1
            fib.groups[op.id] = op.members
            for a, _ in op.members:
                fib.adjacency_refs[a] += 1
        elif type(op) is DeleteGroup:
            for a, _ in fib.groups.pop(op.id, ()):
                fib.adjacency_refs[a] -= 1
        elif type(op) is Adjacency:
            fib.adjacencies[op.id] = op
        elif type(op) is DeleteAdjacency:
            fib.adjacencies.pop(op.id, None)


def _v6_count(prefixes: Sequence[str] | Prefixes) -> int:
    """How many of `prefixes` are IPv6, counted in C (most batches of a table hold none)."""
    if isinstance(prefixes, Prefixes):
        return prefixes.v6
    if ":" not in "".join(prefixes):
        return 0
    return sum(map(contains, prefixes, repeat(":")))


_new_route: Callable[[tuple[str, RouteKind, int]], Route] = partial(tuple.__new__, Route)
_delete_route: Callable[[tuple[str]], DeleteRoute] = partial(tuple.__new__, DeleteRoute)


# --- intent --------------------------------------------------------------------------------


class UnknownNode(LookupError):
    pass


class IdsExhausted(RuntimeError):
    pass


class StoreUnavailable(RuntimeError):
    """The store could not commit a change, and nothing of it was committed: out of space
    (`full`), or unwritable (read-only, I/O error). The message names the store and cause."""

    def __init__(self, message: str, full: bool) -> None:
        super().__init__(message)
        self.full = full


class IntentState:
    """Everything intended, in memory, mirroring the store: routes by node, the ids of the
    groups and adjacencies they imply, drained next hops, registered nodes. Methods that
    change it take a Change that the store has committed.

    `bgp`, when set, holds each node's BGP routes (bgp.BgpIntent, in memory only): what a
    node should hold is the operator's routes, and BGP's for the prefixes the operator has no
    route for on that node (own or for every node): a static route beats eBGP."""

    def __init__(self, max_groups: int, max_adjacencies: int) -> None:
        self.revision = 0
        self.routes: dict[str, IntentRoutes] = {}  # node -> prefix -> intent
        self.route_total = 0  # counted as commits come (see recount), not per status call
        self.v6_routes = 0
        self.nodes: dict[str, Node] = {}
        self.group_ids: dict[GroupKey, int] = {}
        self.adjacency_ids: dict[AdjacencyKey, int] = {}
        self.group_keys: dict[int, GroupKey] = {}
        self.adjacency_keys: dict[int, AdjacencyKey] = {}
        self.group_refs: Counter[GroupKey] = Counter()  # routes using each group
        self.drained: set[tuple[str, AdjacencyKey]] = set()
        self.max_groups = max_groups
        self.max_adjacencies = max_adjacencies
        self.bgp: BgpIntent | None = None

    # -- reading

    def route_count(self) -> int:
        return self.route_total

    def recount(self) -> None:
        """Counts the routes afresh, after `routes` was filled from the store."""
        self.route_total = sum(len(r) for r in self.routes.values())
        self.v6_routes = sum(r.v6 for r in self.routes.values())

    def sizes(self) -> tuple[int, int, int, int]:
        v6 = self.v6_routes
        return (self.route_total - v6, v6, len(self.group_ids), len(self.adjacency_ids))

    def effective(self, node: str, prefix: str) -> Intent | None:
        """The intent for `prefix` on `node`: its own route, else the route for all nodes."""
        own = self.routes.get(node)
        intent: Intent | None
        if own is not None:
            intent = own.get(prefix)
            if intent is not None:
                return intent
        common = self.routes.get(ALL_NODES)
        intent = None if common is None else common.get(prefix)
        if intent is None and self.bgp is not None:
            intent = self.bgp.table(node).get(prefix)
        return intent

    def operators(self, node: str, prefix: str) -> bool:
        """Whether the operator has a route for `prefix` on `node` (own or for every node)."""
        return prefix in self.routes.get(node, _NONE) or prefix in self.routes.get(ALL_NODES, _NONE)

    def has_own_intent(self, node: str) -> bool:
        """Whether `node` should hold anything but the routes for every node as every node
        holds them: routes of its own (the operator's or BGP's), or a next hop drained on it
        alone."""
        return (
            bool(self.routes.get(node))
            or (self.bgp is not None and bool(self.bgp.table(node)))
            or any(n == node for n, _ in self.drained)
        )

    def prefixes_for(self, node: str) -> set[str]:
        prefixes = set(self.routes.get(node, ())) | set(self.routes.get(ALL_NODES, ()))
        if self.bgp is not None:
            prefixes.update(self.bgp.table(node))
        return prefixes

    def members(self, node: str, group: int) -> Members:
        """The group's members on `node`: drained next hops left out unless all are."""
        drained = self.drained
        if self.bgp is not None and group in self.bgp.groups:
            return self.bgp.members(
                group, lambda a: (node, a) not in drained and (ALL_NODES, a) not in drained
            )
        key = self.group_keys[group]
        ids = self.adjacency_ids
        live = [
            (ids[a], w)
            for a, w in key
            if (node, a) not in drained and (ALL_NODES, a) not in drained
        ]
        return tuple(sorted(live or [(ids[a], w) for a, w in key]))

    def adjacency(self, adjacency: int) -> Adjacency:
        return adjacency_of(adjacency, self.adjacency_keys[adjacency])

    def entries(
        self, prefixes: Sequence[str], intents: Sequence[Intent | None]
    ) -> list[Route | None]:
        """The route each prefix's intent (None: no route) makes on a node, in bulk: the
        kind and group of each distinct intent are worked out once."""
        ids = list(map(id, intents))
        group_ids = self.group_ids
        made: dict[int, tuple[RouteKind, int] | None] = {
            i: None if it is None else (it.kind, 0 if it.group is None else group_ids[it.group])
            for i, it in dict(zip(ids, intents, strict=True)).items()
        }
        if len(made) == 1:
            (only,) = made.values()
            if only is None:
                return [None] * len(prefixes)
            kind, group = only
            fields = zip(prefixes, repeat(kind), repeat(group), strict=False)
            return list(map(_new_route, fields))
        made_of = list(map(made.__getitem__, ids))
        return [
            None if f is None else _new_route((p, *f))
            for p, f in zip(prefixes, made_of, strict=True)
        ]

    def _made(
        self, intents: Sequence[Intent | None]
    ) -> tuple[list[int], list[tuple[int, int] | None]]:
        """The route each intent (None: no route) makes on a node, in columns: each
        distinct intent's (kind, group id) once, and which one each of `intents` is."""
        ids = list(map(id, intents))
        distinct = dict(zip(ids, intents, strict=True))
        made = list(map(self._route_of, distinct.values()))
        if len(distinct) == 1:
            return [0] * len(ids), made
        position = {i: n for n, i in enumerate(distinct)}
        return list(map(position.__getitem__, ids)), made

    def _route_of(self, intent: Intent | None) -> tuple[int, int] | None:
        """(kind, group id) of the route `intent` makes on a node; None for no route."""
        if intent is None:
            return None
        return (int(intent.kind), 0 if intent.group is None else self.group_ids[intent.group])

    def desired(self, node: str) -> NodeFib:
        """The whole FIB `node` should hold."""
        fib = NodeFib()
        self.refresh(fib, node, list(self.prefixes_for(node)))
        return fib

    def refresh(
        self,
        fib: NodeFib,
        node: str,
        prefixes: Iterable[str],
        known: BatchIntents | None = None,
    ) -> None:
        """Brings `fib` (what `node` should hold) up to date for `prefixes`. `known` is
        (node, batch) of a batch just committed whose prefixes these are: when `node` is its
        node, what each prefix is on `node` is the batch's intent, taken from it rather than
        looked up (its own routes beat the routes for every node, and BGP's), in the
        batch's columns as they are."""
        # A batch's Prefixes as they are: the route tables read their keys whole.
        seq = prefixes if isinstance(prefixes, Prefixes) else list(prefixes)

        def members(g: int) -> Members:
            return self.members(node, g)

        bgp = None if self.bgp is None else self.bgp.table(node)
        batch = known[1] if known is not None and known[0] == node else None
        if batch is not None and len(batch) == len(seq):
            if not bgp:
                made = list(map(self._route_of, batch.intents))
                fib.set_routes_made(seq, batch.index, made, members, self.adjacency)
                return
            intents: Sequence[Intent | None] = batch.route_intents()
        else:
            intents = self._intents(node, seq)
        if not bgp:
            index, made = self._made(intents)
            fib.set_routes_made(seq, index, made, members, self.adjacency)
            return
        entries = self.entries(seq, intents)
        # BGP's routes where the operator has none, with BGP's group ids.
        group_ids = self.bgp.group_ids  # type: ignore[union-attr]
        for i, entry in enumerate(entries):
            if entry is None:
                b = bgp.get(seq[i])
                if b is not None:
                    group = 0 if b.group is None else group_ids[b.group]
                    entries[i] = _new_route((seq[i], b.kind, group))
        fib.set_routes(seq, entries, members, self.adjacency)

    def _intents(self, node: str, prefixes: Sequence[str]) -> list[Intent | None]:
        """The operator's intent for each of `prefixes` on `node` (None: none)."""
        own = self.routes.get(node)
        common = self.routes.get(ALL_NODES)
        if own and common and own is not common:
            mine, theirs = own.get_many(prefixes), common.get_many(prefixes)
            return [m or t for m, t in zip(mine, theirs, strict=True)]
        if own or common:
            return (own or common).get_many(prefixes)  # type: ignore[union-attr]
        return [None] * len(prefixes)

    def refresh_groups(self, fib: NodeFib, node: str) -> None:
        """Re-derives the members of every group `fib` uses (after a drain or restore)."""
        for g in list(fib.groups):
            fib.set_group_members(g, self.members(node, g), self.adjacency)

    # -- planning changes (nothing changes until the store has committed)

    def plan_apply(self, batch: RouteBatch) -> Change:
        change = Change(revision=self.revision + 1, batch=batch)  # `set` made when asked
        node = batch.node()
        if node is not None:
            own = self.routes.get(node)
            if own and own.any_in(batch.prefixes):
                olds = own.get_many(batch.prefixes)
            else:  # all new (a table coming in)
                olds = []
        else:
            routes = self.routes
            olds = [
                routes.get(n, _NONE).get(p)
                for n, p in zip(batch.nodes, batch.prefixes, strict=True)
            ]
        refs: Counter[GroupKey] = Counter()
        counts = {0: len(batch)} if len(batch.intents) == 1 else Counter(batch.index)
        for i, count in counts.items():
            group = batch.intents[i].group
            if group is not None:
                refs[group] += count
        replaced = [o for o in olds if o is not None]
        refs.subtract(o.group for o in replaced if o.group is not None)
        if replaced:
            v6 = sum(1 for p, o in zip(batch.prefixes, olds, strict=True) if o is None and ":" in p)
        else:
            v6 = _v6_count(batch.prefixes)
        change.routes_added = (len(batch) - len(replaced), v6)
        self._plan_ids(change, refs)
        return change

    def plan_delete(self, keys: list[RouteKey]) -> Change:
        change = Change(revision=self.revision + 1)
        refs: Counter[GroupKey] = Counter()
        v6 = 0
        seen: set[RouteKey] = set()
        for node, prefix in keys:
            old = self.routes.get(node, _NONE).get(prefix)
            if old is None or (node, prefix) in seen:  # a key named twice is deleted once
                continue
            seen.add((node, prefix))
            change.deleted.append((node, prefix))
            v6 += ":" in prefix
            if old.group is not None:
                refs[old.group] -= 1
        change.routes_added = (-len(change.deleted), -v6)
        self._plan_ids(change, refs)
        return change

    def _plan_ids(self, change: Change, refs: Counter[GroupKey]) -> None:
        change.group_refs = Counter({g: d for g, d in refs.items() if d})
        free_groups = _free_ids(self.group_keys, self.max_groups)
        free_adjacencies = _free_ids(self.adjacency_keys, self.max_adjacencies)
        adjacency_refs: Counter[AdjacencyKey] = Counter()
        for group, delta in refs.items():
            before = self.group_refs.get(group, 0)
            after = before + delta
            if before == 0 and after > 0:
                try:
                    change.new_groups[group] = next(free_groups)
                except StopIteration:
                    raise IdsExhausted(
                        f"the batch needs more than the {self.max_groups} next-hop groups the "
                        "controller is configured for (routes with distinct next-hop sets)"
                    ) from None
                for a, _ in group:
                    adjacency_refs[a] += 1
            elif before > 0 and after == 0:
                change.freed_groups.append(group)
                for a, _ in group:
                    adjacency_refs[a] -= 1
        users = self._adjacency_users()
        for adjacency, delta in adjacency_refs.items():
            before = users.get(adjacency, 0)
            if before == 0 and delta > 0 and adjacency not in change.new_adjacencies:
                try:
                    change.new_adjacencies[adjacency] = next(free_adjacencies)
                except StopIteration:
                    raise IdsExhausted(
                        f"the batch needs more than the {self.max_adjacencies} adjacencies "
                        "the controller is configured for (distinct gateway, port, VLAN)"
                    ) from None
            elif before > 0 and before + delta == 0:
                change.freed_adjacencies.append(adjacency)

    def _adjacency_users(self) -> Counter[AdjacencyKey]:
        users: Counter[AdjacencyKey] = Counter()
        for group in self.group_ids:
            for a, _ in group:
                users[a] += 1
        return users

    # -- committing

    def commit(self, change: Change) -> None:
        """Takes in a change the store has committed."""
        self.revision = change.revision
        for next_hop, id_ in change.new_adjacencies.items():
            self.adjacency_ids[next_hop] = id_
            self.adjacency_keys[id_] = next_hop
        for group, id_ in change.new_groups.items():
            self.group_ids[group] = id_
            self.group_keys[id_] = group
        batch = change.batch
        node = None if batch is None else batch.node()
        if batch is not None and node is not None:
            self.node_routes(node).set_many(batch.prefixes, batch.index, batch.intents)
        else:
            for (n, prefix), intent in change.set.items():
                self.node_routes(n)[prefix] = intent
        for n, prefix in change.deleted:
            self.routes.get(n, _NONE).pop(prefix, None)
        self.route_total += change.routes_added[0]
        self.v6_routes += change.routes_added[1]
        for group_key, delta in change.group_refs.items():
            self.group_refs[group_key] += delta
        # Freed ids stay mapped until every node has been refreshed (see forget_freed).
        for registered in change.nodes:
            self.nodes[registered.name] = registered
        for name in change.removed_nodes:
            self.nodes.pop(name, None)
        self.drained.update(change.drained)
        self.drained.difference_update(change.restored)

    def node_routes(self, node: str) -> IntentRoutes:
        """The routes of `node` (ALL_NODES: for every node), made empty if it has none."""
        routes = self.routes.get(node)
        if routes is None:
            routes = self.routes[node] = IntentRoutes()
        return routes

    def forget_freed(self, change: Change) -> None:
        for group in change.freed_groups:
            if self.group_refs.get(group, 0) == 0:
                self.group_refs.pop(group, None)
                self.group_keys.pop(self.group_ids.pop(group), None)
        for next_hop in change.freed_adjacencies:
            if next_hop in self.adjacency_ids:
                self.adjacency_keys.pop(self.adjacency_ids.pop(next_hop), None)


_NONE: dict[str, Intent] = {}  # an empty node, for lookups


def _free_ids(used: dict[int, GroupKey] | dict[int, AdjacencyKey], limit: int) -> Iterator[int]:
    """The unused ids from 1 to `limit`, lowest first (the agent's tables are dense)."""
    return (i for i in range(1, limit + 1) if i not in used)


# --- validation of what operators send (already parsed by the API) ---------------------------


def check_node_name(name: str) -> str | None:
    if not NODE_NAME.fullmatch(name):
        return f"{echo(name)} is not a node name: 1 to 64 of letters, digits, '.', '_' and '-'"
    return None


def check_node_address(address: str) -> str | None:
    """A node's address as a configuration file may give it (a relative socket path is taken
    from the file's directory); the API takes absolute paths only."""
    return endpoint_problem(address, relative=True)
