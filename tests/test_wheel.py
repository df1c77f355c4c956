"""The package as an operator installs it: the wheel `maturin build --release` makes, with its
extension stripped of debug info, installed in a fresh venv (its dependencies resolved from
pyproject's ranges by pip, from PyPI or pip's cache), runs `corridor --version` and checks
the sample configurations of deploy/."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a release build (quick when `make deps` built the same) and pip

REPO = Path(__file__).resolve().parent.parent


def run(*args: str | Path, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, **kwargs
    )
    assert done.returncode == 0, f"{args}: {done.stdout}{done.stderr}"
    return done


def test_the_release_wheel_installs_in_a_fresh_venv_and_runs(tmp_path: Path) -> None:
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, VIRTUAL_ENV=str(bin_dir.parent))
    env.pop("PYTHONPATH", None)  # the venv must find corridor in itself, not in the tree
    run(bin_dir / "maturin", "build", "--release", "--out", tmp_path / "dist", cwd=REPO,
        env=env, timeout=3600)  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("corridor-*.whl")
    assert re.search(r"-cp311-abi3-", wheel.name), wheel.name  # one wheel for 3.11 and later

    # The extension in the wheel has no debug sections (its symbols stay, for perf).
    with zipfile.ZipFile(wheel) as z:
        (name,) = [n for n in z.namelist() if re.fullmatch(r"corridor/_dataplane.*\.so", n)]
        extension = tmp_path / "extension.so"
        extension.write_bytes(z.read(name))
    readelf = shutil.which("readelf")
    assert readelf, "readelf (binutils, from build-essential) is needed"
    sections = run(readelf, "--sections", "--wide", extension).stdout
    assert ".debug_info" not in sections and ".debug_line" not in sections, sections
    assert ".symtab" in sections

    venv = tmp_path / "venv"
    run(getattr(sys, "_base_executable", sys.executable), "-m", "venv", venv)
    pip = run(venv / "bin" / "pip", "install", "--disable-pip-version-check", wheel,
              timeout=1800, env=env | {"VIRTUAL_ENV": str(venv)})  # fmt: skip
    assert "Successfully installed" in pip.stdout, pip.stdout
    run(venv / "bin" / "pip", "check", env=env)
    clean = {k: v for k, v in env.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    version = run(venv / "bin" / "corridor", "--version", env=clean).stdout
    assert version.strip() == "corridor 0.1.0", version
    for command in ("agent", "controller", "up"):
        checked = run(venv / "bin" / "corridor", command, "--config",
                      REPO / "deploy" / f"{command}.toml", "--check", env=clean)  # fmt: skip
        assert f"{command}.toml: valid" in checked.stderr, checked.stderr
    # The installed package is the wheel's, with its extension, not the source tree's.
    where = run(venv / "bin" / "python", "-c",
                "import corridor, corridor._dataplane as d; print(corridor.__file__, d.__file__)",
                env=clean, cwd=tmp_path).stdout  # fmt: skip
    assert str(venv) in where and str(REPO) not in where, where
