"""Edge protection through `corridor agent`, end to end in a lab of its own
(`cor-e<pid>-gen|dut|sink`, removed afterwards): the policies of dut0 come from the agent's
configuration (uRPF strict, the ethertype filter, the source MAC filter) and are in force
from the start; spoofed sources, a foreign ethertype and an unknown MAC are dropped and
counted per port over GetCounters and /metrics, the refused MAC is listed by
ListPortPolicies, and SetPortPolicies changes them while traffic flows. Run as root."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from corridor import lab as L
from corridor import traffic
from corridor.agent import client as c
from corridor.v1 import common_pb2, dataplane_pb2
from test_agent_engine import Agent, _free_port, _requirements, send

pytestmark = pytest.mark.lab  # network namespaces, real traffic, root

REPO = Path(__file__).resolve().parent.parent
ELECTION = 9
STRANGER = "02:66:00:00:00:66"
N = 40


def _config(lab: L.Lab, sock: Path, metrics_port: int) -> str:
    return f"""
workers = 1
netns = "{lab.ns("dut")}"
[listen]
unix = "{sock}"
[metrics]
address = "127.0.0.1:{metrics_port}"
[fib]
v4_routes = 1000
v6_routes = 1000
groups = 64
adjacencies = 64
[[ports]]
name = "{L.DUT_IN}"
addresses = ["{L.DUT_IN_V4}/24", "{L.DUT_IN_V6}/64"]
urpf = "strict"
ethertype_filter = true
mac_filter = true
allowed_macs = ["{L.GEN_MAC}"]
[[ports]]
name = "{L.DUT_OUT}"
addresses = ["{L.DUT_OUT_V4}/24", "{L.DUT_OUT_V6}/64"]
"""


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[L.Lab, Agent]]:
    _requirements()
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
        env = dict(os.environ, PYTHONPATH=str(REPO / "control"))
        with log.open("w") as err:
            process = subprocess.Popen(
                [sys.executable, "-m", "corridor", "agent", "--config", str(config)],
                env=env, stdout=subprocess.DEVNULL, stderr=err,
            )  # fmt: skip
        agent = Agent(process, sock, log)
        agent.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"the agent exited ({process.returncode}): {log.read_text()}")
            try:
                agent.stub.ListPorts(dataplane_pb2.ListPortsRequest(), timeout=1)
                break
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    pytest.fail(f"the agent did not serve within 30 s: {log.read_text()}")
                time.sleep(0.1)
        # Transit to the sink; gen's subnet back out of dut0 (the strict check's valid path).
        agent.stub.Write(
            c.write_request(
                ELECTION,
                [
                    c.set_adjacency(1, L.DUT_OUT, 0, L.DUT_OUT_MAC, L.SINK_MAC),
                    c.set_adjacency(2, L.DUT_IN, 0, L.DUT_IN_MAC, L.GEN_MAC),
                    c.set_group(1, [(1, 1)]),
                    c.set_group(2, [(2, 1)]),
                    c.set_route("198.19.0.0/16", 1),
                    c.set_route("198.18.0.0/24", 2),
                ],
            ),
            timeout=10,
        )
        yield lab, agent
    finally:
        if process is not None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
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
    line = f'corridor_xdp_edge_drops_total{{port="{L.DUT_IN}",reason="foreign_ethertype"}}'
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
