"""sFlow v5 export end to end against a real collector: one lab (`cor-s<pid>-…`, removed
afterwards) plus a collector namespace (`…col`, joined to the router's namespace by a veth
on 198.18.200.0/30) running pmacct's `sfacctd` from Debian, and `corridor agent` hosting
the engine with 1-in-N sampling on dut0 and none on dut1.

Checked: sfacctd decodes every datagram the agent sent (tcpdump in the collector's
namespace sees the same datagrams, their sequence numbers without a gap, and sfacctd
accounts exactly as many flow samples as the wire carried, each with the right ports and
member MAC); the sampled share of dut0's frames is 1/N within a 5-sigma bound; the last
counter samples equal GetCounters once the traffic stopped. Run as root."""

from __future__ import annotations

import json
import math
import os
import signal
import struct
import subprocess
import time
from pathlib import Path

import pytest

import process_support as P
from corridor import lab as L
from corridor import traffic
from corridor.agent import client as c
from corridor.v1 import dataplane_pb2
from metrics_support import free_port, samples, scrape

pytestmark = pytest.mark.lab

RATE = 10  # 1 in RATE frames of dut0
FRAMES = 20_000  # sent from gen0: ~2000 samples, 5 s at 4000/s
COUNTER_INTERVAL = 1
COLLECTOR_PORT = 6343
DUT_SIDE, COLLECTOR_SIDE = "198.18.200.1", "198.18.200.2"
ELECTION = 1
MEMBER_MAC = "02:0a:00:00:00:01"


def _until(predicate, within: float, what: str, log: Path | None = None):
    return P.until(predicate, within, what, log, interval=0.2)


def _agent_config(
    lab: L.Lab, sock: Path, metrics_port: int, rates: tuple[int, int] = (RATE, 0),
    collector: str = f"{COLLECTOR_SIDE}:{COLLECTOR_PORT}",
) -> str:  # fmt: skip
    return P.agent_config(
        lab, sock, ipv6=False,
        sections=f"""[metrics]
address = "127.0.0.1:{metrics_port}"
[sflow]
collectors = ["{collector}"]
agent_address = "{L.DUT_IN_V4}"
counter_interval = {COUNTER_INTERVAL}
netns = "{lab.ns("dut")}"
""",
        in_port=f"sample_rate = {rates[0]}",
        out_port=f"sample_rate = {rates[1]}",
    )  # fmt: skip


def _collector_config(d: Path) -> str:
    return f"""
daemonize: false
sfacctd_ip: {COLLECTOR_SIDE}
sfacctd_port: {COLLECTOR_PORT}
sfacctd_renormalize: false
sfacctd_counter_file: {d}/counters.json
sfacctd_counter_output: json
plugins: print[flows]
aggregate[flows]: in_iface, out_iface, src_mac, dst_mac, src_host, dst_host
print_output[flows]: json
print_output_file[flows]: {d}/flows.json
print_output_file_append[flows]: true
print_refresh_time[flows]: 1
"""


def _pcap_datagrams(path: Path) -> list[bytes]:
    """The UDP payloads of a pcap of `tcpdump -i IF -w` (Ethernet, IPv4)."""
    data = path.read_bytes()
    if len(data) < 24:
        return []
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    out, off = [], 24
    while off + 16 <= len(data):
        _, _, incl, _ = struct.unpack(endian + "IIII", data[off : off + 16])
        frame = data[off + 16 : off + 16 + incl]
        off += 16 + incl
        if len(frame) < 42 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
            continue
        ihl = (frame[14] & 0x0F) * 4
        udp = frame[14 + ihl :]
        if struct.unpack("!H", udp[2:4])[0] == COLLECTOR_PORT:
            out.append(udp[8:])
    return out


def _flow_samples_in(datagram: bytes) -> tuple[int, int, int]:
    """(datagram sequence, flow samples, counter samples) of one sFlow v5 datagram (IPv4
    agent): a second, minimal reading of the header, to count what was on the wire."""
    version, kind = struct.unpack("!II", datagram[:8])
    assert (version, kind) == (5, 1), (version, kind)
    _, seq, _, n = struct.unpack("!IIII", datagram[12:28])
    off, flows, counters = 28, 0, 0
    for _ in range(n):
        fmt, length = struct.unpack("!II", datagram[off : off + 8])
        flows += fmt == 1
        counters += fmt == 2
        off += 8 + length
    assert off == len(datagram), "samples fill the datagram exactly"
    return seq, flows, counters


class World:
    def __init__(self, d: Path, lab: L.Lab) -> None:
        self.d, self.lab = d, lab
        self.col = f"{lab.prefix}col"
        self.sock, self.agent_log = d / "agent.sock", d / "agent.log"
        self.processes: list[subprocess.Popen] = []
        self.agent: subprocess.Popen | None = None
        self.sfacctd: subprocess.Popen | None = None

    def collector_up(self) -> None:
        L.command(["ip", "netns", "add", self.col])
        dut = self.lab.ns("dut")
        self.lab.ip("dut", "link", "add", "sfc0", "type", "veth", "peer", "name", "sfc1",
                    "netns", self.col)  # fmt: skip
        self.lab.ip("dut", "addr", "add", f"{DUT_SIDE}/30", "dev", "sfc0")
        self.lab.ip("dut", "link", "set", "sfc0", "up")
        L.command(["ip", "-n", self.col, "addr", "add", f"{COLLECTOR_SIDE}/30", "dev", "sfc1"])
        L.command(["ip", "-n", self.col, "link", "set", "sfc1", "up"])
        L.command(["ip", "-n", self.col, "link", "set", "lo", "up"])
        del dut
        (self.d / "sfacctd.conf").write_text(_collector_config(self.d))
        self.tcpdump = P.spawn_command(
            ["tcpdump", "-i", "sfc1", "-U", "-n", "-w", str(self.d / "wire.pcap"), "udp", "port",
             str(COLLECTOR_PORT)], self.d / "tcpdump.log", self.col,
        )  # fmt: skip
        self.sfacctd = P.spawn_command(
            ["sfacctd", "-f", str(self.d / "sfacctd.conf")], self.d / "sfacctd.log", self.col
        )
        self.processes += [self.tcpdump, self.sfacctd]
        time.sleep(1.0)  # both listening before the first datagram
        for p, name in ((self.sfacctd, "sfacctd"), (self.tcpdump, "tcpdump")):
            assert p.poll() is None, f"{name} exited: {(self.d / f'{name}.log').read_text()}"

    def start_agent(self) -> None:
        self.metrics_port = free_port()
        (self.d / "agent.toml").write_text(_agent_config(self.lab, self.sock, self.metrics_port))
        self.agent, self.stub, self.channel = P.start_agent(
            self.d / "agent.toml", self.sock, self.agent_log
        )
        self.stub.Write(
            c.write_request(ELECTION, [
                c.set_adjacency(1, L.DUT_OUT, 0, L.DUT_OUT_MAC, L.SINK_MAC),
                c.set_group(1, [(1, 1)]),
                c.set_route("198.19.0.0/16", 1),
                c.set_member(1, L.DUT_IN, 0, MEMBER_MAC, "alpha"),
            ]), timeout=10,
        )  # fmt: skip

    def down(self) -> None:
        for p in [self.agent, *self.processes]:
            # sfacctd ignores SIGTERM (20 s to the SIGKILL); SIGINT is its shutdown.
            P.stop(p, signal.SIGINT if p is self.sfacctd else signal.SIGTERM)
        L.command(["ip", "netns", "del", self.col], check=False)

    def counters(self) -> dataplane_pb2.Counters:
        return self.stub.GetCounters(dataplane_pb2.GetCountersRequest(), timeout=10)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    P.require(
        "the sFlow lab test",
        tools=(("ip", "iproute2"), ("sfacctd", "pmacct"), ("tcpdump", "tcpdump")),
        engine=("Engine.drain_samples",),
    )
    d = tmp_path_factory.mktemp("sflow-lab")
    lab = L.Lab(prefix=f"cor-s{os.getpid()}-")
    w = World(d, lab)
    try:
        try:
            lab.up()
        except L.LabError as e:
            pytest.fail(f"cannot build the lab {lab.prefix}: {e}")
        w.collector_up()
        w.start_agent()
        yield w
    finally:
        w.down()
        lab.down()


def _port_counters(counters: dataplane_pb2.Counters, port: str) -> tuple[int, int, int, int]:
    rows = [i for i in counters.interfaces if i.port == port]
    return (
        sum(i.rx_packets for i in rows), sum(i.rx_bytes for i in rows),
        sum(i.tx_packets for i in rows), sum(i.tx_bytes for i in rows),
    )  # fmt: skip


def test_sflow_against_sfacctd(world: World) -> None:
    spec = traffic.FrameSpec(src=L.GEN_V4, dst="198.19.1.1", src_mac=MEMBER_MAC,
                             dst_mac=L.DUT_IN_MAC)  # fmt: skip
    frames = [traffic.build_frame(spec, 100, flow=i) for i in range(64)]
    sock = traffic.open_socket(L.GEN_IF, world.lab.ns("gen"))
    try:
        assert traffic.send(sock, frames, count=FRAMES, duration=30, rate=4000) == FRAMES
    finally:
        sock.close()

    # Everything drained and sent: the counters stop moving, then two counter intervals
    # and the collector's print refresh pass.
    # A busy machine may leave the worker behind the sender: wait until two readings a
    # second apart agree, however long that takes (bounded).
    readings = [world.counters().interfaces]

    def settled() -> bool:
        time.sleep(1.0)
        readings.append(world.counters().interfaces)
        return readings[-1] == readings[-2] and _port_counters(world.counters(), L.DUT_IN)[0] > 0

    _until(settled, 60, "dut0's counters settled")
    after = world.counters()
    time.sleep(3 * COUNTER_INTERVAL + 2)
    assert world.counters().interfaces == after.interfaces, "traffic stopped"
    rx, rx_bytes, tx, tx_bytes = _port_counters(after, L.DUT_IN)
    out = _port_counters(after, L.DUT_OUT)
    assert rx > FRAMES * 0.5, f"the engine received {rx} of {FRAMES} frames"

    # What was on the wire: consecutive datagram sequence numbers, and the samples.
    world.tcpdump.send_signal(signal.SIGINT)
    world.tcpdump.wait(timeout=10)
    wire = _pcap_datagrams(world.d / "wire.pcap")
    assert wire, "no sFlow datagram reached the collector's namespace"
    decoded = [_flow_samples_in(d) for d in wire]
    seqs = [s for s, _, _ in decoded]
    assert seqs == list(range(1, len(seqs) + 1)), "datagram sequence numbers without a gap"
    wire_flows = sum(f for _, f, _ in decoded)

    # The sampled share: samples ~ Binomial(rx, 1/N) at worst (the random skip, uniform
    # in [1, 2N-1], gives a count with variance rx(N-1)/(3N^2), a third of the binomial's
    # rx(N-1)/N^2), so 5 binomial sigmas bound it with room.
    mean = rx / RATE
    sigma = math.sqrt(rx * (1 / RATE) * (1 - 1 / RATE))
    assert abs(wire_flows - mean) < 5 * sigma, (
        f"{wire_flows} samples of {rx} frames at 1:{RATE}: expected {mean:.0f} ± {5 * sigma:.0f}"
    )

    # sfacctd decoded them all: its flow records (renormalisation off: one packet a
    # sample) add up to the samples on the wire, all from dut0 to dut1 and the member.
    ports = {p.name: p for p in world.stub.ListPorts(dataplane_pb2.ListPortsRequest()).ports}
    lines = (
        (world.d / "flows.json").read_text().splitlines()
        if (world.d / "flows.json").exists()
        else []
    )
    records = [json.loads(line) for line in lines if line.strip()]
    decoded_flows = sum(r["packets"] for r in records)
    assert decoded_flows == wire_flows, (
        f"sfacctd decoded {decoded_flows} of {wire_flows}: {records[:3]}"
    )
    for r in records:
        assert r["iface_in"] == ports[L.DUT_IN].ifindex, r
        assert r["iface_out"] == ports[L.DUT_OUT].ifindex, r
        assert r["mac_src"] == MEMBER_MAC and r["ip_dst"] == "198.19.1.1", r
    # The engine's own count agrees: every sample it took reached the wire, none lost.
    metrics = samples(scrape(world.metrics_port))
    assert metrics[f'corridor_engine_sflow_samples_total{{port="{L.DUT_IN}"}}'] == wire_flows
    assert metrics[f'corridor_engine_sflow_samples_dropped_total{{port="{L.DUT_IN}"}}'] == 0
    assert metrics[f'corridor_engine_sflow_sample_rate{{port="{L.DUT_IN}"}}'] == RATE
    assert metrics[f'corridor_engine_sflow_samples_total{{port="{L.DUT_OUT}"}}'] == 0
    # And the exporter's: every sample sent once, nothing refused; counter datagrams go on.
    assert metrics["corridor_agent_sflow_flow_samples_total"] == wire_flows
    assert metrics["corridor_agent_sflow_datagrams_total"] >= len(wire)
    assert metrics["corridor_agent_sflow_send_errors_total"] == 0
    log = (world.d / "sfacctd.log").read_text()
    assert "ERROR" not in log and "WARN" not in log, log

    # Counter samples: the last ones for each port equal GetCounters (traffic stopped).
    counter_lines = (world.d / "counters.json").read_text().splitlines()
    last: dict[int, dict] = {}
    for line in counter_lines:
        entry = json.loads(line)
        if "ifIndex" in entry:
            last[int(entry["ifIndex"])] = entry
    assert set(last) == {ports[L.DUT_IN].ifindex, ports[L.DUT_OUT].ifindex}, counter_lines[-3:]
    got_in = last[ports[L.DUT_IN].ifindex]
    assert (int(got_in["ifInUcastPkts"]), int(got_in["ifInOctets"])) == (rx, rx_bytes), got_in
    assert (int(got_in["ifOutUcastPkts"]), int(got_in["ifOutOctets"])) == (tx, tx_bytes), got_in
    got_out = last[ports[L.DUT_OUT].ifindex]
    assert (int(got_out["ifOutUcastPkts"]), int(got_out["ifOutOctets"])) == (out[2], out[3])


def test_a_reload_changes_the_rates_and_a_bad_one_changes_nothing(world: World) -> None:
    def rates() -> tuple[float, float]:
        s = samples(scrape(world.metrics_port))
        return tuple(s[f'corridor_engine_sflow_sample_rate{{port="{p}"}}']
                     for p in (L.DUT_IN, L.DUT_OUT))  # type: ignore[return-value]  # fmt: skip

    assert rates() == (RATE, 0)
    assert world.agent is not None
    toml = world.d / "agent.toml"
    toml.write_text(_agent_config(world.lab, world.sock, world.metrics_port, (5, 7)))
    world.agent.send_signal(signal.SIGHUP)
    _until(lambda: rates() == (5, 7), 20, "the new rates in force", world.agent_log)
    # A bad collector: refused whole, the rates as they were.
    toml.write_text(_agent_config(world.lab, world.sock, world.metrics_port, (50, 70),
                                  collector="collector.example:6343"))  # fmt: skip
    world.agent.send_signal(signal.SIGHUP)
    _until(lambda: "reload refused" in world.agent_log.read_text(), 20, "the refusal",
           world.agent_log)  # fmt: skip
    assert "sflow.collectors[0]" in world.agent_log.read_text()
    assert rates() == (5, 7)
    assert world.agent.poll() is None, "still serving"
