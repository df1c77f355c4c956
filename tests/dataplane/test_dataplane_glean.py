"""Glean routes in the lab, at the engine's level: a frame to a host on an attached subnet
with no host route is dropped and counted as `glean` (never flooded: the host and the other
port see nothing), its destination is queued once for resolution (Engine.drain_glean), a
flood to many unresolved addresses asks for a bounded number of resolutions, and once a host
route is installed (what the agent does after the kernel resolved the MAC) frames reach the
host; a host route beats the glean route of its subnet. IPv4, IPv6 and a VLAN
sub-interface. The agent's side (kernel resolution, host routes, ageing) is not built yet."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from lab_support import (
    IP,
    counters,
    dataplane,
    decode,
    send_and_capture,
    settle,
    standard_fib,
    start_engine,
    transit_spec,
)

from corridor import lab as L
from corridor import traffic

pytestmark = pytest.mark.lab  # network namespaces, real traffic, root

V20 = L.VLAN_BY_ID[20]
# The subnets attached to dut1 and its VLAN 20, as the agent would install them.
GLEAN_SUBNETS = ("198.18.1.0/24", "2001:db8:1::/64", "198.18.20.0/24")
# The engine's per-worker glean limit (pipeline::glean::GLEAN_RATE): 100/s, burst 32.
GLEAN_RATE, GLEAN_BURST = 100, 32
FIBS: dict[int, object] = {}  # the engine's FIB, to install host routes into


@pytest.fixture(scope="module")
def engine(lab: L.Lab) -> Iterator[object]:
    dp = dataplane()
    fib = standard_fib(dp)
    b = dp.Batch()
    for subnet in GLEAN_SUBNETS:
        b.add_route(subnet, "glean")
    fib.apply(b)
    eng = start_engine(lab, fib)
    FIBS[id(eng)] = fib
    try:
        yield eng
    finally:
        eng.stop()
        FIBS.pop(id(eng), None)


def to_host(dst: str) -> Callable[[bytes], bool]:
    """Our UDP frames to `dst` (not the kernel's own ARP / ND, which may reach the host)."""

    def keep(frame: bytes) -> bool:
        pkt = decode(frame)
        if "UDP" not in pkt:
            return False
        return (IP in pkt and pkt[IP].dst == dst) or ("IPv6" in pkt and pkt["IPv6"].dst == dst)

    return keep


def frames_to(dst: str, family: int, n: int = 5) -> list[bytes]:
    return [bytes(traffic.build_frame(transit_spec(family, dst=dst), 100)) for _ in range(n)]


@pytest.mark.parametrize(
    ("family", "host", "vlan", "group"),
    [(4, L.SINK_V4, 0, 20), (6, L.SINK_V6, 0, 21), (4, V20.peer_v4, 20, 22)],
    ids=["v4", "v6", "vlan20"],
)
def test_dropped_as_glean_until_a_host_route(
    lab: L.Lab, engine: object, family: int, host: str, vlan: int, group: int
) -> None:
    engine.drain_glean()  # type: ignore[attr-defined]
    before = counters(engine)
    sent = frames_to(host, family)
    # Nothing reaches the host, and nothing comes back out of dut0 either.
    got = send_and_capture(lab, sent, keep=to_host(host), expect=0, duration=2)
    delta = settle(engine) - before
    assert got == [], f"{len(got)} frames reached {host} with no host route"
    assert delta.drop("glean") == len(sent), delta.drops()
    assert delta.tx() == 0, "a glean drop was sent somewhere"
    assert engine.drain_glean() == [host], "queued once (de-duplicated)"  # type: ignore[attr-defined]

    # The agent's part, by hand: the MAC resolved, a host route to an adjacency on it.
    dp = dataplane()
    b = dp.Batch()
    b.set_adjacency(group, 1, vlan, L.DUT_OUT_MAC, L.SINK_MAC)
    b.set_group(group, [(group, 1)])
    b.add_route(f"{host}/{32 if family == 4 else 128}", group)
    FIBS[id(engine)].apply(b)  # type: ignore[attr-defined]
    before = counters(engine)
    got = send_and_capture(lab, sent, keep=to_host(host), expect=len(sent))
    delta = settle(engine) - before
    assert len(got) == len(sent)
    assert delta.drop("glean") == 0
    assert all(f[:6] == bytes.fromhex(L.SINK_MAC.replace(":", "")) for f in got)


def test_a_flood_to_unresolved_addresses_asks_for_a_bounded_number(
    lab: L.Lab, engine: object
) -> None:
    engine.drain_glean()  # type: ignore[attr-defined]
    stats0 = engine.glean_stats()  # type: ignore[attr-defined]
    before = counters(engine)
    n = 2000
    frames = [b for i in range(n) for b in frames_to(f"2001:db8:1::{i + 0x1000:x}", 6, 1)]
    t0 = time.monotonic()
    got = send_and_capture(lab, frames, keep=to_host("none"), expect=0, rate=2000, duration=10)
    delta = settle(engine) - before
    elapsed = time.monotonic() - t0
    stats = {k: v - stats0[k] for k, v in engine.glean_stats().items()}  # type: ignore[attr-defined]
    asked = engine.drain_glean(4096)  # type: ignore[attr-defined]
    assert got == []
    assert delta.drop("glean") == n
    # The ring (64) fills while nobody drains: queued is at most the ring, and the rest is
    # counted as rate-limited or full, never lost without a count.
    assert len(asked) == stats["queued"] <= 64
    assert stats["queued"] + stats["rate_limited"] + stats["full"] + stats["deduplicated"] == n
    assert stats["queued"] + stats["full"] <= GLEAN_BURST + GLEAN_RATE * (elapsed + 1), stats
    assert len(set(asked)) == len(asked)


def test_an_unresolvable_address_stays_dropped_and_counted(lab: L.Lab, engine: object) -> None:
    host = "198.18.1.99"  # nobody owns it: no host route ever comes
    before = counters(engine)
    for _ in range(2):
        got = send_and_capture(lab, frames_to(host, 4), keep=to_host(host), expect=0, duration=1)
        assert got == []
    delta = settle(engine) - before
    assert delta.drop("glean") == 10
    assert delta.tx() == 0
