"""Helpers of the data-plane tests: test frames toward the transit prefixes, sending from gen
while capturing elsewhere, and scapy checks of what arrived."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import scapy.layers.inet
import scapy.layers.inet6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Packet

from corridor import lab as L
from corridor import traffic

IP = scapy.layers.inet.IP
IPv6 = scapy.layers.inet6.IPv6
ICMP = scapy.layers.inet.ICMP

# Sizes from the smallest Ethernet frame to the largest untagged one at MTU 1500.
SIZES = (60, 64, 65, 127, 128, 256, 511, 512, 1024, 1280, 1500, 1513, 1514)


def transit_spec(family: int = 4, **changes: object) -> traffic.FrameSpec:
    """Frames from gen toward a transit address behind the sink, via dut0."""
    spec = traffic.FrameSpec(
        family=family,
        src=L.GEN_V4 if family == 4 else L.GEN_V6,
        dst="198.19.1.1" if family == 4 else "2001:db8:100::1",
        src_mac=L.GEN_MAC,
        dst_mac=L.DUT_IN_MAC,
    )
    return dataclasses.replace(spec, **changes)


def send_and_capture(
    lab: L.Lab,
    frames: Sequence[bytes],
    *,
    role: str = "sink",
    iface: str = L.SINK_IF,
    keep: Callable[[bytes], bool] | None = None,
    expect: int | None = None,
    duration: float = 5.0,
    rate: float | None = None,
    count: int | None = None,
) -> list[bytes]:
    """Send `frames` (count: default one each) from gen0; return the frames `keep` let
    through on `iface` of `role` (default: the sent frames, forwarded), waiting until
    `expect` arrived (default: as many as sent) or `duration` passed."""
    if keep is None:
        keys = {traffic.frame_key(f) for f in frames}

        def keep(frame: bytes) -> bool:
            return traffic.frame_key(frame) in keys

    total = len(frames) if count is None else count
    want = total if expect is None else expect
    sock = traffic.open_socket(L.GEN_IF, lab.ns("gen"))
    cap = traffic.Capture(iface, lab.ns(role), duration=duration, count=want or None, keep=keep)
    cap.start()
    try:
        sent = traffic.send(sock, frames, count=total, duration=duration, rate=rate)
        assert sent == total, f"sent only {sent} of {total} frames in {duration} s"
        if want:
            return cap.wait()
        time.sleep(min(1.0, duration))  # nothing should arrive: give it a chance to
        return cap.stop()
    finally:
        cap.stop()
        sock.close()


def match(sent: Sequence[bytes], got: Sequence[bytes]) -> list[tuple[bytes, bytes]]:
    """Pairs (sent, received) by `frame_key`; fails on a received frame nobody sent."""
    by_key = {traffic.frame_key(f): f for f in sent}
    pairs = []
    for frame in got:
        key = traffic.frame_key(frame)
        assert key in by_key, f"unexpected frame {Ether(frame).summary()}"
        pairs.append((by_key[key], frame))
    return pairs


def decode(frame: bytes) -> Packet:
    return Ether(frame)


def checksums_valid(frame: bytes) -> bool:
    """True if scapy, recomputing every IP/L4 checksum, gets the same bytes."""
    pkt = Ether(frame)
    for layer in pkt.layers():
        if layer.__name__.lower().endswith("error") or layer.__name__ == "IPerror6":
            break  # the datagram quoted in an ICMP error keeps its checksums as they were
        p = pkt.getlayer(layer)
        for name in ("chksum", "cksum"):
            if name in p.fields:
                setattr(p, name, None)
    return bytes(pkt) == frame


def l3(pkt: Packet) -> Packet:
    """The IP / IPv6 layer, under a VLAN tag or not."""
    return pkt[IP] if IP in pkt else pkt[IPv6]


def vlan_of(pkt: Packet) -> int | None:
    return pkt[Dot1Q].vlan if Dot1Q in pkt else None


def assert_forwarded(
    sent: bytes, got: bytes, *, src_mac: str, dst_mac: str, vlan: int | None = None
) -> None:
    """`got` is `sent` forwarded one hop: new MACs (and tag), TTL / hop limit one lower,
    valid checksums, the rest of the IP packet untouched."""
    s, g = Ether(sent), Ether(got)
    assert g.src == src_mac and g.dst == dst_mac, f"MACs {g.src} -> {g.dst}"
    assert vlan_of(g) == vlan, f"VLAN {vlan_of(g)}, expected {vlan}"
    si, gi = l3(s), l3(g)
    if IP in s:
        assert gi.ttl == si.ttl - 1, f"TTL {si.ttl} -> {gi.ttl}"
        assert bytes(gi)[:8] == bytes(si)[:8] and bytes(gi)[12:20] == bytes(si)[12:20]
        assert gi.len == si.len
        # The datagram up to its total length: Ethernet padding after it may differ (a
        # frame that lost its VLAN tag is padded back up to 60 bytes).
        ihl = gi.ihl * 4
        assert bytes(gi)[ihl : gi.len] == bytes(si)[ihl : si.len], "payload changed"
    else:
        assert gi.hlim == si.hlim - 1, f"hop limit {si.hlim} -> {gi.hlim}"
        end = 40 + si.plen
        assert bytes(gi)[:7] == bytes(si)[:7] and bytes(gi)[8:end] == bytes(si)[8:end]
    assert checksums_valid(got), f"bad checksum in {g.summary()}"


# -- the engine --------------------------------------------------------------------------

# Where the standard FIB sends what (all behind the sink, via dut1):
#   198.19.0.0/16, 2001:db8:100::/48           group 1: dut1 untagged
#   198.19.20.0/24, 2001:db8:100:20::/64       group 2: dut1 VLAN 20
#   198.19.30.0/24, 2001:db8:100:30::/64       group 3: ECMP dut1 VLAN 20 + VLAN 21
#   198.19.40.0/24, 2001:db8:100:40::/64       group 4: dut1 untagged (re-pointed by tests)
#   198.19.99.0/24                             group 5: an adjacency on an unknown VLAN
#   198.19.66.0/24, 2001:db8:100:66::/64       blackhole
#   198.19.77.0/24, 2001:db8:100:77::/64       unreachable
#   198.18.200.0/24, 2001:db8:dead::/48        no route
ROUTES = (
    ("198.19.0.0/16", 1), ("2001:db8:100::/48", 1),
    ("198.19.20.0/24", 2), ("2001:db8:100:20::/64", 2),
    ("198.19.30.0/24", 3), ("2001:db8:100:30::/64", 3),
    ("198.19.40.0/24", 4), ("2001:db8:100:40::/64", 4),
    ("198.19.99.0/24", 5),
    ("198.19.66.0/24", "blackhole"), ("2001:db8:100:66::/64", "blackhole"),
    ("198.19.77.0/24", "unreachable"), ("2001:db8:100:77::/64", "unreachable"),
)  # fmt: skip
NO_ROUTE4, NO_ROUTE6 = "198.18.200.1", "2001:db8:dead::1"


def dataplane():  # -> module corridor._dataplane
    """The extension with its Engine, or a test failure saying what is missing."""
    import pytest

    try:
        from corridor import _dataplane
    except ImportError as e:
        pytest.fail(f"the engine extension corridor._dataplane is not built ({e}): `make deps`")
    if not hasattr(_dataplane, "Engine"):
        pytest.fail(
            "corridor._dataplane has no Engine (the extension is stale): rebuild with `make deps`"
        )
    return _dataplane


def standard_fib(dp):  # -> Fib
    fib = dp.Fib(v4_routes=1024, v6_routes=1024, groups=64, adjacencies=64)
    b = dp.Batch()
    b.set_adjacency(1, 1, 0, L.DUT_OUT_MAC, L.SINK_MAC)
    b.set_adjacency(2, 1, 20, L.DUT_OUT_MAC, L.SINK_MAC)
    b.set_adjacency(3, 1, 21, L.DUT_OUT_MAC, L.SINK_MAC)
    b.set_adjacency(4, 1, 999, L.DUT_OUT_MAC, L.SINK_MAC)
    b.set_group(1, [(1, 1)])
    b.set_group(2, [(2, 1)])
    b.set_group(3, [(2, 1), (3, 1)])
    b.set_group(4, [(1, 1)])
    b.set_group(5, [(4, 1)])
    for prefix, target in ROUTES:
        b.add_route(prefix, target)
    fib.apply(b)
    return fib


def engine_ports(mtu_out: int = 1500) -> list[dict]:
    def subs(port: str, v4: str, v6: str) -> dict[int, list[str]]:
        addresses = {0: [v4, v6]}
        for v in L.VLANS:
            if v.parent == port:
                addresses[v.id] = [v.v4, v.v6]
        return addresses

    return [
        {"name": L.DUT_IN, "queues": 1, "mtu": 1500,
         "addresses": subs(L.DUT_IN, L.DUT_IN_V4, L.DUT_IN_V6)},
        {"name": L.DUT_OUT, "queues": 1, "mtu": mtu_out,
         "addresses": subs(L.DUT_OUT, L.DUT_OUT_V4, L.DUT_OUT_V6)},
    ]  # fmt: skip


# The per-source and per-worker ICMP limits out of the way: the module engines send every
# error from one source (gen) and test the per-port bucket; test_dataplane_icmp.py tests
# the defaults.
NO_SOURCE_LIMITS = {
    "icmp_source_rate": 1_000_000, "icmp_source_burst": 1_000_000,
    "icmp_worker_rate": 1_000_000, "icmp_worker_burst": 1_000_000,
}  # fmt: skip


def start_engine(lab: L.Lab, fib, *, mtu_out: int = 1500, icmp_rate: int = 1000,
                 icmp_burst: int = 100, ports: list[dict] | None = None,
                 limits: dict[str, int] | None = None):  # fmt: skip
    dp = dataplane()
    eng = dp.Engine(
        fib, ports=ports or engine_ports(mtu_out), workers=1, netns=lab.ns("dut"),
        busy_poll=False, bind_mode="auto", icmp_rate=icmp_rate, icmp_burst=icmp_burst,
        **(NO_SOURCE_LIMITS if limits is None else limits),
    )  # fmt: skip
    eng.start()
    return eng


class Counters:
    """A reading of `Engine.counters()`, with the sums the tests need."""

    def __init__(self, raw: dict) -> None:
        self.raw = raw

    def drop(self, reason: str) -> int:
        return int(self.raw["drops"].get(reason, 0))

    def drops_total(self) -> int:
        return sum(int(v) for v in self.raw["drops"].values())

    def icmp(self, outcome: str) -> int:
        return int(self.raw["icmp"].get(outcome, 0))

    def _port_sum(self, field: str, port: int | None, vlan: int | None) -> int:
        total = 0
        for i, entry in enumerate(self.raw["ports"]):
            p = entry.get("port", i)
            if isinstance(p, str):
                p = [L.DUT_IN, L.DUT_OUT].index(p)
            if (port is None or p == port) and (vlan is None or entry.get("vlan", 0) == vlan):
                total += int(entry[field])
        return total

    def rx(self, port: int | None = None, vlan: int | None = None) -> int:
        return self._port_sum("rx_packets", port, vlan)

    def tx(self, port: int | None = None, vlan: int | None = None) -> int:
        return self._port_sum("tx_packets", port, vlan)

    def __sub__(self, before: Counters) -> Delta:
        return Delta(self, before)


class Delta:
    """What changed between two readings."""

    def __init__(self, after: Counters, before: Counters) -> None:
        self.after, self.before = after, before

    def drop(self, reason: str) -> int:
        return self.after.drop(reason) - self.before.drop(reason)

    def drops(self) -> dict[str, int]:
        names = set(self.after.raw["drops"]) | set(self.before.raw["drops"])
        return {n: self.drop(n) for n in sorted(names) if self.drop(n)}

    def icmp(self, outcome: str) -> int:
        return self.after.icmp(outcome) - self.before.icmp(outcome)

    def rx(self, port: int | None = None, vlan: int | None = None) -> int:
        return self.after.rx(port, vlan) - self.before.rx(port, vlan)

    def tx(self, port: int | None = None, vlan: int | None = None) -> int:
        return self.after.tx(port, vlan) - self.before.tx(port, vlan)


def counters(eng) -> Counters:
    return Counters(eng.counters())


def settle(eng, timeout: float = 2.0) -> Counters:
    """Counters once they stopped moving (the engine drained what it had)."""
    last = counters(eng)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = counters(eng)
        if (
            now.rx() == last.rx()
            and now.tx() == last.tx()
            and now.drops_total() == last.drops_total()
        ):
            return now
        last = now
    return last
