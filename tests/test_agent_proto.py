"""The committed Python modules of the protos are what `make proto` generates from proto/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_generated_modules_are_current(repo_root: Path, tmp_path: Path) -> None:
    subprocess.run(
        ["make", "-s", "proto", f"PROTO_OUT={tmp_path}", f"PY={sys.executable}"],
        cwd=repo_root,
        check=True,
        capture_output=True,
        timeout=120,
    )
    fresh = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert fresh, "make proto generated nothing"
    committed_dir = repo_root / "control"
    stale = [str(path) for path, text in fresh.items() if _read(committed_dir / path) != text]
    generated = {
        p.relative_to(committed_dir) for p in (committed_dir / "corridor/v1").glob("*_pb2*")
    }
    orphans = sorted(str(p) for p in generated - set(fresh))
    assert not stale, f"stale generated modules, run `make proto`: {stale}"
    assert not orphans, f"generated modules without a proto, remove them: {orphans}"


def _read(path: Path) -> bytes | None:
    return path.read_bytes() if path.exists() else None


def test_generated_modules_import_as_a_package() -> None:
    from corridor.v1 import common_pb2, dataplane_pb2, dataplane_pb2_grpc

    assert dataplane_pb2.DESCRIPTOR.package == "corridor.v1"
    assert common_pb2.IpPrefix.DESCRIPTOR.full_name == "corridor.v1.IpPrefix"
    assert hasattr(dataplane_pb2_grpc, "DataplaneStub")
