"""Property tests of the FPM decoder (hypothesis): zebra's stream is untrusted input.

- Any bytes a connection can hand over decode to an update or raise the decoder's own
  DecodeError, nothing else; the hand-written fast path and the pyroute2 path agree on
  generated and damaged route messages alike.
- A stream fed in any chunks gives the same updates and counters as fed whole, and as the
  Python decoder alone gives (the Rust scan of plain route frames changes nothing), and every
  frame is accounted for: delivered or counted under one reason.
- The next-hop table refuses an update whole: state after a DecodeError equals state before.

`HYPOTHESIS_PROFILE=fuzz` (make fuzz) runs the same properties far longer.
"""

from __future__ import annotations

import copy
import struct
from ipaddress import ip_address
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from corridor._dataplane import fpm_scan
from corridor.fpm import NextHopTable
from corridor.fpm.listener import FPM_HEADER, FpmConnection, FpmCounters, Peer, ReasonLog
from corridor.fpm.netlink import (
    NHMSG,
    NLMSG_HEADER,
    ROUTE_TYPES,
    RTM_DELNEXTHOP,
    RTM_DELROUTE,
    RTM_NEWNEXTHOP,
    RTM_NEWROUTE,
    RTMSG,
    RTNEXTHOP,
    DecodeError,
    _fast_route,
    address_from_bytes,
    decode_message,
    decode_slow,
)
from corridor.fpm.routes import (
    GroupMember,
    NextHop,
    NextHopUpdate,
    Operation,
    RouteType,
    RouteUpdate,
    Update,
)
from fpm_support import canon

AF_INET, AF_INET6, AF_MPLS = 2, 10, 28
SIZES = {AF_INET: 4, AF_INET6: 16}
# Route attributes the decoder knows, and some it does not (8: metrics, 22: encap, 3: iif).
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_PREFSRC = 1, 4, 5, 6, 7
RTA_MULTIPATH, RTA_TABLE, RTA_VIA, RTA_ENCAP, RTA_NH_ID = 9, 15, 18, 22, 30
NLA_F_NESTED = 0x8000
PEER = Peer(ip_address("127.0.0.1"), 40000)


# --- netlink messages, built by hand so that they can be subtly wrong ----------------------


def attribute(kind: int, payload: bytes, length: int | None = None) -> bytes:
    """One attribute, padded to 4; `length` overrides its length field (damage)."""
    header = struct.pack("=HH", len(payload) + 4 if length is None else length, kind)
    return header + payload + bytes(-len(payload) % 4)


def message(kind: int, body: bytes, flags: int = 0x1) -> bytes:
    return NLMSG_HEADER.pack(NLMSG_HEADER.size + len(body), kind, flags, 0, 0) + body


def addresses(size: int) -> st.SearchStrategy[bytes]:
    """Mostly the right size (with a few values, so that prefixes repeat), sometimes not."""
    right = st.one_of(
        st.sampled_from(
            [bytes(size), b"\xc6\x12" + bytes(size - 2), b"\xc6\x12\x0a" + bytes(size - 3)]
        ),
        st.binary(min_size=size, max_size=size),
    )
    return st.one_of(right, right, right, st.binary(max_size=20))


@st.composite
def route_attributes(draw: st.DrawFn, size: int, depth: int = 0) -> bytes:
    u32 = st.integers(0, 2**32 - 1).map(lambda v: struct.pack("=I", v))
    four = st.one_of(u32, u32, u32, st.binary(max_size=8))
    choice = draw(st.integers(0, 11 if depth == 0 else 3))
    flags = draw(st.sampled_from([0, 0, 0, NLA_F_NESTED]))
    if choice == 0:
        return attribute(RTA_GATEWAY | flags, draw(addresses(size)))
    if choice == 1:
        family = draw(st.sampled_from([AF_INET, AF_INET6, AF_INET6, 0, 7]))
        via = draw(addresses(SIZES.get(family, 4)))
        return attribute(RTA_VIA | flags, struct.pack("=H", family) + via)
    if choice == 2:
        return attribute(draw(st.integers(1, 40)) | flags, draw(st.binary(max_size=12)))
    if choice == 3:  # damage: a length that lies
        payload = draw(st.binary(max_size=8))
        return attribute(draw(st.sampled_from([RTA_GATEWAY, RTA_OIF, RTA_VIA])), payload,
                         length=draw(st.integers(0, 40)))  # fmt: skip
    if choice == 4:
        return attribute(RTA_DST | flags, draw(addresses(size)))
    if choice in (5, 6):
        return attribute(draw(st.sampled_from([RTA_OIF, RTA_PRIORITY, RTA_TABLE])), draw(four))
    if choice == 7:
        return attribute(RTA_NH_ID, draw(four))
    if choice == 8:
        return attribute(RTA_PREFSRC, draw(addresses(size)))
    if choice == 9:
        return attribute(RTA_ENCAP, draw(st.binary(max_size=8)))
    hops = b""
    for _ in range(draw(st.integers(0, 3))):
        nested = b"".join(draw(st.lists(route_attributes(size, depth + 1), max_size=2)))
        weight = draw(st.integers(0, 255))
        ifindex = draw(st.integers(-(2**31), 2**31 - 1))
        length = RTNEXTHOP.size + len(nested)
        if draw(st.integers(0, 9)) == 0:
            length = draw(st.integers(0, length + 8))
        hops += RTNEXTHOP.pack(length, 0, weight, ifindex) + nested
    return attribute(RTA_MULTIPATH | flags, hops)


@st.composite
def route_messages(draw: st.DrawFn) -> bytes:
    """RTM_NEWROUTE / RTM_DELROUTE: mostly shaped as zebra sends them, often subtly wrong."""
    family = draw(st.sampled_from([AF_INET, AF_INET6, AF_INET, AF_INET6, 0, AF_MPLS]))
    size = SIZES.get(family, 4)
    dst_len = draw(st.one_of(st.integers(0, size * 8), st.integers(0, 255)))
    attrs = []
    if draw(st.booleans()):  # the destination, usually without host bits
        raw = draw(addresses(size))
        if len(raw) == size and draw(st.booleans()) and dst_len <= size * 8:
            bits = size * 8
            value = int.from_bytes(raw) >> (bits - dst_len) << (bits - dst_len) if dst_len else 0
            raw = value.to_bytes(size)
        attrs.append(attribute(RTA_DST, raw))
    attrs += draw(st.lists(route_attributes(size), max_size=5))
    rtype = draw(st.sampled_from([0, 1, 1, 1, 2, 6, 7, 8, 9]))
    table, proto = draw(st.integers(0, 255)), draw(st.integers(0, 255))
    body = RTMSG.pack(family, dst_len, 0, 0, table, proto, 0, rtype, 0) + b"".join(attrs)
    kind = draw(st.sampled_from([RTM_NEWROUTE, RTM_NEWROUTE, RTM_DELROUTE]))
    return message(kind, body)


@st.composite
def zebra_route_messages(draw: st.DrawFn) -> bytes:
    """Route messages as zebra sends them for a table: good ones, most of them taken by the
    fast paths (one gateway, on-link, ECMP, an object id, blackhole, a delete)."""
    family = draw(st.sampled_from([AF_INET, AF_INET6]))
    size = SIZES[family]
    dst_len = draw(st.integers(0, size * 8))
    bits = size * 8
    value = draw(st.integers(0, 2**bits - 1)) >> (bits - dst_len) << (bits - dst_len)
    attrs = [attribute(RTA_DST, value.to_bytes(size))]
    gateway = st.sampled_from([b"\xc6\x12\x00\x01", b"\xc6\x12\x00\x02"] if size == 4 else
                              [b" \x01\x0d\xb8" + bytes(11) + b"\x01"])  # fmt: skip
    kind = draw(st.sampled_from([RTM_NEWROUTE, RTM_NEWROUTE, RTM_DELROUTE]))
    rtype = draw(st.sampled_from([1, 1, 1, 6, 7, 8] + ([0] if kind == RTM_DELROUTE else [])))
    shape = draw(st.integers(0, 4))
    if rtype == 1 and shape == 0:
        attrs.append(attribute(RTA_GATEWAY, draw(gateway)))
        attrs.append(attribute(RTA_OIF, struct.pack("=I", draw(st.integers(1, 9)))))
    elif rtype == 1 and shape == 1:
        attrs.append(attribute(RTA_OIF, struct.pack("=I", draw(st.integers(1, 9)))))
    elif rtype == 1 and shape == 2:
        hops = b""
        for _ in range(draw(st.integers(1, 4))):
            nested = attribute(RTA_GATEWAY, draw(gateway))
            hops += RTNEXTHOP.pack(RTNEXTHOP.size + len(nested), 0, draw(st.integers(0, 255)),
                                   draw(st.integers(1, 9))) + nested  # fmt: skip
        attrs.append(attribute(RTA_MULTIPATH, hops))
    elif rtype == 1 and shape == 3:
        via = draw(
            st.sampled_from([b" \x01\x0d\xb8" + bytes(11) + b"\x01", b"\xfe\x80" + bytes(14)])
        )
        attrs.append(attribute(RTA_VIA, struct.pack("=H", AF_INET6) + via))
        attrs.append(attribute(RTA_OIF, struct.pack("=I", draw(st.integers(1, 9)))))
    elif shape == 4:
        attrs.append(attribute(RTA_NH_ID, struct.pack("=I", draw(st.integers(1, 6)))))
    if draw(st.booleans()):
        attrs.append(attribute(RTA_PRIORITY, struct.pack("=I", 20)))
    if draw(st.integers(0, 5)) == 0:
        attrs.append(attribute(RTA_TABLE, struct.pack("=I", draw(st.sampled_from([254, 1000])))))
    body = RTMSG.pack(family, dst_len, 0, 0, 254, 186, 0, rtype, 0) + b"".join(attrs)
    return message(kind, body)


@given(st.lists(zebra_route_messages(), min_size=1, max_size=20))
def test_the_rust_scan_takes_what_the_python_fast_path_decodes(messages: list[bytes]) -> None:
    """corridor._dataplane.fpm_scan reads a run of plain route frames exactly as the Python
    fast path does, and stops at the first frame that path leaves to pyroute2."""
    data = b"".join(FPM_HEADER.pack(1, 1, len(m) + 4) + m for m in messages)
    end, routes, sets = fpm_scan(data, 0)
    expected = []
    for m in messages:
        decoded = _fast_route(m, struct.unpack_from("=H", m, 4)[0])
        if decoded is None:
            break
        expected.append(decoded)
    assert len(expected) == len(messages), "every generated message is one zebra sends"
    assert len(routes) == len(expected)
    assert end == sum(len(m) + 4 for m in messages[: len(expected)])
    for (add, prefix, rtype, table, protocol, hops, nexthop_id), want in zip(
        routes, expected, strict=True
    ):
        hop_set = () if hops is None else tuple(
            NextHop(None if g is None else address_from_bytes(g), i, w) for g, i, w in sets[hops]
        )  # fmt: skip
        assert RouteUpdate(
            Operation.ADD if add else Operation.DELETE,
            prefix, ROUTE_TYPES[rtype], table, protocol, hop_set, nexthop_id,
        ) == want  # fmt: skip


@st.composite
def nexthop_messages(draw: st.DrawFn) -> bytes:
    family = draw(st.sampled_from([0, AF_INET, AF_INET6, 7]))
    attrs = []
    u32 = st.integers(0, 2**32 - 1).map(lambda v: struct.pack("=I", v))
    if draw(st.integers(0, 9)):
        attrs.append(attribute(1, draw(st.one_of(u32, u32, st.binary(max_size=6)))))  # NHA_ID
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from([2, 3, 4, 5, 6, 8, 9, 10, 11, 12]))
        if kind == 2:  # NHA_GROUP: (id, weight - 1, 0, 0) pairs, or not quite
            members = draw(st.lists(st.tuples(st.integers(1, 9), st.integers(0, 255)), max_size=4))
            payload = b"".join(struct.pack("=IBBH", m, w, 0, 0) for m, w in members)
            payload = (
                payload[: draw(st.integers(0, len(payload)))] if draw(st.booleans()) else payload
            )
        elif kind == 6:
            payload = draw(addresses(SIZES.get(family, 4)))
        elif kind == 5:
            payload = draw(st.one_of(u32, st.binary(max_size=6)))
        else:
            payload = draw(st.binary(max_size=8))
        attrs.append(attribute(kind, payload))
    body = NHMSG.pack(family, 0, 0, 0, 0) + b"".join(attrs)
    return message(draw(st.sampled_from([RTM_NEWNEXTHOP, RTM_DELNEXTHOP])), body)


def with_length(data: bytes) -> bytes:
    """As the listener hands a message over: nlmsg_len equal to the bytes given."""
    out = bytearray(data.ljust(NLMSG_HEADER.size, b"\0"))
    struct.pack_into("=I", out, 0, len(out))
    return bytes(out)


@st.composite
def damaged(draw: st.DrawFn, messages: st.SearchStrategy[bytes]) -> bytes:
    """A message with a few bytes changed, cut short, or grown."""
    data = bytearray(draw(messages))
    for _ in range(draw(st.integers(0, 3))):
        what = draw(st.integers(0, 2))
        at = draw(st.integers(4, max(4, len(data) - 1)))
        if what == 0 and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif what == 1:
            del data[at:]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
    return with_length(bytes(data))


def outcome(decode: Any, data: bytes) -> object:
    try:
        return decode(data)
    except DecodeError as error:
        assert error.reason and str(error), "a refusal names its reason and says why"
        return ("refused", error.reason)


# --- the decoder ------------------------------------------------------------------------


@given(
    st.sampled_from([RTM_NEWROUTE, RTM_DELROUTE, RTM_NEWNEXTHOP, RTM_DELNEXTHOP, 16, 0, 0xFFFF]),
    st.binary(max_size=200),
)
def test_any_bytes_decode_or_are_refused_with_a_reason(kind: int, body: bytes) -> None:
    data = message(kind, body)
    result = outcome(decode_message, data)
    assert isinstance(result, (RouteUpdate, NextHopUpdate)) or result[0] == "refused"  # type: ignore[index]


@given(st.one_of(route_messages(), damaged(route_messages())))
# Found by this test: a blackhole route whose RTA_MULTIPATH is damaged (the fast path took
# it without reading the next hops; the pyroute2 path checks every attribute and refuses).
@example(
    bytes.fromhex(
        "280000001800010000000000000000000200000000000006000000000c0009000000000000000000"
    )
)
def test_route_messages_decode_alike_on_both_paths(data: bytes) -> None:
    fast = outcome(decode_message, data)
    assert fast == outcome(decode_slow, data), data.hex()
    if isinstance(fast, RouteUpdate):
        check_route(fast)


@given(st.one_of(nexthop_messages(), damaged(nexthop_messages())))
def test_nexthop_messages_decode_or_are_refused(data: bytes) -> None:
    result = outcome(decode_message, data)
    if isinstance(result, NextHopUpdate):
        assert result.id == struct.unpack_from("=I", data, result_offset(data))[0]
        assert not (result.group and (result.blackhole or result.gateway is not None))
    else:
        assert result[0] == "refused"  # type: ignore[index]


def result_offset(data: bytes) -> int:
    """Where the first NHA_ID's value is (the decoder takes the first of each attribute)."""
    offset = NLMSG_HEADER.size + NHMSG.size
    while True:
        length, kind = struct.unpack_from("=HH", data, offset)
        if kind & 0x3FFF == 1:
            return offset + 4
        offset += (length + 3) & ~3


def check_route(route: RouteUpdate) -> None:
    """What the consumer relies on in an update the decoder delivers."""
    assert route.prefix == canon(route.prefix)  # canonical text: no host bits
    if route.type is not RouteType.UNICAST:
        assert route.next_hops == ()
    elif route.op is Operation.ADD:
        assert route.next_hops or route.nexthop_id is not None
    for hop in route.next_hops:
        assert 1 <= hop.weight <= 256


# --- the stream --------------------------------------------------------------------------


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """One FPM frame: a route message (good or damaged), a stray netlink type, or a frame
    of another FPM type. Next-hop objects are left out, so no update waits for one."""
    what = draw(st.integers(0, 13))
    if what >= 10:
        payload = draw(zebra_route_messages())
    elif what <= 5:
        payload = draw(route_messages())
    elif what <= 7:
        payload = draw(damaged(route_messages()))
    elif what == 8:
        payload = message(draw(st.sampled_from([16, 20, 0])), draw(st.binary(max_size=24)))
    else:
        payload = draw(st.binary(max_size=24))
        return FPM_HEADER.pack(1, draw(st.integers(2, 255)), len(payload) + 4) + payload
    return FPM_HEADER.pack(1, 1, len(payload) + 4) + payload


def feed(
    chunks: list[bytes], *, fast: bool = True
) -> tuple[list[Update], FpmCounters, FpmConnection]:
    """`fast` False: every frame through the Python decoder, the reference for the runs of
    route frames that the Rust scan (corridor._dataplane.fpm_scan) takes."""
    counters = FpmCounters()
    connection = FpmConnection(PEER, counters, ReasonLog(burst=0))
    connection.fast = fast
    updates = []
    for chunk in chunks:
        updates += connection.feed(chunk)
    return updates, counters, connection


@given(st.lists(frames(), max_size=12), st.lists(st.integers(0, 4000), max_size=8))
def test_a_stream_in_any_chunks_is_read_alike_and_every_frame_counted(
    stream: list[bytes], cuts: list[int]
) -> None:
    data = b"".join(stream)
    whole, counters, connection = feed([data])
    assert connection.failed is None and connection.pending == 0
    assert counters.frames == len(stream)
    # Every frame one message (or none): delivered, or counted under exactly one reason.
    assert counters.messages + sum(counters.errors.values()) == len(stream), counters
    assert counters.routes_added + counters.routes_deleted == len(whole)
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    chunked, chunk_counters, _ = feed(chunks)
    assert chunked == whole
    assert chunk_counters == counters
    reference, reference_counters, _ = feed(chunks, fast=False)
    assert reference == whole
    assert reference_counters == counters


@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=4))
def test_any_stream_is_read_or_closed_without_an_exception(data: bytes, cuts: list[int]) -> None:
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    updates, counters, connection = feed(chunks)
    reference, reference_counters, reference_connection = feed(chunks, fast=False)
    assert (reference, reference_counters, reference_connection.failed) == (
        updates,
        counters,
        connection.failed,
    )
    if connection.failed is not None:
        assert counters.errors.get(connection.failed, 0) == 1
        assert connection.pending == 0
    else:
        reason = connection.close()
        assert connection.pending == 0
        assert reason is None or counters.errors[reason] >= 1
    # Each update came from a message the decoder took (a next-hop object may bring several).
    if counters.messages == 0:
        assert updates == []


# --- the next-hop table -------------------------------------------------------------------

IDS = st.integers(1, 6)
GATEWAYS = st.sampled_from([ip_address("198.18.0.1"), ip_address("2001:db8::1"), None])


@st.composite
def table_updates(draw: st.DrawFn) -> Update:
    if draw(st.integers(0, 2)) == 0:
        prefix = canon(draw(st.sampled_from(["198.18.1.0/24", "198.18.2.0/24", "2001:db8:1::/48"])))
        op = draw(st.sampled_from([Operation.ADD, Operation.ADD, Operation.DELETE]))
        nexthop_id = draw(st.one_of(IDS, st.none()))
        hops = () if nexthop_id is not None else (NextHop(ip_address("198.18.0.9"), 3, 1),)
        rtype = draw(st.sampled_from([RouteType.UNICAST, RouteType.UNICAST, RouteType.BLACKHOLE]))
        return RouteUpdate(
            op, prefix, rtype, 254, 186, hops if rtype is RouteType.UNICAST else (), nexthop_id
        )
    op = draw(st.sampled_from([Operation.ADD, Operation.ADD, Operation.DELETE]))
    nexthop_id = draw(IDS)
    if op is Operation.DELETE:
        return NextHopUpdate(op=op, id=nexthop_id)
    if draw(st.booleans()):
        members = draw(st.lists(IDS, min_size=1, max_size=3, unique=True))
        group = tuple(GroupMember(id=m, weight=draw(st.integers(1, 4))) for m in members)
        return NextHopUpdate(op=op, id=nexthop_id, group=group)
    if draw(st.integers(0, 4)) == 0:
        return NextHopUpdate(op=op, id=nexthop_id, blackhole=True)
    return NextHopUpdate(
        op=op, id=nexthop_id, gateway=draw(GATEWAYS), ifindex=draw(st.integers(1, 3))
    )


def table_state(table: NextHopTable) -> dict[str, Any]:
    return {k: copy.deepcopy(v) for k, v in vars(table).items() if k != "late_errors"}


_ROUTE = canon("198.18.1.0/24")
_HOP = (NextHop(ip_address("198.18.0.9"), 3, 1),)


@given(st.lists(table_updates(), max_size=30), st.integers(1, 4), st.integers(1, 4))
# Found by this test: the delete of an object never sent emptied the resolution cache
# before it was refused.
@example(
    [
        RouteUpdate(Operation.ADD, _ROUTE, RouteType.UNICAST, 254, 186, (), 2),
        NextHopUpdate(op=Operation.ADD, id=2, gateway=ip_address("198.18.0.1"), ifindex=1),
        RouteUpdate(Operation.ADD, _ROUTE, RouteType.UNICAST, 254, 186, _HOP, None),
        NextHopUpdate(op=Operation.DELETE, id=1),
    ],
    1,
    1,
)
def test_the_next_hop_table_refuses_an_update_whole(
    updates: list[Update], max_objects: int, max_waiting: int
) -> None:
    """Small bounds on purpose, so that the limits are met as often as the rest."""
    table = NextHopTable(max_objects=max_objects, max_waiting=max_waiting)
    for update in updates:
        before = table_state(table)
        try:
            table.apply(update)
        except DecodeError as error:
            assert error.reason
            assert table_state(table) == before, (update, error.reason)
        assert len(table) <= max_objects
        assert table.waiting <= max_waiting
