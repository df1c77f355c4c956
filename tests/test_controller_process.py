"""The controller and agents as they fail: the controller killed (-9) right after
acknowledging loses nothing it acknowledged; restarted on unchanged intent it writes
nothing; an agent killed (-9) is noticed and gets its whole intent back when it returns;
routes deleted on an agent behind the controller's back are found and restored."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import grpc

from controller_support import (
    LocalAgent,
    agent_document,
    controller_document,
    controller_stub,
    eventually,
    route,
    start_controller,
    toml,
    wait_in_sync,
)
from corridor.agent import client as agent_client
from corridor.v1 import controller_pb2

GW = ("198.18.0.2", "cor-c0", 0, 1)


CONTROL = str(Path(__file__).resolve().parent.parent / "control")


async def spawn(*args: str) -> asyncio.subprocess.Process:
    env = dict(os.environ)
    control = CONTROL
    env["PYTHONPATH"] = os.pathsep.join(p for p in (control, env.get("PYTHONPATH")) if p)
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "corridor", *args, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def kill9(process: asyncio.subprocess.Process) -> None:
    process.send_signal(signal.SIGKILL)
    async with asyncio.timeout(20):
        await process.wait()


async def serving(stub_call, process: asyncio.subprocess.Process) -> None:
    async def ready():
        if process.returncode is not None:
            raise AssertionError(f"exited: {(await process.stderr.read()).decode()}")
        try:
            await stub_call()
        except grpc.aio.AioRpcError:
            return False
        return True

    await eventually(ready, 60, "serving")


async def test_kill9_after_ack_loses_nothing_and_restart_writes_nothing(tmp_path: Path) -> None:
    agent = await LocalAgent(tmp_path / "a.sock").start()
    config = tmp_path / "controller.toml"
    config.write_text(toml(controller_document(tmp_path, {"a": agent.address}, drift=1)))
    channel, stub = controller_stub(tmp_path / "controller.sock")

    async def start():
        process = await spawn("controller", "--config", str(config))
        await serving(lambda: stub.ListNodes(controller_pb2.ListNodesRequest(), timeout=1), process)
        return process

    process = await start()
    try:
        # Power cut: batches acknowledged back to back, the process killed right after one.
        acknowledged: list[str] = []
        for i in range(40):
            prefixes = [f"198.18.{i}.{j * 4}/30" for j in range(50)]
            await stub.Apply(
                controller_pb2.ApplyRequest(routes=[route(p, GW) for p in prefixes]), timeout=30
            )
            acknowledged += prefixes
        await kill9(process)

        process = await start()
        listed: list[str] = []
        request = controller_pb2.ListRoutesRequest(page_size=10_000)
        while True:
            page = await stub.ListRoutes(request)
            listed += [agent_client.prefix_text(r.prefix) for r in page.routes]
            if not (token := page.next_page_token):
                break
            request.page_token = token
        assert set(acknowledged) <= set(listed) and len(listed) == len(acknowledged)
        status = await wait_in_sync(stub, "a", 40)
        assert set(await agent.routes()) == set(acknowledged)

        # Unchanged intent: a restart reads the node and writes nothing.
        generation = agent.dataplane.generation
        primary_changes = agent.dataplane.election.changes
        assert status.agent_generation == generation
        await kill9(process)
        process = await start()
        status = await wait_in_sync(stub, "a", 40)
        assert status.last_full_sync_operations == 0
        await asyncio.sleep(1.5)  # a drift check passes too, with nothing to repair
        assert agent.dataplane.generation == generation
        assert agent.dataplane.election.changes == primary_changes
        status = await stub.GetNodeStatus(controller_pb2.GetNodeStatusRequest(name="a"))
        assert status.drift_detected == 0
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await process.wait()
        await channel.close()
        await agent.stop()


async def test_agent_killed_is_noticed_and_replayed(tmp_path: Path) -> None:
    sock = tmp_path / "a.sock"
    agent_config = tmp_path / "agent.toml"
    # No ports: `corridor agent` then hosts the FIB without starting the engine on interfaces.
    document = agent_document(sock)
    del document["ports"]
    agent_config.write_text(toml(document))
    agent = await spawn("agent", "--config", str(agent_config))
    probe = LocalAgent(sock)
    running = await start_controller(
        controller_document(tmp_path, {"a": f"unix:{sock}"}, drift=1), tmp_path
    )
    channel, stub = controller_stub(tmp_path / "controller.sock")
    try:
        prefixes = [f"198.18.{i // 64}.{(i % 64) * 4}/30" for i in range(5000)]
        reply = await stub.Apply(
            controller_pb2.ApplyRequest(routes=[route(p, kind=2) for p in prefixes]), timeout=30
        )
        await wait_in_sync(stub, "a", reply.revision, within=60)
        await kill9(agent)

        async def noticed():
            s = await stub.GetNodeStatus(controller_pb2.GetNodeStatusRequest(name="a"))
            return s if not s.connected else None

        down = await eventually(noticed, 20, "the controller noticing the dead agent")
        assert down.last_error and not down.in_sync

        agent = await spawn("agent", "--config", str(agent_config))
        status = await wait_in_sync(stub, "a", reply.revision, within=60)
        assert status.connected and status.last_full_sync_operations == 5000
        assert status.last_full_sync_seconds > 0
        probe.channel = grpc.aio.insecure_channel(probe.address)
        from corridor.v1 import dataplane_pb2_grpc

        probe.stub = dataplane_pb2_grpc.DataplaneStub(probe.channel)
        assert set(await probe.routes()) == set(prefixes)
        await probe.channel.close()
    finally:
        if agent.returncode is None:
            await kill9(agent)
        await channel.close()
        await running.stop(0)


async def test_drift_is_detected_reported_and_repaired(tmp_path: Path) -> None:
    agent = await LocalAgent(tmp_path / "a.sock").start()
    running = await start_controller(
        controller_document(tmp_path, {"a": agent.address}, drift=1), tmp_path
    )
    channel, stub = controller_stub(tmp_path / "controller.sock")
    try:
        prefixes = [f"198.18.{i}.0/24" for i in range(100)]
        reply = await stub.Apply(
            controller_pb2.ApplyRequest(routes=[route(p, GW) for p in prefixes])
        )
        await wait_in_sync(stub, "a", reply.revision)
        # Someone writes the agent with the controller's own election id (a same-id writer
        # is the same writer to the agent): ten routes gone, one added, and our next hop
        # rewritten with explicit MACs.
        election = agent.dataplane.election.highest
        (ours,) = (await agent_client.read(agent.stub)).adjacencies
        ops = [agent_client.delete_route(p) for p in prefixes[:10]]
        ops.append(agent_client.set_route("198.19.0.0/16", "blackhole"))
        ops.append(
            agent_client.set_adjacency(
                ours.id, "cor-c0", 0, "02:00:00:00:00:01", "02:00:00:00:00:02"
            )
        )
        await agent.stub.Write(agent_client.write_request(election, ops))
        assert len(await agent.routes()) == 91

        async def repaired():
            s = await stub.GetNodeStatus(controller_pb2.GetNodeStatusRequest(name="a"))
            return s if s.drift_detected else None

        status = await eventually(repaired, 20, "drift repaired")
        assert status.drift_entries == 12
        assert set(await agent.routes()) == set(prefixes)
        (restored,) = (await agent_client.read(agent.stub)).adjacencies
        assert (restored.gateway, restored.src_mac, restored.dst_mac) == (
            bytes([198, 18, 0, 2]), b"", b"",
        )  # fmt: skip
    finally:
        await channel.close()
        await running.stop(0)
        await agent.stop()
