"""The SQLite store commits a batch as a log row and folds it into `routes` afterwards (see
sqlite_store's header): a batch is whole whether the controller stops before the fold, the
fold fails, or later changes come before it; and a controller killed -9 right after an
Apply restarts with every route."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

from controller_support import controller_document, controller_stub, route, toml
from corridor._dataplane import Prefixes
from corridor.common.fib import RouteKind
from corridor.controller import sqlite_store
from corridor.controller.domain import Change, Intent, RouteBatch
from corridor.controller.sqlite_store import SqliteStore
from corridor.controller.store import RouteQuery
from corridor.v1 import controller_pb2
from test_controller_process import CONTROL, serving

ROUTES = 3000


def prefixes(start: int, count: int) -> list[str]:
    base = int(ipaddress.ip_address("198.18.0.0"))
    return [f"{ipaddress.ip_address(base + (start + i) * 4)}/30" for i in range(count)] + [
        str(ipaddress.ip_network(f"2001:db8:{start + i:x}::/48")) for i in range(count // 10)
    ]


def batch_change(revision: int, texts: list[str]) -> Change:
    """A change as an Apply of `texts` (blackholes for every node) makes it."""
    blackhole = Intent(RouteKind.BLACKHOLE)  # one object, as the API's reader makes it
    batch = RouteBatch.of([(("", p), blackhole) for p in texts])
    batch.prefixes = Prefixes(texts)  # packed, as the Apply reader makes it
    return Change(revision=revision, batch=batch)


def rows(path: Path, table: str) -> int:
    connection = sqlite3.connect(path)
    try:
        return connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    finally:
        connection.close()


async def opened(path: Path) -> SqliteStore:
    store = SqliteStore(path)
    await store.check()
    return await store.open()


def no_folds(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fold that follows a pause in commits never comes: as if the controller stopped
    (or its fold failed) while batches were pending."""
    monkeypatch.setattr(SqliteStore, "_fold_now", lambda self, commits: None)


def crash(store: SqliteStore) -> None:
    """Lets the store go without `close` (which folds and records its state)."""
    assert store._db is not None
    store._db.close()
    store._db = None
    store._thread.shutdown(wait=True)


async def folded(path: Path) -> None:
    """Waits (10 s at most) for the pending rows to be folded."""
    for _ in range(1000):
        if not rows(path, "pending"):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{rows(path, 'pending')} pending rows after 10 s")


async def test_batches_are_folded_once_commits_pause(tmp_path: Path) -> None:
    path = tmp_path / "intent.db"
    store = await opened(path)
    texts = prefixes(0, ROUTES) + prefixes(ROUTES, ROUTES)
    await store.commit(batch_change(1, texts[: len(texts) // 2]))
    await store.commit(batch_change(2, texts[len(texts) // 2 :]))
    assert rows(path, "pending") > 0  # in the log when the commit returns
    await folded(path)  # by the store itself, nothing read
    assert rows(path, "routes") == len(texts)
    listed = await store.list_routes(RouteQuery(None, None, 0, 10 * ROUTES, None))
    assert sorted(p for (_, p), _, _ in listed) == sorted(texts)
    await store.close()
    assert (rows(path, "routes"), rows(path, "pending")) == (len(texts), 0)


async def test_commits_that_never_pause_are_folded_between_them_from_the_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A steady stream of small Applies (no pause of FOLD_IDLE, which is made a minute
    here so that only the bound can fold): nothing is folded before FOLD_WAIT, and from
    then on the pending batches are folded a batch per turn between the commits, while
    they go on, until no more than the last commits' wait."""
    monkeypatch.setattr(sqlite_store, "FOLD_IDLE", 60.0)
    path = tmp_path / "intent.db"
    store = await opened(path)
    loop = asyncio.get_running_loop()
    revision, started = 0, loop.time()
    folding = None  # when the first routes were folded
    while True:
        elapsed = loop.time() - started  # the first commit armed the bound after this
        pending = rows(path, "pending")
        if folding is None and rows(path, "routes"):
            folding = elapsed
        if folding is not None and pending <= 2 * 2:
            break  # caught up: the commit just made and the one queued behind a fold
        assert elapsed < sqlite_store.FOLD_WAIT + 10, ("pending not folded", folding, pending)
        revision += 1
        await store.commit(batch_change(revision, prefixes(revision * 10, 10)))
        await asyncio.sleep(0.01)
    assert folding >= sqlite_store.FOLD_WAIT * 0.9  # not before the bound
    assert revision > 20  # commits went on while it folded
    await store.close()
    assert rows(path, "pending") == 0


async def test_batches_not_folded_when_the_controller_stopped_load_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "intent.db"
    no_folds(monkeypatch)
    store = await opened(path)
    first, second = prefixes(0, ROUTES), prefixes(ROUTES, ROUTES)
    await store.commit(batch_change(1, first))
    await store.commit(batch_change(2, second))
    crash(store)
    assert rows(path, "pending") == 4  # two batches, each an IPv4 and an IPv6 part
    assert rows(path, "routes") == 0

    again = SqliteStore(path)
    loaded = await again.check()
    assert loaded.revision == 2
    assert sorted(p for (_, p), _ in loaded.routes) == sorted(first + second)
    assert rows(path, "pending") == 4  # check changes nothing on disk
    await again.open()  # folds them
    assert (rows(path, "routes"), rows(path, "pending")) == (len(first) + len(second), 0)
    await again.close()


async def test_a_change_after_unfolded_batches_applies_after_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delete of routes a pending batch set, and a batch that sets some of them again
    with another intent: each lands on the batches before it, never under them."""
    path = tmp_path / "intent.db"
    no_folds(monkeypatch)
    store = await opened(path)
    texts = prefixes(0, ROUTES)
    await store.commit(batch_change(1, texts))
    gone = texts[:10]
    await store.commit(Change(revision=2, deleted=[("", p) for p in gone]))
    assert rows(path, "pending") == 0  # the delete folded the batch first
    intent = Intent(RouteKind.UNREACHABLE)
    again = RouteBatch.of([(("", p), intent) for p in texts[10:20]])
    again.prefixes = Prefixes(texts[10:20])
    await store.commit(Change(revision=3, batch=again))
    listed = await store.list_routes(RouteQuery(None, None, 0, 10 * ROUTES, None))
    kinds = {p: i.kind for (_, p), i, _ in listed}
    assert sorted(kinds) == sorted(texts[10:])
    assert [kinds[p] for p in texts[10:20]] == [RouteKind.UNREACHABLE] * 10
    assert kinds[texts[20]] == RouteKind.BLACKHOLE
    assert rows(path, "pending") == 0  # ListRoutes folded the last batch first
    await store.close()


async def test_pending_rows_never_name_a_freed_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Routes through a next-hop set, then re-pointed to another, which frees the first
    set's id: the re-pointing folds the first batch and is written as rows itself, so no
    pending row names the freed id (`check` would refuse it) and the store loads with
    the second set."""
    path = tmp_path / "intent.db"
    no_folds(monkeypatch)
    store = await opened(path)
    texts = prefixes(0, ROUTES)
    hop_a, hop_b = ("198.18.0.2", "cor-c0", 0), ("198.18.0.3", "cor-c0", 0)
    group_a, group_b = ((hop_a, 1),), ((hop_b, 1),)
    first = batch_change(1, texts)
    one = Intent(RouteKind.FORWARD, group_a)
    first.batch = RouteBatch(first.batch.nodes, Prefixes(texts), [0] * len(texts), [one])
    first.new_groups, first.new_adjacencies = {group_a: 1}, {hop_a: 1}
    await store.commit(first)
    second = batch_change(2, texts)
    two = Intent(RouteKind.FORWARD, group_b)
    second.batch = RouteBatch(second.batch.nodes, Prefixes(texts), [0] * len(texts), [two])
    second.new_groups, second.new_adjacencies = {group_b: 2}, {hop_b: 2}
    second.freed_groups, second.freed_adjacencies = [group_a], [hop_a]
    await store.commit(second)
    crash(store)
    assert rows(path, "pending") == 0

    again = SqliteStore(path)
    loaded = await again.check()
    assert {i.group for _, i in loaded.routes} == {group_b}
    assert len(loaded.routes) == len(texts)
    await again.open()
    await again.close()


async def test_a_controller_killed_after_its_apply_restarts_with_every_route(
    tmp_path: Path,
) -> None:
    """kill -9 as soon as the Apply of a large batch is answered (its fold then running or
    not yet begun): the restarted controller lists every route."""
    config = tmp_path / "controller.toml"
    document = controller_document(tmp_path, {})
    del document["nodes"]  # none: TOML has no empty array of tables
    config.write_text(toml(document))
    texts = prefixes(0, 50_000)
    request = controller_pb2.ApplyRequest(
        routes=[route(p, kind=RouteKind.BLACKHOLE) for p in texts]
    )
    sock = tmp_path / "controller.sock"
    for start in ("first", "after the kill"):
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "corridor", "controller", "--config", str(config),
            env={**os.environ, "PYTHONPATH": CONTROL},
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        channel, stub = controller_stub(sock)
        try:
            await serving(
                lambda stub=stub: stub.GetStats(controller_pb2.GetStatsRequest(), timeout=1),
                process,
            )
            if start == "first":
                await stub.Apply(request, timeout=60)
                process.send_signal(signal.SIGKILL)
                await process.wait()
                continue
            listed, token = [], ""
            while True:
                page = await stub.ListRoutes(
                    controller_pb2.ListRoutesRequest(page_size=10_000, page_token=token),
                    timeout=60,
                )
                listed += page.routes
                token = page.next_page_token
                if not token:
                    break
            assert len(listed) == len(texts)
        finally:
            await channel.close()
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                await process.wait()
