"""Decode one netlink message from zebra's FPM stream into a route or next-hop update.

pyroute2's message classes decode the values (`rtmsg`, and `nhmsg` declared here). Three parts
are written by hand, for these reasons:
- Speed. pyroute2 takes about 170 us per route message on the 2-core test machine (it builds
  a generic attribute tree first), so a full table (1 M routes) would take about 3 minutes
  to decode, far slower than zebra installs it into the kernel. `_fast_route` decodes the
  common case with `struct` in a few microseconds: a well-formed RTM_NEWROUTE / RTM_DELROUTE
  of IPv4 or IPv6 whose attributes are all of the kinds zebra sends for a route (destination,
  gateway, interface, metric, table, next-hop id, RTA_VIA, RTA_MULTIPATH, preferred source).
  Anything else, and anything it would refuse, goes to the pyroute2 path, which gives the
  answer or the refusal with its reason; tests/test_fpm_fast.py proves both paths equal on
  every form and on damaged messages. The listener reads runs of such frames faster still
  with the same rules in Rust (`corridor._dataplane.fpm_scan`, dataplane/intent/src/fpm.rs,
  about 1 us a route) and hands every other frame to this module; the property tests hold
  the three paths to the same output.
- pyroute2 0.9.7 has no next-hop object message (RTM_NEWNEXTHOP, RTM_DELNEXTHOP; linux
  `include/uapi/linux/nexthop.h`) and its `rtmsg` does not know RTA_NH_ID (30): both are
  declared below as pyroute2 classes with the kernel's attribute numbers.
- pyroute2 decodes attributes lazily and, on a malformed one, logs a traceback and hands back
  raw bytes instead of raising. Input from the socket is untrusted, so `_check_*` walk every
  attribute's bounds and size first: a bad message is refused whole with one counted reason,
  and pyroute2 only ever sees well-formed messages.
Netlink is in host byte order: zebra must run on a host of the listener's endianness.
"""

from __future__ import annotations

import functools
import socket
import struct
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import Any

from pyroute2.netlink import nla_base_string, nlmsg  # type: ignore[import-untyped]
from pyroute2.netlink.rtnl.rtmsg import rtmsg  # type: ignore[import-untyped]

from corridor.common.addresses import prefix_text
from corridor.fpm.routes import (
    MAX_NEXT_HOPS,
    GroupMember,
    IPAddress,
    IPNetwork,
    NextHop,
    NextHopUpdate,
    Operation,
    RouteType,
    RouteUpdate,
    Update,
)

# Message types (linux include/uapi/linux/rtnetlink.h).
RTM_NEWROUTE = 24
RTM_DELROUTE = 25
RTM_NEWNEXTHOP = 104
RTM_DELNEXTHOP = 105

# Route attributes (enum rtattr_type_t).
RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RTA_PRIORITY = 6
RTA_PREFSRC = 7
RTA_MULTIPATH = 9
RTA_TABLE = 15
RTA_VIA = 18
RTA_ENCAP = 22
RTA_NH_ID = 30

# Route types (rtm_type).
RTN_UNSPEC = 0
RTN_UNICAST = 1
RTN_BLACKHOLE = 6
RTN_UNREACHABLE = 7
RTN_PROHIBIT = 8
ROUTE_TYPES = {
    RTN_UNICAST: RouteType.UNICAST,
    RTN_BLACKHOLE: RouteType.BLACKHOLE,
    RTN_UNREACHABLE: RouteType.UNREACHABLE,
    RTN_PROHIBIT: RouteType.PROHIBIT,
}

# Next-hop object attributes (linux include/uapi/linux/nexthop.h).
NHA_ID = 1
NHA_GROUP = 2
NHA_GROUP_TYPE = 3
NHA_BLACKHOLE = 4
NHA_OIF = 5
NHA_GATEWAY = 6
NHA_ENCAP = 8

NLMSG_HEADER = struct.Struct("=IHHII")  # len, type, flags, seq, pid
NLA_HEADER = struct.Struct("=HH")  # len, type
RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, proto, scope, type
NHMSG = struct.Struct("=BBBBI")  # family, scope, protocol, resvd, flags
RTNEXTHOP = struct.Struct("=HBBi")  # len, flags, hops, ifindex
NEXTHOP_GRP = struct.Struct("=IBBH")  # id, weight - 1, resvd1, resvd2
NLA_TYPE_MASK = 0x3FFF  # strips NLA_F_NESTED and NLA_F_NET_BYTEORDER
ADDRESS_SIZES = {socket.AF_INET: 4, socket.AF_INET6: 16}


class DecodeError(Exception):
    """A message refused whole. `reason` is a stable counter name; the text says what was
    wrong and, where it helps, what would be right."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _compiled_afresh(cls: type) -> type:
    # pyroute2 caches a compiled attribute table per class in a private class attribute; a
    # subclass would otherwise inherit its parent's table and ignore its own `nla_map`.
    cls._nlmsg_base__compiled_nla = False  # type: ignore[attr-defined]
    cls._nlmsg_base__t_nla_map = None  # type: ignore[attr-defined]
    cls._nlmsg_base__r_nla_map = None  # type: ignore[attr-defined]
    return cls


@_compiled_afresh
class fpm_rtmsg(rtmsg):  # type: ignore[misc]  # pyroute2's naming
    """pyroute2's rtmsg with RTA_NH_ID, which zebra sends with `fpm use-next-hop-groups`."""

    __slots__ = ()
    nla_map = (
        *((number, name, kind) for number, (name, kind) in enumerate(rtmsg.nla_map)),
        (RTA_NH_ID, "RTA_NH_ID", "uint32"),
    )


@_compiled_afresh
class nhmsg(nlmsg):  # type: ignore[misc]
    """struct nhmsg and its attributes (linux include/uapi/linux/nexthop.h)."""

    __slots__ = ()
    prefix = "NHA_"
    fields = (
        ("family", "B"),
        ("scope", "B"),
        ("protocol", "B"),
        ("resvd", "B"),
        ("flags", "I"),
    )
    nla_map = (
        (0, "NHA_UNSPEC", "none"),
        (NHA_ID, "NHA_ID", "uint32"),
        (NHA_GROUP, "NHA_GROUP", "nexthop_grp"),
        (NHA_GROUP_TYPE, "NHA_GROUP_TYPE", "uint16"),
        (NHA_BLACKHOLE, "NHA_BLACKHOLE", "flag"),
        (NHA_OIF, "NHA_OIF", "uint32"),
        (NHA_GATEWAY, "NHA_GATEWAY", "target"),
        (7, "NHA_ENCAP_TYPE", "uint16"),
        (NHA_ENCAP, "NHA_ENCAP", "hex"),
        (9, "NHA_GROUPS", "flag"),
        (10, "NHA_MASTER", "uint32"),
        (11, "NHA_FDB", "flag"),
    )

    class nexthop_grp(nla_base_string):  # type: ignore[misc]
        """An array of struct nexthop_grp: (id, weight - 1) pairs, as (id, weight)."""

        # no __slots__ = (): pyroute2 keeps the decoded value in an attribute of its own
        # base's slots, which mypy cannot see through the untyped base

        def encode(self) -> None:
            members: list[tuple[int, int]] = self.value
            self["value"] = b"".join(
                NEXTHOP_GRP.pack(member, weight - 1, 0, 0) for member, weight in members
            )
            nla_base_string.encode(self)

        def decode(self) -> None:
            nla_base_string.decode(self)
            raw: bytes = self["value"]
            self.value = [
                (member, weight + 1) for member, weight, _, _ in NEXTHOP_GRP.iter_unpack(raw)
            ]


def message_type(data: bytes | memoryview) -> int:
    """The nlmsg_type of a message whose header the caller has bounds-checked."""
    return int(NLMSG_HEADER.unpack_from(data, 0)[1])


def decode_message(data: bytes) -> Update:
    """One whole netlink message (its nlmsg_len equal to len(data)) into an update whose
    RTA_NH_ID, if any, is not resolved yet. Raises DecodeError."""
    kind = message_type(data)
    if kind in (RTM_NEWROUTE, RTM_DELROUTE):
        fast = _fast_route(data, kind)
        if fast is not None:
            return fast
        return decode_slow(data)
    return decode_slow(data)


def decode_slow(data: bytes) -> Update:
    """`decode_message` through pyroute2 only (the reference the fast path is tested
    against)."""
    kind = message_type(data)
    if kind in (RTM_NEWROUTE, RTM_DELROUTE):
        _check_route(data)
        return _route(_decoded(fpm_rtmsg, data), kind)
    if kind in (RTM_NEWNEXTHOP, RTM_DELNEXTHOP):
        _check_nexthop(data)
        return _nexthop(_decoded(nhmsg, data), kind)
    raise DecodeError(
        "unknown_message_type", f"netlink message type {kind} is not a route or next-hop message"
    )


def _decoded(cls: type, data: bytes) -> Any:
    message = cls(data)
    try:
        message.decode()
    except Exception as error:  # pyroute2 raises whatever struct/socket raised
        raise DecodeError(
            "undecodable", f"pyroute2 could not decode {cls.__name__}: {error}"
        ) from error
    return message


# -- the common route message, by hand (see the module header) ------------------------------

_UNPACK_RTMSG = RTMSG.unpack_from
_UNPACK_NLA = NLA_HEADER.unpack_from
_UNPACK_RTNEXTHOP = RTNEXTHOP.unpack_from
_UNPACK_U32 = struct.Struct("=I").unpack_from
_UNPACK_U16 = struct.Struct("=H").unpack_from
_from_bytes = functools.partial(int.from_bytes, byteorder="big")
_BODY = NLMSG_HEADER.size + RTMSG.size


@functools.lru_cache(maxsize=4096)  # gateways: a few per peer, seen a million times
def address_from_bytes(raw: bytes) -> IPAddress:
    """A gateway from its 4 or 16 bytes (cached: a full table names a few gateways)."""
    return IPv4Address(raw) if len(raw) == 4 else IPv6Address(raw)


_FAMILY_SIZES = {socket.AF_INET: 4, socket.AF_INET6: 16}
_FOUR_BYTES = frozenset((RTA_OIF, RTA_PRIORITY, RTA_TABLE, RTA_NH_ID))


def _fast_route(data: bytes, kind: int) -> RouteUpdate | None:
    """The route message decoded with `struct`, or None when it is not the common case (the
    pyroute2 path then decides). Must return exactly what the pyroute2 path returns."""
    end = len(data)
    if end < _BODY:
        return None
    family, dst_len, _, _, table, proto, _, rtype, _ = _UNPACK_RTMSG(data, NLMSG_HEADER.size)
    size = _FAMILY_SIZES.get(family)
    if size is None or dst_len > size * 8:
        return None
    op = Operation.ADD if kind == RTM_NEWROUTE else Operation.DELETE
    route_type = ROUTE_TYPES.get(rtype)
    if route_type is None:
        if op is Operation.ADD or rtype != RTN_UNSPEC:
            return None
        route_type = RouteType.UNICAST
    found: dict[int, tuple[int, int]] = {}  # attribute -> (payload offset, length); first wins
    offset = _BODY
    while offset + 4 <= end:
        length, attribute = _UNPACK_NLA(data, offset)
        if length < 4 or offset + length > end:
            return None
        attribute &= NLA_TYPE_MASK
        payload = length - 4
        if attribute in (RTA_DST, RTA_GATEWAY, RTA_PREFSRC):
            if payload != size:
                return None
        elif attribute in _FOUR_BYTES:
            if payload != 4:
                return None
        elif attribute not in (RTA_VIA, RTA_MULTIPATH):
            return None  # RTA_ENCAP, metrics, anything rarer: pyroute2 decides
        elif attribute in found or route_type is not RouteType.UNICAST:
            # Only the first is read below, and only for unicast: the pyroute2 path checks
            # the bounds of every one, and refuses the message if any is damaged.
            return None
        if attribute not in found:
            found[attribute] = (offset + 4, payload)
        offset += (length + 3) & ~3
    if offset < end:
        return None
    where = found.get(RTA_DST)
    address = data[where[0] : where[0] + size] if where else bytes(size)
    if _from_bytes(address) & ((1 << (size * 8 - dst_len)) - 1):
        return None  # host bits set
    prefix = prefix_text(address, dst_len)
    table_attr = found.get(RTA_TABLE)
    if table_attr is not None:
        table = _UNPACK_U32(data, table_attr[0])[0]
    nh_attr = found.get(RTA_NH_ID)
    nexthop_id = None if nh_attr is None else int(_UNPACK_U32(data, nh_attr[0])[0])
    next_hops: tuple[NextHop, ...] = ()
    if route_type is RouteType.UNICAST:
        multipath = found.get(RTA_MULTIPATH)
        if multipath is not None:
            hops = _fast_multipath(data, multipath[0], multipath[0] + multipath[1], size)
            if not hops:
                return None
            next_hops = hops
        else:
            gateway, via, oif = found.get(RTA_GATEWAY), found.get(RTA_VIA), found.get(RTA_OIF)
            if gateway is not None or via is not None or oif is not None:
                hop = _fast_hop(data, gateway, via, 0 if oif is None else oif, 1, oif is not None)
                if hop is None:
                    return None
                next_hops = (hop,)
        if op is Operation.ADD and not next_hops and nexthop_id is None:
            return None
    return RouteUpdate(op, prefix, route_type, int(table), int(proto), next_hops, nexthop_id)


def _fast_hop(
    data: bytes,
    gateway: tuple[int, int] | None,
    via: tuple[int, int] | None,
    oif: int | tuple[int, int],
    weight: int,
    oif_is_attribute: bool = False,
) -> NextHop | None:
    address: IPAddress | None = None
    if via is not None:
        start, length = via
        if length < 2:
            return None
        via_size = _FAMILY_SIZES.get(_UNPACK_U16(data, start)[0])
        if via_size is None or length != 2 + via_size:
            return None
        address = address_from_bytes(data[start + 2 : start + length])
    elif gateway is not None:
        start, length = gateway
        address = address_from_bytes(data[start : start + length])
    if oif_is_attribute:
        assert isinstance(oif, tuple)
        ifindex = int(_UNPACK_U32(data, oif[0])[0])
    else:
        assert isinstance(oif, int)
        ifindex = oif
    return NextHop(address, ifindex, weight)


def _fast_multipath(data: bytes, start: int, end: int, size: int) -> tuple[NextHop, ...] | None:
    hops: list[NextHop] = []
    offset = start
    while offset + RTNEXTHOP.size <= end:
        length, _, count, ifindex = _UNPACK_RTNEXTHOP(data, offset)
        if length < RTNEXTHOP.size or offset + length > end or len(hops) >= MAX_NEXT_HOPS:
            return None
        gateway: tuple[int, int] | None = None
        via: tuple[int, int] | None = None
        nested = offset + RTNEXTHOP.size
        stop = offset + length
        while nested + 4 <= stop:
            nested_length, attribute = _UNPACK_NLA(data, nested)
            if nested_length < 4 or nested + nested_length > stop:
                return None
            attribute &= NLA_TYPE_MASK
            if attribute == RTA_GATEWAY:
                if nested_length - 4 != size:
                    return None
                gateway = gateway or (nested + 4, size)
            elif attribute == RTA_VIA:
                via = via or (nested + 4, nested_length - 4)
            else:
                return None
            nested += (nested_length + 3) & ~3
        if nested < stop:
            return None
        hop = _fast_hop(data, gateway, via, ifindex, count + 1)
        if hop is None:
            return None
        hops.append(hop)
        offset += (length + 3) & ~3
    if offset < end:
        return None
    return tuple(hops)


# -- bounds and sizes, by hand (see the module header) ---------------------------------------


def _attributes(data: bytes, start: int, end: int, what: str) -> Iterator[tuple[int, int, int]]:
    """(type, payload offset, payload length) of each attribute in data[start:end]."""
    offset = start
    while offset + NLA_HEADER.size <= end:
        length, kind = NLA_HEADER.unpack_from(data, offset)
        if length < NLA_HEADER.size or offset + length > end:
            raise DecodeError(
                "truncated_message",
                f"{what}: attribute {kind & NLA_TYPE_MASK} at byte {offset} has length {length}, "
                f"{end - offset} bytes remain",
            )
        yield kind & NLA_TYPE_MASK, offset + NLA_HEADER.size, length - NLA_HEADER.size
        offset += (length + 3) & ~3
    if offset < end:
        raise DecodeError(
            "truncated_message", f"{what}: {end - offset} stray bytes after the attributes"
        )


def _need_size(what: str, name: str, size: int, wanted: int) -> None:
    if size != wanted:
        raise DecodeError("undecodable", f"{what}: {name} has {size} bytes, {wanted} expected")


def _check_body(data: bytes, body: struct.Struct, what: str) -> None:
    if len(data) < NLMSG_HEADER.size + body.size:
        raise DecodeError(
            "truncated_message",
            f"{what}: {len(data)} bytes, a header and body need {NLMSG_HEADER.size + body.size}",
        )


def _check_route(data: bytes) -> None:
    what = "route message"
    _check_body(data, RTMSG, what)
    family, dst_len, *_ = RTMSG.unpack_from(data, NLMSG_HEADER.size)
    size = ADDRESS_SIZES.get(family)
    if size is None:
        raise DecodeError(
            "unsupported_family", f"{what}: address family {family} is not IPv4 (2) or IPv6 (10)"
        )
    if dst_len > size * 8:
        raise DecodeError("undecodable", f"{what}: prefix length {dst_len} exceeds {size * 8}")
    for kind, offset, length in _attributes(data, NLMSG_HEADER.size + RTMSG.size, len(data), what):
        if kind in (RTA_DST, RTA_GATEWAY):
            _need_size(what, "RTA_DST" if kind == RTA_DST else "RTA_GATEWAY", length, size)
        elif kind in (RTA_OIF, RTA_TABLE, RTA_NH_ID, RTA_PRIORITY):
            _need_size(what, f"attribute {kind}", length, 4)
        elif kind == RTA_VIA:
            _check_via(data, offset, length, what)
        elif kind == RTA_ENCAP:
            raise DecodeError(
                "unsupported_encap",
                f"{what}: encapsulated next hops (RTA_ENCAP, labels) are not supported",
            )
        elif kind == RTA_MULTIPATH:
            _check_multipath(data, offset, offset + length, size, what)


def _check_via(data: bytes, offset: int, length: int, what: str) -> None:
    if length < 2:
        raise DecodeError("undecodable", f"{what}: RTA_VIA has {length} bytes, at least 6 expected")
    (family,) = struct.unpack_from("=H", data, offset)
    size = ADDRESS_SIZES.get(family)
    if size is None:
        raise DecodeError(
            "unsupported_family", f"{what}: RTA_VIA family {family} is not IPv4 or IPv6"
        )
    _need_size(what, "RTA_VIA", length, 2 + size)


def _check_multipath(data: bytes, start: int, end: int, size: int, what: str) -> None:
    offset, count = start, 0
    while offset + RTNEXTHOP.size <= end:
        length = RTNEXTHOP.unpack_from(data, offset)[0]
        if length < RTNEXTHOP.size or offset + length > end:
            raise DecodeError(
                "truncated_message",
                f"{what}: next hop {count} of RTA_MULTIPATH has length {length}, "
                f"{end - offset} bytes remain",
            )
        count += 1
        if count > MAX_NEXT_HOPS:
            raise DecodeError(
                "too_many_next_hops",
                f"{what}: more than {MAX_NEXT_HOPS} next hops; a route may have at most "
                f"{MAX_NEXT_HOPS} (lower `maximum-paths` in FRR)",
            )
        for kind, nested, nested_length in _attributes(
            data, offset + RTNEXTHOP.size, offset + length, what
        ):
            if kind == RTA_GATEWAY:
                _need_size(what, "RTA_GATEWAY", nested_length, size)
            elif kind == RTA_VIA:
                _check_via(data, nested, nested_length, what)
            elif kind == RTA_ENCAP:
                raise DecodeError(
                    "unsupported_encap",
                    f"{what}: encapsulated next hops (RTA_ENCAP, labels) are not supported",
                )
        offset += (length + 3) & ~3
    if offset < end:
        raise DecodeError(
            "truncated_message", f"{what}: {end - offset} stray bytes in RTA_MULTIPATH"
        )


def _check_nexthop(data: bytes) -> None:
    what = "next-hop message"
    _check_body(data, NHMSG, what)
    family = NHMSG.unpack_from(data, NLMSG_HEADER.size)[0]
    seen_id = False
    for kind, _, length in _attributes(data, NLMSG_HEADER.size + NHMSG.size, len(data), what):
        if kind in (NHA_ID, NHA_OIF):
            _need_size(what, "NHA_ID" if kind == NHA_ID else "NHA_OIF", length, 4)
            seen_id = seen_id or kind == NHA_ID
        elif kind == NHA_GATEWAY:
            size = ADDRESS_SIZES.get(family)
            if size is None:
                raise DecodeError(
                    "unsupported_family", f"{what}: gateway of family {family} is not IPv4 or IPv6"
                )
            _need_size(what, "NHA_GATEWAY", length, size)
        elif kind == NHA_GROUP:
            if length == 0 or length % NEXTHOP_GRP.size:
                raise DecodeError(
                    "undecodable",
                    f"{what}: NHA_GROUP has {length} bytes, a non-zero multiple of 8 expected",
                )
            if length // NEXTHOP_GRP.size > MAX_NEXT_HOPS:
                raise DecodeError(
                    "too_many_next_hops",
                    f"{what}: a group of {length // NEXTHOP_GRP.size} next hops; at most "
                    f"{MAX_NEXT_HOPS} (lower `maximum-paths` in FRR)",
                )
        elif kind == NHA_ENCAP:
            raise DecodeError(
                "unsupported_encap",
                f"{what}: encapsulated next hops (NHA_ENCAP, labels) are not supported",
            )
    if not seen_id:
        raise DecodeError("undecodable", f"{what}: no NHA_ID")


# -- pyroute2's decoded message into domain values -------------------------------------------


def _network(family: int, address: str | None, length: int) -> str:
    try:
        if family == socket.AF_INET:
            network: IPNetwork = IPv4Network((address or "0.0.0.0", length))
        else:
            network = IPv6Network((address or "::", length))
    except ValueError as error:  # host bits set: the kernel refuses such a route too
        raise DecodeError("bad_prefix", f"route {address}/{length}: {error}") from error
    return prefix_text(network.network_address.packed, length)


def _next_hop(
    gateway: str | None, via: dict[str, Any] | None, ifindex: int, weight: int
) -> NextHop:
    address: IPAddress | None = None
    if via is not None:
        address = ip_address(via["addr"])
    elif gateway is not None:
        address = ip_address(gateway)
    return NextHop(gateway=address, ifindex=ifindex, weight=weight)


def _attrs(message: Any) -> dict[str, Any]:
    # One pass over pyroute2's attribute list: get_attr searches the list on every call.
    found: dict[str, Any] = {}
    for name, value in message["attrs"]:
        found.setdefault(name, value)
    return found


def _route(message: Any, kind: int) -> RouteUpdate:
    attrs = _attrs(message)
    op = Operation.ADD if kind == RTM_NEWROUTE else Operation.DELETE
    family, length = message["family"], message["dst_len"]
    prefix = _network(family, attrs.get("RTA_DST"), length)
    route_type = ROUTE_TYPES.get(message["type"])
    if route_type is None and op is Operation.DELETE and message["type"] == RTN_UNSPEC:
        route_type = RouteType.UNICAST  # zebra deletes with RTN_UNSPEC: the type is moot
    if route_type is None:
        raise DecodeError(
            "unsupported_route_type",
            f"route {prefix}: type {message['type']} is not unicast (1), blackhole (6), "
            "unreachable (7) or prohibit (8)",
        )
    table = attrs.get("RTA_TABLE")
    next_hops: list[NextHop] = []
    nexthop_id = attrs.get("RTA_NH_ID")
    if route_type is RouteType.UNICAST:
        multipath = attrs.get("RTA_MULTIPATH")
        if multipath:
            for hop in multipath:
                hop_attrs = _attrs(hop)
                next_hops.append(
                    _next_hop(
                        hop_attrs.get("RTA_GATEWAY"),
                        hop_attrs.get("RTA_VIA"),
                        hop["oif"],
                        hop["hops"] + 1,
                    )
                )
        else:
            gateway, via, oif = (
                attrs.get("RTA_GATEWAY"),
                attrs.get("RTA_VIA"),
                attrs.get("RTA_OIF"),
            )
            if gateway is not None or via is not None or oif is not None:
                next_hops.append(_next_hop(gateway, via, oif or 0, 1))
        if op is Operation.ADD and not next_hops and nexthop_id is None:
            raise DecodeError(
                "missing_next_hop",
                f"route {prefix}: a unicast route with no next hop and no RTA_NH_ID",
            )
    return RouteUpdate(
        op=op,
        prefix=prefix,
        type=route_type,
        table=int(table if table is not None else message["table"]),
        protocol=int(message["proto"]),
        next_hops=tuple(next_hops),
        nexthop_id=None if nexthop_id is None else int(nexthop_id),
    )


def _nexthop(message: Any, kind: int) -> NextHopUpdate:
    attrs = _attrs(message)
    nexthop_id = int(attrs["NHA_ID"])
    if kind == RTM_DELNEXTHOP:
        return NextHopUpdate(op=Operation.DELETE, id=nexthop_id)
    group = attrs.get("NHA_GROUP")
    blackhole = attrs.get("NHA_BLACKHOLE") is not None
    gateway = attrs.get("NHA_GATEWAY")
    oif = attrs.get("NHA_OIF")
    if group and (blackhole or gateway is not None or oif is not None):
        raise DecodeError(
            "undecodable",
            f"next hop {nexthop_id}: a group cannot also have a gateway, interface or blackhole",
        )
    if blackhole and (gateway is not None or oif is not None):
        raise DecodeError(
            "undecodable", f"next hop {nexthop_id}: a blackhole cannot have a gateway or interface"
        )
    if not group and not blackhole and gateway is None and oif is None:
        raise DecodeError(
            "missing_next_hop", f"next hop {nexthop_id}: no gateway, interface, blackhole or group"
        )
    return NextHopUpdate(
        op=Operation.ADD,
        id=nexthop_id,
        gateway=None if gateway is None else ip_address(gateway),
        ifindex=int(oif or 0),
        blackhole=blackhole,
        group=tuple(GroupMember(id=member, weight=weight) for member, weight in group or ()),
    )
