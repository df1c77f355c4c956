"""The deployment kit in deploy/: the systemd units pass `systemd-analyze verify` and start
what the sample configurations configure; the samples pass `--check` (changing nothing); the
Grafana dashboard and the alerting rules are valid PromQL on metric names the exporters serve
(the engine's names are checked in the lab, tests/test_agent_engine.py)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from metrics_support import (
    DEPLOY,
    Exporters,
    alert_expressions,
    dashboard_expressions,
    deploy_metric_names,
    exporters,
    families,
    samples,
)

__all__ = ["exporters"]  # the fixture of metrics_support

REPO = Path(__file__).resolve().parent.parent
UNITS = ("corridor-agent", "corridor-controller", "corridor-up")
INSTALLED = "/opt/corridor/bin/corridor"
# The engine's needs (docs/operations.md#capabilities); the controller needs none.
ENGINE_CAPABILITIES = {"CAP_NET_ADMIN", "CAP_BPF", "CAP_NET_RAW", "CAP_IPC_LOCK"}


def unit(name: str) -> dict[str, list[str]]:
    """The unit's directives (key: values, in order); comments and sections left out."""
    out: dict[str, list[str]] = {}
    for line in (DEPLOY / "systemd" / f"{name}.service").read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze not found (Debian package systemd, in APT_PACKAGES)"
    # verify wants the executable to exist: this environment's `corridor` stands in for the
    # one the wheel installs in /opt/corridor (docs/operations.md#install).
    corridor = Path(sys.executable).parent / "corridor"
    assert corridor.exists(), f"{corridor}: the corridor script (make deps installs it)"
    for name in UNITS:
        text = (DEPLOY / "systemd" / f"{name}.service").read_text()
        assert INSTALLED in text, name
        (tmp_path / f"{name}.service").write_text(text.replace(INSTALLED, str(corridor)))
    done = subprocess.run(
        [analyze, "verify", "--man=no", *(str(tmp_path / f"{n}.service") for n in UNITS)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    # Any warning (an unknown key, an address family it cannot parse) fails the test.
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_units_start_the_samples_with_the_engines_capabilities_only() -> None:
    for name in UNITS:
        directives = unit(name)
        command = name.removeprefix("corridor-")
        config = f"/etc/corridor/{command}.toml"
        assert directives["ExecStart"] == [f"{INSTALLED} {command} --config {config}"]
        assert directives["ExecStartPre"] == [f"{INSTALLED} {command} --config {config} --check"]
        assert (DEPLOY / f"{command}.toml").is_file(), f"deploy/{command}.toml for {config}"
        assert directives["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
        assert (directives["Type"], directives["NotifyAccess"]) == (["notify"], ["main"])
        assert directives["RestartPreventExitStatus"] == ["2"]  # a bad file: no restart loop
        assert directives["User"] == ["corridor"] and directives["NoNewPrivileges"] == ["yes"]
        bounding = set(directives["CapabilityBoundingSet"][0].split())
        if command == "controller":
            assert bounding == set() and "AmbientCapabilities" not in directives
        else:
            assert (
                bounding == ENGINE_CAPABILITIES == set(directives["AmbientCapabilities"][0].split())
            )
            assert "AF_XDP" in directives["RestrictAddressFamilies"][0]


@pytest.mark.slow
@pytest.mark.parametrize("command", ["agent", "controller", "up"])
def test_samples_pass_check_and_change_nothing(command: str) -> None:
    made = [Path("/var/lib/corridor"), Path("/run/corridor")]
    before = {p: p.exists() for p in made}
    env = dict(os.environ, PYTHONPATH=str(REPO / "control"))
    done = subprocess.run(
        [sys.executable, "-m", "corridor", command, "--config", str(DEPLOY / f"{command}.toml"),
         "--check"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"{command}.toml: valid" in done.stderr, done.stderr
    assert {p: p.exists() for p in made} == before


def _promql_rules(expressions: list[str], path: Path) -> None:
    """The expressions as recording rules, for `promtool check rules` to parse; Grafana's
    variables stand for a regex that matches anything."""
    rules = [
        {"record": f"corridor_dashboard:expression_{i}", "expr": re.sub(r"\$\w+", ".*", e)}
        for i, e in enumerate(expressions)
    ]
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))  # YAML


def test_dashboard_and_alerts_are_valid_promql(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found (Debian package prometheus, in APT_PACKAGES)"
    dashboard = json.loads((DEPLOY / "grafana" / "corridor.json").read_text())
    assert dashboard["uid"] == "corridor" and len(dashboard["panels"]) > 20
    expressions = dashboard_expressions()
    _promql_rules([e for e in expressions if not e.startswith("label_values")], tmp_path / "d")
    for path in (tmp_path / "d", DEPLOY / "prometheus" / "corridor-alerts.yml"):
        done = subprocess.run(
            [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "SUCCESS" in done.stdout, done.stdout
    assert len(alert_expressions()) > 10


@pytest.mark.slow
def test_dashboard_and_alerts_name_metrics_the_exporters_serve(exporters: Exporters) -> None:
    texts = (exporters.agent, exporters.controller)
    # Every series served, and every family (some have no series until something happens:
    # routes not installed, bad FPM input).
    served = {series.partition("{")[0] for text in texts for series in samples(text)}
    served |= {name for text in texts for name in families(text)}
    used = deploy_metric_names()
    assert len(used) > 25, used
    engine = {n for n in used if n.startswith("corridor_engine_")}
    assert len(engine) >= 6  # checked against an engine's scrape in test_agent_engine.py
    missing = sorted(used - engine - served)
    assert not missing, f"deploy/ names metrics no exporter serves: {missing}"
