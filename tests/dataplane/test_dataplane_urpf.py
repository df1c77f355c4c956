"""uRPF in the lab: frames from gen with sources in 198.18.0.0/15 and 2001:db8::/32, some
spoofed, through the real XDP program and AF_XDP sockets; the policy of dut0 changed while
the engine runs (off, strict, loose, loose with the default route). What arrives at the sink
and the engine's drop counters, per reason and ingress port, tell each mode apart."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from lab_support import dataplane, send_and_capture, settle, start_engine, transit_spec

from corridor import lab as L
from corridor import traffic

pytestmark = pytest.mark.lab  # network namespaces, real traffic, root

# Where sources lead back (dut0 is port 0, toward gen; dut1 port 1, toward the sink):
#   198.18.64.0/24  2001:db8:64::/48   ECMP group: dut0 and dut1 (valid for strict on dut0)
#   198.18.65.0/24  2001:db8:65::/48   dut1 only (strict fails, loose passes)
#   198.18.66.0/24  2001:db8:66::/48   blackhole (both fail)
#   anything else                      only the default route, via dut0
SOURCES = {
    "ecmp": ("198.18.64.7", "2001:db8:64::7"),
    "other_port": ("198.18.65.7", "2001:db8:65::7"),
    "blackhole": ("198.18.66.7", "2001:db8:66::7"),
    "default_only": ("198.18.99.7", "2001:db8:99::7"),
}
PER_KIND = 20  # frames of each kind and family


@pytest.fixture(scope="module")
def engine(lab: L.Lab) -> Iterator[object]:
    dp = dataplane()
    fib = dp.Fib(v4_routes=64, v6_routes=64, groups=16, adjacencies=16)
    b = dp.Batch()
    b.set_adjacency(1, 1, 0, L.DUT_OUT_MAC, L.SINK_MAC)
    b.set_adjacency(2, 0, 0, L.DUT_IN_MAC, L.GEN_MAC)
    b.set_group(1, [(1, 1)])
    b.set_group(2, [(1, 1), (2, 1)])
    b.set_group(3, [(2, 1)])
    for prefix, target in (
        ("198.19.0.0/16", 1), ("2001:db8:100::/48", 1),
        ("198.18.64.0/24", 2), ("2001:db8:64::/48", 2),
        ("198.18.65.0/24", 1), ("2001:db8:65::/48", 1),
        ("198.18.66.0/24", "blackhole"), ("2001:db8:66::/48", "blackhole"),
        ("0.0.0.0/0", 3), ("::/0", 3),
    ):  # fmt: skip
        b.add_route(prefix, target)
    fib.apply(b)
    eng = start_engine(lab, fib)
    try:
        yield eng
    finally:
        eng.stop()


def frames(kind: str, family: int) -> list[bytes]:
    src = SOURCES[kind][0 if family == 4 else 1]
    spec = transit_spec(family, src=src)
    # Distinct flows (source ports), so the sink's capture tells every frame apart.
    return [bytes(traffic.build_frame(spec, 100, seq=i)) for i in range(PER_KIND)]


def run(lab: L.Lab, eng: object, forwarded: list[str], dropped: list[str]) -> dict[str, int]:
    """Sends PER_KIND frames of every kind named, both families; asserts that exactly the
    `forwarded` kinds arrive at the sink; returns the drops counted meanwhile on dut0."""
    sent, expected = [], set()
    for kind in forwarded + dropped:
        for family in (4, 6):
            batch = frames(kind, family)
            sent += batch
            if kind in forwarded:
                expected |= {traffic.frame_key(f) for f in batch}
    before = settle(eng)
    got = send_and_capture(lab, sent, expect=len(expected), duration=10)
    after = settle(eng)
    keys = [traffic.frame_key(f) for f in got]
    assert set(keys) == expected, (
        f"{len(set(keys) - expected)} unexpected, {len(expected - set(keys))} missing"
    )
    return {
        reason: sum(w["port_drops"].get(L.DUT_IN, {}).get(reason, 0) for w in after.raw["workers"])
        - sum(w["port_drops"].get(L.DUT_IN, {}).get(reason, 0) for w in before.raw["workers"])
        for reason in ("urpf_strict", "urpf_loose")
    }


def test_off_checks_nothing(lab: L.Lab, engine: object) -> None:
    assert {p["mode"] for p in engine.urpf()} == {"off"}  # type: ignore[attr-defined]
    drops = run(lab, engine, ["ecmp", "other_port", "blackhole", "default_only"], [])
    assert drops == {"urpf_strict": 0, "urpf_loose": 0}


def test_strict_takes_an_ecmp_back_path_and_drops_the_rest(lab: L.Lab, engine: object) -> None:
    engine.set_urpf(L.DUT_IN, 0, "strict")  # type: ignore[attr-defined]
    try:
        drops = run(lab, engine, ["ecmp"], ["other_port", "blackhole", "default_only"])
        assert drops == {"urpf_strict": 3 * 2 * PER_KIND, "urpf_loose": 0}
        # With the default route counted: it leads back out of dut0.
        engine.set_urpf(L.DUT_IN, 0, "strict", allow_default=True)  # type: ignore[attr-defined]
        drops = run(lab, engine, ["ecmp", "default_only"], ["other_port", "blackhole"])
        assert drops == {"urpf_strict": 2 * 2 * PER_KIND, "urpf_loose": 0}
    finally:
        engine.set_urpf(L.DUT_IN, 0, "off")  # type: ignore[attr-defined]


def test_loose_wants_a_forwarding_route(lab: L.Lab, engine: object) -> None:
    engine.set_urpf(L.DUT_IN, 0, "loose")  # type: ignore[attr-defined]
    try:
        state = {(p["port"], p["vlan"]): p["mode"] for p in engine.urpf()}  # type: ignore[attr-defined]
        assert state[(L.DUT_IN, 0)] == "loose" and state[(L.DUT_OUT, 0)] == "off"
        drops = run(lab, engine, ["ecmp", "other_port"], ["blackhole", "default_only"])
        assert drops == {"urpf_strict": 0, "urpf_loose": 2 * 2 * PER_KIND}
        engine.set_urpf(L.DUT_IN, 0, "loose", allow_default=True)  # type: ignore[attr-defined]
        drops = run(lab, engine, ["ecmp", "other_port", "default_only"], ["blackhole"])
        assert drops == {"urpf_strict": 0, "urpf_loose": 2 * PER_KIND}
    finally:
        engine.set_urpf(L.DUT_IN, 0, "off")  # type: ignore[attr-defined]


def test_bad_policies_are_refused_and_change_nothing(engine: object) -> None:
    before = engine.urpf()  # type: ignore[attr-defined]
    for args, text in (
        ((L.DUT_IN, 0, "strictest"), "is not a uRPF mode"),
        (("nope0", 0, "strict"), "is not one of the engine's ports"),
        ((L.DUT_IN, 77, "strict"), "has no sub-interface with VLAN 77"),
    ):
        with pytest.raises(ValueError, match=text):
            engine.set_urpf(*args)  # type: ignore[attr-defined]
    assert engine.urpf() == before  # type: ignore[attr-defined]
