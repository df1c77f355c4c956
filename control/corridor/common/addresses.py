"""Prefixes and next-hop addresses: packed bytes on the wire, canonical text inside (what
inet_ntop writes: "198.18.0.0/15", "2001:db8::/32"). The one place either side turns one
into the other or checks one; errors name the field and what would be right.
"""

from __future__ import annotations

import ipaddress
import socket

from corridor.common.errors import FieldError
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


def gateway_from_pb(address: bytes, field: str) -> str:
    """The text of a next hop's address from a request; FieldError if it is not 4 or 16 bytes
    or not a unicast address (unspecified, loopback, multicast, IPv4 240/4 and broadcast)."""
    if len(address) not in _FAMILY:
        raise FieldError(
            field, f"is {len(address)} bytes; an IPv4 address is 4 bytes and an IPv6 address 16"
        )
    text = address_text(address)
    v4 = len(address) == 4
    loopback = address[0] == 127 if v4 else address == bytes(15) + b"\x01"
    multicast = address[0] >= 224 if v4 else address[0] == 0xFF
    if not any(address) or loopback or multicast:
        raise FieldError(
            field,
            f"{text} cannot be a next hop: not a unicast address (a gateway is a neighbour's "
            "address)",
        )
    return text
