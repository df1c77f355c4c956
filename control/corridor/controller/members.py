"""Exchange members as the controller keeps them: a name, the node, port, VLAN and MAC of
the member's router, and the engine's counter row (`id`) the controller gave it. Also the
5-minute samples of their counters and the 95th-percentile billing computed from them.
No gRPC here (api.py translates) and no storage (the store keeps what this defines).

Ids: the engine counts by id and keeps a row's counters while it runs, so a new member takes
the next free id after the last one handed out (wrapping), not the lowest free: a deleted
member's counts do not become a new member's while ids remain.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from corridor.common.addresses import prefix_order
from corridor.common.fib import MEMBER_SOURCES_MAX, MEMBERS_MAX, vlan_problem

NAME_MAX = 64
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
# The usual billing interval: one sample of every member's counters per 5 minutes.
SAMPLE_SECONDS = 300.0


class MemberError(ValueError):
    """A member definition or request that cannot be taken; the message says why."""


class NoBgpFeed(MemberError):
    """A filter from BGP asked for a member whose node no zebra feeds."""


@dataclass(frozen=True, slots=True)
class MemberRecord:
    name: str
    node: str
    port: str
    vlan: int
    mac: str  # "aa:bb:cc:dd:ee:ff", lower case
    id: int  # the engine's counter row, 0 to MEMBERS_MAX - 1
    # Source filter (BCP 38): the prefixes its frames may come from (canonical text,
    # IPv4 first, sorted); None for no filter. With bgp_next_hops, the static part: the
    # filter in force is these and the prefixes derived from BGP (controller/bgp_filters.py).
    sources: tuple[str, ...] | None = None
    # Derive the filter from BGP: the member router's next-hop addresses (canonical text);
    # None when the filter is not derived.
    bgp_next_hops: tuple[str, ...] | None = None
    # The derived prefixes as last saved, so that a restarted controller starts from them;
    # None: more than BGP_SAVED_MAX were attributed (the member was over the limit).
    bgp_sources: tuple[str, ...] | None = ()


@dataclass(frozen=True, slots=True)
class Sample:
    """A member's counters as the agent reported them at `time` (Unix seconds). They are
    the agent's: they restart from 0 when the agent does."""

    member: str
    time: float
    rx_bytes: int
    tx_bytes: int
    rx_packets: int
    tx_packets: int


def check_member(name: str, node: str, port: str, vlan: int, mac: str) -> str:
    """The MAC in canonical form, or MemberError naming the field."""
    if not name or len(name) > NAME_MAX or not _NAME.match(name):
        raise MemberError(
            f"member name {name!r}: 1 to {NAME_MAX} letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    if not node:
        raise MemberError(f"member {name}: node is empty; name the node the port is on")
    if not port:
        raise MemberError(f"member {name}: port is empty; name the member's port")
    if problem := vlan_problem(vlan):
        raise MemberError(f"member {name}: vlan {problem}")
    canonical = mac.strip().lower().replace("-", ":")
    if not _MAC.match(canonical):
        raise MemberError(f"member {name}: MAC {mac!r} is not six hex bytes like 02:00:5e:00:00:01")
    octets = bytes.fromhex(canonical.replace(":", ""))
    if not any(octets) or octets[0] & 1:
        raise MemberError(
            f"member {name}: MAC {canonical} is not a unicast station address; "
            "give the member router's MAC"
        )
    return canonical


def check_sources(name: str, prefixes: Iterable[str]) -> tuple[str, ...]:
    """A source filter from prefix texts a person or a store gave: canonical, sorted, each
    once; MemberError naming the first bad one (host bits set included), or too many."""
    out = set()
    for text in prefixes:
        try:
            network = ipaddress.ip_network(text)
        except (ValueError, TypeError) as e:
            raise MemberError(f"member {name}: source {text!r}: {e}") from None
        out.add(str(network))
    if len(out) > MEMBER_SOURCES_MAX:
        raise MemberError(
            f"member {name}: {len(out)} source prefixes exceed the limit of {MEMBER_SOURCES_MAX}"
        )
    return tuple(sorted(out, key=prefix_order))


# At most this many next hops per member, and derived prefixes saved with a member: above
# twice the engine's limit, aggregation cannot bring a set under it often enough to try.
BGP_NEXT_HOPS_MAX = 16
BGP_SAVED_MAX = 2 * MEMBER_SOURCES_MAX


def check_next_hops(name: str, addresses: Iterable[str]) -> tuple[str, ...]:
    """The member router's next-hop addresses, canonical, sorted, each once; MemberError
    naming the first that cannot be a neighbour's unicast address, none, or too many."""
    out = set()
    for text in addresses:
        try:
            address = ipaddress.ip_address(text)
        except (ValueError, TypeError):
            raise MemberError(
                f"member {name}: next hop {text!r} is not an IPv4 or IPv6 address; give the "
                "member router's address on the peering LAN"
            ) from None
        if (
            address.is_unspecified
            or address.is_loopback
            or address.is_multicast
            or (address.version == 4 and (address.packed[0] == 0 or address.packed[0] >= 240))
            or (address.version == 6 and address.ipv4_mapped is not None)
        ):
            raise MemberError(
                f"member {name}: next hop {address} is not a unicast address a router can have"
            )
        out.add(str(address))
    if not out:
        raise MemberError(
            f"member {name}: a filter from BGP needs the member router's next-hop addresses "
            "(its addresses on the peering LAN)"
        )
    if len(out) > BGP_NEXT_HOPS_MAX:
        raise MemberError(
            f"member {name}: {len(out)} next hops exceed the limit of {BGP_NEXT_HOPS_MAX}"
        )
    return tuple(sorted(out, key=lambda a: (":" in a, ipaddress.ip_address(a).packed)))


def link_local(mac: str) -> str:
    """The EUI-64 link-local IPv6 address of a MAC (RFC 4291 appendix A): the address a
    router's kernel gives its interface by default, and the next hop of the IPv6 routes
    learnt from it on a shared LAN."""
    octets = bytearray.fromhex(mac.replace(":", ""))
    octets[0] ^= 0x02
    interface_id = bytes(octets[:3]) + b"\xff\xfe" + bytes(octets[3:])
    return str(ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + interface_id))


def sources_to_json(sources: tuple[str, ...] | None) -> str | None:
    return None if sources is None else json.dumps(list(sources))


def sources_from_json(name: str, text: str | None) -> tuple[str, ...] | None:
    """A stored filter (a JSON list, or NULL for none); MemberError if it is not one."""
    if text is None:
        return None
    value = json.loads(text)
    if not isinstance(value, list):
        raise MemberError(f"member {name}: stored sources {text!r} are not a list")
    return check_sources(name, value)


def bgp_to_json(member: MemberRecord) -> str | None:
    """A member's filter from BGP as stored (NULL when its filter is not derived)."""
    if member.bgp_next_hops is None:
        return None
    saved = None if member.bgp_sources is None else list(member.bgp_sources)
    return json.dumps({"next_hops": list(member.bgp_next_hops), "sources": saved})


def bgp_from_json(
    name: str, text: str | None
) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
    """(next hops, saved prefixes) from what `bgp_to_json` stored; MemberError if it is not
    that."""
    if text is None:
        return None, ()
    value = json.loads(text)
    if not isinstance(value, dict) or "next_hops" not in value:
        raise MemberError(f"member {name}: stored filter from BGP {text!r} is not one")
    return bgp_from_fields(name, value["next_hops"], value.get("sources"))


def bgp_from_fields(
    name: str, next_hops: object, sources: object
) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
    """Stored next hops and saved prefixes, checked; MemberError naming what is wrong."""
    if next_hops is None:
        return None, ()
    if not isinstance(next_hops, list) or not isinstance(sources, list | tuple | None):
        raise MemberError(
            f"member {name}: stored filter from BGP {next_hops!r}, {sources!r} is not lists"
        )
    hops = check_next_hops(name, next_hops)
    if sources is None:
        return hops, None
    saved = set()
    for text in sources:
        try:
            saved.add(str(ipaddress.ip_network(text)))
        except (ValueError, TypeError) as e:
            raise MemberError(f"member {name}: stored BGP prefix {text!r}: {e}") from None
    return hops, tuple(sorted(saved, key=prefix_order))


def next_id(taken: Iterable[int], last: int) -> int:
    """The first id after `last` (wrapping) that no member holds; MemberError when all are."""
    used = set(taken)
    for step in range(1, MEMBERS_MAX + 1):
        candidate = (last + step) % MEMBERS_MAX
        if candidate not in used:
            return candidate
    raise MemberError(f"every one of the engine's {MEMBERS_MAX} member ids is taken")


@dataclass(frozen=True, slots=True)
class Billing:
    """The 95th percentile of a member's 5-minute rates over a period, in bits per second."""

    intervals: int  # 5-minute rates computed
    in_bps: float  # received from the member (its rx)
    out_bps: float  # sent to the member (its tx)
    # (interval end, in bps, out bps) of every interval, for a plot.
    rates: list[tuple[float, float, float]]


def rates(samples: Sequence[Sample]) -> list[tuple[float, float, float]]:
    """(end time, in bps, out bps) between consecutive samples (sorted by time). A counter
    lower than before means the agent restarted: the interval counts what the new counter
    holds (what came since the restart), never a negative or wrapped-around spike."""
    out = []
    for a, b in itertools.pairwise(samples):
        seconds = b.time - a.time
        if seconds <= 0:
            continue
        rx = b.rx_bytes - a.rx_bytes if b.rx_bytes >= a.rx_bytes else b.rx_bytes
        tx = b.tx_bytes - a.tx_bytes if b.tx_bytes >= a.tx_bytes else b.tx_bytes
        out.append((b.time, rx * 8 / seconds, tx * 8 / seconds))
    return out


def percentile_95(values: Sequence[float]) -> float:
    """The usual burstable-billing 95th percentile: sort the rates, drop the top 5 %
    (rounded down), bill the highest left. 0 with no value."""
    if not values:
        return 0.0
    ordered = sorted(values)
    index = math.ceil(len(ordered) * 0.95) - 1
    return ordered[max(index, 0)]


# Samples are taken a few milliseconds after the clock's multiple: an interval belongs to
# the month in which it ends, less this slack (the one ending at 00:00:00.003 on the 1st is
# the last of the month before).
INTERVAL_END_SLACK = 1.0


def billing(
    samples: Sequence[Sample], start: float | None = None, end: float | None = None
) -> Billing:
    """The bill of the intervals that end within [start, end) (all without bounds): pass
    the samples from a little before `start` to a little after `end`."""
    r = rates(sorted(samples, key=lambda s: s.time))
    if start is not None and end is not None:
        r = [x for x in r if start <= x[0] - INTERVAL_END_SLACK < end]
    return Billing(len(r), percentile_95([x[1] for x in r]), percentile_95([x[2] for x in r]), r)


def month_bounds(month: str) -> tuple[float, float]:
    """`YYYY-MM` as [start, end) in Unix seconds, UTC."""
    import datetime as dt

    m = re.fullmatch(r"(\d{4})-(\d{2})", month)
    if m is None or not 1 <= int(m.group(2)) <= 12:
        raise MemberError(f"month {month!r}: give it as YYYY-MM, e.g. 2026-11")
    year, mon = int(m.group(1)), int(m.group(2))
    start = dt.datetime(year, mon, 1, tzinfo=dt.UTC)
    end = dt.datetime(year + (mon == 12), mon % 12 + 1, 1, tzinfo=dt.UTC)
    return start.timestamp(), end.timestamp()
