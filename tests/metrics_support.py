"""Helpers of the metrics tests: promtool on a scrape, a scrape read as series and families,
the real exporters (`exporters` fixture), and the metric names that deploy/ (the Grafana
dashboard, the alerting rules) relies on."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from controller_support import route, toml
from corridor.v1 import controller_pb2, controller_pb2_grpc


def promtool_check(text: str) -> None:
    """Fails with promtool's words unless it finds nothing to say about `text`."""
    promtool = shutil.which("promtool")
    assert promtool, (
        "promtool not found (Debian package prometheus, in the Makefile's APT_PACKAGES)"
    )
    done = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, ""), text


def samples(text: str) -> dict[str, float]:
    """Series (name and labels, as written) to value."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            out[series] = float(value)
    return out


def families(text: str) -> dict[str, str]:
    """Family name to type, from the # TYPE lines."""
    return {
        line.split()[2]: line.split()[3] for line in text.splitlines() if line.startswith("# TYPE ")
    }


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        return reply.read().decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Exporters:
    agent: str  # what the agent's /metrics served
    controller: str  # the controller's


def _process(repo: Path, command: str, config: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(repo / "control"), env.get("PYTHONPATH")) if p
    )
    return subprocess.Popen(
        [sys.executable, "-m", "corridor", command, "--config", str(config)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


def _until(predicate, what: str, processes: list[subprocess.Popen[bytes]], within: float = 60.0):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for p in processes:
            if p.poll() is not None:
                raise AssertionError(f"{p.args} exited: {p.stderr.read().decode()}")
        try:
            value = predicate()
        except (OSError, grpc.RpcError):
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached in {within} s")


@pytest.fixture(scope="module")
def exporters(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exporters]:
    """`corridor agent` (no ports: the FIB alone) and `corridor controller` with that agent
    as its node, as processes, after one route went through both; what each serves."""
    tmp = tmp_path_factory.mktemp("exporters")
    agent_port, controller_port = free_port(), free_port()
    agent_config = tmp / "agent.toml"
    agent_config.write_text(
        toml(
            {
                "workers": 1,
                "listen": {"unix": str(tmp / "agent.sock")},
                "fib": {"v4_routes": 1000, "v6_routes": 1000, "groups": 64, "adjacencies": 64},
                "metrics": {"address": f"127.0.0.1:{agent_port}"},
            }
        )
    )
    controller_config = tmp / "controller.toml"
    controller_config.write_text(
        toml(
            {
                "listen": {"unix": str(tmp / "controller.sock")},
                "store": {"path": str(tmp / "intent.db")},
                "reconcile": {"max_groups": 64, "max_adjacencies": 64},
                "metrics": {"address": f"127.0.0.1:{controller_port}"},
                "nodes": [{"name": "ix1", "address": f"unix:{tmp / 'agent.sock'}"}],
                # A BGP feed (no zebra connects): its series are exported and checked too.
                "fpm": [{"node": "ix1", "listen": "127.0.0.1:0"}],
            }
        )
    )
    processes = [_process(repo_root, "agent", agent_config)]
    try:
        _until(lambda: (tmp / "agent.sock").exists(), "the agent's socket", processes)
        processes.append(_process(repo_root, "controller", controller_config))
        with grpc.insecure_channel(f"unix:{tmp / 'controller.sock'}") as channel:
            stub = controller_pb2_grpc.ControllerStub(channel)
            request = controller_pb2.ApplyRequest(routes=[route("198.18.0.0/15", kind=2)])
            reply = _until(lambda: stub.Apply(request, timeout=10), "Apply", processes)

            def synced() -> bool:
                name = controller_pb2.GetNodeStatusRequest(name="ix1")
                status = stub.GetNodeStatus(name, timeout=10)
                return status.in_sync and status.synced_revision >= reply.revision

            _until(synced, "node ix1 in sync", processes)
        yield Exporters(scrape(agent_port), scrape(controller_port))
    finally:
        for p in processes:
            p.terminate()
        for p in processes:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            assert p.stderr is not None
            p.stderr.close()


DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
METRIC_NAME = re.compile(r"\bcorridor_[a-z0-9_]+")


def dashboard_expressions() -> list[str]:
    """Every PromQL expression of the Grafana dashboard: its panels' and its variables'."""
    dashboard = json.loads((DEPLOY / "grafana" / "corridor.json").read_text())
    out = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            out.append(query["query"])
    return out


def alert_expressions() -> list[str]:
    text = (DEPLOY / "prometheus" / "corridor-alerts.yml").read_text()
    return [line.split("expr:", 1)[1] for line in text.splitlines() if "expr:" in line] + [
        text  # the folded (multi-line) expressions: names are found in the whole text
    ]


def deploy_metric_names() -> set[str]:
    """The metric (sample) names deploy/ uses."""
    return {
        name
        for expression in dashboard_expressions() + alert_expressions()
        for name in METRIC_NAME.findall(expression)
    }
