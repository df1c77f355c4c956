"""Controller high availability, as it fails: a 3-member etcd cluster (Debian's etcd, on
loopback ports), 3 `corridor controller` processes on it, and 2 `corridor agent`
processes hosting the engine in labs of their own (`cor-h<pid>a-…`, `cor-h<pid>b-…`,
removed afterwards). The leading controller killed (-9) while routes are applied in a loop
loses nothing it acknowledged and the labs forward without loss; a follower leads within
the lease and writes nothing to nodes in sync; one etcd member down changes nothing, two
refuse writes cleanly while reads and forwarding go on, and their return resumes service
without a restart; a leader paused (SIGSTOP) past its lease is refused by the agents once it
wakes, in favour of the newer leader. Run as root."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

import process_support as P
from controller_support import controller_document, toml
from corridor import lab as L
from corridor import traffic
from corridor.agent import client as c
from corridor.v1 import controller_pb2, controller_pb2_grpc
from etcd_support import EtcdCluster, free_port
from test_controller_traffic import (
    TO_SINK4,
    Node,
    _agent_config,
    is_test_frame,
    route,
    spec,
    through,
    wait_usable,
)

pytestmark = pytest.mark.lab  # network namespaces, real traffic, root

NODES = ("a", "b")
TTL = 5  # the default lease
RATE, SECONDS = 10_000, 12.0  # the kill -9 run's traffic: spans the failover
REFUSED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.FAILED_PRECONDITION)


@dataclass
class Ctl:
    """One controller process, restartable; its TCP address is its name in the cluster."""

    name: str
    config: Path
    log: Path
    process: subprocess.Popen | None = None
    channel: grpc.Channel = field(init=False)
    stub: controller_pb2_grpc.ControllerStub = field(init=False)

    def __post_init__(self) -> None:
        self.channel = grpc.insecure_channel(self.name)
        self.stub = controller_pb2_grpc.ControllerStub(self.channel)

    def start(self) -> None:
        self.process = P.spawn(["controller", "--config", str(self.config)], self.log)

        def serving():
            if self.process.poll() is not None:
                raise AssertionError(f"controller exited: {self.log.read_text()[-3000:]}")
            return self.stub.ListNodes(controller_pb2.ListNodesRequest(), timeout=1)

        P.until(serving, 60, f"controller {self.name} serving", self.log)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)
        if signum == signal.SIGKILL:
            self.process.wait(timeout=20)

    def leadership(self) -> controller_pb2.Leadership | None:
        try:
            return self.stub.GetStats(controller_pb2.GetStatsRequest(), timeout=2).leadership
        except grpc.RpcError:
            return None

    def status(self, node: str) -> controller_pb2.NodeStatus:
        return self.stub.GetNodeStatus(controller_pb2.GetNodeStatusRequest(name=node), timeout=5)

    def wait_in_sync(self, node: str, revision: int, within: float = 60) -> object:
        def synced():
            s = self.status(node)
            return s if s.connected and s.in_sync and s.synced_revision >= revision else None

        return P.until(
            synced, within, f"node {node} in sync at {revision} via {self.name}", self.log
        )

    def intent(self) -> dict[str, bytes]:
        out, token = {}, ""
        while True:
            listed = self.stub.ListRoutes(
                controller_pb2.ListRoutesRequest(page_size=10_000, page_token=token), timeout=30
            )
            for r in listed.routes:
                out[f"{r.node}|{c.prefix_text(r.prefix)}"] = r.SerializeToString(deterministic=True)
            token = listed.next_page_token
            if not token:
                return out


@dataclass
class World:
    etcd: EtcdCluster
    nodes: dict[str, Node]
    ctls: list[Ctl]

    def leader(self, within: float = 30) -> Ctl:
        """The one running controller that leads (and that every other names)."""

        def one():
            running = [x for x in self.ctls if x.running()]
            views = {x.name: x.leadership() for x in running}
            leading = [x for x in running if views[x.name] is not None and views[x.name].leading]
            if len(leading) != 1:
                return None
            if any(v is None or v.leader != leading[0].name for v in views.values()):
                return None
            return leading[0]

        return P.until(one, within, "one controller leading, named by every other")

    def apply(self, *routes, within: float = 60) -> int:
        """Applies through whichever controller takes it; the revision."""
        deadline = time.monotonic() + within
        last = None
        while time.monotonic() < deadline:
            for ctl in self.ctls:
                if not ctl.running():
                    continue
                try:
                    request = controller_pb2.ApplyRequest(routes=list(routes))
                    return ctl.stub.Apply(request, timeout=10).revision
                except grpc.RpcError as e:
                    last = e
            time.sleep(0.1)
        raise AssertionError(f"no controller took the batch in {within} s: {last}")

    def routes(self, node: str) -> dict[str, tuple[int, int]]:
        return {c.prefix_text(r.prefix): (r.kind, r.next_hop_group_id) for r in
                self.nodes[node].read().routes}  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    P.require("the controller HA lab test", engine=("Engine",))
    d = tmp_path_factory.mktemp("controller-ha")
    etcd = EtcdCluster(d / "etcd", 3)
    labs = {n: L.Lab(prefix=f"cor-h{os.getpid()}{n}-") for n in NODES}
    nodes: dict[str, Node] = {}
    ctls: list[Ctl] = []
    try:
        etcd.start()
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
        for i in range(3):
            cd = d / f"c{i}"
            cd.mkdir()
            address = f"127.0.0.1:{free_port()}"
            document = controller_document(cd, {n: f"unix:{d}/{n}.sock" for n in NODES})
            document["listen"] = {"unix": str(cd / "controller.sock"), "tcp": address}
            document["store"] = {"backend": "etcd", "endpoints": etcd.endpoints}
            config = cd / "controller.toml"
            config.write_text(toml(document))
            ctls.append(Ctl(address, config, cd / "controller.log"))
        for ctl in ctls:
            ctl.start()
        world = World(etcd, nodes, ctls)
        leader = world.leader()
        for name in NODES:
            leader.wait_in_sync(name, 0)
        yield world
    finally:
        for ctl in ctls:
            if ctl.process is not None and ctl.process.poll() is None:
                ctl.process.send_signal(signal.SIGCONT)
                P.stop(ctl.process)
            ctl.channel.close()
        for node in nodes.values():
            P.stop(node.process)
        for lab in labs.values():
            lab.down()
        etcd.stop()


def restore(world: World) -> None:
    """Every controller and etcd member running again (after a test that stopped some)."""
    for i, m in enumerate(world.etcd.members):
        if m.process is None or m.process.poll() is not None:
            world.etcd.restart(i)
    world.etcd.wait_healthy(world.etcd.members)
    for ctl in world.ctls:
        if ctl.process is not None and ctl.process.poll() is None:
            ctl.process.send_signal(signal.SIGCONT)
        else:
            ctl.start()
    world.leader(within=60)


def sink_route(i: int) -> object:
    """The i-th route of the loop: a /28 in 198.19.128.0/17, toward the sink."""
    prefix = ipaddress.ip_network((int(ipaddress.ip_address("198.19.128.0")) + 16 * i, 28))
    return route(str(prefix), TO_SINK4)


def test_leader_killed_while_applying_loses_nothing_acknowledged(world: World) -> None:
    base = world.apply(route("198.19.1.0/24", TO_SINK4))
    old = world.leader()
    for name in NODES:
        old.wait_in_sync(name, base)
        wait_usable(world.nodes[name])
    node_a = world.nodes["a"]

    acked: dict[int, int] = {}  # route index -> acknowledged revision
    tried: set[int] = set()
    refusals: dict[str, int] = {}
    stop = threading.Event()

    def apply_loop() -> None:
        i, target = 0, 0
        deadline = time.monotonic() + 120
        while not stop.is_set() and time.monotonic() < deadline:
            ctl = world.ctls[target % len(world.ctls)]
            if not ctl.running():
                target += 1
                continue
            tried.add(i)
            try:
                reply = ctl.stub.Apply(
                    controller_pb2.ApplyRequest(routes=[sink_route(i)]), timeout=10
                )
            except grpc.RpcError as e:
                refusals[e.code().name] = refusals.get(e.code().name, 0) + 1
                target += 1  # the same route again, elsewhere (a retry of the same form)
                time.sleep(0.02)
                continue
            acked[i] = reply.revision
            i += 1

    count = int(RATE * SECONDS)
    capture = traffic.Capture(
        L.SINK_IF, node_a.lab.ns("sink"), duration=SECONDS + 30, count=count, keep=is_test_frame
    ).start()
    argv = traffic.sender_argv(
        node_a.lab.ns("gen"), L.GEN_IF, spec("198.19.1.1"), (60,), flows=8,
        count=count, duration=SECONDS + 20, rate=RATE,
    )  # fmt: skip
    sender = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    loop = threading.Thread(target=apply_loop)
    try:
        loop.start()
        P.until(lambda: len(acked) >= 20, 60, "20 routes acknowledged before the kill")
        killed = time.monotonic()
        old.signal(signal.SIGKILL)
        before_kill = len(acked)
        new = world.leader(within=60)
        led = time.monotonic() - killed
        P.until(lambda: len(acked) >= before_kill + 20, 60, "20 routes acknowledged after")
        stop.set()
        loop.join(30)
        last = max(acked.values())
        for name in NODES:
            new.wait_in_sync(name, last)
        synced = time.monotonic() - killed
        out, _ = sender.communicate(timeout=SECONDS + 60)
        sent = json.loads(out)["sent"]
        deadline = time.monotonic() + 5
        while len(capture.frames) < sent and time.monotonic() < deadline:
            time.sleep(0.05)
        received = len(capture.stop())
    finally:
        stop.set()
        if sender.poll() is None:
            sender.kill()
            sender.wait()
        capture.stop()
    print(
        f"\nleader {old.name} killed -9: {new.name} led after {led:.2f} s, nodes in sync "
        f"after {synced:.2f} s; {len(acked)} routes acknowledged ({before_kill} before the "
        f"kill), refusals {refusals}; frames sent {sent}, received {received}"
    )
    assert new is not old and new.name != old.name
    # Revisions: one per acknowledged batch, never twice the same.
    assert len(set(acked.values())) == len(acked)
    intent = new.intent()
    one_form = route("198.19.128.0/28", TO_SINK4)
    for i in acked:
        want = sink_route(i)
        assert intent.get(f"|{c.prefix_text(want.prefix)}") is not None, f"route {i} lost"
    # Every route of the loop in intent is in its one form, acknowledged or not.
    for key, value in intent.items():
        got = controller_pb2.RouteIntent.FromString(value)
        if key.startswith("|198.19.1") and key != "|198.19.1.0/24":
            assert list(got.next_hops) == list(one_form.next_hops), key
    assert all(i in tried for i in acked)
    for name in NODES:
        held = world.routes(name)
        group = held["198.19.1.0/24"][1]
        for i in acked:
            prefix = c.prefix_text(sink_route(i).prefix)
            assert held.get(prefix) == (1, group), (name, prefix, held.get(prefix))
        # What intent holds, the node holds: nothing more of the loop's routes.
        loop_routes = {p for p in held if p.startswith("198.19.1") and p.endswith("/28")}
        assert loop_routes == {k[1:] for k in intent if k.endswith("/28")}
    assert sent == count, f"the sender sent {sent} of {count}"
    assert received == sent, f"frames lost at the sink: sent {sent}, received {received}"
    # The killed controller comes back as a follower of the new leader.
    old.start()
    assert world.leader() is new
    view = old.leadership()
    assert view is not None and not view.leading and view.leader == new.name


def test_a_new_leader_writes_nothing_to_nodes_in_sync(world: World) -> None:
    restore(world)
    leader = world.leader()
    revision = world.apply(route("198.19.2.0/24", TO_SINK4))
    for name in NODES:
        leader.wait_in_sync(name, revision)
    generations = {n: world.nodes[n].read().generation for n in NODES}
    before = leader.leadership()
    leader.signal(signal.SIGKILL)
    new = world.leader(within=60)
    for name in NODES:
        status = new.wait_in_sync(name, revision)
        assert status.last_full_sync_operations == 0, status
        assert status.leadership.leading and status.leadership.name == new.name
        assert world.nodes[name].read().generation == generations[name], f"{name} was written"
    after = new.leadership()
    assert after.election_id > before.election_id
    leader.start()


def test_etcd_members_lost_one_then_two_then_back(world: World) -> None:
    restore(world)
    etcd = world.etcd
    # One member down: nothing changes for clients.
    etcd.kill(0)
    revision = world.apply(route("198.19.3.0/24", TO_SINK4))
    leader = world.leader()
    for name in NODES:
        leader.wait_in_sync(name, revision)
    assert "198.19.3.0/24" in world.routes("a")
    P.until(
        lambda: all(
            x.stub.GetStats(controller_pb2.GetStatsRequest(), timeout=5).revision >= revision
            for x in world.ctls
        ),
        30,
        "every controller holding the revision",
    )
    # Two down: no quorum. Writes are refused cleanly by every controller; reads and
    # forwarding go on.
    etcd.kill(1)
    request = controller_pb2.ApplyRequest(routes=[route("198.19.4.0/24", TO_SINK4)])

    seen: dict[str, str] = {}

    def every_one_refuses():
        words = {}
        for ctl in world.ctls:
            try:
                ctl.stub.Apply(request, timeout=30)
            except grpc.RpcError as e:
                seen[ctl.name] = f"{e.code().name}: {e.details()}"
                if e.code() != grpc.StatusCode.UNAVAILABLE:
                    return None
                words[ctl.name] = e.details()
            else:
                raise AssertionError(f"{ctl.name} committed without a quorum")
        return words

    try:
        words = P.until(every_one_refuses, 3 * TTL + 30, "every controller refusing")
    except AssertionError as e:
        raise AssertionError(f"{e}; last answers: {seen}") from None
    print(f"\nwithout quorum: {words}")
    assert all("quorum" in w for w in words.values()), words
    for ctl in world.ctls:
        assert "198.19.3.0/24" in {k[1:] for k in ctl.intent()}
        stats = ctl.stub.GetStats(controller_pb2.GetStatsRequest(), timeout=5)
        assert stats.revision >= revision
    # The leader steps down once its lease cannot have been renewed: none leads.
    P.until(
        lambda: not any(x.leadership().leading for x in world.ctls),
        2 * TTL + 30,
        "every controller following",
    )
    got = through(world.nodes["a"].lab, "198.19.3.1")
    assert len(got) == 64, f"{len(got)} of 64 frames forwarded without a quorum"
    # Back: service resumes without a restart of anything of ours.
    etcd.restart(0)
    etcd.restart(1)
    etcd.wait_healthy(etcd.members)
    revision = world.apply(route("198.19.4.0/24", TO_SINK4), within=90)
    leader = world.leader()
    for name in NODES:
        leader.wait_in_sync(name, revision)
    assert "198.19.4.0/24" in world.routes("b")


def test_a_paused_leader_that_wakes_is_refused_by_the_agents(world: World) -> None:
    restore(world)
    old = world.leader()
    old_id = old.leadership().election_id
    old.signal(signal.SIGSTOP)
    try:
        others = [x for x in world.ctls if x is not old]

        def new_leader():
            for x in others:
                view = x.leadership()
                if view is not None and view.leading:
                    return x
            return None

        new = P.until(new_leader, 3 * TTL + 30, "a follower leading while the leader is paused")
        new_id = new.leadership().election_id
        assert new_id > old_id
        revision = new.stub.Apply(
            controller_pb2.ApplyRequest(routes=[route("198.19.5.0/24", TO_SINK4)]), timeout=30
        ).revision
        for name in NODES:
            new.wait_in_sync(name, revision)
    finally:
        old.signal(signal.SIGCONT)
    # Awake, the old leader may still believe it leads for a moment: its writes go nowhere.
    with pytest.raises(grpc.RpcError) as refused:
        old.stub.Apply(
            controller_pb2.ApplyRequest(routes=[route("198.19.6.0/24", TO_SINK4)]), timeout=30
        )
    assert refused.value.code() in REFUSED, refused.value
    # What its sessions would write, the agents refuse: its election id is below the new one.
    for name in NODES:
        with pytest.raises(grpc.RpcError) as stale:
            world.nodes[name].stub.Write(
                c.write_request(old_id << 64, [c.set_route("198.19.6.0/24", "blackhole")]),
                timeout=10,
            )
        assert stale.value.code() == grpc.StatusCode.PERMISSION_DENIED, stale.value
    P.until(lambda: world.leader() is new, 30, "the old leader following the new one")
    for name in NODES:
        held = world.routes(name)
        assert "198.19.5.0/24" in held and "198.19.6.0/24" not in held
    assert "|198.19.6.0/24" not in new.intent()
