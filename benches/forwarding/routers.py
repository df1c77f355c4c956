"""The routers compared, each started and stopped in the dut: the Linux kernel (the table
as kernel routes through nexthop objects), the kernel's XDP fast path (benches/xdp_fwd),
the minimal C AF_XDP forwarder (benches/afxdp_ref), DPDK's l3fwd on the net_af_xdp driver
(benches/dpdk) and Corridor's engine with one or two workers."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from benches.harness import TOOLS
from benches.harness.cpu import RT, pin_napi
from benches.harness.topology import Topology, topology
from corridor import lab as L

# corridor-1m: corridor-1 with exchange members counted (the generator's and the sink's
# routers as members, so every frame takes the member lookup and rx, tx counts).
# corridor-1ms: corridor-1m with sFlow sampling 1:1000 on both ports, the samples drained
# every 100 ms by a thread of this process, as the agent's exporter does.
# corridor-1e: corridor-1m with the edge protection on the generator's port: uRPF strict
# (its sources routed back out of that port), the generator's source filter (BCP 38, 256
# prefixes holding its sources) and port security in XDP (only IP and ARP, only the
# members' MACs). Checked to drop nothing by them, so every frame pays every check.
ROUTERS = (
    "kernel", "xdp_fwd", "afxdp_ref", "afxdp_ref-rt", "l3fwd", "corridor-1", "corridor-1rt",
    "corridor-1m", "corridor-1ms", "corridor-1e", "corridor-2",
)  # fmt: skip
SAMPLE_RATE = 1000
# The "-rt" routers: the forwarding thread SCHED_FIFO at this priority, ahead of the input
# port's NAPI thread on the router CPU (Corridor: the engine's realtime_priority; the C
# forwarder: chrt). Both sleep in poll() when their rx ring is empty, which is when the
# NAPI thread runs: for them that thread is SCHED_FIFO too, one step below, so that nothing
# else on the CPU (kworkers, the router's other threads) holds it off while the forwarding
# thread sleeps, and it can never starve that thread (see benches.forwarding).
RT_PRIORITY = 10
NAPI_RT_PRIORITY = RT_PRIORITY - 5

# The generator's source filter in corridor-1e: its /24 and /64 among 254 other prefixes.
EDGE_SOURCES = (
    ["198.18.0.0/24", "2001:db8::/64"]
    + [f"198.19.{i}.0/24" for i in range(1, 128)]
    + [f"2001:db8:{i:x}::/48" for i in range(1, 128)]
)


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


class Router:
    name = ""
    realtime = False  # the "-rt" routers

    def __init__(self, where: L.Lab | Topology, table: dict) -> None:
        self.t, self.table = topology(where), table
        self.placement: list[str] = []

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def napi(self) -> list[str]:
        """The router's receive NAPI on the router CPU: under CFS (CORRIDOR_BENCH_RT:
        SCHED_FIFO 50, see the module header), for the "-rt" routers SCHED_FIFO below
        their forwarding thread."""
        if self.realtime:
            return pin_napi(self.t, "dut", self.t.dut_in, self.t.router_cpu, realtime=True,
                            priority=NAPI_RT_PRIORITY)  # fmt: skip
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


BUSY = "Device or resource busy"


def retry_while_busy(start: Callable[[], None], attempts: int = 5, wait: float = 1.0) -> None:
    """Runs `start` until it does not fail with EBUSY, at most `attempts` times, `wait`
    seconds apart. An AF_XDP socket binds a queue that the kernel frees only once the last
    user's socket is destroyed, which it defers: a router started right after the same one
    stopped (repetitions taking turns can put two runs back to back) can find the queue
    still held. Any other failure, and the last EBUSY, is raised."""
    for attempt in range(attempts):
        try:
            start()
            return
        except RuntimeError as e:
            if BUSY not in str(e) or attempt == attempts - 1:
                raise
            time.sleep(wait)


class AfXdpRefRouter(Router):
    """benches/afxdp_ref, copy mode, pinned to the router CPU with the input's NAPI;
    `realtime`: SCHED_FIFO there (afxdp_ref-rt)."""

    name = "afxdp_ref"

    def __init__(self, where: L.Lab | Topology, table: dict, realtime: bool = False) -> None:
        super().__init__(where, table)
        self.realtime = realtime
        self.name = "afxdp_ref-rt" if realtime else "afxdp_ref"

    def start(self) -> None:
        retry_while_busy(self._start)

    def _start(self) -> None:
        t = self.t
        t.set_queues(1)
        chrt = ["chrt", "-f", str(RT_PRIORITY)] if self.realtime else []
        argv = t.argv("dut", [
            *chrt, "taskset", "-c", str(t.router_cpu), str(TOOLS / "afxdp_ref"), "--in", t.dut_in,
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
        rt = f" (SCHED_FIFO {RT_PRIORITY})" if self.realtime else ""
        self.placement = [f"afxdp_ref->cpu{t.router_cpu}{rt}", *self.napi()]

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


class L3fwdRouter(Router):
    """DPDK 22.11's l3fwd example (built by benches/dpdk from dpdk-doc's source, table sizes
    raised to hold a full table) on both dut ports through the net_af_xdp driver (copy mode
    on veth: the kernel falls back from zero-copy), one lcore on the router CPU, FIB lookup
    (rte_fib DIR-24-8 and rte_fib6 trie; `--lookup lpm` loads rte_lpm's rule array in
    quadratic time: minutes for the full table). The whole table through l3fwd's route
    files toward port 1, the sink's MAC as port 1's next hop. The driver sets no packet
    type, so l3fwd parses it in software (--parse-ptype), as it requires. EAL without huge
    pages or PCI."""

    name = "l3fwd"
    LOOKUP = "fib"

    def start(self) -> None:
        t = self.t
        t.set_queues(1)
        binary = TOOLS / "l3fwd"
        if not binary.exists():
            raise RuntimeError(f"{binary} missing: make -C benches/dpdk (libdpdk-dev, dpdk-doc)")
        self.dir = Path(tempfile.mkdtemp(prefix="corridor-l3fwd-"))
        r4, r6 = self.dir / "v4.rules", self.dir / "v6.rules"
        r4.write_text("".join(f"R{p} 1\n" for p in self.table["v4"]))
        r6.write_text("".join(f"R{p} 1\n" for p in self.table["v6"]))
        cpu = str(t.router_cpu)
        argv = t.argv("dut", [
            "taskset", "-c", cpu, str(binary), "--no-huge", "--no-pci", "--no-shconf",
            "-m", "2048", "-l", cpu, "--log-level=lib.eal:error",
            "--vdev", f"net_af_xdp0,iface={t.dut_in},start_queue=0,queue_count=1",
            "--vdev", f"net_af_xdp1,iface={t.dut_out},start_queue=0,queue_count=1",
            "--", "-p", "0x3", "--config", f"(0,0,{cpu}),(1,0,{cpu})",
            "--eth-dest", f"1,{t.sink_mac}", "--lookup", self.LOOKUP, "--parse-ptype",
            "--rule_ipv4", str(r4), "--rule_ipv6", str(r6),
        ])  # fmt: skip
        self.log = self.dir / "l3fwd.log"
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        # Loading ~1.2 M routes (and printing a line for each) takes a while on a busy host.
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace").splitlines()[-8:]
                raise RuntimeError(f"l3fwd exited ({self.proc.returncode}): {' | '.join(tail)}")
            if "entering main loop" in self.log.read_text(errors="replace")[-4096:]:
                break
            time.sleep(0.5)
        else:
            raise RuntimeError("l3fwd: no 'entering main loop' within 300 s")
        self.placement = [f"l3fwd (lookup {self.LOOKUP})->cpu{cpu}", *self.napi()]

    def stop(self) -> None:
        proc = getattr(self, "proc", None)
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            self.proc = None
        if getattr(self, "dir", None) is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


class CorridorRouter(Router):
    """The engine in this process, the same table through Fib/Batch, `workers` workers."""

    def __init__(
        self,
        where: L.Lab | Topology,
        table: dict,
        workers: int,
        members: bool = False,
        sampling: bool = False,
        edge: bool = False,
        realtime: bool = False,
    ) -> None:
        super().__init__(where, table)
        self.workers = workers
        self.realtime = realtime
        self.members = members or edge
        self.sampling = sampling
        self.edge = edge
        self.samples = 0
        self._draining = threading.Event()
        self._drain: threading.Thread | None = None
        self.name = (
            f"corridor-{workers}"
            + ("e" if edge else "m" if members else "")
            + ("s" if sampling else "")
            + ("rt" if realtime else "")
        )

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
        if self.members:
            sources = EDGE_SOURCES if self.edge else None
            b.set_member(0, 0, 0, t.gen_mac, sources)  # rx: every frame the generator sends
            b.set_member(1, 1, 0, t.sink_mac)  # tx: through adjacency 1, to the sink
            b.set_member(2, 0, 0, "02:00:5e:00:53:01")  # another MAC on the ingress table
        if self.edge:
            # The generator's sources back out of its port: strict uRPF passes them.
            b.set_adjacency(2, 0, 0, t.dut_in_mac, t.gen_mac)
            b.set_group(2, [(2, 1)])
            b.add_route(f"{L.GEN_V4}/32", 2)
            b.add_route(f"{L.GEN_V6}/128", 2)
        fib.apply(b)
        self.load_seconds = time.monotonic() - t0
        edge = {}
        if self.edge:
            edge = {
                "urpf": {0: {"mode": "strict", "allow_default": False}},
                "edge": {0: {"ethertype_filter": True, "mac_filter": True,
                             "allowed_macs": [t.gen_mac, "02:00:5e:00:53:01"]}},
            }  # fmt: skip
        ports = [
            {"name": t.dut_in, "queues": self.workers, "mtu": 1500,
             "addresses": {0: [L.DUT_IN_V4, L.DUT_IN_V6]}, **edge},
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
            realtime_priority=RT_PRIORITY if self.realtime else None,
        )
        self.engine.start()
        if self.sampling:
            self.engine.set_sample_rates([SAMPLE_RATE, SAMPLE_RATE])
            self._draining.clear()
            self._drain = threading.Thread(target=self._drain_loop, name="sflow-drain")
            self._drain.start()
        time.sleep(0.5)
        cpus = {t.router_cpu} if self.workers == 1 else {t.router_cpu, t.second_cpu}
        for x in Path("/proc/self/task").iterdir():
            if int(x.name) not in before:
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(x.name), cpus)
        rt = f" (workers SCHED_FIFO {RT_PRIORITY})" if self.realtime else ""
        self.placement = [f"engine threads->cpus{sorted(cpus)}{rt}", *self.napi()]

    def _drain_loop(self) -> None:
        while not self._draining.wait(0.1):
            self.samples += len(self.engine.drain_samples())

    def stop(self) -> None:
        eng = getattr(self, "engine", None)
        if eng is not None:
            if self._drain is not None:
                self._draining.set()
                self._drain.join()
                self._drain = None
                self.samples += len(eng.drain_samples())
                if self.samples == 0:
                    raise RuntimeError(f"{self.name}: nothing sampled")
            if self.members:
                m = eng.counters()["members"]
                rx, tx = m.get(0, {}).get("rx_packets", 0), m.get(1, {}).get("tx_packets", 0)
                # The run is only a comparison if the members were counted.
                if rx == 0 or tx == 0:
                    raise RuntimeError(f"{self.name}: members not counted (rx {rx}, tx {tx})")
            if self.edge:
                c = eng.counters()
                checked = {r: c["drops"].get(r, 0) for r in ("urpf_strict", "member_source")}
                refused = sum(sum(r.values()) for r in c["edge"].values())
                # Only a comparison if the checks passed every frame they judged.
                if any(checked.values()) or refused:
                    raise RuntimeError(f"{self.name}: edge drops {checked}, XDP {refused}")
                if not eng.edge():
                    raise RuntimeError(f"{self.name}: no edge filter in force")
            self.placement.append(f"counters {json.dumps(engine_counters(eng.counters()))}")
            eng.stop()
            self.engine = None


def engine_counters(c: dict) -> dict:
    """The engine's own account of its life, as afxdp_ref prints its own: the kernel's
    counters of its sockets (XDP_STATISTICS, summed: rx ring full, fill ring empty), frames
    dropped for a full tx ring, and the workers' passes over their rings."""
    out = {"rx": sum(w["rx_packets"] for w in c["workers"]),
           "tx": sum(w["tx_packets"] for w in c["workers"]),
           "tx_ring_full": c["tx_ring_full"],
           "passes": sum(w["passes"] for w in c["workers"])}  # fmt: skip
    for key in ("rx_dropped", "rx_ring_full", "rx_fill_ring_empty_descs", "tx_ring_empty_descs"):
        out[key] = sum(s["statistics"][key] for s in c["xsk"])
    return out


def make_router(name: str, where: L.Lab | Topology, table: dict) -> Router:
    if name == "kernel":
        return KernelRouter(where, table)
    if name == "xdp_fwd":
        return XdpFwdRouter(where, table)
    if name == "afxdp_ref":
        return AfXdpRefRouter(where, table)
    if name == "afxdp_ref-rt":
        return AfXdpRefRouter(where, table, realtime=True)
    if name == "l3fwd":
        return L3fwdRouter(where, table)
    if name == "corridor-1m":
        return CorridorRouter(where, table, 1, members=True)
    if name == "corridor-1ms":
        return CorridorRouter(where, table, 1, members=True, sampling=True)
    if name == "corridor-1e":
        return CorridorRouter(where, table, 1, edge=True)
    if name == "corridor-1rt":
        return CorridorRouter(where, table, 1, realtime=True)
    if name.startswith("corridor-"):
        return CorridorRouter(where, table, int(name.split("-")[1]))
    raise SystemExit(f"router {name!r}: expected one of {', '.join(ROUTERS)}")
