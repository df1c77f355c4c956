"""The FPM listener over real TCP on loopback: every form of route and next-hop message zebra
sends, and every kind of bad input, each counted by reason without half-applying anything."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from ipaddress import ip_address

import pytest

from corridor.fpm import (
    MAX_NEXT_HOPS,
    DecodeError,
    FpmConnection,
    FpmCounters,
    FpmListener,
    GroupMember,
    NextHop,
    NextHopTable,
    NextHopUpdate,
    Operation,
    Peer,
    RouteType,
    RouteUpdate,
    Update,
    start_listener,
)
from corridor.fpm.listener import ReasonLog
from fpm_support import (
    RecordingSink,
    canon,
    closed_by_far_end,
    frame,
    netlink_message,
    nexthop_message,
    route_message,
    wait_until,
    with_attribute,
)

pytestmark = pytest.mark.timeout(60)

ADD, DELETE = Operation.ADD, Operation.DELETE
BGP = 186  # RTPROT_BGP, as zebra marks bgpd's routes


def v4(prefix: str, *hops: NextHop, op: Operation = ADD, **kw: object) -> RouteUpdate:
    return RouteUpdate(
        op=op,
        prefix=canon(prefix),
        type=kw.pop("type", RouteType.UNICAST),  # type: ignore[arg-type]
        table=kw.pop("table", 254),  # type: ignore[arg-type]
        protocol=BGP,
        next_hops=hops,
        nexthop_id=kw.pop("nexthop_id", None),  # type: ignore[arg-type]
    )


def hop(gateway: str | None, ifindex: int, weight: int = 1) -> NextHop:
    return NextHop(None if gateway is None else ip_address(gateway), ifindex, weight)


@dataclass
class Running:
    listener: FpmListener
    port: int
    sink: RecordingSink

    @property
    def counters(self) -> FpmCounters:
        return self.listener.counters

    async def exchange(self, *chunks: bytes, close: bool = True) -> list[Update]:
        """Send chunks over one new connection, close it, and return what the sink got."""
        before = len(self.sink.updates_seen)
        downs = len(self.sink.downs)
        _, writer = await asyncio.open_connection("127.0.0.1", self.port)
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
        if close:
            writer.close()
            await writer.wait_closed()
        await wait_until(lambda: len(self.sink.downs) > downs, 10, "the connection to go down")
        return self.sink.updates_seen[before:]


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    sink = RecordingSink()
    listener, port = await start_listener("127.0.0.1", 0, sink)
    try:
        yield Running(listener, port, sink)
    finally:
        await listener.stop()


# -- every form --------------------------------------------------------------------------------


async def test_unicast_via_gateway_ipv4_and_ipv6(running: Running) -> None:
    got = await running.exchange(
        frame(route_message("198.18.10.0/24", gateway="198.18.0.1", oif=3)),
        frame(route_message("2001:db8:10::/48", gateway="2001:db8::1", oif=4)),
    )
    assert got == [
        v4("198.18.10.0/24", hop("198.18.0.1", 3)),
        v4("2001:db8:10::/48", hop("2001:db8::1", 4)),
    ]
    assert got[1].family == 6
    assert running.counters.routes_added == 2 and running.counters.errors == {}
    assert running.sink.downs == ["closed by peer"]


async def test_on_link_route_has_no_gateway(running: Running) -> None:
    got = await running.exchange(frame(route_message("198.18.20.0/24", oif=7)))
    assert got == [v4("198.18.20.0/24", hop(None, 7))]


async def test_multipath_keeps_weights(running: Running) -> None:
    got = await running.exchange(
        frame(
            route_message(
                "198.18.30.0/24",
                multipath=[
                    {"gateway": "198.18.0.1", "oif": 3, "weight": 1},
                    {"gateway": "198.18.0.2", "oif": 4, "weight": 5},
                    {"via": "2001:db8::3", "oif": 5, "weight": 256},
                ],
            )
        )
    )
    assert got == [
        v4(
            "198.18.30.0/24",
            hop("198.18.0.1", 3, 1),
            hop("198.18.0.2", 4, 5),
            hop("2001:db8::3", 5, 256),
        )
    ]


@pytest.mark.parametrize(
    ("rtype", "expected"),
    [(6, RouteType.BLACKHOLE), (7, RouteType.UNREACHABLE), (8, RouteType.PROHIBIT)],
)
async def test_discard_routes(running: Running, rtype: int, expected: RouteType) -> None:
    got = await running.exchange(
        frame(route_message("198.18.40.0/24", rtype=rtype)),
        frame(route_message("2001:db8:40::/48", rtype=rtype)),
    )
    assert got == [v4("198.18.40.0/24", type=expected), v4("2001:db8:40::/48", type=expected)]


async def test_ipv4_route_via_ipv6_next_hop_rfc8950(running: Running) -> None:
    got = await running.exchange(
        frame(route_message("198.18.50.0/24", via="2001:db8::50", oif=3)),
        frame(route_message("198.18.51.0/24", via="fe80::1", oif=3)),
    )
    assert got == [
        v4("198.18.50.0/24", hop("2001:db8::50", 3)),
        v4("198.18.51.0/24", hop("fe80::1", 3)),
    ]
    assert got[0].family == 4 and got[0].next_hops[0].gateway.version == 6  # type: ignore[union-attr]


async def test_default_route_and_table_above_255(running: Running) -> None:
    got = await running.exchange(
        frame(route_message("0.0.0.0/0", gateway="198.18.0.1", oif=3, table=1000)),
        frame(route_message("::/0", gateway="2001:db8::1", oif=3)),
    )
    assert got == [
        v4("0.0.0.0/0", hop("198.18.0.1", 3), table=1000),
        v4("::/0", hop("2001:db8::1", 3)),
    ]


async def test_deletes(running: Running) -> None:
    got = await running.exchange(
        frame(route_message("198.18.60.0/24", gateway="198.18.0.1", oif=3)),
        frame(route_message("198.18.60.0/24", delete=True)),
        frame(route_message("2001:db8:60::/48", delete=True, gateway="2001:db8::1", oif=3)),
    )
    assert got == [
        v4("198.18.60.0/24", hop("198.18.0.1", 3)),
        v4("198.18.60.0/24", op=DELETE),
        v4("2001:db8:60::/48", hop("2001:db8::1", 3), op=DELETE),
    ]
    assert running.counters.routes_deleted == 2


async def test_a_delete_without_a_type(running: Running) -> None:
    got = await running.exchange(frame(route_message("2001:db8:61::/48", delete=True, rtype=0)))
    assert got == [v4("2001:db8:61::/48", op=DELETE)]
    assert running.counters.errors == {}


async def test_next_hop_objects_resolve_to_the_same_routes_as_inline(running: Running) -> None:
    inline = await running.exchange(
        frame(route_message("198.18.70.0/24", gateway="198.18.0.1", oif=3)),
        frame(
            route_message(
                "198.18.71.0/24",
                multipath=[
                    {"gateway": "198.18.0.1", "oif": 3, "weight": 1},
                    {"via": "2001:db8::2", "oif": 4, "weight": 3},
                ],
            )
        ),
        frame(route_message("198.18.72.0/24", rtype=6)),
    )
    objects = await running.exchange(
        frame(nexthop_message(1, gateway="198.18.0.1", oif=3)),
        frame(nexthop_message(2, gateway="2001:db8::2", oif=4)),
        frame(nexthop_message(3, group=[(1, 1), (2, 3)])),
        frame(nexthop_message(4, blackhole=True)),
        frame(route_message("198.18.70.0/24", nh_id=1)),
        frame(route_message("198.18.71.0/24", nh_id=3)),
        frame(route_message("198.18.72.0/24", nh_id=4)),
    )
    assert objects[:4] == [
        NextHopUpdate(ADD, 1, gateway=ip_address("198.18.0.1"), ifindex=3),
        NextHopUpdate(ADD, 2, gateway=ip_address("2001:db8::2"), ifindex=4),
        NextHopUpdate(ADD, 3, group=(GroupMember(1, 1), GroupMember(2, 3))),
        NextHopUpdate(ADD, 4, blackhole=True),
    ]
    routes = objects[4:]
    assert [r.nexthop_id for r in routes] == [1, 3, 4]  # type: ignore[union-attr]
    assert [
        (r.prefix, r.type, r.next_hops)  # type: ignore[union-attr]
        for r in routes
    ] == [(r.prefix, r.type, r.next_hops) for r in inline]  # type: ignore[union-attr]
    assert running.counters.nexthops_added == 4


async def test_changing_a_next_hop_object_moves_its_routes(running: Running) -> None:
    got = await running.exchange(
        frame(nexthop_message(1, gateway="198.18.0.1", oif=3)),
        frame(nexthop_message(2, gateway="198.18.0.2", oif=3)),
        frame(nexthop_message(10, group=[(1, 1), (2, 1)])),
        frame(route_message("198.18.80.0/24", nh_id=10)),
        frame(route_message("198.18.81.0/24", nh_id=1)),
        # replace member 1: both routes follow, without zebra resending them
        frame(nexthop_message(1, gateway="198.18.0.9", oif=5)),
        # delete member 2: the group shrinks, its route follows
        frame(nexthop_message(2, delete=True)),
        # delete object 1: the route naming it goes, and the group, now empty, with its route
        frame(nexthop_message(1, delete=True)),
    )
    routes = [u for u in got if isinstance(u, RouteUpdate)]
    assert routes == [
        v4("198.18.80.0/24", hop("198.18.0.1", 3), hop("198.18.0.2", 3), nexthop_id=10),
        v4("198.18.81.0/24", hop("198.18.0.1", 3), nexthop_id=1),
        v4("198.18.81.0/24", hop("198.18.0.9", 5), nexthop_id=1),
        v4("198.18.80.0/24", hop("198.18.0.9", 5), hop("198.18.0.2", 3), nexthop_id=10),
        v4("198.18.80.0/24", hop("198.18.0.9", 5), nexthop_id=10),
        v4("198.18.81.0/24", op=DELETE, nexthop_id=1),
        v4("198.18.80.0/24", op=DELETE, nexthop_id=10),
    ]
    assert NextHopUpdate(DELETE, 10) in got
    assert running.sink.routes == {} and running.sink.nexthops == {}


async def test_updates_naming_an_object_not_sent_yet_wait_for_it(running: Running) -> None:
    # zebra's replay after a reconnect walks a hash table: a route or a group can come first
    got = await running.exchange(
        frame(route_message("198.18.85.0/24", nh_id=7)),
        frame(route_message("198.18.86.0/24", nh_id=5)),
        frame(nexthop_message(7, group=[(5, 1), (6, 2)])),
        frame(route_message("198.18.87.0/24", nh_id=99)),  # 99 never comes
        frame(route_message("198.18.88.0/24", nh_id=98)),
        frame(route_message("198.18.88.0/24", delete=True)),  # no longer waits
        frame(nexthop_message(5, gateway="198.18.0.5", oif=3)),
        frame(nexthop_message(6, gateway="198.18.0.6", oif=4)),
    )
    assert got == [
        v4("198.18.88.0/24", op=DELETE),
        NextHopUpdate(ADD, 5, gateway=ip_address("198.18.0.5"), ifindex=3),
        v4("198.18.86.0/24", hop("198.18.0.5", 3), nexthop_id=5),
        NextHopUpdate(ADD, 6, gateway=ip_address("198.18.0.6"), ifindex=4),
        NextHopUpdate(ADD, 7, group=(GroupMember(5, 1), GroupMember(6, 2))),
        v4("198.18.85.0/24", hop("198.18.0.5", 3), hop("198.18.0.6", 4, 2), nexthop_id=7),
    ]
    assert running.counters.updates_held == 5
    # the route waiting for 99 is dropped and counted when the connection ends
    assert running.counters.errors == {"unknown_nexthop_id": 1}


def test_the_next_hop_objects_of_a_connection_are_bounded() -> None:
    table = NextHopTable(max_objects=2, max_waiting=1)
    table.apply(NextHopUpdate(ADD, 1, gateway=ip_address("198.18.0.1"), ifindex=3))
    table.apply(NextHopUpdate(ADD, 2, blackhole=True))
    table.apply(NextHopUpdate(ADD, 2, gateway=ip_address("198.18.0.2"), ifindex=3))  # replace
    with pytest.raises(DecodeError, match="already holds 2") as error:
        table.apply(NextHopUpdate(ADD, 3, blackhole=True))
    assert error.value.reason == "too_many_nexthop_objects"
    assert table.apply(v4("198.18.84.0/24", nexthop_id=9)) == []  # waits
    with pytest.raises(DecodeError, match="1 updates already wait") as error:
        table.apply(v4("198.18.83.0/24", nexthop_id=9))
    assert error.value.reason == "unknown_nexthop_id"
    assert len(table) == 2 and table.waiting == 1


async def test_a_frame_split_anywhere_decodes_the_same() -> None:
    stream = frame(route_message("198.18.90.0/24", gateway="198.18.0.1", oif=3)) + frame(
        nexthop_message(1, gateway="2001:db8::1", oif=3)
    )
    whole = FpmConnection(Peer(ip_address("127.0.0.1"), 1), FpmCounters(), ReasonLog())
    expected = whole.feed(stream)
    assert len(expected) == 2
    for cut in range(1, len(stream)):
        split = FpmConnection(Peer(ip_address("127.0.0.1"), 1), FpmCounters(), ReasonLog())
        assert split.feed(stream[:cut]) + split.feed(stream[cut:]) == expected, cut
        assert split.pending == 0


# -- bad input ---------------------------------------------------------------------------------

GOOD = frame(route_message("198.18.99.0/24", gateway="198.18.0.1", oif=3))
GOOD_ROUTE = v4("198.18.99.0/24", hop("198.18.0.1", 3))


async def test_garbage_closes_the_connection_after_what_came_before(running: Running) -> None:
    got = await running.exchange(GOOD + b"GET / HTTP/1.1\r\n\r\n" + GOOD, close=False)
    assert got == [GOOD_ROUTE]
    assert running.counters.errors == {"bad_fpm_version": 1}
    assert running.sink.downs == ["bad_fpm_version"]


async def test_a_frame_shorter_than_its_header_closes(running: Running) -> None:
    got = await running.exchange(GOOD + frame(b"", length=2) + GOOD, close=False)
    assert got == [GOOD_ROUTE]
    assert running.counters.errors == {"bad_fpm_length": 1}


async def test_unknown_fpm_type_is_skipped_and_the_stream_goes_on(running: Running) -> None:
    got = await running.exchange(frame(b"\x08\x01protobuf", kind=2) + GOOD)
    assert got == [GOOD_ROUTE]
    assert running.counters.errors == {"unknown_fpm_type": 1}
    assert running.sink.downs == ["closed by peer"]


async def test_length_past_the_end_of_the_stream(running: Running) -> None:
    got = await running.exchange(GOOD + frame(b"\x00" * 20, length=200))
    assert got == [GOOD_ROUTE]
    assert running.counters.errors == {"truncated_frame": 1}
    assert running.sink.downs == ["truncated_frame"]


async def test_netlink_length_past_the_end_of_its_frame(running: Running) -> None:
    message = bytearray(route_message("198.18.98.0/24", gateway="198.18.0.1", oif=3))
    struct.pack_into("=I", message, 0, len(message) + 40)
    got = await running.exchange(frame(bytes(message)) + GOOD)
    assert got == [GOOD_ROUTE]
    assert running.counters.errors == {"netlink_length": 1}


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        # a route message cut inside its rtmsg body
        (netlink_message(24, b"\x02\x18\x00"), "truncated_message"),
        # an attribute whose length runs past the message
        (netlink_message(24, struct.pack("=BBBBBBBBI", 2, 24, 0, 0, 254, 186, 0, 1, 0)
                         + struct.pack("=HH", 40, 1) + b"\xc6\x12\x01\x00"), "truncated_message"),
        # RTM_NEWLINK: not a message FPM carries for us
        (netlink_message(16, b"\x00" * 16), "unknown_message_type"),
        # a 16-byte gateway on an IPv4 route: pyroute2 would cut it silently
        (with_attribute(route_message("198.18.97.0/24", oif=3), 5, b"\x20\x01" + bytes(14)),
         "undecodable"),
        (route_message("198.18.97.0/24", rtype=2, oif=1), "unsupported_route_type"),
        (route_message("198.18.97.0/24", rtype=1), "missing_next_hop"),
        (netlink_message(24, struct.pack("=BBBBBBBBI", 28, 20, 0, 0, 254, 186, 0, 1, 0)),
         "unsupported_family"),
        (netlink_message(24, struct.pack("=BBBBBBBBI", 2, 33, 0, 0, 254, 186, 0, 1, 0)),
         "undecodable"),
        (route_message("198.18.97.1/24", oif=3), "bad_prefix"),
        (nexthop_message(7, delete=True), "unknown_nexthop_id"),
        (netlink_message(104, b"\x00" * 8), "undecodable"),  # no NHA_ID
    ],
)  # fmt: skip
async def test_a_bad_message_in_a_good_frame_is_skipped(
    running: Running, message: bytes, reason: str
) -> None:
    got = await running.exchange(frame(message) + GOOD)
    assert got == [GOOD_ROUTE]
    assert running.counters.errors == {reason: 1}
    assert running.counters.messages == 1
    assert running.sink.downs == ["closed by peer"]


async def test_at_most_512_next_hops(running: Running) -> None:
    def ecmp(prefix: str, count: int) -> bytes:
        return route_message(
            prefix,
            multipath=[
                {"gateway": f"198.18.{i // 250}.{i % 250 + 1}", "oif": 3} for i in range(count)
            ],
        )

    members = [frame(nexthop_message(i + 1, gateway="198.18.0.1", oif=3)) for i in range(513)]
    got = await running.exchange(
        frame(ecmp("198.18.96.0/24", MAX_NEXT_HOPS)),
        frame(ecmp("198.18.95.0/24", MAX_NEXT_HOPS + 1)),
        *members,
        frame(nexthop_message(1000, group=[(i + 1, 1) for i in range(513)])),
        frame(nexthop_message(1001, group=[(i + 1, 1) for i in range(512)])),
    )
    routes = [u for u in got if isinstance(u, RouteUpdate)]
    assert [(str(r.prefix), len(r.next_hops)) for r in routes] == [("198.18.96.0/24", 512)]
    assert [u.id for u in got if isinstance(u, NextHopUpdate) and u.group] == [1001]
    assert running.counters.errors == {"too_many_next_hops": 2}


async def test_a_flood_of_bad_messages_is_counted_and_the_log_stays_short(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    bad = frame(netlink_message(16, b"\x00" * 16))
    with caplog.at_level(logging.WARNING, logger="corridor.fpm.listener"):
        got = await running.exchange(bad * 20000 + GOOD)
    assert got == [GOOD_ROUTE]
    assert running.counters.errors == {"unknown_message_type": 20000}
    assert running.counters.frames == 20001
    lines = [r for r in caplog.records if "unknown_message_type" in r.getMessage()]
    assert 1 <= len(lines) <= 5


async def test_listener_keeps_serving_after_bad_connections(running: Running) -> None:
    await running.exchange(b"\xff" * 64, close=False)
    assert await running.exchange(GOOD) == [GOOD_ROUTE]
    assert running.counters.connections_accepted == 2
    assert running.counters.connections_closed == 2


# -- who may connect ---------------------------------------------------------------------------


async def test_beyond_loopback_needs_allowed_peers() -> None:
    with pytest.raises(ValueError, match=r"0\.0\.0\.0 is beyond loopback .* allowed_peers"):
        await start_listener("0.0.0.0", 0, RecordingSink())
    with pytest.raises(ValueError, match=r"'zebra' is not an IPv4 or IPv6 address"):
        await start_listener("127.0.0.1", 0, RecordingSink(), allowed_peers=["zebra"])


async def test_a_peer_not_allowed_is_refused_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    sink = RecordingSink()
    listener, port = await start_listener("127.0.0.1", 0, sink, allowed_peers=["127.0.0.2"])
    try:
        with caplog.at_level(logging.WARNING, logger="corridor.fpm.listener"):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(GOOD)
            assert await closed_by_far_end(reader)
            writer.close()
        assert listener.counters.connections_refused == 1
        assert sink.events == [] and sink.updates_seen == []
        assert any(
            "127.0.0.1" in r.getMessage() and "refused" in r.getMessage() for r in caplog.records
        )

        # from an allowed address (bound as the source), the same bytes are accepted
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, local_addr=("127.0.0.2", 0)
        )
        writer.write(GOOD)
        await writer.drain()
        await wait_until(lambda: len(sink.updates_seen) == 1, 10, "the allowed peer's route")
        writer.close()
        assert sink.updates_seen == [GOOD_ROUTE]
        assert sink.events[0][1].address == ip_address("127.0.0.2")
    finally:
        await listener.stop()


async def test_stop_closes_live_connections(running: Running) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
    writer.write(GOOD)
    await writer.drain()
    await wait_until(lambda: len(running.sink.updates_seen) == 1, 10, "the route")
    await running.listener.stop()
    assert await closed_by_far_end(reader)
    writer.close()
    assert running.sink.downs == ["listener stopped"]
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", running.port), timeout=2).close()
