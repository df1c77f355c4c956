"""Property tests of the controller's per-node FIB (domain.NodeFib) and its bulk paths: any
sequence of refreshes, diffs and acknowledged writes leaves the counts (IPv6 routes, routes
per group) equal to a count made afresh, and a diff written and recorded makes what the
node holds equal to what it should hold. The bulk paths (all routes new, few groups) and
the route-by-route ones must agree: the batches below mix both. And the SQLite store's
routes rows, inserted thousands per statement or a batch's keys as one blob per intent and
key length, land whatever their count, nodes, intents and families.
"""

from __future__ import annotations

import sqlite3
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from corridor._dataplane import Prefixes
from corridor.common.fib import Adjacency, Members, Route, RouteKind
from corridor.controller.domain import (
    Change,
    GroupKey,
    Intent,
    NodeFib,
    RouteBatch,
    apply_operations,
    diff,
)
from corridor.controller.reconciler import write_request
from corridor.controller.sqlite_store import (
    _COUNTER,
    SCHEMA,
    _fold_pending,
    _insert_routes,
    _log_batch,
    _loggable,
    _rows,
)

PREFIXES = [f"198.18.{i}.0/24" for i in range(12)] + [f"2001:db8:{i}::/48" for i in range(12)]
GROUPS = {g: ((g, 1),) for g in range(1, 12)}  # group g uses adjacency g


def members(group: int) -> Members:
    return GROUPS[group]


def adjacency(a: int) -> Adjacency:
    return Adjacency(a, "p0", 0, "", "", f"198.18.255.{a}")


def entry(prefix: str, group: int) -> Route | None:
    if group < 0:
        return None
    if group == 0:
        return Route(prefix, RouteKind.BLACKHOLE, 0)
    return Route(prefix, RouteKind.FORWARD, group)


# A batch: prefixes (distinct) each with a group (-1: no route, 0: blackhole); the groups
# drawn from a few, so that some batches share one group and others spread over many.
batches = st.lists(
    st.lists(
        st.tuples(st.sampled_from(PREFIXES), st.integers(-1, 11)),
        unique_by=lambda t: t[0],
        max_size=len(PREFIXES),
    ),
    min_size=1,
    max_size=8,
)


def check_counts(fib: NodeFib) -> None:
    routes = fib.route_list()
    assert fib.v6_routes == sum(1 for r in routes if ":" in r.prefix)
    refs = Counter(r.group for r in routes if r.group)
    assert +fib.group_refs == refs
    assert all(fib.route(r.prefix) == r for r in routes)
    assert len(fib.routes) == len(routes) == len({r.prefix for r in routes})


@settings(max_examples=300, deadline=None)
@given(batches, st.data())
def test_refreshed_and_written_fibs_keep_their_counts(steps, data) -> None:
    desired, installed = NodeFib(), NodeFib()
    for step in steps:
        prefixes = [p for p, _ in step]
        desired.set_routes(prefixes, [entry(p, g) for p, g in step], members, adjacency)
        if desired.groups and data.draw(st.booleans(), label="re-point a group"):
            group = data.draw(st.sampled_from(sorted(desired.groups)), label="group")
            hop = data.draw(st.integers(1, 14), label="its one adjacency now")
            desired.set_group_members(group, ((hop, 1),), adjacency)  # a drain, a restore
        check_counts(desired)
        assert set(desired.groups) == {r.group for r in desired.route_list() if r.group}
        if data.draw(st.booleans(), label="write now"):
            ops = diff(installed, desired, *desired.take_dirty())
            # The routes are written from the table's keys as they would be from tuples.
            assert write_request(ops, 7, 1) == write_request(ops.tuples(), 7, 1)
            size = data.draw(st.integers(0, 5), label="recorded in slices of (0: whole)")
            if size:  # as a node's own session records each acknowledged batch
                # As the Ops of a diff, or as the corridor.common.fib values they stand for.
                as_tuples = data.draw(st.booleans(), label="recorded from tuples")
                recorded = ops.tuples() if as_tuples else ops
                for start in range(0, len(ops), size):
                    apply_operations(installed, recorded[start : start + size])
            else:  # as the update group records the whole diff
                apply_operations(installed, ops)
            check_counts(installed)
            assert installed.routes == desired.routes
            assert installed.groups == desired.groups
            assert installed.adjacencies == desired.adjacencies
            assert +installed.adjacency_refs == +desired.adjacency_refs
    # A full diff from what the node holds leaves nothing to write afterwards.
    desired.take_dirty()
    apply_operations(installed, diff(installed, desired))
    assert not diff(installed, desired)
    check_counts(installed)
    read = NodeFib.installed(
        installed.adjacencies.values(),
        [],
        installed.route_list(),
    )
    assert read.routes == installed.routes
    assert read.v6_routes == installed.v6_routes
    assert +read.group_refs == +installed.group_refs


@given(st.lists(st.tuples(st.sampled_from(["", "a", "b"]), st.sampled_from(PREFIXES)), unique=True))
def test_a_change_of_a_batch_gives_its_routes_by_key(keys) -> None:
    intents = [Intent(RouteKind.BLACKHOLE), Intent(RouteKind.UNREACHABLE)]
    routes = [(k, intents[i % 2]) for i, k in enumerate(keys)]
    change = Change(revision=1, batch=RouteBatch.of(routes))
    assert change.set == dict(routes)
    assert change.set is change.set  # made once
    assert Change(revision=1).set == {}


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(0, 20_000), min_size=1, max_size=3))
def test_the_store_inserts_every_route_row_whatever_the_count(counts) -> None:
    """Rows go in as statements of a few sizes (sqlite_store._insert_routes): every row of
    every count lands once, and a row again replaces the one before."""
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.executescript(SCHEMA)
    want: dict[tuple[str, bytes], tuple[int, int | None]] = {}
    for round_, count in enumerate(counts):
        rows = [("n", i.to_bytes(3, "big"), 2, round_ or None) for i in range(count)]
        _insert_routes(db, rows)
        want.update({(n, k): (kind, g) for n, k, kind, g in rows})
    got = {(n, k): (kind, g) for n, k, kind, g in db.execute("SELECT * FROM routes")}
    assert got == want


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(
            st.tuples(
                st.sampled_from(["", "a", "b"]),
                st.sampled_from(PREFIXES),
                st.integers(-1, 3),  # an intent: -1 unreachable, 0 blackhole, else a group
            ),
            min_size=1,
            max_size=30,
            unique_by=lambda r: (r[0], r[1]),
        ),
        min_size=1,
        max_size=4,
    ),
    st.booleans(),
)
def test_batches_logged_and_folded_give_the_rows_one_by_one_would(batches, each) -> None:
    """sqlite_store's log (one node: the keys of each intent and length as one blob in
    `pending`, cut into rows by SQLite when folded) leaves the routes table as the
    row-by-row insert does, a route set again included, folded after each batch or all at
    the end (in revision order); a batch for several nodes is left to the rows, after the
    pending ones are folded, as a commit does."""
    kinds = {-1: Intent(RouteKind.UNREACHABLE), 0: Intent(RouteKind.BLACKHOLE)}
    intents = {
        g: kinds.get(g) or Intent(RouteKind.FORWARD, ((("198.18.255.1", "p0", 0), g),))
        for g in range(-1, 4)
    }
    ids = {intents[g].group: g for g in range(1, 4)}

    def group_id(group: GroupKey) -> int:
        return ids[group]

    blobs, rows = (sqlite3.connect(":memory:", isolation_level=None) for _ in range(2))
    for db in (blobs, rows):
        db.executescript(SCHEMA)
    blobs.executescript(_COUNTER)
    for revision, routes in enumerate(batches, 1):
        batch = RouteBatch.of([((n, p), intents[g]) for n, p, g in routes])
        batch.prefixes = Prefixes(batch.prefixes)  # packed, as the Apply reader makes it
        change = Change(revision=revision, batch=batch)
        one_node = len({n for n, _, _ in routes}) == 1
        assert _loggable(change) is one_node
        if one_node:
            _log_batch(blobs, change, group_id)
            if each:
                assert _fold_pending(blobs) == 0
        else:
            _fold_pending(blobs)
            _insert_routes(blobs, _rows(change, group_id))
        _insert_routes(rows, _rows(change, group_id))
    while _fold_pending(blobs, oldest_only=True):  # as the store folds: a batch a step
        pass
    assert blobs.execute("SELECT count(*) FROM pending").fetchone() == (0,)
    everything = "SELECT node, sort_key, kind, group_id FROM routes ORDER BY node, sort_key"
    got = blobs.execute(everything).fetchall()
    assert got == rows.execute(everything).fetchall()
    assert all(type(key) is bytes for _, key, _, _ in got)


def test_a_key_deleted_twice_in_one_change_is_deleted_once() -> None:
    """The API refuses a Delete that names a key twice; planning does not count it twice
    either (the counts and group references of intent would go wrong after the commit)."""
    from corridor.controller.domain import IntentState

    state = IntentState(16, 16)
    group: GroupKey = ((("198.18.0.2", "p0", 0), 1),)
    batch = RouteBatch.of([(("", "198.18.1.0/24"), Intent(RouteKind.FORWARD, group)),
                           (("", "198.18.2.0/24"), Intent(RouteKind.FORWARD, group))])  # fmt: skip
    state.commit(state.plan_apply(batch))
    change = state.plan_delete([("", "198.18.1.0/24"), ("", "198.18.1.0/24")])
    assert change.deleted == [("", "198.18.1.0/24")]
    assert change.routes_added == (-1, 0)
    assert change.group_refs == Counter({group: -1}) and not change.freed_groups
    state.commit(change)
    assert state.route_total == 1 and state.group_refs[group] == 1
