"""FRR feeding Corridor end to end: a lab (`cor-b<pid>-…`, removed afterwards) whose dut
namespace runs `corridor agent` (the engine on dut0/dut1) and FRR (zebra with
`-M dplane_fpm_nl`, staticd, bgpd); BIRD peers with bgpd from the sink's namespace over dut1,
and a second BIRD from gen's over dut0 (one prefix from both: ECMP). `corridor controller`
listens for zebra inside the dut namespace. BIRD announces a slice of the real tables
(50 000 IPv4, 20 000 IPv6 prefixes: installed, never sent traffic), and test prefixes from
198.19.0.0/16 and 2001:db8::/32 that gen's frames follow through the engine to the sink.
Both FPM forms (next-hop objects and inline)."""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from benches.harness.frr import (
    DISCARD_V4,
    ECMP4,
    RTBH_PREFIX,
    TO_SINK4,
    TO_SINK6,
    UNOWNED4,
    VIA_V6_PREFIX,
    LabFrr,
    missing_tools,
    table_slice,
)

import process_support as P
from controller_support import toml
from corridor import lab as L
from corridor import traffic
from corridor.agent import client as c
from corridor.v1 import controller_pb2, controller_pb2_grpc, dataplane_pb2, dataplane_pb2_grpc

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(900)]

NODE = "r1"
V4_COUNT, V6_COUNT = 50_000, 20_000
RATE, SECONDS = 20_000, 3.0  # the kill runs: a bounded sender at a modest rate
FRAMES = 64


def _requirements() -> None:
    if os.geteuid() != 0:
        pytest.fail("the BGP lab needs root (network namespaces, XDP)")
    missing = missing_tools()
    if missing:
        pytest.fail(f"FRR and BIRD are needed (apt-get install frr bird2); missing: {missing}")
    if shutil.which("ip") is None:
        pytest.fail("the BGP lab needs `ip` (iproute2)")


# -- processes ---------------------------------------------------------------------------


def _agent_config(lab: L.Lab, sock: Path) -> str:
    return P.agent_config(lab, sock, v4_routes=100000, v6_routes=50000, objects=1024)


@dataclass
class Router:
    """The agent, the controller (restartable) and FRR of one lab."""

    lab: L.Lab
    frr: LabFrr
    dir: Path
    agent: subprocess.Popen  # type: ignore[type-arg]
    agent_stub: dataplane_pb2_grpc.DataplaneStub
    controller: subprocess.Popen | None = None  # type: ignore[type-arg]
    stub: controller_pb2_grpc.ControllerStub | None = None

    @property
    def log(self) -> Path:
        return self.dir / "controller.log"

    def start_controller(self) -> None:
        self.controller = P.spawn(["controller", "--config", str(self.dir / "controller.toml")],
                                 self.log)  # fmt: skip
        channel = grpc.insecure_channel(f"unix:{self.dir}/controller.sock")
        self.stub = controller_pb2_grpc.ControllerStub(channel)

        def serving():  # type: ignore[no-untyped-def]
            assert self.controller is not None
            if self.controller.poll() is not None:
                raise AssertionError(f"the controller exited: {self.log.read_text()[-3000:]}")
            return self.status().connected

        P.until(serving, 60, "the controller serving, its node connected", self.log)

    def status(self) -> controller_pb2.NodeStatus:
        assert self.stub is not None
        return self.stub.GetNodeStatus(controller_pb2.GetNodeStatusRequest(name=NODE), timeout=5)

    def fib(self) -> dict[str, tuple[int, tuple[tuple[str, int, bytes], ...]]]:
        """The node's routes: prefix -> (kind, its group's next hops (port, vlan, gateway))."""
        adjacencies, groups, routes = {}, {}, {}
        for response in self.agent_stub.Read(dataplane_pb2.ReadRequest(), timeout=30):
            for a in response.adjacencies:
                adjacencies[a.id] = (a.port, a.vlan, a.gateway)
            for g in response.next_hop_groups:
                groups[g.id] = tuple(sorted(adjacencies.get(m.adjacency_id, ("?", 0, b""))
                                            for m in g.members))  # fmt: skip
            for r in response.routes:
                routes[c.prefix_text(r.prefix)] = (r.kind, r.next_hop_group_id)
        return {p: (kind, groups.get(g, ())) for p, (kind, g) in routes.items()}

    def list_routes(self, source: int = 0) -> list[tuple[str, int, bool]]:
        """(prefix, source, active) of every route of the node in intent."""
        assert self.stub is not None
        request = controller_pb2.ListRoutesRequest(node=NODE, page_size=10_000, source=source)
        out = []
        while True:
            page = self.stub.ListRoutes(request, timeout=30)
            for route, src, active in zip(page.routes, page.sources, page.active, strict=True):
                out.append((c.prefix_text(route.prefix), src, active))
            if not page.next_page_token:
                return out
            request.page_token = page.next_page_token


@pytest.fixture(scope="module")
def tables(data_dir: Path) -> tuple[list, list]:  # type: ignore[type-arg]
    v4 = table_slice(data_dir / "ipv4-routeviews-2024-04-06.txt.gz", V4_COUNT)
    v6 = table_slice(data_dir / "ipv6-ris-2022-05-27.txt.gz", V6_COUNT)
    assert len(v4) >= V4_COUNT and len(v6) >= V6_COUNT
    return v4, v6


@pytest.fixture(params=[True, False], ids=["nexthop-groups", "inline"])
def router(
    request: pytest.FixtureRequest,
    tables: tuple[list, list],  # type: ignore[type-arg]
    tmp_path: Path,
) -> Iterator[Router]:
    _requirements()
    lab = L.Lab(prefix=f"cor-b{os.getpid() % 10000}-")
    frr = LabFrr(lab, *tables, nexthop_groups=request.param)
    agent = None
    r = None
    try:
        try:
            lab.up()
        except L.LabError as e:
            pytest.fail(f"cannot build the lab {lab.prefix}: {e}")
        frr.create_network()
        sock = tmp_path / "agent.sock"
        (tmp_path / "agent.toml").write_text(_agent_config(lab, sock))
        agent, agent_stub, _ = P.start_agent(tmp_path / "agent.toml", sock, tmp_path / "agent.log")
        port = 2620  # zebra's default; the namespace is the lab's own
        (tmp_path / "controller.toml").write_text(toml({
            "listen": {"unix": str(tmp_path / "controller.sock")},
            "store": {"path": str(tmp_path / "intent.db")},
            "reconcile": {"drift_check_seconds": 5, "max_groups": 1024, "max_adjacencies": 1024},
            "nodes": [{"name": NODE, "address": f"unix:{sock}"}],
            "fpm": [{"node": NODE, "listen": f"127.0.0.1:{port}", "netns": lab.ns("dut"),
                     "stale_seconds": 60}],
        }))  # fmt: skip
        r = Router(lab, frr, tmp_path, agent, agent_stub)
        r.start_controller()
        frr.start(port)
        yield r
    finally:
        if r is not None:
            P.stop(r.controller)
        P.stop(agent)
        frr.stop()
        lab.down()


# -- traffic -------------------------------------------------------------------------------


def spec(dst: str) -> traffic.FrameSpec:
    v6 = ":" in dst
    return traffic.FrameSpec(
        family=6 if v6 else 4, src=L.GEN_V6 if v6 else L.GEN_V4, dst=dst,
        src_mac=L.GEN_MAC, dst_mac=L.DUT_IN_MAC,
    )  # fmt: skip


def is_test_frame(frame: bytes) -> bool:
    return traffic.frame_tag(frame) is not None


def through(lab: L.Lab, dst: str, duration: float = 2.0) -> int:
    """Sends FRAMES test frames to `dst` from gen; returns how many reached the sink."""
    sent = traffic.build_frames(spec(dst), (80,), 1) * FRAMES
    with traffic.Capture(
        L.SINK_IF, lab.ns("sink"), duration=duration, count=len(sent), keep=is_test_frame
    ) as cap:
        sock = traffic.open_socket(L.GEN_IF, lab.ns("gen"))
        try:
            traffic.send(sock, sent, duration=duration)
        finally:
            sock.close()
        return len(cap.wait(duration + 1))


class Flow:
    """A bounded stream of frames to `dst` (RATE for SECONDS) and its capture at the sink."""

    def __init__(self, lab: L.Lab, dst: str) -> None:
        self.count = int(RATE * SECONDS)
        self.capture = traffic.Capture(
            L.SINK_IF, lab.ns("sink"), duration=SECONDS + 30, count=self.count,
            keep=is_test_frame,
        ).start()  # fmt: skip
        argv = traffic.sender_argv(
            lab.ns("gen"), L.GEN_IF, spec(dst), (60,), flows=8, count=self.count,
            duration=SECONDS + 10, rate=RATE,
        )  # fmt: skip
        self.sender = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)

    def received(self) -> int:
        self.sender.wait(timeout=SECONDS + 30)
        return len(self.capture.wait(SECONDS + 30))


# -- the test ------------------------------------------------------------------------------


def test_frr_routes_carry_traffic_through_the_engine(
    router: Router,
    tables: tuple[list, list],  # type: ignore[type-arg]
) -> None:
    routes4, routes6 = tables
    r = router
    table = {str(n) for n in (*routes4, *routes6)}
    expected = table | {TO_SINK4, TO_SINK6, ECMP4, RTBH_PREFIX, f"{DISCARD_V4}/32"}
    if r.frr.nexthop_groups:  # inline, FRR hides the IPv6 next hop: not installed, counted
        expected.add(VIA_V6_PREFIX)
    started = time.monotonic()

    def installed() -> bool:
        return expected <= r.fib().keys()

    P.until(installed, 300, f"{len(expected)} BGP routes on the node (status: {r.status().bgp})",
           r.log)  # fmt: skip
    seconds = time.monotonic() - started
    fib = r.fib()
    v4_hop = (L.DUT_OUT, 0, ipaddress.ip_address(L.SINK_V4).packed)
    forward, blackhole = dataplane_pb2.ROUTE_KIND_FORWARD, dataplane_pb2.ROUTE_KIND_BLACKHOLE
    assert fib[TO_SINK4] == (forward, (v4_hop,))
    assert fib[RTBH_PREFIX][0] == blackhole, "RTBH: the 65535:666 route is a blackhole"
    kind, hops = fib[TO_SINK6]
    assert kind == forward and [(p, v) for p, v, _ in hops] == [(L.DUT_OUT, 0)]
    assert ipaddress.ip_address(hops[0][2]).is_link_local  # BGP's IPv6 next hop
    hop2 = (L.DUT_IN, 0, ipaddress.ip_address(L.GEN_V4).packed)
    P.until(lambda: r.fib()[ECMP4] == (forward, tuple(sorted((v4_hop, hop2)))), 60,
           "the ECMP prefix from both peers")  # fmt: skip
    assert UNOWNED4 not in fib
    status = r.status().bgp
    assert status.connected and status.sessions == 1
    assert status.not_installed.get("unowned_interface") == 1
    if r.frr.nexthop_groups:
        kind, hops = fib[VIA_V6_PREFIX]
        assert kind == forward and [(p, v) for p, v, _ in hops] == [(L.DUT_OUT, 0)]
        assert ipaddress.ip_address(hops[0][2]).version == 6
    else:
        assert VIA_V6_PREFIX not in fib
        assert status.not_installed.get("hidden_ipv6_next_hop") == 1
    assert status.routes >= len(expected)

    # Sources as route list shows them.
    listed = {p: (src, active) for p, src, active in r.list_routes(controller_pb2.ROUTE_SOURCE_BGP)}
    assert expected <= listed.keys()
    assert all(src == controller_pb2.ROUTE_SOURCE_BGP and active for src, active in listed.values())

    # Traffic follows the BGP routes.
    for dst in ("198.19.70.9", "2001:db8:170::9") + (
        ("198.19.46.9",) if r.frr.nexthop_groups else ()
    ):
        assert through(r.lab, dst) == FRAMES, f"frames to {dst} lost"
    assert through(r.lab, "198.19.66.9", duration=1.0) == 0, "RTBH forwarded"

    # The operator's route wins over BGP's, and BGP's comes back when it goes.
    assert r.stub is not None
    key = controller_pb2.RouteKey(node=NODE, prefix=c.prefix(TO_SINK4))
    unreachable = controller_pb2.RouteIntent(
        node=NODE, prefix=c.prefix(TO_SINK4), kind=dataplane_pb2.ROUTE_KIND_UNREACHABLE
    )
    r.stub.Apply(controller_pb2.ApplyRequest(routes=[unreachable]), timeout=10)
    P.until(lambda: r.fib()[TO_SINK4][0] == dataplane_pb2.ROUTE_KIND_UNREACHABLE, 30,
           "the operator's route on the node")  # fmt: skip
    both = [(s, a) for p, s, a in r.list_routes() if p == TO_SINK4]
    assert both == [(controller_pb2.ROUTE_SOURCE_STATIC, True),
                    (controller_pb2.ROUTE_SOURCE_BGP, False)]  # fmt: skip
    r.stub.Delete(controller_pb2.DeleteRequest(routes=[key]), timeout=10)
    P.until(lambda: r.fib()[TO_SINK4] == (forward, (v4_hop,)), 30, "BGP's route back")

    # A BGP session going down moves the ECMP prefix to the other path.
    r.frr.birdc2("disable", "g4")
    P.until(lambda: r.fib()[ECMP4] == (forward, (v4_hop,)), 60, "ECMP down to one path")
    assert through(r.lab, "198.19.71.9") == FRAMES, "frames to the ECMP prefix lost"

    # A withdrawal removes the routes.
    r.frr.birdc("disable", "s6")
    P.until(lambda: TO_SINK6 not in r.fib() and not (r.fib().keys() & {str(n) for n in routes6}),
           120, "the IPv6 withdrawals on the node")  # fmt: skip
    # The controller killed and started again under traffic: no frame lost, and the routes
    # it found on the node are kept until zebra's replay refreshes them.
    flow = Flow(r.lab, "198.19.70.9")
    time.sleep(SECONDS / 4)
    assert r.controller is not None
    r.controller.send_signal(signal.SIGKILL)
    r.controller.wait(timeout=20)
    r.start_controller()
    assert flow.received() == flow.count, "frames lost across the controller's restart"
    P.until(lambda: r.status().bgp.sessions >= 1 and r.status().bgp.stale_routes == 0, 120,
           "zebra's replay after the controller's restart")  # fmt: skip
    assert expected - {ECMP4, TO_SINK6} - {str(n) for n in routes6} <= r.fib().keys()

    # FRR killed and started again under traffic: nothing lost for routes that come back.
    flow = Flow(r.lab, "198.19.70.9")
    time.sleep(SECONDS / 4)
    r.frr.stop_daemons("bgpd", "staticd", "zebra", kill=True)
    r.frr.start_frr()
    assert flow.received() == flow.count, "frames lost across FRR's restart"
    P.until(lambda: r.status().bgp.connected and r.status().bgp.stale_routes == 0, 180,
           "FRR's routes back after its restart (every stale route refreshed)", r.log)  # fmt: skip
    assert r.fib()[TO_SINK4] == (forward, (v4_hop,))

    print(f"\nbgp lab ({'nexthop-groups' if r.frr.nexthop_groups else 'inline'}): "
          f"{len(expected)} routes from BIRD to the engine's FIB in {seconds:.1f} s")  # fmt: skip
