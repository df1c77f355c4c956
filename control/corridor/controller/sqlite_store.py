"""The embedded store: one SQLite file in WAL mode with synchronous=FULL, so a commit is on
disk before the controller acknowledges it. Every call runs on one dedicated thread that
owns the connection: the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from corridor.common.fib import RouteKind
from corridor.controller.domain import (
    Change,
    GroupKey,
    Intent,
    Node,
    NodeTls,
    RouteKey,
    StoreUnavailable,
    adjacency_from_text,
    adjacency_text,
    group_from_text,
    group_text,
    prefix_sort_key,
)
from corridor.controller.store import Loaded, RouteQuery

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS routes (
    node TEXT NOT NULL, sort_key BLOB NOT NULL, prefix TEXT NOT NULL,
    kind INTEGER NOT NULL, next_hops TEXT,
    PRIMARY KEY (node, sort_key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS group_ids (next_hops TEXT PRIMARY KEY, id INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS adjacency_ids (next_hop TEXT PRIMARY KEY, id INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (name TEXT PRIMARY KEY, address TEXT NOT NULL,
    tls_ca TEXT, tls_cert TEXT, tls_key TEXT, tls_server_name TEXT);
CREATE TABLE IF NOT EXISTS drained (node TEXT NOT NULL, next_hop TEXT NOT NULL,
    PRIMARY KEY (node, next_hop));
"""


class SqliteStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="corridor-store")
        self._db: sqlite3.Connection | None = None

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError(f"{self.path}: the store is not open")
        return self._db

    async def open(self) -> SqliteStore:
        await self._run(self._open)
        return self

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise OSError(f"{self.path}: cannot use write-ahead logging (journal mode {mode})")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(SCHEMA)
        self._db = db

    async def close(self) -> None:
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._thread.shutdown(wait=True)

    # -- load

    async def load(self) -> Loaded:
        return await self._run(self._load)

    def _load(self) -> Loaded:
        db = self._connection()
        revision = self._meta(db, "revision")
        routes = []
        groups: dict[str, GroupKey] = {}
        for node, prefix, kind, next_hops in db.execute(
            "SELECT node, prefix, kind, next_hops FROM routes"
        ):
            group = None
            if next_hops is not None:
                group = groups.get(next_hops)
                if group is None:
                    group = groups[next_hops] = group_from_text(next_hops)
            routes.append(((node, prefix), Intent(RouteKind(kind), group)))
        nodes = [
            Node(name, address, NodeTls(ca, cert, key, sni or "") if ca is not None else None)
            for name, address, ca, cert, key, sni in db.execute("SELECT * FROM nodes")
        ]
        group_ids = {group_from_text(t): i for t, i in db.execute("SELECT * FROM group_ids")}
        adjacency_ids = {
            adjacency_from_text(t): i for t, i in db.execute("SELECT * FROM adjacency_ids")
        }
        drained = [(n, adjacency_from_text(t)) for n, t in db.execute("SELECT * FROM drained")]
        return Loaded(revision, routes, nodes, group_ids, adjacency_ids, drained)

    @staticmethod
    def _meta(db: sqlite3.Connection, name: str) -> int:
        row = db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return 0 if row is None else int(row[0])

    # -- commit

    async def commit(self, change: Change) -> None:
        await self._run(self._commit, change)

    def _commit(self, change: Change) -> None:
        db = self._connection()
        texts: dict[GroupKey, str] = {}

        def text(group: GroupKey) -> str:
            t = texts.get(group)
            if t is None:
                t = texts[group] = group_text(group)
            return t

        db.execute("BEGIN IMMEDIATE")
        try:
            if self._meta(db, "revision") + 1 != change.revision:
                raise RuntimeError(f"revision {change.revision} does not follow the store's")
            db.execute("INSERT OR REPLACE INTO meta VALUES ('revision', ?)", (change.revision,))
            db.executemany(
                "INSERT OR REPLACE INTO routes VALUES (?, ?, ?, ?, ?)", _rows(change, text)
            )
            db.executemany(
                "DELETE FROM routes WHERE node = ? AND sort_key = ?",
                ((node, prefix_sort_key(prefix)) for node, prefix in change.deleted),
            )
            db.executemany(
                "DELETE FROM group_ids WHERE next_hops = ?",
                ((text(g),) for g in change.freed_groups),
            )
            db.executemany(
                "INSERT OR REPLACE INTO group_ids VALUES (?, ?)",
                ((text(g), i) for g, i in change.new_groups.items()),
            )
            db.executemany(
                "DELETE FROM adjacency_ids WHERE next_hop = ?",
                ((adjacency_text(a),) for a in change.freed_adjacencies),
            )
            db.executemany(
                "INSERT OR REPLACE INTO adjacency_ids VALUES (?, ?)",
                ((adjacency_text(a), i) for a, i in change.new_adjacencies.items()),
            )
            db.executemany(
                "INSERT OR REPLACE INTO nodes VALUES (?, ?, ?, ?, ?, ?)",
                (
                    (n.name, n.address, *(
                        (n.tls.ca, n.tls.cert, n.tls.key, n.tls.server_name)
                        if n.tls else (None,) * 4))
                    for n in change.nodes
                ),
            )  # fmt: skip
            db.executemany("DELETE FROM nodes WHERE name = ?", ((n,) for n in change.removed_nodes))
            db.executemany(
                "INSERT OR REPLACE INTO drained VALUES (?, ?)",
                ((n, adjacency_text(a)) for n, a in change.drained),
            )
            db.executemany(
                "DELETE FROM drained WHERE node = ? AND next_hop = ?",
                ((n, adjacency_text(a)) for n, a in change.restored),
            )
            db.execute("COMMIT")  # synchronous=FULL: on disk when this returns
        except sqlite3.Error as e:
            _rollback(db)
            raise _unavailable(self.path, e) from e
        except BaseException:
            _rollback(db)
            raise

    async def next_election_id(self) -> int:
        return await self._run(self._next_election_id)

    def _next_election_id(self) -> int:
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            value = self._meta(db, "election") + 1
            db.execute("INSERT OR REPLACE INTO meta VALUES ('election', ?)", (value,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return value

    # -- list

    async def list_routes(self, query: RouteQuery) -> list[tuple[RouteKey, Intent, bytes]]:
        return await self._run(self._list_routes, query)

    def _list_routes(self, q: RouteQuery) -> list[tuple[RouteKey, Intent, bytes]]:
        where: list[str] = []
        args: list[str | bytes | int] = []
        if q.node is not None:
            where.append("node = ?")
            args.append(q.node)
        if q.within is not None:
            import ipaddress

            network = ipaddress.ip_network(q.within)
            family = bytes((len(network.network_address.packed),))
            low = family + network.network_address.packed + bytes((network.prefixlen,))
            high = family + network.broadcast_address.packed + b"\xff"
            where.append("sort_key BETWEEN ? AND ?")
            args += [low, high]
        if q.kind:
            where.append("kind = ?")
            args.append(q.kind)
        if q.after is not None:
            where.append("(node, sort_key) > (?, ?)")
            args += list(q.after)
        sql = "SELECT node, prefix, kind, next_hops, sort_key FROM routes"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY node, sort_key LIMIT ?"
        args.append(q.limit)
        out: list[tuple[RouteKey, Intent, bytes]] = []
        for node, prefix, kind, next_hops, sort_key in self._connection().execute(sql, args):
            group = None if next_hops is None else group_from_text(next_hops)
            out.append(((node, prefix), Intent(RouteKind(kind), group), sort_key))
        return out


def _rows(change: Change, text: Callable[[GroupKey], str]) -> Iterable[tuple[object, ...]]:
    """The routes rows of `change.set`: from its batch's columns when it has one (the sort
    keys as the reader made them, kind and next hops once per distinct intent)."""
    batch = change.batch
    if batch is None or batch.sort_keys is None or len(batch) != len(change.set):
        return (
            (node, prefix_sort_key(prefix), prefix, int(i.kind),
             None if i.group is None else text(i.group))
            for (node, prefix), i in change.set.items()
        )  # fmt: skip
    kinds = [int(i.kind) for i in batch.intents]
    hops = [None if i.group is None else text(i.group) for i in batch.intents]
    return zip(
        batch.nodes,
        batch.sort_keys,
        batch.prefixes,
        map(kinds.__getitem__, batch.index),
        map(hops.__getitem__, batch.index),
        strict=True,
    )


def _rollback(db: sqlite3.Connection) -> None:
    """Ends the transaction if SQLite has not already (it rolls back by itself on a full
    disk or an I/O error, and a ROLLBACK then would hide the cause)."""
    if db.in_transaction:
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the connection rolls back when the next transaction begins


# SQLite's primary result codes that mean the store cannot take writes now: full, read-only,
# I/O error, cannot open, locked by someone else (https://sqlite.org/rescode.html).
_FULL = 13
_UNAVAILABLE = {5, 6, 8, 10, 13, 14}


def _unavailable(path: Path, e: sqlite3.Error) -> Exception:
    code = getattr(e, "sqlite_errorcode", 0) & 0xFF
    if code not in _UNAVAILABLE:
        return e
    name = getattr(e, "sqlite_errorname", "")
    return StoreUnavailable(
        f"store {path}: {e} ({name}); nothing was committed", full=code == _FULL
    )
