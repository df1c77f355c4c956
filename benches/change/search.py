"""Trials counted at both sinks, and the search for the base rate the scenarios run at:
zero loss, or the partial-drop rate where the machine loses frames at every rate."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from benches.change.agent import Agent
from benches.change.sinkb import DUT_B, SINKB_IF, SINKB_ROLE
from benches.harness.cpu import ROUTER_CPU, busy_share, cpu_times, steal_jiffies
from benches.harness.results import log
from benches.harness.topology import Topology
from benches.harness.traffic import PDR_LOSS, Sink, generate, link_dropped, refused_by_router
from corridor import lab as L

SIZE = 64  # wire bytes: the most lookups per second


@dataclasses.dataclass
class Mode:
    trial: float  # seconds per zero-loss search trial
    steps: int  # search trials after the unthrottled one
    seconds: float  # the two churn trials
    failover_seconds: float
    failover_routes: tuple[int, ...]
    failover_reps: int  # failure trials per table size


FULL = Mode(trial=3.0, steps=6, seconds=10.0, failover_seconds=4.0,
            failover_routes=(1_000, 1_000_000), failover_reps=3)  # fmt: skip
QUICK = Mode(trial=1.0, steps=3, seconds=3.0, failover_seconds=2.0,
             failover_routes=(1_000, 100_000), failover_reps=1)  # fmt: skip


@dataclasses.dataclass
class Trial:
    offered: float  # pps asked for (0: as fast as the generator goes)
    sent: int
    seconds: float  # the generator's active time
    at_a: int  # frames counted at sink A
    at_b: int  # ... and at sink B
    forgiven: int  # times the generator was held up and gave up catching up
    cpu: float  # busy share of the router CPU
    # Where frames were lost, from the kernel's and the agent's counters: refused by dut0's
    # full input ring (the generator's XDP_TX failed), by the worker's full rx ring, dropped
    # on the way out of dut1 / dut2 (their transmit, or the sink's full ring; dut2's while
    # sinkb0 is down); and the steal jiffies the hypervisor took from this VM meanwhile.
    lost_in: int
    lost_ring: int  # not taken by the worker: its AF_XDP rx ring was full (agent's counters)
    lost_out_a: int
    lost_out_b: int
    steal: int
    started: float  # time.monotonic() around the generator's run
    ended: float
    during: dict = dataclasses.field(default_factory=dict)

    @property
    def lost(self) -> int:
        return self.sent - self.at_a - self.at_b

    @property
    def sent_pps(self) -> float:
        return self.sent / self.seconds

    @property
    def fwd_pps(self) -> float:
        return (self.at_a + self.at_b) / self.seconds


class Traffic:
    """Trials of the generator from gen0 through the dut, counted at both sinks."""

    def __init__(self, topo: Topology, sinks: tuple[Sink, Sink], dsts_file: Path,
                 agent: Agent) -> None:  # fmt: skip
        self.topo, self.sinks, self.dsts_file, self.agent = topo, sinks, dsts_file, agent

    def counts(self) -> tuple[int, int]:
        return self.sinks[0].read()["pkts"], self.sinks[1].read()["pkts"]

    def drops(self) -> tuple[int, int, int, int, int]:
        """(refused by dut0, dropped toward sink A, toward sink B, steal jiffies, refused by
        the worker's rx ring), cumulative; the first four as benches.forwarding's
        Traffic.drops counts them, with the second sink."""
        t = self.topo
        drop = link_dropped
        out_a = drop(t, "dut", L.DUT_OUT, "tx") + drop(t, "sink", L.SINK_IF, "rx")
        out_b = drop(t, "dut", DUT_B, "tx") + drop(t, SINKB_ROLE, SINKB_IF, "rx")
        ring = sum(w.rx_ring_dropped for w in self.agent.counters().workers)
        refused, steal = refused_by_router(t), steal_jiffies()
        return refused, out_a, out_b, steal, ring

    def trial(self, rate: float, seconds: float,
              during: Callable[[Traffic, float], dict] | None = None) -> Trial:  # fmt: skip
        """One run of the generator at `rate` pps for `seconds`; `during(traffic, seconds)`
        is called while it runs and what it returns is kept in Trial.during."""
        a0, b0 = self.counts()
        d0 = self.drops()
        cpu0 = cpu_times(ROUTER_CPU)
        run = generate(self.topo, src=L.GEN_V4, dsts=str(self.dsts_file), size=SIZE, rate=rate,
                       seconds=seconds,
                       during=None if during is None else lambda s: during(self, s))  # fmt: skip
        gen = run.report
        cpu1 = cpu_times(ROUTER_CPU)
        d1 = self.drops()
        a1, b1 = self.counts()
        return Trial(
            offered=rate, sent=gen["sent"], seconds=gen["active_seconds"], at_a=a1 - a0,
            at_b=b1 - b0, forgiven=gen["forgiven"], cpu=busy_share(cpu0, cpu1),
            lost_in=d1[0] - d0[0], lost_out_a=d1[1] - d0[1], lost_out_b=d1[2] - d0[2],
            steal=d1[3] - d0[3], lost_ring=d1[4] - d0[4], started=run.started, ended=run.ended,
            during=run.during,
        )  # fmt: skip


def zero_loss(traffic: Traffic, mode: Mode, b_is_wrong: bool,
              tolerance: float = 0.0) -> tuple[float, float]:  # fmt: skip
    """The highest rate offered with nothing lost (RFC 2544 section 26.1, shortened), nor
    anything at sink B if `b_is_wrong`: one unthrottled trial, then `mode.steps` trials
    that double the rate from just under what got through until one loses, then bisect.
    `tolerance`: the share of frames that may be lost (0: none; PDR_LOSS: the partial-drop
    rate, for machines whose stalls lose frames at every rate). Nothing at sink B is ever
    tolerated. Returns the rate asked of the generator and the rate it measured itself
    sending (more when its CPU is busy: it leaves gaps of over 20 us out of its time)."""

    def ok(t: Trial) -> bool:
        return t.lost <= tolerance * t.sent and not (b_is_wrong and t.at_b)

    top = traffic.trial(0, mode.trial)
    log(f"    max offered {top.sent_pps / 1e6:.3f} Mpps -> sinks {top.fwd_pps / 1e6:.3f} Mpps")
    if ok(top):
        return top.sent_pps, top.sent_pps
    # What got through the overloaded router is only a hint: dut0's NAPI thread and the
    # worker share the CPU under overload (and with CORRIDOR_BENCH_RT=1 the NAPI thread
    # starves the worker), so the search doubles from it until a trial loses, then bisects.
    best: Trial | None = None
    lo, hi = 0.0, top.sent_pps
    guess = top.fwd_pps * 0.95
    for _ in range(mode.steps):
        t = traffic.trial(guess, mode.trial)
        log(f"    {guess / 1e6:.3f} Mpps: lost {t.lost} of {t.sent}, at sink B {t.at_b}"
            f"{' ok' if ok(t) else ''}")  # fmt: skip
        if ok(t):
            best, lo = t, guess
        else:
            hi = guess
        failed_once = hi < top.sent_pps
        guess = (lo + hi) / 2 if failed_once else min(2 * lo, hi)
    if best is None:
        raise NoRate(f"no rate with loss <= {tolerance:.1%} found down to {hi / 1e6:.3f} Mpps")
    return lo, best.sent_pps


class NoRate(RuntimeError):
    """The search found no rate that met its loss criterion."""


def base_rate(traffic: Traffic, mode: Mode, b_is_wrong: bool) -> tuple[float, float, str]:
    """The zero-loss rate; where the machine loses frames at every rate tried (a shared
    VM's stalls overflow the router's 256-frame veth ring, whatever the router), the
    partial-drop rate instead, so that the run still measures churn and says which
    criterion it used. Returns (asked, measured, criterion)."""
    try:
        return (*zero_loss(traffic, mode, b_is_wrong), "zero loss")
    except NoRate as e:
        log(f"    {e}; searching again for the partial-drop rate (loss <= {PDR_LOSS:.1%})")
    asked, measured = zero_loss(traffic, mode, b_is_wrong, tolerance=PDR_LOSS)
    return asked, measured, f"loss <= {PDR_LOSS:.1%} (no zero-loss rate found)"


def trial_json(t: Trial) -> dict:
    return {"offered_pps": t.offered, "sent": t.sent, "seconds": t.seconds, "at_a": t.at_a,
            "at_b": t.at_b, "lost": t.lost, "sent_pps": t.sent_pps, "fwd_pps": t.fwd_pps,
            "generator_forgiven": t.forgiven, "router_cpu": t.cpu, "lost_in": t.lost_in,
            "lost_ring": t.lost_ring,
            "lost_out_a": t.lost_out_a, "lost_out_b": t.lost_out_b, "steal": t.steal,
            **t.during}  # fmt: skip
