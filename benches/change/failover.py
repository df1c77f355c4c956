"""The failover scenario: one group of two members, sinkb0 taken down halfway through a trial,
the loss window at a small and a large table."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

from benches.change.agent import Agent, next_hops, running_agent
from benches.change.report import fmt
from benches.change.search import Mode, Traffic, base_rate, trial_json
from benches.change.sinkb import SINKB_IF, SINKB_ROLE, SinkB
from benches.harness.agent import route_requests
from benches.harness.cpu import GEN_CPU, pin_napi
from benches.harness.results import log
from benches.harness.tables import TABLE4, real_table, test_routes
from benches.harness.topology import Topology
from benches.harness.traffic import Sink
from corridor import lab as L


def link_down_halfway(agent: Agent, sinkb: SinkB) -> Callable[[Traffic, float], dict]:
    """What a failover trial does while the traffic runs: wait half of it, read B's share
    so far, take sinkb0 down, and time how long the agent takes to report the link down
    (it does so once the group is re-pointed: GetCounters polled every 5 ms)."""

    def during(traffic: Traffic, seconds: float) -> dict:
        a0, b0 = traffic.counts()
        time.sleep(seconds / 2)
        a1, b1 = traffic.counts()
        t0 = time.monotonic()
        sinkb.link(up=False)
        # The link goes down somewhere inside the command, mostly fork and exec of `ip`:
        # the agent's reaction is timed from the command's return, an upper bound.
        t1 = time.monotonic()
        reaction = None
        while time.monotonic() - t1 < 3.0:
            if agent.counters().next_hops.link_down >= 1:
                reaction = time.monotonic() - t1
                break
            time.sleep(0.005)
        # The share over the first half, in flight and all: from the generator's start.
        return {"share_b": (b1 - b0) / max(1, (a1 - a0) + (b1 - b0)),
                "link_down_command_ms": (t1 - t0) * 1000,
                "agent_repointed_ms": None if reaction is None else reaction * 1000}  # fmt: skip

    return during


def restore_link(agent: Agent, topo: Topology, sinkb: SinkB) -> list[str]:
    """sinkb0 up again, the agent told of it, sinkb0's (new) NAPI thread pinned again."""
    sinkb.link(up=True)
    deadline = time.monotonic() + 10
    while agent.counters().next_hops.link_down:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the agent still reports a link down 10 s after sinkb0 came up: "
                               f"{agent.tail()}")  # fmt: skip
        time.sleep(0.05)
    placed = pin_napi(topo, SINKB_ROLE, SINKB_IF, GEN_CPU, realtime=True)
    time.sleep(0.5)  # the engine's link check (every 100 ms) re-arms dut2
    return placed


def run_failover(lab: L.Lab, topo: Topology, sinkb: SinkB, sinks: tuple[Sink, Sink],
                 tmp: Path, mode: Mode, rate: float, args) -> list[dict]:  # fmt: skip
    r4, d4, _, _ = test_routes()
    sizes = sorted(args.failover_routes or mode.failover_routes)
    t0 = time.monotonic()
    real = real_table(TABLE4, max(0, sizes[-1] - len(r4)))
    log(f"failover: {len(r4)} test routes + up to {len(real):,} of {TABLE4} "
        f"(read in {time.monotonic() - t0:.1f} s), {len(d4)} destinations")  # fmt: skip
    dsts = tmp / "failover-dsts.txt"
    dsts.write_text("\n".join(d4) + "\n")
    rows = []
    with running_agent(lab, args.control_cpu) as agent:
        traffic = Traffic(topo, sinks, dsts, agent)
        agent.write(next_hops(failover=True))
        loaded: list[str] = []
        for n in sizes:
            want = r4 + real[: max(0, n - len(r4))]
            new = want[len(loaded) :]
            t0 = time.monotonic()
            acked = agent.stream(route_requests(new, 10_000))
            loaded = want
            log(f"  {len(loaded):,} routes on the group ({acked:,} streamed in "
                f"{time.monotonic() - t0:.1f} s)")  # fmt: skip
            if not rate:
                log("  zero-loss search (both members up)")
                rate = 0.5 * base_rate(traffic, mode, b_is_wrong=False)[0]
            agent.place()
            base = traffic.trial(rate, mode.failover_seconds)
            share = base.at_b / max(1, base.at_a + base.at_b)
            log(f"    no failure: {base.sent_pps / 1e6:.3f} Mpps offered, lost {base.lost}, "
                f"share of B {share:.1%}")  # fmt: skip
            fails = []
            for rep in range(mode.failover_reps):
                try:
                    fail = traffic.trial(rate, mode.failover_seconds,
                                         during=link_down_halfway(agent, sinkb))  # fmt: skip
                finally:
                    placed = restore_link(agent, topo, sinkb)
                share_b = fail.during["share_b"]
                # Less the loss a trial has without a failure, counted in this very trial
                # (on this shared VM a separate one loses thousands or nothing at random):
                # the frames refused at the input, by dut0's ring or the worker's.
                excess = fail.lost - fail.lost_in - fail.lost_ring
                window = excess / (fail.sent_pps * share_b) * 1000 if share_b else None
                repointed = fail.during["agent_repointed_ms"]
                log(f"    failure {rep + 1}/{mode.failover_reps}: lost {fail.lost} (B's share "
                    f"before {share_b:.1%}), loss window {fmt(window, '.1f')} ms, agent "
                    f"re-pointed {fmt(repointed, '.1f')} ms after `ip link` returned")  # fmt: skip
                fails.append({**trial_json(fail), "excess_lost": excess, "window_ms": window})
            windows = [f["window_ms"] for f in fails if f["window_ms"] is not None]
            repointed = [f["agent_repointed_ms"] for f in fails
                         if f["agent_repointed_ms"] is not None]  # fmt: skip
            rows.append({"routes": len(loaded), "rate_pps": rate, "baseline": trial_json(base),
                         "failures": fails, "sinkb_napi": placed,
                         "window_ms": statistics.median(windows) if windows else None,
                         "window_ms_range": [min(windows), max(windows)] if windows else None,
                         "agent_repointed_ms": statistics.median(repointed) if repointed
                         else None})  # fmt: skip
    return rows
