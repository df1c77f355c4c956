"""Trials and the search: one trial runs the generator at a rate through the router into
the sink and says what was lost where; the search finds the no-drop and the partial-drop
rates by binary search over the offered rate, and the latency at half of one."""

from __future__ import annotations

import dataclasses

from benches.harness.cpu import busy_share, cpu_times, steal_jiffies
from benches.harness.topology import Topology, topology
from benches.harness.traffic import (
    PDR_LOSS,
    Sink,
    generate,
    link_dropped,
    percentile,
    refused_by_router,
)
from corridor import lab as L


@dataclasses.dataclass
class Mode:
    trial: float  # seconds per search trial (RFC 2544: at least 10)
    steps: int  # binary-search trials per criterion (NDR, PDR) at most
    reps: int
    latency_trial: float


FULL = Mode(trial=10.0, steps=4, reps=3, latency_trial=10.0)
QUICK = Mode(trial=2.0, steps=4, reps=1, latency_trial=2.0)
# A search stops once its bounds are this close (relative): finer is below the noise.
PRECISION = 0.03


@dataclasses.dataclass
class Trial:
    offered: float  # pps asked for (0 = as fast as the generator goes)
    sent: int
    received: int
    seconds: float  # time the generator ran (its ~20 ms set-up per call left out)
    cpu: float  # busy share of the router CPU
    hist: dict[int, int]
    # Where frames were lost: refused by the router's full input ring (the generator's
    # XDP_TX into dut0 failed), refused by the sink's full ring (dut1's transmit dropped
    # them), and the rest, inside the router.
    lost_in: int = 0
    lost_sink: int = 0
    steal: int = 0  # jiffies the hypervisor took from the VM's CPUs during the trial

    @property
    def lost(self) -> int:
        return self.sent - self.received

    @property
    def lost_router(self) -> int:
        return max(0, self.lost - self.lost_in - self.lost_sink)

    @property
    def loss_ratio(self) -> float:
        return self.lost / self.sent if self.sent else 1.0

    def where(self) -> str:
        if self.lost <= 0:
            return "none"
        parts = (("input ring", self.lost_in), ("router", self.lost_router),
                 ("sink ring", self.lost_sink))  # fmt: skip
        return ", ".join(f"{name} {n / self.lost:.0%}" for name, n in parts if n)

    @property
    def sent_pps(self) -> float:
        return self.sent / self.seconds

    @property
    def fwd_pps(self) -> float:
        return self.received / self.seconds


class Traffic:
    """Trials of the generator through the dut into the sink."""

    def __init__(self, where: L.Lab | Topology, sink: Sink,
                 dsts: dict[int, list[str]] | None = None) -> None:  # fmt: skip
        self.topo, self.sink = topology(where), sink
        # Destinations go to the generator on its stdin: the same on a remote host.
        self.dsts = {family: "\n".join(addrs) + "\n" for family, addrs in (dsts or {}).items()}

    def drops(self) -> tuple[int, int, int]:
        """(frames refused by the router's input port, frames refused by the sink's,
        steal jiffies of this machine), cumulative."""
        t = self.topo
        refused_sink = link_dropped(t, "dut", t.dut_out, "tx")
        refused_sink += link_dropped(t, "sink", t.sink_if, "rx")
        return refused_by_router(t), refused_sink, steal_jiffies()

    def trial(self, family: int, size: int, rate: float, seconds: float) -> Trial:
        t = self.topo
        before = self.sink.read()
        d0 = self.drops()
        cpu0 = cpu_times(t.router_cpu)
        gen = generate(t, src=L.GEN_V4 if family == 4 else L.GEN_V6, dsts="/dev/stdin",
                       size=size, rate=rate, seconds=seconds,
                       stdin=self.dsts[family]).report  # fmt: skip
        cpu1 = cpu_times(t.router_cpu)
        d1 = self.drops()
        after = self.sink.read()
        h0 = dict((b, c) for b, c in before["hist"])
        hist = {b: c - h0.get(b, 0) for b, c in after["hist"] if c - h0.get(b, 0)}
        return Trial(
            offered=rate, sent=gen["sent"], received=after["pkts"] - before["pkts"],
            seconds=gen["active_seconds"], cpu=busy_share(cpu0, cpu1), hist=hist,
            lost_in=d1[0] - d0[0], lost_sink=d1[1] - d0[1], steal=d1[2] - d0[2],
        )  # fmt: skip


def search(traffic: Traffic, family: int, size: int, mode: Mode, log) -> dict:
    """The no-drop rate (NDR: RFC 2544 section 26.1, no frame lost) and the partial-drop
    rate (PDR: loss at most PDR_LOSS), each by binary search over the offered rate. One
    trial at the generator's full speed bounds both; every trial narrows both searches, so
    the NDR search starts inside the PDR's bounds. Latency is measured at half the NDR
    (half the PDR when no rate was loss-free)."""
    top = traffic.trial(family, size, 0, mode.trial)
    log(f"    max offered {top.sent_pps / 1e6:.3f} Mpps -> sink {top.fwd_pps / 1e6:.3f} Mpps, "
        f"lost at: {top.where()}")  # fmt: skip
    trials = [top]

    def run(rate: float) -> Trial:
        t = traffic.trial(family, size, rate, mode.trial)
        trials.append(t)
        log(f"    {rate / 1e6:.3f} Mpps asked, {t.sent_pps / 1e6:.3f} sent: lost {t.lost} of "
            f"{t.sent} ({t.loss_ratio:.3%}; {t.where()}; steal {t.steal})")  # fmt: skip
        return t

    def best(tolerance: float) -> Trial | None:
        ok = [t for t in trials if t.loss_ratio <= tolerance]
        return max(ok, key=lambda t: t.sent_pps) if ok else None

    for tolerance in (PDR_LOSS, 0.0):
        if top.loss_ratio <= tolerance:
            continue
        # Bounds in asked rates: the highest that passed, the lowest above it that failed.
        b = best(tolerance)
        lo = b.offered if b and b is not top else 0.0
        hi = min([t.offered or t.sent_pps for t in trials
                  if t.loss_ratio > tolerance and (t.offered or t.sent_pps) > lo]
                 or [top.sent_pps])  # fmt: skip
        # First guess just under what got through: most routers lose little below it.
        guess = min(hi * 0.97, top.fwd_pps * 0.97) if lo == 0 else (lo + hi) / 2
        for _ in range(mode.steps):
            if lo and (hi - lo) / hi < PRECISION:
                break
            t = run(guess)
            if t.loss_ratio <= tolerance:
                lo = guess
            else:
                hi = guess
            guess = (lo + hi) / 2 if lo else guess / 2
    ndr, pdr = best(0.0), best(PDR_LOSS)
    lat: dict = {}
    at = ndr or pdr
    if at is not None:
        half = traffic.trial(family, size, at.sent_pps / 2, mode.latency_trial)
        lat = {"p50_us": percentile(half.hist, 0.50), "p99_us": percentile(half.hist, 0.99),
               "latency_at": "NDR/2" if ndr else "PDR/2"}  # fmt: skip
    return {
        "ndr_pps": ndr.sent_pps if ndr else 0.0,
        "pdr_pps": pdr.sent_pps if pdr else 0.0,
        "max_fwd_pps": top.fwd_pps,
        "max_offered_pps": top.sent_pps,
        "max_lost_at": top.where(),
        "cpu": (ndr or pdr or top).cpu,
        "trials": [dataclasses.asdict(t) | {"hist": None} for t in trials],
        **lat,
    }
