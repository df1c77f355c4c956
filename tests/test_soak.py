"""`make soak`'s harness (benches/soak.py), so that it cannot rot: bad arguments refused before
anything is built, and a short soak through the lab (45 s, each daemon killed -9 once, sink
B's link flapped) whose checks are computed from what the sinks, the engine and /proc say."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import pytest
from benches import soak

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--seconds", "0"], "--seconds must be above 0"),
        (["--rate", "-5"], "--rate must be above 0"),
        (["--flap-every", "1"], "--flap-every is at least 2 s"),
        (["--kill-every", "-1"], "--kill-every and --warmup at least 0"),
        (["--seconds", "ten"], "invalid int value"),
    ],
)
def test_bad_arguments_are_refused_before_anything_runs(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        soak.main(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.lab
@pytest.mark.timeout(300)
def test_a_short_soak_computes_every_check_from_real_counts(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("the soak builds network namespaces and runs the engine: run as root")
    out = tmp_path / "soak"
    run = subprocess.run(
        [sys.executable, "-m", "benches.soak", "--seconds", "45", "--rate", "3000",
         "--churn", "1000", "--kill-every", "15", "--flap-every", "5", "--warmup", "5",
         "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=280,
        env=dict(os.environ, PYTHONPATH=f"{REPO / 'control'}:{REPO}"),
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(out.with_suffix(".json").read_text())
    assert out.with_suffix(".png").stat().st_size > 10_000
    assert "| misforwarded (frames at sink B) | 0 | ok |" in out.with_suffix(".md").read_text()
    samples = result["samples"]
    assert len(samples) == 45
    events = [e for s in samples for e in s["events"]]
    assert "agent killed and restarted" in events and "controller killed and restarted" in events
    assert events.count("sink B down") >= 7 and events.count("sink B up") >= 7
    # Real counts: frames went out and reached sink A, the killed agent's outage is in the
    # dut kernel's drops, the churn went through the controller, both daemons were sampled
    # in two lives each. The rates asked are not asserted (a machine short of CPU paces the
    # generator and the churn slower); that both ran from start to end is.
    assert result["sent"] > 0 and result["at_sink_a"] > result["sent"] * 0.5
    sent = [s["sent"] for s in samples]
    moved = sum(b > a for a, b in pairwise(sent))
    assert moved >= 0.9 * (len(sent) - 1), f"traffic stalled: {sent}"
    assert result["kernel_drops"] > 0 and result["killed_agents"] == 1
    churned = [s["churned"] for s in samples]
    assert churned[-1] > churned[len(churned) // 2] > 0, f"churn stalled: {churned}"
    assert {s["agent"][0] for s in samples if s["agent"]} == {1, 2}
    assert {s["controller"][0] for s in samples if s["controller"]} == {1, 2}
    assert result["agent_lives"] and result["controller_lives"]
    assert all(check["ok"] for check in result["checks"].values()), result["checks"]
