"""BGP routes into Corridor's FIB against the kernel's, in the same run. BIRD (in the lab's
sink namespace) announces the real IPv4 and IPv6 tables to FRR's bgpd (in the dut namespace,
where `corridor agent` hosts the engine on dut0/dut1); zebra installs what it selects into
the Linux kernel's FIB (its own data plane) and hands the same routes over FPM to
`corridor controller`, which writes them to the agent. From BIRD's start, the time until:
bgpd has received every route, the kernel's FIB holds them (zebra's count of routes it has
installed, `show ip[v6] route summary`, checked once against `ip route` at the end), the
controller has them from zebra over FPM (its BGP routes in intent), and Corridor's FIB holds
them (the node's installed sizes as the controller reports them, which
follow the agent's acknowledgements). Then BIRD withdraws everything and the same clocks
run until both FIBs are empty. Ratio: Corridor's time over the kernel's (target <= 1.0).

  .venv/bin/python -m benches.bgp_load [--limit N] [--form nexthop-groups|inline]

Root (network namespaces, XDP), FRR and BIRD (Debian's frr and bird2).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from benches.harness import results
from benches.harness.agent import corridor_env
from benches.harness.frr import LabFrr, missing_tools
from benches.harness.tables import TABLE4, TABLE6, real_table
from corridor import lab as L
from corridor.v1 import controller_pb2, controller_pb2_grpc

NODE = "r1"
POLL = 0.5
TIMEOUT = 1800.0


def _spawn(args: list[str], log: Path) -> subprocess.Popen:
    with log.open("a") as err:
        return subprocess.Popen([sys.executable, "-m", "corridor", *args], env=corridor_env(),
                                stdout=subprocess.DEVNULL, stderr=err)  # fmt: skip


def _stop(process: subprocess.Popen | None) -> None:
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _agent_toml(lab: L.Lab, sock: Path, v4: int, v6: int) -> str:
    return f"""workers = 1
netns = "{lab.ns("dut")}"
[listen]
unix = "{sock}"
[fib]
v4_routes = {max(v4 * 2, 1024)}
v6_routes = {max(v6 * 2, 1024)}
groups = 1024
adjacencies = 1024
[[ports]]
name = "{L.DUT_IN}"
addresses = ["{L.DUT_IN_V4}/24", "{L.DUT_IN_V6}/64"]
[[ports]]
name = "{L.DUT_OUT}"
addresses = ["{L.DUT_OUT_V4}/24", "{L.DUT_OUT_V6}/64"]
"""


def _controller_toml(d: Path, agent_sock: Path, lab: L.Lab) -> str:
    return f"""[listen]
unix = "{d}/controller.sock"
[store]
path = "{d}/intent.db"
[reconcile]
max_groups = 1024
max_adjacencies = 1024
[[nodes]]
name = "{NODE}"
address = "unix:{agent_sock}"
[[fpm]]
node = "{NODE}"
listen = "127.0.0.1:2620"
netns = "{lab.ns("dut")}"
"""


class Clocks:
    """Polls the three counts until each reaches its target; records when it first did."""

    def __init__(self, started: float, probes: dict[str, Callable[[], int]]) -> None:
        self.started = started
        self.probes = probes
        self.reached: dict[str, float] = {}
        self.last: dict[str, int] = {}

    def run(self, done: Callable[[str, int], bool], what: str) -> dict[str, float]:
        deadline = self.started + TIMEOUT
        while len(self.reached) < len(self.probes):
            now = time.monotonic()
            for name, probe in self.probes.items():
                if name in self.reached:
                    continue
                try:
                    value = probe()
                except (grpc.RpcError, subprocess.SubprocessError, ValueError, KeyError):
                    continue
                self.last[name] = value
                if done(name, value):
                    self.reached[name] = now - self.started
                    results.log(f"  {what}: {name} at {self.reached[name]:.1f} s ({value})")
            if time.monotonic() > deadline:
                raise SystemExit(f"{what}: not reached in {TIMEOUT} s: {self.last}")
            time.sleep(POLL)
        return self.reached


def main(limit: int | None, nexthop_groups: bool, out: Path) -> dict:
    missing = missing_tools()
    if missing:
        raise SystemExit(f"FRR and BIRD are needed (apt-get install frr bird2); missing: {missing}")
    routes4 = real_table(TABLE4, limit)
    routes6 = real_table(TABLE6, limit)
    results.log(f"bgp_load: {len(routes4)} IPv4 + {len(routes6)} IPv6 routes, "
                f"{'next-hop objects' if nexthop_groups else 'inline next hops'}")  # fmt: skip
    lab = L.Lab(prefix="cor-bl-")
    d = Path(tempfile.mkdtemp(prefix="cor-bgp-load-"))
    agent = controller = None
    frr = LabFrr(lab, routes4, routes6, nexthop_groups, extras=False)
    try:
        lab.up()
        frr.create_network()
        sock = d / "agent.sock"
        (d / "agent.toml").write_text(_agent_toml(lab, sock, len(routes4), len(routes6)))
        agent = _spawn(["agent", "--config", str(d / "agent.toml")], d / "agent.log")
        (d / "controller.toml").write_text(_controller_toml(d, sock, lab))
        controller = _spawn(["controller", "--config", str(d / "controller.toml")],
                            d / "controller.log")  # fmt: skip
        stub = controller_pb2_grpc.ControllerStub(
            grpc.insecure_channel(f"unix:{d}/controller.sock")
        )

        def status() -> controller_pb2.NodeStatus:
            return stub.GetNodeStatus(controller_pb2.GetNodeStatusRequest(name=NODE), timeout=5)

        deadline = time.monotonic() + 60
        while True:
            try:
                if status().in_sync:
                    break
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"the controller and agent did not start: {d}")
            time.sleep(0.2)

        def corridor() -> int:
            s = status().installed
            return s.ipv4_routes + s.ipv6_routes

        def controller_has() -> int:
            return status().bgp.routes

        total = len(routes4) + len(routes6)
        probes = {"bgpd received": frr.received, "kernel FIB": frr.installed,
                  "controller received": controller_has, "Corridor FIB": corridor}  # fmt: skip
        started = time.monotonic()
        frr.start(2620)
        load = Clocks(started, probes).run(lambda _, n: n >= total, "announced")
        kernel_routes = frr.kernel_routes()
        results.log(f"  the kernel's FIB holds {kernel_routes} BGP routes (ip route)")

        started = time.monotonic()
        frr.birdc("disable", "s4")
        frr.birdc("disable", "s6")
        withdraw = Clocks(started, probes).run(lambda _, n: n == 0, "withdrawn")
    finally:
        _stop(controller)
        _stop(agent)
        frr.stop()
        lab.down()
    data = {
        "routes": {"ipv4": len(routes4), "ipv6": len(routes6)},
        "form": "nexthop-groups" if nexthop_groups else "inline",
        "announce_seconds": load,
        "withdraw_seconds": withdraw,
        "kernel_routes_checked": kernel_routes,
        "ratio_announce": load["Corridor FIB"] / load["kernel FIB"],
        "ratio_withdraw": withdraw["Corridor FIB"] / withdraw["kernel FIB"],
    }
    md = "\n".join([
        f"# BGP into the FIB: {len(routes4)} IPv4 + {len(routes6)} IPv6 routes ({data['form']})",
        "",
        "| | bgpd has them | kernel FIB | controller has them (FPM) | Corridor FIB "
        "| Corridor / kernel |",
        "|---|---|---|---|---|---|",
        f"| announce | {load['bgpd received']:.1f} s | {load['kernel FIB']:.1f} s | "
        f"{load['controller received']:.1f} s | {load['Corridor FIB']:.1f} s | "
        f"{data['ratio_announce']:.2f}x |",
        f"| withdraw | {withdraw['bgpd received']:.1f} s | {withdraw['kernel FIB']:.1f} s | "
        f"{withdraw['controller received']:.1f} s | {withdraw['Corridor FIB']:.1f} s | "
        f"{data['ratio_withdraw']:.2f}x |",
        "",
    ])  # fmt: skip
    print(md)
    results.write(out, md, data)
    return data


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, help="routes per family (default: all)")
    parser.add_argument("--form", choices=("nexthop-groups", "inline"), default="nexthop-groups")
    parser.add_argument("--out", type=Path, default=Path("benches/results/bgp_load"))
    args = parser.parse_args()
    print(json.dumps(main(args.limit, args.form == "nexthop-groups", args.out)["ratio_announce"]))
