"""Corridor's FIB against DPDK's (rte_fib, rte_lpm, rte_fib6, rte_lpm6) on the same tables
and keys, in the same run, taking turns on one pinned CPU.

`python -m benches.fib_dpdk [--rounds N] [--cpu C] [--out FILE]`: builds fib_keys, the
criterion FIB benchmark and benches/dpdk/fib_harness; writes the keys and Corridor's
answers once; then each round runs the DPDK harness (which checks every answer against
Corridor's before timing) and Corridor's criterion FIB benchmark, both under
`taskset -c C`. rte_lpm is in the first round only: its full-table IPv4 load is quadratic
(minutes). Prints batch-of-64 lookup rates (median over rounds) with Corridor / DPDK
ratios, and load time and memory, as markdown (also written to --out).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / "target" / "bench-tools"
EAL = ["--no-huge", "--no-pci", "--no-shconf", "-m", "3072", "--log-level=lib.eal:error"]


def contest_of(table: str, keys: str) -> str:
    """The harness's contest name for a row of the criterion summary."""
    if table.startswith("IPv4"):
        return f"v4-{keys}"
    return f"v6-{'ris' if 'ipv6-ris' in table else 'tier1'}-{keys}"


def parse_corridor(out: str) -> tuple[dict[str, float], list[str]]:
    """Batch-of-64 M lookups/s per contest, and the load/memory notes."""
    rates = {}
    row = r"^\| (IPv[46] [^|]+) \| (random|announced) \| [\d.]+ \| ([\d.]+) \|"
    for m in re.finditer(row, out, re.M):
        rates[contest_of(m.group(1), m.group(2))] = float(m.group(3))
    notes = [line for line in out.splitlines() if line.startswith("- IPv")]
    return rates, notes


def parse_harness(out: str) -> tuple[dict[tuple[str, str], float], list[dict[str, str]], int]:
    rates = {}
    loads = []
    bad = 0
    for line in out.splitlines():
        kv = dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
        if line.startswith("RESULT "):
            rates[(kv["contest"], kv["impl"])] = float(kv["mlps"])
            bad += int(kv["mismatches"])
        elif line.startswith("LOAD "):
            loads.append(kv)
    return rates, loads, bad


def cell(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def ratio(c: float | None, x: float | None) -> str:
    return "-" if x is None or c is None else f"{c / x:.2f}x"


def run(cmd: list[str], **kw) -> str:
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        tail = f"{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
        sys.exit(f"fib_dpdk: {cmd[0]} failed ({p.returncode}):\n{tail}")
    return p.stdout


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2, help="turns of each (default 2)")
    ap.add_argument("--cpu", type=int, default=1, help="the CPU both run on (default 1)")
    ap.add_argument("--out", type=Path, default=ROOT / "benches/results/fib-dpdk-latest.md")
    ap.add_argument("--no-lpm", action="store_true", help="leave rte_lpm out (load: minutes)")
    a = ap.parse_args(argv)
    if a.rounds < 1:
        ap.error("--rounds must be at least 1")

    run(["cargo", "build", "--release", "-q", "-p", "corridor-benches", "--bin", "fib_keys"])
    run(["cargo", "bench", "-q", "-p", "corridor-benches", "--bench", "fib", "--no-run"])
    run(["make", "-s", "-C", "benches/dpdk"])
    pin = ["taskset", "-c", str(a.cpu)]
    corridor: dict[str, list[float]] = {}
    dpdk: dict[tuple[str, str], list[float]] = {}
    loads: list[dict[str, str]] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="corridor-fib-keys-") as keys:
        run([str(ROOT / "target" / "release" / "fib_keys"), keys])
        for r in range(a.rounds):
            skip = "rte_lpm" if (r > 0 or a.no_lpm) else ""
            harness = [str(TOOLS / "fib_harness"), *EAL, "-l", str(a.cpu), "--", keys]
            out = run([*pin, *harness, "--skip", skip or "none"])
            rates, load, bad = parse_harness(out)
            if bad:
                sys.exit(f"fib_dpdk: DPDK and Corridor disagree on {bad} keys:\n{out}")
            loads += load
            for k, v in rates.items():
                dpdk.setdefault(k, []).append(v)
            bench = ["cargo", "bench", "-q", "-p", "corridor-benches", "--bench", "fib"]
            out = run([*pin, *bench, "--", "--noplot"])
            rates_c, notes = parse_corridor(out)
            for k, v in rates_c.items():
                corridor.setdefault(k, []).append(v)

    def med(v: list[float] | None) -> float | None:
        return statistics.median(v) if v else None

    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        f"## FIB: Corridor against DPDK 22.11, batches of 64, one pinned CPU ({when})",
        "",
        f"M lookups/s, median of {a.rounds} round(s) taking turns on CPU {a.cpu} "
        f"(rte_lpm: {'left out' if a.no_lpm else 'first round only'}); every DPDK answer "
        "checked equal to Corridor's on all 1,048,576 keys before timing.",
        "",
        "| contest | Corridor | rte_fib(6) | Corridor / fib | rte_lpm(6) | Corridor / lpm |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for contest in sorted(corridor, key=lambda c: (c[:2], c)):
        fam6 = contest.startswith("v6")
        c = med(corridor[contest])
        f = med(dpdk.get((contest, "rte_fib6" if fam6 else "rte_fib")))
        lp = med(dpdk.get((contest, "rte_lpm6" if fam6 else "rte_lpm")))

        cells = [cell(c), cell(f), ratio(c, f), cell(lp), ratio(c, lp)]
        lines.append(f"| {contest} | " + " | ".join(cells) + " |")
    lines += ["", "Load and memory (DPDK: heap allocated by create + load, tbl8 pools fit):", ""]
    seen = set()
    for ld in loads:
        key = (Path(ld["table"]).name, ld["impl"])
        if key in seen:
            continue
        seen.add(key)
        lines.append(
            f"- {ld['impl']} {key[0]} ({ld['routes']} routes): load {float(ld['load_s']):.2f} s, "
            f"{ld['heap_mib']} MiB heap, {ld['tbl8']} tbl8 groups"
        )
    lines += ["", "Corridor (last round):", "", *notes]
    text = "\n".join(lines) + "\n"
    print(text)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
