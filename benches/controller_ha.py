"""Controllers on etcd, every component its own process, FIB-only agents (no ports, no
engine: BLACKHOLE routes; no root needed):
1. apply rate: the tables applied through one controller on SQLite, then through one on a
   3-member etcd cluster (Debian's etcd on loopback ports), in the same run: seconds from
   the first Apply to its last acknowledgement and to the node in sync, routes/s, the ratio;
   and the size the tables take in etcd (the chunks the head names; etcd's database file);
2. failover: 3 controllers on the etcd cluster, 2 agents; the leader killed (-9): seconds
   until a follower took the leader key (its own clock), until it answers as the leader,
   and until it has read both nodes and found (or made) them in sync, with the operations
   it wrote (0: nothing, the nodes were in sync). At 1 k routes and at the tables of
   --limit (default: the full tables).

  .venv/bin/python -m benches.controller_ha [--data ../shared/data] [--limit N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import tempfile
import time
from pathlib import Path

import grpc

from benches.controller_load import BATCH, FIB, memory_mib, spawn, table, until
from benches.harness.etcd import EtcdCluster, free_port
from benches.harness.tables import DATA
from corridor.agent import client as c
from corridor.v1 import controller_pb2, controller_pb2_grpc

LEASE = 5  # the default


def requests(prefixes: list[str]) -> list[controller_pb2.ApplyRequest]:
    return [
        controller_pb2.ApplyRequest(
            routes=[
                controller_pb2.RouteIntent(prefix=c.prefix(p), kind=2)
                for p in prefixes[i : i + BATCH]
            ]
        )
        for i in range(0, len(prefixes), BATCH)
    ]


class Lab:
    """FIB-only agents and controllers in a temporary directory, stopped on exit."""

    def __init__(self, tmp: Path, etcd: EtcdCluster | None) -> None:
        self.tmp, self.etcd = tmp, etcd
        self.processes: list[asyncio.subprocess.Process] = []
        self.controllers: list[tuple[asyncio.subprocess.Process, str, object]] = []
        self.channels: list[grpc.aio.Channel] = []

    async def agent(self, name: str) -> Path:
        tmp = self.tmp
        (tmp / f"{name}.toml").write_text(
            f'workers = 1\n[listen]\nunix = "{tmp / name}.sock"\n[fib]\n'
            + "".join(f"{k} = {v}\n" for k, v in FIB.items())
        )
        self.processes.append(
            await spawn(tmp / f"{name}.log", "agent", "--config", str(tmp / f"{name}.toml"))
        )
        return tmp / f"{name}.sock"

    async def controller(self, i: int, agents: dict[str, Path]):
        d = self.tmp / f"c{i}"
        d.mkdir()
        address = f"127.0.0.1:{free_port()}"
        text = f'[listen]\nunix = "{d}/controller.sock"\ntcp = "{address}"\n'
        if self.etcd is None:
            text += f'[store]\npath = "{d}/intent.db"\n'
        else:
            endpoints = ", ".join(f'"{e}"' for e in self.etcd.endpoints)
            text += f'[store]\nbackend = "etcd"\nendpoints = [{endpoints}]\n'
        text += "[reconcile]\ndrift_check_seconds = 30\nmax_groups = 1024\n"
        text += "max_adjacencies = 1024\n"
        for name, sock in agents.items():
            text += f'[[nodes]]\nname = "{name}"\naddress = "unix:{sock}"\n'
        (d / "ctl.toml").write_text(text)
        process = await spawn(d / "controller.log", "controller", "--config", str(d / "ctl.toml"))
        channel = grpc.aio.insecure_channel(address)
        self.channels.append(channel)
        stub = controller_pb2_grpc.ControllerStub(channel)
        self.controllers.append((process, address, stub))
        return stub

    async def leader(self, within: float = 300.0):
        async def one():
            for process, address, stub in self.controllers:
                if process.returncode is not None:
                    continue
                stats = await stub.GetStats(controller_pb2.GetStatsRequest(), timeout=2)
                if stats.leadership.leading:
                    return process, address, stub
            return None

        return await until(one, within, step=0.02)

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()
        for process in [p for p, _, _ in self.controllers] + self.processes:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                await process.wait()


async def in_sync(stub, revision: int, node: str):
    s = await stub.GetNodeStatus(controller_pb2.GetNodeStatusRequest(name=node), timeout=5)
    ok = s.leadership.leading and s.connected and s.in_sync and s.synced_revision >= revision
    return s if ok else None


async def apply_rate(batches: list, routes: int, backend: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="cor-bench-ha-") as t:
        tmp = Path(t)
        etcd = EtcdCluster(tmp / "etcd", 3).start() if backend == "etcd" else None
        lab = Lab(tmp, etcd)
        try:
            agents = {"n1": await lab.agent("n1")}
            stub = await lab.controller(0, agents)
            await until(lambda: in_sync(stub, 0, "n1"), 120)
            started = time.perf_counter()
            revision = 0
            for request in batches:
                revision = (await stub.Apply(request, timeout=300)).revision
            acked = time.perf_counter() - started
            await until(lambda: in_sync(stub, revision, "n1"), step=0.05)
            synced = time.perf_counter() - started
            out = {
                "apply_seconds": round(acked, 2),
                "in_sync_seconds": round(synced, 2),
                "routes_per_s": round(routes / acked),
                "controller_rss_mib": memory_mib(lab.controllers[0][0].pid)[0],
            }
            if etcd is not None:
                out.update(await etcd_size(etcd))
            return out
        finally:
            await lab.close()
            if etcd is not None:
                etcd.stop()


async def etcd_size(etcd: EtcdCluster) -> dict:
    """The bytes of the chunks the head names, and etcd's database file (every member's
    the same size; history compaction aside)."""
    from corridor.controller.etcd_store import EtcdConfig, EtcdStore

    store = EtcdStore(EtcdConfig(tuple(etcd.endpoints), timeout_seconds=30))
    try:
        await store.check()
        chunk_bytes, db_bytes = await store.size()
        return {
            "etcd_chunks": len(store.chunks),
            "etcd_chunk_bytes": chunk_bytes,
            "etcd_db_bytes": db_bytes,
        }
    finally:
        await store.close()


async def failover(batches: list, routes: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="cor-bench-ha-") as t:
        tmp = Path(t)
        etcd = EtcdCluster(tmp / "etcd", 3).start()
        lab = Lab(tmp, etcd)
        try:
            agents = {n: await lab.agent(n) for n in ("n1", "n2")}
            for i in range(3):
                await lab.controller(i, agents)
            _, old_address, stub = await lab.leader()
            revision = 0
            for request in batches:
                revision = (await stub.Apply(request, timeout=300)).revision
            for node in agents:
                await until(lambda node=node: in_sync(stub, revision, node), step=0.05)
            await asyncio.sleep(2 * LEASE)  # the followers have followed; all quiet
            process = next(p for p, a, _ in lab.controllers if a == old_address)
            killed, killed_at = time.perf_counter(), time.time()
            process.send_signal(signal.SIGKILL)
            await process.wait()
            _, address, new = await lab.leader()
            led = time.perf_counter() - killed
            stats = await new.GetStats(controller_pb2.GetStatsRequest(), timeout=30)
            # When the follower took the leader key, by its clock (the same machine's).
            took = stats.leadership.leader_since.ToNanoseconds() / 1e9 - killed_at
            written = 0
            for node in agents:
                status = await until(lambda node=node: in_sync(new, revision, node), step=0.02)
                written += status.last_full_sync_operations
            synced = time.perf_counter() - killed
            return {
                "routes": routes,
                "lease_seconds": LEASE,
                "leader_key_seconds": round(took, 2),
                "leader_seconds": round(led, 2),
                "in_sync_seconds": round(synced, 2),
                "operations_written": written,
                "killed": old_address,
                "new_leader": address,
            }
        finally:
            await lab.close()
            etcd.stop()


async def main(data: Path, limit: int | None) -> dict:
    prefixes = table(data, limit)
    loop = asyncio.get_running_loop()
    batches = await loop.run_in_executor(None, requests, prefixes)
    small = await loop.run_in_executor(None, requests, table(data, 500))
    sqlite = await apply_rate(batches, len(prefixes), "sqlite")
    etcd = await apply_rate(batches, len(prefixes), "etcd")
    return {
        "routes": len(prefixes),
        "apply": {
            "sqlite": sqlite,
            "etcd": etcd,
            "etcd_over_sqlite_rate": round(etcd["routes_per_s"] / sqlite["routes_per_s"], 2),
        },
        "failover_1k": await failover(small, sum(len(b.routes) for b in small)),
        "failover": await failover(batches, len(prefixes)),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        prog="python -m benches.controller_ha", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--limit", type=int, help="routes per family (default: all)")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.data, args.limit)), indent=1))
