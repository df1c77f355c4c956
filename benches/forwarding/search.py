"""Trials and the search: one trial runs the generator at a rate through the router into
the sink and says what was lost where; the search finds the no-drop and the partial-drop
rates by binary search over the offered rate, each rate judged by the majority of a few
trials, and the latency at half of one."""

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
    per_load: int = 3  # trials at most per offered rate, the majority deciding (see Load)


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


@dataclasses.dataclass
class Load:
    """The trials at one offered rate (0: flat out). Its verdict for a loss tolerance is the
    majority's: with one trial that trial's, with three the middle one's. This is
    MLRsearch's goal exceed ratio of 0.5 (draft-ietf-bmwg-mlrsearch, FD.io CSIT), for
    trials of one length: a load is a lower bound when at most half of its trials lost more
    than the tolerance. A stall of the host, which only ever adds loss, then moves the
    search only when it hits most of a load's trials."""

    offered: float
    trials: list[Trial] = dataclasses.field(default_factory=list)

    def verdict(self, tolerance: float, per_load: int) -> bool | None:
        """True: within `tolerance`; False: not; None: not decided by the trials so far."""
        good = sum(t.loss_ratio <= tolerance for t in self.trials)
        if 2 * good > per_load:
            return True
        if 2 * (len(self.trials) - good) >= per_load:
            return False
        return None

    @property
    def typical(self) -> Trial:
        """The trial that stands for the load: the middle one by loss, or of two (both
        decided the same way) the one that lost more."""
        ranked = sorted(self.trials, key=lambda t: t.loss_ratio, reverse=True)
        return ranked[(len(ranked) - 1) // 2]


# Seconds of traffic flat out, per family, between a router's start and its first search.
WARM_UP_S = 1.0


def warm_up(traffic: Traffic, sizes: dict[int, int], log) -> list[Trial]:
    """One short trial flat out per family, recorded nowhere: the first trial after a
    router started was more than once the lowest of the run for both AF_XDP routers (cold
    caches or page tables, or something else a start leaves behind: not profiled), and
    the search should measure the router, not its start. `sizes`: the frame size per
    family."""
    done = []
    for family, size in sizes.items():
        t = traffic.trial(family, size, 0, WARM_UP_S)
        log(f"    warm-up IPv{family}: {t.fwd_pps / 1e6:.3f} Mpps forwarded (not recorded)")
        done.append(t)
    return done


def search(traffic: Traffic, family: int, size: int, mode: Mode, log) -> dict:
    """The no-drop rate (NDR: RFC 2544 section 26.1, no frame lost) and the partial-drop
    rate (PDR: loss at most PDR_LOSS), each by binary search over the offered rate, each
    load judged by the majority of up to `mode.per_load` trials (see Load). One load at the
    generator's full speed bounds both; every load narrows both searches, so the NDR search
    starts inside the PDR's bounds. Latency is measured at half the NDR (half the PDR when
    no rate was loss-free)."""
    loads: list[Load] = []

    def measure(rate: float, tolerance: float) -> Load:
        """The load at `rate`, with trials enough to decide it for `tolerance`."""
        load = next((x for x in loads if x.offered == rate), None)
        if load is None:
            load = Load(rate)
            loads.append(load)
        while load.verdict(tolerance, mode.per_load) is None:
            t = traffic.trial(family, size, rate, mode.trial)
            load.trials.append(t)
            asked = f"{rate / 1e6:.3f} Mpps asked" if rate else "flat out"
            log(f"    {asked}, {t.sent_pps / 1e6:.3f} sent -> sink {t.fwd_pps / 1e6:.3f}: "
                f"lost {t.lost} of {t.sent} ({t.loss_ratio:.3%}; {t.where()}; "
                f"steal {t.steal})")  # fmt: skip
        return load

    def rate(load: Load) -> float:
        return load.offered or load.typical.sent_pps

    def best(tolerance: float) -> Load | None:
        ok = [x for x in loads if x.verdict(tolerance, mode.per_load)]
        return max(ok, key=lambda x: x.typical.sent_pps) if ok else None

    top = measure(0, PDR_LOSS)
    for tolerance in (PDR_LOSS, 0.0):
        if measure(0, tolerance).verdict(tolerance, mode.per_load):
            continue
        # Bounds in asked rates: the highest that passed, the lowest above it that failed.
        b = best(tolerance)
        lo = b.offered if b else 0.0
        over = [rate(x) for x in loads
                if x.verdict(tolerance, mode.per_load) is False and rate(x) > lo]  # fmt: skip
        hi = min(over, default=rate(top))
        # First guess just under what got through: most routers lose little below it.
        guess = min(hi, top.typical.fwd_pps) * 0.97 if lo == 0 else (lo + hi) / 2
        for _ in range(mode.steps):
            if lo and (hi - lo) / hi < PRECISION:
                break
            if measure(guess, tolerance).verdict(tolerance, mode.per_load):
                lo = guess
            else:
                hi = guess
            guess = (lo + hi) / 2 if lo else guess / 2
    ndr, pdr = best(0.0), best(PDR_LOSS)
    lat: dict = {}
    at = ndr or pdr
    if at is not None:
        half = traffic.trial(family, size, at.typical.sent_pps / 2, mode.latency_trial)
        lat = {"p50_us": percentile(half.hist, 0.50), "p99_us": percentile(half.hist, 0.99),
               "latency_at": "NDR/2" if ndr else "PDR/2"}  # fmt: skip
    flat = top.typical
    return {
        "ndr_pps": ndr.typical.sent_pps if ndr else 0.0,
        "pdr_pps": pdr.typical.sent_pps if pdr else 0.0,
        "max_fwd_pps": flat.fwd_pps,
        "max_offered_pps": flat.sent_pps,
        "max_lost_at": flat.where(),
        "cpu": (ndr or pdr or top).typical.cpu,
        "per_load": mode.per_load,
        "trials": [
            dataclasses.asdict(t) | {"hist": None, "load": i}
            for i, x in enumerate(loads)
            for t in x.trials
        ],
        **lat,
    }
