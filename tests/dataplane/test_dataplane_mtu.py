"""Egress MTU: with dut1 at 1280 in the engine, DF IPv4 and all IPv6 packets that do not
fit are answered with Fragmentation Needed / Packet Too Big carrying the MTU, IPv4 without
DF is dropped (the engine does not fragment), and a packet of exactly the MTU passes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from lab_support import (
    assert_forwarded,
    counters,
    dataplane,
    match,
    send_and_capture,
    settle,
    standard_fib,
    start_engine,
    transit_spec,
)
from test_dataplane_engine import assert_icmp_error, is_icmp_error

from corridor import lab as L
from corridor import traffic

pytestmark = pytest.mark.lab  # network namespaces, real traffic, root

MTU = 1280


@pytest.fixture(scope="module")
def small_mtu_engine(lab: L.Lab) -> Iterator[object]:
    eng = start_engine(lab, standard_fib(dataplane()), mtu_out=MTU)
    try:
        yield eng
    finally:
        eng.stop()


@pytest.mark.parametrize("family", [4, 6])
def test_exactly_the_mtu_passes(lab: L.Lab, small_mtu_engine: object, family: int) -> None:
    spec = transit_spec(family, df=True)
    frames = traffic.build_frames(spec, [14 + MTU, 14 + MTU - 1], flows=2)
    got = send_and_capture(lab, frames)
    assert len(got) == len(frames)
    for sent, frame in match(frames, got):
        assert_forwarded(sent, frame, src_mac=L.DUT_OUT_MAC, dst_mac=L.SINK_MAC)


@pytest.mark.parametrize("family", [4, 6])
def test_too_big_with_df_or_ipv6_gets_the_mtu_back(
    lab: L.Lab, small_mtu_engine: object, family: int
) -> None:
    sent = traffic.build_frame(transit_spec(family, df=True), 14 + MTU + 120)
    before = counters(small_mtu_engine)
    back = send_and_capture(
        lab, [sent], role="gen", iface=L.GEN_IF, keep=is_icmp_error, expect=1, duration=2
    )
    delta = settle(small_mtu_engine) - before
    assert len(back) == 1, f"no ICMP error; drops {delta.drops()}"
    if family == 4:
        assert_icmp_error(back[0], sent, 3, 4, MTU)  # RFC 1191: next-hop MTU in the low 16
    else:
        assert_icmp_error(back[0], sent, 2, 0, MTU)  # RFC 4443 section 3.2
    assert delta.drop("mtu_exceeded") == 1
    assert delta.tx(1) == 0


def test_too_big_without_df_is_dropped_unfragmented(lab: L.Lab, small_mtu_engine: object) -> None:
    sent = traffic.build_frame(transit_spec(4, df=False), 14 + MTU + 120)
    before = counters(small_mtu_engine)
    keys = {traffic.frame_key(sent)}
    got = send_and_capture(
        lab, [sent], count=3, expect=0, duration=0.5,
        keep=lambda f: traffic.frame_key(f) in keys or f[23:24] == b"\x11",
    )  # fmt: skip
    delta = settle(small_mtu_engine) - before
    assert got == []
    assert delta.drop("fragmentation_needed") == 3
