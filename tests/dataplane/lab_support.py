"""Helpers of the data-plane tests: test frames toward the transit prefixes, sending from gen
while capturing elsewhere, and scapy checks of what arrived."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import scapy.layers.inet
import scapy.layers.inet6
from corridor import lab as L
from corridor import traffic
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Packet

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
        assert bytes(gi.payload) == bytes(si.payload)[: len(bytes(gi.payload))]
        assert gi.len == si.len
    else:
        assert gi.hlim == si.hlim - 1, f"hop limit {si.hlim} -> {gi.hlim}"
        assert bytes(gi)[:7] == bytes(si)[:7] and bytes(gi)[8:] == bytes(si)[8:]
    assert checksums_valid(got), f"bad checksum in {g.summary()}"
