"""The agent with the engine, end to end in a lab of its own (`cor-a<pid>-gen|dut|sink`,
removed afterwards): `corridor agent` runs as a process with the ports in the dut namespace;
routes written over gRPC steer real frames from gen to sink, a replaced route moves them,
counters over gRPC match what the sink received, ports show their real state, next hops by
gateway resolve through the kernel, an unresolved one is counted and visible, and a link
going down moves a two-member group's traffic to the other member and back. Run as root."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

import metrics_support as metrics
import process_support as P
from corridor import lab as L
from corridor import traffic
from corridor.agent import client as c
from corridor.v1 import dataplane_pb2, dataplane_pb2_grpc

pytestmark = pytest.mark.lab  # network namespaces, real traffic, root

ELECTION = 7
RT_PRIORITY = 5  # the workers' SCHED_FIFO priority: every test here runs them real-time
LINK_TIMEOUT = 5.0  # a link change must reach the groups within this
FRAMES = 64


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(lab: L.Lab, sock: Path, metrics_port: int) -> str:
    def vlans(port: str) -> str:
        items = [
            f'{{ id = {v.id}, addresses = ["{v.v4}/24", "{v.v6}/64"] }}'
            for v in L.VLANS
            if v.parent == port
        ]
        return "[" + ", ".join(items) + "]"

    return P.agent_config(
        lab, sock, v4_routes=10000, v6_routes=10000, objects=1024,
        top=f"realtime_priority = {RT_PRIORITY}",
        sections=f'[metrics]\naddress = "127.0.0.1:{metrics_port}"',
        in_port=f"vlans = {vlans(L.DUT_IN)}",
        out_port=f"vlans = {vlans(L.DUT_OUT)}",
    )  # fmt: skip


class Agent:
    def __init__(self, process: subprocess.Popen, sock: Path, log: Path) -> None:
        self.process, self.sock, self.log = process, sock, log
        self.channel = grpc.insecure_channel(f"unix:{sock}")
        self.stub = dataplane_pb2_grpc.DataplaneStub(self.channel)

    def write(self, *operations: dataplane_pb2.Operation) -> None:
        self.stub.Write(c.write_request(ELECTION, list(operations)), timeout=10)

    def adjacency(self, adjacency_id: int) -> dataplane_pb2.Adjacency:
        for response in self.stub.Read(dataplane_pb2.ReadRequest(), timeout=10):
            for a in response.adjacencies:
                if a.id == adjacency_id:
                    return a
        raise AssertionError(f"adjacency {adjacency_id} not in Read")

    def port(self, name: str) -> dataplane_pb2.Port:
        ports = self.stub.ListPorts(dataplane_pb2.ListPortsRequest(), timeout=10).ports
        return next(p for p in ports if p.name == name)

    def counters(self) -> dataplane_pb2.Counters:
        return self.stub.GetCounters(dataplane_pb2.GetCountersRequest(), timeout=10)

    def wait_state(self, adjacency_id: int, state: int, timeout: float) -> float:
        """Seconds until Read shows the adjacency in `state`; fails after `timeout`."""
        start = time.monotonic()
        while True:
            a = self.adjacency(adjacency_id)
            if a.state == state:
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                name = dataplane_pb2.AdjacencyState.Name
                raise AssertionError(
                    f"adjacency {adjacency_id} is {name(a.state)} after {timeout} s, "
                    f"expected {name(state)}; agent log: {self.log.read_text()[-2000:]}"
                )
            time.sleep(0.05)


@pytest.fixture(scope="module")
def lab() -> Iterator[L.Lab]:
    P.require("the agent's engine tests", engine=("Engine.set_icmp_limits",))
    lab = L.Lab(prefix=f"cor-a{os.getpid()}-")
    try:
        lab.up()
    except L.LabError as e:
        lab.down()
        pytest.fail(f"cannot build the lab: {e}")
    try:
        yield lab
    finally:
        lab.down()


@pytest.fixture(scope="module")
def agent(lab: L.Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    d = tmp_path_factory.mktemp("agent-engine")
    sock, config, log = d / "agent.sock", d / "agent.toml", d / "agent.log"
    metrics_port = _free_port()
    config.write_text(_config(lab, sock, metrics_port))
    process, _, channel = P.start_agent(config, sock, log)
    channel.close()
    agent = Agent(process, sock, log)
    agent.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        yield agent
    finally:
        agent.channel.close()
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise AssertionError(f"the agent did not stop on SIGTERM: {log.read_text()}") from None
        text = log.read_text()
        assert code == 0, text
        assert "engine stopped" in text and "Traceback" not in text, text
        assert not lab.has_xdp(), "an XDP program stayed attached after the agent stopped"


# -- helpers -----------------------------------------------------------------------------


def frames(dst: str, flows: int = 1, count: int = FRAMES) -> list[bytes]:
    spec = traffic.FrameSpec(dst=dst, src_mac=L.GEN_MAC, dst_mac=L.DUT_IN_MAC)
    built = traffic.build_frames(spec, (60,), flows)
    return [built[i % len(built)] for i in range(count)]


def send(lab: L.Lab, sent: list[bytes], *, on: tuple[str, str] = ("sink", L.SINK_IF),
         duration: float = 2.0) -> list[bytes]:  # fmt: skip
    """Sends from gen; returns the test frames captured on `on` (role, interface)."""
    role, iface = on
    gen_mac = mac(L.GEN_MAC)  # gen's own frames are not what the router sent

    def keep(f: bytes) -> bool:
        return traffic.frame_tag(f) is not None and f[6:12] != gen_mac

    with traffic.Capture(iface, lab.ns(role), duration=duration, count=len(sent), keep=keep) as cap:
        sock = traffic.open_socket(L.GEN_IF, lab.ns("gen"))
        try:
            traffic.send(sock, sent, duration=duration)
        finally:
            sock.close()
        return cap.wait(duration + 1)


def tx(counters: dataplane_pb2.Counters, port: str, vlan: int) -> int:
    for i in counters.interfaces:
        if i.port == port and i.vlan == vlan:
            return i.tx_packets
    raise AssertionError(f"no counters for {port} VLAN {vlan}")


def drops(counters: dataplane_pb2.Counters, reason: str) -> int:
    return sum(d.packets for d in counters.drops if d.reason == reason)


def mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def vlan_of(frame: bytes) -> int:
    return int.from_bytes(frame[14:16], "big") & 0xFFF if frame[12:14] == b"\x81\x00" else 0


# -- tests -------------------------------------------------------------------------------


def test_ports_show_the_engine_state(agent: Agent) -> None:
    ports = agent.stub.ListPorts(dataplane_pb2.ListPortsRequest(), timeout=10).ports
    assert [p.name for p in ports] == [L.DUT_IN, L.DUT_OUT]
    for p, want_mac in zip(ports, (L.DUT_IN_MAC, L.DUT_OUT_MAC), strict=True):
        assert p.link_state == dataplane_pb2.LINK_STATE_UP, p
        assert p.mode == dataplane_pb2.PORT_MODE_COPY, p  # veth: copy mode
        assert p.xdp_mode == dataplane_pb2.XDP_MODE_NATIVE, p  # veth has native XDP
        assert p.mac == mac(want_mac) and p.mtu == 1500 and p.queues == 1


def test_workers_run_at_the_configured_realtime_priority(agent: Agent) -> None:
    tasks = Path(f"/proc/{agent.process.pid}/task")
    workers = [int(t.name) for t in tasks.iterdir()
               if (t / "comm").read_text().startswith("corridor-w")]  # fmt: skip
    assert workers, f"no corridor-w thread in the agent: {sorted(tasks.iterdir())}"
    for t in workers:
        assert os.sched_getscheduler(t) == os.SCHED_FIFO, f"worker {t} is not SCHED_FIFO"
        assert os.sched_getparam(t).sched_priority == RT_PRIORITY
    # The agent's own threads (the event loop) stay ordinary.
    assert os.sched_getscheduler(agent.process.pid) == os.SCHED_OTHER


def test_ports_carry_their_kernel_ifindex(lab: L.Lab, agent: Agent) -> None:
    # What the controller maps a routing daemon's output interfaces with (FPM's RTA_OIF).
    shown = subprocess.run(
        ["ip", "-n", lab.ns("dut"), "-j", "link", "show"],
        check=True, capture_output=True, text=True, timeout=10,
    ).stdout  # fmt: skip
    kernel = {link["ifname"]: link["ifindex"] for link in json.loads(shown)}
    listed = agent.stub.ListPorts(dataplane_pb2.ListPortsRequest(), timeout=10).ports
    read = next(iter(agent.stub.Read(dataplane_pb2.ReadRequest(), timeout=10))).ports
    for ports in (listed, read):
        assert {p.name: p.ifindex for p in ports} == {n: kernel[n] for n in (L.DUT_IN, L.DUT_OUT)}
        for p in ports:
            assert len(p.sub_interfaces) == sum(v.parent == p.name for v in L.VLANS)
            for s in p.sub_interfaces:
                # A VLAN device exists only where the kernel has 802.1Q; else 0 (missing).
                want = kernel[f"{p.name}.{s.vlan}"] if lab.kernel_vlans else 0
                assert s.ifindex == want, (p.name, s.vlan, kernel)


def test_an_ipv4_route_forwards_via_an_ipv6_gateway(lab: L.Lab, agent: Agent) -> None:
    # RFC 8950: BGP at an exchange gives IPv4 routes IPv6 next hops.
    agent.write(
        set_gateway(40, L.DUT_OUT, 0, L.SINK_V6),
        c.set_group(40, [(40, 1)]),
        c.set_route("198.18.140.0/24", 40),
    )
    agent.wait_state(40, dataplane_pb2.ADJACENCY_STATE_USABLE, LINK_TIMEOUT)
    spec = traffic.FrameSpec(
        family=4, src=L.GEN_V4, dst="198.18.140.1", src_mac=L.GEN_MAC, dst_mac=L.DUT_IN_MAC
    )
    got = send(lab, traffic.build_frames(spec, (80,), 1) * 16)
    assert len(got) == 16 and all(f[0:6] == mac(L.SINK_MAC) for f in got)


def test_routes_steer_traffic_and_counters_match(lab: L.Lab, agent: Agent) -> None:
    agent.write(
        c.set_adjacency(1, L.DUT_OUT, 0, L.DUT_OUT_MAC, L.SINK_MAC),
        c.set_adjacency(2, L.DUT_OUT, 20, L.DUT_OUT_MAC, L.SINK_MAC),
        c.set_group(1, [(1, 1)]),
        c.set_group(2, [(2, 1)]),
        c.set_route("198.19.1.0/24", 1),
    )
    before = agent.counters()
    got = send(lab, frames("198.19.1.1"))
    after = agent.counters()
    assert len(got) == FRAMES, f"{len(got)} of {FRAMES} frames reached the sink"
    assert all(f[0:6] == mac(L.SINK_MAC) and f[6:12] == mac(L.DUT_OUT_MAC) for f in got)
    assert all(vlan_of(f) == 0 for f in got)
    assert tx(after, L.DUT_OUT, 0) - tx(before, L.DUT_OUT, 0) == len(got)

    # Replaced over gRPC: the same destination now leaves on VLAN 20.
    agent.write(c.set_route("198.19.1.0/24", 2))
    before = agent.counters()
    got = send(lab, frames("198.19.1.1"))
    after = agent.counters()
    assert len(got) == FRAMES
    assert all(vlan_of(f) == 20 for f in got), "frames did not move to VLAN 20"
    assert tx(after, L.DUT_OUT, 20) - tx(before, L.DUT_OUT, 20) == len(got)
    assert tx(after, L.DUT_OUT, 0) == tx(before, L.DUT_OUT, 0)


def set_gateway(adjacency_id: int, port: str, vlan: int, gateway: str) -> dataplane_pb2.Operation:
    import ipaddress

    adjacency = dataplane_pb2.Adjacency(
        id=adjacency_id, port=port, vlan=vlan, gateway=ipaddress.ip_address(gateway).packed
    )
    return dataplane_pb2.Operation(action=dataplane_pb2.ACTION_SET, adjacency=adjacency)


def test_a_gateway_resolves_through_the_kernel(lab: L.Lab, agent: Agent) -> None:
    lab.ip("dut", "neigh", "flush", "dev", L.DUT_OUT, check=False)
    agent.write(
        set_gateway(10, L.DUT_OUT, 0, L.SINK_V4),
        c.set_group(10, [(10, 1)]),
        c.set_route("198.19.2.0/24", 10),
    )
    agent.wait_state(10, dataplane_pb2.ADJACENCY_STATE_USABLE, LINK_TIMEOUT)
    a = agent.adjacency(10)
    assert a.neighbour_mac == mac(L.SINK_MAC) and a.gateway == bytes([198, 18, 1, 2])
    assert not a.src_mac and not a.dst_mac  # Read gives back what was written
    neigh = lab.ip("dut", "neigh", "show", L.SINK_V4, "dev", L.DUT_OUT).stdout
    assert "managed" in neigh, f"no managed neighbour entry: {neigh!r}"
    got = send(lab, frames("198.19.2.1"))
    assert len(got) == FRAMES, f"{len(got)} of {FRAMES} frames reached the sink"
    assert all(f[0:6] == mac(L.SINK_MAC) and f[6:12] == mac(L.DUT_OUT_MAC) for f in got)


def test_an_unresolved_gateway_is_counted_and_drops(lab: L.Lab, agent: Agent) -> None:
    agent.write(
        set_gateway(11, L.DUT_OUT, 0, "198.18.1.99"),  # nobody has it
        c.set_group(11, [(11, 1)]),
        c.set_route("198.19.3.0/24", 11),
    )
    time.sleep(1.0)
    assert agent.adjacency(11).state == dataplane_pb2.ADJACENCY_STATE_UNRESOLVED
    before = agent.counters()
    assert before.next_hops.unresolved >= 1 and before.next_hops.empty_groups >= 1
    got = send(lab, frames("198.19.3.1"), duration=1.0)
    after = agent.counters()
    assert got == [], "an unresolved next hop forwarded"
    assert drops(after, "unknown_egress") - drops(before, "unknown_egress") == FRAMES


@pytest.mark.slow  # the agent keeps an unused entry for UNUSED_SECONDS (10 s)
def test_a_neighbour_entry_no_adjacency_uses_is_removed(lab: L.Lab, agent: Agent) -> None:
    gateway = "198.18.1.98"  # nobody has it: the entry stays (incomplete or failed)

    def entry() -> str:
        return lab.ip("dut", "neigh", "show", gateway, "dev", L.DUT_OUT).stdout.strip()

    def wait(done: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, what
            time.sleep(0.2)

    agent.write(set_gateway(12, L.DUT_OUT, 0, gateway), c.set_group(12, [(12, 1)]))
    wait(lambda: "managed" in entry(), LINK_TIMEOUT, "the agent made no managed entry")
    # Another agent-made entry still in use stays.
    agent.write(set_gateway(13, L.DUT_OUT, 0, L.SINK_V4))
    wait(lambda: "managed" in lab.ip("dut", "neigh", "show", L.SINK_V4, "dev", L.DUT_OUT).stdout,
         LINK_TIMEOUT, "no entry for the sink")  # fmt: skip
    agent.write(c.delete_group(12), c.delete_adjacency(12))
    wait(lambda: entry() == "", 30.0, f"the unused entry stayed: {entry()!r}")
    assert "managed" in lab.ip("dut", "neigh", "show", L.SINK_V4, "dev", L.DUT_OUT).stdout
    agent.write(c.delete_adjacency(13))


def test_link_down_moves_a_group_to_its_other_member_and_back(lab: L.Lab, agent: Agent) -> None:
    # Group 20: one member toward the sink (dut1), one back out of dut0 toward gen.
    # Group 21: the sink member alone, left empty while the link is down.
    agent.write(
        c.set_adjacency(20, L.DUT_OUT, 0, L.DUT_OUT_MAC, L.SINK_MAC),
        c.set_adjacency(21, L.DUT_IN, 0, L.DUT_IN_MAC, L.GEN_MAC),
        c.set_group(20, [(20, 1), (21, 1)]),
        c.set_group(21, [(20, 1)]),
        c.set_route("198.19.4.0/24", 20),
        c.set_route("198.19.5.0/24", 21),
    )
    agent.wait_state(20, dataplane_pb2.ADJACENCY_STATE_USABLE, LINK_TIMEOUT)
    many = frames("198.19.4.1", flows=32, count=128)
    both = send(lab, many, duration=1.0)
    assert both, "nothing of the two-member group reached the sink while both were up"
    routes_before = [
        r for resp in agent.stub.Read(dataplane_pb2.ReadRequest(), timeout=10) for r in resp.routes
    ]
    # Admin down would flush the sink's IPv6 addresses, which later tests resolve.
    lab.sysctl("sink", "net.ipv6.conf.all.keep_addr_on_down", 1)
    lab.ip("sink", "link", "set", L.SINK_IF, "down")
    try:
        took = agent.wait_state(20, dataplane_pb2.ADJACENCY_STATE_LINK_DOWN, LINK_TIMEOUT)
        print(f"\nlink down seen in Read {took * 1000:.0f} ms after `ip link set down`")
        # The engine's own view of the port agrees (its supervisor polls every 100 ms).
        deadline = time.monotonic() + LINK_TIMEOUT
        while agent.port(L.DUT_OUT).link_state != dataplane_pb2.LINK_STATE_DOWN:
            assert time.monotonic() < deadline, "ListPorts does not show dut1 down"
            time.sleep(0.05)
        at_gen = send(lab, many, on=("gen", L.GEN_IF), duration=1.5)
        assert len(at_gen) == len(many), (
            f"{len(at_gen)} of {len(many)} frames took the remaining member ({took:.2f} s after"
            " the link went down)"
        )
        assert all(f[0:6] == mac(L.GEN_MAC) for f in at_gen)
        # The group left empty drops and counts.
        before = agent.counters()
        assert before.next_hops.link_down >= 1 and before.next_hops.empty_groups >= 1
        lost = send(lab, frames("198.19.5.1"), on=("gen", L.GEN_IF), duration=1.0)
        after = agent.counters()
        assert lost == []
        assert drops(after, "unknown_egress") - drops(before, "unknown_egress") == FRAMES
    finally:
        lab.ip("sink", "link", "set", L.SINK_IF, "up")
    agent.wait_state(20, dataplane_pb2.ADJACENCY_STATE_USABLE, LINK_TIMEOUT)
    deadline = time.monotonic() + LINK_TIMEOUT
    back: list[bytes] = []
    while not back and time.monotonic() < deadline:  # the engine re-attaches the port
        back = send(lab, many, duration=0.5)
    assert back, "traffic did not come back to the sink after the link came up"
    routes_after = [
        r for resp in agent.stub.Read(dataplane_pb2.ReadRequest(), timeout=10) for r in resp.routes
    ]
    assert routes_after == routes_before, "routes were touched"


def test_metrics_export_the_engine_counters(lab: L.Lab, agent: Agent) -> None:
    send(lab, frames("198.19.1.1"))  # route of the first test: some traffic counted
    counters = agent.counters()
    with urllib.request.urlopen(agent.metrics_url, timeout=10) as reply:
        text = reply.read().decode()
    samples = metrics.samples(text)
    # The engine's families, clean and in the scheme too (test_metrics.py: the rest).
    metrics.promtool_check(text)
    assert "_created" not in text
    kinds = metrics.families(text)
    assert {"corridor_engine_drops_total", "corridor_engine_port_up"} <= kinds.keys()
    for name, kind in kinds.items():
        assert name.startswith(("corridor_agent_", "corridor_engine_")), name
        assert (kind == "counter") == name.endswith("_total"), (name, kind)
    # The engine's names that deploy/ (dashboard, alerts) uses are all served.
    served = {series.partition("{")[0] for series in samples}
    engine = {n for n in metrics.deploy_metric_names() if n.startswith("corridor_engine_")}
    assert engine and engine <= served, sorted(engine - served)
    key = f'corridor_engine_tx_packets_total{{port="{L.DUT_OUT}",vlan="20"}}'
    assert samples.get(key, 0) >= tx(counters, L.DUT_OUT, 20) > 0, key
    assert samples[f'corridor_engine_port_up{{port="{L.DUT_OUT}"}}'] == 1
    assert samples['corridor_agent_next_hops{state="unresolved"}'] >= 1
    # Drops by ingress port: the frames to a group with no usable member came in on DUT_IN.
    key = f'corridor_engine_drops_total{{port="{L.DUT_IN}",reason="unknown_egress",worker="0"}}'
    assert samples[key] >= FRAMES, key
    by_port = {
        d.port: d.packets for d in counters.drops if d.reason == "unknown_egress" and d.worker == 0
    }
    assert by_port[L.DUT_IN] >= FRAMES and by_port[L.DUT_OUT] == 0, by_port


def test_ipv6_and_vlan_gateways_resolve(lab: L.Lab, agent: Agent) -> None:
    ops = [set_gateway(30, L.DUT_OUT, 0, L.SINK_V6), c.set_group(30, [(30, 1)])]
    ops.append(c.set_route("2001:db8:100:30::/64", 30))
    if lab.kernel_vlans:  # the VLAN device dut1.20 exists: ARP on VLAN 20
        v = L.VLAN_BY_ID[20]
        ops += [set_gateway(31, L.DUT_OUT, 20, v.peer_v4), c.set_group(31, [(31, 1)])]
    agent.write(*ops)
    agent.wait_state(30, dataplane_pb2.ADJACENCY_STATE_USABLE, LINK_TIMEOUT)
    assert agent.adjacency(30).neighbour_mac == mac(L.SINK_MAC)
    spec = traffic.FrameSpec(
        family=6, src=L.GEN_V6, dst="2001:db8:100:30::1", src_mac=L.GEN_MAC, dst_mac=L.DUT_IN_MAC
    )
    got = send(lab, traffic.build_frames(spec, (80,), 1) * 16)
    assert len(got) == 16 and all(f[0:6] == mac(L.SINK_MAC) for f in got)
    if lab.kernel_vlans:
        agent.wait_state(31, dataplane_pb2.ADJACENCY_STATE_USABLE, LINK_TIMEOUT)
        assert agent.adjacency(31).neighbour_mac == mac(L.SINK_MAC)


def test_every_steered_frame_is_received_or_counted_lost(lab: L.Lab, agent: Agent) -> None:
    """A burst faster than one worker takes: whatever gen0 put on the wire is either
    received by the worker or counted as lost at its AF_XDP rx ring, over gRPC and in the
    metrics, so an operator can see every frame."""
    agent.write(
        c.set_adjacency(1, L.DUT_OUT, 0, L.DUT_OUT_MAC, L.SINK_MAC),
        c.set_group(1, [(1, 1)]),
        c.set_route("198.19.1.0/24", 1),
    )

    def totals(counters: dataplane_pb2.Counters) -> tuple[int, int]:
        rx = sum(w.rx_packets for w in counters.workers)
        lost = sum(w.rx_ring_dropped for w in counters.workers)
        listed = sum(d.packets for d in counters.drops if d.reason == "rx_ring_dropped")
        assert lost == listed, "rx_ring_dropped differs between workers and drops"
        return rx, lost

    gen_before = lab.link_stats(lab.ns("gen"), L.GEN_IF)["tx_packets"]
    rx0, lost0 = totals(agent.counters())
    spec = traffic.FrameSpec(
        src=L.GEN_V4, dst="198.19.1.1", src_mac=L.GEN_MAC, dst_mac=L.DUT_IN_MAC
    )
    traffic.flood(lab.ns("gen"), L.GEN_IF, spec, count=60_000, processes=2, duration=30)
    time.sleep(0.5)
    rx1, lost1 = totals(agent.counters())
    put = lab.link_stats(lab.ns("gen"), L.GEN_IF)["tx_packets"] - gen_before
    received, lost = rx1 - rx0, lost1 - lost0
    # A few frames of the kernel's own (neighbour discovery) go to the kernel, not the engine.
    assert put - 5 <= received + lost <= put, (put, received, lost)


def test_sighup_gives_the_running_engine_new_icmp_limits(lab: L.Lab, agent: Agent) -> None:
    """A new [icmp] in the file and SIGHUP: the running workers take it (port burst 3, no
    refill; the per-source bucket out of the way), without a restart."""
    config = agent.log.parent / "agent.toml"
    original = config.read_text()

    def icmp_sent() -> float:
        with urllib.request.urlopen(agent.metrics_url, timeout=10) as reply:
            samples = metrics.samples(reply.read().decode())
        return sum(v for k, v in samples.items() if k.startswith(SENT))

    def reload(text: str) -> str:
        offset = len(agent.log.read_text())
        config.write_text(text)
        agent.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for line in agent.log.read_text()[offset:].splitlines():
                if "corridor.reload: reloaded " in line or "reload refused" in line:
                    return line
            time.sleep(0.05)
        raise AssertionError(f"no reload in 30 s: {agent.log.read_text()[offset:]}")

    limits = (
        "\n[icmp]\nport_rate = 0\nport_burst = 3\nsource_rate = 1000000\nsource_burst = 1000000\n"
    )
    line = reload(original + limits)
    try:
        assert "reloaded" in line and "icmp" in line, line
        time.sleep(0.1)  # each worker takes them at its next pass
        before = icmp_sent()
        spec = traffic.FrameSpec(dst="198.19.1.1", ttl=1, src_mac=L.GEN_MAC, dst_mac=L.DUT_IN_MAC)
        sock = traffic.open_socket(L.GEN_IF, lab.ns("gen"))
        try:
            traffic.send(sock, traffic.build_frames(spec, (60,), 1) * 100, duration=2)
        finally:
            sock.close()
        deadline = time.monotonic() + 10
        while icmp_sent() - before < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        assert icmp_sent() - before == 3, _icmp_samples(agent)
    finally:
        assert "reloaded" in reload(original)
    assert agent.process.poll() is None, "SIGHUP ended the agent"


SENT = 'corridor_engine_icmp_errors_total{outcome="icmp_sent"'


def _icmp_samples(agent: Agent) -> dict[str, float]:
    with urllib.request.urlopen(agent.metrics_url, timeout=10) as reply:
        samples = metrics.samples(reply.read().decode())
    return {k: v for k, v in samples.items() if "icmp" in k or "ttl" in k}
