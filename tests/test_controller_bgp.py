"""The controller's BGP source fed by the real FPM listener over loopback TCP with crafted
zebra messages: what is installed and how, what is filtered or not installed (counted by
reason), coalescing of zebra's delete + add, remapping when the agent's ports arrive, and
soft state: routes kept stale across a lost connection or a controller restart, removed after
the hold time unless the replay refreshed them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from corridor.common.config import ConfigError, HostPort, Table
from corridor.common.fib import Adjacency, Route, RouteKind
from corridor.controller.bgp import (
    BAD_GATEWAY,
    HIDDEN_IPV6_NEXT_HOP,
    ON_LINK,
    TOO_MANY_NEXT_HOPS,
    UNOWNED_INTERFACE,
    BgpIntent,
    BgpSource,
    FpmConfig,
    Interfaces,
    found_routes,
    fpm_from,
    list_routes,
    not_installed,
)
from corridor.controller.domain import MAX_NEXT_HOPS, Intent
from corridor.fpm import FpmListener, start_listener
from fpm_support import frame, nexthop_message, route_message, wait_until

pytestmark = pytest.mark.timeout(60)

NODE = "r1"
# The agent's ports as ListPorts reports them: ifindex -> (port, VLAN). 9 is the
# management interface, which is no port.
PORTS: Interfaces = {3: ("dut0", 0), 4: ("dut1", 0), 5: ("dut1", 20)}
MGMT = 9
STALE = 0.6  # seconds: short, so the tests are quick; nothing asserts on timing below it


@dataclass
class Core:
    """Implements BgpTarget: the node's BGP routes as the core would hold them, and every call."""

    routes: dict[str, Intent] = field(default_factory=dict)
    calls: list[tuple[dict[str, Intent], list[str]]] = field(default_factory=list)

    async def bgp_routes(
        self, node: str, routes: Mapping[str, Intent], deleted: Sequence[str]
    ) -> None:
        assert node == NODE
        assert routes or deleted, "an empty change must not reach the core"
        self.calls.append((dict(routes), list(deleted)))
        self.routes.update(routes)
        for prefix in deleted:
            del self.routes[prefix]  # a delete of what it does not hold is a bug

    @property
    def deleted(self) -> list[str]:
        return [p for _, deleted in self.calls for p in deleted]


@dataclass
class Feed:
    source: BgpSource
    core: Core
    listener: FpmListener
    port: int
    agent: Agent

    async def connect(self) -> asyncio.StreamWriter:
        ups = self.listener.counters.connections_accepted
        _, writer = await asyncio.open_connection("127.0.0.1", self.port)
        await wait_until(
            lambda: self.listener.counters.connections_accepted > ups, 10, "the connection"
        )
        return writer

    async def send(self, writer: asyncio.StreamWriter, *messages: bytes) -> None:
        """Each message in a frame of its own; returns once the source has taken them all."""
        before = self.source.counters.received
        writer.write(b"".join(frame(m) for m in messages))
        await writer.drain()
        await wait_until(
            lambda: self.source.counters.received >= before + _routes_in(messages),
            10,
            "the source to take the updates",
        )

    async def close(self, writer: asyncio.StreamWriter) -> None:
        closed = self.listener.counters.connections_closed
        writer.close()
        await writer.wait_closed()
        await wait_until(
            lambda: self.listener.counters.connections_closed > closed, 10, "the connection down"
        )


def _routes_in(messages: Sequence[bytes]) -> int:
    return sum(1 for m in messages if m[4] in (24, 25))  # nlmsg_type: routes only


@dataclass
class Agent:
    """The node's ports as its agent last reported them (None: not yet)."""

    ports: Interfaces | None = field(default_factory=lambda: dict(PORTS))


@pytest.fixture
async def feed() -> AsyncIterator[Feed]:
    core, agent = Core(), Agent()
    source = BgpSource(NODE, core, lambda: agent.ports, stale_seconds=STALE)
    listener, port = await start_listener("127.0.0.1", 0, source)
    try:
        yield Feed(source, core, listener, port, agent)
    finally:
        await listener.stop()
        await source.stop()


def hop(
    gateway: str, port: str, vlan: int = 0, weight: int = 1
) -> tuple[tuple[str, str, int], int]:
    return ((gateway, port, vlan), weight)


def forward(*hops: tuple[tuple[str, str, int], int]) -> Intent:
    return Intent(RouteKind.FORWARD, tuple(sorted(hops)))


# -- what is installed ----------------------------------------------------------------------


async def test_unicast_routes_map_interfaces_to_ports_and_vlans(feed: Feed) -> None:
    w = await feed.connect()
    await feed.send(
        w,
        route_message("198.18.10.0/24", gateway="198.18.0.1", oif=3),
        route_message("198.18.11.0/24", gateway="198.18.20.1", oif=5),
        route_message("2001:db8:10::/48", gateway="2001:db8:1::2", oif=4),
        route_message(
            "198.18.12.0/24",
            multipath=[
                {"gateway": "198.18.1.2", "oif": 4, "weight": 3},
                {"gateway": "198.18.0.1", "oif": 3, "weight": 1},
            ],
        ),
    )
    assert feed.core.routes == {
        "198.18.10.0/24": forward(hop("198.18.0.1", "dut0")),
        "198.18.11.0/24": forward(hop("198.18.20.1", "dut1", 20)),
        "2001:db8:10::/48": forward(hop("2001:db8:1::2", "dut1")),
        "198.18.12.0/24": forward(hop("198.18.0.1", "dut0", 0, 1), hop("198.18.1.2", "dut1", 0, 3)),
    }
    assert not_installed([feed.source]) == {}


async def test_routes_with_the_same_next_hops_share_one_intent(feed: Feed) -> None:
    w = await feed.connect()
    await feed.send(
        w,
        route_message("198.18.10.0/24", gateway="198.18.0.1", oif=3),
        route_message("198.18.11.0/24", gateway="198.18.0.1", oif=3),
    )
    a, b = feed.core.routes["198.18.10.0/24"], feed.core.routes["198.18.11.0/24"]
    assert a is b  # one object: the core counts distinct intents by identity


@pytest.mark.parametrize(
    ("rtype", "kind"),
    [(6, RouteKind.BLACKHOLE), (7, RouteKind.UNREACHABLE), (8, RouteKind.UNREACHABLE)],
)
async def test_discard_routes(feed: Feed, rtype: int, kind: RouteKind) -> None:
    w = await feed.connect()
    await feed.send(w, route_message("198.18.66.0/24", rtype=rtype))
    assert feed.core.routes == {"198.18.66.0/24": Intent(kind)}


async def test_ipv4_routes_via_ipv6_gateways_rfc8950_in_both_forms(feed: Feed) -> None:
    w = await feed.connect()
    await feed.send(
        w,
        route_message("198.18.50.0/24", via="2001:db8:1::2", oif=4),
        nexthop_message(7, gateway="fe80::2", oif=4),
        route_message("198.18.51.0/24", nh_id=7),
    )
    assert feed.core.routes == {
        "198.18.50.0/24": forward(hop("2001:db8:1::2", "dut1")),
        "198.18.51.0/24": forward(hop("fe80::2", "dut1")),
    }


async def test_next_hop_objects_give_the_same_intents_as_inline(feed: Feed) -> None:
    w = await feed.connect()
    await feed.send(
        w,
        nexthop_message(1, gateway="198.18.0.1", oif=3),
        nexthop_message(2, gateway="198.18.1.2", oif=4),
        nexthop_message(3, group=[(1, 1), (2, 3)]),
        route_message("198.18.12.0/24", nh_id=3),
    )
    assert feed.core.routes == {
        "198.18.12.0/24": forward(hop("198.18.0.1", "dut0", 0, 1), hop("198.18.1.2", "dut1", 0, 3)),
    }
    # A changed object moves its routes (the listener re-sends them).
    await feed.send(w, nexthop_message(2, gateway="198.18.1.3", oif=4))
    await wait_until(
        lambda: hop("198.18.1.3", "dut1", 0, 3) in (feed.core.routes["198.18.12.0/24"].group or ()),
        10,
        "the route to follow its next-hop object",
    )


# -- what is not installed ------------------------------------------------------------------


async def test_connected_and_other_tables_are_filtered(feed: Feed) -> None:
    w = await feed.connect()
    await feed.send(
        w,
        route_message("198.18.0.0/24", oif=3, proto=2),  # connected, on-link
        route_message("198.18.70.0/24", gateway="198.18.0.1", oif=3, table=100),
        route_message("198.18.71.0/24", gateway="198.18.0.1", oif=3, proto=196),  # FRR static
    )
    assert feed.core.routes == {"198.18.71.0/24": forward(hop("198.18.0.1", "dut0"))}
    assert feed.source.counters.filtered == 2
    assert not_installed([feed.source]) == {}  # filtered by design: not a fault


async def test_a_kernel_route_replacing_a_bgp_route_removes_it(feed: Feed) -> None:
    w = await feed.connect()
    await feed.send(w, route_message("198.18.72.0/24", gateway="198.18.0.1", oif=3))
    assert "198.18.72.0/24" in feed.core.routes
    await feed.send(w, route_message("198.18.72.0/24", oif=3, proto=2))
    assert feed.core.routes == {} and feed.core.deleted == ["198.18.72.0/24"]


async def test_a_route_through_an_unowned_interface_is_counted_not_installed(feed: Feed) -> None:
    w = await feed.connect()
    await feed.send(
        w,
        route_message("198.18.80.0/24", gateway="192.0.2.1", oif=MGMT),
        route_message(
            "198.18.81.0/24",
            multipath=[{"gateway": "198.18.0.1", "oif": 3}, {"gateway": "192.0.2.1", "oif": MGMT}],
        ),
        route_message("198.18.82.0/24", gateway="198.18.0.1", oif=3),  # the feed goes on
        route_message("198.18.83.0/24", oif=3),  # on-link: no gateway to resolve
        route_message("198.18.84.0/24", gateway="224.0.0.5", oif=3),
        route_message("198.18.85.0/24", gateway="169.254.0.1", oif=4),  # FRR's RFC 8950 inline
    )
    assert feed.core.routes == {"198.18.82.0/24": forward(hop("198.18.0.1", "dut0"))}
    assert not_installed([feed.source]) == {
        UNOWNED_INTERFACE: 2, ON_LINK: 1, BAD_GATEWAY: 1, HIDDEN_IPV6_NEXT_HOP: 1,
    }  # fmt: skip
    # The same prefix through a port later: installed, and no longer counted now.
    await feed.send(w, route_message("198.18.80.0/24", gateway="198.18.0.1", oif=3))
    assert "198.18.80.0/24" in feed.core.routes
    assert not_installed([feed.source]) == {
        UNOWNED_INTERFACE: 1, ON_LINK: 1, BAD_GATEWAY: 1, HIDDEN_IPV6_NEXT_HOP: 1,
    }  # fmt: skip
    assert feed.source.counters.not_installed_total[UNOWNED_INTERFACE] == 2
    # An installed route moving to the management port is removed.
    await feed.send(w, route_message("198.18.82.0/24", gateway="192.0.2.1", oif=MGMT))
    assert "198.18.82.0/24" not in feed.core.routes
    assert not_installed([feed.source])[UNOWNED_INTERFACE] == 2


async def test_more_next_hops_than_a_group_holds(feed: Feed) -> None:
    w = await feed.connect()
    hops = [
        {"gateway": f"198.18.{i // 200}.{i % 200 + 1}", "oif": 3} for i in range(MAX_NEXT_HOPS + 1)
    ]
    await feed.send(w, route_message("198.18.90.0/24", multipath=hops))
    assert feed.core.routes == {}
    assert not_installed([feed.source]) == {TOO_MANY_NEXT_HOPS: 1}


async def test_routes_wait_for_the_agents_ports(feed: Feed) -> None:
    feed.agent.ports = None
    w = await feed.connect()
    await feed.send(
        w,
        route_message("198.18.10.0/24", gateway="198.18.0.1", oif=3),
        route_message("198.18.66.0/24", rtype=6),  # needs no port
    )
    assert feed.core.routes == {"198.18.66.0/24": Intent(RouteKind.BLACKHOLE)}
    feed.agent.ports = dict(PORTS)
    await feed.source.ports_changed()
    assert feed.core.routes["198.18.10.0/24"] == forward(hop("198.18.0.1", "dut0"))
    assert not_installed([feed.source]) == {}
    # A port renumbered (its device re-created): remapped, and the stale ifindex is no port.
    feed.agent.ports = {13: ("dut0", 0)}
    await feed.source.ports_changed()
    assert "198.18.10.0/24" not in feed.core.routes
    assert not_installed([feed.source]) == {UNOWNED_INTERFACE: 1}


# -- changes --------------------------------------------------------------------------------


async def test_zebras_delete_and_add_of_a_change_never_removes_the_route(feed: Feed) -> None:
    w = await feed.connect()
    await feed.send(w, route_message("198.18.10.0/24", gateway="198.18.0.1", oif=3))
    # zebra writes an update as RTM_DELROUTE + RTM_NEWROUTE in one frame.
    both = route_message("198.18.10.0/24", delete=True, gateway="198.18.0.1", oif=3)
    both += route_message("198.18.10.0/24", gateway="198.18.1.2", oif=4)
    before = feed.source.counters.received
    w.write(frame(both))
    await w.drain()
    await wait_until(lambda: feed.source.counters.received == before + 2, 10, "the change")
    assert feed.core.deleted == []
    assert feed.core.routes == {"198.18.10.0/24": forward(hop("198.18.1.2", "dut1"))}


async def test_a_withdrawal_removes_the_route(feed: Feed) -> None:
    w = await feed.connect()
    await feed.send(w, route_message("198.18.10.0/24", gateway="198.18.0.1", oif=3))
    await feed.send(w, route_message("198.18.10.0/24", delete=True, rtype=0))
    assert feed.core.routes == {} and feed.core.deleted == ["198.18.10.0/24"]


# -- soft state -----------------------------------------------------------------------------


async def test_a_lost_connection_keeps_the_routes_until_the_replay(feed: Feed) -> None:
    w = await feed.connect()
    await feed.send(
        w,
        route_message("198.18.10.0/24", gateway="198.18.0.1", oif=3),
        route_message("198.18.11.0/24", gateway="198.18.0.1", oif=3),
        route_message("198.18.80.0/24", gateway="192.0.2.1", oif=MGMT),
    )
    await feed.close(w)
    # Nothing withdrawn: all stale.
    assert set(feed.core.routes) == {"198.18.10.0/24", "198.18.11.0/24"}
    assert feed.source.stale == 3 and not feed.source.connected
    # zebra comes back and replays part of its table, one route changed.
    w = await feed.connect()
    await feed.send(w, route_message("198.18.10.0/24", gateway="198.18.1.2", oif=4))
    assert feed.source.stale == 2
    assert feed.core.deleted == []
    await wait_until(lambda: feed.source.counters.swept == 2, 10, "the stale routes to go")
    assert feed.core.routes == {"198.18.10.0/24": forward(hop("198.18.1.2", "dut1"))}
    assert feed.core.deleted == ["198.18.11.0/24"]
    assert feed.source.stale == 0 and not_installed([feed.source]) == {}
    await feed.close(w)


async def test_without_a_reconnection_everything_goes_after_the_hold_time(feed: Feed) -> None:
    w = await feed.connect()
    await feed.send(w, route_message("198.18.10.0/24", gateway="198.18.0.1", oif=3))
    await feed.close(w)
    await asyncio.sleep(STALE / 3)
    assert feed.core.routes != {}  # still held
    await wait_until(lambda: feed.core.routes == {}, 10, "the hold time to end")
    assert feed.core.deleted == ["198.18.10.0/24"]


async def test_routes_found_at_start_are_adopted_until_zebra_sends_them(feed: Feed) -> None:
    found = {
        "198.18.10.0/24": forward(hop("198.18.0.1", "dut0")),
        "198.18.11.0/24": forward(hop("198.18.0.1", "dut0")),
    }
    await feed.source.adopt(found)
    assert feed.core.routes == found and feed.source.stale == 2
    w = await feed.connect()
    await feed.send(w, route_message("198.18.10.0/24", gateway="198.18.0.1", oif=3))
    await wait_until(lambda: feed.source.counters.swept == 1, 10, "the unrefreshed route to go")
    assert feed.core.routes == {"198.18.10.0/24": found["198.18.10.0/24"]}
    # The refreshed route was not written again: it was already what zebra sent.
    assert [set(r) for r, _ in feed.core.calls] == [set(found), set()]
    await feed.close(w)


# -- [[fpm]] --------------------------------------------------------------------------------


def _fpm(*tables: dict[str, object]) -> tuple[FpmConfig, ...]:
    top = Table({"fpm": list(tables)}, "")
    configs = fpm_from(top)
    top.finish()
    return configs


def test_fpm_config_defaults() -> None:
    (config,) = _fpm({"node": "local"})
    assert config == FpmConfig("local", HostPort("127.0.0.1", 2620), None, 120.0, None)
    (config,) = _fpm(
        {
            "node": "r1",
            "listen": "[::1]:2700",
            "allowed_peers": ["::1"],
            "stale_seconds": 30,
            "netns": "router",
            "filter_hold_seconds": 5,
        }
    )
    assert config == FpmConfig("r1", HostPort("::1", 2700), ("::1",), 30.0, "router", 5.0)


def test_fpm_config_beyond_loopback_needs_allowed_peers() -> None:
    with pytest.raises(ConfigError) as caught:
        _fpm({"node": "r1", "listen": "0.0.0.0:2620"})
    (problem,) = caught.value.problems
    assert problem.startswith("fpm[0].allowed_peers: is required: listen 0.0.0.0:2620 is beyond")
    (config,) = _fpm({"node": "r1", "listen": "0.0.0.0:2620", "allowed_peers": ["198.18.0.9"]})
    assert config.allowed_peers == ("198.18.0.9",)


def test_fpm_config_problems_name_their_fields() -> None:
    with pytest.raises(ConfigError) as caught:
        _fpm(
            {"node": "bad name", "listen": "nowhere", "allowed_peers": ["x"], "extra": 1},
            {"node": "r1", "stale_seconds": 0, "filter_hold_seconds": 86401},
            {"node": "r1"},
        )
    fields = [p.split(":")[0] for p in caught.value.problems]
    assert fields == [
        "fpm[0].node",
        "fpm[0].listen",
        "fpm[0].allowed_peers[0]",
        "fpm[0].extra",
        "fpm[1].stale_seconds",
        "fpm[1].filter_hold_seconds",
        "fpm[2].listen",
        "fpm[2].node",
    ]
    assert (
        caught.value.problems[-1]
        == "fpm[2].node: 'r1' is already fed by fpm[1]; one zebra per node"
    )


# -- BgpIntent: ids beside the operator's -----------------------------------------------------


def test_bgp_groups_take_the_lowest_free_ids_and_free_them() -> None:
    group_keys: dict[int, Any] = {1: ((("x", "dut0", 0), 1),)}  # the operator's group 1
    adjacency_keys: dict[int, Any] = {1: ("x", "dut0", 0)}
    bgp = BgpIntent(group_keys, adjacency_keys, max_groups=4, max_adjacencies=3)
    a = forward(hop("198.18.0.1", "dut0"))
    b = forward(hop("198.18.0.1", "dut0"), hop("198.18.1.2", "dut1"))
    changed, refused, unused = bgp.apply(NODE, {"198.18.10.0/24": a, "198.18.11.0/24": b}, ())
    assert (sorted(changed), refused, unused) == (["198.18.10.0/24", "198.18.11.0/24"], [], [])
    assert bgp.group_ids == {a.group: 2, b.group: 3}
    assert bgp.adjacency_ids == {("198.18.0.1", "dut0", 0): 2, ("198.18.1.2", "dut1", 0): 3}
    assert group_keys[2] == a.group and adjacency_keys[3] == ("198.18.1.2", "dut1", 0)
    assert bgp.sizes() == (2, 0, 2, 2)
    # No adjacency id left for a third next hop: refused whole, nothing taken.
    c_ = forward(hop("198.18.1.3", "dut1"), hop("198.18.1.4", "dut1"))
    changed, refused, unused = bgp.apply(NODE, {"198.18.12.0/24": c_}, ())
    assert (changed, refused, bgp.ids_exhausted) == ([], ["198.18.12.0/24"], 1)
    assert len(group_keys) == 3 and len(adjacency_keys) == 3
    # Moving a route off a group and deleting the other: both groups unused, then freed.
    changed, _, unused = bgp.apply(NODE, {"198.18.11.0/24": a}, ["198.18.10.0/24"])
    assert sorted(changed) == ["198.18.10.0/24", "198.18.11.0/24"] and unused == [b.group]
    bgp.forget(unused)
    assert bgp.group_ids == {a.group: 2} and 3 not in group_keys and 3 not in adjacency_keys
    _, _, unused = bgp.apply(NODE, {}, ["198.18.11.0/24"])
    bgp.forget(unused)
    assert group_keys == {1: ((("x", "dut0", 0), 1),)} and adjacency_keys == {1: ("x", "dut0", 0)}
    assert bgp.sizes() == (0, 0, 0, 0)


def test_routes_found_on_a_node_become_intents_but_the_operators() -> None:
    adjacencies = {
        7: Adjacency(7, "dut0", 0, "", "", "198.18.0.1"),
        8: Adjacency(8, "dut1", 20, "", "", "fe80::2"),
        9: Adjacency(9, "dut1", 0, "02:00:00:00:00:01", "02:00:00:00:00:02"),  # not ours
    }
    groups = {70: ((7, 1), (8, 3)), 71: ((9, 1),)}
    routes = [
        Route("198.18.10.0/24", RouteKind.FORWARD, 70),
        Route("198.18.11.0/24", RouteKind.FORWARD, 70),
        Route("198.18.12.0/24", RouteKind.FORWARD, 71),
        Route("198.18.13.0/24", RouteKind.BLACKHOLE),
        Route("198.18.14.0/24", RouteKind.LOCAL),
        Route("198.18.15.0/24", RouteKind.FORWARD, 70),  # the operator's
    ]
    found = found_routes(routes, groups, adjacencies, lambda p: p == "198.18.15.0/24")
    both = forward(hop("198.18.0.1", "dut0", 0, 1), hop("fe80::2", "dut1", 20, 3))
    assert found == {
        "198.18.10.0/24": both,
        "198.18.11.0/24": both,
        "198.18.13.0/24": Intent(RouteKind.BLACKHOLE),
    }
    assert found["198.18.10.0/24"] is found["198.18.11.0/24"]


def test_bgp_routes_list_in_order_with_filters_and_pages() -> None:
    bgp = BgpIntent({}, {}, 16, 16)
    a = forward(hop("198.18.0.1", "dut0"))
    bgp.apply("r2", {"198.19.0.0/16": a, "2001:db8::/32": a}, ())
    bgp.apply(
        "r1",
        {
            "198.19.10.0/24": a,
            "198.19.2.0/24": a,
            "10.0.0.0/8": Intent(RouteKind.BLACKHOLE),
            "198.19.10.0/25": a,
        },
        (),
    )

    def listed(**kw: Any) -> list[tuple[str, str]]:
        args = {"node": None, "within": None, "kind": 0, "limit": 100, "after": None, **kw}
        return [key for key, _, _ in list_routes(bgp.routes, **args)]

    everything = [
        ("r1", "10.0.0.0/8"),
        ("r1", "198.19.2.0/24"),
        ("r1", "198.19.10.0/24"),
        ("r1", "198.19.10.0/25"),
        ("r2", "198.19.0.0/16"),
        ("r2", "2001:db8::/32"),
    ]
    assert listed() == everything
    assert listed(node="r2") == everything[4:] and listed(node="r3") == []
    assert listed(within="198.19.0.0/16") == everything[1:5]
    assert listed(within="198.19.10.0/24") == everything[2:4]
    assert listed(kind=int(RouteKind.BLACKHOLE)) == everything[:1]
    # Pages of two, each after the last of the one before.
    pages, after = [], None
    while True:
        rows = list_routes(bgp.routes, None, None, 0, 2, after)
        pages.append([key for key, _, _ in rows])
        if len(rows) < 2:
            break
        (node, _), _, sort_key = rows[-1]
        after = (node, sort_key)
    assert [k for page in pages for k in page] == everything
