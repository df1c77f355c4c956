"""The lab itself: its namespaces, addresses and MACs, the `corridor lab` command, and the
traffic tools proved against the dut's kernel forwarding."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from lab_support import SIZES, assert_forwarded, match, send_and_capture, transit_spec

from corridor import lab as L
from corridor import traffic

pytestmark = pytest.mark.lab  # network namespaces, real traffic, root


def test_lab_has_the_planned_links(lab: L.Lab) -> None:
    for role, dev, mac, v4, v6 in (
        ("gen", L.GEN_IF, L.GEN_MAC, L.GEN_V4, L.GEN_V6),
        ("dut", L.DUT_IN, L.DUT_IN_MAC, L.DUT_IN_V4, L.DUT_IN_V6),
        ("dut", L.DUT_OUT, L.DUT_OUT_MAC, L.DUT_OUT_V4, L.DUT_OUT_V6),
        ("sink", L.SINK_IF, L.SINK_MAC, L.SINK_V4, L.SINK_V6),
    ):
        shown = lab.ip(role, "addr", "show", "dev", dev).stdout
        assert f"link/ether {mac}" in shown
        assert f"inet {v4}/24" in shown
        assert f"inet6 {v6}/64" in shown
        assert "tentative" not in shown  # DAD off: usable at once


def test_kernel_answers_ping_across_each_link(lab: L.Lab) -> None:
    for role, peer in (("gen", L.DUT_IN_V4), ("gen", L.DUT_IN_V6), ("sink", L.DUT_OUT_V4),
                       ("sink", L.DUT_OUT_V6)):  # fmt: skip
        out = lab.exec(role, ["ping", "-c", "1", "-W", "2", peer], check=False)
        assert out.returncode == 0, f"ping {peer} from {role}: {out.stdout}{out.stderr}"


def test_kernel_forwarding_carries_every_size_and_family(kernel_router: L.Lab) -> None:
    lab = kernel_router
    for family in (4, 6):
        for proto in ("udp", "tcp", "icmp"):
            spec = transit_spec(family, proto=proto)
            sizes = [s for s in SIZES if s >= traffic.min_size(spec)]
            frames = traffic.build_frames(spec, sizes, flows=4)
            got = send_and_capture(lab, frames)
            assert len(got) == len(frames), f"IPv{family}/{proto}: {len(got)} of {len(frames)}"
            for sent, frame in match(frames, got):
                assert_forwarded(sent, frame, src_mac=L.DUT_OUT_MAC, dst_mac=L.SINK_MAC)


def test_sender_reaches_tens_of_kpps(kernel_router: L.Lab) -> None:
    frames = traffic.build_frames(transit_spec(4), [60], flows=64)
    got = send_and_capture(kernel_router, frames, count=20_000, duration=10)
    assert len(got) == 20_000


def test_forwarding_is_off_by_default(lab: L.Lab) -> None:
    frames = traffic.build_frames(transit_spec(4), [100], flows=4)
    assert send_and_capture(lab, frames, expect=0, duration=0.5) == []


def test_lab_command_up_status_down() -> None:
    prefix = f"cor-c{os.getpid()}-"
    cmd = [sys.executable, "-m", "corridor", "lab"]
    try:
        up = subprocess.run([*cmd, "up", "--prefix", prefix], capture_output=True, text=True)
        assert up.returncode == 0, up.stderr
        again = subprocess.run([*cmd, "up", "--prefix", prefix], capture_output=True, text=True)
        assert again.returncode == 0, again.stderr  # idempotent: a stale lab is replaced
        status = subprocess.run(
            [*cmd, "status", "--prefix", prefix], capture_output=True, text=True
        ).stdout
        for role in L.ROLES:
            assert f"{prefix}{role}:" in status
        assert "absent" not in status
    finally:
        down = subprocess.run([*cmd, "down", "--prefix", prefix], capture_output=True, text=True)
    assert down.returncode == 0, down.stderr
    assert not L.Lab(prefix).exists()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert prefix not in listed


def test_frames_outside_the_test_space_are_refused() -> None:
    import pytest

    with pytest.raises(ValueError, match=r"198\.18\.0\.0/15"):
        traffic.build_frame(transit_spec(4, dst="192.0.2.1"), 60)
    with pytest.raises(ValueError, match="2001:db8::/32"):
        traffic.build_frame(transit_spec(6, dst="2001:db9::1"), 80)
