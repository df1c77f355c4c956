"""The FIB through the Python binding: batches, errors by position, bulk text, lookups,
sizes, and the GIL released while a long batch applies."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from corridor._dataplane import Batch, Fib, FibError

DATA = Path(
    os.environ.get("CORRIDOR_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def base() -> tuple[Fib, Batch]:
    fib = Fib(v4_routes=1000, v6_routes=1000, v4_nodes=64, v6_nodes=256, groups=16, adjacencies=16)
    b = Batch()
    b.set_adjacency(1, 0, 0, "02:00:00:00:00:01", "02:00:00:00:01:01")
    b.set_adjacency(2, 1, 100, "02:00:00:00:00:02", "02:00:00:00:01:02")
    b.set_group(1, [(1, 1)])
    b.set_group(2, [(1, 1), (2, 3)])
    fib.apply(b)
    return fib, b


def test_routes_lookups_and_targets() -> None:
    fib, _ = base()
    b = Batch()
    b.add_route("0.0.0.0/0", 1)
    b.add_route("198.18.0.0/15", 2)
    b.add_route("198.18.7.0/24", "blackhole")
    b.add_route("198.18.8.0/24", "unreachable")
    b.add_route("198.18.9.1/32", "local")
    b.add_route("2001:db8::/32", 2)
    assert len(b) == 6
    fib.apply(b)
    assert fib.lookup("8.8.8.8") == 1
    assert fib.lookup("198.19.1.1") == 2
    assert fib.lookup("198.18.7.7") == "blackhole"
    assert fib.lookup("198.18.8.8") == "unreachable"
    assert fib.lookup("198.18.9.1") == "local"
    assert fib.lookup("2001:db8:ffff::1") == 2
    assert fib.lookup("2001:db9::1") is None
    assert fib.route("198.18.0.0/15") == 2
    assert fib.route("198.18.0.0/16") is None
    assert ("198.18.7.0/24", "blackhole") in fib.routes()
    assert fib.groups() == [(1, [(1, 1)]), (2, [(1, 1), (2, 3)])]
    assert fib.adjacencies()[1] == (2, 1, 100, "02:00:00:00:00:02", "02:00:00:00:01:02")
    # Weighted members: adjacency 2 takes about three flows in four; one flow, one path.
    picks = [fib.next_hop(2, h * 2654435761 % 2**32) for h in range(4000)]
    assert 0.70 < picks.count(2) / len(picks) < 0.80
    assert fib.next_hop(2, 12345) == fib.next_hop(2, 12345)
    # Deleting restores the covering route; deleting again is fine.
    d = Batch()
    d.delete_route("198.18.7.0/24")
    fib.apply(d)
    fib.apply(d)
    assert fib.lookup("198.18.7.7") == 2
    s = fib.stats()
    assert (s["v4_routes"], s["v6_routes"], s["groups"], s["adjacencies"]) == (4, 1, 2, 2)
    assert s["v4_capacity"] == 1000 and s["v4_bytes"] >= 4 << 24


def test_every_bad_entry_is_named_and_nothing_applied() -> None:
    fib, _ = base()
    b = Batch()
    b.add_route("198.18.0.0/16", 1)  # 0: fine
    b.add_route("198.18.0.0/33", 1)  # 1: length
    b.add_route("198.18.x.0/24", 1)  # 2: not an address
    b.add_route("198.18.0.1/24", 1)  # 3: host bits
    b.add_route("198.18.4.0/24", 9)  # 4: unknown group
    b.set_adjacency(3, 0, 5000, "02:00:00:00:00:03", "zz")  # 5: VLAN and MAC
    b.delete_group(1)  # 6: still used (by entry 0)
    b.add_route("198.18.0.0/16", 2)  # 7: same object twice
    with pytest.raises(FibError) as e:
        fib.apply(b)
    errors = e.value.errors
    assert [i for i, _ in errors] == [1, 2, 3, 4, 5, 6, 7]
    messages = dict(errors)
    assert messages[1] == "198.18.0.0/33: prefix length 33 exceeds 32"
    assert "not an IPv4 or IPv6 address" in messages[2]
    assert messages[3] == "198.18.0.1/24: host bits set (the network is 198.18.0.0/24)"
    assert messages[4] == "route 198.18.4.0/24: group 9 does not exist"
    assert "VLAN 5000" in messages[5]
    assert "still used by 1 route" in messages[6]
    assert "already changed by entry 0" in messages[7]
    assert fib.stats()["v4_routes"] == 0, "nothing of a refused batch is applied"
    assert isinstance(e.value, ValueError)


def test_full_table_is_an_error_not_a_cap() -> None:
    fib, _ = base()
    b = Batch()
    text = "".join(f"198.18.{i // 256}.{i % 256}/32 64500\n" for i in range(1001))
    assert b.add_routes_text(text, 1) == 1001
    with pytest.raises(FibError) as e:
        fib.apply(b)
    assert any("IPv4 table full" in m or "trie nodes" in m for _, m in e.value.errors)
    assert fib.stats()["v4_routes"] == 0


def test_bad_arguments() -> None:
    fib, _ = base()
    b = Batch()
    with pytest.raises(TypeError):
        b.add_route("198.18.0.0/16", 1.5)  # type: ignore[arg-type]
    b.add_route("198.18.0.0/16", "sideways")
    with pytest.raises(FibError, match="sideways"):
        fib.apply(b)
    with pytest.raises(ValueError, match="not an IPv4 or IPv6 address"):
        fib.lookup("not-an-address")
    with pytest.raises(ValueError, match="groups"):
        Fib(groups=1 << 23)


def test_engine_subnets_directed_broadcast_and_icmp_limits_are_checked() -> None:
    from corridor._dataplane import Engine

    fib, _ = base()

    def port(**kw: object) -> dict:
        return {"name": "cor-x0", "addresses": {0: ["198.18.0.1/24"]}, **kw}

    Engine(fib, ports=[port(directed_broadcast=True)])  # checked, not started
    Engine(fib, ports=[port()], icmp_source_rate=0, icmp_sources=1)
    Engine(fib, ports=[port()], realtime_priority=99)
    bad = [
        (
            {"ports": [port(addresses={0: ["198.18.0.1/33"]})]},
            'prefix length "33" is not between 0 and 32',
        ),
        ({"ports": [port(addresses={0: ["198.18.0.1/x"]})]}, 'prefix length "x"'),
        (
            {"ports": [port(directed_broadcast="yes")]},
            "ports\\[0\\].directed_broadcast: expected a bool",
        ),
        ({"ports": [port()], "icmp_sources": 0}, "icmp_sources: 0 is not between 1 and 1048576"),
        ({"ports": [port()], "icmp_sources": 1 << 21}, "icmp_sources: 2097152 is not between"),
        ({"ports": [port()], "realtime_priority": 0}, "realtime_priority: 0 is not a SCHED_FIFO"),
        ({"ports": [port()], "realtime_priority": 100}, "realtime_priority: 100 is not a SCHED"),
        ({"ports": [port()], "realtime_priority": 300}, "realtime_priority: 300 is not a SCHED"),
        ({"ports": [port()], "realtime_priority": -1}, "realtime_priority: -1 is not a SCHED"),
        (
            {"ports": [port()], "realtime_priority": 10, "busy_poll": True},
            "realtime_priority: a real-time worker must sleep when idle",
        ),
    ]
    for kw, message in bad:
        with pytest.raises(ValueError, match=message):
            Engine(fib, **kw)


def test_real_tables_load_from_text_and_the_gil_is_released() -> None:
    path = DATA / "ipv4-routeviews-2024-04-06.txt.gz"
    assert path.exists(), (
        f"{path} missing: the real tables live in ../shared/data (or set CORRIDOR_DATA)"
    )
    text = gzip.decompress(path.read_bytes()).decode()
    fib = Fib()
    setup = Batch()
    setup.set_adjacency(1, 0, 0, "02:00:00:00:00:01", "02:00:00:00:01:01")
    setup.set_group(1, [(1, 1)])
    fib.apply(setup)
    b = Batch()
    assert b.add_routes_text(text, 1) == 998_042
    ticks = 0
    done = threading.Event()

    def tick() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            time.sleep(0.001)

    t = threading.Thread(target=tick)
    t.start()
    started = time.perf_counter()
    fib.apply(b)
    elapsed = time.perf_counter() - started
    done.set()
    t.join()
    assert fib.stats()["v4_routes"] == 998_042
    # A Python thread kept running while the table loaded: the GIL was released.
    assert ticks >= max(5, int(elapsed * 1000) // 10), (ticks, elapsed)
    assert fib.lookup("1.1.1.1") == 1
    assert fib.lookup("198.18.0.1") is None, "the test range is not in the Internet table"


PREFAULT_PROBE = """
from corridor._dataplane import Batch, Fib

def rss_kib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))

def route(prefix):
    b = Batch()
    b.add_route(prefix, "blackhole")
    return b

fib = Fib(v4_routes=1000, v6_routes=1000, v4_nodes=64, v6_nodes=256, groups=16, adjacencies=16)
fib.apply(route("198.18.0.0/24"))
fib.apply(route("2001:db8::/32"))
before = rss_kib()
fib.prefault()
after = rss_kib()
assert fib.lookup("198.18.0.1") is not None and fib.lookup("2001:db8::1") is not None
assert fib.lookup("198.18.1.1") is None and fib.lookup("2001:db9::1") is None
fib.apply(route("198.18.1.0/24"))
assert fib.lookup("198.18.1.1") is not None
print(after - before)
"""


def test_prefault_gives_the_root_its_memory_and_changes_no_answer() -> None:
    """The agent's FIB takes its IPv4 root's 64 MiB at start, not in its first table,
    and a FIB that holds routes keeps them: measured in a fresh process, where nothing
    else allocates meanwhile."""
    done = subprocess.run(
        [sys.executable, "-c", PREFAULT_PROBE], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    grown_kib = int(done.stdout)
    # The root is 64 MiB; the two routes already wrote a huge page (2 MiB) each at most.
    assert grown_kib >= 60 * 1024, f"resident memory grew {grown_kib} KiB, not the root's 64 MiB"
