"""Edge filters in the XDP program, in the lab: frames of a foreign ethertype (LLDP, PPPoE,
an 802.1ad outer tag) and frames from a source MAC not allowed are dropped before the kernel
or the engine sees them and counted per port; IPv4, IPv6 and ARP from allowed stations still
pass, ARP to the kernel included (gen's kernel pings dut0); an ARP request to the kernel from
an unknown MAC gets no answer and its MAC shows in the refused table."""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterator

import pytest
from lab_support import counters, dataplane, send_and_capture, settle, standard_fib, start_engine
from lab_support import transit_spec as spec

from corridor import lab as L
from corridor import traffic

pytestmark = pytest.mark.lab  # network namespaces, real traffic, root

STRANGER = "02:66:00:00:00:66"  # a station that is not gen
SPOOFED_IP = "198.18.0.77"  # the stranger's claim in its ARP request
N = 30  # frames of each kind


def mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def raw(
    ether_type: int, *, src: str = L.GEN_MAC, dst: str = L.DUT_IN_MAC, vlan: int | None = None
) -> bytes:
    head = mac(dst) + mac(src)
    if vlan is not None:
        head += struct.pack("!HH", 0x8100, vlan)
    return head + struct.pack("!H", ether_type) + bytes(46)


def arp_request(src: str, spa: str, tpa: str) -> bytes:
    body = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac(src) + ipaddress.ip_address(spa).packed
    body += bytes(6) + ipaddress.ip_address(tpa).packed
    return mac("ff:ff:ff:ff:ff:ff") + mac(src) + struct.pack("!H", 0x0806) + body + bytes(18)


def is_arp_reply_to(ip: str):
    want = ipaddress.ip_address(ip).packed

    def keep(frame: bytes) -> bool:
        return frame[12:14] == b"\x08\x06" and frame[20:22] == b"\x00\x02" and frame[38:42] == want

    return keep


@pytest.fixture(scope="module")
def engine(lab: L.Lab) -> Iterator[object]:
    eng = start_engine(lab, standard_fib(dataplane()))
    try:
        yield eng
    finally:
        eng.stop()


def edge(eng: object) -> dict[str, int]:
    return counters(eng).raw["edge"][L.DUT_IN]


def send(lab: L.Lab, frames: list[bytes]) -> None:
    sock = traffic.open_socket(L.GEN_IF, lab.ns("gen"))
    try:
        assert traffic.send(sock, frames, duration=10) == len(frames)
    finally:
        sock.close()


def ping(lab: L.Lab) -> bool:
    """gen's kernel pings dut0's address after forgetting its MAC: ARP both ways first."""
    lab.ip("gen", "neigh", "flush", "dev", L.GEN_IF, check=False)
    done = lab.exec("gen", ["ping", "-c", "2", "-i", "0.2", "-W", "2", L.DUT_IN_V4], check=False)
    return done.returncode == 0


def test_the_ethertype_filter(lab: L.Lab, engine: object) -> None:
    engine.set_edge(L.DUT_IN, 0, ethertype_filter=True)  # type: ignore[attr-defined]
    try:
        assert engine.edge() == [  # type: ignore[attr-defined]
            {
                "port": L.DUT_IN,
                "vlan": 0,
                "ethertype_filter": True,
                "mac_filter": False,
                "allowed_macs": [],
            }
        ]
        before = settle(engine)
        foreign = [raw(0x88CC), raw(0x8863), raw(0x88CC, dst="01:80:c2:00:00:0e")]
        qinq = raw(0x8100, vlan=None)[:12] + struct.pack("!HHH", 0x88A8, 10, 0x0800) + bytes(46)
        send(lab, [*foreign, qinq] * N)
        # IPv4 and IPv6 transit still forwarded, ARP and ping to the kernel still answered.
        for family in (4, 6):
            sent = [bytes(traffic.build_frame(spec(family), 100, seq=i)) for i in range(N)]
            assert len(send_and_capture(lab, sent, duration=10)) == N, f"IPv{family} forwarded"
        assert ping(lab), "gen pings dut0 (ARP and ICMP to the kernel)"
        # VLAN 10 has no filter: LLDP tagged 10 is not the filter's to drop.
        send(lab, [raw(0x88CC, vlan=10)] * N)
        after = settle(engine)
        assert (
            after.raw["edge"][L.DUT_IN]["foreign_ethertype"]
            - before.raw["edge"][L.DUT_IN]["foreign_ethertype"]
            == 4 * N
        )
        assert (
            after.raw["edge"][L.DUT_IN]["unknown_source_mac"]
            == before.raw["edge"][L.DUT_IN]["unknown_source_mac"]
        )
        assert after.raw["edge"][L.DUT_OUT]["foreign_ethertype"] == 0
    finally:
        engine.set_edge(L.DUT_IN, 0)  # type: ignore[attr-defined]
    assert engine.edge() == []  # type: ignore[attr-defined]
    before = edge(engine)
    send(lab, [raw(0x88CC)] * N)
    assert edge(engine) == before, "filter off: nothing dropped by it"


def test_the_source_mac_filter(lab: L.Lab, engine: object) -> None:
    # Without a filter the kernel answers anyone's ARP request.
    got = send_and_capture(
        lab, [arp_request(STRANGER, SPOOFED_IP, L.DUT_IN_V4)], role="gen", iface=L.GEN_IF,
        keep=is_arp_reply_to(SPOOFED_IP), expect=1, duration=5,
    )  # fmt: skip
    assert len(got) == 1, "the kernel answers ARP when no filter is set"
    engine.set_edge(L.DUT_IN, 0, mac_filter=True, allowed_macs=[L.GEN_MAC])  # type: ignore[attr-defined]
    try:
        before = edge(engine)
        # The known station: transit forwarded, ping to the kernel answered.
        sent = [bytes(traffic.build_frame(spec(4), 100, seq=i)) for i in range(N)]
        assert len(send_and_capture(lab, sent, duration=10)) == N
        assert ping(lab)
        # The stranger: transit dropped in XDP, its ARP request never reaches the kernel.
        spoofed = [
            bytes(traffic.build_frame(spec(4, src_mac=STRANGER), 100, seq=i)) for i in range(N)
        ]
        assert send_and_capture(lab, spoofed, expect=0, duration=2) == []
        got = send_and_capture(
            lab, [arp_request(STRANGER, SPOOFED_IP, L.DUT_IN_V4)] * 3, role="gen",
            iface=L.GEN_IF, keep=is_arp_reply_to(SPOOFED_IP), expect=0, duration=2,
        )  # fmt: skip
        assert got == [], "no ARP answer to an unknown MAC"
        after = edge(engine)
        assert after["unknown_source_mac"] - before["unknown_source_mac"] == N + 3
        assert after["foreign_ethertype"] == before["foreign_ethertype"]
        [row] = [r for r in engine.refused_macs() if r["mac"] == STRANGER]  # type: ignore[attr-defined]
        assert (row["port"], row["vlan"]) == (L.DUT_IN, 0)
        assert row["packets"] >= N + 3 and 0 <= row["age_seconds"] < 60
        assert all(r["mac"] != L.GEN_MAC for r in engine.refused_macs())  # type: ignore[attr-defined]
    finally:
        engine.set_edge(L.DUT_IN, 0)  # type: ignore[attr-defined]
    assert len(send_and_capture(lab, spoofed, duration=10)) == N, "filter off: forwarded again"


def test_bad_filters_are_refused_and_change_nothing(engine: object) -> None:
    before = engine.edge()  # type: ignore[attr-defined]
    for kwargs, text in (
        ({"port": "nope0", "vlan": 0}, "is not one of the engine's ports"),
        ({"port": L.DUT_IN, "vlan": 77}, "has no sub-interface with VLAN 77"),
        (
            {
                "port": L.DUT_IN,
                "vlan": 0,
                "mac_filter": True,
                "allowed_macs": ["01:00:5e:00:00:01"],
            },
            "not a unicast MAC",
        ),
        (
            {"port": L.DUT_IN, "vlan": 0, "mac_filter": True, "allowed_macs": ["02:00:00:00:00"]},
            "not a unicast MAC",
        ),
    ):
        with pytest.raises(ValueError, match=text):
            engine.set_edge(**kwargs)  # type: ignore[attr-defined]
    assert engine.edge() == before  # type: ignore[attr-defined]
