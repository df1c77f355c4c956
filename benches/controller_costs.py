"""What a route costs the controller in its two largest kinds of work, in this process, on
the full tables as 50 000-route batches (what benches.controller_load's client sends):

1. the codec: an ApplyRequest read (`read_apply_request` alone, and `batch_from_request`,
   the Python around it) and a WriteRequest written from Route tuples (`write_request`),
   in ns a route;
2. the dictionaries the controller keeps by prefix: inserting every prefix into a
   str-keyed dict that grows to the full tables, then overwriting every key in it, in ns
   a key (the prefixes as fresh strings, as the reader made them before `Prefixes`); int
   keys in order beside them as the baseline of the same machine and run;
3. the route tables of what a node should hold and holds (domain.NodeFib's
   `RouteTable`), as a table coming in passes through them: set from a batch's prefixes
   (the refresh; packed, a `Prefixes`, as the Apply reader gives them), diffed against
   what the node holds, the diff written as WriteRequests and recorded as acknowledged,
   in ns a route each;
4. the intent (domain.IntentState, a node's routes an `IntentRoutes`) as a table comes in:
   each batch planned (its prefixes looked up) and committed (set), in ns a route each,
   the batch's prefixes packed as the Apply reader gives them.

    .venv/bin/python -m benches.controller_costs [--data ../shared/data] [--rounds 3]
                                                 [--limit N]

No network, no root. Each figure is printed per round: the machine is shared, compare
within a round.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from benches.controller_load import GW, intent, table
from benches.harness.tables import DATA, TABLE4, TABLE6
from corridor._dataplane import Prefixes, RouteTable, read_apply_request
from corridor.common.fib import Route, RouteKind
from corridor.controller.api import batch_from_request
from corridor.controller.domain import Intent, IntentState, Ops, RouteBatch
from corridor.controller.reconciler import write_request
from corridor.v1 import controller_pb2

BATCH = 50_000


def per_item(seconds: float, items: int) -> float:
    return round(seconds * 1e9 / items)


def codec(prefixes: list[str]) -> dict[str, float]:
    requests = [
        controller_pb2.ApplyRequest(
            routes=[intent(p, GW[:2]) for p in prefixes[i : i + BATCH]]
        ).SerializeToString()
        for i in range(0, len(prefixes), BATCH)
    ]
    t = time.perf_counter()
    for r in requests:
        read_apply_request(r)
    read = time.perf_counter() - t
    t = time.perf_counter()
    for r in requests:
        batch_from_request(r)
    batch = time.perf_counter() - t
    ops = [Route(p, RouteKind.FORWARD, 3) for p in prefixes]
    t = time.perf_counter()
    for i in range(0, len(ops), BATCH):
        write_request(ops[i : i + BATCH], 5, 1)
    write = time.perf_counter() - t
    n = len(prefixes)
    return {
        "read_apply_request_ns": per_item(read, n),
        "batch_from_request_ns": per_item(batch, n),
        "write_request_ns": per_item(write, n),
    }


def dicts(prefixes: list[str]) -> dict[str, float]:
    fresh = [(p + ".")[:-1] for p in prefixes]  # new objects, as the reader makes them
    for p in fresh:
        hash(p)  # computed once, as the first dict a prefix enters does
    values = [None] * BATCH
    batches = [fresh[i : i + BATCH] for i in range(0, len(fresh), BATCH)]
    d: dict[object, None] = {}
    t = time.perf_counter()
    for b in batches:
        d.update(zip(b, values, strict=False))  # the last batch is shorter
    grow = time.perf_counter() - t
    t = time.perf_counter()
    for b in batches:
        d.update(zip(b, values, strict=False))  # the last batch is shorter
    overwrite = time.perf_counter() - t
    ints = [range(i, i + BATCH) for i in range(0, len(fresh), BATCH)]
    d = {}
    t = time.perf_counter()
    for r in ints:
        d.update(zip(r, values, strict=False))
    grow_int = time.perf_counter() - t
    n = len(fresh)
    return {
        "dict_insert_str_ns": per_item(grow, n),
        "dict_overwrite_str_ns": per_item(overwrite, n),
        "dict_insert_int_in_order_ns": per_item(grow_int, n),
    }


def tables(prefixes: list[str]) -> dict[str, float]:
    batches = [Prefixes(prefixes[i : i + BATCH]) for i in range(0, len(prefixes), BATCH)]
    want, have = RouteTable(), RouteTable()
    spent = dict.fromkeys(("set", "diff", "write", "record"), 0.0)
    for b in batches:
        t = time.perf_counter()
        want.set_uniform(b, int(RouteKind.FORWARD), 3)
        t2 = time.perf_counter()
        ops = want.diff(have, want.take_dirty())
        t3 = time.perf_counter()
        write_request(Ops([], ops, []), 5, 1)
        t4 = time.perf_counter()
        have.apply(ops)
        t5 = time.perf_counter()
        for step, seconds in zip(spent, (t2 - t, t3 - t2, t4 - t3, t5 - t4), strict=True):
            spent[step] += seconds
    assert want == have, "the record is what should be held"
    return {f"table_{step}_ns": per_item(seconds, len(prefixes)) for step, seconds in spent.items()}


def intent_state(prefixes: list[str]) -> dict[str, float]:
    state, blackhole = IntentState(16, 16), Intent(RouteKind.BLACKHOLE)
    spent = dict.fromkeys(("plan", "commit"), 0.0)
    for i in range(0, len(prefixes), BATCH):
        packed = Prefixes(prefixes[i : i + BATCH])  # as the Apply reader gives them
        batch = RouteBatch([""] * len(packed), packed, [0] * len(packed), [blackhole])
        t = time.perf_counter()
        change = state.plan_apply(batch)
        t2 = time.perf_counter()
        state.commit(change)
        t3 = time.perf_counter()
        spent["plan"] += t2 - t
        spent["commit"] += t3 - t2
    assert state.route_count() == len(prefixes), "every route committed"
    return {
        f"intent_{step}_ns": per_item(seconds, len(prefixes)) for step, seconds in spent.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--limit", type=int, help="the first N prefixes of each table only")
    args = ap.parse_args()
    if not 1 <= args.rounds <= 20:
        raise SystemExit(f"--rounds {args.rounds}: expected 1 to 20")
    if args.limit is not None and args.limit < 1:
        raise SystemExit(f"--limit {args.limit}: expected at least 1")
    missing = [n for n in (TABLE4, TABLE6) if not (args.data / n).is_file()]
    if missing:
        raise SystemExit(f"--data {args.data}: no {', '.join(missing)} there")
    prefixes = table(args.data, args.limit)
    print(f"{len(prefixes)} prefixes in batches of {BATCH}")
    rounds = []
    for r in range(args.rounds):
        figures = codec(prefixes) | dicts(prefixes) | tables(prefixes) | intent_state(prefixes)
        rounds.append(figures)
        print(f"round {r + 1}: " + ", ".join(f"{k} {v:.0f}" for k, v in figures.items()))
    medians = {k: statistics.median(f[k] for f in rounds) for k in rounds[0]}
    print("median: " + ", ".join(f"{k} {v:.0f}" for k, v in medians.items()))


if __name__ == "__main__":
    main()
