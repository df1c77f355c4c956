"""Prefixes and next-hop addresses: packed bytes on the wire, canonical text inside (what
inet_ntop writes: "198.18.0.0/15", "2001:db8::/32"). The one place either side turns one
into the other or checks one; errors name the field and what would be right.
"""

from __future__ import annotations

import ipaddress
import re
import socket

from corridor.common.errors import FieldError, echo
from corridor.v1 import common_pb2

_FAMILY = {4: (socket.AF_INET, 32, "IPv4"), 16: (socket.AF_INET6, 128, "IPv6")}
_ntop = socket.inet_ntop
_pton = socket.inet_pton
_AF_INET, _AF_INET6 = socket.AF_INET, socket.AF_INET6


def prefix_text(address: bytes, length: int) -> str:
    """The canonical text of a prefix whose address is 4 or 16 packed bytes."""
    return f"{_ntop(_AF_INET if len(address) == 4 else _AF_INET6, address)}/{length}"


def prefix_from_pb(prefix: common_pb2.IpPrefix, field: str) -> str:
    """The canonical text of a prefix from a request; FieldError (below `field`) if its
    address is not 4 or 16 bytes, its length too long, or host bits are set."""
    # Runs once per route of a full table: each protobuf field is read once.
    address = prefix.address
    length = prefix.length
    family = _FAMILY.get(len(address))
    if family is None:
        raise FieldError(
            f"{field}.address",
            f"is {len(address)} bytes; an IPv4 address is 4 bytes and an IPv6 address 16",
        )
    af, bits, name = family
    text = _ntop(af, address)
    if length > bits:
        raise FieldError(
            f"{field}.length", f"{text}/{length}: prefix length {length} exceeds {bits}"
        )
    value = int.from_bytes(address)
    host = value & ((1 << (bits - length)) - 1)
    if host:
        network = _ntop(af, (value ^ host).to_bytes(len(address)))
        raise FieldError(
            f"{field}.address",
            f"{text}/{length}: host bits set (the {name} network is {network}/{length})",
        )
    return f"{text}/{length}"


def prefix_order(text: str) -> tuple[bool, int, int]:
    """Orders canonical prefix texts: IPv4 first, then by address and length."""
    network = ipaddress.ip_network(text)
    return network.version == 6, int(network.network_address), network.prefixlen


def set_prefix(pb: common_pb2.IpPrefix, text: str) -> None:
    """Fills `pb` (in place: the cheapest way for many) from canonical prefix text."""
    address, _, length = text.partition("/")
    pb.address = _pton(_AF_INET6 if ":" in address else _AF_INET, address)
    pb.length = int(length)


def prefix_to_pb(text: str) -> common_pb2.IpPrefix:
    """An IpPrefix from canonical prefix text."""
    pb = common_pb2.IpPrefix()
    set_prefix(pb, text)
    return pb


def checked_prefix_to_pb(text: str) -> common_pb2.IpPrefix:
    """An IpPrefix from text a person wrote ("198.18.0.0/15"); ValueError if it is not a
    prefix or has host bits set."""
    network = ipaddress.ip_network(text)
    return common_pb2.IpPrefix(address=network.network_address.packed, length=network.prefixlen)


def address_text(address: bytes) -> str:
    """The text of a packed IPv4 or IPv6 address."""
    return _ntop(_AF_INET if len(address) == 4 else _AF_INET6, address)


def address_to_bytes(text: str) -> bytes:
    return _pton(_AF_INET6 if ":" in text else _AF_INET, text)


def address_from_pb(address: bytes, field: str) -> str:
    """The text of any address from a request; FieldError if it is not 4 or 16 bytes."""
    if len(address) not in _FAMILY:
        raise FieldError(
            field, f"is {len(address)} bytes; an IPv4 address is 4 bytes and an IPv6 address 16"
        )
    return address_text(address)


def gateway_from_pb(address: bytes, field: str) -> str:
    """The text of a next hop's address from a request; FieldError if it is not 4 or 16 bytes
    or not the unicast address a neighbour can have: not unspecified, loopback, multicast,
    IPv4 0/8 ("this network"), 240/4 (reserved, with the broadcast address), nor an IPv6
    address that carries an IPv4 one (::ffff:0:0/96: give the IPv4 address itself)."""
    text = address_from_pb(address, field)
    if len(address) == 4:
        first = address[0]
        bad = first in (0, 127) or first >= 224
    else:
        bad = (
            not any(address)
            or address == bytes(15) + b"\x01"
            or address[0] == 0xFF
            or address[:12] == bytes(10) + b"\xff\xff"
        )
    if bad:
        raise FieldError(
            field,
            f"{text} cannot be a next hop: not a unicast address (a gateway is a neighbour's "
            "address)",
        )
    return text


_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
# RFC 1123 names; fullmatch and \Z, since "$" would also pass a name that ends in "\n"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(\.{_LABEL})*\.?")


def endpoint_problem(address: str, relative: bool = False) -> str | None:
    """What is wrong with `address` as a gRPC server's address to dial: "unix:" and an
    absolute path (relative too with `relative`, for files that resolve it), or host:port with
    an IP address ("[v6]" in brackets) or a DNS name and a port 1 to 65535; None if nothing."""
    expected = "unix:/absolute/path.sock, host:port or [v6]:port"
    if address.startswith("unix:"):
        path = address[5:]
        if not path:
            return f"unix: needs a socket path: {expected}"
        if not path.startswith("/") and not relative:
            return f"{echo(address)}: the socket path must be absolute: {expected}"
        return None
    host, sep, port = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            host = ""
    elif ":" in host:
        host = ""  # an IPv6 address without brackets, or worse
    elif not _HOSTNAME.fullmatch(host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            host = ""
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return f"{echo(address)} is not an agent address: {expected}"
    return None
