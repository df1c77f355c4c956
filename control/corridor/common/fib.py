"""FIB operations: the one form in which adjacencies, next-hop groups and routes travel, from
an API through the domain to the engine in the agent, and from intent to the agents in the
controller. The class is the verb; `Batch` order (adjacencies set, groups set, routes,
groups deleted, adjacencies deleted) keeps every prefix of a batch valid.

They are NamedTuples: a full table is a million of them, and a tuple is compared and hashed
in C. Loops over a whole table build them with `new_route`, which skips the Python-level
`__new__` of a NamedTuple (a third of the cost). Being tuples, two operations of different
classes with the same fields compare equal: dispatch on `type(op)`, never on equality
across classes.
"""

from __future__ import annotations

import enum
from typing import Any, NamedTuple

# The engine's own bounds (dataplane/engine/src/fib): group ids stay below its route codes,
# node indexes fit its 22-bit entries. Adjacencies have no bound there but memory, taken
# whole at start: 8 bytes each, so 16 M is 128 MB. A controller hands out no more ids than
# an agent can hold.
GROUPS_MAX = (1 << 22) - 3
NODES_MAX = 1 << 22
ADJACENCIES_MAX = 1 << 24
VLAN_MAX = 4094  # 802.1Q: 0 and 4095 are reserved; 0 here means untagged
GROUP_MEMBERS_MAX = 256  # the engine's largest group
WEIGHT_MAX = 65_535  # the engine's largest member weight
# An adjacency on no port: the engine drops what would leave by it, counted unknown_egress.
NO_PORT = ""


class RouteKind(enum.IntEnum):
    """The values are those of corridor.v1.RouteKind."""

    FORWARD = 1
    BLACKHOLE = 2
    UNREACHABLE = 3
    LOCAL = 4


Members = tuple[tuple[int, int], ...]  # (adjacency id, weight), as a group holds them


class Adjacency(NamedTuple):
    """Egress by `port` (a configured port's name) and `vlan` (0: untagged), either with both
    MACs ("aa:bb:cc:dd:ee:ff") or with the `gateway` whose MACs the agent resolves ("")."""

    id: int
    port: str
    vlan: int
    src_mac: str = ""
    dst_mac: str = ""
    gateway: str | None = None  # the next hop's IP address text


class NextHopGroup(NamedTuple):
    id: int
    members: Members


class Route(NamedTuple):
    prefix: str  # canonical text (prefix.prefix_text): "198.18.0.0/15", "2001:db8::/32"
    kind: RouteKind
    group: int = 0  # the next-hop group of a FORWARD route


def new_route(fields: tuple[str, RouteKind, int], _new: Any = tuple.__new__) -> Route:
    """Route(*fields), built the cheapest way; bind it to a local in a loop."""
    route: Route = _new(Route, fields)
    return route


class DeleteAdjacency(NamedTuple):
    id: int


class DeleteGroup(NamedTuple):
    id: int


class DeleteRoute(NamedTuple):
    prefix: str


class Member(NamedTuple):
    """An exchange member's router: its MAC ("aa:bb:cc:dd:ee:ff") on `port` (a configured
    port's name) and `vlan` (0: untagged). `name` is the controller's, for labels only.
    `sources`: its source filter (BCP 38), canonical prefix texts, sorted; None for none."""

    id: int  # 0 to MEMBERS_MAX - 1, the engine's counter row
    port: str
    vlan: int
    mac: str
    name: str = ""
    sources: tuple[str, ...] | None = None


class DeleteMember(NamedTuple):
    id: int


class GleanRoute(NamedTuple):
    """An attached subnet whose hosts the agent resolves on demand (docs/engine.md): the
    agent's own, installed from its ports' addresses; never written by or shown to writers."""

    prefix: str


# The engine's member rows (dataplane/engine/src/fib/members.rs MAX_MEMBERS).
MEMBERS_MAX = 1024
# Prefixes of one member's source filter (members.rs MAX_MEMBER_SOURCES).
MEMBER_SOURCES_MAX = 4096

FibOperation = (
    Adjacency | NextHopGroup | Route | DeleteAdjacency | DeleteGroup | DeleteRoute
    | Member | DeleteMember | GleanRoute
)  # fmt: skip


def vlan_problem(vlan: int) -> str | None:
    """What is wrong with `vlan` as an 802.1Q VLAN id or 0 (untagged); None if nothing."""
    if 0 <= vlan <= VLAN_MAX:
        return None
    return f"{vlan} is not a VLAN: 0 (untagged) or 1 to {VLAN_MAX}"


def members_problem(group: int, members: Members) -> str | None:
    """What the engine would refuse in a group's members (worded as it words it); None if
    nothing. For a caller that hands the engine other members than those written."""
    if len(members) > GROUP_MEMBERS_MAX:
        return f"group {group}: {len(members)} members exceed the limit of {GROUP_MEMBERS_MAX}"
    for adjacency, weight in members:
        if not 1 <= weight <= WEIGHT_MAX:
            return (
                f"group {group}: member adjacency {adjacency} has weight {weight}; "
                f"weights are 1 to {WEIGHT_MAX}"
            )
    if len({adjacency for adjacency, _ in members}) != len(members):
        return f"group {group}: an adjacency is listed twice (give it a larger weight instead)"
    return None
