"""A node the controller cannot reach: one warning per change of state however often the
session retries, a count of the retries in the status, and on recovery the error cleared
(kept as `cleared_error` with the time it cleared)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from controller_support import (
    LocalAgent,
    controller_document,
    controller_stub,
    eventually,
    start_controller,
)
from corridor.v1 import controller_pb2


def warnings_for(caplog: pytest.LogCaptureFixture, node: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "corridor.controller" and r.levelno >= logging.WARNING
        and r.getMessage().startswith(f"node {node}:")
    ]  # fmt: skip


async def test_an_unreachable_node_warns_once_and_clears_on_recovery(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="corridor.controller")
    sock = tmp_path / "a.sock"
    running = await start_controller(controller_document(tmp_path, {"a": f"unix:{sock}"}), tmp_path)
    channel, stub = controller_stub(tmp_path / "controller.sock")
    agent = None
    try:

        async def status():
            return await stub.GetNodeStatus(controller_pb2.GetNodeStatusRequest(name="a"))

        async def retried(n: int):
            s = await status()
            return s if s.retries >= n else None

        failing = await eventually(lambda: retried(5), within=60, what="5 retries")
        assert failing.state == controller_pb2.SYNC_STATE_CONNECTING
        assert "UNAVAILABLE" in failing.last_error
        assert failing.last_error_time.seconds > 0
        assert len(warnings_for(caplog, "a")) == 1, warnings_for(caplog, "a")
        old_error = failing.last_error

        agent = await LocalAgent(sock).start()

        async def recovered():
            s = await status()
            return s if s.in_sync else None

        s = await eventually(recovered, within=60, what="node a in sync")
        assert s.last_error == ""
        assert not s.HasField("last_error_time")
        assert s.retries == 0
        assert s.cleared_error == old_error
        assert s.cleared_error_time.seconds >= failing.last_error_time.seconds
        infos = [r.getMessage() for r in caplog.records if "recovered" in r.getMessage()]
        assert len(infos) == 1 and "node a" in infos[0], infos

        # Lost again: one more warning, not one per retry.
        await agent.stop()
        agent = None
        await eventually(lambda: retried(4), within=60, what="4 retries after the loss")
        assert len(warnings_for(caplog, "a")) == 2, warnings_for(caplog, "a")
    finally:
        await channel.close()
        await running.stop(0)
        if agent is not None:
            await agent.stop()
