"""Behaviour under change: what forwarding does while the control plane rewrites it, through
the real agent (`corridor agent` as a process, written over gRPC on its Unix socket), in the
bench lab plus a second sink (`cor-c<pid>-sinkb`, veth dut2 <-> sinkb0).

  churn     A stable table (a few hundred prefixes /16-/24 in 198.19.0.0/16, toward sink A)
            and, inside the same /24s, more-specific prefixes (/25-/32) cycling through
            "via sink B" -> "via sink A" -> deleted, written at --churn-rate updates/s
            (paced batches). The traffic goes only to stable destinations that no churned
            prefix covers, so the churn rewrites the very trie nodes those lookups walk
            through, yet every frame at sink B is misforwarded. Forwarding at 90 % of the
            zero-loss rate for --seconds, undisturbed and then under churn.
  failover  One group of two members, toward sink A (dut1) and sink B (dut2), N routes on it
            (1 k, then about 1 M: the Routeviews table plus the test routes). Traffic of many
            flows at a modest rate; halfway, sinkb0 goes down, the agent's link watch
            re-points the group, and the frames lost give the loss window: lost / (offered
            pps x B's share) in ms. The loss any trial has (at the input, on this shared VM)
            is counted in the same trial and left out: a separate trial without a failure
            loses thousands or nothing at random. Re-pointing a group is one store whatever
            the number of routes, so the window should be the same at both sizes.

Every trial says where its frames were lost, from the kernel's counters (dut0 refusing the
generator's frames, dut1 / dut2 failing to transmit) and the agent's (the worker's AF_XDP
rx ring full), so a loss is not charged to the change when the input lost it.

    .venv/bin/python -m benches.change [--quick] [--scenarios churn,failover]

As root. Traffic exists only in namespaces `cor-c<pid>-*` (removed at the end, also on
failure or Ctrl-C), only toward 198.19.0.0/16 inside the test space 198.18.0.0/15, every
trial bounded in time and every writer in batches. Output: a Markdown table, and
benches/results/change-latest.{md,json} (--out). IPv4 only: the churn and the failover do
not depend on the family, and the generator sends one family per trial.

Placement (2 cores): as benches.forwarding places corridor-1, the engine's threads and dut0's
NAPI thread (SCHED_OTHER, as benches.forwarding explains) on CPU 1, the generator and both
sinks' NAPI threads (SCHED_FIFO: apparatus) on CPU 0. The agent's own threads (event loop,
executor: where written batches are decoded and applied) and the churn writer run on
--control-cpu, CPU 0 by default: a router keeps its control plane off its forwarding cores,
and CPU 1 has no room to spare at 90 % of its zero-loss rate.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import ipaddress
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc

from benches.harness import RESULTS, results
from benches.harness.agent import ELECTION, agent_config, launch_agent, route_requests, stop_agent
from benches.harness.cpu import (
    GEN_CPU,
    ROUTER_CPU,
    RT,
    busy_share,
    cpu_times,
    machine,
    pin_napi,
    steal_jiffies,
)
from benches.harness.tables import ROUTES4_IN, TABLE4, real_table, test_routes
from benches.harness.topology import Topology
from benches.harness.traffic import (
    PDR_LOSS,
    Sink,
    build_tools,
    generate,
    link_dropped,
    refused_by_router,
)
from corridor import lab as L
from corridor.agent import client as c
from corridor.v1 import dataplane_pb2, dataplane_pb2_grpc

SIZE = 64  # wire bytes: the most lookups per second

# The second sink: the dut's third port, its peer in a namespace of its own.
SINKB_ROLE = "sinkb"
DUT_B, SINKB_IF = "dut2", "sinkb0"
DUT_B_MAC, SINKB_MAC = "02:c0:00:00:03:01", "02:c0:00:00:03:02"
DUT_B_V4, DUT_B_V6 = "198.18.3.1", "2001:db8:3::1"
SINKB_V4, SINKB_V6 = "198.18.3.2", "2001:db8:3::2"

# Next hops: adjacency 1 toward sink A, 2 toward sink B. Churn: group 1 = A, group 2 = B.
# Failover: group 1 = both (route_requests writes its routes to group 1).
ADJ_A, ADJ_B = 1, 2
GROUP_A, GROUP_B = 1, 2

# The agent's tables: room for the failover's largest table (the Routeviews table and the
# test routes).
FIB = {"v4_routes": 1_100_000, "v6_routes": 10_000, "groups": 1024, "adjacencies": 1024}


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


def log(msg: str) -> None:
    print(msg, flush=True)


# -- the second sink -----------------------------------------------------------------------


class SinkB:
    """`{prefix}sinkb` and the veth dut2 (in the dut) <-> sinkb0, built as the lab builds its
    links (198.18.3.0/24, 2001:db8:3::/64, offloads off); removed by down()."""

    def __init__(self, lab: L.Lab) -> None:
        self.lab = lab
        self.ns = lab.prefix + SINKB_ROLE

    def up(self) -> SinkB:
        self.down()
        L.command(["ip", "netns", "add", self.ns])
        try:
            lab = self.lab
            lab.ip(self.ns, "link", "set", "lo", "up")
            for key, value in (
                ("net.ipv6.conf.all.accept_dad", 0),
                ("net.ipv6.conf.default.accept_dad", 0),
                ("net.ipv6.conf.all.accept_ra", 0),
                ("net.ipv6.conf.default.accept_ra", 0),
                # The failover takes sinkb0 down: keep its IPv6 address through it.
                ("net.ipv6.conf.all.keep_addr_on_down", 1),
                ("net.ipv4.conf.all.rp_filter", 0),
                ("net.ipv4.conf.default.rp_filter", 0),
            ):
                lab.sysctl(self.ns, key, value)
            lab.ip("dut", "link", "add", DUT_B, "address", DUT_B_MAC,
                   "numtxqueues", str(lab.queues), "numrxqueues", str(lab.queues), "type", "veth",
                   "peer", "name", SINKB_IF, "address", SINKB_MAC, "netns", self.ns,
                   "numtxqueues", str(lab.queues), "numrxqueues", str(lab.queues))  # fmt: skip
            for ns, dev, a4, a6 in (("dut", DUT_B, DUT_B_V4, DUT_B_V6),
                                    (self.ns, SINKB_IF, SINKB_V4, SINKB_V6)):  # fmt: skip
                lab.exec(ns, ["ethtool", "-K", dev, *L.OFFLOADS])
                lab.ip(ns, "link", "set", dev, "up")
                lab.ip(ns, "addr", "add", f"{a4}/24", "dev", dev)
                lab.ip(ns, "-6", "addr", "add", f"{a6}/64", "dev", dev, "nodad")
        except BaseException:
            self.down()
            raise
        return self

    def link(self, up: bool) -> None:
        self.lab.ip(self.ns, "link", "set", SINKB_IF, "up" if up else "down")

    def down(self) -> None:
        if Path("/var/run/netns", self.ns).exists():
            L.command(["ip", "netns", "del", self.ns], check=False)

    def topology(self) -> Topology:
        """forwarding's view of the lab with this namespace as one more role, for its Sink
        and pin_napi."""
        t = Topology.lab(self.lab)
        t.run[SINKB_ROLE] = ["ip", "netns", "exec", self.ns]
        return t


# -- traffic -------------------------------------------------------------------------------


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


# -- the agent -----------------------------------------------------------------------------


class Agent:
    """`corridor agent` as a process on the dut's three ports, and a client of its socket."""

    def __init__(self, lab: L.Lab, workdir: Path, control_cpu: int) -> None:
        self.lab, self.workdir, self.control_cpu = lab, workdir, control_cpu
        self.sock = workdir / "agent.sock"
        self.log_path = workdir / "agent.log"
        self.process: subprocess.Popen | None = None
        self.channel: grpc.Channel | None = None
        self.placement: list[str] = []
        self.napi: list[str] = []

    def start(self) -> Agent:
        config = self.workdir / "agent.toml"
        ports = {L.DUT_IN: [f"{L.DUT_IN_V4}/24", f"{L.DUT_IN_V6}/64"],
                 L.DUT_OUT: [f"{L.DUT_OUT_V4}/24", f"{L.DUT_OUT_V6}/64"],
                 DUT_B: [f"{DUT_B_V4}/24", f"{DUT_B_V6}/64"]}  # fmt: skip
        config.write_text(agent_config(self.lab.ns("dut"), self.sock, FIB, ports))
        with self.log_path.open("w") as err:
            # A session of its own: Ctrl-C reaches this process, which stops the agent itself.
            self.process = launch_agent(config, err, new_session=True)
        self.channel = grpc.insecure_channel(f"unix:{self.sock}")
        self.stub = dataplane_pb2_grpc.DataplaneStub(self.channel)
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the agent exited ({self.process.returncode}): {self.tail()}")
            with contextlib.suppress(grpc.RpcError):
                self.stub.ListPorts(dataplane_pb2.ListPortsRequest(), timeout=1)
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the agent did not serve within 60 s: {self.tail()}")
            time.sleep(0.1)
        self.napi = pin_napi(self.lab, "dut", L.DUT_IN, ROUTER_CPU, realtime=RT)
        self.place()
        return self

    def place(self) -> None:
        """The engine's threads (worker, supervisor) on the router CPU, the rest of the agent
        on the control CPU. Called again before each trial: the executor grows lazily."""
        engine = 0
        for task in Path(f"/proc/{self.process.pid}/task").iterdir():
            with contextlib.suppress(OSError):
                comm = (task / "comm").read_text().strip()
                is_engine = comm.startswith(("corridor-w", "corridor-superv"))
                engine += is_engine
                cpus = {ROUTER_CPU} if is_engine else {self.control_cpu}
                os.sched_setaffinity(int(task.name), cpus)
        self.placement = [f"engine threads ({engine})->cpu{ROUTER_CPU}",
                          f"agent's other threads->cpu{self.control_cpu}", *self.napi]  # fmt: skip

    def write(self, operations: list[dataplane_pb2.Operation], batch: int = 10_000) -> int:
        """Writes `operations` in Write calls of at most `batch`; returns those applied."""
        applied = 0
        for start in range(0, len(operations), batch):
            request = c.write_request(ELECTION, operations[start : start + batch])
            applied += self.stub.Write(request, timeout=60).operations
        return applied

    def stream(self, requests: list[dataplane_pb2.WriteRequest]) -> int:
        """StreamWrite of prepared batches; returns the operations acknowledged."""
        return sum(r.operations for r in self.stub.StreamWrite(iter(requests), timeout=900))

    def counters(self) -> dataplane_pb2.Counters:
        return self.stub.GetCounters(dataplane_pb2.GetCountersRequest(), timeout=5)

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text()[-2000:].strip()
        return ""

    def stop(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.process is not None:
            stop_agent(self.process)  # SIGTERM, then SIGKILL after 30 s
            code, self.process = self.process.returncode, None
            if code != 0:
                log(f"  the agent exited with {code}: {self.tail()}")


@contextlib.contextmanager
def running_agent(lab: L.Lab, control_cpu: int) -> Iterator[Agent]:
    with tempfile.TemporaryDirectory(prefix="cor-change-") as d:
        agent = Agent(lab, Path(d), control_cpu)
        try:
            yield agent.start()
        finally:
            agent.stop()


def next_hops(failover: bool) -> list[dataplane_pb2.Operation]:
    ops = [c.set_adjacency(ADJ_A, L.DUT_OUT, 0, L.DUT_OUT_MAC, L.SINK_MAC),
           c.set_adjacency(ADJ_B, DUT_B, 0, DUT_B_MAC, SINKB_MAC)]  # fmt: skip
    if failover:
        return [*ops, c.set_group(GROUP_A, [(ADJ_A, 1), (ADJ_B, 1)])]
    return [*ops, c.set_group(GROUP_A, [(ADJ_A, 1)]), c.set_group(GROUP_B, [(ADJ_B, 1)])]


# -- churn ---------------------------------------------------------------------------------


@dataclasses.dataclass
class ChurnTable:
    stable: list[str]  # via group A, never touched
    churned: list[str]  # more-specifics inside the stable /24s
    dsts: list[str]  # in the stable /24s, covered by no churned prefix


def churn_table(seed: int = 9, n24: int = 192, per24: int = 16, dsts_per24: int = 3) -> ChurnTable:
    """The stable prefixes (198.19.0.0/16, 16 each of /17-/23, `n24` /24s) and, in every
    stable /24, `dsts_per24` destinations and `per24` prefixes /25-/32 that avoid them."""
    rnd = random.Random(seed)
    base = ROUTES4_IN
    stable = {base}
    for length in range(17, 24):
        for _ in range(16):
            stable.add(ipaddress.ip_network((int(base.network_address) | rnd.getrandbits(16),
                                             length), strict=False))  # fmt: skip
    slash24 = rnd.sample(list(base.subnets(new_prefix=24)), n24)
    stable.update(slash24)
    churned: list[ipaddress.IPv4Network] = []
    dsts: list[str] = []
    for net in slash24:
        first = int(net.network_address)
        hosts = [ipaddress.ip_address(first + h) for h in rnd.sample(range(1, 255), dsts_per24)]
        dsts += map(str, hosts)
        mine: set[ipaddress.IPv4Network] = set()
        for _ in range(per24 * 50):  # bounded: the /24 has room for far more
            if len(mine) == per24:
                break
            length = rnd.randrange(25, 33)
            p = ipaddress.ip_network((first | rnd.getrandbits(8), length), strict=False)
            if not any(h in p for h in hosts):
                mine.add(p)
        churned += sorted(mine)
    for d in dsts:
        assert ipaddress.ip_address(d) in ROUTES4_IN
    return ChurnTable(sorted(map(str, stable)), list(map(str, churned)), dsts)


def churn_states(prefixes: list[str]) -> list[int]:
    """Start states (0 absent, 1 via sink B, 2 via sink A), one per /24: all of a /24's
    prefixes move together, so its trie node is made when they come and collapsed when
    they go, under the stable lookups through it; the /24s are staggered, so that every
    batch sets, re-points and deletes."""
    return [(int(ipaddress.ip_network(p).network_address) >> 8) % 3 for p in prefixes]


def churn_requests(prefixes: list[str], batches: int, batch: int) -> list:
    """`batches` WriteRequests of `batch` operations, each moving the next prefixes (in a
    round) one state on: absent -> via B -> via A -> absent."""
    ops = [(c.delete_route(p), c.set_route(p, GROUP_B), c.set_route(p, GROUP_A))
           for p in prefixes]  # fmt: skip
    state = churn_states(prefixes)
    out, i = [], 0
    for _ in range(batches):
        request = c.write_request(ELECTION, [])
        for _ in range(batch):
            k = i % len(prefixes)
            state[k] = (state[k] + 1) % 3
            request.operations.append(ops[k][state[k]])
            i += 1
        out.append(request)
    return out


class ChurnWriter(threading.Thread):
    """Writes prepared batches over Write, one every `interval` seconds from the start (late
    batches go at once, none is skipped), until stopped or out of batches. Pinned to `cpu`."""

    def __init__(self, sock: Path, requests: list, interval: float, cpu: int) -> None:
        super().__init__(name="churn-writer", daemon=True)
        self.sock, self.requests, self.interval, self.cpu = sock, requests, interval, cpu
        self._halt = threading.Event()
        self.acks: list[tuple[float, int]] = []  # (time.monotonic() of the ack, operations)
        self.latencies: list[float] = []
        self.late = 0.0  # the most a batch went out behind its schedule
        self.error: str | None = None
        self.exhausted = False
        self.started_at = self.stopped_at = 0.0

    def run(self) -> None:
        os.sched_setaffinity(0, {self.cpu})
        with grpc.insecure_channel(f"unix:{self.sock}") as channel:
            stub = dataplane_pb2_grpc.DataplaneStub(channel)
            self.started_at = t0 = time.monotonic()
            try:
                for k, request in enumerate(self.requests):
                    wait = t0 + k * self.interval - time.monotonic()
                    if self._halt.wait(max(0.0, wait)):
                        break
                    request.batch_id = k + 1
                    sent = time.monotonic()
                    self.late = max(self.late, -wait)
                    reply = stub.Write(request, timeout=10)
                    now = time.monotonic()
                    self.latencies.append(now - sent)
                    self.acks.append((now, reply.operations))
                else:
                    self.exhausted = True
            except grpc.RpcError as e:
                self.error = f"{e.code().name}: {e.details()}"
            self.stopped_at = time.monotonic()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=30)

    def rate(self, start: float, end: float) -> float:
        """Operations acknowledged per second between `start` and `end` (monotonic)."""
        return sum(n for t, n in self.acks if start <= t <= end) / max(1e-9, end - start)


def run_churn(lab: L.Lab, topo: Topology, sinks: tuple[Sink, Sink], tmp: Path, mode: Mode,
              args) -> dict:  # fmt: skip
    table = churn_table()
    if args.churn_batch > len(table.churned):
        raise SystemExit(f"--churn-batch {args.churn_batch}: at most {len(table.churned)} (the "
                         "churned prefixes), so that no batch holds a prefix twice")  # fmt: skip
    log(f"churn: {len(table.stable)} stable prefixes, {len(table.churned)} churned "
        f"(/25-/32 in {len({p.rsplit('.', 1)[0] for p in table.churned})} of the stable /24s),"
        f" {len(table.dsts)} destinations")  # fmt: skip
    dsts = tmp / "churn-dsts.txt"
    dsts.write_text("\n".join(table.dsts) + "\n")
    batches = math.ceil((mode.seconds + 10) * args.churn_rate / args.churn_batch)
    requests = churn_requests(table.churned, batches, args.churn_batch)
    with running_agent(lab, args.control_cpu) as agent:
        traffic = Traffic(topo, sinks, dsts, agent)
        agent.write(next_hops(failover=False))
        agent.write([c.set_route(p, GROUP_A) for p in table.stable])
        start = churn_states(table.churned)
        agent.write([c.set_route(p, GROUP_B if s == 1 else GROUP_A)
                     for p, s in zip(table.churned, start, strict=True) if s])  # fmt: skip
        agent.place()
        log("  zero-loss search (undisturbed)")
        zl, zl_measured, criterion = base_rate(traffic, mode, b_is_wrong=True)
        rate = 0.9 * zl
        log(f"  {criterion}: {zl / 1e6:.3f} Mpps asked ({zl_measured / 1e6:.3f} measured by the "
            f"generator); both trials at 90 %: {rate / 1e6:.3f} Mpps")  # fmt: skip
        agent.place()
        calm = traffic.trial(rate, mode.seconds)
        log(f"  undisturbed: {calm.fwd_pps / 1e6:.3f} Mpps forwarded, lost {calm.lost}, "
            f"at sink B {calm.at_b}, router CPU {calm.cpu:.0%}")  # fmt: skip
        agent.place()
        writer = ChurnWriter(agent.sock, requests, args.churn_batch / args.churn_rate,
                             args.control_cpu)  # fmt: skip
        writer.start()
        try:
            time.sleep(0.2)  # the writer is in its stride when the traffic starts
            churn = traffic.trial(rate, mode.seconds)
        finally:
            writer.stop()
        if writer.error:
            raise RuntimeError(f"the churn writer was refused: {writer.error}")
        achieved = writer.rate(churn.started, churn.ended)
        acked = sum(n for _, n in writer.acks)
        lat = sorted(writer.latencies) or [0.0]
        log(f"  under churn: {churn.fwd_pps / 1e6:.3f} Mpps forwarded, lost {churn.lost}, "
            f"at sink B {churn.at_b}, router CPU {churn.cpu:.0%}; {achieved:,.0f} updates/s "
            f"({len(writer.acks)} batches, {acked} operations acknowledged)")  # fmt: skip
        placement = agent.placement
    return {
        "stable_routes": len(table.stable),
        "churned_prefixes": len(table.churned),
        "destinations": len(table.dsts),
        "zero_loss_pps": zl,
        "zero_loss_measured_pps": zl_measured,
        "criterion": criterion,
        "offered_pps": rate,
        "undisturbed": trial_json(calm),
        "churn": trial_json(churn),
        "ratio": churn.fwd_pps / calm.fwd_pps if calm.fwd_pps else None,
        "updates_asked_per_s": args.churn_rate,
        "updates_per_s": achieved,
        "writer": {
            "cpu": args.control_cpu,
            "batch": args.churn_batch,
            "batches_acked": len(writer.acks),
            "operations_acked": acked,
            "run_seconds": writer.stopped_at - writer.started_at,
            "ack_p50_ms": statistics.median(lat) * 1000,
            "ack_p99_ms": lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1000,
            "ack_max_ms": lat[-1] * 1000,
            "most_late_ms": writer.late * 1000,
            "ran_out_of_batches": writer.exhausted,
        },
        "placement": placement,
    }


def trial_json(t: Trial) -> dict:
    return {"offered_pps": t.offered, "sent": t.sent, "seconds": t.seconds, "at_a": t.at_a,
            "at_b": t.at_b, "lost": t.lost, "sent_pps": t.sent_pps, "fwd_pps": t.fwd_pps,
            "generator_forgiven": t.forgiven, "router_cpu": t.cpu, "lost_in": t.lost_in,
            "lost_ring": t.lost_ring,
            "lost_out_a": t.lost_out_a, "lost_out_b": t.lost_out_b, "steal": t.steal,
            **t.during}  # fmt: skip


# -- failover ------------------------------------------------------------------------------


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


# -- report --------------------------------------------------------------------------------


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown(meta: dict, churn: dict | None, failover: list[dict] | None) -> str:
    lines = [
        f"Behaviour under change, {meta['date']}, mode {meta['mode']}: IPv4, {SIZE} B frames, "
        "through `corridor agent` (1 worker) over gRPC.",
        f"Machine: {meta['machine']}.",
        f"Placement: {meta['placement']}",
        "",
    ]
    if churn is not None:
        w, calm, ch = churn["writer"], churn["undisturbed"], churn["churn"]
        mpps = lambda pps: f"{pps / 1e6:.3f}"  # noqa: E731
        delivered = lambda t: (t["at_a"] + t["at_b"]) / max(1, t["sent"])  # noqa: E731
        where = lambda t: (f"refused by dut0 {t['lost_in']}, by the worker's rx ring "  # noqa: E731
                           f"{t['lost_ring']}, dropped toward A "
                           f"{t['lost_out_a']}, steal {t['steal']} jiffies")  # fmt: skip
        ratio = churn["ratio"]
        lines += [
            f"Churn: {churn['stable_routes']} stable prefixes (/16-/24) toward sink A; "
            f"{churn['churned_prefixes']} prefixes /25-/32 inside the stable /24s cycling via B "
            f"-> via A -> deleted; {churn['destinations']} destinations covered by no churned "
            f"prefix; base rate ({churn.get('criterion', 'zero loss')}) "
            f"{mpps(churn['zero_loss_pps'])} Mpps asked of the generator "
            f"({mpps(churn['zero_loss_measured_pps'])} as it measured itself; trials of "
            f"{meta['trial_s']} s), both trials at 90 % of the rate asked for {meta['seconds']} s."
            " Offered and forwarded rates are per the generator's active time (gaps left out).",
            "",
            "| measure | value | target |",
            "|---|---|---|",
            f"| forwarded, undisturbed (Mpps) | {mpps(calm['fwd_pps'])} (offered "
            f"{mpps(calm['sent_pps'])}, lost {calm['lost']}, at sink B {calm['at_b']}) | |",
            f"| forwarded, under churn (Mpps) | {mpps(ch['fwd_pps'])} (offered "
            f"{mpps(ch['sent_pps'])}) | |",
            f"| ratio churn / undisturbed | {fmt(ratio, '.3f')} | >= 0.9 "
            f"({'met' if ratio is not None and ratio >= 0.9 else 'missed'}) |",
            f"| frames lost, undisturbed / under churn | {calm['lost']} / {ch['lost']} of "
            f"{ch['sent']} ({where(calm)} / {where(ch)}) | |",
            f"| frames misforwarded (at sink B) | {ch['at_b']} | 0 "
            f"({'met' if ch['at_b'] == 0 else 'missed'}) |",
            f"| route updates/s achieved | {churn['updates_per_s']:,.0f} (asked "
            f"{churn['updates_asked_per_s']:,}: {w['batches_acked']} Write batches of "
            f"{w['batch']} acknowledged, ack p50 {w['ack_p50_ms']:.1f} / p99 "
            f"{w['ack_p99_ms']:.1f} / max {w['ack_max_ms']:.1f} ms; writer on CPU {w['cpu']}) "
            f"| {churn['updates_asked_per_s']:,} |",
            f"| delivered / offered, undisturbed / churn | {delivered(calm):.4f} / "
            f"{delivered(ch):.4f} | |",
            f"| router CPU busy, undisturbed / churn | {calm['router_cpu']:.0%} / "
            f"{ch['router_cpu']:.0%} | |",
            f"| generator lags forgiven, undisturbed / churn | "
            f"{calm['generator_forgiven']} / {ch['generator_forgiven']} | |",
            "",
        ]
    if failover:
        lines += [
            f"Failover: one group of two members (dut1 -> sink A, dut2 -> sink B), "
            f"{meta['failover_s']} s trials, sinkb0 taken down halfway, {meta['failover_reps']} "
            "failure(s) per size (median, range). Window = (lost - lost at the input, which "
            "trials without failure lose too) / (offered pps x B's share before) x 1000. "
            "Re-pointed: GetCounters (polled every 5 ms) shows the link down, counted from the "
            "return of `ip link set down`.",
            "",
            "| routes | offered Mpps | B's share | lost, no failure | lost, failure | "
            "of them dropped by dut2 | loss window (ms) | agent re-pointed after (ms) | target |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in failover:
            fs = r["failures"]
            ok = r["window_ms"] is not None and r["window_ms"] < 50
            span = r["window_ms_range"]
            window = fmt(r["window_ms"], ".1f")
            if span and len(fs) > 1:
                window += f" ({span[0]:.1f}-{span[1]:.1f})"
            lines.append(
                f"| {r['routes']:,} | {statistics.median(f['sent_pps'] for f in fs) / 1e6:.3f} | "
                f"{statistics.median(f['share_b'] for f in fs):.1%} | {r['baseline']['lost']} | "
                f"{', '.join(str(f['lost']) for f in fs)} | "
                f"{', '.join(str(f['lost_out_b']) for f in fs)} | {window} | "
                f"{fmt(r['agent_repointed_ms'], '.1f')} | < 50 ms ({'met' if ok else 'missed'}) |"
            )
        ends = [r for r in failover if r["window_ms"] is not None]
        if len(ends) > 1:
            lines += ["", f"Window at {ends[-1]['routes']:,} routes minus at "
                      f"{ends[0]['routes']:,}: {ends[-1]['window_ms'] - ends[0]['window_ms']:+.1f}"
                      " ms (target: the same)."]  # fmt: skip
        lines.append("")
    return "\n".join(lines)


# -- main ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM, after every finally above ran
        sys.exit("benches.change: interrupted; the agent, the sinks and the namespaces are gone")
