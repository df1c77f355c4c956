"""Edge protection through `corridor agent`, end to end in a lab of its own
(`cor-e<pid>-gen|dut|sink`, removed afterwards): the policies of dut0 come from the agent's
configuration (uRPF strict, the ethertype filter, the source MAC filter) and are in force
from the start; spoofed sources, a foreign ethertype and an unknown MAC are dropped and
counted per port over GetCounters and /metrics, the refused MAC is listed by
ListPortPolicies, and SetPortPolicies changes them while traffic flows. Run as root."""

from __future__ import annotations

import os
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import process_support as P
from corridor import lab as L
from corridor import traffic
from corridor.agent import client as c
from corridor.v1 import common_pb2, dataplane_pb2
from test_agent_engine import Agent, _free_port, send

pytestmark = pytest.mark.lab  # network namespaces, real traffic, root

ELECTION = 9
STRANGER = "02:66:00:00:00:66"
N = 40


def _config(lab: L.Lab, sock: Path, metrics_port: int) -> str:
    return P.agent_config(
        lab, sock,
        sections=f'[metrics]\naddress = "127.0.0.1:{metrics_port}"',
        in_port=f'''urpf = "strict"
ethertype_filter = true
mac_filter = true
allowed_macs = ["{L.GEN_MAC}"]''',
    )  # fmt: skip


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[L.Lab, Agent]]:
    P.require("the edge lab test", engine=("Engine.set_icmp_limits",))
    lab = L.Lab(prefix=f"cor-e{os.getpid()}-")
    process = None
    try:
        try:
            lab.up()
        except L.LabError as e:
            pytest.fail(f"cannot build the lab: {e}")
        d = tmp_path_factory.mktemp("agent-edge")
        sock, config, log = d / "agent.sock", d / "agent.toml", d / "agent.log"
        metrics_port = _free_port()
        config.write_text(_config(lab, sock, metrics_port))
        process, _, channel = P.start_agent(config, sock, log)
        channel.close()
        agent = Agent(process, sock, log)
        agent.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        # Transit to the sink. Gen's subnet is dut0's attached subnet: its glean route is the
        # strict check's valid path back (a route written for it would be refused).
        agent.stub.Write(
            c.write_request(
                ELECTION,
                [
                    c.set_adjacency(1, L.DUT_OUT, 0, L.DUT_OUT_MAC, L.SINK_MAC),
                    c.set_adjacency(2, L.DUT_IN, 0, L.DUT_IN_MAC, L.GEN_MAC),
                    c.set_group(1, [(1, 1)]),
                    c.set_group(2, [(2, 1)]),
                    c.set_route("198.19.0.0/16", 1),
                ],
            ),
            timeout=10,
        )
        yield lab, agent
    finally:
        P.stop(process)
        lab.down()


def frames(
    src: str = L.GEN_V4, src_mac: str = L.GEN_MAC, ether_type: int | None = None
) -> list[bytes]:
    spec = traffic.FrameSpec(src=src, dst="198.19.1.1", src_mac=src_mac, dst_mac=L.DUT_IN_MAC)
    built = [bytes(traffic.build_frame(spec, 80, seq=i)) for i in range(N)]
    if ether_type is not None:
        built = [f[:12] + ether_type.to_bytes(2, "big") + f[14:] for f in built]
    return built


def dut0_drops(agent: Agent) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in agent.counters().drops:
        if d.port == L.DUT_IN:
            out[d.reason] = out.get(d.reason, 0) + d.packets
    return out


def moved(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


def set_policy(agent: Agent, policy: common_pb2.EdgePolicy) -> None:
    agent.stub.SetPortPolicies(
        dataplane_pb2.SetPortPoliciesRequest(
            election_id=common_pb2.ElectionId(low=ELECTION),
            policies=[common_pb2.PortPolicy(port=L.DUT_IN, vlan=0, policy=policy)],
        ),
        timeout=10,
    )


def test_the_configured_policy_is_in_force_from_the_start(agent) -> None:
    lab, a = agent
    listed = a.stub.ListPortPolicies(dataplane_pb2.ListPortPoliciesRequest(), timeout=10)
    [dut0] = [p.policy for p in listed.policies if (p.port, p.vlan) == (L.DUT_IN, 0)]
    assert dut0.urpf == common_pb2.URPF_MODE_STRICT and dut0.ethertype_filter and dut0.mac_filter
    before = dut0_drops(a)
    assert len(send(lab, frames())) == N, "gen's own source, from gen's MAC: forwarded"
    assert send(lab, frames(src="198.18.65.1")) == [], "a spoofed source"
    assert send(lab, frames(src_mac=STRANGER)) == [], "an unknown MAC"
    assert send(lab, frames(ether_type=0x88CC)) == [], "LLDP"
    assert moved(before, dut0_drops(a)) == {
        "urpf_strict": N,
        "unknown_source_mac": N,
        "foreign_ethertype": N,
    }
    listed = a.stub.ListPortPolicies(dataplane_pb2.ListPortPoliciesRequest(), timeout=10)
    [refused] = [
        r for r in listed.refused_macs if r.mac == bytes.fromhex(STRANGER.replace(":", ""))
    ]
    assert (refused.port, refused.vlan, refused.packets) == (L.DUT_IN, 0, N)
    assert abs(refused.last_seen.ToSeconds() - time.time()) < 60
    text = urllib.request.urlopen(a.metrics_url, timeout=10).read().decode()
    line = f'corridor_engine_xdp_edge_drops_total{{port="{L.DUT_IN}",reason="foreign_ethertype"}}'
    assert any(ln.startswith(line) and float(ln.split()[-1]) >= N for ln in text.splitlines()), (
        text[-3000:]
    )


def test_policies_change_while_traffic_flows(agent) -> None:
    lab, a = agent
    try:
        set_policy(a, common_pb2.EdgePolicy(urpf=common_pb2.URPF_MODE_LOOSE))
        before = dut0_drops(a)
        assert len(send(lab, frames(src_mac=STRANGER))) == N, "no MAC filter any more"
        assert send(lab, frames(src="198.18.65.1")) == [], "loose: still no route to it"
        assert moved(before, dut0_drops(a)) == {"urpf_loose": N}
        set_policy(a, common_pb2.EdgePolicy())
        assert len(send(lab, frames(src="198.18.65.1"))) == N, "off"
    finally:
        set_policy(
            a,
            common_pb2.EdgePolicy(
                urpf=common_pb2.URPF_MODE_STRICT,
                ethertype_filter=True,
                mac_filter=True,
                allowed_macs=[bytes.fromhex(L.GEN_MAC.replace(":", ""))],
            ),
        )
    assert send(lab, frames(src_mac=STRANGER)) == [], "restored"


# -- port security (the members' MACs) and member source filters (BCP 38) ----------------

GEN_MEMBER = 7


def write_members(agent: Agent, *ops: dataplane_pb2.Operation) -> None:
    agent.stub.Write(c.write_request(ELECTION, list(ops)), timeout=10)


def arp_request(src_mac: str, sender: str = L.GEN_V4) -> bytes:
    """An ARP request for dut0's address, as the kernel behind XDP would answer it."""
    arp = (
        bytes.fromhex("0001080006040001")
        + bytes.fromhex(src_mac.replace(":", ""))
        + bytes(int(x) for x in sender.split("."))
        + bytes(6)
        + bytes(int(x) for x in L.DUT_IN_V4.split("."))
    )
    frame = b"\xff" * 6 + bytes.fromhex(src_mac.replace(":", "")) + b"\x08\x06" + arp
    return frame + bytes(60 - len(frame))


def member_drops(agent: Agent, member_id: int, reason: str) -> int:
    for m in agent.counters().members:
        if m.id == member_id and not m.unknown:
            return sum(d.packets for d in m.drops if d.reason == reason)
    return 0


def test_port_security_follows_the_members(agent) -> None:
    """Only the registered members' MACs on dut0, only IP and ARP: frames to the kernel
    (ARP) too, in XDP; a member written or deleted is let in or shut out at once."""
    lab, a = agent
    try:
        set_policy(a, common_pb2.EdgePolicy(port_security=True))
        before = dut0_drops(a)
        assert send(lab, frames()) == [], "no member yet: gen's MAC is nobody's"
        assert moved(before, dut0_drops(a)) == {"unknown_source_mac": N}
        write_members(a, c.set_member(GEN_MEMBER, L.DUT_IN, 0, L.GEN_MAC, "gen"))
        before = dut0_drops(a)
        assert len(send(lab, frames())) == N, "gen is a member now"
        assert send(lab, frames(src_mac=STRANGER)) == []
        assert send(lab, frames(ether_type=0x88CC)) == [], "LLDP from the member"
        send(lab, [arp_request(STRANGER)] * N)  # to the kernel: dropped before it
        send(lab, [arp_request(L.GEN_MAC)] * N)  # the member's: passed to the kernel
        assert moved(before, dut0_drops(a)) == {
            "unknown_source_mac": 2 * N,
            "foreign_ethertype": N,
        }
        listed = a.stub.ListPortPolicies(dataplane_pb2.ListPortPoliciesRequest(), timeout=10)
        [refused] = [
            r for r in listed.refused_macs if r.mac == bytes.fromhex(STRANGER.replace(":", ""))
        ]
        assert refused.packets >= 2 * N, "the stranger's frames, IP and ARP, counted"
        write_members(a, c.delete_member(GEN_MEMBER))
        before = dut0_drops(a)
        assert send(lab, frames()) == [], "deleted: shut out again"
        assert moved(before, dut0_drops(a)) == {"unknown_source_mac": N}
    finally:
        write_members(a, c.delete_member(GEN_MEMBER))
        set_policy(
            a,
            common_pb2.EdgePolicy(
                urpf=common_pb2.URPF_MODE_STRICT,
                ethertype_filter=True,
                mac_filter=True,
                allowed_macs=[bytes.fromhex(L.GEN_MAC.replace(":", ""))],
            ),
        )


def test_member_source_filter_updated_while_traffic_flows(agent) -> None:
    """gen (a member) sends from 198.18.0.2 (in every filter it is given) and from
    198.18.99.2 (in none) while its filter is rewritten 40 times, alternating between two
    that differ elsewhere: a filter half-applied at any moment (the old one removed before
    the new one is in) would drop a frame of the first source. Every one is forwarded, and
    exactly the second source's frames are dropped and counted as gen's member_source."""
    lab, a = agent
    keep_src, drop_src = L.GEN_V4, "198.18.99.2"
    filters = (
        ["198.18.0.0/24", "198.18.10.0/24", "2001:db8::/64"],
        ["198.18.20.0/24", "198.18.0.0/24"],
    )
    total = 3000
    # Tagged as one flow per source, numbered: each frame once.
    spec = traffic.FrameSpec
    keep = [
        bytes(traffic.build_frame(spec(src=keep_src, dst="198.19.1.1", src_mac=L.GEN_MAC,
                                       dst_mac=L.DUT_IN_MAC), 80, flow=1, seq=i))
        for i in range(total // 2)
    ]  # fmt: skip
    drop = [
        bytes(traffic.build_frame(spec(src=drop_src, dst="198.19.1.1", src_mac=L.GEN_MAC,
                                       dst_mac=L.DUT_IN_MAC), 80, flow=2, seq=i))
        for i in range(total // 2)
    ]  # fmt: skip
    mixed = [f for pair in zip(keep, drop, strict=True) for f in pair]
    try:
        set_policy(a, common_pb2.EdgePolicy())  # only the member's filter decides
        write_members(a, c.set_member(GEN_MEMBER, L.DUT_IN, 0, L.GEN_MAC, "gen", filters[0]))
        rx_dropped_before = sum(
            d.packets for d in a.counters().drops if d.reason == "rx_ring_dropped"
        )
        before = member_drops(a, GEN_MEMBER, "member_source")
        sent = 0
        updates = 0
        gen_mac = bytes.fromhex(L.GEN_MAC.replace(":", ""))

        def mine(f: bytes) -> bool:
            return traffic.frame_tag(f) is not None and f[6:12] != gen_mac

        with traffic.Capture(
            L.SINK_IF, lab.ns("sink"), duration=30, count=total // 2, keep=mine
        ) as cap:
            sock = traffic.open_socket(L.GEN_IF, lab.ns("gen"))
            box: dict[str, int] = {}

            def sender() -> None:
                box["sent"] = traffic.send(sock, mixed, duration=20, rate=1500)

            thread = threading.Thread(target=sender)
            thread.start()
            try:
                deadline = time.monotonic() + 20
                while thread.is_alive() and updates < 40 and time.monotonic() < deadline:
                    f = filters[updates % 2]
                    write_members(a, c.set_member(GEN_MEMBER, L.DUT_IN, 0, L.GEN_MAC, "gen", f))
                    updates += 1
                    time.sleep(0.02)
            finally:
                thread.join(30)
                sock.close()
            sent = box.get("sent", 0)
            got = cap.wait(10)
        assert updates >= 10, f"only {updates} filter updates while the traffic flowed"
        assert sent == total, f"gen sent {sent} of {total}"
        rx_dropped = (
            sum(d.packets for d in a.counters().drops if d.reason == "rx_ring_dropped")
            - rx_dropped_before
        )
        assert rx_dropped == 0, f"{rx_dropped} frames lost before the engine: cannot judge"
        tags = [traffic.frame_tag(f) for f in got]
        assert {t[0] for t in tags if t} <= {1}, "a frame of the filtered source got through"
        assert len({t for t in tags if t}) == total // 2, "a frame of the allowed source dropped"
        assert member_drops(a, GEN_MEMBER, "member_source") - before == total // 2
    finally:
        write_members(a, c.delete_member(GEN_MEMBER))
        set_policy(
            a,
            common_pb2.EdgePolicy(
                urpf=common_pb2.URPF_MODE_STRICT,
                ethertype_filter=True,
                mac_filter=True,
                allowed_macs=[bytes.fromhex(L.GEN_MAC.replace(":", ""))],
            ),
        )
