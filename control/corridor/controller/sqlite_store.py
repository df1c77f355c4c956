"""The embedded store: one SQLite file in WAL mode with synchronous=FULL, so a commit is on
disk before the controller acknowledges it. Every call runs on one dedicated thread that
owns the connection: the event loop never waits on the disk.

The file is not trusted at start: `check` reads it whole without changing anything and
refuses, naming the fault, a file that is empty, damaged or not Corridor's, a row the
controller could not serve, or a store that holds fewer routes than it did when last
closed (rows removed behind the controller's back). Intent that lost routes reaches nodes
only on the operator's word (`accept_loss`, `corridor controller --accept-empty-store`).

A route is one narrow row, (node, sort key, kind, group id): the prefix's text is its sort
key's, and the next-hop set is named once, in `group_ids`. A full table is a million rows a
commit writes, and the narrow row halves the time a batch's commit takes and quarters the
file (format 2; a store of format 1, which wrote the prefix and next hops as text in every
row, is checked as it is and converted in one transaction when the controller opens it).

A batch of routes for one node (an Apply) is committed as a few rows of `pending`, its
sort keys in one blob per distinct intent, instead of a row per route: the commit that the
client waits for writes kilobytes, not a B-tree row per route (27 ms of a 50 000-route
batch's path). Pending rows are folded into `routes` once commits pause (FOLD_IDLE), a
batch per turn of the store's thread, so a burst of Applies (a full table coming in) does
not share the CPU with its own folding; when commits never pause, folding starts FOLD_WAIT
seconds after the first pending batch and goes on a batch per turn, between the commits
(each waits one batch's fold at most, not all of them), until none is left; and a commit
folds first when PENDING_LIMIT routes wait.
Pending rows are applied in revision order, and only ever name live group ids: a commit
that writes `routes` itself (a delete, routes for several nodes) or frees a group id folds
every pending row first, in its own transaction, and so does every read of `routes`
(ListRoutes, the count at close). A crash leaves the rows pending; `check` reads them over
`routes`, and `open` folds them (format 3: a Corridor that reads format 2 would not see
them, so it refuses the store).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import stat
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache, partial
from itertools import chain
from pathlib import Path
from typing import Any, TypeVar

from corridor.common.addresses import address_to_bytes, gateway_from_pb
from corridor.common.edge import policy_from_json, policy_to_json
from corridor.common.errors import FieldError
from corridor.common.fib import RouteKind, vlan_problem
from corridor.common.paths import obstacle
from corridor.controller.domain import (
    ALL_NODES,
    MAX_NEXT_HOPS,
    MAX_WEIGHT,
    AdjacencyKey,
    Change,
    GroupKey,
    Intent,
    Node,
    NodeTls,
    RouteKey,
    StoreUnavailable,
    adjacency_from_text,
    adjacency_text,
    check_node_address,
    check_node_name,
    group_from_text,
    group_text,
    prefix_of_sort_key,
    prefix_sort_key,
)
from corridor.controller.members import (
    MemberRecord,
    Sample,
    bgp_from_json,
    bgp_to_json,
    sources_from_json,
    sources_to_json,
)
from corridor.controller.store import Loaded, PortPolicyRecord, RouteQuery, StoreError

T = TypeVar("T")
log = logging.getLogger("corridor.controller")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS routes (
    node TEXT NOT NULL, sort_key BLOB NOT NULL, kind INTEGER NOT NULL, group_id INTEGER,
    PRIMARY KEY (node, sort_key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pending (revision INTEGER NOT NULL, part INTEGER NOT NULL,
    node TEXT NOT NULL, keys BLOB NOT NULL, size INTEGER NOT NULL, kind INTEGER NOT NULL,
    group_id INTEGER, PRIMARY KEY (revision, part));
CREATE TABLE IF NOT EXISTS group_ids (next_hops TEXT PRIMARY KEY, id INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS adjacency_ids (next_hop TEXT PRIMARY KEY, id INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (name TEXT PRIMARY KEY, address TEXT NOT NULL,
    tls_ca TEXT, tls_cert TEXT, tls_key TEXT, tls_server_name TEXT);
CREATE TABLE IF NOT EXISTS drained (node TEXT NOT NULL, next_hop TEXT NOT NULL,
    PRIMARY KEY (node, next_hop));
CREATE TABLE IF NOT EXISTS port_policies (node TEXT NOT NULL, port TEXT NOT NULL,
    vlan INTEGER NOT NULL, policy TEXT NOT NULL, PRIMARY KEY (node, port, vlan));
CREATE TABLE IF NOT EXISTS members (name TEXT PRIMARY KEY, node TEXT NOT NULL,
    port TEXT NOT NULL, vlan INTEGER NOT NULL, mac TEXT NOT NULL, id INTEGER NOT NULL,
    sources TEXT, bgp TEXT);
CREATE TABLE IF NOT EXISTS samples (member TEXT NOT NULL, time REAL NOT NULL,
    rx_bytes INTEGER NOT NULL, tx_bytes INTEGER NOT NULL, rx_packets INTEGER NOT NULL,
    tx_packets INTEGER NOT NULL, PRIMARY KEY (member, time)) WITHOUT ROWID;
"""


TABLES = ("meta", "routes", "group_ids", "adjacency_ids", "nodes", "drained")
# Made on open when missing (a store older than members has none): not required by `check`.
MEMBER_TABLES = ("members", "samples")
FORMAT = 3  # meta 'format': this file's layout; a newer one is refused, never guessed at
FOLD_IDLE = 0.05  # seconds without a commit before pending routes are folded
FOLD_WAIT = 1.0  # seconds pending routes wait at most while commits never pause
PENDING_LIMIT = 2_000_000  # routes pending at most: a commit then folds them first
# Format 1's routes table, read by `check` and converted by `open`.
V1_COLUMNS = ("node", "sort_key", "prefix", "kind", "next_hops")
MIGRATE_V1 = """
CREATE TABLE routes_v2 (
    node TEXT NOT NULL, sort_key BLOB NOT NULL, kind INTEGER NOT NULL, group_id INTEGER,
    PRIMARY KEY (node, sort_key)) WITHOUT ROWID;
INSERT INTO routes_v2 SELECT r.node, r.sort_key, r.kind, g.id
    FROM routes r LEFT JOIN group_ids g ON g.next_hops = r.next_hops;
DROP TABLE routes;
ALTER TABLE routes_v2 RENAME TO routes;
"""
SQLITE_HEADER = b"SQLite format 3\x00"
RESTORE = "restore it from a backup (docs/operations.md, recovering the store)"
ACCEPT = "--accept-empty-store"


class SqliteStore:
    def __init__(
        self, path: str | Path, max_groups: int = 1 << 24, max_adjacencies: int = 1 << 24
    ) -> None:
        self.path = Path(path)
        self.max_groups = max_groups
        self.max_adjacencies = max_adjacencies
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="corridor-store")
        self._db: sqlite3.Connection | None = None
        self._checked: Loaded | None = None
        self._seen: tuple[int, ...] = ()  # the file as `check` read it (see _signature)
        self._record = False  # whether open() records the store's state (see _record_state)
        # The id of every next-hop set the store holds, and the set of every id, as the
        # committed store has them (the store's thread alone reads and writes them).
        self._group_ids: dict[GroupKey, int] = {}
        self._groups: dict[int, GroupKey] = {}
        self._pending = 0  # routes in `pending` not yet folded into `routes`
        self._commits = 0  # commits made: a fold waits for them to pause
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fold_timer: asyncio.TimerHandle | None = None
        self._waiting_since = 0.0  # when the armed fold timer was first armed
        self._draining = False  # folding at the bound, a batch per turn until none is left

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError(f"{self.path}: the store is not open")
        return self._db

    # -- check: read all, change nothing

    async def check(self, accept_loss: bool = False) -> Loaded:
        """Reads the whole store and checks it, changing nothing on disk: the file, its
        tables, every row, and that it holds the routes it held when last closed. Raises
        StoreError saying what is wrong. `accept_loss` is the operator's word that a store
        which lost routes, or is empty, is to be taken as it is."""
        return await self._run(self._check, accept_loss)

    def _check(self, accept_loss: bool) -> Loaded:
        path = self.path
        wal = Path(f"{path}-wal")
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            if wal.exists():
                raise StoreError(
                    f"does not exist, but its write-ahead log {wal} does: the store was "
                    f"deleted or moved; put it back, or remove {wal} and {path}-shm to start "
                    "with no intent"
                ) from None
            if (found := obstacle(path.parent)) is not None:
                where, why = found
                if where == path.parent:
                    raise StoreError(f"cannot create it: {where} {why}") from None
                raise StoreError(f"cannot make {path.parent}: {where} {why}") from None
            self._checked = _empty()
            self._record = True
            return self._checked
        except OSError as e:
            raise StoreError(f"cannot read it: {e.strerror}") from None
        if stat.S_ISDIR(st.st_mode):
            raise StoreError("is a directory, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise StoreError("is not a regular file")
        if (found := obstacle(path.parent)) is not None:  # commits write a log beside it
            raise StoreError(f"cannot write it: {found[0]} {found[1]}")
        if not os.access(path, os.R_OK | os.W_OK):
            raise StoreError("cannot write it: it is not writable by this user")
        self._seen = _signature(path)
        if st.st_size == 0:
            if not accept_loss:
                raise StoreError(
                    "is empty (0 bytes), and a store the controller made never is: it was "
                    f"truncated or replaced; {RESTORE}, or start once with {ACCEPT} to "
                    "begin with no intent (every node is then emptied)"
                )
            self._checked = _empty("the store file was empty (0 bytes)")
            self._record = True
            return self._checked
        with path.open("rb") as f:
            if f.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
                raise StoreError(f"is not an SQLite database; {RESTORE}")
        # Read-only, and without the locks' shared memory file when no log is left (a clean
        # stop): reading makes no file beside the store.
        uri = path.absolute().as_uri() + ("?mode=ro" if wal.exists() else "?mode=ro&immutable=1")
        try:
            db = sqlite3.connect(uri, uri=True, check_same_thread=False)
        except sqlite3.Error as e:
            raise StoreError(f"cannot be opened: {e}") from None
        try:
            self._checked = self._read(db, accept_loss)
        except sqlite3.DatabaseError as e:
            raise StoreError(f"is damaged (SQLite: {e}); {RESTORE}") from None
        finally:
            db.close()
        return self._checked

    def _read(self, db: sqlite3.Connection, accept_loss: bool) -> Loaded:
        tables = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            if not accept_loss:
                raise StoreError(
                    f"holds no tables: it was replaced by an empty database; {RESTORE}, or "
                    f"start once with {ACCEPT} to begin with no intent (every node is then "
                    "emptied)"
                )
            self._record = True
            return _empty("the store held no tables")
        if not tables & set(TABLES):
            raise StoreError(
                f"is not a Corridor store (its tables: {', '.join(sorted(tables))}); point "
                "store.path at the controller's store"
            )
        missing = [t for t in TABLES if t not in tables]
        if missing:
            raise StoreError(f"has no table {', '.join(missing)}: damaged or edited; {RESTORE}")
        (verdict,) = db.execute("PRAGMA quick_check(1)").fetchone()
        if verdict != "ok":
            raise StoreError(f"is damaged (SQLite: {verdict}); {RESTORE}")
        return _Reader(self, db).read(accept_loss)

    # -- open: from here on the file is written

    async def open(self) -> SqliteStore:
        """Opens the store for writing, making it (and its directory) if it is new; the
        store `check` read, which must not have changed since (StoreError)."""
        self._loop = asyncio.get_running_loop()
        await self._run(self._open)
        return self

    def _open(self) -> None:
        if self._checked is None:
            self._check(accept_loss=False)
        if self._seen and _signature(self.path) != self._seen:
            raise StoreError("changed while the controller was starting; start it again")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StoreError(f"cannot use write-ahead logging (journal mode {mode})")
            db.execute("PRAGMA synchronous=FULL")
            if _columns(db, "routes") == V1_COLUMNS:
                _migrate_v1(db)
            db.executescript(SCHEMA)
            db.executescript(_COUNTER)
            if "sources" not in _columns(db, "members"):  # a store from before source filters
                db.execute("ALTER TABLE members ADD COLUMN sources TEXT")
            if "bgp" not in _columns(db, "members"):  # from before filters derived from BGP
                db.execute("ALTER TABLE members ADD COLUMN bgp TEXT")
        except sqlite3.Error as e:
            raise StoreError(f"cannot be opened for writing: {e}") from None
        self._db = db
        loaded = self._checked
        assert loaded is not None
        if loaded.accepted:
            # Ids no route uses any more (their routes were lost) are let go, as a commit
            # that deleted those routes would have.
            db.execute("BEGIN IMMEDIATE")
            db.execute("DELETE FROM group_ids")
            db.executemany(
                "INSERT INTO group_ids VALUES (?, ?)",
                ((group_text(g), i) for g, i in loaded.group_ids.items()),
            )
            db.execute("DELETE FROM adjacency_ids")
            db.executemany(
                "INSERT INTO adjacency_ids VALUES (?, ?)",
                ((adjacency_text(a), i) for a, i in loaded.adjacency_ids.items()),
            )
            db.execute("COMMIT")
        self._group_ids = dict(loaded.group_ids)
        self._groups = {i: g for g, i in loaded.group_ids.items()}
        try:
            self._pending = _pending_routes(db)  # a crash may have left some: fold them now
            self._fold()
        except sqlite3.Error as e:
            raise StoreError(f"cannot be opened for writing: {e}") from None
        if self._record:
            self._record_state(loaded.revision, len(loaded.routes))

    def _record_state(self, revision: int, routes: int) -> None:
        """Records the routes the store holds at `revision`, so that the next start can tell
        a store that lost routes behind the controller's back (the same revision, fewer
        routes) from one whose commits deleted them (a later revision)."""
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        db.executemany(
            "INSERT OR REPLACE INTO meta VALUES (?, ?)",
            (("format", FORMAT), ("recorded_revision", revision), ("recorded_routes", routes)),
        )
        db.execute("COMMIT")

    async def close(self) -> None:
        if self._fold_timer is not None:
            self._fold_timer.cancel()
        if self._db is not None:
            db = self._db

            def record_and_close() -> None:
                self._commits += 1  # no fold step after this one
                try:
                    self._fold()
                    revision = self._meta(db, "revision")
                    (routes,) = db.execute("SELECT count(*) FROM routes").fetchone()
                    self._record_state(revision, routes)
                except sqlite3.Error:
                    pass  # a full or read-only disk: the next start checks without it
                db.close()

            await self._run(record_and_close)
            self._db = None
        self._thread.shutdown(wait=True)

    # -- load

    async def load(self) -> Loaded:
        """What `check` read (checking now if it has not)."""
        if self._checked is None:
            return await self.check()
        return self._checked

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

        new_groups = change.new_groups
        known = self._group_ids

        def group_id(group: GroupKey) -> int:
            found = new_groups.get(group)
            return known[group] if found is None else found

        db.execute("BEGIN IMMEDIATE")
        try:
            if self._meta(db, "revision") + 1 != change.revision:
                raise RuntimeError(f"revision {change.revision} does not follow the store's")
            logged = _loggable(change) and not change.freed_groups
            if self._pending and (not logged or self._pending >= PENDING_LIMIT):
                _fold_pending(db)  # in this transaction: whole with the change, or not at all
                folded = True
            else:
                folded = False
            db.execute("INSERT OR REPLACE INTO meta VALUES ('revision', ?)", (change.revision,))
            if logged:
                _log_batch(db, change, group_id)
            else:
                _insert_routes(db, _rows(change, group_id))
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
        self._commits += 1
        if folded:
            self._pending = 0
        if logged:
            assert change.batch is not None
            self._pending += len(change.batch)
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._fold_later)
        for group in change.freed_groups:
            self._groups.pop(known.pop(group, 0), None)
        for group, id_ in new_groups.items():
            known[group] = id_
            self._groups[id_] = group

    def _fold(self, oldest_only: bool = False) -> bool:
        """Folds the pending rows (those of the oldest revision only, `oldest_only`) into
        `routes` in one transaction; whether rows are left. Raises sqlite3.Error, the rows
        then left pending. Not synchronous=FULL: the transaction removes the pending rows
        it folds, so a fold lost with the power leaves them to be folded again, and the next
        commit's sync makes it durable with it."""
        if not self._pending:
            return False
        db = self._connection()
        db.execute("PRAGMA synchronous=NORMAL")
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                left = _fold_pending(db, oldest_only)
                db.execute("COMMIT")
            except BaseException:
                _rollback(db)
                raise
        finally:
            db.execute("PRAGMA synchronous=FULL")
        self._pending = left
        return bool(left)

    def _fold_later(self) -> None:
        """(On the event loop, after a commit that left rows pending.) Folds them once no
        commit came for FOLD_IDLE seconds, or from FOLD_WAIT seconds after the first if
        commits never pause that long (a full table coming in, a steady stream of small
        Applies)."""
        loop = self._loop
        assert loop is not None
        now = loop.time()
        if self._fold_timer is not None:
            self._fold_timer.cancel()
        else:
            self._waiting_since = now
        delay = min(FOLD_IDLE, max(0.0, self._waiting_since + FOLD_WAIT - now))
        self._fold_timer = loop.call_later(delay, self._fold_now, self._commits)

    def _fold_now(self, commits: int) -> None:
        self._fold_timer = None
        if self._db is not None and self._loop is not None:
            # At the bound commits never paused: drain whatever they do (once at a time).
            drain = self._loop.time() - self._waiting_since >= FOLD_WAIT
            if drain:
                if self._draining:
                    return
                self._draining = True
            self._thread.submit(self._fold_step, commits, drain)

    def _fold_step(self, commits: int, drain: bool = False) -> None:
        """(On the store's thread.) Folds the oldest pending batch and queues the next
        step, behind whatever the thread was given meanwhile: while no commit came since
        (one that did queues its own), or, draining at the bound, until none is left, so
        that a commit waits one batch's fold at most. A failure (a full disk) leaves the
        rows pending for the next commit or read to fold, and says so."""
        more = False
        try:
            if self._db is not None and (drain or commits == self._commits):
                more = self._fold(oldest_only=True)
        except sqlite3.Error as e:
            log.warning("store %s: %d routes stay pending: %s", self.path, self._pending, e)
        if more:
            self._thread.submit(self._fold_step, commits, drain)
        elif drain:
            self._draining = False

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

    # -- edge policies (a table the schema adds on open: a store without it has none)

    async def list_port_policies(self) -> list[PortPolicyRecord]:
        return await self._run(self._list_port_policies)

    def _list_port_policies(self) -> list[PortPolicyRecord]:
        rows = self._connection().execute(
            "SELECT node, port, vlan, policy FROM port_policies ORDER BY node, port, vlan"
        )
        out = []
        for node, port, vlan, text in rows:
            try:
                out.append(PortPolicyRecord(node, port, vlan, policy_from_json(text)))
            except ValueError as e:
                raise StoreError(
                    f"port_policies: node {node} port {port} VLAN {vlan}: {e}; {RESTORE}"
                ) from None
        return out

    async def put_port_policy(self, record: PortPolicyRecord) -> None:
        r = record
        row = (r.node, r.port, r.vlan, policy_to_json(r.policy))
        await self._run(
            self._write, "INSERT OR REPLACE INTO port_policies VALUES (?, ?, ?, ?)", [row]
        )

    # -- members and their samples

    async def list_members(self) -> list[MemberRecord]:
        return await self._run(self._list_members)

    def _list_members(self) -> list[MemberRecord]:
        rows = self._connection().execute(
            "SELECT name, node, port, vlan, mac, id, sources, bgp FROM members ORDER BY name"
        )
        out = []
        for name, node, port, vlan, mac, member_id, sources, bgp in rows:
            try:
                filt = sources_from_json(name, sources)
                hops, saved = bgp_from_json(name, bgp)
                out.append(MemberRecord(name, node, port, vlan, mac, member_id, filt, hops, saved))
            except (ValueError, TypeError) as e:
                raise StoreError(f"members: {e}; {RESTORE}") from None
        return out

    async def put_member(self, member: MemberRecord) -> None:
        """Adds or replaces (by name) a member, durably."""
        m = member
        row = (
            m.name, m.node, m.port, m.vlan, m.mac, m.id, sources_to_json(m.sources),
            bgp_to_json(m),
        )  # fmt: skip
        await self._run(
            self._write,
            "INSERT OR REPLACE INTO members (name, node, port, vlan, mac, id, sources, bgp) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [row],
        )

    async def delete_member(self, name: str) -> None:
        """Removes a member (its samples stay, for the bills of months gone by)."""
        await self._run(self._write, "DELETE FROM members WHERE name = ?", [(name,)])

    async def add_samples(self, samples: Sequence[Sample]) -> None:
        rows = [
            (s.member, s.time, s.rx_bytes, s.tx_bytes, s.rx_packets, s.tx_packets) for s in samples
        ]
        await self._run(
            self._write, "INSERT OR REPLACE INTO samples VALUES (?, ?, ?, ?, ?, ?)", rows
        )

    async def samples(self, member: str, start: float, end: float) -> list[Sample]:
        """A member's samples with start <= time < end, by time."""
        return await self._run(self._samples, member, start, end)

    def _samples(self, member: str, start: float, end: float) -> list[Sample]:
        rows = self._connection().execute(
            "SELECT member, time, rx_bytes, tx_bytes, rx_packets, tx_packets FROM samples "
            "WHERE member = ? AND time >= ? AND time < ? ORDER BY time",
            (member, start, end),
        )
        return [Sample(*row) for row in rows]

    def _write(self, sql: str, rows: list[tuple[object, ...]]) -> None:
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(sql, rows)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    # -- list

    async def list_routes(self, query: RouteQuery) -> list[tuple[RouteKey, Intent, bytes]]:
        return await self._run(self._list_routes, query)

    def _list_routes(self, q: RouteQuery) -> list[tuple[RouteKey, Intent, bytes]]:
        try:
            self._fold()  # every pending row first: routes then holds them
        except sqlite3.Error as e:
            raise _unavailable(self.path, e) from e
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
        sql = "SELECT node, sort_key, kind, group_id FROM routes"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY node, sort_key LIMIT ?"
        args.append(q.limit)
        out: list[tuple[RouteKey, Intent, bytes]] = []
        groups = self._groups
        for node, sort_key, kind, group_id in self._connection().execute(sql, args):
            group = None if group_id is None else groups[group_id]
            prefix = prefix_of_sort_key(sort_key)
            assert prefix is not None  # every row was checked at start or written since
            out.append(((node, prefix), Intent(RouteKind(kind), group), sort_key))
        return out


ROWS_PER_INSERT = 8000  # 4 parameters a row: under SQLite's default bound of 32 766


def _insert_routes(db: sqlite3.Connection, rows: Iterable[tuple[object, ...]]) -> None:
    """Inserts (or replaces) routes rows, thousands per statement. Not executemany: it lets
    the GIL go and takes it back around each row's step, and while the event loop runs a
    long pass over a table (a diff, a refresh) each take waits for it: a 50 000-row commit
    took seconds instead of a tenth of one. Here the GIL goes once per statement. The
    statements are of few sizes (full, then powers of two), so few are ever compiled."""
    per = min(ROWS_PER_INSERT, db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // 4)
    rows = list(rows)
    start = 0
    while start < len(rows):
        left = len(rows) - start
        size = per if left >= per else 1 << (left.bit_length() - 1)
        chunk = rows[start : start + size]
        db.execute(_insert_sql(size), list(chain.from_iterable(chunk)))
        start += size


@cache  # bounded: ROWS_PER_INSERT and the powers of two below it
def _insert_sql(rows: int) -> str:
    return "INSERT OR REPLACE INTO routes VALUES " + ",".join(("(?,?,?,?)",) * rows)


# A part of a batch's routes (one node, one intent, keys of one length) as one statement:
# the sort keys joined into one blob, cut back into rows inside SQLite, the row numbers
# (up to COUNTER² from ?7) made by joining the connection's counter table to itself. A
# recursive CTE made them at twice the cost: 24 ms a 50 000-route part instead of 15.
COUNTER = 1024
_COUNTER = (
    "CREATE TEMP TABLE IF NOT EXISTS counter (i INTEGER PRIMARY KEY);"
    f"INSERT OR IGNORE INTO counter SELECT value FROM json_each('{list(range(COUNTER))}');"
)
_INSERT_KEYS = (
    "INSERT OR REPLACE INTO routes SELECT ?1, "
    f"substr(?2, (?7 + a.i * {COUNTER} + b.i) * ?4 + 1, ?4), ?5, ?6 FROM counter a, counter b "
    f"WHERE a.i <= (?3 - ?7 - 1) / {COUNTER} AND ?7 + a.i * {COUNTER} + b.i < ?3"
)


def _loggable(change: Change) -> bool:
    """Whether `change`'s routes can go to `pending`: a batch for one node with its keys
    packed, and no deletes (they go to `routes` at once)."""
    batch = change.batch
    return (
        batch is not None
        and batch.packed is not None
        and bool(batch.prefixes)
        and not change.deleted
        and batch.node() is not None
    )


def _log_batch(db: sqlite3.Connection, change: Change, group_id: Callable[[GroupKey], int]) -> None:
    """Writes the routes of `change`'s batch (_loggable) to `pending`, a row per distinct
    intent and key length (an IPv4 and an IPv6 one for a table with one next-hop set), the
    keys as one blob. The fold (_fold_pending) makes them rows of `routes`."""
    batch = change.batch
    assert batch is not None and batch.packed is not None
    node = batch.node()
    db.executemany(
        "INSERT INTO pending VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            (change.revision, n, node, keys, size, int(intent.kind),
             None if intent.group is None else group_id(intent.group))
            for n, (i, size, keys) in enumerate(batch.packed.parts(batch.index))
            for intent in (batch.intents[i],)
        ),
    )  # fmt: skip


def _fold_pending(db: sqlite3.Connection, oldest_only: bool = False) -> int:
    """Makes the pending rows (those of the oldest revision only, `oldest_only`) rows of
    `routes`, oldest first, and removes them; returns the routes left pending. One
    statement per row, whose routes SQLite cuts from the blob with the GIL let go. Bound as
    four parameters a route (_insert_routes), a full table held the GIL about a second on
    the store's thread; this way its inserts take 0.35 s."""
    where = " WHERE revision = (SELECT min(revision) FROM pending)" if oldest_only else ""
    rows = db.execute(
        "SELECT node, keys, length(keys) / size, size, kind, group_id FROM pending"
        f"{where} ORDER BY revision, part"
    ).fetchall()
    for node, keys, count, size, kind, group in rows:
        for start in range(0, count, COUNTER * COUNTER):
            db.execute(_INSERT_KEYS, (node, keys, count, size, kind, group, start))
    if rows:
        db.execute(f"DELETE FROM pending{where}")
    return _pending_routes(db)


def _pending_routes(db: sqlite3.Connection) -> int:
    """The routes the pending rows hold."""
    (count,) = db.execute("SELECT coalesce(sum(length(keys) / size), 0) FROM pending").fetchone()
    return int(count)


def _rows(change: Change, group_id: Callable[[GroupKey], int]) -> Iterable[tuple[object, ...]]:
    """The routes rows of `change.set`: from its batch's columns when it has one (the sort
    keys as the reader made them, kind and group once per distinct intent)."""
    batch = change.batch
    if batch is None or batch.packed is None:
        return (
            (node, prefix_sort_key(prefix), int(i.kind),
             None if i.group is None else group_id(i.group))
            for (node, prefix), i in change.set.items()
        )  # fmt: skip
    kinds = [int(i.kind) for i in batch.intents]
    groups = [None if i.group is None else group_id(i.group) for i in batch.intents]
    return zip(
        batch.nodes,
        batch.packed.sort_keys(),
        map(kinds.__getitem__, batch.index),
        map(groups.__getitem__, batch.index),
        strict=True,
    )


def _columns(db: sqlite3.Connection, table: str) -> tuple[str, ...]:
    return tuple(row[1] for row in db.execute(f"PRAGMA table_info({table})"))


def _migrate_v1(db: sqlite3.Connection) -> None:
    """Converts a format 1 store (checked whole by `check` before) in one transaction: it is
    converted or left as it was."""
    db.execute("BEGIN IMMEDIATE")
    try:
        for statement in MIGRATE_V1.split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute("INSERT OR REPLACE INTO meta VALUES ('format', ?)", (FORMAT,))
        db.execute("COMMIT")
    except BaseException:
        _rollback(db)
        raise


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


def _signature(path: Path) -> tuple[int, ...]:
    """The store file and its log as they stand: changed if either was written."""
    out: list[int] = []
    for p in (path, Path(f"{path}-wal")):
        try:
            st = os.stat(p)
        except FileNotFoundError:
            out += (0, 0, 0, 0)
        else:
            out += (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    return tuple(out)


def _empty(accepted: str = "") -> Loaded:
    return Loaded(0, [], [], {}, {}, [], accepted)


class _Reader:
    """Reads a store's rows, checking each as the API checks what clients send; notes every
    problem and reports the first, naming the row."""

    def __init__(self, store: SqliteStore, db: sqlite3.Connection) -> None:
        self.store = store
        self.db = db
        self.problems: list[str] = []
        self._groups: dict[str, GroupKey | None] = {}

    def problem(self, text: str) -> None:
        self.problems.append(text)

    def read(self, accept_loss: bool) -> Loaded:
        db = self.db
        meta = dict(db.execute("SELECT name, value FROM meta"))
        numbers = {}
        for name in ("format", "revision", "recorded_revision", "recorded_routes"):
            value = meta.get(name)
            if value is not None and (not isinstance(value, int) or value < 0):
                self.problem(f"meta {name}: {value!r} is not a count (0 or more)")
                value = None
            numbers[name] = value
        if (numbers["format"] or 0) > FORMAT:
            raise StoreError(
                f"was written by a newer Corridor (store format {numbers['format']}; this "
                f"one reads {FORMAT}); run that version"
            )
        revision = numbers["revision"] or 0
        group_ids = self._ids("group_ids", self.store.max_groups, "reconcile.max_groups")
        adjacency_ids = self._ids(
            "adjacency_ids", self.store.max_adjacencies, "reconcile.max_adjacencies"
        )
        columns = _columns(db, "routes")
        if columns in (V1_COLUMNS, ("node", "sort_key", "kind", "group_id")):
            groups_by_id = {i: g for g, i in group_ids.items()}
            routes = self._routes(columns == V1_COLUMNS, groups_by_id)
            if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'pending'").fetchone():
                routes = self._with_pending(routes, groups_by_id)
        else:
            raise StoreError(
                f"has a routes table of columns {', '.join(columns)}, which no Corridor "
                f"writes: damaged or edited; {RESTORE}"
            )
        used_groups: set[GroupKey] = set()
        for (node, prefix), intent in routes:
            group = intent.group
            if group is None or group in used_groups:
                continue
            used_groups.add(group)
            if group not in group_ids:
                self.problem(
                    f"row routes[node={node!r}, prefix={prefix!r}]: next-hop set "
                    f"{group_text(group)!r} has no id in group_ids"
                )
            for adjacency, _ in group:
                if adjacency not in adjacency_ids:
                    self.problem(
                        f"row group_ids[{group_text(group)!r}]: next hop "
                        f"{adjacency_text(adjacency)!r} has no id in adjacency_ids"
                    )
        nodes = self._nodes()
        drained = []
        for node, text in db.execute("SELECT node, next_hop FROM drained"):
            drain = self._adjacency(text)
            # '' (ALL_NODES): drained on every node.
            problem = None if node == ALL_NODES else check_node_name(node)
            if problem is not None or drain is None:
                self.problem(
                    f"row drained[node={node!r}, next_hop={text!r}]: "
                    + (problem or "not a next hop (gateway,port,vlan)")
                )
                continue
            drained.append((node, drain))
        if self.problems:
            more = len(self.problems) - 1
            also = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
            raise StoreError(f"{self.problems[0]}{also}; {RESTORE}")

        # Lost routes: fewer than when the store was last closed at this same revision, or
        # ids that no route uses (a commit that deletes the last user frees the id).
        lost = ""
        recorded = numbers["recorded_routes"]
        if numbers["recorded_revision"] == revision and recorded is not None:
            if len(routes) < recorded:
                lost = (
                    f"holds {len(routes)} routes, but held {recorded} at revision {revision} "
                    "when last closed"
                )
        unused = [g for g in group_ids if g not in used_groups]
        if not lost and unused:
            lost = (
                f"holds next-hop set {group_text(unused[0])!r} (id {group_ids[unused[0]]}) "
                "that no route uses"
            )
        if lost:
            if not accept_loss:
                raise StoreError(
                    f"{lost}: routes were removed behind the controller's back; {RESTORE}, "
                    f"or start once with {ACCEPT} to take the {len(routes)} routes it holds "
                    "as intent (nodes then lose the rest)"
                )
            self.store._record = True
            used_adjacencies = {a for g in used_groups for a, _ in g}
            group_ids = {g: i for g, i in group_ids.items() if g in used_groups}
            adjacency_ids = {a: i for a, i in adjacency_ids.items() if a in used_adjacencies}
        elif (numbers["format"] or 0) < FORMAT:
            self.store._record = True  # from before the format was recorded, or older
        return Loaded(revision, routes, nodes, group_ids, adjacency_ids, drained, lost)

    def _routes(self, v1: bool, groups: dict[int, GroupKey]) -> list[tuple[RouteKey, Intent]]:
        """The routes rows: format 2's (node, sort key, kind, group id), or format 1's, which
        also hold the prefix's text (checked against the sort key) and next hops as text."""
        # A full table is a million rows: the common case costs a few lookups a row, and
        # routes with the same kind and next hops share one Intent, as they would in memory.
        if v1:
            sql = "SELECT node, sort_key, prefix, kind, next_hops FROM routes"
            intent_of: Callable[[object, object], Intent | str] = self._intent
        else:
            sql = "SELECT node, sort_key, NULL, kind, group_id FROM routes"
            intent_of = partial(self._intent_of_id, groups=groups)
        routes: list[tuple[RouteKey, Intent]] = []
        append = routes.append
        intents: dict[tuple[object, object], Intent | str] = {}
        nodes: dict[object, str | None] = {ALL_NODES: None}
        prefix_of_key = prefix_of_sort_key
        for node, sort_key, stored, kind, next_hops in self.db.execute(sql):
            intent = intents.get((kind, next_hops))
            if intent is None:
                intent = intents[kind, next_hops] = intent_of(kind, next_hops)
            if node not in nodes:
                nodes[node] = check_node_name(node) if isinstance(node, str) else "not a name"
            problem = nodes[node]
            prefix = prefix_of_key(sort_key)
            if problem is None and isinstance(intent, str):
                problem = intent
            if stored is not None and problem is None and prefix != stored:
                problem = "the prefix is not the canonical text of its sort key " + (
                    f"(which is {prefix})" if prefix else f"({sort_key!r})"
                )
            if stored is None and prefix is None:
                self.problem(
                    f"row routes[node={node!r}, sort_key={sort_key!r}]: the sort key is not "
                    "a prefix's (family, address, length)"
                )
                continue
            if problem is not None:
                self.problem(f"row routes[node={node!r}, prefix={stored or prefix!r}]: {problem}")
                continue
            assert not isinstance(intent, str) and prefix is not None
            append(((node, prefix), intent))
        return routes

    def _with_pending(
        self, routes: list[tuple[RouteKey, Intent]], groups: dict[int, GroupKey]
    ) -> list[tuple[RouteKey, Intent]]:
        """`routes` with the pending rows (batches committed but not yet folded when the
        controller stopped) laid over them, oldest first, each checked as a row of routes."""
        rows = self.db.execute(
            "SELECT revision, part, node, keys, size, kind, group_id FROM pending "
            "ORDER BY revision, part"
        ).fetchall()
        if not rows:
            return routes
        merged = dict(routes)
        for revision, part, node, keys, size, kind, group_id in rows:
            name = f"row pending[revision={revision!r}, part={part!r}]"
            problem = (
                "not a name"
                if not isinstance(node, str)
                else (None if node == ALL_NODES else check_node_name(node))
            )
            intent = self._intent_of_id(kind, group_id, groups)
            if problem is None and isinstance(intent, str):
                problem = intent
            if problem is None and not (
                isinstance(keys, bytes) and size in (6, 18) and len(keys) % size == 0
            ):
                problem = "its keys are not whole sort keys of one size (6 or 18 octets)"
            if problem is not None:
                self.problem(f"{name}: {problem}")
                continue
            assert isinstance(intent, Intent)
            for at in range(0, len(keys), size):
                prefix = prefix_of_sort_key(keys[at : at + size])
                if prefix is None:
                    self.problem(f"{name}: key {keys[at : at + size]!r} is not a prefix's")
                    break
                merged[node, prefix] = intent
        return list(merged.items())

    @staticmethod
    def _intent_of_id(kind: object, group_id: object, groups: dict[int, GroupKey]) -> Intent | str:
        """The intent of a stored (kind, group_id), or what is wrong with them."""
        route_kind = _KINDS.get(kind) if isinstance(kind, int) else None
        if route_kind is None:
            return f"kind {kind!r} is not a route kind (1 to 4)"
        if route_kind is not RouteKind.FORWARD:
            if group_id is not None:
                return f"a {route_kind.name} route with a next-hop set (group_id {group_id!r})"
            return Intent(route_kind)
        if group_id is None:
            return "a FORWARD route without a next-hop set (group_id)"
        group = groups.get(group_id) if isinstance(group_id, int) else None
        if group is None:
            return f"next-hop set id {group_id!r} has no row in group_ids"
        return Intent(route_kind, group)

    def _intent(self, kind: object, next_hops: object) -> Intent | str:
        """The intent of a stored (kind, next_hops), or what is wrong with them."""
        route_kind = _KINDS.get(kind) if isinstance(kind, int) else None
        if route_kind is None:
            return f"kind {kind!r} is not a route kind (1 to 4)"
        if route_kind is not RouteKind.FORWARD:
            if next_hops is not None:
                return f"a {route_kind.name} route with next_hops"
            return Intent(route_kind)
        if next_hops is None:
            return "a FORWARD route without next_hops"
        group = self._group(next_hops)
        if group is None:
            return f"next_hops {next_hops!r} is not a next-hop set (gateway,port,vlan,weight;...)"
        return Intent(route_kind, group)

    def _ids(self, table: str, limit: int, field: str) -> dict[Any, int]:
        ids: dict[Any, int] = {}
        owners: dict[int, str] = {}
        read = self._group if table == "group_ids" else self._adjacency
        for text, id_ in self.db.execute(f"SELECT * FROM {table}"):
            key = read(text)
            if key is None:
                self.problem(
                    f"row {table}[{text!r}]: not a next hop{' set' if table == 'group_ids' else ''}"
                )
                continue
            if not isinstance(id_, int) or not 1 <= id_ <= limit:
                self.problem(
                    f"row {table}[{text!r}]: id {id_!r} is not between 1 and {limit} ({field})"
                )
                continue
            if id_ in owners:
                self.problem(f"{table}: id {id_} is given to both {owners[id_]!r} and {text!r}")
                continue
            owners[id_] = text
            ids[key] = id_
        return ids

    def _nodes(self) -> list[Node]:
        nodes = []
        for name, address, ca, cert, key, sni in self.db.execute("SELECT * FROM nodes"):
            problem = check_node_name(str(name)) or check_node_address(str(address))
            tls = (ca, cert, key)
            if problem is None and any(tls) and not all(isinstance(f, str) and f for f in tls):
                problem = "tls_ca, tls_cert and tls_key are all set or none is"
            if problem is not None:
                self.problem(f"row nodes[{name!r}]: {problem}")
                continue
            nodes.append(Node(name, address, NodeTls(ca, cert, key, sni or "") if ca else None))
        return nodes

    def _group(self, text: object) -> GroupKey | None:
        """The next-hop set of its stored text, if that is the canonical text of a set the
        API would accept; None if not."""
        if not isinstance(text, str):
            return None
        if text in self._groups:
            return self._groups[text]
        group: GroupKey | None = None
        try:
            candidate = group_from_text(text)
        except ValueError:
            candidate = ()
        keys = [a for a, _ in candidate]
        if (
            0 < len(candidate) <= MAX_NEXT_HOPS
            and group_text(candidate) == text
            and list(candidate) == sorted(candidate)
            and len(set(keys)) == len(keys)
            and all(self._adjacency(adjacency_text(a)) is not None for a in keys)
            and all(1 <= w <= MAX_WEIGHT for _, w in candidate)
        ):
            group = candidate
        self._groups[text] = group
        return group

    @staticmethod
    def _adjacency(text: object) -> AdjacencyKey | None:
        if not isinstance(text, str):
            return None
        try:
            gateway, port, vlan = adjacency_from_text(text)
            if gateway_from_pb(address_to_bytes(gateway), "gateway") != gateway:
                return None
        except (ValueError, OSError, FieldError):
            return None
        if (
            not port
            or vlan_problem(vlan) is not None
            or adjacency_text((gateway, port, vlan)) != text
        ):
            return None
        return (gateway, port, vlan)


_KINDS = {int(k): k for k in RouteKind}
