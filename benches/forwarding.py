"""The side-by-side forwarding benchmark (issue 6): in one run, the same traffic through the
same table in the lab's dut, forwarded by the Linux kernel, by the kernel's XDP fast path
(benches/xdp_fwd), by a minimal AF_XDP forwarder in C (benches/afxdp_ref, the ceiling of the
method) and by Corridor with one worker, then two. Per router, frame size and family: the
zero-loss throughput (RFC 2544 section 26.1, binary search over the offered rate), the rate
counted at the sink, latency p50/p99 at half that rate and the router CPU's busy share.

    .venv/bin/python benches/forwarding.py [--quick] [--routers kernel,xdp_fwd,...]

As root. Traffic exists only in the namespaces `cor-b<pid>-gen|dut|sink` (removed at the
end, also on failure), only toward 198.18.0.0/15 and 2001:db8::/32, every trial bounded in
time. Output: benches/results/forwarding-latest.{md,json,png}.

CPU placement (2 cores here): the generator (BPF_PROG_RUN in its own thread) and the sink's
NAPI thread share CPU 0; everything of the router (its veth NAPI threads, threaded mode on,
and its user-space workers) runs on CPU 1. With two Corridor workers the second shares
CPU 0 with the generator, so that row measures contention as much as scaling.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gzip
import ipaddress
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "control"))

from corridor import lab as L  # noqa: E402

TOOLS = ROOT / "target" / "bench-tools"
RESULTS = ROOT / "benches" / "results"
DATA = Path(os.environ.get("CORRIDOR_DATA", ROOT.parent / "shared" / "data"))
TABLE4 = "ipv4-routeviews-2024-04-06.txt.gz"
TABLE6 = "ipv6-ris-2022-05-27.txt.gz"

GEN_CPU, ROUTER_CPU = 0, 1
RT = bool(int(os.environ.get("RT", "1")))
SIZES = (64, 512, 1518)
# The smallest IPv6 frame that holds UDP and the 12-byte signature is 78 wire bytes
# (RFC 5180 section 5.1 gives the same floor for the same reason).
MIN_SIZE = {4: 64, 6: 78}
ROUTERS = ("kernel", "xdp_fwd", "afxdp_ref", "corridor-1", "corridor-2")
TEST4 = ipaddress.ip_network("198.18.0.0/15")
TEST6 = ipaddress.ip_network("2001:db8::/32")
# Test routes live where no lab link is: 198.19.0.0/16 and 2001:db8:8000::/33.
ROUTES4_IN = ipaddress.ip_network("198.19.0.0/16")
ROUTES6_IN = ipaddress.ip_network("2001:db8:8000::/33")


@dataclasses.dataclass
class Mode:
    trial: float  # seconds per search trial (RFC 2544: at least 10)
    steps: int  # binary-search trials after the unthrottled one
    reps: int
    latency_trial: float


FULL = Mode(trial=10.0, steps=8, reps=3, latency_trial=10.0)
QUICK = Mode(trial=2.0, steps=4, reps=1, latency_trial=2.0)


# -- the table -----------------------------------------------------------------------------


def test_routes(seed: int = 6) -> tuple[list[str], list[str], list[str], list[str]]:
    """Routes inside the test space over every length /16-/32 and /32-/128, and one
    destination inside each (so the traffic's lookups end at many depths)."""
    rnd = random.Random(seed)
    r4, d4, r6, d6 = ["198.19.0.0/16"], [], ["2001:db8::/32"], []
    base4 = int(ROUTES4_IN.network_address)
    for length in range(16, 33):
        for _ in range(48):
            addr = base4 | rnd.getrandbits(16)
            net = ipaddress.ip_network((addr, length), strict=False)
            r4.append(str(net))
            host = int(net.network_address) + rnd.randrange(net.num_addresses)
            d4.append(str(ipaddress.ip_address(host)))
    base6 = int(ROUTES6_IN.network_address)
    for length in range(33, 129):
        for _ in range(8):
            addr = base6 | rnd.getrandbits(95)
            net = ipaddress.ip_network((addr, length), strict=False)
            r6.append(str(net))
            d6.append(str(ipaddress.ip_address(int(net.network_address) + rnd.randrange(
                min(net.num_addresses, 1 << 32)))))  # fmt: skip
    for d in d4:
        assert ipaddress.ip_address(d) in TEST4
    for d in d6:
        assert ipaddress.ip_address(d) in TEST6
    return sorted(set(r4)), d4, sorted(set(r6)), d6


def real_table(name: str, limit: int | None) -> list[str]:
    """Prefixes of a table in ../shared/data, without defaults and anything overlapping
    the test space (those routes are ours)."""
    path = DATA / name
    if not path.exists():
        raise SystemExit(f"table {path} is missing: set CORRIDOR_DATA to ../shared/data")
    test = TEST4 if "ipv4" in name else TEST6
    out = []
    with gzip.open(path, "rt") as f:
        for line in f:
            prefix = line.split(None, 1)[0] if line.strip() else ""
            if not prefix:
                continue
            net = ipaddress.ip_network(prefix)
            if net.prefixlen == 0 or net.overlaps(test):
                continue
            out.append(prefix)
            if limit and len(out) >= limit:
                break
    return out


# -- the lab's dut as a kernel router ------------------------------------------------------


def install_kernel_table(lab: L.Lab, v4: list[str], v6: list[str]) -> float:
    """Every route through a nexthop object toward the sink, with `ip -batch`; returns
    the seconds it took. Neighbours are permanent so no router waits on ARP/ND."""
    t0 = time.monotonic()
    lab.ip("dut", "route", "del", L.TRANSIT4, check=False)
    lab.ip("dut", "route", "del", L.TRANSIT6, check=False)
    for dev, addr, mac in (
        (L.DUT_OUT, L.SINK_V4, L.SINK_MAC),
        (L.DUT_OUT, L.SINK_V6, L.SINK_MAC),
        (L.DUT_IN, L.GEN_V4, L.GEN_MAC),
        (L.DUT_IN, L.GEN_V6, L.GEN_MAC),
    ):
        lab.ip("dut", "neigh", "replace", addr, "lladdr", mac, "dev", dev, "nud", "permanent")
    with tempfile.NamedTemporaryFile("w", suffix=".batch", delete=False) as f:
        f.write(f"nexthop add id 1 via {L.SINK_V4} dev {L.DUT_OUT}\n")
        f.write(f"nexthop add id 2 via {L.SINK_V6} dev {L.DUT_OUT}\n")
        f.writelines(f"route replace {p} nhid 1\n" for p in v4)
        f.writelines(f"route replace {p} nhid 2\n" for p in v6)
        path = f.name
    try:
        lab.exec("dut", ["ip", "-batch", path], timeout=1800)
    finally:
        os.unlink(path)
    return time.monotonic() - t0


# -- CPU placement -------------------------------------------------------------------------


def napi_threads() -> dict[int, str]:
    threads = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError):
                comm = (d / "comm").read_text().strip()
                if comm.startswith("napi/"):
                    threads[int(d.name)] = comm
    return threads


def pin_napi(lab: L.Lab, role: str, dev: str, cpu: int, realtime: bool = False) -> list[str]:
    """Threaded NAPI on `dev`, its kthreads pinned to `cpu`. The kthreads are found as the
    ones that appear when threaded mode is switched on (their names carry no namespace).
    `realtime`: SCHED_FIFO, so the thread runs the moment its ring has frames instead of
    waiting out the time slice of a busy neighbour on the CPU (the sink's, which shares
    CPU 0 with the generator: under CFS its 256-frame ring overflowed at 0.2 Mpps and the
    drops were charged to the router)."""
    knob = f"/sys/class/net/{dev}/threaded"
    lab.exec(role, ["sh", "-c", f"echo 0 > {knob}"], check=False)
    before = napi_threads()
    on = lab.exec(role, ["sh", "-c", f"echo 1 > {knob}"], check=False)
    if on.returncode != 0:
        return [f"{dev}: no threaded NAPI ({on.stderr.strip()})"]
    time.sleep(0.05)
    new = {pid: comm for pid, comm in napi_threads().items() if pid not in before}
    for pid in new:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, {cpu})
            if realtime:
                os.sched_setscheduler(pid, os.SCHED_FIFO, os.sched_param(50))
    rt = " (SCHED_FIFO)" if realtime else ""
    return [f"{comm}->cpu{cpu}{rt}" for comm in new.values()]


def pin_process_threads(pid: int, cpus: set[int]) -> None:
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(task.name), cpus)


def cpu_times(cpu: int) -> tuple[int, int]:
    """(busy, total) jiffies of one CPU from /proc/stat."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            v = [int(x) for x in line.split()[1:]]
            idle = v[3] + v[4]
            return sum(v) - idle, sum(v)
    raise RuntimeError(f"cpu{cpu} not in /proc/stat")


# -- sink and generator --------------------------------------------------------------------


class Sink:
    """The counting XDP sink on sink0, read through the `sink` tool's stdin protocol."""

    def __init__(self, lab: L.Lab) -> None:
        argv = ["ip", "netns", "exec", lab.ns("sink"), str(TOOLS / "sink"), "--dev", L.SINK_IF,
                "--max-seconds", "86400"]  # fmt: skip
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        line = self.proc.stdout.readline()
        if '"ready"' not in line:
            raise RuntimeError(f"sink did not start: {self.proc.stderr.read().strip()}")

    def read(self) -> dict:
        self.proc.stdin.write("read\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def percentile(hist: dict[int, int], q: float) -> float | None:
    """The q-quantile in microseconds from the sink's log-linear histogram (bucket middles)."""
    total = sum(hist.values())
    if not total:
        return None
    rank, seen = q * total, 0
    for b in sorted(hist):
        seen += hist[b]
        if seen >= rank:
            if b < 16:
                return (b * 64 + 32) / 1000
            m, sub = (b - 16) // 16 + 10, (b - 16) % 16
            width = 1 << (m - 4)
            return ((1 << m) + sub * width + width / 2) / 1000
    return None


@dataclasses.dataclass
class Trial:
    offered: float  # pps asked for (0 = as fast as the generator goes)
    sent: int
    received: int
    seconds: float  # time the generator ran (its ~20 ms set-up per call left out)
    cpu: float  # busy share of the router CPU
    hist: dict[int, int]

    @property
    def lost(self) -> int:
        return self.sent - self.received

    @property
    def sent_pps(self) -> float:
        return self.sent / self.seconds

    @property
    def fwd_pps(self) -> float:
        return self.received / self.seconds


class Traffic:
    """Trials of the generator from gen0 through the dut into the sink."""

    def __init__(self, lab: L.Lab, sink: Sink, workdir: Path, dsts: dict[int, list[str]]):
        self.lab, self.sink = lab, sink
        self.dst_files = {}
        for family, addrs in dsts.items():
            path = workdir / f"dsts{family}.txt"
            path.write_text("\n".join(addrs) + "\n")
            self.dst_files[family] = path

    def trial(self, family: int, size: int, rate: float, seconds: float) -> Trial:
        before = self.sink.read()
        b0, t0 = cpu_times(ROUTER_CPU)
        argv = [
            "ip", "netns", "exec", self.lab.ns("gen"), "taskset", "-c", str(GEN_CPU),
            str(TOOLS / "gen"), "--dev", L.GEN_IF, "--src-mac", L.GEN_MAC,
            "--dst-mac", L.DUT_IN_MAC, "--src", L.GEN_V4 if family == 4 else L.GEN_V6,
            "--dsts", str(self.dst_files[family]), "--size", str(size),
            "--rate", str(int(rate)), "--duration", str(seconds),
        ]  # fmt: skip
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
        if proc.returncode != 0:
            raise RuntimeError(f"generator: {proc.stderr.strip() or proc.stdout.strip()}")
        gen = json.loads(proc.stdout)
        time.sleep(0.3)  # frames in flight reach the sink
        b1, t1 = cpu_times(ROUTER_CPU)
        after = self.sink.read()
        h0 = dict((b, c) for b, c in before["hist"])
        hist = {b: c - h0.get(b, 0) for b, c in after["hist"] if c - h0.get(b, 0)}
        return Trial(
            offered=rate, sent=gen["sent"], received=after["pkts"] - before["pkts"],
            seconds=gen["active_seconds"], cpu=(b1 - b0) / max(1, t1 - t0), hist=hist,
        )  # fmt: skip


def zero_loss(traffic: Traffic, family: int, size: int, mode: Mode, log) -> dict:
    """RFC 2544 section 26.1: the highest offered rate with no frame lost. One trial at the
    generator's full speed bounds the search; then `mode.steps` binary-search trials."""
    top = traffic.trial(family, size, 0, mode.trial)
    log(f"    max offered {top.sent_pps / 1e6:.3f} Mpps -> sink {top.fwd_pps / 1e6:.3f} Mpps")
    best: Trial | None = top if top.lost <= 0 else None
    lo, hi = 0.0, top.sent_pps
    if best is None:
        # Start just under what got through: most routers lose nothing a little below it.
        guess = min(hi, top.fwd_pps * 0.95)
        for _ in range(mode.steps):
            t = traffic.trial(family, size, guess, mode.trial)
            ok = t.lost <= 0
            log(f"    {guess / 1e6:.3f} Mpps: lost {t.lost} of {t.sent}{' ok' if ok else ''}")
            if ok:
                best, lo = t, guess
            else:
                hi = guess
            guess = (lo + hi) / 2
    rate = best.sent_pps if best else 0.0
    lat = {}
    if rate > 0:
        half = traffic.trial(family, size, rate / 2, mode.latency_trial)
        lat = {"p50_us": percentile(half.hist, 0.50), "p99_us": percentile(half.hist, 0.99)}
    return {
        "zero_loss_pps": rate,
        "max_fwd_pps": top.fwd_pps,
        "max_offered_pps": top.sent_pps,
        "cpu": best.cpu if best else top.cpu,
        **lat,
    }


# -- routers -------------------------------------------------------------------------------


class Router:
    name = ""

    def __init__(self, lab: L.Lab, table: dict) -> None:
        self.lab, self.table = lab, table
        self.placement: list[str] = []

    def start(self) -> None: ...

    def stop(self) -> None: ...


class KernelRouter(Router):
    """IP forwarding of the dut's kernel, the table as kernel routes (installed once)."""

    name = "kernel"

    def start(self) -> None:
        self.lab.kernel_forwarding(True)
        # GRO on gives dut0 a NAPI context: the generator's XDP_TX needs one on the peer,
        # and threaded NAPI can then be pinned to the router CPU.
        self.lab.exec("dut", ["ethtool", "-K", L.DUT_IN, "gro", "on"])
        self.placement = pin_napi(self.lab, "dut", L.DUT_IN, ROUTER_CPU, realtime=RT)

    def stop(self) -> None:
        self.lab.exec("dut", ["ethtool", "-K", L.DUT_IN, "gro", "off"], check=False)
        self.lab.kernel_forwarding(False)


class XdpFwdRouter(Router):
    """benches/xdp_fwd on both dut ports: bpf_fib_lookup + bpf_redirect over the same
    kernel table (the lookup needs forwarding enabled)."""

    name = "xdp_fwd"

    def start(self) -> None:
        self.lab.kernel_forwarding(True)
        for dev in (L.DUT_IN, L.DUT_OUT):
            self.lab.ip("dut", "link", "set", "dev", dev, "xdpdrv", "obj",
                        str(TOOLS / "xdp_fwd.bpf.o"), "sec", "xdp")  # fmt: skip
        self.placement = pin_napi(self.lab, "dut", L.DUT_IN, ROUTER_CPU, realtime=RT)

    def stop(self) -> None:
        for dev in (L.DUT_IN, L.DUT_OUT):
            self.lab.ip("dut", "link", "set", "dev", dev, "xdpdrv", "off", check=False)
        self.lab.kernel_forwarding(False)


class AfXdpRefRouter(Router):
    """benches/afxdp_ref, copy mode, pinned to the router CPU with dut0's NAPI thread."""

    name = "afxdp_ref"

    def start(self) -> None:
        argv = ["ip", "netns", "exec", self.lab.ns("dut"), "taskset", "-c", str(ROUTER_CPU),
                str(TOOLS / "afxdp_ref"), "--in", L.DUT_IN, "--out", L.DUT_OUT,
                "--src-mac", L.DUT_OUT_MAC, "--dst-mac", L.SINK_MAC, "--mode", "copy",
                "--duration", "3600"]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)  # fmt: skip
        time.sleep(1.0)
        if self.proc.poll() is not None:
            err = self.proc.stderr.read().strip().splitlines() or ["exited"]
            raise RuntimeError(f"afxdp_ref: {err[-1]}")
        self.placement = [f"afxdp_ref->cpu{ROUTER_CPU}"]
        self.placement += pin_napi(self.lab, "dut", L.DUT_IN, ROUTER_CPU, realtime=RT)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            out, _ = self.proc.communicate(timeout=10)
            self.placement.append(f"counters {out.strip()}")
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class CorridorRouter(Router):
    """The engine in this process, the same table through Fib/Batch, `workers` workers."""

    def __init__(self, lab: L.Lab, table: dict, workers: int) -> None:
        super().__init__(lab, table)
        self.workers = workers
        self.name = f"corridor-{workers}"

    def start(self) -> None:
        from corridor import _dataplane as dp

        if not hasattr(dp, "Engine"):
            raise RuntimeError("corridor._dataplane has no Engine (stale extension: make deps)")
        # The lab's veths have two queues; with two workers both are served. One worker
        # serves queue 0 only: a veth refuses fewer rx queues than its peer has tx queues,
        # and the generator, pinned to one CPU, sends everything into queue 0 anyway.
        for dev in (L.DUT_IN, L.DUT_OUT) if self.workers > 1 else ():
            r = self.lab.exec("dut", ["ethtool", "-L", dev, "rx", str(self.workers), "tx",
                                      str(self.workers)], check=False)  # fmt: skip
            if r.returncode != 0:
                raise RuntimeError(f"{dev}: cannot have {self.workers} queues: "
                                   f"{r.stderr.strip()}")  # fmt: skip
        fib = dp.Fib()
        b = dp.Batch()
        b.set_adjacency(1, 1, 0, L.DUT_OUT_MAC, L.SINK_MAC)
        b.set_group(1, [(1, 1)])
        t0 = time.monotonic()
        b.add_routes_text("\n".join(self.table["v4"]), 1)
        b.add_routes_text("\n".join(self.table["v6"]), 1)
        fib.apply(b)
        self.load_seconds = time.monotonic() - t0
        ports = [
            {"name": L.DUT_IN, "queues": self.workers, "mtu": 1500,
             "addresses": {0: [L.DUT_IN_V4, L.DUT_IN_V6]}},
            {"name": L.DUT_OUT, "queues": self.workers, "mtu": 1500,
             "addresses": {0: [L.DUT_OUT_V4, L.DUT_OUT_V6]}},
        ]  # fmt: skip
        before = {int(t.name) for t in Path("/proc/self/task").iterdir()}
        self.engine = dp.Engine(
            fib,
            ports=ports,
            workers=self.workers,
            netns=self.lab.ns("dut"),
            busy_poll=False,
            bind_mode="auto",
        )
        self.engine.start()
        time.sleep(0.5)
        cpus = {ROUTER_CPU} if self.workers == 1 else {GEN_CPU, ROUTER_CPU}
        for t in Path("/proc/self/task").iterdir():
            if int(t.name) not in before:
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(t.name), cpus)
        self.placement = [f"engine threads->cpus{sorted(cpus)}"]
        self.placement += pin_napi(self.lab, "dut", L.DUT_IN, ROUTER_CPU, realtime=RT)

    def stop(self) -> None:
        eng = getattr(self, "engine", None)
        if eng is not None:
            eng.stop()
            self.engine = None


def make_router(name: str, lab: L.Lab, table: dict) -> Router:
    if name == "kernel":
        return KernelRouter(lab, table)
    if name == "xdp_fwd":
        return XdpFwdRouter(lab, table)
    if name == "afxdp_ref":
        return AfXdpRefRouter(lab, table)
    if name.startswith("corridor-"):
        return CorridorRouter(lab, table, int(name.split("-")[1]))
    raise SystemExit(f"router {name!r}: expected one of {', '.join(ROUTERS)}")


# -- report --------------------------------------------------------------------------------


def summarize(rows: list[dict]) -> list[dict]:
    """Median, min and max over repetitions, and Corridor's ratios to kernel and XDP."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["router"], r["family"], r["size"]), []).append(r)
    out = []
    for (router, family, size), rs in groups.items():
        s = {"router": router, "family": family, "size": size, "reps": len(rs)}
        if any("error" in r for r in rs):
            s["error"] = next(r["error"] for r in rs if "error" in r)
            out.append(s)
            continue
        for key in ("zero_loss_pps", "max_fwd_pps", "cpu", "p50_us", "p99_us"):
            vals = [r[key] for r in rs if r.get(key) is not None]
            if vals:
                s[key] = statistics.median(vals)
                s[key + "_min"], s[key + "_max"] = min(vals), max(vals)
        out.append(s)
    by = {(s["router"], s["family"], s["size"]): s for s in out}
    for s in out:
        if s["router"].startswith("corridor") and "zero_loss_pps" in s:
            for ref in ("kernel", "xdp_fwd", "afxdp_ref"):
                r = by.get((ref, s["family"], s["size"]), {})
                if r.get("zero_loss_pps"):
                    s[f"x_{ref}"] = s["zero_loss_pps"] / r["zero_loss_pps"]
    return out


def markdown(summary: list[dict], meta: dict) -> str:
    def mpps(s: dict, key: str) -> str:
        if key not in s:
            return "-"
        if s["reps"] > 1:
            return f"{s[key] / 1e6:.3f} ({s[key + '_min'] / 1e6:.3f}-{s[key + '_max'] / 1e6:.3f})"
        return f"{s[key] / 1e6:.3f}"

    def num(s: dict, key: str, fmt: str) -> str:
        return format(s[key], fmt) if s.get(key) is not None else "-"

    lines = [
        f"Forwarding benchmark, {meta['date']}, mode {meta['mode']}, "
        f"{meta['reps']} repetition(s), trials of {meta['trial_s']} s.",
        f"Machine: {meta['machine']}. Table: {meta['table']}.",
        f"Placement: {meta['placement']}",
        "",
        "| router | family | frame (B) | zero-loss Mpps | max fwd Mpps | router CPU | "
        "p50 µs | p99 µs | x kernel | x xdp_fwd | x afxdp_ref |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        if "error" in s:
            lines.append(
                f"| {s['router']} | IPv{s['family']} | {s['size']} | not measured: "
                f"{s['error']} | | | | | | | |"
            )
            continue
        lines.append(
            f"| {s['router']} | IPv{s['family']} | {s['size']} | {mpps(s, 'zero_loss_pps')} | "
            f"{mpps(s, 'max_fwd_pps')} | {num(s, 'cpu', '.0%')} | {num(s, 'p50_us', '.1f')} | "
            f"{num(s, 'p99_us', '.1f')} | {num(s, 'x_kernel', '.2f')} | "
            f"{num(s, 'x_xdp_fwd', '.2f')} | {num(s, 'x_afxdp_ref', '.2f')} |"
        )
    return "\n".join(lines) + "\n"


def plot(summary: list[dict], path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no PNG: matplotlib is not installed (requirements.txt)"
    cases = sorted({(s["family"], s["size"]) for s in summary})
    routers = [r for r in ROUTERS if any(s["router"] == r for s in summary)]
    by = {(s["router"], s["family"], s["size"]): s for s in summary}
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / max(1, len(routers))
    for i, r in enumerate(routers):
        xs, ys, lo, hi = [], [], [], []
        for j, c in enumerate(cases):
            s = by.get((r, *c), {})
            v = s.get("zero_loss_pps", 0) / 1e6
            xs.append(j + i * width)
            ys.append(v)
            lo.append(v - s.get("zero_loss_pps_min", 0) / 1e6 if v else 0)
            hi.append(s.get("zero_loss_pps_max", 0) / 1e6 - v if v else 0)
        ax.bar(xs, ys, width, label=r, yerr=[lo, hi], capsize=2)
    ax.set_xticks([j + width * (len(routers) - 1) / 2 for j in range(len(cases))])
    ax.set_xticklabels([f"IPv{f} {s} B" for f, s in cases])
    ax.set_ylabel("zero-loss throughput (Mpps)")
    ax.set_title("Corridor and references, same table, same traffic (lab veths)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


# -- main ----------------------------------------------------------------------------------


def build_tools() -> None:
    r = subprocess.run(["make", "-s", "-C", str(ROOT / "benches" / "gen")],
                       capture_output=True, text=True)  # fmt: skip
    if r.returncode != 0:
        raise SystemExit(f"building the benchmark tools failed:\n{r.stderr}")


@contextlib.contextmanager
def bench_lab() -> Iterator[L.Lab]:
    lab = L.Lab(prefix=f"cor-b{os.getpid()}-", queues=2)
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 s trials, 4 steps, 1 repetition")
    ap.add_argument("--routers", default=",".join(ROUTERS))
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    ap.add_argument("--families", default="4,6")
    ap.add_argument("--table-limit", type=int, default=0,
                    help="load only the first N routes of each real table (0: all)")  # fmt: skip
    ap.add_argument("--out", default=str(RESULTS / "forwarding-latest"))
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("the benchmark builds network namespaces: run it as root")
    if len(os.sched_getaffinity(0)) < 2 and os.cpu_count() < 2:
        raise SystemExit("the benchmark needs two CPUs (generator, router)")
    mode = QUICK if args.quick else FULL
    routers = args.routers.split(",")
    sizes = [int(s) for s in args.sizes.split(",")]
    families = [int(f) for f in args.families.split(",")]
    build_tools()

    def log(msg: str) -> None:
        print(msg, flush=True)

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
        "machine": f"{platform.node()}, {os.cpu_count()} CPUs, "
        f"{_cpu_model()}, Linux {platform.release()}",
        "table": f"{len(table['v4'])} IPv4 + {len(table['v6'])} IPv6 routes",
    }
    with bench_lab() as lab, tempfile.TemporaryDirectory(prefix="cor-bench") as tmp:
        secs = install_kernel_table(lab, table["v4"], table["v6"])
        log(f"kernel table installed with ip -batch in {secs:.1f} s")
        sink = Sink(lab)
        try:
            placements["sink"] = pin_napi(lab, "sink", L.SINK_IF, GEN_CPU, realtime=True)
            traffic = Traffic(lab, sink, Path(tmp), {4: d4, 6: d6})
            for rep in range(mode.reps):
                for name in routers:
                    router = make_router(name, lab, table)
                    log(f"[rep {rep + 1}/{mode.reps}] {name}")
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
                        placements[name] = router.placement
                        for f in families:
                            for size in sizes:
                                size = max(size, MIN_SIZE[f])
                                log(f"  IPv{f} {size} B")
                                r = zero_loss(traffic, f, size, mode, log)
                                log(f"  -> zero-loss {r['zero_loss_pps'] / 1e6:.3f} Mpps, "
                                    f"CPU {r['cpu']:.0%}, p50 {r.get('p50_us')} µs, "
                                    f"p99 {r.get('p99_us')} µs")  # fmt: skip
                                rows.append({"router": name, "family": f, "size": size,
                                             "rep": rep, **r})  # fmt: skip
                    finally:
                        router.stop()
        finally:
            sink.close()
    meta["placement"] = "; ".join(f"{k}: {', '.join(v)}" for k, v in placements.items())
    summary = summarize(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    md = markdown(summary, meta)
    out.with_suffix(".md").write_text(md)
    out.with_suffix(".json").write_text(
        json.dumps({"meta": meta, "rows": rows, "summary": summary}, indent=1)
    )
    png = plot(summary, out.with_suffix(".png"))
    print(md)
    print(f"plot: {png}")
    return 0


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


if __name__ == "__main__":
    sys.exit(main())
