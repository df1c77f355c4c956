"""What the /metrics endpoints of a real agent and a real controller serve: clean for
`promtool check metrics` (counters typed and named as counters, no `_created` series), one
name scheme (`corridor_agent_`, `corridor_engine_`, `corridor_controller_`), and an election
that changes values, not the set of series. tests/test_agent_engine.py checks the engine's
families the same way in the lab."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from controller_support import route, toml
from corridor.agent import client as c
from corridor.common.config import HostPort
from corridor.common.metrics import MetricsServer
from corridor.v1 import controller_pb2, controller_pb2_grpc
from metrics_support import families, free_port, promtool_check, samples, scrape


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


@pytest.mark.slow
@pytest.mark.parametrize("exporter", ["agent", "controller"])
def test_promtool_finds_nothing_to_say(exporters: Exporters, exporter: str) -> None:
    text = getattr(exporters, exporter)
    promtool_check(text)
    assert "_created" not in text
    assert len(families(text)) >= 8, text


@pytest.mark.slow
def test_one_name_scheme_and_counters_typed_as_counters(exporters: Exporters) -> None:
    for exporter, component in (
        ("agent", ("corridor_agent_", "corridor_engine_")),
        ("controller", "corridor_controller_"),
    ):
        kinds = families(getattr(exporters, exporter))
        for name, kind in kinds.items():
            assert name.startswith(component), name
            # A family typed counter is exposed as NAME_total; one named so is a counter.
            assert (kind == "counter") == name.endswith("_total"), (name, kind)
    agent, controller = samples(exporters.agent), samples(exporters.controller)
    assert agent['corridor_agent_fib_entries{table="ipv4_routes"}'] == 1
    assert agent["corridor_agent_fib_batches_applied_total"] >= 1
    assert agent['corridor_agent_write_operations_total{outcome="applied"}'] >= 1
    assert agent["corridor_agent_election_id_high"] >= 1  # the controller's id
    assert controller['corridor_controller_intent_entries{table="ipv4_routes"}'] == 1
    assert controller['corridor_controller_node_in_sync{node="ix1"}'] == 1
    assert (
        controller['corridor_controller_apply_seconds_count{call="apply",outcome="committed"}'] == 1
    )


async def test_an_election_changes_values_not_series(agent) -> None:
    """A new primary changes the id gauges and counts the change: no series appears or goes
    (a label holding the id would leave one stale series behind per election)."""
    server = MetricsServer(agent.metrics.registry, HostPort("127.0.0.1", 0))
    try:
        loop = asyncio.get_running_loop()
        await agent.stub.Write(c.write_request((1 << 64) | 2, []), timeout=10)
        before = samples(await loop.run_in_executor(None, scrape, server.port))
        await agent.stub.Write(c.write_request((7 << 64) | 9, []), timeout=10)
        text = await loop.run_in_executor(None, scrape, server.port)
    finally:
        server.stop()
    after = samples(text)
    assert sorted(after) == sorted(before)
    assert (
        before["corridor_agent_election_id_high"],
        before["corridor_agent_election_id_low"],
    ) == (
        1,
        2,
    )
    assert (after["corridor_agent_election_id_high"], after["corridor_agent_election_id_low"]) == (
        7,
        9,
    )
    changes = "corridor_agent_election_primary_changes_total"
    assert after[changes] == before[changes] + 1
    promtool_check(text)
