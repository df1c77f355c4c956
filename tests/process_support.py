"""What the lab tests share to run Corridor's own processes: the check of what a test needs
(root, tools, a current engine extension), `corridor agent` / `corridor controller` started
as real processes and stopped, the agent's configuration for the standard lab, and the wait
for a condition that names what it waited for and shows the process's log when it fails.

A test that needs something missing fails and says what is missing: it is never skipped."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import grpc
import pytest

from corridor import lab as L
from corridor.v1 import dataplane_pb2, dataplane_pb2_grpc

REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def require(
    what: str,
    *,
    tools: Sequence[tuple[str, str]] = (("ip", "iproute2"),),
    engine: Sequence[str] = (),
) -> None:
    """Fail (never skip) unless this runs as root with `tools` (command, Debian package) on
    the PATH and an engine extension that has every attribute of `engine` ("Engine",
    "Engine.drain_samples", ...): an older build lacks the newer ones."""
    if os.geteuid() != 0:
        pytest.fail(f"{what} needs root (network namespaces, XDP)")
    for tool, package in tools:
        if shutil.which(tool) is None:
            pytest.fail(f"{what} needs `{tool}`: apt-get install {package}")
    try:
        from corridor import _dataplane
    except ImportError as e:
        pytest.fail(f"the engine extension is not built ({e}): `make deps`")
    for name in engine:
        owner: object = _dataplane
        for part in name.split("."):
            if not hasattr(owner, part):
                pytest.fail(f"corridor._dataplane has no {name} (stale extension): `make deps`")
            owner = getattr(owner, part)


def spawn_command(argv: Sequence[str], log: Path, ns: str | None = None) -> subprocess.Popen:
    """Start `argv` (inside network namespace `ns` if given), its output appended to `log`."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "control"))
    prefix = ["ip", "netns", "exec", ns] if ns else []
    with log.open("a") as out:
        return subprocess.Popen([*prefix, *argv], env=env, stdout=out, stderr=out)


def spawn(args: Sequence[str], log: Path) -> subprocess.Popen:
    """`python -m corridor ARGS` from this tree, its standard error appended to `log`."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "control"))
    with log.open("a") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "corridor", *args],
            env=env, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip


def stop(process: subprocess.Popen | None, sig: signal.Signals = signal.SIGTERM) -> None:
    """`sig` (SIGTERM), then SIGKILL after 20 s; nothing if it already ended."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def until(
    predicate: Callable[[], T | None],
    within: float,
    what: str,
    log: Path | None = None,
    interval: float = 0.1,
) -> T:
    """The first true value of `predicate` within `within` seconds; a gRPC error counts as
    not yet. Past the deadline: AssertionError naming `what`, the last value or error, and
    the tail of `log`."""
    deadline = time.monotonic() + within
    last: object = None
    while True:
        try:
            value = predicate()
            last = value
            if value:
                return value
        except grpc.RpcError as e:
            last = e
        if time.monotonic() > deadline:
            tail = f"; log: {log.read_text()[-3000:]}" if log is not None and log.exists() else ""
            raise AssertionError(f"{what} not reached in {within} s (last: {last}){tail}")
        time.sleep(interval)


def agent_config(
    lab: L.Lab,
    sock: Path,
    *,
    v4_routes: int = 1000,
    v6_routes: int = 1000,
    objects: int = 64,
    ipv6: bool = True,
    top: str = "",
    sections: str = "",
    in_port: str = "",
    out_port: str = "",
) -> str:
    """The agent's TOML for the standard lab: the engine on dut0 and dut1 with their
    addresses (IPv4, and IPv6 unless `ipv6=False`), `objects` groups and adjacencies.
    `top` goes before the first table, `sections` after [fib], `in_port` / `out_port` into
    the ports' tables."""

    def addresses(v4: str, v6: str) -> str:
        items = [f'"{v4}/24"'] + ([f'"{v6}/64"'] if ipv6 else [])
        return "[" + ", ".join(items) + "]"

    return f"""
workers = 1
netns = "{lab.ns("dut")}"
{top}
[listen]
unix = "{sock}"
[fib]
v4_routes = {v4_routes}
v6_routes = {v6_routes}
groups = {objects}
adjacencies = {objects}
{sections}
[[ports]]
name = "{L.DUT_IN}"
addresses = {addresses(L.DUT_IN_V4, L.DUT_IN_V6)}
{in_port}
[[ports]]
name = "{L.DUT_OUT}"
addresses = {addresses(L.DUT_OUT_V4, L.DUT_OUT_V6)}
{out_port}
"""


def start_agent(
    config: Path, sock: Path, log: Path, within: float = 30
) -> tuple[subprocess.Popen, dataplane_pb2_grpc.DataplaneStub, grpc.Channel]:
    """`corridor agent --config CONFIG`, waited for until it answers on `sock`; fails the
    test with its log if it exits or does not serve in time."""
    process = spawn(["agent", "--config", str(config)], log)
    channel = grpc.insecure_channel(f"unix:{sock}")
    stub = dataplane_pb2_grpc.DataplaneStub(channel)

    def serving() -> bool:
        if process.poll() is not None:
            channel.close()
            pytest.fail(f"the agent exited ({process.returncode}): {log.read_text()[-3000:]}")
        stub.ListPorts(dataplane_pb2.ListPortsRequest(), timeout=1)
        return True

    try:
        until(serving, within, "the agent serving", log)
    except AssertionError:
        stop(process)
        channel.close()
        raise
    return process, stub, channel
