"""The run: the options, the lab with its second sink, the scenarios asked for, and the
results written to OUT.{md,json}."""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import tempfile
import time
from pathlib import Path

import benches.change
from benches.change.churn import run_churn
from benches.change.failover import run_failover
from benches.change.report import markdown
from benches.change.search import FULL, QUICK
from benches.change.sinkb import SINKB_IF, SINKB_ROLE, SinkB
from benches.harness import RESULTS, results
from benches.harness.cpu import GEN_CPU, ROUTER_CPU, machine, pin_napi
from benches.harness.traffic import Sink, build_tools
from corridor import lab as L


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benches.change", description=benches.change.__doc__.split("\n\n")[0]
    )
    ap.add_argument("--scenarios", default="churn,failover")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 1 s search trials, 3 s churn trials, 100 k routes",
    )
    ap.add_argument("--trial", type=float, help="seconds per zero-loss search trial")
    ap.add_argument("--seconds", type=float, help="seconds of each churn trial (default 10)")
    ap.add_argument("--churn-rate", type=int, default=10_000, help="route updates per second")
    ap.add_argument("--churn-batch", type=int, default=500, help="operations per Write")
    ap.add_argument(
        "--rate",
        type=float,
        default=0,
        help="failover traffic in frames/s (default: half the zero-loss rate)",
    )
    ap.add_argument("--failover-routes", type=lambda s: [int(x) for x in s.split(",")],
                    help="route counts of the failover trials (default 1000,1000000)")  # fmt: skip
    ap.add_argument("--control-cpu", type=int, default=GEN_CPU,
                    help="CPU of the agent's control threads and the churn writer")  # fmt: skip
    ap.add_argument("--out", default=str(RESULTS / "change-latest"))
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit(
            "benches.change builds network namespaces and runs the engine: run it as root"
        )
    if os.cpu_count() < 2:
        raise SystemExit("benches.change needs two CPUs (generator, router)")
    scenarios = args.scenarios.split(",")
    for s in scenarios:
        if s not in ("churn", "failover"):
            raise SystemExit(f"--scenarios {s!r}: expected churn, failover or both")
    if not 0 < args.churn_batch <= args.churn_rate:
        raise SystemExit("--churn-batch must be between 1 and --churn-rate")
    base = QUICK if args.quick else FULL
    mode = dataclasses.replace(base, trial=args.trial or base.trial,
                               seconds=args.seconds or base.seconds)  # fmt: skip
    # Every thread this process and its children make starts on the control CPU; the
    # generator, the engine's threads and the NAPI threads are placed explicitly.
    os.sched_setaffinity(0, {args.control_cpu})
    # SIGTERM unwinds like Ctrl-C, through every finally below.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    build_tools()
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "mode": "quick" if args.quick else "full",
        "machine": machine(),
        "trial_s": mode.trial,
        "seconds": mode.seconds,
        "failover_s": mode.failover_seconds,
        "failover_reps": mode.failover_reps,
    }
    placement: dict[str, list[str]] = {}
    churn = failover = None
    lab = L.Lab(prefix=f"cor-c{os.getpid()}-", queues=1)
    sinkb = SinkB(lab)
    try:
        lab.up()
        sinkb.up()
        with tempfile.TemporaryDirectory(prefix="cor-change-") as tmp:
            topo = sinkb.topology()
            sinks: list[Sink] = []
            try:
                sinks.append(Sink(topo))
                sinks.append(Sink(topo, SINKB_ROLE, SINKB_IF))
                placement["sinks"] = pin_napi(topo, "sink", L.SINK_IF, GEN_CPU, realtime=True)
                placement["sinks"] += pin_napi(topo, SINKB_ROLE, SINKB_IF, GEN_CPU,
                                                 realtime=True)  # fmt: skip
                placement["generator"] = [f"gen->cpu{GEN_CPU}"]
                if "churn" in scenarios:
                    churn = run_churn(lab, topo, (sinks[0], sinks[1]), Path(tmp), mode, args)
                    placement["agent"] = churn.pop("placement")
                if "failover" in scenarios:
                    rate = args.rate or (0.5 * churn["zero_loss_pps"] if churn else 0)
                    failover = run_failover(lab, topo, sinkb, (sinks[0], sinks[1]), Path(tmp), mode,
                                            rate, args)  # fmt: skip
            finally:
                for s in sinks:
                    s.close()
    finally:
        sinkb.down()
        lab.down()
    placement.setdefault("agent", [f"engine threads->cpu{ROUTER_CPU}",
                                   f"agent's other threads->cpu{args.control_cpu}"])  # fmt: skip
    placement["writer"] = [f"churn writer->cpu{args.control_cpu}"]
    meta["placement"] = "; ".join(f"{k}: {', '.join(v)}" for k, v in placement.items())
    md = markdown(meta, churn, failover)
    results.write(Path(args.out), md, {"meta": meta, "churn": churn, "failover": failover})
    print(md)
    return 0
