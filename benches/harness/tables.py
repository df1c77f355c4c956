"""The routes the benchmarks load: the real Internet tables of ../shared/data, and test
routes inside the test space whose destinations end their lookups at every depth."""

from __future__ import annotations

import gzip
import ipaddress
import os
import random
from collections.abc import Iterator
from pathlib import Path

from benches.harness import ROOT

DATA = Path(os.environ.get("CORRIDOR_DATA", ROOT.parent / "shared" / "data"))
TABLE4 = "ipv4-routeviews-2024-04-06.txt.gz"
TABLE6 = "ipv6-ris-2022-05-27.txt.gz"
TEST4 = ipaddress.ip_network("198.18.0.0/15")
TEST6 = ipaddress.ip_network("2001:db8::/32")
# Test routes live where no lab link is: 198.19.0.0/16 and 2001:db8:8000::/33.
ROUTES4_IN = ipaddress.ip_network("198.19.0.0/16")
ROUTES6_IN = ipaddress.ip_network("2001:db8:8000::/33")


def read_prefixes(path: Path) -> Iterator[str]:
    """The prefixes of a table file (gzip, one route a line, the prefix first), in order."""
    with gzip.open(path, "rt") as f:
        for line in f:
            if line.strip():
                yield line.split(None, 1)[0]


def test_routes(seed: int = 6) -> tuple[list[str], list[str], list[str], list[str]]:
    """Routes inside the test space over every length /16-/32 and /33-/128 (under the
    covering 198.19.0.0/16 and 2001:db8:8000::/33, where no lab link is), and for each route
    one destination whose longest match it is, so the traffic's lookups end at every
    depth. Destinations covered by a longer route are re-drawn; a route whose whole space
    longer routes cover gets none."""
    rnd = random.Random(seed)
    nets4 = {ROUTES4_IN}
    base4 = int(ROUTES4_IN.network_address)
    # Few routes at the short lengths, or the longer ones would cover them whole.
    for length in range(17, 33):
        for _ in range(min(48, max(1, 2 ** (length - 16) // 4))):
            nets4.add(ipaddress.ip_network((base4 | rnd.getrandbits(16), length), strict=False))
    nets6 = {ROUTES6_IN}
    base6 = int(ROUTES6_IN.network_address)
    for length in range(34, 129):
        for _ in range(min(8, max(1, 2 ** (length - 33) // 4))):
            nets6.add(ipaddress.ip_network((base6 | rnd.getrandbits(95), length), strict=False))

    def destinations(nets: set) -> list[str]:
        by_len: dict[int, set[int]] = {}
        for n in nets:
            by_len.setdefault(n.prefixlen, set()).add(int(n.network_address))
        bits = nets and next(iter(nets)).max_prefixlen

        def longest(addr: int) -> int:
            for length in sorted(by_len, reverse=True):
                if (addr >> (bits - length) << (bits - length)) in by_len[length]:
                    return length
            return -1

        out = []
        for n in sorted(nets, key=lambda n: (n.prefixlen, int(n.network_address))):
            base, size = int(n.network_address), n.num_addresses
            for _ in range(256):
                host = base + rnd.randrange(min(size, 1 << 64))
                if longest(host) == n.prefixlen:
                    out.append(str(ipaddress.ip_address(host)))
                    break
        return out

    d4, d6 = destinations(nets4), destinations(nets6)
    assert all(ipaddress.ip_address(d) in TEST4 for d in d4)
    assert all(ipaddress.ip_address(d) in TEST6 for d in d6)
    assert len(set(d4)) == len(d4) and len(set(d6)) == len(d6)
    r4 = [str(n) for n in sorted(nets4, key=lambda n: (int(n.network_address), n.prefixlen))]
    r6 = [str(n) for n in sorted(nets6, key=lambda n: (int(n.network_address), n.prefixlen))]
    return r4, d4, r6, d6


def real_table(name: str, limit: int | None) -> list[str]:
    """Prefixes of a table in ../shared/data, without defaults and anything overlapping
    the test space (those routes are ours)."""
    path = DATA / name
    if not path.exists():
        raise SystemExit(f"table {path} is missing: set CORRIDOR_DATA to ../shared/data")
    test = TEST4 if "ipv4" in name else TEST6
    out = []
    for prefix in read_prefixes(path):
        net = ipaddress.ip_network(prefix)
        if net.prefixlen == 0 or net.overlaps(test):
            continue
        out.append(prefix)
        if limit and len(out) >= limit:
            break
    return out
