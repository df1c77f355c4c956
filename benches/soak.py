"""Soak and chaos: the whole system under steady traffic for minutes while everything that
can change does. In the bench lab plus a second sink (`cor-b<pid>-*`, the churn
benchmark's topology): `corridor agent` hosts the engine on dut0 (in), dut1 (sink A) and
dut2 (sink B); `corridor controller` with its SQLite store programs it. Meanwhile:

- traffic: the generator at a fixed rate (--rate) toward stable destinations, routed by the
  controller to sink A, for the whole run (it stops by itself);
- churn: more-specific prefixes inside the looked-up /24s cycle through "via sink B",
  "via sink A" and deleted, through the controller's Apply and Delete at --churn updates/s.
  No churned prefix covers a destination, so every generated frame at sink B is
  misforwarded;
- a link flap every --flap-every seconds: sink B's port goes down for one second (its
  group empties and fills again through the agent's link watch);
- kill -9 and restart, every --kill-every seconds, of the agent and the controller in turn.

Checked every second, and over the run: nothing misforwarded (frames at sink B = 0);
frame accounting (the generator's port's transmitted frames against sink A, the engine's
drops by reason, the kernel's drops in the dut and the frames a killed agent held in its
rings, within the frames in flight); resident memory and open file descriptors of the agent
and the controller flat after warm-up (growth under 5 % within each process's lifetime:
a restarted process starts anew). Prints a summary table, writes
benches/results/soak-latest.{md,json,png}, and exits 1 when a check fails.

    .venv/bin/python -m benches.soak [--seconds 600] [--rate 20000] [--churn 10000]

As root. Traffic only in the lab's namespaces, toward 198.19.0.0/16 (test space); the
generator, the churn and every wait are bounded in time.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc

from benches.change.churn import churn_states, churn_table
from benches.change.sinkb import DUT_B, DUT_B_V4, DUT_B_V6, SINKB_IF, SINKB_ROLE, SINKB_V4, SinkB
from benches.harness import RESULTS, results
from benches.harness.agent import agent_config, corridor_env
from benches.harness.topology import Topology, bench_lab
from benches.harness.traffic import TOOLS, Sink, build_tools
from corridor import lab as L
from corridor.agent import client as c
from corridor.v1 import controller_pb2, controller_pb2_grpc, dataplane_pb2, dataplane_pb2_grpc

NODE = "r1"
SIZE = 64
GROWTH_LIMIT = 0.05  # resident memory within one process's life, after warm-up
RING_FRAMES = 4 * 2048  # what one killed agent may hold in its rings (fill + rx, 2 queues)
FIB = {"v4_routes": 65_536, "v6_routes": 1024, "groups": 1024, "adjacencies": 1024}
KERNEL_DROPS = ("IpInAddrErrors", "IpExtInNoRoutes", "IpInDiscards", "IpInHdrErrors")


@dataclass
class Daemon:
    """`corridor agent` or `corridor controller` as a process, restarted by kill(): each life
    (incarnation) is numbered, and its samples are judged on their own."""

    name: str
    config: Path
    log_path: Path
    process: subprocess.Popen | None = None
    incarnation: int = 0
    started_at: float = 0.0

    def start(self) -> None:
        with self.log_path.open("a") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "corridor", self.name, "--config", str(self.config)],
                env=corridor_env(), stdout=subprocess.DEVNULL, stderr=err,
                start_new_session=True,
            )  # fmt: skip
        self.incarnation += 1
        self.started_at = time.monotonic()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def usage(self) -> tuple[int, int] | None:
        """(resident KiB, open file descriptors), None when it is not running."""
        if self.process is None or self.process.poll() is not None:
            return None
        pid = self.process.pid
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            rss = next(int(line.split()[1]) for line in status.splitlines()
                       if line.startswith("VmRSS:"))  # fmt: skip
            return rss, len(os.listdir(f"/proc/{pid}/fd"))
        except (OSError, StopIteration):
            return None


@dataclass
class Sample:
    t: float
    sent: int  # frames the generator's port transmitted
    at_a: int  # generated frames at sink A
    at_b: int  # generated frames at sink B: misforwarded
    engine_drops: int  # every drop the engine counted, across the agent's lives
    kernel_drops: int  # the dut's kernel: frames it got while no agent held the port
    agent: tuple[int, int, int] | None  # (incarnation, RSS KiB, fds)
    controller: tuple[int, int, int] | None
    churned: int  # churn updates the controller acknowledged
    events: list[str] = field(default_factory=list)


class Churn(threading.Thread):
    """Cycles the churned prefixes through via B, via A, deleted, at `rate` updates/s in
    batches every 0.1 s, through the controller's Apply and Delete. A failed call (the
    controller killed) is retried with the same batch once it answers again."""

    def __init__(self, sock: Path, prefixes: list[str], rate: int, until: float) -> None:
        super().__init__(name="churn", daemon=True)
        self.sock, self.prefixes, self.rate, self.until = sock, prefixes, rate, until
        self.acked = 0
        self.failed_calls = 0
        self.halt = threading.Event()

    def run(self) -> None:
        channel = grpc.insecure_channel(f"unix:{self.sock}")
        stub = controller_pb2_grpc.ControllerStub(channel)
        state = churn_states(self.prefixes)
        per_batch = max(1, self.rate // 10)
        i = 0
        next_at = time.monotonic()
        try:
            while not self.halt.is_set() and time.monotonic() < self.until:
                sets: list[controller_pb2.RouteIntent] = []
                deletes: list[controller_pb2.RouteKey] = []
                for _ in range(per_batch):
                    k = i % len(self.prefixes)
                    state[k] = (state[k] + 1) % 3
                    prefix = self.prefixes[k]
                    if state[k] == 0:
                        deletes.append(controller_pb2.RouteKey(prefix=c.prefix(prefix)))
                    else:
                        sets.append(via(prefix, b=state[k] == 1))
                    i += 1
                while not self.halt.is_set() and time.monotonic() < self.until:
                    try:
                        if sets:
                            stub.Apply(controller_pb2.ApplyRequest(routes=sets), timeout=10)
                            sets = []  # not again if the Delete fails
                        if deletes:
                            stub.Delete(controller_pb2.DeleteRequest(routes=deletes), timeout=10)
                        self.acked += per_batch
                        break
                    except grpc.RpcError:
                        self.failed_calls += 1
                        time.sleep(0.2)
                next_at += 0.1
                time.sleep(max(0.0, next_at - time.monotonic()))
        finally:
            channel.close()


def via(prefix: str, b: bool = False) -> controller_pb2.RouteIntent:
    """A route for every node toward sink A (or B), next hop by gateway address."""
    route = controller_pb2.RouteIntent(
        prefix=c.prefix(prefix), kind=dataplane_pb2.ROUTE_KIND_FORWARD
    )
    gateway, port = (SINKB_V4, DUT_B) if b else (L.SINK_V4, L.DUT_OUT)
    route.next_hops.add(gateway=bytes(map(int, gateway.split("."))), port=port)
    return route


def kernel_drops(lab: L.Lab) -> int:
    out = lab.exec("dut", ["nstat", "-az", "--json", *KERNEL_DROPS]).stdout
    counters = json.loads(out).get("kernel", {})
    return sum(int(counters.get(k, 0)) for k in KERNEL_DROPS)


def sent_frames(lab: L.Lab) -> int:
    return lab.link_stats(lab.ns("gen"), L.GEN_IF)["tx_packets"]


class EngineDrops:
    """The engine's drops, summed over the agent's lives: a restarted agent counts from 0."""

    def __init__(self) -> None:
        self.before = 0  # the lives that ended
        self.last = 0
        self.incarnation = 0

    def read(self, sock: Path, incarnation: int) -> int:
        if incarnation != self.incarnation:
            self.before += self.last
            self.last, self.incarnation = 0, incarnation
        with contextlib.suppress(grpc.RpcError), grpc.insecure_channel(f"unix:{sock}") as ch:
            counters = dataplane_pb2_grpc.DataplaneStub(ch).GetCounters(
                dataplane_pb2.GetCountersRequest(), timeout=1
            )
            self.last = sum(w.dropped_packets for w in counters.workers)
        return self.before + self.last


def wait_in_sync(sock: Path, routes: int, within: float) -> None:
    deadline = time.monotonic() + within
    with grpc.insecure_channel(f"unix:{sock}") as ch:
        stub = controller_pb2_grpc.ControllerStub(ch)
        while time.monotonic() < deadline:
            with contextlib.suppress(grpc.RpcError):
                s = stub.GetNodeStatus(controller_pb2.GetNodeStatusRequest(name=NODE), timeout=2)
                if s.connected and s.in_sync and s.installed.ipv4_routes >= routes:
                    return
            time.sleep(0.2)
    raise SystemExit(f"soak: the node was not in sync with {routes} routes within {within:.0f} s")


def wait_serving(daemon: Daemon, sock: Path, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if daemon.process is not None and daemon.process.poll() is not None:
            raise SystemExit(f"soak: {daemon.name} exited: {daemon.log_path.read_text()[-1500:]}")
        if sock.exists():
            return
        time.sleep(0.1)
    raise SystemExit(f"soak: {daemon.name} did not serve within {within:.0f} s")


def run(args: argparse.Namespace) -> dict:
    build_tools()
    table = churn_table()
    with bench_lab() as lab, tempfile.TemporaryDirectory(prefix="cor-soak-") as tmp:
        d = Path(tmp)
        sinkb = SinkB(lab).up()
        sinks: list[Sink] = []
        daemons: list[Daemon] = []
        try:
            return soak(args, lab, sinkb, d, table, sinks, daemons)
        finally:
            for daemon in daemons:
                daemon.stop()
            for sink in sinks:
                sink.close()
            sinkb.down()


def soak(args: argparse.Namespace, lab: L.Lab, sinkb: SinkB, d: Path, table, sinks: list[Sink],
         daemons: list[Daemon]) -> dict:  # fmt: skip
    agent_sock, controller_sock = d / "agent.sock", d / "controller.sock"
    ports = {L.DUT_IN: [f"{L.DUT_IN_V4}/24", f"{L.DUT_IN_V6}/64"],
             L.DUT_OUT: [f"{L.DUT_OUT_V4}/24", f"{L.DUT_OUT_V6}/64"],
             DUT_B: [f"{DUT_B_V4}/24", f"{DUT_B_V6}/64"]}  # fmt: skip
    (d / "agent.toml").write_text(agent_config(lab.ns("dut"), agent_sock, FIB, ports))
    (d / "controller.toml").write_text(
        f'[listen]\nunix = "{controller_sock}"\n[store]\npath = "{d}/intent.db"\n'
        f'[[nodes]]\nname = "{NODE}"\naddress = "unix:{agent_sock}"\n'
    )
    agent = Daemon("agent", d / "agent.toml", d / "agent.log")
    controller = Daemon("controller", d / "controller.toml", d / "controller.log")
    daemons += [controller, agent]
    agent.start()
    wait_serving(agent, agent_sock)
    controller.start()
    wait_serving(controller, controller_sock)

    sink_a = Sink(lab)
    sinks.append(sink_a)
    sink_b = Sink(sinkb.topology(), role=SINKB_ROLE, dev=SINKB_IF)
    sinks.append(sink_b)

    with grpc.insecure_channel(f"unix:{controller_sock}") as ch:
        stub = controller_pb2_grpc.ControllerStub(ch)
        stub.Apply(controller_pb2.ApplyRequest(routes=[via(p) for p in table.stable]), timeout=30)
    wait_in_sync(controller_sock, len(table.stable), 60)
    dsts = d / "dsts.txt"
    dsts.write_text("\n".join(table.dsts) + "\n")

    t = Topology.lab(lab)
    total = args.seconds
    # Pinned as benches.forwarding pins it: the veth's transmit queue follows the sender's
    # CPU, and a frame that arrives on a queue no worker owns goes to the kernel.
    gen = subprocess.Popen(t.argv("gen", [
        "taskset", "-c", str(t.gen_cpu), str(TOOLS / "gen"), "--dev", t.gen_if,
        "--src-mac", t.gen_mac, "--dst-mac", t.dut_in_mac,
        "--src", L.GEN_V4, "--dsts", str(dsts), "--size", str(SIZE), "--rate", str(args.rate),
        "--duration", str(total),
    ]), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    started = time.monotonic()
    churn = Churn(controller_sock, table.churned, args.churn, started + total)
    churn.start()
    engine = EngineDrops()
    samples: list[Sample] = []
    base = (sent_frames(lab), sink_a.read()["pkts"], sink_b.read()["pkts"], kernel_drops(lab))
    killed_agents = 0
    next_kill, kill_agent = args.kill_every, True
    flap_down_at, link_up = args.flap_every, True
    try:
        for second in range(1, int(total) + 1):
            time.sleep(max(0.0, started + second - time.monotonic()))
            now = time.monotonic() - started
            events: list[str] = []
            if link_up and now >= flap_down_at:
                sinkb.link(False)
                link_up = False
                events.append("sink B down")
            elif not link_up and now >= flap_down_at + 1:
                sinkb.link(True)
                link_up = True
                flap_down_at += args.flap_every
                events.append("sink B up")
            if args.kill_every and now >= next_kill and now < total - 5:
                victim = agent if kill_agent else controller
                victim.kill()
                victim.start()
                killed_agents += victim is agent
                events.append(f"{victim.name} killed and restarted")
                kill_agent = not kill_agent
                next_kill += args.kill_every
            use_a, use_c = agent.usage(), controller.usage()
            samples.append(Sample(
                t=round(now, 2),
                sent=sent_frames(lab) - base[0],
                at_a=sink_a.read()["pkts"] - base[1],
                at_b=sink_b.read()["pkts"] - base[2],
                engine_drops=engine.read(agent_sock, agent.incarnation),
                kernel_drops=kernel_drops(lab) - base[3],
                agent=None if use_a is None else (agent.incarnation, *use_a),
                controller=None if use_c is None else (controller.incarnation, *use_c),
                churned=churn.acked,
                events=events,
            ))  # fmt: skip
            if second % 10 == 0:
                s = samples[-1]
                results.log(f"  {s.t:5.0f} s: sent {s.sent}, at A {s.at_a}, at B {s.at_b}, "
                            f"churn {s.churned}")  # fmt: skip
    finally:
        churn.halt.set()
        out, err = gen.communicate(timeout=total + 60)
    churn.join(timeout=30)
    time.sleep(1)  # the frames in flight reach the sinks
    if not link_up:
        sinkb.link(True)
    final = Sample(
        t=round(time.monotonic() - started, 2), sent=sent_frames(lab) - base[0],
        at_a=sink_a.read()["pkts"] - base[1], at_b=sink_b.read()["pkts"] - base[2],
        engine_drops=engine.read(agent_sock, agent.incarnation),
        kernel_drops=kernel_drops(lab) - base[3], agent=None, controller=None,
        churned=churn.acked,
    )  # fmt: skip
    if gen.returncode != 0:
        raise SystemExit(f"soak: the generator failed: {err.strip() or out.strip()}")
    return judge(args, samples, final, killed_agents, churn)


def growth(samples: list[Sample], which: str, warmup: float) -> dict[int, dict]:
    """Per life of the process: RSS and fds after warm-up, first and last 10 s compared."""
    lives: dict[int, list[tuple[float, int, int]]] = {}
    for s in samples:
        value = getattr(s, which)
        if value is not None:
            lives.setdefault(value[0], []).append((s.t, value[1], value[2]))
    out = {}
    for life, points in lives.items():
        after = [p for p in points if p[0] - points[0][0] >= warmup]
        if len(after) < 20:
            continue  # too short a life to judge
        first = statistics.median(p[1] for p in after[:10])
        last = statistics.median(p[1] for p in after[-10:])
        fds = [p[2] for p in after]
        out[life] = {"seconds": round(after[-1][0] - after[0][0], 1), "rss_kib_first": first,
                     "rss_kib_last": last, "rss_growth": round(last / first - 1, 4),
                     "fds_min": min(fds), "fds_max": max(fds),
                     "fds_growth": fds[-1] - fds[0]}  # fmt: skip
    return out


def judge(
    args: argparse.Namespace, samples: list[Sample], final: Sample, killed_agents: int, churn: Churn
) -> dict:
    rings = RING_FRAMES * killed_agents  # frames a killed agent may take with it
    in_flight = max(1000, args.rate)  # a second's frames: a sample's reads are not atomic
    seconds_off = sum(
        abs(s.sent - s.at_a - s.at_b - s.engine_drops - s.kernel_drops) > in_flight + rings
        for s in samples
    )
    unaccounted = final.sent - final.at_a - final.at_b - final.engine_drops - final.kernel_drops
    lives = {who: growth(samples, who, args.warmup) for who in ("agent", "controller")}

    def flat(who: str) -> tuple[float | None, bool]:
        """The worst RSS growth of a judged life; ok when every life judged stays under the
        limit with its descriptors flat, and at least one life was long enough to judge."""
        judged = lives[who].values()
        worst = max((g["rss_growth"] for g in judged), default=None)
        ok = bool(judged) and all(
            g["rss_growth"] < GROWTH_LIMIT and g["fds_growth"] <= 2 for g in judged
        )
        return worst, ok

    checks = {
        "misforwarded (frames at sink B)": (final.at_b, final.at_b == 0),
        "unaccounted frames at the end (bound: the rings of killed agents)": (
            unaccounted,
            0 <= unaccounted <= rings,
        ),
        "seconds with accounting off by more than the frames in flight": (
            seconds_off,
            seconds_off == 0,
        ),
        "agent: worst RSS growth of a life after warm-up, fds flat": flat("agent"),
        "controller: worst RSS growth of a life after warm-up, fds flat": flat("controller"),
    }
    return {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "checks": {k: {"value": v, "ok": ok} for k, (v, ok) in checks.items()},
        "ok": all(ok for _, ok in checks.values()),
        "sent": final.sent,
        "at_sink_a": final.at_a,
        "at_sink_b": final.at_b,
        "engine_drops": final.engine_drops,
        "kernel_drops": final.kernel_drops,
        "killed_agents": killed_agents,
        "churn_updates": final.churned,
        "churn_rate": round(final.churned / max(final.t, 1e-9)),
        "churn_failed_calls": churn.failed_calls,
        "agent_lives": lives["agent"],
        "controller_lives": lives["controller"],
        "samples": [asdict(s) for s in samples],
    }


def report(result: dict, out: Path) -> str:
    a = result["args"]
    lines = [
        f"# Soak: {a['seconds']} s at {a['rate']} pps, churn {a['churn']} updates/s asked "
        f"({result['churn_rate']} done), sink B's link down 1 s every {a['flap_every']} s, "
        f"agent and controller killed -9 in turn every {a['kill_every']} s",
        "",
        "| check | value | result |",
        "|---|---|---|",
    ]
    for name, check in result["checks"].items():
        lines.append(f"| {name} | {check['value']} | {'ok' if check['ok'] else 'FAILED'} |")
    lines += ["", f"Frames: sent {result['sent']}, at sink A {result['at_sink_a']}, "
              f"dropped by the engine {result['engine_drops']} (counted by reason), by the "
              f"dut's kernel {result['kernel_drops']} (no agent on the port); "
              f"{result['killed_agents']} agent kills.", "",
              "| process | life | seconds judged | RSS first / last (KiB) | growth | fds |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for who in ("agent", "controller"):
        for life, g in result[f"{who}_lives"].items():
            lines.append(f"| {who} | {life} | {g['seconds']} | {g['rss_kib_first']:.0f} / "
                         f"{g['rss_kib_last']:.0f} | {g['rss_growth'] * 100:+.1f} % | "
                         f"{g['fds_min']} / {g['fds_max']} |")  # fmt: skip
    text = "\n".join(lines) + "\n"
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, out.with_suffix(".png"))
    return text


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["samples"]
    t = [s["t"] for s in samples]

    def rate(key: str) -> list[float]:
        return [0.0] + [b[key] - a[key] for a, b in itertools.pairwise(samples)]

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    top.plot(t, rate("sent"), label="sent (frames/s)", color="#0072B2")
    top.plot(t, rate("at_a"), label="at sink A", color="#E69F00")
    top.plot(t, rate("at_b"), label="at sink B (misforwarded)", color="#D55E00")
    top.set_ylabel("frames/s")
    top.legend(loc="lower left", fontsize=8)
    for who, color in (("agent", "#009E73"), ("controller", "#CC79A7")):
        bottom.plot(t, [s[who][1] / 1024 if s[who] else float("nan") for s in samples],
                    label=f"{who} RSS (MiB)", color=color)  # fmt: skip
    for s in samples:
        for event in s["events"]:
            if "killed" in event:
                for ax in (top, bottom):
                    ax.axvline(s["t"], color="#999999", lw=0.6, ls="--")
    bottom.set_ylabel("MiB")
    bottom.set_xlabel("seconds (dashed: a daemon killed -9 and restarted)")
    bottom.legend(loc="upper left", fontsize=8)
    a = result["args"]
    fig.suptitle(f"Corridor soak: {a['rate']} pps, {result['churn_rate']} route updates/s, "
                 f"{time.strftime('%Y-%m-%d')} on {os.uname().nodename}", fontsize=10)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benches.soak", description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=int, default=600)
    p.add_argument("--rate", type=int, default=20_000, help="frames/s (64 B)")
    p.add_argument("--churn", type=int, default=10_000, help="route updates/s")
    p.add_argument("--flap-every", type=float, default=5.0)
    p.add_argument("--kill-every", type=float, default=60.0, help="0: no kills")
    p.add_argument("--warmup", type=float, default=30.0, help="seconds of a life not judged")
    p.add_argument("--out", type=Path, default=RESULTS / "soak-latest")
    args = p.parse_args(argv)
    for name in ("seconds", "rate", "churn"):
        if getattr(args, name) <= 0:
            p.error(f"--{name} must be above 0")
    if args.flap_every < 2 or args.kill_every < 0 or args.warmup < 0:
        p.error("--flap-every is at least 2 s; --kill-every and --warmup at least 0")
    if os.geteuid() != 0:
        p.error("needs root: network namespaces and XDP")
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    print(report(result, args.out))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
