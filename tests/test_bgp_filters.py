"""Member source filters derived from BGP (controller/bgp_filters.py), the logic alone: which
member a route is attributed to (its next hops, the EUI-64 link-local address, ECMP), the
sticky rule (a prefix stays while the node routes it, whatever the next hop), the hold
time counted only while zebra is connected, prefixes restored from the store and checked
once zebra has replayed, the limit (aggregated first, never a truncated filter: no filter,
counted) and the stored forms. The clock is passed in: nothing here waits."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

import pytest

from corridor.common.fib import MEMBER_SOURCES_MAX, RouteKind
from corridor.controller.bgp_filters import BgpFilters, aggregate, in_force
from corridor.controller.domain import Intent
from corridor.controller.members import (
    BGP_SAVED_MAX,
    MemberError,
    MemberRecord,
    bgp_from_json,
    bgp_to_json,
    check_next_hops,
    link_local,
)

NODE = "r1"
HOLD = 10.0
ACME = MemberRecord(
    "acme", NODE, "dut0", 0, "02:0a:00:00:00:01", 1, (), ("198.18.0.2", "2001:db8::2")
)
BRAVO = MemberRecord("bravo", NODE, "dut0", 0, "02:0b:00:00:00:02", 2, (), ("198.18.0.3",))


def via(*gateways: str, port: str = "dut0", vlan: int = 0) -> Intent:
    return Intent(RouteKind.FORWARD, tuple(sorted(((g, port, vlan), 1) for g in gateways)))


class Node:
    """The core as the filters see it: the node's BGP table and zebra's connection."""

    def __init__(self) -> None:
        self.table: dict[str, Intent] = {}
        self.up: float | None = 0.0  # connected since t=0

    def filters(self) -> BgpFilters:
        return BgpFilters(lambda node: self.table, lambda node: self.up, lambda node: HOLD)

    def feed(
        self, filters: BgpFilters, routes: Mapping[str, Intent], deleted: tuple[str, ...] = ()
    ) -> None:
        """A change of the node's BGP routes, as core.bgp_routes hands it on."""
        self.table.update(routes)
        for prefix in deleted:
            self.table.pop(prefix, None)
        filters.observe(NODE, routes, deleted)


@pytest.fixture
def node() -> Node:
    return Node()


def test_routes_through_a_members_next_hops_are_its_own(node: Node) -> None:
    f = node.filters()
    f.track(ACME)
    f.track(BRAVO)
    node.feed(f, {
        "198.18.10.0/24": via("198.18.0.2"),
        "2001:db8:a::/48": via("2001:db8::2"),
        "2001:db8:b::/48": via(link_local(ACME.mac)),  # zebra's IPv6 next hop on a LAN
        "198.18.20.0/24": via("198.18.0.3"),
        "198.18.30.0/24": via("198.18.0.9"),  # nobody's
        "198.18.40.0/24": via("198.18.0.2", port="dut1"),  # the address, on another port
        "198.18.50.0/24": via("198.18.0.2", "198.18.0.3"),  # ECMP: both members'
    })  # fmt: skip
    assert f.flush(0.0) == ["acme", "bravo"]
    assert f.filter_of(ACME) == (
        "198.18.10.0/24", "198.18.50.0/24", "2001:db8:a::/48", "2001:db8:b::/48",
    )  # fmt: skip
    assert f.filter_of(BRAVO) == ("198.18.20.0/24", "198.18.50.0/24")
    assert f.view("acme") == (f.filter_of(ACME), 4, False, False)
    assert f.flush(0.0) == []  # nothing changed: nothing to push


def test_a_member_without_bgp_keeps_its_static_filter_and_costs_nothing(node: Node) -> None:
    f = node.filters()
    static = MemberRecord("carol", NODE, "dut0", 0, "02:0c:00:00:00:03", 3, ("198.18.9.0/24",))
    node.feed(f, {"198.18.10.0/24": via("198.18.0.2")}, ("198.18.11.0/24",))
    assert f.filter_of(static) == ("198.18.9.0/24",)
    assert f.owners == {} and f.leaving == {} and f.flush(0.0) == []


def test_static_prefixes_are_part_of_the_filter(node: Node) -> None:
    f = node.filters()
    node.feed(f, {"198.18.10.0/24": via("198.18.0.2")})
    member = MemberRecord(**{**_fields(ACME), "sources": ("2001:db8:f::/48",)})
    f.track(member)  # the table as it is now is scanned
    assert f.filter_of(member) == ("198.18.10.0/24", "2001:db8:f::/48")
    f.track(MemberRecord(**{**_fields(member), "sources": ()}))  # same next hops: kept
    assert f.filter_of(ACME) == ("198.18.10.0/24",)


def test_a_prefix_stays_while_routed_whatever_its_next_hop(node: Node) -> None:
    """FPM carries best paths only: a multihomed member's prefix that becomes best via
    another member stays in its filter (and is the other's too once seen via it)."""
    f = node.filters()
    f.track(ACME)
    f.track(BRAVO)
    node.feed(f, {"198.18.10.0/24": via("198.18.0.2")})
    node.feed(f, {"198.18.10.0/24": via("198.18.0.9")})  # best via a non-member now
    node.feed(f, {"198.18.10.0/24": via("198.18.0.3")})  # and via bravo
    f.flush(100.0)
    assert f.filter_of(ACME) == ("198.18.10.0/24",)
    assert f.filter_of(BRAVO) == ("198.18.10.0/24",)


def test_a_withdrawn_prefix_leaves_after_the_hold_time(node: Node) -> None:
    f = node.filters()
    f.track(ACME)
    node.feed(f, {"198.18.10.0/24": via("198.18.0.2"), "198.18.11.0/24": via("198.18.0.2")})
    f.flush(20.0)
    node.feed(f, {}, ("198.18.10.0/24",))  # due at now + HOLD (time.monotonic)
    due = f.leaving[NODE]["198.18.10.0/24"]
    assert f.flush(due - 0.1) == [] and f.filter_of(ACME) == ("198.18.10.0/24", "198.18.11.0/24")
    assert f.flush(due) == ["acme"]
    assert f.filter_of(ACME) == ("198.18.11.0/24",)
    # Withdrawn and announced again within the hold time (a flap, or zebra's delete and add
    # in two frames): it stays, even when back via someone else.
    node.feed(f, {}, ("198.18.11.0/24",))
    node.feed(f, {"198.18.11.0/24": via("198.18.0.9")})
    assert f.leaving[NODE] == {}
    f.flush(due + 1000)
    assert f.filter_of(ACME) == ("198.18.11.0/24",)


def test_nothing_is_taken_away_while_zebra_is_away_or_replaying(node: Node) -> None:
    """bgp.py removes routes zebra did not send again within stale_seconds: while zebra
    is away, or until it has been back for the hold time, such removals wait."""
    f = node.filters()
    f.track(ACME)
    node.feed(f, {"198.18.10.0/24": via("198.18.0.2")})
    f.flush(0.0)
    node.up = None  # the connection dropped; bgp.py's sweep then removes the route
    node.feed(f, {}, ("198.18.10.0/24",))
    due = f.leaving[NODE]["198.18.10.0/24"]
    assert f.flush(due + 1000) == [] and f.filter_of(ACME) == ("198.18.10.0/24",)
    node.up = due + 1000  # back; replaying
    assert f.flush(due + 1000 + HOLD / 2) == []
    assert f.filter_of(ACME) == ("198.18.10.0/24",)
    assert f.flush(due + 1000 + HOLD) == ["acme"]  # replayed without it: gone
    assert f.filter_of(ACME) == ()  # the member announces nothing: it may send nothing


def test_restored_prefixes_count_until_zebra_has_replayed(node: Node) -> None:
    """A restarted controller takes the saved prefixes at once (the agent's filter is
    rewritten with the same set); once zebra has been connected for the hold time, those
    the node no longer routes go, the others stay (sticky, whatever their next hop)."""
    saved = MemberRecord(**{**_fields(ACME), "bgp_sources": ("198.18.10.0/24", "198.18.12.0/24")})
    node.up = None
    f = node.filters()
    f.track(saved, restore=True)
    assert f.filter_of(saved) == ("198.18.10.0/24", "198.18.12.0/24")
    node.up = 5.0
    node.feed(f, {"198.18.10.0/24": via("198.18.0.7"), "198.18.11.0/24": via("198.18.0.2")})
    assert f.flush(5.0 + HOLD - 1) == ["acme"]  # the new one, nothing taken away yet
    assert f.filter_of(saved) == ("198.18.10.0/24", "198.18.11.0/24", "198.18.12.0/24")
    assert f.flush(5.0 + HOLD) == ["acme"]
    assert f.filter_of(saved) == ("198.18.10.0/24", "198.18.11.0/24")
    assert f.to_save("acme") == ("198.18.10.0/24", "198.18.11.0/24")


def test_restored_over_the_limit_stays_unfiltered_until_replayed(node: Node) -> None:
    saved = MemberRecord(**{**_fields(ACME), "bgp_sources": None})
    f = node.filters()
    f.track(saved, restore=True)
    assert f.filter_of(saved) is None and f.view("acme")[2:] == (False, True)  # pending
    node.feed(f, {"198.18.10.0/24": via("198.18.0.2")})
    f.flush(HOLD)
    assert f.filter_of(saved) == ("198.18.10.0/24",)


def test_derived_while_zebra_is_away_it_waits_for_the_replay(node: Node) -> None:
    """A filter derived from a table zebra has not (re)played whole would drop the member's
    own traffic: the member is not filtered until zebra has been connected for the hold."""
    node.feed(node_filters := node.filters(), {"198.18.10.0/24": via("198.18.0.2")})
    f = node_filters
    node.up = None
    f.track(ACME)
    assert f.filter_of(ACME) is None and f.view("acme") == (("198.18.10.0/24",), 1, False, True)
    node.up = 1000.0
    node.feed(f, {"198.18.11.0/24": via("198.18.0.2")})
    f.flush(1000.0 + HOLD - 1)
    assert f.filter_of(ACME) is None  # replaying
    assert f.flush(1000.0 + HOLD) == ["acme"]
    assert f.filter_of(ACME) == ("198.18.10.0/24", "198.18.11.0/24")
    assert f.view("acme")[3] is False


def _spread(count: int, start: int = 0) -> dict[str, Intent]:
    """`count` /32s no two of which aggregate (every other address)."""
    base = int(ipaddress.IPv4Address("198.18.0.0"))
    hop = via("198.18.0.2")
    return {f"{ipaddress.IPv4Address(base + 2 * i)}/32": hop for i in range(start, start + count)}


def test_over_the_limit_the_member_is_not_filtered_and_it_is_counted(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    f = node.filters()
    f.track(ACME)
    node.feed(f, _spread(MEMBER_SOURCES_MAX))
    f.flush(0.0)
    assert len(f.filter_of(ACME) or ()) == MEMBER_SOURCES_MAX and f.over_limit_total == 0
    node.feed(f, _spread(1, MEMBER_SOURCES_MAX))
    assert f.flush(0.0) == ["acme"]
    assert f.filter_of(ACME) is None  # never a truncated filter: it would drop its traffic
    assert f.view("acme")[1:] == (MEMBER_SOURCES_MAX + 1, True, False)
    assert f.over_limit_total == 1
    assert "NOT filtered" in caplog.text
    # Far above: not even kept for the store, shown by count only.
    node.feed(f, _spread(BGP_SAVED_MAX, MEMBER_SOURCES_MAX + 1))
    f.flush(0.0)
    assert f.to_save("acme") is None
    assert f.view("acme") == ((), BGP_SAVED_MAX + 4097, True, False)
    assert f.over_limit_total == 1  # counted once per time over


def test_adjacent_prefixes_are_aggregated_to_fit(node: Node) -> None:
    f = node.filters()
    f.track(ACME)
    hop = via("198.18.0.2")
    node.feed(f, {f"198.18.{i >> 8}.{i & 255}/32": hop for i in range(MEMBER_SOURCES_MAX + 4)})
    f.flush(0.0)
    assert f.filter_of(ACME) == ("198.18.0.0/20", "198.18.16.0/30")
    assert not f.view("acme")[2]


def test_aggregate_and_in_force() -> None:
    assert aggregate(["198.18.0.0/25", "198.18.0.128/25", "198.18.0.7/32", "2001:db8::/33",
                      "2001:db8:8000::/33"]) == ("198.18.0.0/24", "2001:db8::/32")  # fmt: skip
    assert in_force(("198.18.1.0/24",), {"198.18.0.0/24"}) == ("198.18.0.0/24", "198.18.1.0/24")
    assert in_force((), set()) == ()


def test_next_hops_change_and_untrack(node: Node) -> None:
    f = node.filters()
    f.track(ACME)
    node.feed(f, {"198.18.10.0/24": via("198.18.0.2"), "198.18.20.0/24": via("198.18.0.5")})
    moved = MemberRecord(**{**_fields(ACME), "bgp_next_hops": ("198.18.0.5",)})
    assert f.preview(moved) == ("198.18.20.0/24",)
    f.track(moved)  # new next hops: the table is scanned for them afresh
    assert f.filter_of(moved) == ("198.18.20.0/24",)
    node.feed(f, {"198.18.21.0/24": via("198.18.0.5"), "198.18.11.0/24": via("198.18.0.2")})
    f.flush(0.0)
    assert f.filter_of(moved) == ("198.18.20.0/24", "198.18.21.0/24")
    assert f.owner_of(NODE, [("198.18.0.5", "dut0", 0)], "bravo") == ("acme", "198.18.0.5")
    assert f.owner_of(NODE, [("198.18.0.5", "dut0", 0)], "acme") == ("", "")
    f.untrack("acme")
    assert f.hops[NODE] == {} and f.owners[NODE] == {}
    node.feed(f, {"198.18.22.0/24": via("198.18.0.5")})
    assert f.flush(0.0) == []


def test_next_hop_checks_and_stored_forms() -> None:
    assert check_next_hops("acme", ["2001:DB8::2", "198.18.0.2", "198.18.0.2"]) == (
        "198.18.0.2", "2001:db8::2",
    )  # fmt: skip
    for bad, text in (
        ([], "needs the member router's next-hop addresses"),
        (["198.18.0.256"], "'198.18.0.256' is not an IPv4 or IPv6 address"),
        (["224.0.0.5"], "224.0.0.5 is not a unicast address"),
        (["0.0.0.0"], "0.0.0.0 is not a unicast address"),
        (["::ffff:198.18.0.2"], "is not a unicast address"),
        ([f"198.18.0.{i}" for i in range(1, 18)], "17 next hops exceed the limit of 16"),
    ):
        with pytest.raises(MemberError, match=text):
            check_next_hops("acme", bad)
    assert link_local("02:0a:00:00:00:01") == "fe80::a:ff:fe00:1"
    member = MemberRecord(**{**_fields(ACME), "bgp_sources": ("198.18.10.0/24",)})
    assert bgp_from_json("acme", bgp_to_json(member)) == (ACME.bgp_next_hops, ("198.18.10.0/24",))
    over = MemberRecord(**{**_fields(ACME), "bgp_sources": None})
    assert bgp_from_json("acme", bgp_to_json(over)) == (ACME.bgp_next_hops, None)
    assert bgp_from_json("acme", None) == (None, ())
    for bad in ('"x"', '{"sources": []}', '{"next_hops": "198.18.0.2"}',
                '{"next_hops": ["198.18.0.2"], "sources": ["198.18.0.1/24"]}'):  # fmt: skip
        with pytest.raises(MemberError, match="member acme: stored"):
            bgp_from_json("acme", bad)


def _fields(m: MemberRecord) -> dict[str, object]:
    return {k: getattr(m, k) for k in MemberRecord.__slots__}  # type: ignore[attr-defined]
