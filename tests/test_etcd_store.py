"""The etcd store against a real etcd (Debian's etcd-server, started here on loopback): what
one controller commits, another reads back equal (whole, or as the difference from what it
held); a commit larger than one etcd request is whole; a store that does not hold the
leader key cannot commit; mutual TLS; malformed [store] tables are refused, naming the
field."""

from __future__ import annotations

import ipaddress
import random
import subprocess
import sys
from pathlib import Path

import pytest

from corridor.common.config import ConfigError
from corridor.common.fib import RouteKind
from corridor.controller.config import parse
from corridor.controller.domain import Change, Intent, IntentState, Node, RouteBatch
from corridor.controller.etcd_store import (
    TXN_BYTES,
    EtcdConfig,
    EtcdStore,
    EtcdTls,
    EtcdUnreachable,
    NotLeader,
    pack,
)
from corridor.controller.store import RouteQuery, StoreError
from etcd_support import EtcdCluster

GW = ("198.18.0.2", "cor-c0", 0)
GW2 = ("198.18.0.3", "cor-c1", 100)


@pytest.fixture
def etcd(tmp_path: Path):
    cluster = EtcdCluster(tmp_path / "etcd", 1).start()
    try:
        yield cluster
    finally:
        cluster.stop()


def v4_routes(n: int, node: str = "a", start: str = "10.0.0.0") -> list:
    base = int(ipaddress.ip_address(start))
    forward = Intent(RouteKind.FORWARD, ((GW, 1),))
    return [((node, f"{ipaddress.ip_address(base + i * 4)}/30"), forward) for i in range(n)]


def v6_routes(n: int, node: str = "a") -> list:
    both = Intent(RouteKind.FORWARD, ((GW, 1), (GW2, 3)))
    base = int(ipaddress.ip_address("2001:db8::"))
    return [((node, f"{ipaddress.ip_address(base + (i << 64))}/64"), both) for i in range(n)]


async def commit(store: EtcdStore, state: IntentState, change: Change) -> None:
    await store.commit(change)
    state.commit(change)
    state.forget_freed(change)


def same(store_state: IntentState, loaded) -> None:
    routes = {k: v for k, v in loaded.routes}
    expected = {(n, p): i for n, table in store_state.routes.items() for p, i in table.items()}
    assert routes == expected
    assert loaded.revision == store_state.revision
    assert loaded.group_ids == store_state.group_ids
    assert loaded.adjacency_ids == store_state.adjacency_ids
    assert {n.name: n for n in loaded.nodes} == store_state.nodes
    assert set(loaded.drained) == store_state.drained


async def test_what_one_store_commits_another_reads_whole_and_as_differences(etcd) -> None:
    config = EtcdConfig(tuple(etcd.endpoints))
    writer, reader = EtcdStore(config), EtcdStore(config)
    state, followed = IntentState(1024, 1024), IntentState(1024, 1024)
    try:
        await writer.open()
        await reader.open()
        assert (await reader.load()).revision == 0
        await commit(writer, state, Change(revision=1, nodes=[Node("a", "unix:/run/a.sock")]))
        routes = (
            v4_routes(1000)
            + v6_routes(300)
            + [(("", "198.18.0.0/15"), Intent(RouteKind.BLACKHOLE))]
        )
        await commit(writer, state, state.plan_apply(RouteBatch.of(routes)))
        drain = Change(revision=state.revision + 1, drained=[("a", GW)])
        await commit(writer, state, drain)
        gone = state.plan_delete(
            [("a", "10.0.0.0/30"), ("a", "2001:db8::/64"), ("a", "1.2.3.0/24")]
        )
        await commit(writer, state, gone)
        # The reader takes the differences, as a follower does, into its own memory.
        change = await reader.read_head()
        assert change is not None and change.revision == state.revision
        followed.commit(change)
        followed.forget_freed(change)
        assert followed.routes == {n: t for n, t in state.routes.items() if t}
        assert followed.nodes == state.nodes and followed.drained == state.drained
        assert followed.group_ids == state.group_ids
        assert followed.route_count() == state.route_count() == 1299
        assert followed.sizes() == state.sizes()
        assert await reader.read_head() is None  # nothing new
        # A store opened afresh loads the same.
        fresh = EtcdStore(config)
        same(state, await fresh.check())
        await fresh.close()
        # Lists are in (node, sort key) order, paged and filtered, from the reader's memory.
        everything = await reader.list_routes(RouteQuery(None, None, 0, 10_000, None))
        assert len(everything) == 1299
        order = [(k[0], s) for k, _, s in everything]
        assert order == sorted(order)
        page = await reader.list_routes(RouteQuery("a", "10.0.0.0/24", 0, 10, None))
        assert [k[1] for k, _, _ in page] == [f"10.0.0.{i * 4}/30" for i in range(1, 11)]
        after = await reader.list_routes(RouteQuery("a", "10.0.0.0/24", 0, 100, ("a", page[-1][2])))
        assert [k[1] for k, _, _ in after] == [f"10.0.0.{i * 4}/30" for i in range(11, 64)]
        blackholes = await reader.list_routes(
            RouteQuery(None, None, int(RouteKind.BLACKHOLE), 10, None)
        )
        assert [k for k, _, _ in blackholes] == [("", "198.18.0.0/15")]
    finally:
        await writer.close()
        await reader.close()


async def test_a_commit_larger_than_an_etcd_request_is_whole(etcd) -> None:
    """400 000 routes: more than one etcd request holds, so the chunks go in several Txns and
    the head swaps in one; the size in etcd is measured."""
    config = EtcdConfig(tuple(etcd.endpoints))
    store = EtcdStore(config)
    state = IntentState(1024, 1024)
    try:
        await store.open()
        # Random prefixes, as a real table's are: the chunks do not compress to nothing.
        rng = random.Random(7)
        forward = Intent(RouteKind.FORWARD, ((GW, 1),))
        routes = {
            (node, f"{ipaddress.ip_address(rng.getrandbits(24) << 8)}/24"): forward
            for node in ("a", "b")
            for _ in range(200_000)
        }
        await commit(store, state, state.plan_apply(RouteBatch.of(list(routes.items()))))
        chunk_bytes, db_size = await store.size()
        assert chunk_bytes > TXN_BYTES, "the test did not make a commit larger than a request"
        assert store.last_commit_txns > 1
        print(
            f"\n{len(routes)} routes in {store.last_commit_txns} Txns: {chunk_bytes} bytes of "
            f"chunks, etcd database {db_size} bytes"
        )
        fresh = EtcdStore(config)
        same(state, await fresh.check())
        await fresh.close()
    finally:
        await store.close()


async def test_a_store_that_does_not_hold_the_leader_key_cannot_commit(etcd) -> None:
    config = EtcdConfig(tuple(etcd.endpoints))
    store = EtcdStore(config)
    state = IntentState(1024, 1024)
    try:
        await store.open()
        await commit(store, state, Change(revision=1, nodes=[Node("a", "unix:/run/a.sock")]))
        store.fence = 12345  # a leader key it does not hold (no key exists)
        change = state.plan_apply(RouteBatch.of(v4_routes(10)))
        with pytest.raises(NotLeader, match="lost the lead"):
            await store.commit(change)
        with pytest.raises(NotLeader):
            await store.next_election_id()
        store.fence = 0
        fresh = EtcdStore(config)
        assert (await fresh.check()).revision == 1  # nothing of it was committed
        await fresh.close()
    finally:
        await store.close()


async def test_a_second_writer_cannot_overwrite_what_the_first_committed(etcd) -> None:
    """Two stores that both think revision 2 is theirs to write: one wins, the other is
    refused and writes nothing."""
    config = EtcdConfig(tuple(etcd.endpoints))
    first, second = EtcdStore(config), EtcdStore(config)
    try:
        await first.open()
        await second.open()
        s1, s2 = IntentState(16, 16), IntentState(16, 16)
        await commit(first, s1, s1.plan_apply(RouteBatch.of(v4_routes(5))))
        with pytest.raises(EtcdUnreachable, match="changed by another writer"):
            await second.commit(s2.plan_apply(RouteBatch.of(v4_routes(7, start="12.0.0.0"))))
        fresh = EtcdStore(config)
        loaded = await fresh.check()
        assert len(loaded.routes) == 5
        await fresh.close()
        assert await first.next_election_id() == 1
        assert await second.next_election_id() == 2
    finally:
        await first.close()
        await second.close()


async def test_mutual_tls_to_etcd(tmp_path: Path, pki) -> None:
    cluster = EtcdCluster(tmp_path / "etcd", 1, tls=pki).start()
    try:
        d = pki.dir
        good = EtcdConfig(
            tuple(cluster.endpoints),
            tls=EtcdTls(d / "ca.pem", d / "client.pem", d / "client.key"),
        )
        store = EtcdStore(good)
        state = IntentState(16, 16)
        await store.open()
        await commit(store, state, state.plan_apply(RouteBatch.of(v4_routes(3))))
        await store.close()
        # Plaintext to a TLS member: refused in words that name the store.
        plain = EtcdStore(EtcdConfig(tuple(cluster.endpoints), timeout_seconds=2))
        with pytest.raises(StoreError, match=r"cannot be read: etcd 127\.0\.0\.1"):
            await plain.check()
        await plain.close()
    finally:
        cluster.stop()


def test_unreachable_etcd_is_a_clear_error(tmp_path: Path) -> None:
    import asyncio

    from etcd_support import free_port

    store = EtcdStore(EtcdConfig((f"127.0.0.1:{free_port()}",), timeout_seconds=1))

    async def run() -> None:
        try:
            await store.check()
        finally:
            await store.close()

    with pytest.raises(StoreError, match="no member with a quorum answered"):
        asyncio.run(run())


def doc(tmp_path: Path, **store: object) -> dict:
    return {"listen": {"tcp": "127.0.0.1:0"}, "store": store}


@pytest.mark.parametrize(
    ("store", "words"),
    [
        (
            {"backend": "zookeeper"},
            "store.backend: 'zookeeper' is not a store backend; use one of: sqlite, etcd",
        ),
        ({"backend": "etcd"}, "store.endpoints: is required"),
        ({"backend": "etcd", "endpoints": []}, "store.endpoints: is empty"),
        (
            {"backend": "etcd", "endpoints": ["localhost"]},
            "store.endpoints[0]: 'localhost' is not host:port",
        ),
        ({"backend": "etcd", "endpoints": ["127.0.0.1:99999"]}, "store.endpoints[0]"),
        ({"backend": "etcd", "endpoints": [2379]}, "store.endpoints[0]: is not a string"),
        ({"backend": "etcd", "endpoints": ["https://h:2379"]}, "store.endpoints[0]"),
        ({"backend": "etcd", "endpoints": "h:2379"}, "store.endpoints: is a string"),
        ({"backend": "etcd", "endpoints": ["h:1"], "path": "x.db"}, "store.path: is SQLite's"),
        (
            {"backend": "etcd", "endpoints": ["h:1"], "lease_seconds": 0},
            "store.lease_seconds: 0 is not between 2 and 60",
        ),
        ({"backend": "etcd", "endpoints": ["h:1"], "prefix": "corridor"}, "store.prefix"),
        (
            {"backend": "etcd", "endpoints": ["h:1"], "tls": {"ca": "no-ca.pem", "cert": "c.pem"}},
            "store.tls.key: is required",
        ),
        (
            {
                "backend": "etcd",
                "endpoints": ["h:1"],
                "tls": {"ca": "no-ca.pem", "cert": "c.pem", "key": "k"},
            },
            "no-ca.pem: no such file",
        ),
        ({"endpoints": ["h:1"]}, 'store.endpoints: is for an etcd store; set backend = "etcd"'),
        ({"backend": "etcd", "endpoints": ["h:1"], "advertise": "nowhere"}, "store.advertise"),
    ],
)
def test_malformed_store_tables_are_refused_naming_the_field(tmp_path: Path, store, words) -> None:
    with pytest.raises(ConfigError) as e:
        parse(doc(tmp_path, **store), base=tmp_path)
    assert words in str(e.value), str(e.value)


def test_a_good_etcd_table_is_read(tmp_path: Path, pki) -> None:
    d = pki.dir
    config = parse(
        doc(
            tmp_path,
            backend="etcd",
            endpoints=["127.0.0.1:2379", "[::1]:2379"],
            lease_seconds=7,
            tls={
                "ca": str(d / "ca.pem"),
                "cert": str(d / "client.pem"),
                "key": str(d / "client.key"),
            },
        ),
        base=tmp_path,
    )
    assert config.etcd is not None
    assert config.etcd.endpoints == ("127.0.0.1:2379", "[::1]:2379")
    assert config.etcd.lease_seconds == 7
    assert config.advertise == "127.0.0.1:0"  # from listen.tcp, when not given


def test_chunks_are_compressed() -> None:
    raw = b"".join(bytes((4, 10, 0, i >> 8, i & 255, 24, 1, 0, 0, 0, 1)) for i in range(4096))
    assert len(pack(raw)) < len(raw) // 2


def _controller(tmp_path: Path, store: dict, *flags: str) -> subprocess.CompletedProcess:
    from controller_support import toml
    from test_controller_store_check import corridor_env

    config = tmp_path / "controller.toml"
    config.write_text(toml({"listen": {"unix": str(tmp_path / "c.sock")}, "store": store}))
    return subprocess.run(
        [sys.executable, "-m", "corridor", "controller", "--config", str(config), *flags],
        env=corridor_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_check_reads_an_etcd_store_and_refuses_what_cannot_be_used(etcd, tmp_path: Path) -> None:
    done = _controller(tmp_path, {"backend": "etcd", "endpoints": etcd.endpoints}, "--check")
    assert done.returncode == 0, done.stderr
    assert f"store etcd {','.join(etcd.endpoints)}: revision 0, 0 routes, 0 nodes" in done.stderr
    # Nobody answers: one line naming the endpoints, exit 1 (a passing reason).
    from etcd_support import free_port

    nobody = f"127.0.0.1:{free_port()}"
    done = _controller(
        tmp_path, {"backend": "etcd", "endpoints": [nobody], "timeout_seconds": 1}, "--check"
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert f"etcd {nobody}: no member with a quorum answered" in done.stderr
    # Malformed: exit 2, every problem on its own line, naming the field.
    done = _controller(
        tmp_path,
        {
            "backend": "etcd",
            "endpoints": ["nowhere"],
            "tls": {"ca": "x.pem", "cert": "y", "key": "z"},
        },
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "store.endpoints[0]: 'nowhere' is not host:port" in done.stderr
    assert "store.tls.ca:" in done.stderr and "x.pem: no such file" in done.stderr


async def test_a_damaged_head_or_chunk_refuses_the_start_naming_it(etcd) -> None:
    from aetcd import rpc

    config = EtcdConfig(tuple(etcd.endpoints))
    store = EtcdStore(config)
    state = IntentState(16, 16)
    try:
        await store.open()
        await commit(store, state, state.plan_apply(RouteBatch.of(v4_routes(3))))
        name = next(n for n in store.chunks if n.startswith("r/"))
        key = store._blob_key(name, store.chunks[name])
        for damage_key, value in ((key, b"\x01not zlib"), (store.key_head, b"{not json")):
            await store.client.call("KV", "Put", rpc.PutRequest(key=damage_key, value=value))
            fresh = EtcdStore(config)
            with pytest.raises(StoreError, match="/corridor/head or a chunk it names is damaged"):
                await fresh.check()
            await fresh.close()
    finally:
        await store.close()


async def test_members_and_samples_are_kept_and_written_by_the_leader_only(etcd) -> None:
    from corridor.controller.members import MemberRecord, Sample

    config = EtcdConfig(tuple(etcd.endpoints))
    store = EtcdStore(config)
    try:
        await store.open()
        a = MemberRecord("as64500", "r1", "dut0", 0, "02:00:00:00:00:01", 0)
        b = MemberRecord("as64501", "r1", "dut0", 10, "02:00:00:00:00:02", 1)
        await store.put_member(b)
        await store.put_member(a)
        await store.add_samples([Sample("as64500", t, t, 2 * t, 3, 4) for t in (300.0, 600.0)])
        await store.add_samples([Sample("as64501", 300.0, 9, 9, 9, 9)])
        fresh = EtcdStore(config)
        assert await fresh.list_members() == [a, b]
        assert [s.time for s in await fresh.samples("as64500", 0, 1e12)] == [300.0, 600.0]
        assert await fresh.samples("as64500", 300.0, 600.0) == [
            Sample("as64500", 300.0, 300, 600, 3, 4)
        ]  # start included, end excluded, another member's samples apart
        await fresh.delete_member("as64501")
        assert await store.list_members() == [a]
        await fresh.close()
        store.fence = 12345  # a leader key it does not hold: nothing is written
        with pytest.raises(NotLeader):
            await store.put_member(b)
        with pytest.raises(NotLeader):
            await store.add_samples([Sample("as64500", 900.0, 1, 1, 1, 1)])
        assert await store.list_members() == [a]
        assert len(await store.samples("as64500", 0, 1e12)) == 2
    finally:
        await store.close()
