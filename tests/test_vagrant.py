"""What can be checked of the test VMs on a machine that cannot boot them: the Vagrantfile
is valid for Vagrant (`vagrant validate`), the provisioning scripts pass shellcheck, the
network provisioning (vagrant/nics.sh) does its job on a lab's veths, and the benchmark's
VM path (`benches.forwarding --hosts`) runs across a lab's namespaces as across the VMs. A
missing tool fails the test with the Debian package to install, never skips it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from corridor import lab as L

REPO = Path(__file__).resolve().parent.parent
VAGRANT_DIR = REPO / "vagrant"
SCRIPTS = sorted(VAGRANT_DIR.glob("*.sh"))


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is not installed: apt-get install {package} (`make deps`)")
    return path


def test_vagrantfile_validates() -> None:
    vagrant = tool("vagrant", "vagrant")
    proc = subprocess.run(
        [vagrant, "validate"], cwd=VAGRANT_DIR, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"vagrant validate failed:\n{proc.stdout}\n{proc.stderr}"


def test_provisioning_scripts_pass_shellcheck() -> None:
    shellcheck = tool("shellcheck", "shellcheck")
    assert SCRIPTS, f"no provisioning scripts in {VAGRANT_DIR}"
    proc = subprocess.run(
        [shellcheck, "--severity=style", *map(str, SCRIPTS)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, f"shellcheck:\n{proc.stdout}{proc.stderr}"


# -- the provisioning and the VM benchmark path, exercised in a lab ------------------------


def _root_lab(tag: str) -> L.Lab:
    if os.geteuid() != 0:
        pytest.fail("exercising the VM provisioning in a lab needs root (network namespaces)")
    lab = L.Lab(prefix=f"cor-{tag}{os.getpid()}-", queues=1)
    try:
        lab.up()
    except L.LabError as e:
        lab.down()
        pytest.fail(f"cannot build the lab: {e}")
    return lab


# (lab role, VM role, port, IPv4, IPv6) as the Vagrantfile pairs them.
NICS = (
    ("gen", "generator", L.GEN_IF, L.GEN_V4, L.GEN_V6),
    ("dut", "router", L.DUT_IN, L.DUT_IN_V4, L.DUT_IN_V6),
    ("dut", "router", L.DUT_OUT, L.DUT_OUT_V4, L.DUT_OUT_V6),
    ("sink", "sink", L.SINK_IF, L.SINK_V4, L.SINK_V6),
)


@pytest.mark.lab
def test_nics_script_sets_the_plan_on_the_nics_holding_its_addresses() -> None:
    lab = _root_lab("vn")
    try:
        for role, _, dev, _, v6 in NICS:
            lab.ip(role, "-6", "addr", "flush", "dev", dev, "scope", "global")
            lab.exec(role, ["ethtool", "-K", dev, "gro", "on"])
            assert v6 not in lab.ip(role, "-6", "addr", "show", "dev", dev).stdout
        for role in ("gen", "dut", "sink"):
            mine = [n for n in NICS if n[0] == role]
            pairs = ",".join(f"{v4}={v6}" for *_, v4, v6 in mine)
            r = lab.exec(role, ["bash", str(VAGRANT_DIR / "nics.sh"), mine[0][1], pairs],
                         check=False)  # fmt: skip
            assert r.returncode == 0, r.stderr
        for role, _, dev, _, v6 in NICS:
            assert f"inet6 {v6}/64" in lab.ip(role, "-6", "addr", "show", "dev", dev).stdout
            features = lab.exec(role, ["ethtool", "-k", dev]).stdout
            assert "generic-receive-offload: off" in features, f"{dev}: GRO still on"
        # Bad input: an address no NIC holds, a malformed pair, an unknown role.
        nics = str(VAGRANT_DIR / "nics.sh")
        r = lab.exec("gen", ["bash", nics, "generator", "198.18.9.9=2001:db8:9::9"], check=False)
        assert r.returncode == 1 and "no NIC holds 198.18.9.9" in r.stderr, r.stderr
        r = lab.exec("gen", ["bash", nics, "generator", "198.18.0.2"], check=False)
        assert r.returncode == 2 and "expected IPV4=IPV6" in r.stderr, r.stderr
        r = lab.exec("gen", ["bash", nics, "switch", f"{L.GEN_V4}={L.GEN_V6}"], check=False)
        assert r.returncode == 2 and "expected generator, router or sink" in r.stderr, r.stderr
    finally:
        lab.down()


@pytest.mark.lab
def test_the_benchmark_runs_across_hosts_as_on_the_vms(tmp_path: Path) -> None:
    """vagrant/bench.sh's path: benches.forwarding on the router with `--hosts`, generator and
    sink elsewhere. Here the three hosts are a lab's namespaces, `--remote` enters them
    instead of ssh, and the harness itself runs inside the dut namespace like on the router
    VM: ports found by address, tools run remotely, destinations over stdin."""
    lab = _root_lab("vb")
    out = tmp_path / "vm"
    try:
        argv = [
            "ip", "netns", "exec", lab.ns("dut"), sys.executable, "-m", "benches.forwarding",
            "--hosts", f"gen={lab.ns('gen')},sink={lab.ns('sink')}",
            "--remote", "ip netns exec {host}", "--routers", "kernel,corridor-1",
            "--sizes", "64", "--families", "4,6", "--quick", "--trial", "0.5",
            "--table-limit", "200", "--out", str(out),
        ]  # fmt: skip
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=REPO)
        assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    finally:
        lab.down()
    result = json.loads(out.with_suffix(".json").read_text())
    assert result["meta"]["topology"].startswith(f"hosts: {L.GEN_IF} -> {L.DUT_IN}")
    seen = {(s["router"], s["family"]): s for s in result["summary"]}
    assert set(seen) == {(r, f) for r in ("kernel", "corridor-1") for f in (4, 6)}
    for key, s in seen.items():
        assert "error" not in s, f"{key}: {s.get('error')}"
        assert s["max_fwd_pps"] > 1000, (key, s)  # frames crossed gen -> router -> sink
    md = out.with_suffix(".md").read_text()
    assert md.count("| corridor-1 |") >= 2
    # The engine's own account, as afxdp_ref prints its own: what it forwarded and what the
    # kernel dropped at its sockets (rx ring full, fill ring empty).
    engine = re.search(r"corridor-1: [^;]*counters (\{[^}]*\})", md)
    assert engine, md
    counters = json.loads(engine.group(1))
    assert counters["rx"] > 0 and counters["tx"] > 0, counters
    assert {"rx_ring_full", "rx_fill_ring_empty_descs", "passes"} <= set(counters), counters
