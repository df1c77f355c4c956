"""Hosts on attached subnets end to end, with real frames: one lab (`cor-g<pid>-…`, removed
afterwards), `corridor agent` hosting the engine on dut0 and dut1 (with VLAN 20) and the
ports' addresses as attached subnets, nothing written by any controller. Frames from gen to
the sink's own addresses (IPv4, IPv6, and behind VLAN 20) are dropped as `glean` until the
kernel resolved the sink, then forwarded to its MAC by a host route the agent installed; an
address nobody has stays dropped and counted, and reaches nobody; a directed broadcast is
its own drop; an unused host route ages out and the agent's neighbour entry goes with it; a
new MAC of the sink is followed. Run as root."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether

import process_support as P
from corridor import lab as L
from corridor import traffic
from corridor.v1 import dataplane_pb2

pytestmark = pytest.mark.lab

AGE_SECONDS = 3
RESOLVE_SECONDS = 2
UNUSED_SECONDS = 10  # neighbours.UNUSED_SECONDS: an entry no one wants is deleted after it
V20 = L.VLAN_BY_ID[20]
NOBODY_V4 = "198.18.1.99"
NEW_MAC = "02:c0:00:00:01:99"


def _agent_config(lab: L.Lab, sock: Path) -> str:
    return P.agent_config(
        lab, sock, objects=256,
        sections=f"""[glean]
hosts = 64
age_seconds = {AGE_SECONDS}
resolve_seconds = {RESOLVE_SECONDS}""",
        out_port=f'vlans = [{{ id = {V20.id}, addresses = ["{V20.v4}/24", "{V20.v6}/64"] }}]',
    )  # fmt: skip


class World:
    def __init__(self, d: Path, lab: L.Lab) -> None:
        self.lab = lab
        self.sock, self.log = d / "agent.sock", d / "agent.log"
        (d / "agent.toml").write_text(_agent_config(lab, self.sock))
        self.agent, self.stub, self.channel = P.start_agent(d / "agent.toml", self.sock, self.log)

    def stop(self) -> None:
        self.channel.close()
        P.stop(self.agent)

    def counters(self) -> dataplane_pb2.Counters:
        return self.stub.GetCounters(dataplane_pb2.GetCountersRequest(), timeout=10)

    def drops(self, port: str, reason: str) -> int:
        return sum(
            d.packets for d in self.counters().drops if d.port == port and d.reason == reason
        )

    def neighbour(self, address: str, dev: str) -> dict | None:
        out = self.lab.ip("dut", "-j", "-d", "neigh", "show", "to", address, "dev", dev).stdout
        entries = [e for e in json.loads(out or "[]") if e.get("dst") == address]
        return entries[0] if entries else None


def until(predicate: Callable[[], object], within: float, what: str, w: World | None = None):
    return P.until(predicate, within, what, w.log if w is not None else None)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    P.require("the glean lab test", engine=("Fib.take_adjacency_used",))
    d = tmp_path_factory.mktemp("glean-lab")
    lab = L.Lab(prefix=f"cor-g{os.getpid()}-")
    w = None
    try:
        try:
            lab.up()
        except L.LabError as e:
            pytest.fail(f"cannot build the lab {lab.prefix}: {e}")
        w = World(d, lab)
        yield w
    finally:
        if w is not None:
            w.stop()
        lab.down()


def _frame(dst: str, seq: int) -> bytes:
    family = 6 if ":" in dst else 4
    spec = traffic.FrameSpec(
        family=family,
        src=L.GEN_V4 if family == 4 else L.GEN_V6,
        dst=dst,
        src_mac=L.GEN_MAC,
        dst_mac=L.DUT_IN_MAC,
    )
    return traffic.build_frame(spec, 100, seq=seq)


def _ours(dst: str) -> Callable[[bytes], bool]:
    """Our UDP frames to `dst` (not the kernel's ARP / ND)."""

    def keep(frame: bytes) -> bool:
        pkt = Ether(frame)
        if UDP not in pkt:
            return False
        return (IP in pkt and pkt[IP].src == L.GEN_V4 and pkt[IP].dst == dst) or (
            IPv6 in pkt and pkt[IPv6].src == L.GEN_V6 and pkt[IPv6].dst == dst
        )

    return keep


def send_until(w: World, dst: str, arrived: int, *, most: int = 100, every: float = 0.05):
    """Sends frames to `dst` from gen one at a time (at most `most`, `every` s apart) until
    `arrived` of them reached sink0; returns (sent, frames that arrived)."""
    sock = traffic.open_socket(L.GEN_IF, w.lab.ns("gen"))
    cap = traffic.Capture(L.SINK_IF, w.lab.ns("sink"), duration=most * every + 5,
                          keep=_ours(dst)).start()  # fmt: skip
    sent = 0
    try:
        while sent < most and len(cap.frames) < arrived:
            assert traffic.send(sock, [_frame(dst, sent)], duration=1) == 1
            sent += 1
            time.sleep(every)
        deadline = time.monotonic() + 1
        while len(cap.frames) < min(arrived, sent) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.1)  # nothing more in flight
        return sent, cap.stop()
    finally:
        cap.stop()
        sock.close()


@pytest.mark.parametrize(
    ("dst", "dev", "vlan"),
    [(L.SINK_V4, L.DUT_OUT, None), (L.SINK_V6, L.DUT_OUT, None), (V20.peer_v4, V20.router_if, 20)],
    ids=["v4", "v6", "vlan20"],
)
def test_a_host_becomes_reachable_once_resolved(
    world: World, dst: str, dev: str, vlan: int | None
) -> None:
    w = world
    if vlan is not None and not w.lab.kernel_vlans:
        # No 802.1Q devices in this kernel (CONFIG_VLAN_8021Q): no dut1.20 to resolve on.
        # The frames still meet VLAN 20's glean route: dropped, counted, flooded nowhere,
        # and the resolution the agent asks for is given up.
        before = w.counters().glean
        sent, got = send_until(w, dst, arrived=1, most=20)
        assert (sent, got) == (20, [])
        until(lambda: w.counters().glean.failed > before.failed, RESOLVE_SECONDS + 10,
              "the resolution on VLAN 20 given up", w)  # fmt: skip
        return
    settled = AGE_SECONDS * 3 + UNUSED_SECONDS + 10
    until(lambda: w.neighbour(dst, dev) is None, settled, f"no entry for {dst} left", w)
    before = w.counters().glean
    glean_drops = w.drops(L.DUT_IN, "glean")
    sent, got = send_until(w, dst, arrived=5)
    assert len(got) >= 5, f"{len(got)} of {sent} frames to {dst} arrived"
    after = w.counters().glean
    dropped = w.drops(L.DUT_IN, "glean") - glean_drops
    # The first frames met the glean route: dropped, counted, never flooded; the rest went.
    assert dropped >= 1 and dropped + len(got) == sent, (sent, dropped, len(got))
    assert after.resolved >= before.resolved + 1 and after.hosts >= 1
    assert after.queued >= before.queued + 1
    for frame in got:
        pkt = Ether(frame)
        assert (pkt.dst, pkt.src) == (L.SINK_MAC, L.DUT_OUT_MAC)
        assert (pkt[Dot1Q].vlan if Dot1Q in pkt else None) == vlan
    entry = w.neighbour(dst, dev)
    assert entry is not None and entry.get("lladdr") == L.SINK_MAC, entry
    # The agent's host routes are not a writer's: Read shows none of them.
    read = list(w.stub.Read(dataplane_pb2.ReadRequest(), timeout=10))
    assert [r.routes for r in read if r.routes] == [] and not any(r.adjacencies for r in read)


def test_an_unresolved_host_is_dropped_counted_and_reaches_nobody(world: World) -> None:
    w = world
    before = w.counters().glean
    glean_drops = w.drops(L.DUT_IN, "glean")
    sink = traffic.Capture(L.SINK_IF, w.lab.ns("sink"), duration=10, keep=_ours(NOBODY_V4))
    gen = traffic.Capture(L.GEN_IF, w.lab.ns("gen"), duration=10, keep=_ours(NOBODY_V4))
    with sink, gen:
        sent, got = send_until(w, NOBODY_V4, arrived=1, most=40)
    assert (sent, got) == (40, [])
    assert sink.frames == [] and gen.frames == [], "flooded"
    assert w.drops(L.DUT_IN, "glean") - glean_drops == 40
    failed = until(lambda: (c := w.counters().glean).failed > before.failed and c,
                   RESOLVE_SECONDS + 10, "the resolution given up", w)  # fmt: skip
    assert failed.resolving >= before.resolving + 1
    # Given up: its entry goes at once (well before UNUSED_SECONDS), so that a scan of the
    # subnet cannot fill the kernel's neighbour table.
    until(lambda: w.neighbour(NOBODY_V4, L.DUT_OUT) is None, UNUSED_SECONDS / 2,
          "the given-up entry deleted", w)  # fmt: skip
    # A directed broadcast of the attached subnet is its own drop, never a resolution.
    asked = w.counters().glean.asked
    broadcasts = w.drops(L.DUT_IN, "directed_broadcast")
    sent, got = send_until(w, "198.18.1.255", arrived=1, most=5)
    assert (sent, got) == (5, [])
    assert w.drops(L.DUT_IN, "directed_broadcast") - broadcasts == 5
    assert w.counters().glean.asked == asked


def test_an_unused_host_route_ages_out_with_its_neighbour_entry(world: World) -> None:
    w = world
    sent, got = send_until(w, L.SINK_V4, arrived=3)
    assert len(got) >= 3
    aged = w.counters().glean.aged
    # Used for twice the age: it stays (every frame goes through, none is gleaned again).
    glean_drops = w.drops(L.DUT_IN, "glean")
    sent, got = send_until(w, L.SINK_V4, arrived=10_000, most=int(AGE_SECONDS * 2 / 0.1),
                           every=0.1)  # fmt: skip
    assert len(got) == sent and w.drops(L.DUT_IN, "glean") == glean_drops
    # Unused: the host route goes after AGE_SECONDS, the agent's entry UNUSED_SECONDS later.
    until(lambda: w.counters().glean.aged > aged, AGE_SECONDS * 3 + 10, "the host route aged", w)
    until(lambda: w.neighbour(L.SINK_V4, L.DUT_OUT) is None, UNUSED_SECONDS + 15,
          "the neighbour entry removed", w)  # fmt: skip
    # Frames to it are gleaned again (and resolve again).
    glean_drops = w.drops(L.DUT_IN, "glean")
    sent, got = send_until(w, L.SINK_V4, arrived=3)
    assert len(got) >= 3 and w.drops(L.DUT_IN, "glean") > glean_drops


def test_a_new_mac_of_the_host_is_followed(world: World) -> None:
    w = world
    _, got = send_until(w, L.SINK_V4, arrived=3)
    assert [Ether(f).dst for f in got] == [L.SINK_MAC] * len(got) and got
    changes = w.counters().glean.mac_changes
    try:
        w.lab.ip("sink", "link", "set", L.SINK_IF, "address", NEW_MAC)
        # The sink speaks to the router: its ARP request tells the router's kernel the MAC.
        w.lab.exec("sink", ["ping", "-c", "1", "-W", "2", L.DUT_OUT_V4], check=False)
        until(lambda: w.counters().glean.mac_changes > changes, 15, "the MAC change followed", w)
        _, got = send_until(w, L.SINK_V4, arrived=3)
        assert got and all(Ether(f).dst == NEW_MAC for f in got), [Ether(f).dst for f in got]
    finally:
        w.lab.ip("sink", "link", "set", L.SINK_IF, "address", L.SINK_MAC)


def test_a_writers_route_for_a_host_wins_and_the_subnet_is_refused(world: World) -> None:
    from corridor.agent import client as c

    w = world
    _, got = send_until(w, L.SINK_V4, arrived=3)
    assert len(got) >= 3
    taken = w.counters().glean.taken_over
    write = w.stub.Write
    write(c.write_request(1, [c.set_route(f"{L.SINK_V4}/32", "blackhole")]), timeout=10)
    until(lambda: w.counters().glean.taken_over > taken, 10, "the host route given over", w)
    blackholed = w.drops(L.DUT_IN, "blackhole")
    sent, got = send_until(w, L.SINK_V4, arrived=1, most=10)
    assert (sent, got) == (10, []) and w.drops(L.DUT_IN, "blackhole") - blackholed == 10
    # The writer's route is in Read; deleted, the host is resolved again.
    read = [r for resp in w.stub.Read(dataplane_pb2.ReadRequest(), timeout=10) for r in resp.routes]
    assert [(bytes(r.prefix.address), r.prefix.length) for r in read] == [
        (bytes([198, 18, 1, 2]), 32)
    ]
    write(c.write_request(1, [c.delete_route(f"{L.SINK_V4}/32")]), timeout=10)
    _, got = send_until(w, L.SINK_V4, arrived=3)
    assert len(got) >= 3
    # A route for exactly an attached subnet is the agent's: refused, nothing applied.
    ops = [c.set_route("198.18.7.0/24", "blackhole"), c.set_route("198.18.1.0/24", "blackhole")]
    with pytest.raises(grpc.RpcError) as e:
        write(c.write_request(1, ops), timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    (v,) = c.write_error(e.value).violations
    assert v.field == "operations[1]" and "198.18.1.0/24: is an attached subnet" in v.description
    read = [r for resp in w.stub.Read(dataplane_pb2.ReadRequest(), timeout=10) for r in resp.routes]
    assert read == []
