"""Exchange members end to end with real frames: one lab (`cor-m<pid>-…`, removed
afterwards), `corridor agent` hosting the engine on dut0 (with VLAN 10) and dut1, and
`corridor controller` holding the members and sampling their counters every second. Two
members on dut0 (two MACs), one behind VLAN 10, and the sink's router as a member on dut1:
after a known number of frames from each MAC, each member's rx, tx and drops are exact, and
a MAC nobody has counts as unknown. The agent is restarted in the middle (its counters
start again at 0; the stored samples bill it without a spike), then the controller (the
members come back from its store). Run as root."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

import process_support as P
from controller_support import controller_document, toml
from corridor import lab as L
from corridor import traffic
from corridor.controller.members import Sample, rates
from corridor.v1 import controller_pb2, controller_pb2_grpc, dataplane_pb2

pytestmark = pytest.mark.lab

ALPHA, BRAVO, CHARLIE = "02:0a:00:00:00:01", "02:0b:00:00:00:02", "02:0c:00:00:00:03"
STRANGER = "02:0e:00:00:00:09"
VLAN = 10
# Frames per phase from each MAC; sizes differ so that byte counts tell members apart.
N_ALPHA, N_BRAVO, N_CHARLIE, N_STRANGER = 37, 11, 23, 5
SIZE_ALPHA, SIZE_BRAVO, SIZE_CHARLIE, SIZE_STRANGER = 100, 200, 300, 80


def _agent_config(lab: L.Lab, sock: Path) -> str:
    return P.agent_config(
        lab, sock, ipv6=False,
        in_port=f'vlans = [{{ id = {VLAN}, addresses = ["198.18.{VLAN}.1/24"] }}]',
    )  # fmt: skip


def _frames(src_mac: str, size: int, dst: str, vlan: int | None = None) -> list[bytes]:
    spec = traffic.FrameSpec(
        src=L.GEN_V4, dst=dst, src_mac=src_mac, dst_mac=L.DUT_IN_MAC, vlan=vlan
    )
    return traffic.build_frames(spec, (size,))


class World:
    def __init__(self, d: Path, lab: L.Lab) -> None:
        self.d, self.lab = d, lab
        self.agent_sock, self.agent_log = d / "agent.sock", d / "agent.log"
        (d / "agent.toml").write_text(_agent_config(lab, self.agent_sock))
        document = controller_document(d, {"ix": f"unix:{self.agent_sock}"})
        document["members"] = {"sample_seconds": 1}
        (d / "controller.toml").write_text(toml(document))
        self.controller_log = d / "controller.log"
        self.agent: subprocess.Popen | None = None
        self.controller: subprocess.Popen | None = None
        self.channel = grpc.insecure_channel(f"unix:{d / 'controller.sock'}")
        self.stub = controller_pb2_grpc.ControllerStub(self.channel)

    def start_agent(self) -> None:
        self.agent, _, channel = P.start_agent(
            self.d / "agent.toml", self.agent_sock, self.agent_log
        )
        channel.close()

    def start_controller(self) -> None:
        self.controller = P.spawn(
            ["controller", "--config", str(self.d / "controller.toml")], self.controller_log
        )
        P.until(lambda: self.stub.ListNodes(controller_pb2.ListNodesRequest(), timeout=1), 30,
               "the controller serving", self.controller_log)  # fmt: skip

    def in_sync(self) -> None:
        def synced():
            s = self.stub.GetNodeStatus(controller_pb2.GetNodeStatusRequest(name="ix"), timeout=5)
            return s.connected and s.in_sync

        P.until(synced, 60, "node ix in sync", self.controller_log)

    def members(self) -> dict[str, dataplane_pb2.MemberCounters]:
        c = self.stub.GetNodeCounters(controller_pb2.GetNodeCountersRequest(node="ix"), timeout=10)
        return {("(unknown)" if m.unknown else m.name): m for m in c.members}

    def send_phase(self) -> None:
        """Every MAC's frames once, from gen0 (tagged for charlie), bounded in count and time."""
        sock = traffic.open_socket(L.GEN_IF, self.lab.ns("gen"))
        try:
            to_sink, to_blackhole = "198.19.1.1", "198.19.255.1"
            for frames, n in (
                (_frames(ALPHA, SIZE_ALPHA, to_sink), N_ALPHA),
                (_frames(BRAVO, SIZE_BRAVO, to_blackhole), N_BRAVO),
                (_frames(CHARLIE, SIZE_CHARLIE, to_sink, vlan=VLAN), N_CHARLIE),
                (_frames(STRANGER, SIZE_STRANGER, to_sink), N_STRANGER),
            ):
                assert traffic.send(sock, frames, count=n, duration=10, rate=2000) == n
        finally:
            sock.close()

    def expect_counts(self, phases: int) -> None:
        """Each member's counters after `phases` phases since the agent (re)started."""
        k = phases

        def exact():
            m = self.members()
            want = {
                "alpha": (N_ALPHA * k, N_ALPHA * SIZE_ALPHA * k, 0, {}),
                "bravo": (N_BRAVO * k, N_BRAVO * SIZE_BRAVO * k, 0, {"blackhole": N_BRAVO * k}),
                "charlie": (N_CHARLIE * k, N_CHARLIE * SIZE_CHARLIE * k, 0, {}),
                "sink": (0, 0, (N_ALPHA + N_CHARLIE + N_STRANGER) * k, {}),
                "(unknown)": (N_STRANGER * k, N_STRANGER * SIZE_STRANGER * k, 0, {}),
            }
            got = {
                name: (
                    c.rx_packets,
                    c.rx_bytes,
                    c.tx_packets,
                    {d.reason: d.packets for d in c.drops},
                )
                for name, c in m.items()
            }
            # Drops are listed by the reasons counted.
            want_cmp = {
                n: (a, b, c, {r: x for r, x in d.items() if x}) for n, (a, b, c, d) in want.items()
            }
            if k == 0:
                want_cmp.pop("(unknown)")  # listed only once the engine counted any
            return got if got == want_cmp else None

        try:
            P.until(exact, 30, f"exact member counters after {k} phase(s)")
        except AssertionError:
            raise AssertionError(f"after {k} phase(s), counters: {self.members()}") from None


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    P.require("the members' lab test", engine=("MAX_MEMBERS",))
    d = tmp_path_factory.mktemp("members-lab")
    lab = L.Lab(prefix=f"cor-m{os.getpid()}-")
    w = None
    try:
        try:
            lab.up()
        except L.LabError as e:
            pytest.fail(f"cannot build the lab {lab.prefix}: {e}")
        w = World(d, lab)
        w.start_agent()
        w.start_controller()
        w.in_sync()
        yield w
    finally:
        if w is not None:
            for p in (w.controller, w.agent):
                if p is not None:
                    P.stop(p)
            w.channel.close()
        lab.down()


def _add(w: World, name: str, port: str, vlan: int, mac: str) -> controller_pb2.MemberIntent:
    intent = controller_pb2.MemberIntent(
        name=name, port=port, vlan=vlan, mac=bytes.fromhex(mac.replace(":", ""))
    )
    return w.stub.AddMember(controller_pb2.AddMemberRequest(member=intent), timeout=10)


def _samples(w: World, name: str) -> list[Sample]:
    reply = w.stub.ListMemberSamples(controller_pb2.ListMemberSamplesRequest(name=name), timeout=10)
    return [
        Sample(
            name, s.time.ToNanoseconds() / 1e9, s.rx_bytes, s.tx_bytes, s.rx_packets, s.tx_packets
        )
        for s in reply.samples
    ]


def _sampled(w: World, name: str, rx_bytes: int, since: float = 0.0) -> None:
    """Waits for a stored sample of `name` showing `rx_bytes`, taken after `since` (a
    sample from before, with the same count, does not end the wait)."""
    P.until(lambda: any(s.rx_bytes == rx_bytes and s.time > since for s in _samples(w, name)),
            30, f"a sample of {name} at {rx_bytes} rx bytes", w.controller_log)  # fmt: skip


def test_members_counted_exactly_across_restarts(world: World) -> None:
    w = world
    route = controller_pb2.RouteIntent(prefix=_prefix("198.19.0.0/16"), kind=1)
    route.next_hops.add(gateway=bytes([198, 18, 1, 2]), port=L.DUT_OUT, weight=1)
    blackhole = controller_pb2.RouteIntent(prefix=_prefix("198.19.255.0/24"), kind=2)
    w.stub.Apply(controller_pb2.ApplyRequest(routes=[route, blackhole]), timeout=30)
    added = [
        _add(w, "alpha", L.DUT_IN, 0, ALPHA),
        _add(w, "bravo", L.DUT_IN, 0, BRAVO),
        _add(w, "charlie", L.DUT_IN, VLAN, CHARLIE),
        _add(w, "sink", L.DUT_OUT, 0, L.SINK_MAC),
    ]
    assert len({m.id for m in added}) == 4
    # Bad members are refused with the reason, nothing stored.
    for name, port, vlan, mac, words in (
        ("alpha", L.DUT_IN, 0, STRANGER, "exists"),
        ("delta", L.DUT_IN, 0, ALPHA, "is member alpha's"),
        ("delta", "eth9", 0, STRANGER, "has no port 'eth9'"),
        ("delta", L.DUT_IN, 99, STRANGER, "has no VLAN 99"),
        ("bad name!", L.DUT_IN, 0, STRANGER, "member name"),
        ("delta", L.DUT_IN, 0, "01:00:5e:00:00:01", "not a unicast"),
    ):
        with pytest.raises(grpc.RpcError) as e:
            _add(w, name, port, vlan, mac)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
        assert words in e.value.details(), e.value.details()
    listed = w.stub.ListMembers(controller_pb2.ListMembersRequest(), timeout=10).members
    assert [m.name for m in listed] == ["alpha", "bravo", "charlie", "sink"]
    w.in_sync()
    w.expect_counts(0)
    _sampled(w, "alpha", 0)

    w.send_phase()
    w.expect_counts(1)
    w.send_phase()
    w.expect_counts(2)
    _sampled(w, "alpha", 2 * N_ALPHA * SIZE_ALPHA)

    # RTBH visibility: the blackhole route's own drop count, per prefix, through a lookup.
    found = w.stub.LookupRoute(
        controller_pb2.LookupRouteRequest(node="ix", address=bytes([198, 19, 255, 1])), timeout=10
    )
    assert found.route.kind == 2 and found.HasField("blackhole_dropped_packets")
    assert found.blackhole_dropped_packets == 2 * N_BRAVO
    other = w.stub.LookupRoute(
        controller_pb2.LookupRouteRequest(node="ix", address=bytes([198, 19, 1, 1])), timeout=10
    )
    assert not other.HasField("blackhole_dropped_packets"), "only blackhole routes carry it"

    # The agent restarts: its counters start again at 0, and the controller writes the
    # members to it again.
    assert w.agent is not None
    P.stop(w.agent)
    w.start_agent()
    w.in_sync()
    w.expect_counts(0)
    w.send_phase()
    w.expect_counts(1)
    # The count after one phase was also sampled before the restart: wait for a sample taken
    # now that the node shows it again.
    _sampled(w, "alpha", N_ALPHA * SIZE_ALPHA, since=time.time())

    # Billing across the restart: no negative or wrapped-around interval, and the intervals
    # add up to exactly what alpha sent (three phases), not to a spike.
    samples = _samples(w, "alpha")
    r = rates(samples)
    assert all(rx >= 0 and tx >= 0 for _, rx, tx in r)
    billed = sum(
        rx * (t1 - t0) / 8 for (t1, rx, _), t0 in zip(r, (s.time for s in samples), strict=False)
    )
    assert round(billed) == 3 * N_ALPHA * SIZE_ALPHA, (billed, samples)

    # The controller restarts: members come back from its store; nothing changes on the node.
    assert w.controller is not None
    P.stop(w.controller)
    w.start_controller()
    w.in_sync()
    listed = w.stub.ListMembers(controller_pb2.ListMembersRequest(), timeout=10).members
    assert [(m.name, m.id) for m in listed] == sorted((m.name, m.id) for m in added)
    w.send_phase()
    w.expect_counts(2)
    # The CLI, as an operator runs it.
    address = f"unix:{w.d / 'controller.sock'}"
    listed_cli = json.loads(_cli(address, "member", "list", "--json"))
    assert [m["name"] for m in listed_cli] == ["alpha", "bravo", "charlie", "sink"]
    rows = {r["member"]: r for r in json.loads(_cli(address, "member", "counters", "--json"))}
    assert rows["alpha"]["rx_packets"] == 2 * N_ALPHA
    assert rows["bravo"]["drops"] == {"blackhole": 2 * N_BRAVO}
    assert rows["(unknown)"]["rx_bytes"] == 2 * N_STRANGER * SIZE_STRANGER
    table = _cli(address, "member", "counters").splitlines()
    assert table[0].split()[:3] == ["NODE", "MEMBER", "PORT"] and len(table) == 6
    # Removed: its frames are nobody's named member's, the unknown row's (alpha's MAC).
    w.stub.RemoveMember(controller_pb2.RemoveMemberRequest(name="alpha"), timeout=10)

    def gone():
        return "alpha" not in w.members()

    P.until(gone, 30, "alpha removed from the agent", w.controller_log)


def _cli(address: str, *args: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(P.REPO / "control"))
    done = subprocess.run(
        [sys.executable, "-m", "corridor", *args, "--controller", address],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def _prefix(text: str):
    from corridor.agent import client as c

    return c.prefix(text)
