"""The run: the options, the table (the real Internet tables and the test routes), then
per repetition and router, every family and frame size searched, and the results written
to OUT.{md,json,png}."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shutil
import time
from pathlib import Path

import benches.forwarding
from benches.forwarding.profile import profile
from benches.forwarding.report import markdown, paired, plot, summarize
from benches.forwarding.routers import ROUTERS, install_kernel_table, make_router
from benches.forwarding.search import FULL, QUICK, Traffic, search, warm_up
from benches.harness import RESULTS, results
from benches.harness.cpu import GEN_CPU, describe_stalls, host_stalls, machine, pin_napi
from benches.harness.results import log
from benches.harness.tables import TABLE4, TABLE6, real_table, test_routes
from benches.harness.topology import bench_topology, parse_hosts
from benches.harness.traffic import Sink, build_tools

SIZES = (64, 512, 1518)
# The smallest IPv6 frame that holds UDP and the 12-byte signature is 78 wire bytes
# (RFC 5180 section 5.1 gives the same floor for the same reason).
MIN_SIZE = {4: 64, 6: 78}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benches.forwarding",
        description=benches.forwarding.__doc__.split("\n\n")[0],
    )
    ap.add_argument("--quick", action="store_true", help="2 s trials, 4 steps, 1 repetition")
    ap.add_argument("--routers", default=",".join(ROUTERS))
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    ap.add_argument("--families", default="4,6")
    ap.add_argument("--table-limit", type=int, default=0,
                    help="load only the first N routes of each real table (0: all)")  # fmt: skip
    ap.add_argument("--reps", type=int, help="repetitions (full: 3, quick: 1)")
    ap.add_argument("--trial", type=float, help="seconds per trial (full: 10, quick: 2)")
    ap.add_argument("--trials-per-load", type=int, default=QUICK.per_load,
                    help="trials at most per offered rate, the majority deciding whether it "
                    "is within the loss (odd, 1 to 9; 1: one trial decides)")  # fmt: skip
    ap.add_argument("--profile", action="store_true",
                    help="record a perf profile of the router CPU for each router "
                    "(IPv4 64 B, flat out) into OUT-profile-ROUTER.txt")  # fmt: skip
    ap.add_argument("--hosts", default="",
                    help="gen=HOST,sink=HOST: generator and sink on other machines (the test "
                    "VMs), this one the router; default: the lab's namespaces here")  # fmt: skip
    ap.add_argument("--remote", default="ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new "
                    "root@{host}", help="command prefix that runs a command on {host}")  # fmt: skip
    ap.add_argument("--out", default=str(RESULTS / "forwarding-latest"))
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("the benchmark builds network namespaces: run it as root")
    if len(os.sched_getaffinity(0)) < 2 and os.cpu_count() < 2:
        raise SystemExit("the benchmark needs two CPUs (generator, router)")
    mode = dataclasses.replace(QUICK if args.quick else FULL)
    if args.reps is not None:
        if not 1 <= args.reps <= 10:
            raise SystemExit(f"--reps {args.reps}: expected 1 to 10")
        mode.reps = args.reps
    if args.trial is not None:
        if not 0.5 <= args.trial <= 60:
            raise SystemExit(f"--trial {args.trial}: expected 0.5 to 60 seconds")
        mode.trial = mode.latency_trial = args.trial
    if not (1 <= args.trials_per_load <= 9 and args.trials_per_load % 2):
        raise SystemExit(f"--trials-per-load {args.trials_per_load}: expected an odd number "
                         "from 1 to 9")  # fmt: skip
    mode.per_load = args.trials_per_load
    for r in args.routers.split(","):
        if r not in ROUTERS:
            raise SystemExit(f"--routers: {r!r} is not one of {', '.join(ROUTERS)}")
    if args.profile and shutil.which("perf") is None:
        raise SystemExit("--profile needs perf (Debian package linux-perf; make deps)")
    routers = args.routers.split(",")
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
        families = [int(f) for f in args.families.split(",")]
    except ValueError as e:
        raise SystemExit(f"--sizes / --families: {e}") from None
    if bad := [x for x in sizes if not 64 <= x <= 1518]:
        raise SystemExit(f"--sizes: {bad} outside 64-1518 (wire bytes, with FCS)")
    if bad := [f for f in families if f not in (4, 6)]:
        raise SystemExit(f"--families: {bad}: expected 4 and/or 6")
    hosts = parse_hosts(args.hosts, args.remote)
    # The harness itself (and what it starts) stays off the router CPU; the routers pin
    # their own threads there.
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {GEN_CPU})
    build_tools()

    r4, d4, r6, d6 = test_routes()
    limit = args.table_limit or None
    table = {"v4": real_table(TABLE4, limit) + r4, "v6": real_table(TABLE6, limit) + r6}
    log(f"table: {len(table['v4'])} IPv4 and {len(table['v6'])} IPv6 routes "
        f"({len(r4)} + {len(r6)} of them in the test space); {len(d4)} + {len(d6)} "
        "destinations")  # fmt: skip
    rows: list[dict] = []
    placements = {}
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "mode": "quick" if args.quick else "full",
        "reps": mode.reps,
        "trial_s": mode.trial,
        "per_load": mode.per_load,
        "machine": machine(),
        "table": f"{len(table['v4'])} IPv4 + {len(table['v6'])} IPv6 routes",
    }
    with bench_topology(hosts, args.remote) as topo:
        meta["topology"] = (f"{topo.kind}: {topo.gen_if} -> {topo.dut_in} | router | "
                            f"{topo.dut_out} -> {topo.sink_if}")  # fmt: skip
        secs = install_kernel_table(topo, table["v4"], table["v6"])
        log(f"kernel table installed with ip -batch in {secs:.1f} s")
        meta["router_cpu_stalls"] = host_stalls(topo)
        log(f"router CPU, idle, as seen from inside: {describe_stalls(meta['router_cpu_stalls'])}")
        sink = Sink(topo)
        try:
            placements["sink"] = pin_napi(topo, "sink", topo.sink_if, topo.sink_cpu,
                                          realtime=True)  # fmt: skip
            traffic = Traffic(topo, sink, dsts={4: d4, 6: d6})
            for rep in range(mode.reps):
                # Every other repetition in the reverse order (A B, B A, ...): a machine
                # whose speed drifts (it is shared) then favours neither of two routers
                # compared back to back.
                for name in routers if rep % 2 == 0 else routers[::-1]:
                    router = make_router(name, topo, table)
                    load = os.getloadavg()[0]
                    log(f"[rep {rep + 1}/{mode.reps}] {name} (load average {load:.2f})")
                    try:
                        router.start()
                    except Exception as e:  # a router that cannot run is reported, not fatal
                        log(f"  not measured: {e}")
                        router.stop()
                        for f in families:
                            for size in sizes:
                                rows.append({"router": name, "family": f, "size": size,
                                             "rep": rep, "error": str(e)})  # fmt: skip
                        continue
                    try:
                        if args.profile and rep == 0:
                            log(f"  profile: {profile(traffic, name, Path(args.out))}")
                        placements[name] = router.placement
                        warm_up(traffic, {f: max(min(sizes), MIN_SIZE[f]) for f in families},
                                log)  # fmt: skip
                        for f in families:
                            for size in sizes:
                                size = max(size, MIN_SIZE[f])
                                log(f"  IPv{f} {size} B")
                                r = search(traffic, f, size, mode, log)
                                log(f"  -> NDR {r['ndr_pps'] / 1e6:.3f} Mpps, PDR "
                                    f"{r['pdr_pps'] / 1e6:.3f} Mpps, CPU {r['cpu']:.0%}, "
                                    f"p50 {r.get('p50_us')}, p99 {r.get('p99_us')} µs")  # fmt: skip
                                rows.append({"router": name, "family": f, "size": size,
                                             "rep": rep, "load": load, **r})  # fmt: skip
                    finally:
                        router.stop()
        finally:
            sink.close()
    meta["load_average"] = [round(x, 2) for x in os.getloadavg()]
    meta["placement"] = "; ".join(f"{k}: {', '.join(v)}" for k, v in placements.items())
    summary = summarize(rows)
    meta["paired"] = paired(rows)
    out = Path(args.out)
    md = markdown(summary, meta)
    results.write(out, md, {"meta": meta, "rows": rows, "summary": summary})
    png = plot(summary, out.with_suffix(".png"), meta)
    print(md)
    print(f"plot: {png}")
    return 0
