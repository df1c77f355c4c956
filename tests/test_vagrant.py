"""What can be checked of the test VMs on a machine that cannot boot them: the Vagrantfile
is valid for Vagrant (`vagrant validate`), and the provisioning scripts pass shellcheck.
A missing tool fails the test with the Debian package to install, never skips it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

VAGRANT_DIR = Path(__file__).resolve().parent.parent / "vagrant"
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
