"""`corridor agent` as a process on uvloop: it serves on its unix socket, stops cleanly on
SIGTERM, and a kill -9 leaves nothing that prevents the next start."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from corridor.agent import client as c
from corridor.v1 import dataplane_pb2_grpc

CONFIG = """
workers = 1
[listen]
unix = "run/agent.sock"
[fib]
v4_routes = 1000
v6_routes = 1000
"""  # no ports: the FIB alone (tests/test_agent_engine.py runs one with the engine)


async def start(config: Path, repo_root: Path) -> asyncio.subprocess.Process:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(repo_root / "control"), env.get("PYTHONPATH")) if p
    )
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "corridor", "agent", "--config", str(config),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def wait_serving(socket_path: Path, process: asyncio.subprocess.Process) -> None:
    """Until the agent answers a health check; at most 30 s."""
    async with grpc.aio.insecure_channel(f"unix:{socket_path}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(300):
            if process.returncode is not None:
                raise AssertionError(f"agent exited: {(await process.stderr.read()).decode()}")
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.1)
                continue
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            return
    raise AssertionError("the agent did not serve within 30 s")


async def stop(process: asyncio.subprocess.Process, signum: int) -> tuple[int, str]:
    process.send_signal(signum)
    async with asyncio.timeout(20):
        _, stderr = await process.communicate()
    return process.returncode, stderr.decode()


async def write_one(socket_path: Path, election: int) -> int:
    async with grpc.aio.insecure_channel(f"unix:{socket_path}") as channel:
        stub = dataplane_pb2_grpc.DataplaneStub(channel)
        request = c.write_request(election, [c.set_route("198.18.0.0/15", "blackhole")])
        return (await stub.Write(request, timeout=10)).generation


async def test_serves_then_stops_on_sigterm(tmp_path: Path, repo_root: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(CONFIG)
    socket_path = tmp_path / "run/agent.sock"
    process = await start(config, repo_root)
    try:
        await wait_serving(socket_path, process)
        assert await write_one(socket_path, 1) == 1
    finally:
        code, stderr = await stop(process, signal.SIGTERM)
    assert code == 0, stderr
    assert f"serving corridor.v1.Dataplane on unix:{socket_path}" in stderr
    assert "stopped" in stderr and "Traceback" not in stderr
    assert not socket_path.exists()


async def test_kill_9_leaves_nothing_in_the_way(tmp_path: Path, repo_root: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(CONFIG)
    socket_path = tmp_path / "run/agent.sock"
    first = await start(config, repo_root)
    try:
        await wait_serving(socket_path, first)
        # A second agent on the same socket is refused while the first one serves.
        second = await start(config, repo_root)
        async with asyncio.timeout(30):
            _, stderr = await second.communicate()
        assert second.returncode == 1
        assert "is in use by another running server" in stderr.decode()
    finally:
        first.kill()
        await first.wait()
    assert socket_path.is_socket()  # left behind by kill -9
    third = await start(config, repo_root)
    try:
        await wait_serving(socket_path, third)
        assert await write_one(socket_path, 1) == 1  # a fresh FIB: generation 1 again
    finally:
        code, stderr = await stop(third, signal.SIGINT)
    assert code == 0, stderr
