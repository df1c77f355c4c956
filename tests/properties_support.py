"""Helpers of the property tests (tests/test_properties_*.py): the contract's rules for
addresses and prefixes, written from the .proto files and RFCs with the standard library
(not with the code under test), and strategies that make values good, bad and in between."""

from __future__ import annotations

import ipaddress
import socket

from hypothesis import strategies as st

from corridor.v1 import common_pb2

_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_RESERVED = ipaddress.ip_network("240.0.0.0/4")


def prefix_model(address: bytes, length: int) -> str | None:
    """Canonical text of a valid prefix (what inet_ntop writes), None if it is invalid: an
    address of 4 or 16 bytes, a length the family allows, no host bits."""
    if len(address) not in (4, 16) or length > len(address) * 8:
        return None
    network = (
        ipaddress.IPv4Address(address) if len(address) == 4 else ipaddress.IPv6Address(address)
    )
    try:
        ipaddress.ip_network((network, length))
    except ValueError:
        return None  # host bits set
    family = socket.AF_INET if len(address) == 4 else socket.AF_INET6
    return f"{socket.inet_ntop(family, address)}/{length}"


def gateway_model(address: bytes) -> str | None:
    """The text of a neighbour's unicast address, None if it is none: not unspecified,
    loopback, multicast, 0/8, 240/4 (with the broadcast address), nor an IPv4-mapped IPv6
    address."""
    if len(address) == 4:
        a4 = ipaddress.IPv4Address(address)
        if a4 in _THIS_NETWORK or a4 in _RESERVED or a4.is_loopback or a4.is_multicast:
            return None
        return str(a4)
    if len(address) == 16:
        a6 = ipaddress.IPv6Address(address)
        if a6.is_unspecified or a6.is_loopback or a6.is_multicast or a6.ipv4_mapped:
            return None
        return socket.inet_ntop(socket.AF_INET6, address)
    return None


ADDRESSES = [bytes([198, 18, 0, 0]), bytes([198, 18, 1, 0]), bytes(4), bytes([198, 18, 0, 7]),
             ipaddress.IPv6Address("2001:db8::").packed, bytes(16)]  # fmt: skip
SPECIAL = ["198.18.0.2", "2001:db8::2", "fe80::1", "0.0.0.1", "127.0.0.1", "224.0.0.5",
           "240.0.0.1", "255.255.255.255", "::", "::1", "ff02::1", "::ffff:198.18.0.2",
           "169.254.0.1", "100.64.0.1"]  # fmt: skip


def raw_addresses() -> st.SearchStrategy[bytes]:
    """Packed addresses: a few that repeat, the special ones, any of the right sizes, and
    any bytes at all."""
    return st.one_of(
        st.sampled_from(ADDRESSES),
        st.sampled_from(SPECIAL).map(lambda t: ipaddress.ip_address(t).packed),
        st.binary(min_size=4, max_size=4),
        st.binary(min_size=16, max_size=16),
        st.binary(max_size=18),
    )


@st.composite
def prefixes(draw: st.DrawFn) -> common_pb2.IpPrefix:
    address = draw(raw_addresses())
    bits = len(address) * 8 if len(address) in (4, 16) else 32
    length = draw(st.one_of(st.integers(0, bits), st.sampled_from([bits + 1, 200, 2**32 - 1])))
    return common_pb2.IpPrefix(address=address, length=length)
