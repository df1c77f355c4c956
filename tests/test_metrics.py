"""What the /metrics endpoints of a real agent and a real controller serve: clean for
`promtool check metrics` (counters typed and named as counters, no `_created` series), one
name scheme (`corridor_agent_`, `corridor_engine_`, `corridor_controller_`), and an election
that changes values, not the set of series. tests/test_agent_engine.py checks the engine's
families the same way in the lab."""

from __future__ import annotations

import asyncio

import pytest

from corridor.agent import client as c
from corridor.common.config import HostPort
from corridor.common.metrics import MetricsServer
from metrics_support import Exporters, exporters, families, promtool_check, samples, scrape

__all__ = ["exporters"]  # the fixture, shared with test_deploy.py


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
    assert controller['corridor_controller_bgp_entries{table="ipv4_routes"}'] == 0
    assert controller['corridor_controller_bgp_connected{node="ix1"}'] == 0
    assert controller['corridor_controller_bgp_received_updates_total{node="ix1"}'] == 0
    # One controller on SQLite leads from its start.
    assert controller["corridor_controller_leading"] == 1
    assert controller["corridor_controller_leader_changes_total"] == 1
    assert controller["corridor_controller_election_id"] >= 1


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
