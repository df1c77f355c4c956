"""Hosts on attached subnets, without an engine or a namespace: the configuration refuses
what would make attached subnets ambiguous, the host table turns the engine's queue and the
kernel's neighbours into host routes (within its rate and room, ignoring what is not a host,
following MACs, giving up, ageing), and the Dataplane keeps the agent's own entries apart
from writers' (reserved ids and attached prefixes refused, host routes hidden from Read, a
writer's route for a host's prefix wins), against the engine's real FIB."""

from __future__ import annotations

from pathlib import Path

import pytest

from corridor.agent.config import AgentConfig, GleanConfig, load, parse
from corridor.agent.domain import Dataplane
from corridor.agent.fib_adapter import EngineFib
from corridor.agent.glean import HostTable, attached_subnets, host_room, in_order
from corridor.agent.metrics import _glean_metrics
from corridor.agent.nexthops import Gateway
from corridor.common.config import ConfigError
from corridor.common.errors import InvalidBatch
from corridor.common.fib import (
    Adjacency,
    DeleteAdjacency,
    DeleteGroup,
    DeleteRoute,
    GleanRoute,
    NextHopGroup,
    Route,
    RouteKind,
)

ELECTION = 1
PORT_MAC, HOST_MAC, NEW_MAC = "02:00:00:00:00:10", "02:00:00:00:00:20", "02:00:00:00:00:21"

GOOD = """
[listen]
unix = "a.sock"
[glean]
hosts = 8
age_seconds = 60
resolve_rate = 5
resolve_seconds = 2
[[ports]]
name = "p0"
addresses = ["198.18.0.1/24", "2001:db8::1/64"]
vlans = [{ id = 20, addresses = ["198.18.20.1/24"] }, { id = 30, addresses = ["198.18.9.9/32"] }]
[[ports]]
name = "p1"
addresses = ["198.18.1.1/30"]
"""

BAD = [
    (('"198.18.1.1/30"', '"198.18.0.200/25"'),
     "ports[1].addresses[0]: 198.18.0.200/25: its subnet 198.18.0.128/25 overlaps "
     "198.18.0.0/24 of ports[0].addresses[0]; attached subnets must not overlap"),
    (('"198.18.20.1/24"', '"198.18.0.7/24"'),
     "ports[0].vlans[0].addresses[0]: 198.18.0.7/24: its subnet 198.18.0.0/24 overlaps"),
    (('"198.18.1.1/30"', '"198.18.9.9/32"'),
     "ports[1].addresses[0]: 198.18.9.9/32: its subnet 198.18.9.9/32 overlaps 198.18.9.9/32 of "
     "ports[0].vlans[1].addresses[0]"),
    (('"198.18.1.1/30"', '"198.18.1.1/30", "198.18.2.1/24"'),
     "ports[1].addresses[1]: a second IPv4 address on one port or VLAN"),
    (('"198.18.1.1/30"', '"198.18.1.1/7"'),
     "ports[1].addresses[0]: '198.18.1.1/7': prefix length 7 is shorter than /8"),
    (('"2001:db8::1/64"', '"2001:db8::1/12"'),
     "ports[0].addresses[1]: '2001:db8::1/12': prefix length 12 is shorter than /16"),
    (('"198.18.1.1/30"', '"198.18.1.0/30"'),
     "ports[1].addresses[0]: '198.18.1.0/30': is the network address of 198.18.1.0/30"),
    (('"198.18.1.1/30"', '"198.18.1.3/30"'),
     "ports[1].addresses[0]: '198.18.1.3/30': is the broadcast address of 198.18.1.0/30"),
    (('"198.18.1.1/30"', '"224.0.0.1/24"'), "ports[1].addresses[0]: '224.0.0.1/24': not a unicast"),
    (('"2001:db8::1/64"', '"fe80::1/64"'), "ports[0].addresses[1]: 'fe80::1/64': not a unicast"),
    (('"198.18.1.1/30"', '"198.18.1.1/33"'),
     "ports[1].addresses[0]: '198.18.1.1/33' is not a valid"),
    (("hosts = 8", "hosts = 0"), "glean.hosts: 0 is not between 1 and 1048576"),
    (("age_seconds = 60", "age_seconds = 0"), "glean.age_seconds: 0 is not between 1 and 86400"),
    (("resolve_rate = 5", "resolve_rate = -1"), "glean.resolve_rate: -1 is not between"),
    (("resolve_seconds = 2", "resolve_second = 2"), "glean.resolve_second: unknown key"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"), BAD, ids=[m.split(":")[0] + m[-12:] for _, m in BAD]
)
def test_a_bad_subnet_or_glean_setting_is_refused_at_load(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    old, new = change
    assert old in GOOD
    path = tmp_path / "agent.toml"
    path.write_text(GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError) as e:
        load(path)
    assert str(e.value).startswith(f"{path}: {message}"), str(e.value)


def _config(tmp_path: Path) -> AgentConfig:
    path = tmp_path / "agent.toml"
    path.write_text(GOOD)
    return load(path)


def test_attached_subnets_leave_host_addresses_out(tmp_path: Path) -> None:
    config = _config(tmp_path)
    assert config.glean == GleanConfig(hosts=8, age_seconds=60, resolve_rate=5, resolve_seconds=2)
    subnets = [
        (s.port, s.vlan, str(s.network), str(s.router)) for s in attached_subnets(config.ports)
    ]
    assert subnets == [
        ("p0", 0, "198.18.0.0/24", "198.18.0.1"),
        ("p0", 0, "2001:db8::/64", "2001:db8::1"),
        ("p0", 20, "198.18.20.0/24", "198.18.20.1"),
        ("p1", 0, "198.18.1.0/30", "198.18.1.1"),
    ]
    assert parse({"listen": {"unix": "a.sock"}}).glean == GleanConfig()


def _table(tmp_path: Path, **changes: int) -> HostTable:
    config = _config(tmp_path)
    glean = GleanConfig(**{**config.glean.__dict__, **changes})
    return HostTable(attached_subnets(config.ports), glean, first_adjacency=56, first_group=56)


def test_the_queue_starts_resolutions_within_rate_and_room(tmp_path: Path) -> None:
    t = _table(tmp_path)
    not_hosts = [
        "198.18.0.1", "198.18.0.0", "198.18.0.255",  # the router's, network, broadcast
        "198.18.1.3", "198.19.0.5", "2001:db8:1::5", "not an address", "",
    ]  # fmt: skip
    assert not t.ask(not_hosts, 0.0)
    assert t.counts.ignored == len(not_hosts) and not t.pending
    # IPv4 as the engine may give it (IPv4-mapped), a host on a VLAN, IPv6; twice is once.
    assert t.ask(["::ffff:198.18.0.5", "198.18.20.7", "2001:db8::5", "198.18.0.5"], 0.0)
    assert set(t.pending) == {
        Gateway("p0", 0, "198.18.0.5"), Gateway("p0", 20, "198.18.20.7"),
        Gateway("p0", 0, "2001:db8::5"),
    }  # fmt: skip
    # resolve_rate = 5 a second (burst 5): two more now, the rest wait for tokens.
    t.ask([f"198.18.0.{i}" for i in range(10, 14)], 0.0)
    assert len(t.pending) == 5 and t.counts.rate_limited == 2
    t.ask(["198.18.0.12"], 0.2)  # one token back after 0.2 s
    assert len(t.pending) == 6
    # hosts = 8: pending and installed together.
    t.ask([f"198.18.0.{i}" for i in range(20, 30)], 10.0)
    assert len(t.pending) == 8 and t.counts.table_full == 8
    assert t.wanted() == frozenset(t.pending)


def test_a_resolved_host_gets_a_route_follows_its_mac_and_ages(tmp_path: Path) -> None:
    t = _table(tmp_path)
    host = Gateway("p0", 20, "198.18.20.7")
    t.ask([host.address], 0.0)
    assert t.follow({}, {"p0": PORT_MAC}, 1.0) == []  # not yet: still pending
    ops = t.follow({host: HOST_MAC}, {"p0": PORT_MAC}, 1.5)
    assert ops == [
        Adjacency(56, "p0", 20, PORT_MAC, HOST_MAC),
        NextHopGroup(56, ((56, 1),)),
        Route("198.18.20.7/32", RouteKind.FORWARD, 56),
    ]
    assert not t.pending and t.owned("198.18.20.7/32") and t.counts.resolved == 1
    assert t.follow({host: HOST_MAC}, {"p0": PORT_MAC}, 2.0) == []  # nothing changed
    assert t.follow({host: NEW_MAC}, {"p0": PORT_MAC}, 3.0) == [
        Adjacency(56, "p0", 20, PORT_MAC, NEW_MAC)
    ]
    assert t.counts.mac_changes == 1
    # Used: stays; unused for age_seconds (60): goes, its slot is free again.
    assert t.age({56: True}, 50.0) == [] and t.age({56: False}, 100.0) == []
    assert t.age({56: False}, 110.0) == [
        DeleteRoute("198.18.20.7/32"),
        DeleteGroup(56),
        DeleteAdjacency(56),
    ]
    assert not t.hosts and t.counts.aged == 1 and t.wanted() == frozenset()
    # The kernel losing a neighbour removes its route at once.
    t.ask(["2001:db8::5"], 200.0)
    v6 = Gateway("p0", 0, "2001:db8::5")
    assert t.follow({v6: HOST_MAC}, {"p0": PORT_MAC}, 200.5)[2] == Route(
        "2001:db8::5/128", RouteKind.FORWARD, 56
    )
    assert t.follow({}, {"p0": PORT_MAC}, 201.0) == [
        DeleteRoute("2001:db8::5/128"),
        DeleteGroup(56),
        DeleteAdjacency(56),
    ]
    assert t.counts.lost == 1


def test_an_unanswered_resolution_is_given_up_then_asked_again(tmp_path: Path) -> None:
    t = _table(tmp_path)
    t.ask(["198.18.0.5"], 0.0)
    assert t.follow({}, {"p0": PORT_MAC}, 2.5) == []
    assert not t.pending and t.counts.failed == 1
    assert not t.ask(["198.18.0.5"], 3.0)  # held down for resolve_seconds
    assert t.ask(["198.18.0.5"], 4.6)


def test_ops_in_batch_order() -> None:
    ops = [DeleteAdjacency(1), DeleteGroup(1), DeleteRoute("198.18.0.5/32"),
           Route("198.18.0.6/32", RouteKind.FORWARD, 2), NextHopGroup(2, ((2, 1),)),
           Adjacency(2, "p0", 0, PORT_MAC, HOST_MAC)]  # fmt: skip
    assert [type(o) for o in in_order(ops)] == [
        Adjacency,
        NextHopGroup,
        DeleteRoute,
        Route,
        DeleteGroup,
        DeleteAdjacency,
    ]


@pytest.fixture
def dataplane(tmp_path: Path) -> Dataplane:
    document = {
        "listen": {"unix": "a.sock"},
        "fib": {"v4_routes": 100, "v6_routes": 100, "groups": 64, "adjacencies": 64},
        "glean": {"hosts": 8},
        "ports": [{"name": "p0", "addresses": ["198.18.0.1/24"]}],
    }
    config = parse(document, base=tmp_path)
    dp = Dataplane(config, EngineFib(config.fib, ["p0"]))
    dp.glean = HostTable(attached_subnets(config.ports), config.glean, 56, 56)
    return dp


async def _install_host(dp: Dataplane, address: str) -> None:
    t = dp.glean
    assert t is not None
    host = Gateway("p0", 0, address)
    t.ask([address], 0.0)
    neighbours = {**dict.fromkeys(t.hosts, HOST_MAC), host: HOST_MAC}  # the kernel's, whole
    assert not await dp.apply_own(in_order(t.follow(neighbours, {"p0": PORT_MAC}, 0.0)))


async def test_writers_cannot_touch_the_agents_entries(dataplane: Dataplane) -> None:
    dp = dataplane
    await dp.apply_own([GleanRoute("198.18.0.0/24")])
    for op, words in (
        (Adjacency(56, "p0", 0, PORT_MAC, HOST_MAC), "adjacency 56: ids from 56 up are"),
        (NextHopGroup(60, ((1, 1),)), "group 60: ids from 56 up"),
        (NextHopGroup(3, ((57, 1),)), "adjacency 57: ids from 56 up"),
        (Route("198.18.7.0/24", RouteKind.FORWARD, 63), "group 63: ids from 56 up"),
        (DeleteGroup(56), "group 56: ids from 56 up"),
        (Route("198.18.0.0/24", RouteKind.BLACKHOLE), "route 198.18.0.0/24: is an attached subnet"),
        (DeleteRoute("198.18.0.0/24"), "route 198.18.0.0/24: is an attached subnet"),
        (GleanRoute("198.18.5.0/24"), "glean routes are the agent's own"),
    ):  # fmt: skip
        with pytest.raises(InvalidBatch) as e:
            await dp.write(ELECTION, [Adjacency(1, "p0", 0, PORT_MAC, HOST_MAC), op])
        (v,) = e.value.violations
        assert v.index == 1 and words in v.description, v
    assert dp._fib.entries() == ([], [], []), "nothing applied"
    assert dp._fib.lookup("198.18.0.9") is None  # the glean route is the agent's own


async def test_host_routes_are_hidden_and_a_writers_route_wins(dataplane: Dataplane) -> None:
    dp = dataplane
    taken: list[list[str]] = []
    dp.on_taken = taken.append
    await dp.apply_own([GleanRoute("198.18.0.0/24")])
    await _install_host(dp, "198.18.0.5")
    await _install_host(dp, "198.18.0.6")
    assert dp.own_routes == {"198.18.0.5/32", "198.18.0.6/32"}
    assert dp._fib.lookup("198.18.0.5") == Route("198.18.0.5/32", RouteKind.FORWARD, 56)
    await dp.write(ELECTION, [Route("198.18.9.0/24", RouteKind.BLACKHOLE)])
    assert [r.prefix for r in (await dp.snapshot()).routes] == ["198.18.9.0/24"]
    # A writer's route for a host's prefix replaces ours; we are told, and give it over.
    await dp.write(ELECTION, [Route("198.18.0.5/32", RouteKind.BLACKHOLE)])
    assert taken == [["198.18.0.5/32"]] and dp.own_routes == {"198.18.0.6/32"}
    t = dp.glean
    assert t is not None
    await dp.apply_own(in_order(t.taken_over(taken[0])))
    assert sorted(r.prefix for r in (await dp.snapshot()).routes) == [
        "198.18.0.5/32",
        "198.18.9.0/24",
    ]
    adjacencies, groups, _ = dp._fib.entries()
    assert [a.id for a in adjacencies] == [57] and [g.id for g in groups] == [57]
    # Ageing our old route later must not delete the writer's.
    assert await dp.apply_own([DeleteRoute("198.18.0.5/32")]) == []
    assert dp._fib.lookup("198.18.0.5") == Route("198.18.0.5/32", RouteKind.BLACKHOLE)
    # A host route is never installed over a writer's route: we are told which.
    t.ask(["198.18.0.9"], 100.0)
    await dp.write(ELECTION, [Route("198.18.0.9/32", RouteKind.UNREACHABLE)])
    resolved = {Gateway("p0", 0, "198.18.0.9"): HOST_MAC, Gateway("p0", 0, "198.18.0.6"): HOST_MAC}
    ops = t.follow(resolved, {"p0": PORT_MAC}, 100.0)
    assert await dp.apply_own(in_order(ops)) == ["198.18.0.9/32"]
    assert dp._fib.lookup("198.18.0.9") == Route("198.18.0.9/32", RouteKind.UNREACHABLE)
    assert "198.18.0.9/32" not in dp.own_routes


def test_the_metrics_name_hosts_events_and_the_engines_queue(tmp_path: Path) -> None:
    t = _table(tmp_path)
    t.ask(["198.18.0.5", "198.19.0.1"], 0.0)
    engine = {"queued": 3, "deduplicated": 1, "rate_limited": 0, "full": 0}
    families = {m.name: m for m in _glean_metrics(t.summary(), engine)}
    assert set(families) == {"corridor_agent_glean_hosts", "corridor_agent_glean_events",
                             "corridor_engine_glean_queue"}  # fmt: skip
    samples = {
        (s.name, tuple(s.labels.values())): s.value for m in families.values() for s in m.samples
    }
    assert samples[("corridor_agent_glean_hosts", ("pending",))] == 1
    assert samples[("corridor_agent_glean_events_total", ("resolving",))] == 1
    assert samples[("corridor_agent_glean_events_total", ("ignored",))] == 1
    assert samples[("corridor_engine_glean_queue_total", ("queued",))] == 3


def test_the_cli_line_names_every_count() -> None:
    from corridor.cli_agent import glean_line
    from corridor.v1 import dataplane_pb2

    state = dataplane_pb2.GleanState(
        hosts=2, pending=1, queued=9, deduplicated=4, engine_rate_limited=3, full=0,
        resolved=5, failed=1, aged=2, lost=1, mac_changes=1, rate_limited=6, table_full=7,
        ignored=8,
    )  # fmt: skip
    line = glean_line({f.name: getattr(state, f.name) for f in state.DESCRIPTOR.fields})
    assert line == (
        "attached subnets: 2 host routes, 1 resolving; engine queued 9 (4 deduplicated, 3 "
        "rate-limited, 0 queue full); 5 resolved, 1 unanswered, 2 aged out, 1 lost, 1 MAC "
        "changes; left out: 6 over the rate, 7 table full, 8 not a host of an attached subnet"
    )


def test_the_host_routes_default_to_what_the_fib_spares() -> None:
    # Not set: 512, or a quarter of a small FIB's ids, and none without an attached subnet.
    assert host_room(None, True, 65_536, 65_536) == 512
    assert host_room(None, True, 64, 256) == 16
    assert host_room(None, False, 65_536, 65_536) == 0
    assert host_room(8, True, 64, 64) == 8
    with pytest.raises(ValueError, match=r"glean.hosts: 64 host routes need .* 64 adjacencies"):
        host_room(64, True, 64, 1024)
