"""Member source filters derived from BGP through a real controller (SQLite and etcd) and a
real agent served in this process: `SetMemberFilter` with `from_bgp` derives the filter from
the node's BGP routes through the member's next hops (handed to the core as the FPM feed
hands them; zebra's connection is a real TCP connection to the controller's FPM listener),
the agent's filter follows announce and withdraw (after the hold time, and not while zebra
is away), a restarted controller writes the saved prefixes to a fresh agent before any
feed, a member over the limit is not filtered (and shown so); malformed requests and CLI
arguments are refused with nothing stored or sent; a SQLite store from before the `bgp`
column opens."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import subprocess
from pathlib import Path

import grpc
import pytest

from controller_support import LocalAgent, controller_document, controller_stub, start_controller
from corridor.common.addresses import checked_prefix_to_pb
from corridor.common.fib import MEMBER_SOURCES_MAX, RouteKind
from corridor.controller.domain import Intent
from corridor.v1 import common_pb2, controller_pb2
from test_controller_member_filter import add, agent_sources, cli, in_sync, until

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parent.parent
NODE = "a"
HOLD = 2  # seconds: [[fpm]] filter_hold_seconds
ACME_HOP = "198.18.0.2"
STATIC = "2001:db8:f::/48"


def via(gateway: str) -> Intent:
    return Intent(RouteKind.FORWARD, (((gateway, "cor-c0", 0), 1),))


def from_bgp(name: str, *hops: str, allow: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    return controller_pb2.SetMemberFilterRequest(
        name=name,
        from_bgp=True,
        bgp_next_hops=[ipaddress.ip_address(h).packed for h in hops],
        allowed_sources=[checked_prefix_to_pb(p) for p in allow],
    )


def fed_document(tmp_path: Path, nodes: dict[str, str], hold: int = HOLD) -> dict:
    # No drift check during a test: it reads the node, which a test here counts.
    document = controller_document(tmp_path, nodes, drift=600)
    document["fpm"] = [{"node": NODE, "listen": "127.0.0.1:0", "filter_hold_seconds": hold}]
    return document


class Zebra:
    """A TCP connection to the controller's FPM listener: zebra connected, sending nothing
    (the routes are handed to the core directly)."""

    def __init__(self, running) -> None:  # type: ignore[no-untyped-def]
        self.running = running
        self.writer: asyncio.StreamWriter | None = None

    def source(self):  # type: ignore[no-untyped-def]
        return self.running.controller.feeds.sources[NODE]

    async def connect(self) -> None:
        port = self.running.controller.feeds.listeners[0][2]
        _, self.writer = await asyncio.open_connection("127.0.0.1", port)
        await until(lambda: self.source().connected, "zebra connected")

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()
            self.writer = None
            await until(lambda: not self.source().connected, "zebra's connection down")


@pytest.mark.slow  # waits out the hold time, on purpose, a few times
async def test_the_filter_follows_announce_and_withdraw_and_survives_a_restart(
    tmp_path: Path, store_backend
) -> None:
    document = store_backend(fed_document(tmp_path, {NODE: f"unix:{tmp_path}/a.sock"}))
    agent = await LocalAgent(tmp_path / "a.sock").start()
    running = await start_controller(document, tmp_path)
    channel, stub = controller_stub(tmp_path / "controller.sock")
    zebra = Zebra(running)
    core = running.controller
    try:
        await in_sync(stub, NODE)
        await stub.AddMember(add("acme"), timeout=10)
        m = await stub.SetMemberFilter(from_bgp("acme", ACME_HOP, allow=(STATIC,)), timeout=10)
        assert m.from_bgp and m.filter_sources and m.bgp_prefixes == 0
        assert [ipaddress.ip_address(a) for a in m.bgp_next_hops] == [
            ipaddress.ip_address(ACME_HOP)
        ]
        # zebra has never connected: no filter until its table is whole.
        assert m.bgp_pending
        await until(lambda: agent_sources(agent, "acme") is None, "the member, not filtered")
        await zebra.connect()
        await until(lambda: agent_sources(agent, "acme") == (STATIC,), "filtered after the hold")
        listed = (await stub.ListMembers(controller_pb2.ListMembersRequest(), timeout=10)).members
        assert not listed[0].bgp_pending
        await core.bgp_routes(NODE, {
            "198.18.10.0/24": via(ACME_HOP),
            "198.18.11.0/24": via("198.18.0.9"),  # another router's: not acme's
        }, ())  # fmt: skip
        await until(
            lambda: agent_sources(agent, "acme") == ("198.18.10.0/24", STATIC),
            "the announced prefix in the agent's filter",
        )
        listed = (await stub.ListMembers(controller_pb2.ListMembersRequest(), timeout=10)).members
        assert [(x.name, x.bgp_prefixes, x.bgp_over_limit, len(x.bgp_sources)) for x in listed] == [
            ("acme", 1, False, 1)
        ]
        assert len(listed[0].allowed_sources) == 1  # the static one, apart
        # Withdrawn: still allowed for the hold time, then gone.
        await core.bgp_routes(NODE, {}, ["198.18.10.0/24"])
        assert agent_sources(agent, "acme") == ("198.18.10.0/24", STATIC)
        await until(lambda: agent_sources(agent, "acme") == (STATIC,), "the withdrawn prefix gone")
        # Zebra away: a withdrawal takes nothing away until it has been back for the hold.
        await core.bgp_routes(NODE, {"198.18.12.0/24": via(ACME_HOP)}, ())
        await until(lambda: agent_sources(agent, "acme") == ("198.18.12.0/24", STATIC), "announced")
        await until(
            lambda: core.members["acme"].bgp_sources == ("198.18.12.0/24",), "saved in the store"
        )
        await zebra.close()
        await core.bgp_routes(NODE, {}, ["198.18.12.0/24"])
        await asyncio.sleep(2 * HOLD + 1.5)
        assert agent_sources(agent, "acme") == ("198.18.12.0/24", STATIC)
        stored = await core.store.list_members()
        assert [(x.bgp_next_hops, x.bgp_sources) for x in stored] == [
            ((ACME_HOP,), ("198.18.12.0/24",))
        ]
    finally:
        await zebra.close()
        await channel.close()
        await running.stop(0)
        await agent.stop()
    # A restarted controller and a fresh agent, no zebra: the saved prefixes are written.
    agent = await LocalAgent(tmp_path / "a.sock").start()
    running = await start_controller(document, tmp_path)
    channel, stub = controller_stub(tmp_path / "controller.sock")
    zebra = Zebra(running)
    try:
        await until(
            lambda: agent_sources(agent, "acme") == ("198.18.12.0/24", STATIC),
            "the saved filter after a restart",
        )
        # Zebra back, and it replays without the prefix: gone after the hold time.
        await zebra.connect()
        await until(lambda: agent_sources(agent, "acme") == (STATIC,), "gone after the replay")
        done = await stub.SetMemberFilter(
            controller_pb2.SetMemberFilterRequest(name="acme", filter_sources=False), timeout=10
        )
        assert not done.from_bgp and not done.filter_sources
        await until(lambda: agent_sources(agent, "acme") is None, "the filter removed")
        assert running.controller.filters.members == {}
    finally:
        await zebra.close()
        await channel.close()
        await running.stop(0)
        await agent.stop()


@pytest.fixture
async def node(tmp_path: Path):
    """Node a fed by zebra (connected, hold 1 s), node b not (its agent never answers); acme
    on a."""
    agent = await LocalAgent(tmp_path / "a.sock").start()
    nodes = {NODE: agent.address, "b": f"unix:{tmp_path}/b.sock"}
    running = await start_controller(fed_document(tmp_path, nodes, hold=1), tmp_path)
    channel, stub = controller_stub(tmp_path / "controller.sock")
    zebra = Zebra(running)
    try:
        await zebra.connect()
        await in_sync(stub, NODE)
        await stub.AddMember(add("acme"), timeout=10)
        await until(lambda: agent_sources(agent, "acme") is None, "the member at the agent")
        yield agent, running, stub
    finally:
        await zebra.close()
        await channel.close()
        await running.stop(0)
        await agent.stop()


def _request(**fields) -> controller_pb2.SetMemberFilterRequest:  # type: ignore[no-untyped-def]
    return controller_pb2.SetMemberFilterRequest(name="acme", **fields)


MALFORMED = [
    (_request(from_bgp=True), grpc.StatusCode.INVALID_ARGUMENT, "needs the member router's"),
    (
        _request(from_bgp=True, bgp_next_hops=[b"\xc6\x12\x00"]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "bgp_next_hops[0]",
    ),
    (from_bgp("acme", "224.0.0.5"), grpc.StatusCode.INVALID_ARGUMENT, "not a unicast address"),
    (
        _request(bgp_next_hops=[bytes([198, 18, 0, 2])]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "bgp_next_hops: set without from_bgp",
    ),
    (from_bgp("acme", "198.18.0.3"), grpc.StatusCode.INVALID_ARGUMENT, "is member bravo's"),
    (  # bravo's EUI-64 link-local address is bravo's too
        from_bgp("acme", "fe80::b:ff:fe00:2"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "next hop fe80::b:ff:fe00:2 on cor-c0 VLAN 0 is member bravo's",
    ),
    (
        _request(
            from_bgp=True,
            bgp_next_hops=[bytes([198, 18, 0, 2])],
            allowed_sources=[common_pb2.IpPrefix(address=bytes([198, 18, 0, 1]), length=24)],
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "host bits set",
    ),
    (from_bgp("nobody", ACME_HOP), grpc.StatusCode.NOT_FOUND, "does not exist"),
    (from_bgp("carol", ACME_HOP), grpc.StatusCode.FAILED_PRECONDITION, "node b has no BGP feed"),
]


@pytest.mark.parametrize(
    ("request_", "code", "text"), MALFORMED, ids=[t[:24] for _, _, t in MALFORMED]
)
async def test_malformed_requests_store_and_send_nothing(node, request_, code, text: str) -> None:
    agent, running, stub = node
    bravo = add("bravo", "02:0b:00:00:00:02")
    await stub.AddMember(bravo, timeout=10)
    await stub.SetMemberFilter(from_bgp("bravo", "198.18.0.3"), timeout=10)
    carol = add("carol", "02:0c:00:00:00:03")
    carol.member.node = "b"
    await stub.AddMember(carol, timeout=10)
    with pytest.raises(grpc.RpcError) as raised:
        await stub.SetMemberFilter(request_, timeout=10)
    assert raised.value.code() == code
    assert text in (raised.value.details() or ""), raised.value.details()
    for name in ("acme", "carol"):
        assert running.controller.members[name].sources is None
        assert running.controller.members[name].bgp_next_hops is None
    stored = {m.name: m for m in await running.controller.store.list_members()}
    assert stored["acme"] == running.controller.members["acme"]
    assert stored["carol"] == running.controller.members["carol"]
    assert set(running.controller.filters.members) == {"bravo"}
    await until(lambda: agent_sources(agent, "bravo") == (), "bravo's filter (nothing yet)")
    assert agent_sources(agent, "acme") is None


async def test_over_the_limit_the_member_is_not_filtered(node) -> None:
    agent, running, stub = node
    await stub.SetMemberFilter(from_bgp("acme", ACME_HOP), timeout=10)
    await until(lambda: agent_sources(agent, "acme") == (), "an empty filter at first")
    base = int(ipaddress.IPv4Address("198.18.64.0"))
    hop = via(ACME_HOP)
    spread = {  # every other /32: nothing aggregates
        f"{ipaddress.IPv4Address(base + 2 * i)}/32": hop for i in range(MEMBER_SOURCES_MAX + 1)
    }
    await running.controller.bgp_routes(NODE, spread, ())
    await until(lambda: agent_sources(agent, "acme") is None, "no filter: over the limit")
    listed = (await stub.ListMembers(controller_pb2.ListMembersRequest(), timeout=10)).members
    assert (listed[0].bgp_prefixes, listed[0].bgp_over_limit) == (MEMBER_SOURCES_MAX + 1, True)
    assert running.controller.filters.over_limit_total == 1
    from prometheus_client import generate_latest

    from corridor.controller.metrics import ControllerMetrics

    metrics = ControllerMetrics()
    metrics.watch(running.controller)
    text = generate_latest(metrics.registry).decode()
    for line in (
        "corridor_controller_member_bgp_filters 1.0",
        "corridor_controller_member_bgp_filters_over_limit 1.0",
        "corridor_controller_member_bgp_filter_over_limit_total 1.0",
    ):
        assert line in text.splitlines(), text
    await running.controller.bgp_routes(NODE, {}, ())  # nothing: no change
    assert running.controller.filters.dirty == set()


async def test_a_busy_feed_rewrites_the_filter_a_few_times_not_per_route(node) -> None:
    """2000 routes in 200 changes: the member's filter is written at most once per flush
    (a second) and the agent is not read again for it (Read dumps the whole FIB)."""
    from corridor.common.fib import Member

    agent, running, stub = node
    await stub.SetMemberFilter(from_bgp("acme", ACME_HOP), timeout=10)
    await until(lambda: agent_sources(agent, "acme") == (), "an empty filter at first")
    dataplane = agent.dataplane
    reads, member_writes = [0], [0]
    snapshot, write = dataplane.snapshot, dataplane.write

    async def counted_snapshot():  # type: ignore[no-untyped-def]
        reads[0] += 1
        return await snapshot()

    async def counted_write(election_id, operations):  # type: ignore[no-untyped-def]
        member_writes[0] += any(isinstance(op, Member) for op in operations)
        return await write(election_id, operations)

    dataplane.snapshot, dataplane.write = counted_snapshot, counted_write
    loop = asyncio.get_running_loop()
    started = loop.time()
    hop = via(ACME_HOP)
    for i in range(200):
        routes = {f"198.18.{64 + i // 25}.{(i % 25) * 10 + j}/32": hop for j in range(10)}
        await running.controller.bgp_routes(NODE, routes, ())
    await until(lambda: len(agent_sources(agent, "acme") or ()) == 2000, "all 2000 prefixes")
    elapsed = loop.time() - started
    assert reads[0] == 0
    assert 1 <= member_writes[0] <= elapsed / running.controller.filter_flush_seconds + 2, (
        member_writes[0],
        elapsed,
    )


async def test_the_cli_sets_and_lists_filters_from_bgp(node, tmp_path: Path) -> None:
    agent, running, _ = node
    loop = asyncio.get_running_loop()

    async def run(*args: str) -> subprocess.CompletedProcess[str]:
        return await loop.run_in_executor(None, lambda: cli(tmp_path, *args))

    await running.controller.bgp_routes(NODE, {"198.18.10.0/24": via(ACME_HOP)}, ())
    await until(lambda: running.controller.filters.replayed(NODE), "zebra's table whole")
    done = await run("member", "filter", "acme", "--from-bgp", "--next-hop", ACME_HOP,
                     "--next-hop", "2001:db8::2", "--allow", STATIC)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        f"member acme: sources {STATIC} + bgp via {ACME_HOP},2001:db8::2: 1 prefixes"
    )
    await until(lambda: agent_sources(agent, "acme") == ("198.18.10.0/24", STATIC), "the filter")
    shown = json.loads((await run("member", "list", "--json")).stdout)[0]
    assert shown["sources"] == [STATIC]
    assert shown["bgp"] == {
        "next_hops": [ACME_HOP, "2001:db8::2"], "prefixes": ["198.18.10.0/24"], "count": 1,
        "over_limit": False, "pending": False,
    }  # fmt: skip
    table = (await run("member", "list")).stdout
    assert f"bgp via {ACME_HOP},2001:db8::2: 1 prefixes" in table, table
    # Bad input: a clear message, exit code 2, nothing sent or changed.
    for args, text in (
        (("--from-bgp",), "--from-bgp needs the member router's address(es)"),
        (("--next-hop", ACME_HOP), "give it with --from-bgp"),
        (("--from-bgp", "--next-hop", "198.18.0.300"), "'198.18.0.300' is not an IPv4"),
        (("--from-bgp", "--next-hop", "ff02::1"), "ff02::1 is not a unicast address"),
        (("--from-bgp", "--next-hop", ACME_HOP, "--off"), "--off removes the filter"),
        (("--from-bgp", "--next-hop", ACME_HOP, "--allow", "198.18.0.1/24"), "host bits set"),
    ):
        bad = await run("member", "filter", "acme", *args)
        assert bad.returncode == 2 and text in bad.stderr, (args, bad.stderr)
    assert running.controller.members["acme"].bgp_next_hops == (ACME_HOP, "2001:db8::2")
    # Refused by the controller: a node without a feed.
    await running.controller.add_member("carol", "b", "cor-c0", 0, "02:0c:00:00:00:03")
    bad = await run("member", "filter", "carol", "--from-bgp", "--next-hop", "198.18.0.7")
    assert bad.returncode == 1 and "node b has no BGP feed" in bad.stderr, bad.stderr
    done = await run("member", "filter", "acme", "--off")
    assert done.returncode == 0 and done.stdout.strip() == "member acme: sources any"
    await until(lambda: agent_sources(agent, "acme") is None, "the filter removed")


async def test_a_store_from_before_filters_from_bgp_gets_the_column(tmp_path: Path) -> None:
    import sqlite3

    from corridor.controller.members import MemberRecord
    from corridor.controller.sqlite_store import SqliteStore
    from corridor.controller.store import StoreError

    path = tmp_path / "old.db"
    store = SqliteStore(path)
    await store.check(accept_loss=True)
    await store.open()
    await store.close()
    mac = "02:0a:00:00:00:01"
    db = sqlite3.connect(path)
    db.executescript(
        "DROP TABLE members; CREATE TABLE members (name TEXT PRIMARY KEY, node TEXT NOT NULL,"
        " port TEXT NOT NULL, vlan INTEGER NOT NULL, mac TEXT NOT NULL, id INTEGER NOT NULL,"
        f" sources TEXT); INSERT INTO members VALUES ('acme', 'a', 'cor-c0', 0, '{mac}', 3,"
        """ '["198.18.0.0/24"]');"""
    )
    db.commit()
    db.close()
    store = SqliteStore(path)
    await store.check(accept_loss=True)
    await store.open()
    static = MemberRecord("acme", "a", "cor-c0", 0, mac, 3, ("198.18.0.0/24",))
    try:
        assert await store.list_members() == [static]
        derived = MemberRecord(
            "acme", "a", "cor-c0", 0, mac, 3, (), (ACME_HOP,), ("198.18.10.0/24",)
        )
        await store.put_member(derived)
        assert await store.list_members() == [derived]
    finally:
        await store.close()
    db = sqlite3.connect(path)
    db.execute("""UPDATE members SET bgp = '{"next_hops": ["198.18.0.2"], "sources": 7}'""")
    db.commit()
    db.close()
    store = SqliteStore(path)
    await store.check(accept_loss=True)
    await store.open()
    try:
        with pytest.raises(StoreError, match="members: member acme: stored filter from BGP"):
            await store.list_members()
    finally:
        await store.close()
