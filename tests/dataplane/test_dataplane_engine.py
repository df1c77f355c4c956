"""The real engine in the lab: forwarding of both families at every size,
every validation rule, ICMP errors and their rate limit, VLANs, ECMP, blackhole and
unreachable routes, a route change under traffic, and the kernel still answering on the
router's ports. One engine serves the module; each test reads counter deltas."""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Iterator

import pytest
from lab_support import (
    ICMP,
    IP,
    NO_ROUTE4,
    NO_ROUTE6,
    NO_SOURCE_LIMITS,
    SIZES,
    IPv6,
    assert_forwarded,
    checksums_valid,
    counters,
    dataplane,
    decode,
    engine_ports,
    l3,
    match,
    send_and_capture,
    settle,
    standard_fib,
    start_engine,
    transit_spec,
    vlan_of,
)

from corridor import lab as L
from corridor import traffic

pytestmark = pytest.mark.lab  # network namespaces, real traffic, root


@pytest.fixture(scope="module")
def fib() -> object:
    """The FIB the module's engine reads; tests re-point routes through it."""
    return standard_fib(dataplane())


@pytest.fixture(scope="module")
def engine(lab: L.Lab, fib: object) -> Iterator[object]:
    eng = start_engine(lab, fib)
    try:
        yield eng
    finally:
        eng.stop()
    assert not lab.has_xdp(), "an XDP program stayed attached after stop()"


def send_one_kind(lab: L.Lab, frames: list[bytes], **kw: object) -> list[bytes]:
    return send_and_capture(lab, frames, **kw)


# -- forwarding ----------------------------------------------------------------------------


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("proto", ["udp", "tcp", "icmp"])
def test_forwards_every_size_with_new_macs_and_ttl(
    lab: L.Lab, engine: object, family: int, proto: str
) -> None:
    spec = transit_spec(family, proto=proto)
    sizes = [s for s in SIZES if s >= traffic.min_size(spec)]
    frames = traffic.build_frames(spec, sizes, flows=4)
    before = counters(engine)
    got = send_and_capture(lab, frames)
    after = settle(engine)
    assert len(got) == len(frames), (
        f"{len(got)} of {len(frames)} arrived; drops {(after - before).drops()}"
    )
    for sent, frame in match(frames, got):
        assert_forwarded(sent, frame, src_mac=L.DUT_OUT_MAC, dst_mac=L.SINK_MAC)
        assert len(frame) == len(sent)
    delta = after - before
    assert delta.rx(0) == len(frames)
    assert delta.tx(1) == len(frames)
    assert delta.drops() == {}


# -- validation ----------------------------------------------------------------------------


def v4(size: int = 100, **changes: object) -> bytearray:
    return bytearray(traffic.build_frame(transit_spec(4, **changes), size))


def v6(size: int = 100, **changes: object) -> bytearray:
    return bytearray(traffic.build_frame(transit_spec(6, **changes), size))


def fix_v4_checksum(f: bytearray, ip: int = 14) -> bytearray:
    ihl = max(5, f[ip] & 0x0F) * 4
    f[ip + 10 : ip + 12] = b"\0\0"
    f[ip + 10 : ip + 12] = struct.pack("!H", traffic.checksum(bytes(f[ip : ip + ihl])))
    return f


def with_v4(f: bytearray, offset: int, value: bytes) -> bytearray:
    f[14 + offset : 14 + offset + len(value)] = value
    return fix_v4_checksum(f)


def with_v6(f: bytearray, offset: int, value: bytes) -> bytearray:
    f[14 + offset : 14 + offset + len(value)] = value
    return f


def addr4(text: str) -> bytes:
    return bytes(int(x) for x in text.split("."))


def addr6(text: str) -> bytes:
    import ipaddress

    return ipaddress.IPv6Address(text).packed


# Frames that break one rule each, and the drop counter that must count them. Frames only
# ever carry addresses of 198.18.0.0/15 and 2001:db8::/32 (the network rules of this
# project), so the martian, link-local, multicast and broadcast rules, whose frames would
# have to carry other addresses, are proven on byte arrays in the pipeline's unit tests
# (dataplane/engine/src/pipeline.rs) and not sent on any link here.
ENGINE_DROPS = {
    "ipv4_bad_version": lambda: with_v4(v4(), 0, b"\x55"),
    "ipv4_bad_header_len": lambda: with_v4(v4(), 0, b"\x44"),
    "ipv4_bad_checksum": lambda: with_v4(v4(), 0, b"\x45")[:24] + b"\xde\xad" + v4()[26:],
    "ipv4_bad_total_len": lambda: with_v4(v4(), 2, struct.pack("!H", 400)),
    "ipv4_total_len_below_header": lambda: with_v4(v4(), 2, struct.pack("!H", 16)),
    "ipv6_bad_version": lambda: with_v6(v6(), 0, b"\x40"),
    "ipv6_bad_payload_len": lambda: with_v6(v6(), 4, struct.pack("!H", 600)),
    "ttl_expired_1": lambda: v4(ttl=1),
    "ttl_expired_0": lambda: v4(ttl=0),
    "ttl_expired_v6_1": lambda: v6(ttl=1),
    "ttl_expired_v6_0": lambda: v6(ttl=0),
    "no_route": lambda: v4(dst=NO_ROUTE4),
    "no_route_v6": lambda: v6(dst=NO_ROUTE6),
    "unreachable": lambda: v4(dst="198.19.77.1"),
    "unreachable_v6": lambda: v6(dst="2001:db8:100:77::1"),
    "blackhole": lambda: v4(dst="198.19.66.1"),
    "blackhole_v6": lambda: v6(dst="2001:db8:100:66::1"),
    "unknown_vlan": lambda: v4(vlan=99),
    "unknown_egress": lambda: v4(dst="198.19.99.1"),
}
REASON_OF = {
    "ipv4_total_len_below_header": "ipv4_bad_total_len",
    "ttl_expired_1": "ttl_expired",
    "ttl_expired_0": "ttl_expired",
    "ttl_expired_v6_1": "ttl_expired",
    "ttl_expired_v6_0": "ttl_expired",
    "no_route_v6": "no_route",
    "unreachable_v6": "unreachable",
    "blackhole_v6": "blackhole",
}


def reason_of(case: str) -> str:
    return REASON_OF.get(case, case)


def any_test_frame(frame: bytes) -> bool:
    return traffic.frame_tag(frame) is not None


@pytest.mark.parametrize("case", sorted(ENGINE_DROPS))
def test_rule_breakers_are_dropped_and_counted(lab: L.Lab, engine: object, case: str) -> None:
    frame = bytes(ENGINE_DROPS[case]())
    before = counters(engine)
    got = send_and_capture(lab, [frame], count=3, keep=any_test_frame, expect=0, duration=0.3)
    after = settle(engine)
    assert got == [], f"{case}: forwarded {decode(got[0]).summary()}"
    reason = reason_of(case)
    delta = after - before
    assert delta.drops() == {reason: 3}, f"{case}: expected 3 {reason}, counted {delta.drops()}"


# Frames the steering program hands to the kernel (which neither forwards, with forwarding
# off, nor lets the engine see them): not forwarded, not counted by the engine.
KERNEL_CASES = {
    "other_host": lambda: v4(dst_mac="02:c0:00:00:00:99"),
    "link_broadcast": lambda: v4(dst_mac="ff:ff:ff:ff:ff:ff"),
    "link_multicast": lambda: v4(dst_mac="01:00:5e:00:00:09"),
    "not_ip": lambda: v4()[:12] + b"\x88\xb5" + v4()[14:],
    "multiple_vlan_tags": lambda: v4()[:12] + b"\x81\x00\x00\x0a\x81\x00\x00\x14" + v4()[12:],
    "qinq_outer_tag": lambda: v4()[:12] + b"\x88\xa8\x00\x0a\x81\x00\x00\x14" + v4()[12:],
    "truncated_ip_header": lambda: v4()[: 14 + 10],
    "to_the_router": lambda: v4(dst=L.DUT_OUT_V4),
    "to_the_router_v6": lambda: v6(dst=L.DUT_OUT_V6),
}


@pytest.mark.parametrize("case", sorted(KERNEL_CASES))
def test_frames_for_the_kernel_are_not_forwarded(lab: L.Lab, engine: object, case: str) -> None:
    frame = bytes(KERNEL_CASES[case]())
    before = counters(engine)
    got = send_and_capture(lab, [frame], count=3, keep=any_test_frame, expect=0, duration=0.3)
    after = settle(engine)
    assert got == [], f"{case}: forwarded {decode(got[0]).summary()}"
    assert (after - before).rx() == 0, f"{case}: the engine saw it (steered to AF_XDP)"


# -- ICMP errors -----------------------------------------------------------------------


def is_icmp_error(frame: bytes) -> bool:
    pkt = decode(frame)
    if IP in pkt:
        return pkt[IP].proto == 1 and ICMP in pkt and pkt[ICMP].type in (3, 11)
    if IPv6 in pkt:
        return pkt[IPv6].nh == 58 and bytes(pkt[IPv6].payload)[:1] in (b"\x01", b"\x02", b"\x03")
    return False


def icmp_fields(frame: bytes) -> tuple[int, int, int, bytes]:
    """(type, code, the 32-bit field after the checksum, quoted datagram)."""
    ip = l3(decode(frame))
    body = bytes(ip.payload)
    if IP in decode(frame):
        body = body[: ip.len - ip.ihl * 4]
    ty, code, _, rest = struct.unpack_from("!BBHI", body)
    return ty, code, rest, body[8:]


ICMP_CASES = [
    # (name, frame maker, IPv4 type, code) ; IPv6 in the second list
    ("ttl_expired", lambda: v4(ttl=1), 11, 0, 0),
    ("no_route", lambda: v4(dst=NO_ROUTE4), 3, 0, 0),
    ("unreachable_route", lambda: v4(dst="198.19.77.1"), 3, 1, 0),
    ("ttl_expired_v6", lambda: v6(ttl=1), 3, 0, 0),
    ("no_route_v6", lambda: v6(dst=NO_ROUTE6), 1, 0, 0),
    ("unreachable_route_v6", lambda: v6(dst="2001:db8:100:77::1"), 1, 6, 0),
    ("ttl_expired_big", lambda: v4(1514, ttl=1), 11, 0, 0),
    ("ttl_expired_big_v6", lambda: v6(1514, ttl=1), 3, 0, 0),
]


def assert_icmp_error(
    error: bytes, sent: bytes, ty: int, code: int, rest: int, *, vlan: int | None = None,
    src4: str = L.DUT_IN_V4, src6: str = L.DUT_IN_V6,
) -> None:  # fmt: skip
    pkt = decode(error)
    assert pkt.src == L.DUT_IN_MAC and pkt.dst == L.GEN_MAC, f"MACs {pkt.src} -> {pkt.dst}"
    assert vlan_of(pkt) == vlan
    s_ip = l3(decode(sent))
    e_ip = l3(pkt)
    if IP in pkt:
        assert (e_ip.src, e_ip.dst) == (src4, s_ip.src)
        limit = 576 - 28
    else:
        assert (e_ip.src, e_ip.dst) == (src6, s_ip.src)
        limit = 1280 - 48
    got = icmp_fields(error)
    assert got[:3] == (ty, code, rest), f"type/code/field {got[:3]}, expected {(ty, code, rest)}"
    original = bytes(s_ip)[: (s_ip.len if IP in decode(sent) else 40 + s_ip.plen)]
    assert got[3] == original[:limit], "the quote is not the datagram as received"
    assert checksums_valid(error), f"bad checksum in {pkt.summary()}"


@pytest.mark.parametrize(("name", "make", "ty", "code", "rest"), ICMP_CASES,
                         ids=[c[0] for c in ICMP_CASES])  # fmt: skip
def test_icmp_errors_reach_the_sender(
    lab: L.Lab, engine: object, name: str, make, ty: int, code: int, rest: int
) -> None:
    sent = bytes(make())
    before = counters(engine)
    got = send_and_capture(
        lab, [sent], role="gen", iface=L.GEN_IF, keep=is_icmp_error, expect=1, duration=2
    )
    assert len(got) == 1, f"{name}: no ICMP error came back"
    assert_icmp_error(got[0], sent, ty, code, rest)
    assert (settle(engine) - before).icmp("icmp_sent") == 1


def test_icmp_error_from_a_vlan_comes_back_tagged_from_its_address(
    lab: L.Lab, engine: object
) -> None:
    vlan = L.VLAN_BY_ID[10]
    for family, sent in ((4, v4(ttl=1, vlan=10, src=vlan.peer_v4)),
                         (6, v6(ttl=1, vlan=10, src=vlan.peer_v6))):  # fmt: skip
        got = send_and_capture(
            lab, [bytes(sent)], role="gen", iface=L.GEN_IF, keep=is_icmp_error, expect=1
        )
        assert len(got) == 1, f"IPv{family}: no ICMP error on VLAN 10"
        assert_icmp_error(
            got[0], bytes(sent), 11 if family == 4 else 3, 0, 0, vlan=10,
            src4=vlan.v4, src6=vlan.v6,
        )  # fmt: skip


def test_icmp_rate_limit_holds_under_a_flood(lab: L.Lab, engine: object) -> None:
    # The module's engine: 1000 errors/s, burst 100, per port.
    time.sleep(0.3)  # let the bucket fill after earlier tests
    frames = [bytes(v4(ttl=1, sport=10000 + i)) for i in range(64)]
    before = counters(engine)
    sock = traffic.open_socket(L.GEN_IF, lab.ns("gen"))
    cap = traffic.Capture(L.GEN_IF, lab.ns("gen"), duration=5, keep=is_icmp_error).start()
    try:
        t0 = time.monotonic()
        flooded = traffic.send(sock, frames, count=5000, duration=3)
        delta = settle(engine) - before
        # The bucket refills until the engine read the last frame: bound by settle's end.
        elapsed = time.monotonic() - t0
        time.sleep(0.2)
    finally:
        got = cap.stop()
        sock.close()
    assert flooded == 5000
    sent, limited = delta.icmp("icmp_sent"), delta.icmp("icmp_rate_limited")
    assert delta.drop("ttl_expired") == 5000
    assert sent + limited == 5000, f"sent {sent} + rate-limited {limited} != 5000"
    assert limited > 0, "nothing was rate-limited"
    assert sent <= 100 + 1000 * elapsed + 5, f"{sent} errors in {elapsed:.2f} s"
    assert sent >= 100, f"only {sent} errors: the burst of 100 was not allowed"
    assert len(got) == sent, f"counted {sent} errors sent, {len(got)} arrived"


def test_new_icmp_limits_take_effect_on_the_running_workers(lab: L.Lab, engine: object) -> None:
    """What a reload (SIGHUP with a new [icmp]) does: burst 10, no refill, on the running
    engine; its full bucket is cut to 10 and nothing refills. Then back to the module's."""
    time.sleep(0.3)  # a full bucket (burst 100) after earlier tests
    engine.set_icmp_limits(icmp_rate=0, icmp_burst=10, **NO_SOURCE_LIMITS)
    try:
        time.sleep(0.1)  # the workers take it at their next pass (an idle one within 10 ms)
        frames = [bytes(v4(ttl=1, sport=20000 + i)) for i in range(64)]
        before = counters(engine)
        sock = traffic.open_socket(L.GEN_IF, lab.ns("gen"))
        try:
            assert traffic.send(sock, frames, count=500, duration=2) == 500
        finally:
            sock.close()
        delta = settle(engine) - before
    finally:
        engine.set_icmp_limits(icmp_rate=1000, icmp_burst=100, **NO_SOURCE_LIMITS)
    assert delta.drop("ttl_expired") == 500
    assert delta.icmp("icmp_sent") == 10, delta.icmp("icmp_rate_limited")
    assert delta.icmp("icmp_rate_limited") == 490
    idle = dataplane().Engine(standard_fib(dataplane()), ports=engine_ports(), workers=1)
    with pytest.raises(dataplane().EngineError, match="not running"):
        idle.set_icmp_limits(icmp_rate=1)


# -- VLANs, ECMP, routes ---------------------------------------------------------------


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize(
    ("vlan_in", "dst4", "dst6", "vlan_out"),
    [
        (None, "198.19.20.1", "2001:db8:100:20::1", 20),
        (10, "198.19.1.1", "2001:db8:100::1", None),
        (10, "198.19.20.1", "2001:db8:100:20::1", 20),
    ],
    ids=["untagged-to-vlan20", "vlan10-to-untagged", "vlan10-to-vlan20"],
)
def test_vlan_in_and_out(
    lab: L.Lab, engine: object, family: int, vlan_in: int | None, dst4: str, dst6: str,
    vlan_out: int | None,
) -> None:  # fmt: skip
    src = (
        (L.VLAN_BY_ID[10].peer_v4 if family == 4 else L.VLAN_BY_ID[10].peer_v6) if vlan_in else None
    )
    spec = transit_spec(family, vlan=vlan_in, dst=dst4 if family == 4 else dst6,
                        **({"src": src} if src else {}))  # fmt: skip
    frames = traffic.build_frames(spec, [traffic.min_size(spec), 200, 1514 - 4], flows=3)
    got = send_and_capture(lab, frames)
    assert len(got) == len(frames)
    for sent, frame in match(frames, got):
        assert_forwarded(sent, frame, src_mac=L.DUT_OUT_MAC, dst_mac=L.SINK_MAC, vlan=vlan_out)


@pytest.mark.parametrize("family", [4, 6])
def test_ecmp_spreads_flows_and_keeps_each_on_one_path(
    lab: L.Lab, engine: object, family: int
) -> None:
    spec = transit_spec(family, dst="198.19.30.1" if family == 4 else "2001:db8:100:30::1")
    flows = 200
    frames = traffic.build_frames(spec, [100, 101, 102], flows=flows)  # 3 frames a flow
    got = send_and_capture(lab, frames)
    assert len(got) == len(frames)
    paths: dict[int, set[int | None]] = {}
    for sent, frame in match(frames, got):
        assert_forwarded(sent, frame, src_mac=L.DUT_OUT_MAC, dst_mac=L.SINK_MAC,
                         vlan=vlan_of(decode(frame)))  # fmt: skip
        flow, _ = traffic.frame_tag(sent)
        paths.setdefault(flow, set()).add(vlan_of(decode(frame)))
    assert all(len(p) == 1 for p in paths.values()), "a flow took more than one path"
    per_vlan = {v: sum(1 for p in paths.values() if v in p) for v in (20, 21)}
    assert set().union(*paths.values()) == {20, 21}
    assert min(per_vlan.values()) >= flows * 0.3, f"uneven spread {per_vlan}"


def test_route_change_takes_effect_under_traffic(lab: L.Lab, engine: object, fib: object) -> None:
    dp = dataplane()
    spec = transit_spec(4, dst="198.19.40.1")
    frames = traffic.build_frames(spec, [100] * 4000)  # seq 0..3999, one flow
    rate = 4000.0
    result: list[list[bytes]] = []

    def stream() -> None:
        result.append(send_and_capture(lab, frames, rate=rate, duration=4))

    sender = threading.Thread(target=stream)
    sender.start()
    try:
        time.sleep(0.5)
        b = dp.Batch()
        b.add_route("198.19.40.0/24", 2)  # from group 4 (untagged) to group 2 (VLAN 20)
        fib.apply(b)
    finally:
        sender.join()
        b = dp.Batch()
        b.add_route("198.19.40.0/24", 4)
        fib.apply(b)
    got = result[0]
    seqs = {vlan: [] for vlan in (None, 20)}
    for sent, frame in match(frames, got):
        seqs[vlan_of(decode(frame))].append(traffic.frame_tag(sent)[1])
    assert seqs[None] and seqs[20], f"path A got {len(seqs[None])}, B {len(seqs[20])}"
    assert max(seqs[None]) < min(seqs[20]), "frames went to A after the first went to B"
    assert len(got) == len(frames), f"{len(frames) - len(got)} frames lost across the change"


def test_kernel_answers_ping_arp_and_nd_while_the_engine_runs(lab: L.Lab, engine: object) -> None:
    for role, dev, addresses, mac in (
        ("gen", L.GEN_IF, (L.DUT_IN_V4, L.DUT_IN_V6), L.DUT_IN_MAC),
        ("sink", L.SINK_IF, (L.DUT_OUT_V4, L.DUT_OUT_V6), L.DUT_OUT_MAC),
    ):
        lab.ip(role, "neigh", "flush", "dev", dev)
        lab.ip(role, "-6", "neigh", "flush", "dev", dev)
        for address in addresses:
            out = lab.exec(role, ["ping", "-c", "2", "-i", "0.2", "-W", "2", address], check=False)
            assert out.returncode == 0, f"ping {address} from {role}: {out.stdout}{out.stderr}"
            neigh = lab.ip(role, "neigh", "show", address, "dev", dev).stdout
            assert f"lladdr {mac}" in neigh, f"ARP/ND for {address} unresolved: {neigh!r}"
