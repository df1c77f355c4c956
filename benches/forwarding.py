"""The side-by-side forwarding benchmark (issue 6): in one run, the same traffic through the
same table in the lab's dut, forwarded by the Linux kernel, by the kernel's XDP fast path
(benches/xdp_fwd), by a minimal AF_XDP forwarder in C (benches/afxdp_ref, the ceiling of the
method) and by Corridor with one worker, then two. Per router, frame size and family: the
no-drop rate (NDR, RFC 2544 section 26.1) and the partial-drop rate (PDR, loss <= 0.5 %),
each by binary search over the offered rate, the rate counted at the sink with the
generator flat out, latency p50/p99 at half the NDR, and the router CPU's busy share.

    .venv/bin/python benches/forwarding.py [--quick] [--routers kernel,xdp_fwd,...]
        [--sizes 64,512,1518] [--families 4,6] [--reps N] [--trial S] [--profile]
        [--hosts gen=HOST,sink=HOST [--remote 'ssh root@{host}']]

As root. Traffic exists only in the namespaces `cor-b<pid>-gen|dut|sink` (removed at the
end, also on failure), only toward 198.18.0.0/15 and 2001:db8::/32, every trial bounded in
time. With --hosts the generator and the sink are other machines (the test VMs, see
vagrant/) and this one is the router. Output: benches/results/forwarding-latest.{md,json,png}.

CPU placement (2 cores here): the generator (BPF_PROG_RUN in its own thread), the sink's
NAPI thread and this harness share CPU 0; everything of the router (the threaded NAPI of
its input port and its user-space workers) runs on CPU 1. The sink's NAPI thread is
SCHED_FIFO: it is measuring apparatus, and under CFS the busy generator made its ring
overflow. The router's NAPI thread stays SCHED_OTHER like ksoftirqd: a real-time NAPI
thread starves an AF_XDP router's own worker on the same CPU under overload (Corridor and
the C forwarder fell to 0.03-0.2 Mpps), which no deployment would do;
CORRIDOR_BENCH_RT=1 makes it real-time for comparison. With two Corridor workers the second
shares CPU 0 with the generator, and the generator, on one CPU, fills only queue 0 of a
veth: that row measures the cost of a second worker here, not scaling.
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
import shutil
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
RT = bool(int(os.environ.get("CORRIDOR_BENCH_RT", "0")))
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
    steps: int  # binary-search trials per criterion (NDR, PDR) at most
    reps: int
    latency_trial: float


FULL = Mode(trial=10.0, steps=4, reps=3, latency_trial=10.0)
QUICK = Mode(trial=2.0, steps=4, reps=1, latency_trial=2.0)
# The partial drop rate's loss tolerance, FD.io CSIT's PDR convention. NDR (no loss at all)
# is RFC 2544's throughput; on a shared VM a vCPU stalled by the host for a millisecond
# overflows a 256-frame veth ring at any rate, so NDR measures the host as much as the
# router, and PDR is given beside it.
PDR_LOSS = 0.005
# A search stops once its bounds are this close (relative): finer is below the noise.
PRECISION = 0.03


# -- where the roles run --------------------------------------------------------------------


class Topology:
    """Where the generator, the router (dut) and the sink run, and their ports. Two kinds:
    the lab (three namespaces of this machine, `Topology.lab`) and three hosts (the test
    VMs, `Topology.hosts`: this machine is the router, generator and sink are reached by
    a command prefix, ssh by default). Both use the lab's addressing plan (the Vagrantfile
    gives the VMs the same addresses), so everything else in the benchmark is the same
    code on both."""

    def __init__(self, kind: str, run: dict[str, list[str]], netns: str | None) -> None:
        self.kind, self.run, self.netns = kind, run, netns
        self.gen_if = self.dut_in = self.dut_out = self.sink_if = ""
        self.gen_mac = self.dut_in_mac = self.dut_out_mac = self.sink_mac = ""
        self.gen_cpu, self.router_cpu, self.sink_cpu = 0, 1, 0
        # With two workers, the second one's CPU (the generator's, in the 2-CPU lab).
        self.second_cpu = 0

    @classmethod
    def lab(cls, lab: L.Lab) -> Topology:
        t = cls("lab", {r: ["ip", "netns", "exec", lab.ns(r)] for r in L.ROLES}, lab.ns("dut"))
        t.gen_if, t.dut_in, t.dut_out, t.sink_if = L.GEN_IF, L.DUT_IN, L.DUT_OUT, L.SINK_IF
        t.gen_mac, t.dut_in_mac, t.dut_out_mac, t.sink_mac = (
            L.GEN_MAC, L.DUT_IN_MAC, L.DUT_OUT_MAC, L.SINK_MAC)  # fmt: skip
        return t

    @classmethod
    def hosts(cls, gen: str, sink: str, remote: str) -> Topology:
        """`gen` and `sink` are host names put into the `remote` template ({host}); the
        ports are found by the lab plan's addresses on each host."""
        run = {"gen": [*remote.format(host=gen).split()], "dut": [],
               "sink": [*remote.format(host=sink).split()]}  # fmt: skip
        t = cls("hosts", run, None)
        t.gen_if, t.gen_mac = t.port_with("gen", L.GEN_V4)
        t.dut_in, t.dut_in_mac = t.port_with("dut", L.DUT_IN_V4)
        t.dut_out, t.dut_out_mac = t.port_with("dut", L.DUT_OUT_V4)
        t.sink_if, t.sink_mac = t.port_with("sink", L.SINK_V4)
        cpus = sorted(os.sched_getaffinity(0))
        t.router_cpu = cpus[1] if len(cpus) > 1 else cpus[0]
        t.second_cpu = cpus[2] if len(cpus) > 2 else cpus[0]
        return t

    def argv(self, role: str, argv: list[str]) -> list[str]:
        return [*self.run[role], *argv]

    def exec(self, role: str, argv: list[str], *, check: bool = True, timeout: float = 60,
             input: str | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
        proc = subprocess.run(self.argv(role, argv), capture_output=True, text=True,
                              timeout=timeout, input=input)  # fmt: skip
        if check and proc.returncode != 0:
            raise RuntimeError(f"{role}: {' '.join(argv)}: {proc.stderr.strip()}")
        return proc

    def ip(self, role: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.exec(role, ["ip", *args], check=check)

    def kernel_forwarding(self, on: bool) -> None:
        for key in ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"):
            self.exec("dut", ["sysctl", "-q", "-w", f"{key}={int(on)}"])

    def port_with(self, role: str, address: str) -> tuple[str, str]:
        """(device, MAC) of the port of `role` that holds `address`."""
        out = self.exec(role, ["ip", "-j", "addr", "show"], timeout=30).stdout
        for link in json.loads(out):
            if any(a.get("local") == address for a in link.get("addr_info", [])):
                return link["ifname"], link["address"]
        raise SystemExit(f"{role}: no port holds {address} (the lab's addressing plan; "
                         "vagrant/provision.sh sets it on the VMs)")  # fmt: skip

    def set_queues(self, n: int) -> None:
        """The router's ports with `n` queues, so that `n` workers (or one reference on
        queue 0) see all traffic. A veth refuses fewer rx queues than its peer has tx
        queues, and the lab's generator sends on queue 0 anyway, so the lab changes only
        upward; a VM's virtio NIC spreads flows over its queues and is set exactly."""
        for dev in (self.dut_in, self.dut_out):
            if self.kind == "lab" and n == 1:
                continue
            now = self.exec("dut", ["ethtool", "-l", dev], check=False).stdout
            current = now.split("Current hardware settings:")[-1]
            counts = {k.strip(): v.strip() for k, _, v in
                      (line.partition(":") for line in current.splitlines()) if v}  # fmt: skip
            if str(n) in (counts.get("Combined"), counts.get("RX")):
                continue
            errors = []
            for how in (["combined", str(n)], ["rx", str(n), "tx", str(n)]):
                r = self.exec("dut", ["ethtool", "-L", dev, *how], check=False)
                if r.returncode == 0:
                    break
                errors.append(r.stderr.strip())
            else:
                raise RuntimeError(f"{dev}: cannot have {n} queues: {'; '.join(errors)}")


def topology(where: L.Lab | Topology) -> Topology:
    return where if isinstance(where, Topology) else Topology.lab(where)


# -- the table -----------------------------------------------------------------------------


def test_routes(seed: int = 6) -> tuple[list[str], list[str], list[str], list[str]]:
    """Routes inside the test space over every length /16-/32 and /33-/128 (under the
    covering 198.19.0.0/16 and 2001:db8:8000::/33, where no lab link is), and for each route
    one destination whose longest match it is, so the traffic's lookups end at every
    depth. Destinations covered by a longer route are re-drawn; a route whose whole space
    longer routes cover gets none."""
    rnd = random.Random(seed)
    nets4 = {ROUTES4_IN}
    base4 = int(ROUTES4_IN.network_address)
    # Few routes at the short lengths, or the longer ones would cover them whole.
    for length in range(17, 33):
        for _ in range(min(48, max(1, 2 ** (length - 16) // 4))):
            nets4.add(ipaddress.ip_network((base4 | rnd.getrandbits(16), length), strict=False))
    nets6 = {ROUTES6_IN}
    base6 = int(ROUTES6_IN.network_address)
    for length in range(34, 129):
        for _ in range(min(8, max(1, 2 ** (length - 33) // 4))):
            nets6.add(ipaddress.ip_network((base6 | rnd.getrandbits(95), length), strict=False))

    def destinations(nets: set) -> list[str]:
        by_len: dict[int, set[int]] = {}
        for n in nets:
            by_len.setdefault(n.prefixlen, set()).add(int(n.network_address))
        bits = nets and next(iter(nets)).max_prefixlen

        def longest(addr: int) -> int:
            for length in sorted(by_len, reverse=True):
                if (addr >> (bits - length) << (bits - length)) in by_len[length]:
                    return length
            return -1

        out = []
        for n in sorted(nets, key=lambda n: (n.prefixlen, int(n.network_address))):
            base, size = int(n.network_address), n.num_addresses
            for _ in range(256):
                host = base + rnd.randrange(min(size, 1 << 64))
                if longest(host) == n.prefixlen:
                    out.append(str(ipaddress.ip_address(host)))
                    break
        return out

    d4, d6 = destinations(nets4), destinations(nets6)
    assert all(ipaddress.ip_address(d) in TEST4 for d in d4)
    assert all(ipaddress.ip_address(d) in TEST6 for d in d6)
    assert len(set(d4)) == len(d4) and len(set(d6)) == len(d6)
    r4 = [str(n) for n in sorted(nets4, key=lambda n: (int(n.network_address), n.prefixlen))]
    r6 = [str(n) for n in sorted(nets6, key=lambda n: (int(n.network_address), n.prefixlen))]
    return r4, d4, r6, d6


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


def permanent_neighbours(where: L.Lab | Topology) -> None:
    """The generator and the sink as permanent neighbours of the dut, so no router (and no
    trial) waits on ARP or Neighbor Discovery."""
    t = topology(where)
    for dev, addr, mac in (
        (t.dut_out, L.SINK_V4, t.sink_mac),
        (t.dut_out, L.SINK_V6, t.sink_mac),
        (t.dut_in, L.GEN_V4, t.gen_mac),
        (t.dut_in, L.GEN_V6, t.gen_mac),
    ):
        t.ip("dut", "neigh", "replace", addr, "lladdr", mac, "dev", dev, "nud", "permanent")


def install_kernel_table(where: L.Lab | Topology, v4: list[str], v6: list[str]) -> float:
    """Every route through a nexthop object toward the sink, with `ip -batch`; returns
    the seconds it took. Neighbours are permanent so no router waits on ARP/ND."""
    t = topology(where)
    t0 = time.monotonic()
    t.ip("dut", "route", "del", L.TRANSIT4, check=False)
    t.ip("dut", "route", "del", L.TRANSIT6, check=False)
    permanent_neighbours(t)
    with tempfile.NamedTemporaryFile("w", suffix=".batch", delete=False) as f:
        f.write(f"nexthop replace id 1 via {L.SINK_V4} dev {t.dut_out}\n")
        f.write(f"nexthop replace id 2 via {L.SINK_V6} dev {t.dut_out}\n")
        f.writelines(f"route replace {p} nhid 1\n" for p in v4)
        f.writelines(f"route replace {p} nhid 2\n" for p in v6)
        path = f.name
    try:
        t.exec("dut", ["ip", "-batch", path], timeout=1800)
    finally:
        os.unlink(path)
    return time.monotonic() - t0


# -- CPU placement -------------------------------------------------------------------------


# Switches threaded NAPI on for $1 and prints the kthreads that appeared (their names carry
# no namespace), after pinning them to CPU $2 and, if $3 is 1, making them SCHED_FIFO.
# A shell script, so that it runs the same in a namespace here and on a remote host.
PIN_NAPI = r"""
set -e
napi() { for d in /proc/[0-9]*; do c=$(cat $d/comm 2>/dev/null) || continue
         case $c in napi/*) echo ${d#/proc/};; esac; done | sort; }
echo 0 > /sys/class/net/$1/threaded
before=$(napi)
echo 1 > /sys/class/net/$1/threaded
sleep 0.05
for pid in $(napi); do
  case " $(echo $before) " in *" $pid "*) continue;; esac
  taskset -pc $2 $pid >/dev/null
  if [ "$3" = 1 ]; then chrt -f -p 50 $pid; fi
  echo "$(cat /proc/$pid/comm)"
done
"""


def pin_napi(where: L.Lab | Topology, role: str, dev: str, cpu: int,
             realtime: bool = False) -> list[str]:  # fmt: skip
    """Threaded NAPI on `dev`, its kthreads pinned to `cpu`.
    `realtime`: SCHED_FIFO, so the thread runs the moment its ring has frames instead of
    waiting out the time slice of a busy neighbour on the CPU (the sink's, which shares
    CPU 0 with the generator: under CFS its 256-frame ring overflowed at 0.2 Mpps and the
    drops were charged to the router)."""
    r = topology(where).exec(role, ["sh", "-c", PIN_NAPI, "pin-napi", dev, str(cpu),
                                    "1" if realtime else "0"], check=False)  # fmt: skip
    if r.returncode != 0:
        return [f"{dev}: no threaded NAPI ({r.stderr.strip()})"]
    rt = " (SCHED_FIFO)" if realtime else ""
    return [f"{comm}->cpu{cpu}{rt}" for comm in r.stdout.split()]


def pin_process_threads(pid: int, cpus: set[int]) -> None:
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(task.name), cpus)


STALL_PROBE = """
import json, sys, time
end = time.perf_counter_ns() + int(float(sys.argv[1]) * 1e9)
threshold, gaps, last = int(sys.argv[2]) * 1000, [], time.perf_counter_ns()
while last < end:
    now = time.perf_counter_ns()
    if now - last > threshold:
        gaps.append(now - last)
    last = now
print(json.dumps(gaps))
"""


def host_stalls(where: L.Lab | Topology, seconds: float = 5.0, threshold_us: int = 200) -> dict:
    """How long the router CPU goes missing while nothing else runs on it: a loop pinned
    there reads the clock and keeps every gap over `threshold_us` (the hypervisor running
    something else on this vCPU). A gap longer than the router's 256-frame veth ring takes
    to fill at the offered rate (0.64 ms at 0.4 Mpps) loses frames whatever the router, so
    this is the floor under NDR on this machine, measured in the same run."""
    t = topology(where)
    argv = t.argv("dut", ["taskset", "-c", str(t.router_cpu), sys.executable, "-c",
                          STALL_PROBE, str(seconds), str(threshold_us)])  # fmt: skip
    r = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
    if r.returncode != 0:
        return {"error": r.stderr.strip()}
    gaps = json.loads(r.stdout)
    return {
        "seconds": seconds,
        "over_0.2ms": len(gaps),
        "over_1ms": sum(g > 1_000_000 for g in gaps),
        "max_ms": round(max(gaps, default=0) / 1e6, 2),
        "missing_ms": round(sum(gaps) / 1e6, 1),
    }


def describe_stalls(st: dict) -> str:
    if "error" in st:
        return f"not measured ({st['error']})"
    return (f"{st['over_0.2ms']} gaps over 0.2 ms in {st['seconds']:g} s of a busy loop, "
            f"{st['over_1ms']} over 1 ms, longest {st['max_ms']} ms, "
            f"{st['missing_ms']} ms missing in all")  # fmt: skip


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
    """The counting XDP sink on the sink's port, read through the `sink` tool's stdin
    protocol (over the topology's command prefix: a namespace here, ssh to a VM)."""

    def __init__(self, where: L.Lab | Topology, role: str = "sink", dev: str | None = None):
        t = topology(where)
        argv = t.argv(role, [str(TOOLS / "sink"), "--dev", dev or t.sink_if,
                             "--max-seconds", "86400"])  # fmt: skip
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


def refused_by_router(t: Topology) -> int:
    """Frames the router's input port refused, cumulative: on veth, a frame the peer's full
    ring refuses counts as an XDP transmit error of the generator's port."""
    gen = t.exec("gen", ["ethtool", "-S", t.gen_if]).stdout
    return sum(int(line.split(":")[1]) for line in gen.splitlines() if "xdp_xmit_errors" in line)


def link_dropped(t: Topology, role: str, dev: str, way: str) -> int:
    """The kernel's drop counter of `dev` of `role` in direction `way` (rx or tx)."""
    link = json.loads(t.ip(role, "-s", "-j", "link", "show", dev).stdout)
    return link[0]["stats64"][way]["dropped"]


def steal_jiffies() -> int:
    """Jiffies the hypervisor has taken from this machine's CPUs, cumulative."""
    return sum(int(line.split()[8]) for line in Path("/proc/stat").read_text().splitlines()
               if line.startswith("cpu") and not line.startswith("cpu "))  # fmt: skip


class Traffic:
    """Trials of the generator through the dut into the sink."""

    def __init__(self, where: L.Lab | Topology, sink: Sink, workdir: Path | None = None,
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
        b0, t0 = cpu_times(t.router_cpu)
        argv = t.argv("gen", [
            "taskset", "-c", str(t.gen_cpu), str(TOOLS / "gen"), "--dev", t.gen_if,
            "--src-mac", t.gen_mac, "--dst-mac", t.dut_in_mac,
            "--src", L.GEN_V4 if family == 4 else L.GEN_V6, "--dsts", "/dev/stdin",
            "--size", str(size), "--rate", str(int(rate)), "--duration", str(seconds),
        ])  # fmt: skip
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30,
                              input=self.dsts[family])  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"generator: {proc.stderr.strip() or proc.stdout.strip()}")
        gen = json.loads(proc.stdout)
        time.sleep(0.3)  # frames in flight reach the sink
        b1, t1 = cpu_times(t.router_cpu)
        d1 = self.drops()
        after = self.sink.read()
        h0 = dict((b, c) for b, c in before["hist"])
        hist = {b: c - h0.get(b, 0) for b, c in after["hist"] if c - h0.get(b, 0)}
        return Trial(
            offered=rate, sent=gen["sent"], received=after["pkts"] - before["pkts"],
            seconds=gen["active_seconds"], cpu=(b1 - b0) / max(1, t1 - t0), hist=hist,
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


def profile(traffic: Traffic, router: str, out: Path, seconds: float = 5.0) -> str:
    """A perf profile of the router CPU while IPv4 64-byte frames arrive flat out: where
    the router's cycles go (copy into the UMEM, syscalls, lookups, the kernel's stack).
    Software clock sampling: this VM exposes no hardware counters to perf, so cache misses
    are not counted here. Returns the report's path."""
    cpu = traffic.topo.router_cpu
    data = out.with_name(f"{out.name}-profile-{router}.data")
    report = out.with_name(f"{out.name}-profile-{router}.txt")
    argv = ["perf", "record", "-q", "-e", "cpu-clock", "-C", str(cpu), "-g",
            "-o", str(data), "--", "sleep", str(seconds)]  # fmt: skip
    rec = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    t = traffic.trial(4, 64, 0, seconds + 1)
    _, err = rec.communicate(timeout=seconds + 30)
    if rec.returncode != 0:
        return f"perf record failed: {err.strip()}"
    rep = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--no-children",
                          "--sort", "dso,sym", "--percent-limit", "0.5", "-g", "none"],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    head = (f"# {router}: perf record -e cpu-clock -C {cpu} (router CPU) for {seconds} s "
            f"while IPv4 64 B frames arrived at {t.sent_pps / 1e6:.3f} Mpps and "
            f"{t.fwd_pps / 1e6:.3f} Mpps reached the sink\n")  # fmt: skip
    report.write_text(head + rep.stdout)
    data.unlink(missing_ok=True)
    return str(report)


# -- routers -------------------------------------------------------------------------------


class Router:
    name = ""

    def __init__(self, where: L.Lab | Topology, table: dict) -> None:
        self.t, self.table = topology(where), table
        self.placement: list[str] = []

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def napi(self) -> list[str]:
        """The router's receive NAPI on the router CPU (RT: see the module header)."""
        return pin_napi(self.t, "dut", self.t.dut_in, self.t.router_cpu, realtime=RT)


class KernelRouter(Router):
    """IP forwarding of the dut's kernel, the table as kernel routes (installed once)."""

    name = "kernel"

    def start(self) -> None:
        self.t.set_queues(1)
        self.t.kernel_forwarding(True)
        # GRO on gives a veth a NAPI context: the generator's XDP_TX needs one on the peer,
        # and threaded NAPI can then be pinned to the router CPU.
        self.t.exec("dut", ["ethtool", "-K", self.t.dut_in, "gro", "on"])
        self.placement = self.napi()

    def stop(self) -> None:
        self.t.exec("dut", ["ethtool", "-K", self.t.dut_in, "gro", "off"], check=False)
        self.t.kernel_forwarding(False)


class XdpFwdRouter(Router):
    """benches/xdp_fwd on both dut ports: bpf_fib_lookup + bpf_redirect over the same
    kernel table (the lookup needs forwarding enabled)."""

    name = "xdp_fwd"

    def start(self) -> None:
        self.t.set_queues(1)
        self.t.kernel_forwarding(True)
        for dev in (self.t.dut_in, self.t.dut_out):
            self.t.ip("dut", "link", "set", "dev", dev, "xdpdrv", "obj",
                      str(TOOLS / "xdp_fwd.bpf.o"), "sec", "xdp")  # fmt: skip
        self.placement = self.napi()

    def stop(self) -> None:
        for dev in (self.t.dut_in, self.t.dut_out):
            self.t.ip("dut", "link", "set", "dev", dev, "xdpdrv", "off", check=False)
        self.t.kernel_forwarding(False)


class AfXdpRefRouter(Router):
    """benches/afxdp_ref, copy mode, pinned to the router CPU with the input's NAPI."""

    name = "afxdp_ref"

    def start(self) -> None:
        t = self.t
        t.set_queues(1)
        argv = t.argv("dut", [
            "taskset", "-c", str(t.router_cpu), str(TOOLS / "afxdp_ref"), "--in", t.dut_in,
            "--out", t.dut_out, "--src-mac", t.dut_out_mac, "--dst-mac", t.sink_mac,
            "--mode", "copy", "--duration", "3600",
        ])  # fmt: skip
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)  # fmt: skip
        time.sleep(1.0)
        if self.proc.poll() is not None:
            # libbpf and libxdp narrate (unknown ELF sections, no bpffs, no dispatcher):
            # the error is what is left.
            noise = ("libbpf: elf: skipping", "libxdp: ")
            err = [line for line in self.proc.stderr.read().splitlines()
                   if line.strip() and not line.startswith(noise)]  # fmt: skip
            raise RuntimeError(f"afxdp_ref exited ({self.proc.returncode}): "
                               f"{'; '.join(err) or 'no message'}")  # fmt: skip
        self.placement = [f"afxdp_ref->cpu{t.router_cpu}", *self.napi()]

    def stop(self) -> None:
        proc = getattr(self, "proc", None)
        if proc is None:
            return
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=10)
            self.placement.append(f"counters {out.strip()}")
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class CorridorRouter(Router):
    """The engine in this process, the same table through Fib/Batch, `workers` workers."""

    def __init__(self, where: L.Lab | Topology, table: dict, workers: int) -> None:
        super().__init__(where, table)
        self.workers = workers
        self.name = f"corridor-{workers}"

    def start(self) -> None:
        from corridor import _dataplane as dp

        if not hasattr(dp, "Engine"):
            raise RuntimeError("corridor._dataplane has no Engine (stale extension: make deps)")
        t = self.t
        t.set_queues(self.workers)
        fib = dp.Fib()
        b = dp.Batch()
        b.set_adjacency(1, 1, 0, t.dut_out_mac, t.sink_mac)
        b.set_group(1, [(1, 1)])
        t0 = time.monotonic()
        b.add_routes_text("\n".join(self.table["v4"]), 1)
        b.add_routes_text("\n".join(self.table["v6"]), 1)
        fib.apply(b)
        self.load_seconds = time.monotonic() - t0
        ports = [
            {"name": t.dut_in, "queues": self.workers, "mtu": 1500,
             "addresses": {0: [L.DUT_IN_V4, L.DUT_IN_V6]}},
            {"name": t.dut_out, "queues": self.workers, "mtu": 1500,
             "addresses": {0: [L.DUT_OUT_V4, L.DUT_OUT_V6]}},
        ]  # fmt: skip
        before = {int(x.name) for x in Path("/proc/self/task").iterdir()}
        self.engine = dp.Engine(
            fib,
            ports=ports,
            workers=self.workers,
            netns=t.netns,
            busy_poll=False,
            bind_mode="auto",
        )
        self.engine.start()
        time.sleep(0.5)
        cpus = {t.router_cpu} if self.workers == 1 else {t.router_cpu, t.second_cpu}
        for x in Path("/proc/self/task").iterdir():
            if int(x.name) not in before:
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(x.name), cpus)
        self.placement = [f"engine threads->cpus{sorted(cpus)}", *self.napi()]

    def stop(self) -> None:
        eng = getattr(self, "engine", None)
        if eng is not None:
            eng.stop()
            self.engine = None


def make_router(name: str, where: L.Lab | Topology, table: dict) -> Router:
    if name == "kernel":
        return KernelRouter(where, table)
    if name == "xdp_fwd":
        return XdpFwdRouter(where, table)
    if name == "afxdp_ref":
        return AfXdpRefRouter(where, table)
    if name.startswith("corridor-"):
        return CorridorRouter(where, table, int(name.split("-")[1]))
    raise SystemExit(f"router {name!r}: expected one of {', '.join(ROUTERS)}")


# -- report --------------------------------------------------------------------------------


METRICS = (("ndr_pps", "NDR"), ("pdr_pps", "PDR"), ("max_fwd_pps", "max fwd"))
REFERENCES = ("kernel", "xdp_fwd", "afxdp_ref")


def summarize(rows: list[dict]) -> list[dict]:
    """Median, min and max over repetitions, and Corridor's ratios to every reference for
    every rate (NDR, PDR, highest forwarded)."""
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
        for key in ("ndr_pps", "pdr_pps", "max_fwd_pps", "cpu", "p50_us", "p99_us"):
            vals = [r[key] for r in rs if r.get(key) is not None]
            if vals:
                s[key] = statistics.median(vals)
                s[key + "_min"], s[key + "_max"] = min(vals), max(vals)
        s["max_lost_at"] = rs[len(rs) // 2].get("max_lost_at", "")
        s["latency_at"] = rs[len(rs) // 2].get("latency_at", "")
        out.append(s)
    by = {(s["router"], s["family"], s["size"]): s for s in out}
    for s in out:
        if not s["router"].startswith("corridor") or "error" in s:
            continue
        for ref in REFERENCES:
            r = by.get((ref, s["family"], s["size"]), {})
            for key, _ in METRICS:
                if r.get(key) and key in s:
                    s[f"x_{ref}_{key}"] = s[key] / r[key]
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

    stalls = []
    if "router_cpu_stalls" in meta:
        stalls = [
            f"Router CPU before the routers ran: {describe_stalls(meta['router_cpu_stalls'])}."
        ]

    lines = [
        f"Forwarding benchmark, {meta['date']}, mode {meta['mode']}, "
        f"{meta['reps']} repetition(s) (median, min-max), trials of {meta['trial_s']} s.",
        f"Machine: {meta['machine']}. Table: {meta['table']}.",
        f"Topology: {meta.get('topology', 'lab')}.",
        f"Placement: {meta['placement']}",
        *stalls,
        "",
        f"NDR: highest rate with no loss (RFC 2544 26.1); PDR: loss at most {PDR_LOSS:.1%}; "
        "max fwd: rate at the sink when the generator runs flat out (with where the rest "
        "was lost). Rates in Mpps, latency at half the NDR.",
        "",
        "| router | family | frame (B) | NDR | PDR | max fwd | lost at (max) | router CPU "
        "| p50 µs | p99 µs |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        if "error" in s:
            lines.append(f"| {s['router']} | IPv{s['family']} | {s['size']} | not measured: "
                         f"{s['error']} | | | | | | |")  # fmt: skip
            continue
        lat = "" if s.get("latency_at", "NDR/2") in ("NDR/2", "") else f" ({s['latency_at']})"
        lines.append(
            f"| {s['router']} | IPv{s['family']} | {s['size']} | {mpps(s, 'ndr_pps')} | "
            f"{mpps(s, 'pdr_pps')} | {mpps(s, 'max_fwd_pps')} | {s.get('max_lost_at', '')} | "
            f"{num(s, 'cpu', '.0%')} | {num(s, 'p50_us', '.1f')}{lat} | "
            f"{num(s, 'p99_us', '.1f')} |"
        )
    corridor = [s for s in summary if s["router"].startswith("corridor") and "error" not in s]
    if corridor:
        lines += ["", "Corridor as a ratio to each reference, same run "
                  "(NDR / PDR / max fwd):", "",
                  "| router | family | frame (B) | x kernel | x xdp_fwd | x afxdp_ref |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for s in corridor:
            cells = []
            for ref in REFERENCES:
                vals = [s.get(f"x_{ref}_{key}") for key, _ in METRICS]
                cells.append(" / ".join("-" if v is None else f"{v:.2f}" for v in vals))
            lines.append(f"| {s['router']} | IPv{s['family']} | {s['size']} | "
                         + " | ".join(cells) + " |")  # fmt: skip
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
        xs, ys, lo, hi, ndr = [], [], [], [], []
        for j, c in enumerate(cases):
            s = by.get((r, *c), {})
            v = s.get("pdr_pps", 0) / 1e6
            xs.append(j + i * width)
            ys.append(v)
            lo.append(v - s.get("pdr_pps_min", 0) / 1e6 if v else 0)
            hi.append(s.get("pdr_pps_max", 0) / 1e6 - v if v else 0)
            ndr.append(s.get("ndr_pps", 0) / 1e6)
        ax.bar(xs, ys, width, label=r, yerr=[lo, hi], capsize=2)
        ax.scatter(xs, ndr, marker="_", color="black", s=120, zorder=3,
                   label="NDR (no loss)" if i == 0 else None)  # fmt: skip
    ax.set_xticks([j + width * (len(routers) - 1) / 2 for j in range(len(cases))])
    ax.set_xticklabels([f"IPv{f} {s} B" for f, s in cases])
    ax.set_ylabel(f"PDR, loss <= {PDR_LOSS:.1%} (Mpps)")
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


def parse_hosts(hosts: str, remote: str) -> dict[str, str]:
    """`--hosts gen=HOST,sink=HOST` as a dict ({} for the lab); SystemExit when malformed."""
    if not hosts:
        return {}
    try:
        named = dict(item.split("=", 1) for item in hosts.split(","))
    except ValueError:
        named = {}
    if set(named) != {"gen", "sink"} or not all(named.values()):
        raise SystemExit(f"--hosts {hosts!r}: expected gen=HOST,sink=HOST")
    if "{host}" not in remote:
        raise SystemExit(f"--remote {remote!r}: must contain {{host}}")
    return named


@contextlib.contextmanager
def bench_topology(hosts: dict[str, str], remote: str) -> Iterator[Topology]:
    """The lab (built here, removed at the end) or, with `hosts`, the three hosts."""
    if not hosts:
        with bench_lab() as lab:
            yield Topology.lab(lab)
        return
    yield Topology.hosts(hosts["gen"], hosts["sink"], remote)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 s trials, 4 steps, 1 repetition")
    ap.add_argument("--routers", default=",".join(ROUTERS))
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    ap.add_argument("--families", default="4,6")
    ap.add_argument("--table-limit", type=int, default=0,
                    help="load only the first N routes of each real table (0: all)")  # fmt: skip
    ap.add_argument("--reps", type=int, help="repetitions (full: 3, quick: 1)")
    ap.add_argument("--trial", type=float, help="seconds per trial (full: 10, quick: 2)")
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
                for name in routers:
                    router = make_router(name, topo, table)
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
                        if args.profile and rep == 0:
                            log(f"  profile: {profile(traffic, name, Path(args.out))}")
                        placements[name] = router.placement
                        for f in families:
                            for size in sizes:
                                size = max(size, MIN_SIZE[f])
                                log(f"  IPv{f} {size} B")
                                r = search(traffic, f, size, mode, log)
                                log(f"  -> NDR {r['ndr_pps'] / 1e6:.3f} Mpps, PDR "
                                    f"{r['pdr_pps'] / 1e6:.3f} Mpps, CPU {r['cpu']:.0%}, "
                                    f"p50 {r.get('p50_us')}, p99 {r.get('p99_us')} µs")  # fmt: skip
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
