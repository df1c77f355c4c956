"""A member's source filter derived from its BGP announcements, end to end with real FRR: a
lab (`cor-f<pid>-…`, removed afterwards) whose dut namespace runs `corridor agent` (the
engine on dut0/dut1) and FRR (zebra with `-M dplane_fpm_nl`, bgpd); `corridor controller`
takes zebra's routes over FPM. The member `gen` (gen's MAC on dut0) runs BIRD and announces
its prefixes to bgpd over IPv4 and IPv6 (zebra installs the IPv6 one via gen's link-local
address, which counts as gen's from its MAC); BIRD in the sink's namespace announces the
destination (and one prefix gen announces too). `corridor member filter gen --from-bgp
--next-hop <gen>` makes the filter follow the announcements: frames from an announced
source reach the sink, spoofed ones are dropped and counted as `member_source`; a withdrawn
prefix leaves after the hold time, one still announced by another router stays (sticky), a
new one is added."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from benches.harness.frr import ECMP4, PEER_AS, ROUTER_AS, LabFrr

import process_support as P
from controller_support import toml
from corridor import lab as L
from corridor import traffic
from corridor.agent import client as c
from corridor.v1 import controller_pb2, controller_pb2_grpc, dataplane_pb2, dataplane_pb2_grpc
from test_bgp_lab import _agent_config, _requirements

pytestmark = [pytest.mark.lab, pytest.mark.timeout(600)]

NODE = "r1"
HOLD = 2  # [[fpm]] filter_hold_seconds
OWN_A, OWN_B, OWN_C = "198.19.80.0/24", "198.19.81.0/24", "198.19.82.0/24"
OWN_6 = "2001:db8:80::/48"  # over IPv6: zebra installs it via gen's link-local address
SPOOFED = "198.18.77.1"
FRAMES = 64

GEN_BIRD = """\
router id {gen};
protocol device {{}}
protocol static e4 {{
  ipv4;
{routes}}}
protocol static e6 {{
  ipv6;
{routes6}}}
protocol bgp g4 {{
  connect delay time 1; connect retry time 2; error wait time 1, 4;
  local {gen} as {peer_as}; neighbor {router} as {router_as};
  ipv4 {{ import none; export where proto = "e4"; }};
}}
protocol bgp g6 {{
  connect delay time 1; connect retry time 2; error wait time 1, 4;
  local {gen6} as {peer_as}; neighbor {router6} as {router_as};
  ipv6 {{ import none; export where proto = "e6"; }};
}}
"""

# bgpd's session with gen over IPv6, beside the lab's (a second `router bgp` block adds to
# the first).
GEN_V6_BGPD = """\
router bgp {router_as}
 neighbor {gen6} remote-as {peer_as}
 neighbor {gen6} timers connect 2
 address-family ipv6 unicast
  neighbor {gen6} activate
 exit-address-family
"""


class MemberFrr(LabFrr):
    def write_frr(self, fpm_port: int) -> None:
        super().write_frr(fpm_port)
        with (self.dir / "bgpd.conf").open("a") as f:
            f.write(GEN_V6_BGPD.format(router_as=ROUTER_AS, peer_as=PEER_AS, gen6=L.GEN_V6))


def announce(frr: LabFrr, *prefixes: str) -> None:
    """gen's BIRD announces exactly `prefixes` (a reconfiguration: no session reset)."""
    routes = "".join(f"  route {p} blackhole;\n" for p in prefixes if ":" not in p)
    routes6 = "".join(f"  route {p} blackhole;\n" for p in prefixes if ":" in p)
    (frr.dir / "bird2.conf").write_text(GEN_BIRD.format(
        gen=L.GEN_V4, router=L.DUT_IN_V4, gen6=L.GEN_V6, router6=L.DUT_IN_V6, peer_as=PEER_AS,
        router_as=ROUTER_AS, routes=routes, routes6=routes6,
    ))  # fmt: skip
    out = frr.birdc2("configure")
    assert "Reconfigured" in out or "Reconfiguration in progress" in out, out


def agent_filter(stub: dataplane_pb2_grpc.DataplaneStub, name: str) -> set[str] | None:
    """The member's filter at the agent (None: no filter; empty while it has no such
    member)."""
    for response in stub.Read(dataplane_pb2.ReadRequest(), timeout=30):
        for m in response.members:
            if m.name == name:
                if not m.filter_sources:
                    return None
                return {c.prefix_text(p) for p in m.allowed_sources}
        break  # members come in the first message
    return set()


def sent_through(lab: L.Lab, src: str) -> int:
    """FRAMES frames from `src` (gen's MAC) to the sink's prefix; how many reached it."""
    v6 = ":" in src
    spec = traffic.FrameSpec(
        family=6 if v6 else 4, src=src, dst="2001:db8:170::1" if v6 else "198.19.70.1",
        src_mac=L.GEN_MAC, dst_mac=L.DUT_IN_MAC,
    )  # fmt: skip
    frames = traffic.build_frames(spec, (80,), 1) * FRAMES
    with traffic.Capture(
        L.SINK_IF, lab.ns("sink"), duration=2.0, count=len(frames),
        keep=lambda f: traffic.frame_tag(f) is not None,
    ) as cap:  # fmt: skip
        sock = traffic.open_socket(L.GEN_IF, lab.ns("gen"))
        try:
            traffic.send(sock, frames, duration=2.0)
        finally:
            sock.close()
        return len(cap.wait(3.0))


def member_source_drops(stub: dataplane_pb2_grpc.DataplaneStub, member_id: int) -> int:
    counters = stub.GetCounters(dataplane_pb2.GetCountersRequest(), timeout=10)
    for m in counters.members:
        if m.id == member_id and not m.unknown:
            return sum(d.packets for d in m.drops if d.reason == "member_source")
    return 0


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(P.REPO / "control"))
    return subprocess.run(
        [sys.executable, "-m", "corridor", *args, "--controller",
         f"unix:{tmp_path}/controller.sock"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_the_filter_follows_the_members_announcements(tmp_path: Path) -> None:
    _requirements()
    lab = L.Lab(prefix=f"cor-f{os.getpid() % 10000}-")
    frr = MemberFrr(lab, [], [], nexthop_groups=True)
    agent = controller = None
    try:
        try:
            lab.up()
        except L.LabError as e:
            pytest.fail(f"cannot build the lab {lab.prefix}: {e}")
        frr.create_network()
        sock = tmp_path / "agent.sock"
        (tmp_path / "agent.toml").write_text(_agent_config(lab, sock))
        agent, agent_stub, _ = P.start_agent(tmp_path / "agent.toml", sock, tmp_path / "agent.log")
        port = 2620  # the namespace is the lab's own
        (tmp_path / "controller.toml").write_text(toml({
            "listen": {"unix": str(tmp_path / "controller.sock")},
            "store": {"path": str(tmp_path / "intent.db")},
            "reconcile": {"drift_check_seconds": 5, "max_groups": 1024, "max_adjacencies": 1024},
            "nodes": [{"name": NODE, "address": f"unix:{sock}"}],
            "fpm": [{"node": NODE, "listen": f"127.0.0.1:{port}", "netns": lab.ns("dut"),
                     "filter_hold_seconds": HOLD}],
        }))  # fmt: skip
        log = tmp_path / "controller.log"
        controller = P.spawn(["controller", "--config", str(tmp_path / "controller.toml")], log)
        stub = controller_pb2_grpc.ControllerStub(
            grpc.insecure_channel(f"unix:{tmp_path}/controller.sock")
        )

        def connected() -> bool:
            request = controller_pb2.GetNodeStatusRequest(name=NODE)
            return stub.GetNodeStatus(request, timeout=5).connected

        P.until(connected, 60, "the controller serving, its node connected", log)
        frr.start(port)
        announce(frr, OWN_A, OWN_B, ECMP4, OWN_6)
        member = stub.AddMember(controller_pb2.AddMemberRequest(member=controller_pb2.MemberIntent(
            name="gen", port=L.DUT_IN, mac=bytes.fromhex(L.GEN_MAC.replace(":", ""))
        )), timeout=10)  # fmt: skip
        done = cli(tmp_path, "member", "filter", "gen", "--from-bgp", "--next-hop", L.GEN_V4)
        assert done.returncode == 0, done.stderr
        # The announcements reach the filter: gen's three prefixes (ECMP4 is the sink's too).
        P.until(lambda: agent_filter(agent_stub, "gen") == {OWN_A, OWN_B, ECMP4, OWN_6}, 120,
               f"gen's announcements in its filter (bgpd: {frr.vtysh('show bgp summary')})",
               log)  # fmt: skip
        listed = cli(tmp_path, "member", "list")
        assert f"bgp via {L.GEN_V4}: 4 prefixes" in listed.stdout, listed.stdout
        # Frames: from an announced source forwarded, a spoofed one dropped and counted.
        P.until(lambda: sent_through(lab, "198.19.80.1") == FRAMES, 60,
               "frames from gen's own prefix at the sink", log)  # fmt: skip
        P.until(lambda: sent_through(lab, "2001:db8:80::1") == FRAMES, 60,
               "IPv6 frames from gen's own prefix at the sink", log)  # fmt: skip
        before = member_source_drops(agent_stub, member.id)
        assert sent_through(lab, SPOOFED) == 0
        assert member_source_drops(agent_stub, member.id) - before == FRAMES
        assert sent_through(lab, "2001:db8:77::1") == 0
        assert member_source_drops(agent_stub, member.id) - before == 2 * FRAMES
        # gen withdraws OWN_A and ECMP4 and announces OWN_C: OWN_C at once; OWN_A gone after
        # the hold time; ECMP4, still announced by the sink, stays (sticky): both were due
        # together, so once OWN_A is gone ECMP4 has outlived its removal.
        announce(frr, OWN_B, OWN_C, OWN_6)
        P.until(lambda: OWN_C in (agent_filter(agent_stub, "gen") or set()), 60, "OWN_C added", log)
        P.until(lambda: agent_filter(agent_stub, "gen") == {OWN_B, OWN_C, ECMP4, OWN_6}, 60,
               "OWN_A withdrawn", log)  # fmt: skip
        time.sleep(HOLD + 1.5)
        assert agent_filter(agent_stub, "gen") == {OWN_B, OWN_C, ECMP4, OWN_6}
        before = member_source_drops(agent_stub, member.id)
        assert sent_through(lab, "198.19.80.1") == 0
        assert member_source_drops(agent_stub, member.id) - before == FRAMES
        assert sent_through(lab, "198.19.82.1") == FRAMES
    finally:
        P.stop(controller)
        P.stop(agent)
        frr.stop()
        lab.down()
