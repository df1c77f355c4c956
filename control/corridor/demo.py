"""`make demo`: what the data plane does on the embedded default.

For now (until the engine forwards traffic) it loads the real IPv4 and IPv6 tables into
the FIB through the Python binding, looks up a few addresses and prints what it found and
how long loading took.
"""

from __future__ import annotations

import gzip
import time
from pathlib import Path

from corridor._dataplane import Batch, Fib

TABLES = {
    "ipv4": "ipv4-routeviews-2024-04-06.txt.gz",
    "ipv6": "ipv6-ris-2022-05-27.txt.gz",
}

# Addresses to look up: inside well-known announced blocks, plus the test ranges, which
# carry no Internet route and so fall to the demo's own routes.
PROBES = [
    "1.1.1.1",
    "8.8.8.8",
    "193.0.14.129",
    "198.18.0.1",
    "198.19.255.254",
    "2001:4860:4860::8888",
    "2a00:1450:4001:800::200e",
    "2001:db8::1",
]


def data_dir(given: str | None) -> Path:
    if given:
        return Path(given)
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent.parent / "shared" / "data"
        if (candidate / TABLES["ipv4"]).exists():
            return candidate
    raise SystemExit("demo: ../shared/data with the routing tables was not found (use --data DIR)")


def run(given: str | None) -> int:
    data = data_dir(given)
    fib = Fib()
    setup = Batch()
    # Two next hops; Internet routes on group 1 (ECMP over both), the test range on group 2.
    setup.set_adjacency(1, 0, 0, "02:c0:00:00:00:01", "02:00:00:00:01:01")
    setup.set_adjacency(2, 1, 0, "02:c0:00:00:00:02", "02:00:00:00:02:01")
    setup.set_group(1, [(1, 1), (2, 1)])
    setup.set_group(2, [(2, 1)])
    setup.add_route("198.18.0.0/15", 2)
    setup.add_route("2001:db8::/32", 2)
    setup.add_route("198.19.255.0/24", "unreachable")
    fib.apply(setup)

    print("Corridor demo: the FIB with the real Internet tables\n")
    for family, name in TABLES.items():
        text = gzip.decompress((data / name).read_bytes()).decode()
        t0 = time.perf_counter()
        batch = Batch()
        n = batch.add_routes_text(text, 1)
        t1 = time.perf_counter()
        fib.apply(batch)
        t2 = time.perf_counter()
        print(
            f"  {family}: {n:>9,} routes from {name}: parsed in {t1 - t0:.2f} s, "
            f"applied in {t2 - t1:.2f} s ({n / (t2 - t1) / 1e6:.2f} M routes/s)"
        )

    stats = fib.stats()
    print(
        f"\n  tables: {stats['v4_routes']:,} IPv4 and {stats['v6_routes']:,} IPv6 routes, "
        f"{stats['groups']} groups, {stats['adjacencies']} adjacencies; entry memory "
        f"{stats['v4_bytes'] / 2**20:.0f} MiB IPv4 + {stats['v6_bytes'] / 2**20:.0f} MiB IPv6\n"
    )
    print(f"  {'address':<28} {'target':<12} next hop (flow hash 0 / 2^31)")
    for address in PROBES:
        target = fib.lookup(address)
        hops = ""
        if isinstance(target, int):
            hops = f"adjacency {fib.next_hop(target, 0)} / {fib.next_hop(target, 1 << 31)}"
        shown = (
            "no route"
            if target is None
            else f"group {target}"
            if isinstance(target, int)
            else target
        )
        print(f"  {address:<28} {shown:<12} {hops}")
    return 0
