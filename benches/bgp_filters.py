"""What members' filters derived from BGP (controller/bgp_filters.py) add to the controller's
BGP route path: `BgpFilters.observe` on a batch of a million routes against
`BgpIntent.apply` of the same batch (the core's in-memory step it rides beside), same run,
alternated, each route's next hops changing between rounds. One member of the node derives
its filter and owns a tenth of the routes (over the limit: counted, not filtered).

    python -m benches.bgp_filters [--routes N] [--rounds R]
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import statistics
import time

from corridor.common.fib import RouteKind
from corridor.controller.bgp import BgpIntent
from corridor.controller.bgp_filters import BgpFilters
from corridor.controller.domain import Intent
from corridor.controller.members import MemberRecord

NODE = "r1"


def batches(count: int) -> tuple[dict[str, Intent], dict[str, Intent]]:
    """Two batches of the same prefixes through 10 next hops, shifted by one hop."""
    intents = [
        Intent(RouteKind.FORWARD, (((f"198.18.0.{i}", "dut0", 0), 1),)) for i in range(2, 12)
    ]
    base = int(ipaddress.IPv4Address("10.0.0.0"))
    prefixes = [f"{ipaddress.IPv4Address(base + (i << 8))}/24" for i in range(count)]
    a = {p: intents[i % 10] for i, p in enumerate(prefixes)}
    b = {p: intents[(i + 1) % 10] for i, p in enumerate(prefixes)}
    return a, b


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # the over-limit warning, once per run
    a, b = batches(args.routes)
    intent = BgpIntent({}, {}, 65536, 65536)
    filters = BgpFilters(lambda node: intent.table(node), lambda node: 0.0, lambda node: 60.0)
    member = MemberRecord("acme", NODE, "dut0", 0, "02:0a:00:00:00:01", 1, (), ("198.18.0.2",))
    filters.track(member)
    applied, observed = [], []
    for r in range(args.rounds * 2):
        batch = a if r % 2 == 0 else b
        started = time.perf_counter()
        intent.apply(NODE, batch, ())
        applied.append(time.perf_counter() - started)
        started = time.perf_counter()
        filters.observe(NODE, batch, ())
        observed.append(time.perf_counter() - started)
    started = time.perf_counter()
    filters.flush(1e9)
    flushed = time.perf_counter() - started
    nobody = BgpFilters(lambda node: {}, lambda node: None, lambda node: 60.0)
    started = time.perf_counter()
    nobody.observe(NODE, a, ())
    idle = time.perf_counter() - started
    apply_s, observe_s = statistics.median(applied), statistics.median(observed)
    print(f"{args.routes} routes, median of {len(applied)} rounds, load {os.getloadavg()[0]:.2f}")
    print(f"  BgpIntent.apply      {apply_s * 1e3:8.0f} ms")
    print(
        f"  BgpFilters.observe   {observe_s * 1e3:8.0f} ms  ({observe_s / apply_s:.2f}x of apply)"
    )
    print(f"  observe, no member   {idle * 1e3:8.3f} ms")
    attributed = len(filters.members["acme"].prefixes)
    print(f"  flush                {flushed * 1e3:8.1f} ms  ({attributed} prefixes attributed)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
