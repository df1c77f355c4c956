"""The store is checked whole before the controller starts: a store that is empty, damaged,
not Corridor's, or holds a row the controller could not serve is refused in one line that
names the file and the fault, and nothing on disk changes. A store that lost routes it held
(emptied, truncated, replaced by an empty file) is taken as intent only on the operator's
word, `--accept-empty-store`: an emptied store never empties the nodes by itself."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from controller_support import (
    LocalAgent,
    controller_document,
    controller_stub,
    eventually,
    route,
    start_controller,
    toml,
    wait_in_sync,
)
from corridor.controller.sqlite_store import FORMAT
from corridor.v1 import controller_pb2

CONTROL = str(Path(__file__).resolve().parent.parent / "control")
GW = ("198.18.0.2", "cor-c0", 0, 1)
OTHER_GW = ("198.18.0.3", "cor-c0", 0, 1)


def document_of(tmp_path: Path, nodes: dict[str, str]) -> dict:
    document = controller_document(tmp_path, nodes)
    if not nodes:
        del document["nodes"]  # no empty array in the tests' TOML
    return document


def corridor_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (CONTROL, env.get("PYTHONPATH")) if p)
    return env


def snapshot(root: Path) -> dict[str, tuple[int, int, int, bytes | None]]:
    """Every file and directory under `root`: mode, size, mtime and the bytes of files."""
    out = {}
    for p in sorted([root, *root.rglob("*")]):
        st = p.lstat()
        data = p.read_bytes() if p.is_file() and not p.is_symlink() else None
        out[str(p.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns, data)
    return out


def refused(tmp_path: Path, config: Path, *flags: str) -> str:
    """Runs `corridor controller` on `config`; asserts it exits 2 with one line and no
    traceback, and that nothing under tmp_path changed. Returns the line."""
    before = snapshot(tmp_path)
    process = subprocess.run(
        [sys.executable, "-m", "corridor", "controller", "--config", str(config), *flags],
        env=corridor_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    err = process.stderr
    assert process.returncode == 2, err
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert snapshot(tmp_path) == before, "a refused start changed files"
    return lines[0]


async def serve_then_stop(config: Path, sock: Path, *flags: str) -> str:
    """Runs `corridor controller` until it serves, stops it with SIGTERM; its stderr."""
    import asyncio

    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "corridor", "controller", "--config", str(config), *flags,
        env=corridor_env(), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    channel, stub = controller_stub(sock)
    try:

        async def ready():
            if process.returncode is not None:
                raise AssertionError(f"exited {process.returncode}: {await process.stderr.read()}")
            try:
                await stub.ListNodes(controller_pb2.ListNodesRequest(), timeout=1)
            except grpc.aio.AioRpcError:
                return False
            return True

        await eventually(ready, 60, "the controller serving")
    finally:
        await channel.close()
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            _, err = await process.communicate()
    assert process.returncode == 0, err
    return err.decode()


async def make_store(tmp_path: Path, routes: int = 20, nodes: dict[str, str] | None = None):
    """A real store made by a real controller: `routes` routes for every node, half through
    one next hop and half through another, one blackhole, and `nodes`, which it waits to
    have the routes. Returns the configuration file."""
    document = document_of(tmp_path, nodes or {})
    running = await start_controller(document, tmp_path)
    channel, stub = controller_stub(tmp_path / "controller.sock")
    try:
        batch = [route(prefix(i), GW if i % 2 else OTHER_GW) for i in range(routes)]
        batch.append(route("2001:db8::/32", kind=2))
        reply = await stub.Apply(controller_pb2.ApplyRequest(routes=batch), timeout=30)
        for node in nodes or {}:
            await wait_in_sync(stub, node, reply.revision, within=60)
    finally:
        await channel.close()
        await running.stop()
    config = tmp_path / "controller.toml"
    config.write_text(toml(document))
    return config


def prefix(i: int) -> str:
    """The i-th route's prefix: /24s in 198.18/16, then /28s in 198.19/16."""
    if i < 256:
        return f"198.18.{i}.0/24"
    i -= 256
    return f"198.19.{i // 16}.{i % 16 * 16}/28"


def restore(db: Path, saved: bytes) -> None:
    """Puts back a copy of a store taken while it was closed."""
    db.write_bytes(saved)
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


def move_aside(db: Path) -> None:
    """Deletes the store but leaves a write-ahead log behind, as `rm intent.db` would."""
    Path(f"{db}-wal").write_bytes(b"\0" * 4096)
    db.unlink()


def tamper(db: Path, *statements: str) -> None:
    """Edits the store behind the controller's back, as an operator's sqlite3 would."""
    connection = sqlite3.connect(db, isolation_level=None)
    try:
        for statement in statements:
            connection.execute(statement)
    finally:
        connection.close()
    assert not Path(f"{db}-wal").exists()  # checkpointed: the file alone is the store


async def test_a_zero_length_store_is_refused_and_left_alone(tmp_path: Path) -> None:
    config = await make_store(tmp_path)
    db = tmp_path / "intent.db"
    db.write_bytes(b"")
    line = refused(tmp_path, config)
    assert line.startswith(f"corridor controller: store.path {db}: ")
    assert "empty" in line and "--accept-empty-store" in line
    assert db.stat().st_size == 0


async def test_a_store_without_its_tables_is_refused(tmp_path: Path) -> None:
    config = await make_store(tmp_path)
    db = tmp_path / "intent.db"
    tamper(db, "DROP TABLE routes")
    line = refused(tmp_path, config)
    assert line.startswith(f"corridor controller: store.path {db}: ") and "routes" in line

    # Another program's database is not taken for an empty store, even on the operator's word.
    db.unlink()
    tamper(db, "CREATE TABLE accounts (id INTEGER)")
    line = refused(tmp_path, config, "--accept-empty-store")
    assert line.startswith(f"corridor controller: store.path {db}: ")
    assert "not a Corridor store" in line


async def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    config = await make_store(tmp_path)
    db = tmp_path / "intent.db"
    db.write_bytes(os.urandom(16384))
    line = refused(tmp_path, config, "--accept-empty-store")
    assert line.startswith(f"corridor controller: store.path {db}: ")
    assert "not an SQLite database" in line


async def test_a_truncated_store_is_refused(tmp_path: Path) -> None:
    config = await make_store(tmp_path, routes=3000)
    db = tmp_path / "intent.db"
    data = db.read_bytes()
    assert len(data) > 40_000
    db.write_bytes(data[: len(data) // 2])
    line = refused(tmp_path, config)
    assert line.startswith(f"corridor controller: store.path {db}: ") and "damaged" in line


# Rows are keyed by sort key: family, address, length (see prefix_sort_key).
KEY = "x'04c612010018'"  # 198.18.1.0/24
TENS = "x'04c6120a0018' AND x'04c612130018'"  # 198.18.10.0/24 to 198.18.19.0/24

BAD_ROWS = [
    pytest.param(
        f"UPDATE routes SET sort_key = x'04c612010118' WHERE sort_key = {KEY}",
        "routes[node='', sort_key=b'\\x04\\xc6\\x12\\x01\\x01\\x18']: the sort key is not",
        id="host-bits",
    ),
    pytest.param(
        f"UPDATE routes SET sort_key = x'00' WHERE sort_key = {KEY}",
        "routes[node='', sort_key=b'\\x00']",
        id="sort-key",
    ),
    pytest.param(
        f"UPDATE routes SET kind = 9 WHERE sort_key = {KEY}",
        "routes[node='', prefix='198.18.1.0/24']: kind 9",
        id="kind",
    ),
    pytest.param(
        f"UPDATE routes SET group_id = 999 WHERE sort_key = {KEY}",
        "routes[node='', prefix='198.18.1.0/24']: next-hop set id 999 has no row",
        id="group-id",
    ),
    pytest.param(
        f"UPDATE routes SET group_id = NULL WHERE sort_key = {KEY}",
        "routes[node='', prefix='198.18.1.0/24']: a FORWARD route without",
        id="forward-without-next-hops",
    ),
    pytest.param(
        "UPDATE routes SET group_id = 1 WHERE kind = 2",
        "routes[node='', prefix='2001:db8::/32']: a BLACKHOLE route with a next-hop set",
        id="blackhole-with-next-hops",
    ),
    pytest.param(
        f"UPDATE routes SET node = 'no such node' WHERE sort_key = {KEY}",
        "routes[node='no such node', prefix='198.18.1.0/24']",
        id="node-name",
    ),
    pytest.param(
        "UPDATE group_ids SET next_hops = 'nonsense' WHERE id = 1",
        "row group_ids['nonsense']: not a next hop set",
        id="next-hops",
    ),
    pytest.param(
        "UPDATE group_ids SET id = (SELECT min(id) FROM group_ids)",
        "group_ids: id 1 is given to",
        id="duplicate-group-id",
    ),
    pytest.param(
        "DELETE FROM group_ids WHERE next_hops = '198.18.0.2,cor-c0,0,1'",
        "routes[node='', prefix='198.18.1.0/24']: next-hop set id",
        id="group-without-id",
    ),
    pytest.param(
        "UPDATE group_ids SET id = 70000",
        "reconcile.max_groups",
        id="group-id-beyond-max",
    ),
    pytest.param(
        "UPDATE adjacency_ids SET id = (SELECT min(id) FROM adjacency_ids)",
        "adjacency_ids: id 1 is given to",
        id="duplicate-adjacency-id",
    ),
    # A batch committed but not folded into routes when the controller stopped (see
    # sqlite_store's header): its rows are checked as routes rows are.
    pytest.param(
        "INSERT INTO pending VALUES (1, 0, '', x'04c61201001804c61202', 6, 2, NULL)",
        "row pending[revision=1, part=0]: its keys are not whole sort keys",
        id="pending-keys",
    ),
    pytest.param(
        "INSERT INTO pending VALUES (1, 0, '', x'04c61201001804c612020118', 6, 2, NULL)",
        "row pending[revision=1, part=0]: key b'\\x04\\xc6\\x12\\x02\\x01\\x18' is not",
        id="pending-host-bits",
    ),
    pytest.param(
        "INSERT INTO pending VALUES (1, 0, '', x'04c612010018', 6, 1, 999)",
        "row pending[revision=1, part=0]: next-hop set id 999 has no row",
        id="pending-group-id",
    ),
    pytest.param(
        "INSERT INTO pending VALUES (1, 0, 'no such node', x'04c612010018', 6, 2, NULL)",
        "row pending[revision=1, part=0]: 'no such node' is not a node name",
        id="pending-node-name",
    ),
    pytest.param(
        "UPDATE meta SET value = -3 WHERE name = 'revision'",
        "meta revision",
        id="revision",
    ),
    pytest.param(
        "ALTER TABLE routes ADD COLUMN extra INTEGER",
        "has a routes table of columns node, sort_key, kind, group_id, extra",
        id="columns",
    ),
]


@pytest.mark.parametrize(("statement", "expected"), BAD_ROWS)
async def test_a_row_the_controller_could_not_serve_is_refused_naming_it(
    tmp_path: Path, statement: str, expected: str
) -> None:
    config = await make_store(tmp_path)
    db = tmp_path / "intent.db"
    tamper(db, statement)
    line = refused(tmp_path, config)
    assert line.startswith(f"corridor controller: store.path {db}: "), line
    assert expected in line, line
    # Not even on the operator's word: the row is wrong, not missing.
    refused(tmp_path, config, "--accept-empty-store")


async def test_routes_lost_behind_the_controllers_back_never_empty_a_node(
    tmp_path: Path,
) -> None:
    agent = await LocalAgent(tmp_path / "a.sock").start()
    try:
        config = await make_store(tmp_path, routes=50, nodes={"a": agent.address})
        db = tmp_path / "intent.db"
        installed = await agent.routes()
        assert len(installed) == 51

        # Routes removed by hand: the store no longer holds what its last commit left.
        tamper(db, f"DELETE FROM routes WHERE sort_key BETWEEN {TENS}")
        line = refused(tmp_path, config)
        assert line.startswith(f"corridor controller: store.path {db}: ")
        assert "holds 41 routes, but held 51" in line and "--accept-empty-store" in line

        # Replaced by an empty file: refused the same way.
        saved = db.read_bytes()
        db.write_bytes(b"")
        refused(tmp_path, config)
        assert await agent.routes() == installed  # the node kept forwarding all of it

        # The operator's word: what the store holds now (nothing) is intent, and the node
        # is emptied to match; the next start needs no word.
        err = await serve_then_stop(config, tmp_path / "controller.sock", "--accept-empty-store")
        assert "--accept-empty-store" in err  # said in the log, for the record

        async def emptied():
            return await agent.routes() == {}

        await eventually(emptied, 60, "the node emptied")
        await serve_then_stop(config, tmp_path / "controller.sock")

        # The 41 routes the hand-edited store held, accepted likewise.
        restore(db, saved)
        tamper(db, f"DELETE FROM routes WHERE sort_key BETWEEN {TENS}")
        await serve_then_stop(config, tmp_path / "controller.sock", "--accept-empty-store")
        await serve_then_stop(config, tmp_path / "controller.sock")
    finally:
        await agent.stop()


async def test_a_store_whose_last_commit_deleted_every_route_starts(tmp_path: Path) -> None:
    config = await make_store(tmp_path)
    running = await start_controller(document_of(tmp_path, {}), tmp_path)
    channel, stub = controller_stub(tmp_path / "controller.sock")
    try:
        page = await stub.ListRoutes(controller_pb2.ListRoutesRequest(page_size=1000))
        await stub.Delete(
            controller_pb2.DeleteRequest(routes=[key_of(r) for r in page.routes]), timeout=30
        )
    finally:
        await channel.close()
        await running.stop()
    err = await serve_then_stop(config, tmp_path / "controller.sock")
    assert "0 routes" in err


def key_of(r: controller_pb2.RouteIntent) -> controller_pb2.RouteKey:
    return controller_pb2.RouteKey(node=r.node, prefix=r.prefix)


async def test_a_fresh_path_is_a_fresh_store(tmp_path: Path) -> None:
    config = tmp_path / "controller.toml"
    document = document_of(tmp_path, {})
    document["store"]["path"] = str(tmp_path / "new" / "dir" / "intent.db")
    config.write_text(toml(document))
    await serve_then_stop(config, tmp_path / "controller.sock")
    assert (tmp_path / "new" / "dir" / "intent.db").stat().st_size > 0
    await serve_then_stop(config, tmp_path / "controller.sock")


async def test_a_write_ahead_log_without_its_store_is_refused(tmp_path: Path) -> None:
    config = await make_store(tmp_path)
    db = tmp_path / "intent.db"
    move_aside(db)
    line = refused(tmp_path, config)
    assert line.startswith(f"corridor controller: store.path {db}: ") and "-wal" in line


V1_SCHEMA = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE routes (
    node TEXT NOT NULL, sort_key BLOB NOT NULL, prefix TEXT NOT NULL,
    kind INTEGER NOT NULL, next_hops TEXT,
    PRIMARY KEY (node, sort_key)) WITHOUT ROWID;
CREATE TABLE group_ids (next_hops TEXT PRIMARY KEY, id INTEGER NOT NULL);
CREATE TABLE adjacency_ids (next_hop TEXT PRIMARY KEY, id INTEGER NOT NULL);
CREATE TABLE nodes (name TEXT PRIMARY KEY, address TEXT NOT NULL,
    tls_ca TEXT, tls_cert TEXT, tls_key TEXT, tls_server_name TEXT);
CREATE TABLE drained (node TEXT NOT NULL, next_hop TEXT NOT NULL, PRIMARY KEY (node, next_hop));
INSERT INTO meta VALUES ('format', 1), ('revision', 3), ('recorded_revision', 3),
    ('recorded_routes', 3);
INSERT INTO adjacency_ids VALUES ('198.18.0.2,cor-c0,0', 1), ('198.18.0.3,cor-c0,0', 2);
INSERT INTO group_ids VALUES ('198.18.0.2,cor-c0,0,1', 1),
    ('198.18.0.2,cor-c0,0,1;198.18.0.3,cor-c0,0,2', 2);
INSERT INTO routes VALUES
    ('', x'04c612010018', '198.18.1.0/24', 1, '198.18.0.2,cor-c0,0,1'),
    ('', x'04c612020018', '198.18.2.0/24', 1, '198.18.0.2,cor-c0,0,1;198.18.0.3,cor-c0,0,2'),
    ('', x'1020010db800000000000000000000000020', '2001:db8::/32', 2, NULL);
INSERT INTO drained VALUES ('', '198.18.0.3,cor-c0,0');
"""


def v1_store(tmp_path: Path) -> Path:
    """A store as the previous format wrote it (prefix and next hops as text in every row);
    returns the configuration file."""
    db = tmp_path / "intent.db"
    connection = sqlite3.connect(db)
    connection.executescript(V1_SCHEMA)
    connection.close()
    config = tmp_path / "controller.toml"
    config.write_text(toml(document_of(tmp_path, {})))
    return config


async def test_a_store_of_the_previous_format_is_converted_whole(tmp_path: Path) -> None:
    config = v1_store(tmp_path)
    await serve_then_stop(config, tmp_path / "controller.sock")
    connection = sqlite3.connect(tmp_path / "intent.db")
    try:
        columns = [row[1] for row in connection.execute("PRAGMA table_info(routes)")]
        assert columns == ["node", "sort_key", "kind", "group_id"]
        (format_,) = connection.execute("SELECT value FROM meta WHERE name = 'format'").fetchone()
        assert format_ == FORMAT
    finally:
        connection.close()
    running = await start_controller(document_of(tmp_path, {}), tmp_path)
    channel, stub = controller_stub(tmp_path / "controller.sock")
    try:
        page = await stub.ListRoutes(controller_pb2.ListRoutesRequest(page_size=10))
        listed = {
            (r.prefix.address, r.prefix.length): (
                r.kind, [(h.gateway, h.weight) for h in r.next_hops]
            )
            for r in page.routes
        }  # fmt: skip
        two, three = bytes((198, 18, 0, 2)), bytes((198, 18, 0, 3))
        assert listed == {
            (bytes((198, 18, 1, 0)), 24): (1, [(two, 1)]),
            (bytes((198, 18, 2, 0)), 24): (1, [(two, 1), (three, 2)]),
            (bytes.fromhex("20010db8") + bytes(12), 32): (2, []),
        }
        # Its ids and drained next hops carried over: a new route through a known set
        # takes its id, and the commit after the conversion follows the store's revision.
        reply = await stub.Apply(
            controller_pb2.ApplyRequest(routes=[route("198.18.3.0/24", GW)]), timeout=30
        )
        assert reply.revision == 4
    finally:
        await channel.close()
        await running.stop()
    connection = sqlite3.connect(tmp_path / "intent.db")
    try:
        rows = connection.execute("SELECT group_id FROM routes WHERE kind = 1").fetchall()
        assert sorted(rows) == [(1,), (1,), (2,)]
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        (
            "UPDATE routes SET next_hops = 'nonsense' WHERE prefix = '198.18.1.0/24'",
            "routes[node='', prefix='198.18.1.0/24']: next_hops 'nonsense'",
        ),
        (
            "UPDATE routes SET prefix = '198.18.1.1/24' WHERE prefix = '198.18.1.0/24'",
            "routes[node='', prefix='198.18.1.1/24']: the prefix is not the canonical text",
        ),
    ],
)
async def test_a_bad_row_of_the_previous_format_is_refused_before_conversion(
    tmp_path: Path, statement: str, expected: str
) -> None:
    config = v1_store(tmp_path)
    tamper(tmp_path / "intent.db", statement)
    line = refused(tmp_path, config)  # and nothing on disk changed: not converted either
    assert expected in line, line


async def test_a_next_hop_drained_on_every_node_survives_a_restart(tmp_path: Path) -> None:
    config = await make_store(tmp_path)
    running = await start_controller(document_of(tmp_path, {}), tmp_path)
    channel, stub = controller_stub(tmp_path / "controller.sock")
    try:
        await stub.SetNextHopState(
            controller_pb2.SetNextHopStateRequest(
                gateway=bytes((198, 18, 0, 2)), port="cor-c0", drained=True
            ),
            timeout=30,
        )
    finally:
        await channel.close()
        await running.stop()
    await serve_then_stop(config, tmp_path / "controller.sock")
