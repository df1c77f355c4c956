"""A commit is whole, in the store and in memory alike, whatever the client does: an Apply
whose client gives up (deadline) while its batch commits leaves the controller able to
commit the next, with memory equal to the store (checked by a restart)."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import shutil
import signal
import socket
import sys
from pathlib import Path

import grpc
import pytest

from controller_support import (
    LocalAgent,
    controller_document,
    controller_stub,
    key,
    route,
    start_controller,
    toml,
    wait_in_sync,
)
from corridor.v1 import controller_pb2
from test_controller_process import CONTROL, serving

GW = ("198.18.0.2", "cor-c0", 0, 1)
BIG = 100_000


def big_batch() -> bytes:
    base = int(ipaddress.ip_address("10.0.0.0"))
    routes = [route(f"{ipaddress.ip_address(base + i * 4)}/30", GW) for i in range(BIG)]
    return controller_pb2.ApplyRequest(routes=routes)


async def stats(stub) -> tuple[int, int]:
    s = await stub.GetStats(controller_pb2.GetStatsRequest(), timeout=30)
    return s.revision, s.intent.ipv4_routes + s.intent.ipv6_routes


async def test_an_apply_cancelled_during_its_commit_is_whole(tmp_path: Path, store_backend) -> None:
    agent = await LocalAgent(tmp_path / "a.sock").start()
    document = store_backend(controller_document(tmp_path, {"a": agent.address}))
    running = await start_controller(document, tmp_path)
    channel, stub = controller_stub(tmp_path / "controller.sock")
    request = big_batch()
    try:
        # Deadlines that land in decoding, in the commit and after it, on a slow or a
        # fast machine (the controller takes the 100 000 routes in about 0.1 s on a quiet
        # one): each time the next Apply must commit, whatever became of this one.
        expired = 0
        for i, deadline in enumerate((0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 0.8, 1.2, 2.0, 3.0)):
            try:
                await stub.Apply(request, timeout=deadline)
            except grpc.aio.AioRpcError as e:
                assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, e
                expired += 1
            one = controller_pb2.ApplyRequest(routes=[route(f"198.18.{i}.0/24", GW)])
            reply = await stub.Apply(one, timeout=60)
            revision, routes = await stats(stub)
            assert reply.revision == revision
            assert routes in (i + 1, BIG + i + 1)
        assert expired, "no deadline expired: the test did not test anything"
        await wait_in_sync(stub, "a", revision, within=120)
        held = len(await agent.routes())
        assert held == routes
    finally:
        await channel.close()
        await running.stop(0)
    # Restarted on the same store: memory was the store.
    running = await start_controller(document, tmp_path)
    channel, stub = controller_stub(tmp_path / "controller.sock")
    try:
        assert await stats(stub) == (revision, routes)
    finally:
        await channel.close()
        await running.stop(0)
        await agent.stop()


async def _scrape(port: int) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
    body = await reader.read()
    writer.close()
    return body.decode()


def _fill(path: Path) -> int:
    """Writes `path` until the disk is full; the errno that stopped it."""
    with path.open("wb", buffering=0) as f:
        chunk = b"\0" * 65536
        try:
            while True:
                f.write(chunk)
        except OSError as e:
            return e.errno or 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_a_full_disk_is_refused_with_its_cause_and_writes_resume(tmp_path: Path) -> None:
    """The store on a small tmpfs of its own (a private mount namespace, gone with the
    process), filled: the client hears RESOURCE_EXHAUSTED and the cause, the log and the
    metric say it, nothing is committed; writes work again once there is room."""
    for tool in ("unshare", "mount"):
        assert shutil.which(tool), f"{tool} (util-linux) is needed to mount the test's tmpfs"
    agent = await LocalAgent(tmp_path / "a.sock").start()
    disk = tmp_path / "disk"
    disk.mkdir()
    document = controller_document(tmp_path, {"a": agent.address})
    document["store"]["path"] = str(disk / "intent.db")
    metrics = _free_port()
    document["metrics"] = {"address": f"127.0.0.1:{metrics}"}
    config = tmp_path / "controller.toml"
    config.write_text(toml(document))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (CONTROL, env.get("PYTHONPATH")) if p)
    process = await asyncio.create_subprocess_exec(
        "unshare", "--mount", "--propagation", "private", "sh", "-c",
        'mount -t tmpfs -o size=2m cor-test "$0" && exec "$@"', str(disk),
        sys.executable, "-m", "corridor", "controller", "--config", str(config),
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    channel, stub = controller_stub(tmp_path / "controller.sock")
    filler = Path(f"/proc/{process.pid}/root{disk}/filler")
    batch = controller_pb2.ApplyRequest(
        routes=[route(f"10.{i >> 8}.{i & 255}.0/24", GW) for i in range(5000)]
    )
    try:
        await serving(lambda: stub.ListNodes(controller_pb2.ListNodesRequest(), timeout=1), process)
        first = await stub.Apply(batch, timeout=60)
        assert await asyncio.to_thread(_fill, filler) == errno.ENOSPC
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Apply(batch, timeout=60)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused.value
        assert "database or disk is full" in refused.value.details()
        assert str(disk / "intent.db") in refused.value.details()
        # Every call that commits says so alike (a small commit too: the tmpfs is full).
        node_b = controller_pb2.Node(name="b", address=f"unix:{tmp_path / 'b.sock'}")
        calls = {
            "RegisterNode": stub.RegisterNode(controller_pb2.RegisterNodeRequest(node=node_b)),
            "DeregisterNode": stub.DeregisterNode(controller_pb2.DeregisterNodeRequest(name="a")),
            "SetNextHopState": stub.SetNextHopState(
                controller_pb2.SetNextHopStateRequest(
                    node="a", gateway=socket.inet_aton(GW[0]), port=GW[1], drained=True
                )
            ),
            "Delete": stub.Delete(controller_pb2.DeleteRequest(routes=[key("10.0.0.0/24")])),
        }
        for name, call in calls.items():
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (name, refused.value)
            assert "database or disk is full" in refused.value.details(), name
        assert (await stats(stub))[0] == first.revision  # nothing committed
        text = await _scrape(metrics)
        assert 'outcome="store_full"' in text, text
        await asyncio.to_thread(filler.unlink)
        second = await stub.Apply(batch, timeout=60)
        assert second.revision == first.revision + 1
        third = await stub.Delete(controller_pb2.DeleteRequest(routes=[key("10.0.0.0/24")]))
        assert (third.revision, third.deleted) == (second.revision + 1, 1)
        await wait_in_sync(stub, "a", third.revision, within=60)
    finally:
        await channel.close()
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            log = (await process.stderr.read()).decode()
            await process.wait()
        await agent.stop()
    assert "database or disk is full" in log, log
