"""The controller steering real traffic: two labs (`cor-c<pid>a-…` and `cor-c<pid>b-…`,
removed afterwards), each with `corridor agent` hosting the engine on dut0/dut1 of its dut
namespace, both nodes programmed by one `corridor controller` process. Routes applied once
carry frames from gen to sink in both labs; a node's own route steers only its lab; the
controller killed (-9) while traffic flows costs no frame at the sink, and restarted it
finds intent intact and writes nothing to the nodes that are in sync. Run as root."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

import process_support as P
from controller_support import controller_document, toml
from corridor import lab as L
from corridor import traffic
from corridor.agent import client as c
from corridor.v1 import controller_pb2, controller_pb2_grpc, dataplane_pb2, dataplane_pb2_grpc

pytestmark = pytest.mark.lab  # network namespaces, real traffic, root

NODES = ("a", "b")
FRAMES = 64
TO_SINK4 = (L.SINK_V4, L.DUT_OUT, 0, 1)  # next hop: the sink, resolved by the agent
TO_SINK6 = (L.SINK_V6, L.DUT_OUT, 0, 1)
# The kill -9 run: a bounded sender at a modest rate, so every frame is the router's to lose.
RATE, SECONDS = 20_000, 3.0


def _agent_config(lab: L.Lab, sock: Path) -> str:
    return P.agent_config(lab, sock, v4_routes=10000, v6_routes=10000, objects=1024)


@dataclass
class Node:
    name: str
    lab: L.Lab
    process: subprocess.Popen
    log: Path
    stub: dataplane_pb2_grpc.DataplaneStub

    def read(self) -> dataplane_pb2.ReadResponse:
        """The whole FIB in one message (generation, adjacencies, routes)."""
        whole = dataplane_pb2.ReadResponse()
        for response in self.stub.Read(dataplane_pb2.ReadRequest(), timeout=10):
            whole.generation = response.generation
            whole.adjacencies.extend(response.adjacencies)
            whole.routes.extend(response.routes)
        return whole


class Controller:
    """The controller process, restartable; its channel outlives restarts."""

    def __init__(self, config: Path, sock: Path, log: Path) -> None:
        self.config, self.log = config, log
        self.address = f"unix:{sock}"
        self.channel = grpc.insecure_channel(self.address)
        self.stub = controller_pb2_grpc.ControllerStub(self.channel)
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = P.spawn(["controller", "--config", str(self.config)], self.log)

        def serving():
            if self.process.poll() is not None:
                raise AssertionError(f"the controller exited: {self.log.read_text()[-2000:]}")
            return self.stub.ListNodes(controller_pb2.ListNodesRequest(), timeout=1)

        P.until(serving, 30, "the controller serving", self.log)

    def kill9(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=20)

    def status(self, node: str) -> controller_pb2.NodeStatus:
        return self.stub.GetNodeStatus(controller_pb2.GetNodeStatusRequest(name=node), timeout=5)

    def wait_in_sync(self, node: str, revision: int, within: float = 30) -> object:
        def synced():
            s = self.status(node)
            return s if s.connected and s.in_sync and s.synced_revision >= revision else None

        return P.until(synced, within, f"node {node} in sync at revision {revision}", self.log)

    def apply(self, *routes: controller_pb2.RouteIntent) -> int:
        """Applies and waits for both nodes to hold the revision."""
        reply = self.stub.Apply(controller_pb2.ApplyRequest(routes=list(routes)), timeout=30)
        for node in NODES:
            self.wait_in_sync(node, reply.revision)
        return reply.revision

    def intent(self) -> list[bytes]:
        listed = self.stub.ListRoutes(controller_pb2.ListRoutesRequest(page_size=10_000))
        assert not listed.next_page_token
        return sorted(r.SerializeToString(deterministic=True) for r in listed.routes)


@dataclass
class World:
    nodes: dict[str, Node]
    controller: Controller


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    P.require("the controller's traffic tests", engine=("Engine",))
    d = tmp_path_factory.mktemp("controller-traffic")
    labs = {n: L.Lab(prefix=f"cor-c{os.getpid()}{n}-") for n in NODES}
    nodes: dict[str, Node] = {}
    controller: Controller | None = None
    try:
        for lab in labs.values():
            try:
                lab.up()
            except L.LabError as e:
                pytest.fail(f"cannot build the lab {lab.prefix}: {e}")
        for name, lab in labs.items():
            sock, config, log = d / f"{name}.sock", d / f"{name}.toml", d / f"{name}.log"
            config.write_text(_agent_config(lab, sock))
            process, stub, _ = P.start_agent(config, sock, log)
            nodes[name] = Node(name, lab, process, log, stub)
        config = d / "controller.toml"
        config.write_text(toml(controller_document(d, {n: f"unix:{d}/{n}.sock" for n in NODES})))
        controller = Controller(config, d / "controller.sock", d / "controller.log")
        controller.start()
        for name in NODES:
            controller.wait_in_sync(name, 0)
        yield World(nodes, controller)
    finally:
        if controller is not None:
            if controller.process is not None:
                P.stop(controller.process)
            controller.channel.close()
        for node in nodes.values():
            P.stop(node.process)
        for lab in labs.values():
            lab.down()


# -- helpers -----------------------------------------------------------------------------


def route(prefix: str, *hops: tuple[str, str, int, int], node: str = "") -> object:
    pb = controller_pb2.RouteIntent(node=node, prefix=c.prefix(prefix), kind=1)
    for gateway, port, vlan, weight in hops:
        pb.next_hops.add(
            gateway=ipaddress.ip_address(gateway).packed, port=port, vlan=vlan, weight=weight
        )
    return pb


def spec(dst: str) -> traffic.FrameSpec:
    v6 = ":" in dst
    return traffic.FrameSpec(
        family=6 if v6 else 4, src=L.GEN_V6 if v6 else L.GEN_V4, dst=dst,
        src_mac=L.GEN_MAC, dst_mac=L.DUT_IN_MAC,
    )  # fmt: skip


def mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def is_test_frame(frame: bytes) -> bool:
    return traffic.frame_tag(frame) is not None


def through(lab: L.Lab, dst: str, duration: float = 2.0) -> list[bytes]:
    """Sends FRAMES test frames to `dst` from gen; returns those captured at the sink."""
    sent = traffic.build_frames(spec(dst), (80,), 1) * FRAMES
    with traffic.Capture(
        L.SINK_IF, lab.ns("sink"), duration=duration, count=len(sent), keep=is_test_frame
    ) as cap:
        sock = traffic.open_socket(L.GEN_IF, lab.ns("gen"))
        try:
            traffic.send(sock, sent, duration=duration)
        finally:
            sock.close()
        return cap.wait(duration + 1)


def wait_usable(node: Node, within: float = 10.0) -> None:
    """Every adjacency of the node resolved (the agent's neighbour entries answered)."""

    def usable():
        adjacencies = node.read().adjacencies
        return adjacencies and all(
            a.state == dataplane_pb2.ADJACENCY_STATE_USABLE for a in adjacencies
        )

    P.until(usable, within, f"node {node.name}'s next hops usable", node.log)


# -- tests -------------------------------------------------------------------------------


def test_routes_applied_once_steer_traffic_in_both_labs(world: World) -> None:
    world.controller.apply(route("198.19.1.0/24", TO_SINK4), route("2001:db8:100::/48", TO_SINK6))
    for node in world.nodes.values():
        wait_usable(node)
        installed = node.read()
        assert {(a.port, a.gateway, a.neighbour_mac) for a in installed.adjacencies} == {
            (L.DUT_OUT, ipaddress.ip_address(L.SINK_V4).packed, mac(L.SINK_MAC)),
            (L.DUT_OUT, ipaddress.ip_address(L.SINK_V6).packed, mac(L.SINK_MAC)),
        }
        for dst in ("198.19.1.1", "2001:db8:100::1"):
            got = through(node.lab, dst)
            assert len(got) == FRAMES, f"lab {node.name}: {len(got)} of {FRAMES} to {dst}"
            # The agent filled both MACs: its port's and the neighbour's.
            assert all(f[0:6] == mac(L.SINK_MAC) and f[6:12] == mac(L.DUT_OUT_MAC) for f in got)


def test_a_route_for_one_node_steers_only_its_lab(world: World) -> None:
    world.controller.apply(route("198.19.2.0/24", TO_SINK4, node="a"))
    a, b = world.nodes["a"], world.nodes["b"]
    assert "198.19.2.0/24" in {c.prefix_text(r.prefix) for r in a.read().routes}
    assert "198.19.2.0/24" not in {c.prefix_text(r.prefix) for r in b.read().routes}
    got = through(a.lab, "198.19.2.1")
    assert len(got) == FRAMES, f"lab a: {len(got)} of {FRAMES} frames reached the sink"
    assert through(b.lab, "198.19.2.1", duration=1.0) == [], "node b forwarded a's route"


def corridor_json(controller: Controller, *args: str) -> dict:
    """`corridor ARGS --json` against the controller, as an operator runs it."""
    done = subprocess.run(
        [sys.executable, "-m", "corridor", *args, "--controller", controller.address, "--json"],
        env=dict(os.environ, PYTHONPATH=str(P.REPO / "control")),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (0, ""), (args, done.returncode, done.stderr)
    result: dict = json.loads(done.stdout)
    return result


def test_the_cli_shows_a_node_forwarding(world: World) -> None:
    """`route lookup`, `port list` and `counters` through the controller, on node a while it
    forwards: the member usable with the sink's MAC, the ports up, the frames counted on
    both ports, and frames with no route counted as such."""
    ctl, a = world.controller, world.nodes["a"]
    ctl.apply(route("198.19.2.0/24", TO_SINK4, node="a"))  # as in the test before
    wait_usable(a)
    found = corridor_json(ctl, "route", "lookup", "198.19.2.77", "--node", "a")
    assert found["route"]["prefix"] == "198.19.2.0/24" and found["route"]["kind"] == "forward"
    assert [(m["gateway"], m["port"], m["state"], m["mac"]) for m in found["members"]] == [
        (L.SINK_V4, L.DUT_OUT, "usable", L.SINK_MAC)
    ]
    assert corridor_json(ctl, "route", "lookup", "198.19.3.1", "--node", "a")["route"] is None

    ports = {p["name"]: p for p in corridor_json(ctl, "port", "list", "--node", "a")["ports"]}
    assert set(ports) == {L.DUT_IN, L.DUT_OUT}
    assert ports[L.DUT_IN]["link"] == "up" and ports[L.DUT_IN]["mac"] == L.DUT_IN_MAC, ports
    assert ports[L.DUT_IN]["mode"] in ("copy", "zero-copy"), ports
    assert ports[L.DUT_IN]["xdp"] in ("native", "generic"), ports

    def counted() -> tuple[dict, dict, dict]:
        c = corridor_json(ctl, "counters", "--node", "a")
        ifs = {(i["port"], i["vlan"]): i for i in c["interfaces"]}
        drops = {d["reason"]: d["packets"] for d in c["drops"] if d["port"] == L.DUT_IN}
        return ifs[(L.DUT_IN, 0)], ifs[(L.DUT_OUT, 0)], drops

    before_in, before_out, before_drops = counted()
    got = through(a.lab, "198.19.2.1")
    assert len(got) == FRAMES
    through(a.lab, "198.19.3.1", duration=1.0)  # no route: dropped and counted

    def grown():  # the engine publishes its counters every so often: poll
        rx, tx, drops = counted()
        grew = (
            rx["rx_packets"] - before_in["rx_packets"] >= 2 * FRAMES
            and tx["tx_packets"] - before_out["tx_packets"] >= FRAMES
            and drops.get("no_route", 0) - before_drops.get("no_route", 0) >= FRAMES
        )
        return (rx, tx, drops) if grew else None

    P.until(grown, 10, "node a's counters counting the frames", a.log)


def test_controller_killed_while_traffic_flows_loses_no_frame(world: World) -> None:
    ctl = world.controller
    ctl.apply(route("198.19.1.0/24", TO_SINK4))  # as in the first test: nothing new
    for node in world.nodes.values():
        wait_usable(node)
    intent = ctl.intent()
    generations = {n: node.read().generation for n, node in world.nodes.items()}

    count = int(RATE * SECONDS)
    captures, senders = {}, {}
    for name, node in world.nodes.items():
        captures[name] = traffic.Capture(
            L.SINK_IF, node.lab.ns("sink"), duration=SECONDS + 20, count=count,
            keep=is_test_frame,
        ).start()  # fmt: skip
    try:
        for name, node in world.nodes.items():
            argv = traffic.sender_argv(
                node.lab.ns("gen"), L.GEN_IF, spec("198.19.1.1"), (60,), flows=8,
                count=count, duration=SECONDS + 10, rate=RATE,
            )  # fmt: skip
            senders[name] = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        time.sleep(SECONDS / 4)
        ctl.kill9()
        killed_while_sending = all(s.poll() is None for s in senders.values())
        restart = threading.Thread(target=ctl.start)  # while the frames keep coming
        restart.start()
        sent = {}
        for name, sender in senders.items():
            out, _ = sender.communicate(timeout=SECONDS + 30)
            assert sender.returncode == 0, f"the sender in lab {name} failed"
            sent[name] = json.loads(out)["sent"]
        restart.join(60)
        received = {}
        for name, capture in captures.items():
            deadline = time.monotonic() + 5
            while len(capture.frames) < sent[name] and time.monotonic() < deadline:
                time.sleep(0.05)
            received[name] = len(capture.stop())
    finally:
        for sender in senders.values():
            if sender.poll() is None:
                sender.kill()
                sender.wait()
        for capture in captures.values():
            capture.stop()
    print(f"\nsent {sent}, received at the sinks {received} (controller killed -9 mid-way)")
    assert killed_while_sending, "the senders ended before the controller was killed"
    assert all(sent[n] == count for n in NODES), f"the senders sent {sent} of {count} each"
    assert received == sent, f"frames lost at the sinks: sent {sent}, received {received}"

    # Restarted: intent as it was, every node in sync with nothing written.
    assert ctl.process.poll() is None, "the restarted controller is not running"
    assert ctl.intent() == intent
    for name, node in world.nodes.items():
        status = ctl.wait_in_sync(name, 0)
        assert status.last_full_sync_operations == 0, status
        assert node.read().generation == generations[name], f"node {name} was written"
