"""95th-percentile billing from stored samples: the percentile itself, rates across an agent
restart (a counter that went down is a restart, never a spike), a synthetic month with a
known 95th percentile through a real controller's store and `corridor billing report`
(figures and the PNG), and the CLI's refusals of bad member and month arguments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controller_support import controller_document, start_controller
from corridor.controller.members import (
    MemberError,
    Sample,
    check_member,
    month_bounds,
    next_id,
    percentile_95,
    rates,
)
from test_controller_cli import corridor, run


def test_percentile_is_the_usual_one() -> None:
    assert percentile_95(list(range(1, 101))) == 95  # the top 5 of 100 are free
    assert percentile_95([7.0]) == 7.0
    assert percentile_95([]) == 0.0
    # 8640 five-minute intervals (30 days): the 432 busiest are free, the 433rd is billed.
    values = [1.0] * 8000 + [float(v) for v in range(2, 642)]
    assert percentile_95(values) == 641 - 432


def test_rates_bridge_an_agent_restart_without_a_spike() -> None:
    s = [
        Sample("m", 0, 0, 0, 0, 0),
        Sample("m", 300, 3_000_000, 300, 0, 0),
        Sample("m", 600, 6_000_000, 600, 0, 0),
        Sample("m", 900, 1_500_000, 150, 0, 0),  # the agent restarted: counters from 0
        Sample("m", 1200, 4_500_000, 450, 0, 0),
    ]
    r = rates(s)
    assert [round(x[1]) for x in r] == [80_000, 80_000, 40_000, 80_000]
    assert [round(x[2]) for x in r] == [8, 8, 4, 8]
    assert all(x[1] >= 0 for x in r)


def test_member_arguments_and_months() -> None:
    assert check_member("acme", "ix", "eth1", 0, "02:0A:00:00:00:01") == "02:0a:00:00:00:01"
    for args, words in (
        (("", "ix", "eth1", 0, "02:00:00:00:00:01"), "member name"),
        (("a b", "ix", "eth1", 0, "02:00:00:00:00:01"), "member name"),
        (("a", "ix", "", 0, "02:00:00:00:00:01"), "port is empty"),
        (("a", "ix", "eth1", 4095, "02:00:00:00:00:01"), "not a VLAN"),
        (("a", "ix", "eth1", 0, "02:00:00:00:01"), "six hex bytes"),
        (("a", "ix", "eth1", 0, "ff:ff:ff:ff:ff:ff"), "not a unicast"),
    ):
        with pytest.raises(MemberError, match=words):
            check_member(*args)
    assert month_bounds("2026-11") == (1793491200.0, 1796083200.0)
    assert month_bounds("2026-12")[1] == 1798761600.0  # into the next year
    for bad in ("2026-13", "2026-1", "nov"):
        with pytest.raises(MemberError, match="YYYY-MM"):
            month_bounds(bad)
    assert next_id([0, 1, 2], 1) == 3
    assert next_id([0, 2], 1023) == 1, "wraps, skipping the taken"


def _month(start: float, spikes: int) -> list[Sample]:
    """A 30-day month of 5-minute samples of one member: 1 Mbit/s in and 2 Mbit/s out, but
    `spikes` intervals at 50 Mbit/s in; the agent restarts once in the middle."""
    out, rx, tx = [], 0, 0
    for i in range(8641):
        if i == 4000:  # restart: counters from 0, the interval holds what came since
            rx, tx = 0, 0
        out.append(Sample("acme", start + 300 * i, rx, tx, 0, 0))
        step_in = 50e6 if 0 < i <= spikes else 1e6
        rx += int(step_in * 300 / 8)
        tx += int(2e6 * 300 / 8)
    return out


async def test_billing_report_of_a_synthetic_month(tmp_path: Path) -> None:
    start, _ = month_bounds("2026-11")
    running = await start_controller(controller_document(tmp_path, {}), tmp_path)
    ctl = f"unix:{tmp_path / 'controller.sock'}"
    try:
        # 432 spikes are free: the bill is the ordinary rate. 433: the bill is a spike.
        await running.store.add_samples(_month(start, 432))
        plot = tmp_path / "acme.png"
        code, out, err = await corridor(
            ctl, "billing", "report", "--member", "acme", "--month", "2026-11",
            "--plot", str(plot), "--json",
        )  # fmt: skip
        assert (code, err) == (0, ""), err
        report = json.loads(out)
        assert report["intervals"] == 8640
        assert report["in_bps_95th"] == pytest.approx(1e6, rel=1e-6)
        assert report["out_bps_95th"] == pytest.approx(2e6, rel=1e-6)
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000
        await running.store.add_samples(_month(start, 433))  # same times: replaced
        code, out, _ = await corridor(
            ctl, "billing", "report", "--member", "acme", "--month", "2026-11"
        )
        assert code == 0 and "in 50.000 Mbit/s" in out and "out 2.000 Mbit/s" in out, out
        # No samples: refused with the reason, exit 1. Bad month: exit 2, nothing sent.
        code, _, err = await corridor(
            ctl, "billing", "report", "--member", "nobody", "--month", "2026-11"
        )
        assert code == 1 and "has 0 sample(s)" in err
        code, _, err = await corridor(
            ctl, "billing", "report", "--member", "acme", "--month", "26-11"
        )
        assert code == 2 and "YYYY-MM" in err
        code, _, err = await run(
            "member", "add", "x y", "--port", "p", "--mac", "02:00:00:00:00:01"
        )
        assert code == 2 and "member name" in err
    finally:
        await running.stop()
