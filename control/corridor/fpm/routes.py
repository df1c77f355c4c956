"""What FRR's zebra tells a data plane over FPM, as plain values: route updates and next-hop
object updates. No netlink and no asyncio here; the decoder produces these and the listener
hands them to its sink."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

# A route may carry at most this many next hops (inline or through a group): far beyond any
# ECMP set an exchange builds, and it keeps one message's work bounded. A larger set is
# refused and counted, never truncated (a truncated set would move traffic silently).
MAX_NEXT_HOPS = 512


class Operation(enum.Enum):
    """ADD installs or replaces (zebra sends RTM_NEWROUTE with NLM_F_REPLACE); DELETE removes."""

    ADD = "add"
    DELETE = "delete"


class RouteType(enum.Enum):
    """The route types a forwarding plane acts on (rtm_type, RFC 3549 section 3.1.1)."""

    UNICAST = "unicast"
    BLACKHOLE = "blackhole"  # drop silently
    UNREACHABLE = "unreachable"  # drop, ICMP destination unreachable
    PROHIBIT = "prohibit"  # drop, ICMP administratively prohibited


@dataclass(frozen=True, slots=True)
class NextHop:
    """One path: a gateway (None for an on-link route) out of the interface `ifindex` (the
    kernel ifindex in zebra's namespace; 0 when zebra gave none), with a weight of 1..256."""

    gateway: IPAddress | None
    ifindex: int
    weight: int = 1


@dataclass(frozen=True, slots=True)
class RouteUpdate:
    """A route added (or replaced) or deleted in `table`.

    `next_hops` are always concrete: when zebra referred to a next-hop object (RTA_NH_ID,
    `fpm use-next-hop-groups`), the listener has already resolved it and keeps its id in
    `nexthop_id`. A unicast ADD has at least one next hop; other types have none. A DELETE
    carries whatever next hops zebra sent with it, often none, and is UNICAST when zebra
    gave no type (it deletes with RTN_UNSPEC)."""

    op: Operation
    prefix: str  # canonical text (corridor.common.addresses.prefix_text): the controller's key
    type: RouteType
    table: int
    protocol: int
    next_hops: tuple[NextHop, ...] = ()
    nexthop_id: int | None = None

    @property
    def family(self) -> int:
        """4 or 6; the next hops' family may differ (an IPv4 route via IPv6, RFC 8950)."""
        return 6 if ":" in self.prefix else 4


@dataclass(frozen=True, slots=True)
class GroupMember:
    """A member of a next-hop group: the id of a single next-hop object and its weight."""

    id: int
    weight: int = 1


@dataclass(frozen=True, slots=True)
class NextHopUpdate:
    """A next-hop object (RTM_NEWNEXTHOP / RTM_DELNEXTHOP) added, replaced or deleted.

    Exactly one form: a single next hop (`gateway` and/or `ifindex`), a blackhole, or a
    group of other objects' ids (`group`). A DELETE carries only the id."""

    op: Operation
    id: int
    gateway: IPAddress | None = None
    ifindex: int = 0
    blackhole: bool = False
    group: tuple[GroupMember, ...] = ()


Update = RouteUpdate | NextHopUpdate
