"""The DPDK FIB baseline (benches/dpdk/fib_harness.c, benches/bin/fib_keys.rs,
benches/fib_dpdk.py): DPDK's rte_fib, rte_fib6 and rte_lpm6 loaded with the real tables
give the same next hop as Corridor's FIB for every key of a small key set; a wrong answer
is caught; bad input is refused with a clear error. rte_lpm is left out here: its
full-table load is quadratic (minutes); the benchmark checks it on 1 M keys."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from benches import fib_dpdk

REPO = Path(__file__).resolve().parent.parent
TOOLS = REPO / "target" / "bench-tools"
EAL = ["--no-huge", "--no-pci", "--no-shconf", "-m", "2048", "--log-level=lib.eal:error", "-l", "0"]
KEYS = 20_000

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if (
        shutil.which("pkg-config") is None
        or subprocess.run(["pkg-config", "--exists", "libdpdk"]).returncode
    ):
        pytest.fail("needs libdpdk-dev and pkg-config (make deps)")
    subprocess.run(["make", "-s", "../../target/bench-tools/fib_harness"],
                   check=True, cwd=REPO / "benches" / "dpdk")  # fmt: skip
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "corridor-benches",
                    "--bin", "fib_keys"], check=True, cwd=REPO)  # fmt: skip
    out = tmp_path_factory.mktemp("fibkeys")
    subprocess.run([str(REPO / "target" / "release" / "fib_keys"), str(out), str(KEYS)],
                   check=True)  # fmt: skip
    return out


def harness(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(TOOLS / "fib_harness"), *EAL, "--", *args],
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def subset(keys: Path, dst: Path, prefix: str) -> Path:
    """A key directory with only the contests whose name starts with `prefix`."""
    dst.mkdir()
    lines = [ln for ln in (keys / "manifest.txt").read_text().splitlines() if ln.startswith(prefix)]
    assert lines, prefix
    for ln in lines:
        name = ln.split()[0]
        for ext in ("keys", "want"):
            shutil.copy(keys / f"{name}.{ext}", dst / f"{name}.{ext}")
    (dst / "manifest.txt").write_text("\n".join(lines) + "\n")
    return dst


def test_dpdk_answers_equal_corridors(keys: Path) -> None:
    p = harness(str(keys), "--check-only", "--skip", "rte_lpm")
    assert p.returncode == 0, p.stderr
    results = re.findall(r"^RESULT contest=(\S+) impl=(\S+) keys=(\d+) .*mismatches=(\d+)",
                         p.stdout, re.M)  # fmt: skip
    seen = {(c, i) for c, i, _, _ in results}
    contests = [ln.split()[0] for ln in (keys / "manifest.txt").read_text().splitlines()]
    assert len(contests) == 6
    for c in contests:
        impls = ("rte_fib",) if c.startswith("v4") else ("rte_fib6", "rte_lpm6")
        for i in impls:
            assert (c, i) in seen, (c, i, p.stdout)
    assert all(int(n) == KEYS and int(m) == 0 for _, _, n, m in results), p.stdout
    loads = re.findall(r"^LOAD .*impl=(\S+) routes=(\d+)", p.stdout, re.M)
    assert {i for i, _ in loads} == {"rte_fib", "rte_fib6", "rte_lpm6"}
    assert all(int(n) > 150_000 for _, n in loads), loads


def test_a_wrong_answer_is_caught(keys: Path, tmp_path: Path) -> None:
    d = subset(keys, tmp_path / "k", "v4-announced")
    want = bytearray((d / "v4-announced.want").read_bytes())
    # Key 7's answer (a group of an announced prefix) changed to another group.
    g = int.from_bytes(want[28:32], "little")
    assert g != 0xFFFFFFFF
    want[28:32] = ((g + 1) % 65_000).to_bytes(4, "little")
    (d / "v4-announced.want").write_bytes(bytes(want))
    p = harness(str(d), "--check-only", "--skip", "rte_lpm")
    assert p.returncode == 1, p.stdout + p.stderr
    assert "v4-announced rte_fib key 7:" in p.stderr
    assert re.search(r"impl=rte_fib .*mismatches=1 ", p.stdout), p.stdout


def test_bad_input_is_refused(keys: Path, tmp_path: Path) -> None:
    p = harness()
    assert p.returncode == 2 and "usage: fib_harness" in p.stderr
    p = harness(str(keys), "--reps", "99")
    assert p.returncode == 2 and "usage: fib_harness" in p.stderr
    p = harness(str(tmp_path))
    assert p.returncode == 2 and "run fib_keys first" in p.stderr
    d = subset(keys, tmp_path / "short", "v4-random")
    (d / "v4-random.keys").write_bytes((d / "v4-random.keys").read_bytes()[:100])
    p = harness(str(d), "--check-only", "--skip", "rte_lpm")
    assert p.returncode == 2 and "shorter than" in p.stderr, p.stderr


def test_driver_parses_both_outputs() -> None:
    corridor = (
        "| IPv4 ipv4-routeviews-2024-04-06.txt.gz (998042) | random | 30.1 | 38.0 | 5.0 | 7.6x |\n"
        "| IPv6 ipv6-tier1-router.txt.gz (160147) | announced | 9.0 | 12.0 | 3.0 | 4.0x |\n"
        "- IPv4 full table (998042 routes): load 1.52 s\n"
    )
    rates, notes = fib_dpdk.parse_corridor(corridor)
    assert rates == {"v4-random": 38.0, "v6-tier1-announced": 12.0}
    assert notes == ["- IPv4 full table (998042 routes): load 1.52 s"]
    out = (
        "LOAD table=/x/t.gz impl=rte_fib routes=9 tbl8=3 load_s=0.1 heap_mib=1.0 rss_mib=0\n"
        "RESULT contest=v4-random impl=rte_fib keys=64 mlps=41.9 mismatches=0 sink=0\n"
        "RESULT contest=v4-random impl=rte_lpm keys=64 mlps=60.5 mismatches=2 sink=0\n"
    )
    r, loads, bad = fib_dpdk.parse_harness(out)
    assert r == {("v4-random", "rte_fib"): 41.9, ("v4-random", "rte_lpm"): 60.5}
    assert bad == 2 and loads[0]["tbl8"] == "3"
    assert fib_dpdk.ratio(38.0, 41.9) == "0.91x" and fib_dpdk.ratio(None, 1.0) == "-"
