"""`corridor agent` as the benchmarks run it: its configuration, its process, the batches
of routes written to it, and the namespace with a veth pair that gives its engine two
ports when the benchmark needs no traffic."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import IO

from benches.harness import ROOT
from corridor.agent import client as c
from corridor.v1 import common_pb2, dataplane_pb2

ELECTION = 1
PORTS = ("bench0", "bench1")


def agent_config(netns: str, sock: Path, fib: dict[str, int], ports: dict[str, list[str]]) -> str:
    """The agent's TOML: one worker in `netns`, serving on the Unix socket `sock`, tables
    sized by `fib`, and `ports` (name: its addresses)."""
    lines = ["workers = 1", f'netns = "{netns}"', "[listen]", f'unix = "{sock}"', "[fib]"]
    lines += [f"{key} = {value}" for key, value in fib.items()]
    for name, addresses in ports.items():
        lines += ["[[ports]]", f'name = "{name}"']
        if addresses:
            lines.append("addresses = [" + ", ".join(f'"{a}"' for a in addresses) + "]")
    return "\n".join(lines) + "\n"


def agent_argv(config_path: Path) -> list[str]:
    return [sys.executable, "-m", "corridor", "agent", "--config", str(config_path)]


def corridor_env() -> dict[str, str]:
    """This environment with control/ on the path, for corridor's processes."""
    return dict(os.environ, PYTHONPATH=str(ROOT / "control"))


def launch_agent(
    config_path: Path, stderr: IO | int, *, new_session: bool = False
) -> subprocess.Popen:
    return subprocess.Popen(agent_argv(config_path), env=corridor_env(), stdout=subprocess.DEVNULL,
                            stderr=stderr, start_new_session=new_session)  # fmt: skip


def stop_agent(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 30 s."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def route_requests(prefixes: list[str], batch: int) -> list[dataplane_pb2.WriteRequest]:
    """WriteRequests of `batch` routes each, every route forwarded by group 1."""
    out = []
    forward, set_ = dataplane_pb2.ROUTE_KIND_FORWARD, dataplane_pb2.ACTION_SET
    for start in range(0, len(prefixes), batch):
        request = c.write_request(ELECTION, [], batch_id=len(out) + 1)
        add = request.operations.add
        for text in prefixes[start : start + batch]:
            address, _, length = text.partition("/")
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            op = add(action=set_)
            op.route.prefix.CopyFrom(
                common_pb2.IpPrefix(address=socket.inet_pton(family, address), length=int(length))
            )
            op.route.kind = forward
            op.route.next_hop_group_id = 1
        out.append(request)
    return out


class Namespace:
    """`cor-b<pid>` with a veth pair for the engine's two ports (PORTS); removed on exit."""

    def __init__(self) -> None:
        self.name = f"cor-b{os.getpid()}"

    def __enter__(self) -> Namespace:
        if os.geteuid() != 0:
            raise SystemExit("the benchmark needs root: the agent runs the engine on a veth pair")
        run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
        run("ip", "netns", "add", self.name)
        try:
            run("ip", "-n", self.name, "link", "add", PORTS[0], "type", "veth", "peer", "name",
                PORTS[1])  # fmt: skip
            for port in PORTS:
                run("ip", "-n", self.name, "link", "set", port, "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
