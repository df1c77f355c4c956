"""`make demo`: Corridor on the embedded default, end to end.

It builds the lab (network namespaces cor-gen → cor-dut → cor-sink), starts `corridor up`
(the controller with its SQLite store and a local agent hosting the engine on the router's
two ports in cor-dut), applies routes through the controller's API, the way orchestration
would: transit test prefixes via the sink's address and a real Internet table (the IPv6
one; `--full` adds the full IPv4 table), all with
next hops by gateway address (the agent resolves them through the kernel's neighbour
table). Then it sends bounded bursts of IPv4 and IPv6 frames from cor-gen, prints what
arrived at cor-sink and what the node counted, and removes everything, also on failure or
Ctrl-C.
"""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import grpc

from corridor import lab as L
from corridor import traffic
from corridor.agent import client as c
from corridor.v1 import controller_pb2, controller_pb2_grpc, dataplane_pb2, dataplane_pb2_grpc

T = TypeVar("T")

TABLES = {
    "IPv4": "ipv4-routeviews-2024-04-06.txt.gz",
    "IPv6": "ipv6-ris-2022-05-27.txt.gz",
}
FRAMES_PER_FAMILY = 100_000
# Offered load: well within what one worker forwards in copy mode on veth here, so the
# demo shows forwarding, not the saturation point (that is the benchmark's job).
RATE = 40_000
BATCH = 50_000
NODE = "local"

CONFIG = """\
[listen]
unix = "{tmp}/controller.sock"

[store]
path = "{tmp}/intent.db"

[up]
node = "{node}"

[agent]
workers = 1
netns = "{netns}"
listen = {{ unix = "{tmp}/agent.sock" }}

[[agent.ports]]
name = "{dut_in}"
addresses = ["{in4}/24", "{in6}/64"]

[[agent.ports]]
name = "{dut_out}"
addresses = ["{out4}/24", "{out6}/64"]
"""


def data_dir(given: str | None) -> Path:
    if given:
        return Path(given)
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent.parent / "shared" / "data"
        if (candidate / TABLES["IPv4"]).exists():
            return candidate
    raise SystemExit("demo: ../shared/data with the routing tables was not found (use --data DIR)")


def via(prefix: str) -> controller_pb2.RouteIntent:
    """A route toward the sink: next hop by gateway address on the router's port dut1."""
    gateway = L.SINK_V6 if ":" in prefix else L.SINK_V4
    route = controller_pb2.RouteIntent(
        prefix=c.prefix(prefix), kind=dataplane_pb2.ROUTE_KIND_FORWARD
    )
    route.next_hops.add(gateway=ipaddress.ip_address(gateway).packed, port=L.DUT_OUT)
    return route


async def until(what: str, fn: Callable[[], Awaitable[T | None]], within: float) -> T:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            value = await fn()
        except grpc.aio.AioRpcError:
            value = None
        if value:
            return value
        await asyncio.sleep(0.05)
    raise SystemExit(f"demo: {what} did not happen within {within:.0f} s")


async def program(tmp: Path, data: Path, tables: list[str]) -> None:
    channel = grpc.aio.insecure_channel(
        f"unix:{tmp}/controller.sock", options=(("grpc.max_send_message_length", 64 << 20),)
    )
    stub = controller_pb2_grpc.ControllerStub(channel)

    async def status():
        s = await stub.GetNodeStatus(controller_pb2.GetNodeStatusRequest(name=NODE), timeout=2)
        return s if s.connected else None

    await until("the local node connecting", status, 60)
    routes = [via(L.TRANSIT4), via(L.TRANSIT6)]
    for family in tables:
        name = TABLES[family]
        text = gzip.decompress((data / name).read_bytes()).decode()
        prefixes = [line.split()[0] for line in text.splitlines() if line.strip()]
        routes.extend(via(p) for p in prefixes)
        print(f"  intent: {len(prefixes):,} {family} routes from {name}")
    started = time.perf_counter()
    revision = 0
    for i in range(0, len(routes), BATCH):
        reply = await stub.Apply(controller_pb2.ApplyRequest(routes=routes[i : i + BATCH]))
        revision = reply.revision
    applied = time.perf_counter() - started

    async def synced():
        s = await stub.GetNodeStatus(controller_pb2.GetNodeStatusRequest(name=NODE), timeout=5)
        return s if s.in_sync and s.synced_revision >= revision else None

    node = await until("the node converging", synced, 900)
    took = time.perf_counter() - started
    print(
        f"  controller: {len(routes):,} routes committed to SQLite in {applied:.1f} s, "
        f"node {NODE!r} in sync after {took:.1f} s ({len(routes) / took:,.0f} routes/s end to end)"
    )
    print(f"  node status: connected={node.connected} in_sync={node.in_sync}")
    await channel.close()


async def node_counters(tmp: Path) -> dataplane_pb2.Counters:
    async with grpc.aio.insecure_channel(f"unix:{tmp}/agent.sock") as channel:
        stub = dataplane_pb2_grpc.DataplaneStub(channel)
        return await stub.GetCounters(dataplane_pb2.GetCountersRequest(), timeout=5)


def send(lab: L.Lab) -> None:
    for family, dst, src in ((4, "198.19.1.1", L.GEN_V4), (6, "2001:db8:100::1", L.GEN_V6)):
        spec = traffic.FrameSpec(
            family=family, src=src, dst=dst, src_mac=L.GEN_MAC, dst_mac=L.DUT_IN_MAC,
            vary_addresses=True,
        )  # fmt: skip
        before = lab.link_stats(lab.ns("sink"), L.SINK_IF)["rx_packets"]
        started = time.monotonic()
        sent = traffic.flood(
            lab.ns("gen"), L.GEN_IF, spec, count=FRAMES_PER_FAMILY, processes=2,
            sizes=(60 if family == 4 else 66, 512, 1514), flows=256, duration=30.0,
            rate=RATE,
        )  # fmt: skip
        took = time.monotonic() - started
        time.sleep(0.3)  # the last frames in flight
        arrived = lab.link_stats(lab.ns("sink"), L.SINK_IF)["rx_packets"] - before
        print(
            f"  IPv{family}: sent {sent:,} frames (60-1514 B, 256 flows, {RATE:,}/s) in "
            f"{took:.1f} s; sink0 received {arrived:,} ({arrived / max(sent, 1):.1%}; a frame "
            "or two of neighbour discovery may be among them)"
        )


def run(given: str | None, full: bool = False) -> int:
    data = data_dir(given)
    print("Corridor demo: controller + agent + engine in the lab, with real Internet tables\n")
    lab = L.Lab()
    lab.up()
    tmp = Path(tempfile.mkdtemp(prefix="corridor-demo-"))
    config = tmp / "corridor.toml"
    names = dict(
        tmp=tmp, node=NODE, netns=lab.ns("dut"), dut_in=L.DUT_IN, dut_out=L.DUT_OUT,
        in4=L.DUT_IN_V4, in6=L.DUT_IN_V6, out4=L.DUT_OUT_V4, out6=L.DUT_OUT_V6,
    )  # fmt: skip
    config.write_text(CONFIG.format(**names))
    log = (tmp / "corridor-up.log").open("w")
    up = subprocess.Popen(
        [sys.executable, "-m", "corridor", "up", "--config", str(config)],
        stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ),
    )  # fmt: skip
    try:
        print(f"  corridor up --config {config} (pid {up.pid}; log {log.name})")
        # The IPv6 table goes in by default (seconds); --full adds the 998 k IPv4 routes,
        # which the controller programs end to end in a few minutes on this kind of machine.
        asyncio.run(program(tmp, data, ["IPv4", "IPv6"] if full else ["IPv6"]))
        print()
        send(lab)
        counters = asyncio.run(node_counters(tmp))
        print("\n  node counters (the agent's GetCounters):")
        for i in counters.interfaces:
            print(
                f"    {i.port:<6} rx {i.rx_packets:>9,} pkts {i.rx_bytes:>12,} B"
                f"   tx {i.tx_packets:>9,} pkts {i.tx_bytes:>12,} B"
            )
        drops: dict[str, int] = {}
        for d in counters.drops:
            drops[d.reason] = drops.get(d.reason, 0) + d.packets
        shown = {k: v for k, v in drops.items() if v and k != "rx_ring_dropped"}
        print(f"    drops: {shown or 'none'}")
        n = counters.next_hops
        print(
            f"    next hops: {n.adjacencies} adjacencies, {n.unresolved} unresolved, "
            f"{n.link_down} on a link that is down"
        )
        lost = sum(w.rx_ring_dropped for w in counters.workers)
        print(f"    lost at the AF_XDP rx ring (worker too busy): {lost:,}")
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(timeout=15)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait()
        log.close()
        lab.down()
    if up.returncode == 0:
        shutil.rmtree(tmp, ignore_errors=True)  # kept, with its log, when something failed
    print(f"\n  corridor up stopped (exit {up.returncode}); lab removed; done")
    return 0 if up.returncode == 0 else 1
