"""The engine's default ICMP limits and directed broadcasts in the lab: one source flooding
TTL-1 packets gets a handful of errors while another source still gets its Time Exceeded;
a directed broadcast to dut1's subnet is forwarded there as a link broadcast (dut1 allows
it), one to dut0's subnet is dropped and counted, and neither is answered with ICMP."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator

import pytest
from lab_support import (
    IP,
    counters,
    dataplane,
    decode,
    engine_ports,
    send_and_capture,
    settle,
    standard_fib,
    start_engine,
    transit_spec,
)
from test_dataplane_engine import is_icmp_error

from corridor import lab as L
from corridor import traffic

pytestmark = pytest.mark.lab  # network namespaces, real traffic, root

OTHER_SOURCE = "198.18.0.77"  # a second sender on gen's link


def prefixed(address: str, net: str) -> str:
    return f"{address}/{ipaddress.ip_network(net).prefixlen}"


@pytest.fixture(scope="module")
def engine(lab: L.Lab) -> Iterator[object]:
    """Default ICMP limits (per source, port and worker); the ports' IPv4 addresses with
    their prefix lengths, so the engine knows both subnets; dut1 forwards directed
    broadcasts, dut0 does not."""
    ports = engine_ports()
    ports[0]["addresses"][0] = [prefixed(L.DUT_IN_V4, L.GEN_NET4), L.DUT_IN_V6]
    ports[1]["addresses"][0] = [f"{L.DUT_OUT_V4}/24", L.DUT_OUT_V6]
    ports[1]["directed_broadcast"] = True
    eng = start_engine(lab, standard_fib(dataplane()), ports=ports, limits={})
    try:
        yield eng
    finally:
        eng.stop()


def test_a_flooding_source_does_not_starve_another(lab: L.Lab, engine: object) -> None:
    flood = bytes(traffic.build_frame(transit_spec(4, ttl=1), 100))
    other = bytes(traffic.build_frame(transit_spec(4, ttl=1, src=OTHER_SOURCE), 100))
    # 2000 from gen at 2000/s, and one from the other source after every 200 of them.
    frames = [other if i % 200 == 199 else flood for i in range(2010)]
    before = counters(engine)
    t0 = time.monotonic()
    got = send_and_capture(
        lab, frames, role="gen", iface=L.GEN_IF, keep=is_icmp_error, expect=0, rate=2000,
        duration=10,
    )  # fmt: skip
    delta = settle(engine) - before
    # The source's bucket refills one a second for as long as the flood lasted at most.
    elapsed = time.monotonic() - t0
    to = [str(decode(f)[IP].dst) for f in got]
    to_flooder, to_other = to.count(L.GEN_V4), to.count(OTHER_SOURCE)
    assert delta.drop("ttl_expired") == 2010
    # Burst 6 and one a second: a few in the second or so the flood lasts.
    assert 6 <= to_flooder <= 7 + elapsed, f"the flooder got {to_flooder} in {elapsed:.1f} s"
    assert to_other >= 6, f"the other source got {to_other} of its 10 errors"
    assert delta.icmp("icmp_source_rate_limited") == 2000 - to_flooder + 10 - to_other
    assert delta.icmp("icmp_sent") == len(got)


def test_directed_broadcasts(lab: L.Lab, engine: object) -> None:
    # Enabled on dut1: forwarded to its subnet as a link broadcast, TTL decremented.
    sent = bytes(traffic.build_frame(transit_spec(4, dst="198.18.1.255"), 100))
    before = counters(engine)
    got = send_and_capture(
        lab, [sent], keep=lambda f: IP in decode(f) and decode(f)[IP].dst == "198.18.1.255"
    )
    assert len(got) == 1, "the directed broadcast to dut1's subnet did not arrive"
    assert got[0][:6] == b"\xff" * 6, "not sent as a link broadcast"
    assert decode(got[0])[IP].ttl == decode(sent)[IP].ttl - 1
    # Not enabled on dut0: dropped, counted, no ICMP (not even with TTL 1).
    frames = [
        bytes(traffic.build_frame(transit_spec(4, dst="198.18.0.255", ttl=ttl), 100))
        for ttl in (64, 1)
    ]
    errors = send_and_capture(lab, frames, role="gen", iface=L.GEN_IF, keep=is_icmp_error, expect=0)
    delta = settle(engine) - before
    assert errors == []
    assert delta.drop("directed_broadcast") == 2
    assert delta.icmp("icmp_sent") == 0
