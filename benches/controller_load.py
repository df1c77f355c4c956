"""The controller under load, end to end over Unix sockets, every component its own process:
1. the full IPv4 + IPv6 tables applied through the controller to one node (routes/s from
   the first Apply to the node in sync), beside the agent's direct StreamWrite rate (the
   ceiling) measured in the same run on a fresh agent;
2. a drained next hop re-pointing the group of 1 k routes and the group of the full table
   (time from the request to the node in sync: it must not grow with the routes);
3. the agent killed (-9) and restarted: time until the controller has restored its table;
4. one-route Applies on the full table, one at a time (what `corridor route add` costs,
   its process start aside): the RPC's latency, p50 and p90;
5. fan-out: the tables through one controller to `--nodes` FIB-only agents (no ports, no
   engine: BLACKHOLE routes), time until every node is in sync beside the same for one
   node, the CPU seconds controller and agents spent meanwhile, and the controller's
   resident memory then; then both again with the agents at `nice` 10: on this machine
   the agents share the controller's two cores, where in a deployment each has its own
   server, and at equal priority eight of them take turns with the controller, whose
   commits every node waits for;
6. a drift check's read of the node with the tables (after 4): Read's first message alone
   (`head_only`, as the controller reads it) beside a full Read cancelled after its first
   message (as it read before), in time and the agent's CPU;
7. then `--idle` seconds (60) with the tables installed and nothing written: the CPU share
   agent and controller take on their own (drift checks every 30 s here, counters, members'
   samples) and their peak resident memory.
The agents of 1-3 host the engine on a veth pair in a namespace of their own (`cor-b<pid>`,
as in benches.agent_load; removed afterwards; root), the gateways answering on the far end.

  .venv/bin/python -m benches.controller_load [--data ../shared/data] [--limit N] [--nodes 8]
                                              [--idle 60]
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

from benches.harness.agent import PORTS, Namespace, agent_config, corridor_env
from benches.harness.tables import DATA, TABLE4, TABLE6, read_prefixes
from corridor.agent import client as c
from corridor.v1 import controller_pb2, controller_pb2_grpc, dataplane_pb2_grpc

BATCH = 50_000
AGENT_NICE = 10  # step 5's second pass: the agents as if on servers of their own (above)
GW = [(f"198.18.0.{i}", PORTS[0]) for i in range(2, 6)]  # addresses of the far end

FIB = {"v4_routes": 2_000_000, "v6_routes": 500_000, "groups": 1024, "adjacencies": 1024}
CONTROLLER = """[listen]
unix = "{sock}"
[store]
path = "{db}"
[reconcile]
drift_check_seconds = 30
max_groups = 1024
max_adjacencies = 1024
"""
NODE = """[[nodes]]
name = "{name}"
address = "unix:{agent}"
"""
ADDS = 300  # one-route Applies timed


def table(data: Path, limit: int | None) -> list[str]:
    prefixes = []
    for name in (TABLE4, TABLE6):
        read = itertools.islice(read_prefixes(data / name), limit)
        prefixes += (str(ipaddress.ip_network(p)) for p in read)
    return prefixes


async def spawn(log: Path, *args, nice: int = 0) -> asyncio.subprocess.Process:
    with log.open("a") as err:
        return await asyncio.create_subprocess_exec(
            *(("nice", "-n", str(nice)) if nice else ()),
            sys.executable, "-m", "corridor", *args, env=corridor_env(),
            stdout=asyncio.subprocess.DEVNULL, stderr=err,
        )  # fmt: skip


def write_agent_config(tmp: Path, name: str, netns: str) -> Path:
    config = tmp / f"{name}.toml"
    ports = {PORTS[0]: ["198.18.0.1/24"], PORTS[1]: []}
    config.write_text(agent_config(netns, tmp / f"{name}.sock", FIB, ports))
    return config


def tail(log: Path) -> str:
    return log.read_text()[-2000:]


async def serving(stub, agent: asyncio.subprocess.Process, log: Path) -> None:
    async def ready():
        if agent.returncode is not None:
            raise SystemExit(f"the agent exited: {tail(log)}")
        return await stub.ListPorts(c.dataplane_pb2.ListPortsRequest(), timeout=1)

    await until(ready, 60)


async def until(fn, within=900.0, step=0.005):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            value = await fn()
        except grpc.aio.AioRpcError:
            value = None
        if value:
            return value
        await asyncio.sleep(step)
    raise TimeoutError("benchmark step timed out")


def intent(prefix: str, hops) -> controller_pb2.RouteIntent:
    r = controller_pb2.RouteIntent(prefix=c.prefix(prefix), kind=1)
    for gw, port in hops:
        r.next_hops.add(gateway=ipaddress.ip_address(gw).packed, port=port)
    return r


async def in_sync(stub, revision, node="n1"):
    s = await stub.GetNodeStatus(controller_pb2.GetNodeStatusRequest(name=node))
    return s if s.in_sync and s.synced_revision >= revision else None


def controller_config(tmp: Path, agents: dict[str, Path]) -> Path:
    text = CONTROLLER.format(sock=tmp / "controller.sock", db=tmp / "intent.db")
    text += "".join(NODE.format(name=n, agent=a) for n, a in agents.items())
    (tmp / "ctl.toml").write_text(text)
    return tmp / "ctl.toml"


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_mib(pid: int) -> tuple[float, float]:
    """Resident memory now and at its peak (VmRSS, VmHWM), MiB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return tuple(round(int(fields[k].split()[0]) / 1024, 1) for k in ("VmRSS", "VmHWM"))


async def route_add_ms(stub) -> tuple[float, float]:
    """p50 and p90 of one-route Applies, one after the other, each a route of its own."""
    seconds = []
    for i in range(ADDS):
        one = controller_pb2.ApplyRequest(
            routes=[intent(f"198.19.{128 + i // 256}.{i % 256}/32", GW[:2])]
        )
        started = time.perf_counter()
        await stub.Apply(one, timeout=30)
        seconds.append(time.perf_counter() - started)
    seconds.sort()
    return round(seconds[len(seconds) // 2] * 1000, 2), round(
        seconds[len(seconds) * 9 // 10] * 1000, 2
    )


async def fanout(data_prefixes: list[str], nodes: int, nice: int = 0) -> dict:
    """The tables through one controller to `nodes` FIB-only agents (BLACKHOLE routes: an
    agent without ports has no port for a next hop), the agents at `nice`: seconds from the
    first Apply until every node is in sync, the CPU seconds the controller and the agents
    (together) spent meanwhile, and the controller's memory then."""
    with tempfile.TemporaryDirectory(prefix="cor-bench-") as t:
        tmp = Path(t)
        names = [f"n{i + 1}" for i in range(nodes)]
        agents = {}
        for name in names:
            (tmp / f"{name}.toml").write_text(
                f'workers = 1\n[listen]\nunix = "{tmp / name}.sock"\n[fib]\n'
                + "".join(f"{k} = {v}\n" for k, v in FIB.items())
            )
            agents[name] = await spawn(
                tmp / f"{name}.log", "agent", "--config", str(tmp / f"{name}.toml"), nice=nice
            )
        config = controller_config(tmp, {n: tmp / f"{n}.sock" for n in names})
        ctl = await spawn(tmp / "controller.log", "controller", "--config", str(config))
        channel = grpc.aio.insecure_channel(f"unix:{tmp / 'controller.sock'}")
        stub = controller_pb2_grpc.ControllerStub(channel)
        try:
            for name in names:
                await until(lambda name=name: in_sync(stub, 0, name), 120)
            loop = asyncio.get_running_loop()
            requests = await loop.run_in_executor(None, lambda: [
                controller_pb2.ApplyRequest(routes=[
                    controller_pb2.RouteIntent(prefix=c.prefix(p), kind=2)
                    for p in data_prefixes[i : i + BATCH]])
                for i in range(0, len(data_prefixes), BATCH)
            ])  # fmt: skip
            pids = [ctl.pid, *(a.pid for a in agents.values())]
            cpu = [cpu_seconds(pid) for pid in pids]
            started = time.perf_counter()
            revision = 0
            for request in requests:
                revision = (await stub.Apply(request, timeout=300)).revision
            for name in names:
                await until(lambda name=name: in_sync(stub, revision, name), step=0.05)
            seconds = time.perf_counter() - started
            spent = [cpu_seconds(pid) - before for pid, before in zip(pids, cpu, strict=True)]
            rss, peak = memory_mib(ctl.pid)
            return {
                "seconds": round(seconds, 2),
                "controller_cpu_s": round(spent[0], 2),
                "agents_cpu_s": round(sum(spent[1:]), 2),
                "controller_rss_mib": rss,
                "controller_peak_rss_mib": peak,
            }
        finally:
            await channel.close()
            for p in (ctl, *agents.values()):
                if p.returncode is None:
                    p.send_signal(signal.SIGTERM)
                    await p.wait()


async def direct_rate(tmp: Path, netns: str, prefixes: list[str]) -> float:
    config, log = write_agent_config(tmp, "direct", netns), tmp / "direct.log"
    agent = await spawn(log, "agent", "--config", str(config))
    try:
        channel = grpc.aio.insecure_channel(
            f"unix:{tmp / 'direct.sock'}", options=(("grpc.max_send_message_length", 64 << 20),)
        )
        stub = dataplane_pb2_grpc.DataplaneStub(channel)
        await serving(stub, agent, log)
        hop = c.dataplane_pb2.Adjacency(
            id=1, port=GW[0][1], gateway=ipaddress.ip_address(GW[0][0]).packed
        )
        setup = [c.dataplane_pb2.Operation(action=c.dataplane_pb2.ACTION_SET, adjacency=hop),
                 c.set_group(1, [(1, 1)])]  # fmt: skip
        await stub.Write(c.write_request(1, setup))
        batches = [
            c.write_request(1, [c.set_route(p, 1) for p in prefixes[i : i + BATCH]], i + 1)
            for i in range(0, len(prefixes), BATCH)
        ]
        started = time.perf_counter()

        async def requests():
            for b in batches:
                yield b

        async for _ in stub.StreamWrite(requests()):
            pass
        seconds = time.perf_counter() - started
        await channel.close()
        return len(prefixes) / seconds
    finally:
        agent.send_signal(signal.SIGKILL)
        await agent.wait()


async def main(
    data: Path, limit: int | None, netns: str, nodes: int, idle_seconds: float = 60.0
) -> dict:
    prefixes = table(data, limit)
    v6 = sum(1 for p in prefixes if ":" in p)
    out: dict = {"routes": len(prefixes), "ipv4": len(prefixes) - v6, "ipv6": v6}
    with tempfile.TemporaryDirectory(prefix="cor-bench-") as t:
        tmp = Path(t)
        out["agent_direct_routes_per_s"] = round(await direct_rate(tmp, netns, prefixes))
        write_agent_config(tmp, "agent", netns)
        agent_sock, ctl_sock, log = tmp / "agent.sock", tmp / "controller.sock", tmp / "agent.log"
        config = controller_config(tmp, {"n1": agent_sock})
        agent = await spawn(log, "agent", "--config", str(tmp / "agent.toml"))
        ctl = await spawn(tmp / "controller.log", "controller", "--config", str(config))
        channel = grpc.aio.insecure_channel(f"unix:{ctl_sock}")
        stub = controller_pb2_grpc.ControllerStub(channel)
        try:
            await serving(
                dataplane_pb2_grpc.DataplaneStub(grpc.aio.insecure_channel(f"unix:{agent_sock}")),
                agent, log,
            )  # fmt: skip
            await until(lambda: in_sync(stub, 0), 60)
            # 1. The full table through the controller.
            loop = asyncio.get_running_loop()
            requests = await loop.run_in_executor(None, lambda: [
                controller_pb2.ApplyRequest(routes=[intent(p, GW[:2]) for p in prefixes[i : i + BATCH]])  # noqa: E501
                for i in range(0, len(prefixes), BATCH)
            ])  # fmt: skip
            started = time.perf_counter()
            revision = 0
            for request in requests:
                revision = (await stub.Apply(request, timeout=300)).revision
            committed = time.perf_counter() - started
            await until(lambda: in_sync(stub, revision), step=0.05)
            total = time.perf_counter() - started
            out["controller_commit_routes_per_s"] = round(len(prefixes) / committed)
            out["controller_end_to_end_routes_per_s"] = round(len(prefixes) / total)
            out["controller_to_direct_ratio"] = round(
                out["controller_end_to_end_routes_per_s"] / out["agent_direct_routes_per_s"], 3
            )
            # 4. One-route Applies on the full table.
            out["route_add_p50_ms"], out["route_add_p90_ms"] = await route_add_ms(stub)
            # 6. A drift check's read of the node holding the table: Read's first message
            #    alone (head_only, as the controller asks now) beside a full Read cancelled
            #    after its first message (as it asked before): time and the agent's CPU.
            agent_channel = grpc.aio.insecure_channel(f"unix:{agent_sock}")
            reads = {
                "full_read_first_message": c.dataplane_pb2.ReadRequest(),
                "head_only_read": c.dataplane_pb2.ReadRequest(head_only=True),
            }
            for label, request in reads.items():
                cpu, started = cpu_seconds(agent.pid), time.perf_counter()
                call = dataplane_pb2_grpc.DataplaneStub(agent_channel).Read(request, timeout=300)
                await call.read()
                call.cancel()
                out[f"drift_check_{label}_ms"] = round((time.perf_counter() - started) * 1000, 1)
                await asyncio.sleep(0.5)  # what the cancelled read still had running
                out[f"drift_check_{label}_agent_cpu_ms"] = round(
                    (cpu_seconds(agent.pid) - cpu) * 1000, 1
                )
            await agent_channel.close()
            # 7. Idle with the tables installed: what agent and controller spend on their own
            #    (drift checks, counters, members' samples).
            if idle_seconds:
                cpu = cpu_seconds(agent.pid), cpu_seconds(ctl.pid)
                await asyncio.sleep(idle_seconds)
                for name, process, before in zip(
                    ("agent", "controller"), (agent, ctl), cpu, strict=True
                ):
                    spent = cpu_seconds(process.pid) - before
                    out[f"idle_{name}_cpu_percent"] = round(100 * spent / idle_seconds, 2)
                    out[f"idle_{name}_peak_rss_mib"] = memory_mib(process.pid)[1]
            # 2. Re-pointing groups: 1 k routes on GW[2:4], the full table on GW[0:2].
            small = [f"198.19.{i // 64}.{(i % 64) * 4}/30" for i in range(1000)]
            r = await stub.Apply(
                controller_pb2.ApplyRequest(routes=[intent(p, GW[2:]) for p in small])
            )
            await until(lambda: in_sync(stub, r.revision))
            for label, (gw, port) in (("1k", GW[3]), (f"{len(prefixes) // 1000}k", GW[1])):
                started = time.perf_counter()
                r = await stub.SetNextHopState(controller_pb2.SetNextHopStateRequest(
                    gateway=ipaddress.ip_address(gw).packed, port=port, drained=True))  # fmt: skip
                await until(lambda r=r: in_sync(stub, r.revision), step=0.001)
                out[f"repoint_group_of_{label}_routes_ms"] = round(
                    (time.perf_counter() - started) * 1000, 2
                )
            # 3. The agent killed and restarted: the controller restores the whole table.
            agent.send_signal(signal.SIGKILL)
            await agent.wait()
            await until(lambda: _disconnected(stub), 60)
            agent = await spawn(log, "agent", "--config", str(tmp / "agent.toml"))
            started = time.perf_counter()
            status = await until(lambda: _resynced(stub, agent, log))
            out["restore_after_agent_restart_s"] = round(time.perf_counter() - started, 2)
            out["restore_full_sync_s"] = round(status.last_full_sync_seconds, 2)
            out["restore_operations"] = status.last_full_sync_operations
        finally:
            await channel.close()
            for p in (ctl, agent):
                if p.returncode is None:
                    p.send_signal(signal.SIGTERM)
                    await p.wait()
    # 5. Fan-out, FIB-only: one node, then `nodes`.
    if nodes:
        one = await fanout(prefixes, 1)
        many = await fanout(prefixes, nodes)
        out["fanout_1_node_s"] = one["seconds"]
        out[f"fanout_{nodes}_nodes_s"] = many["seconds"]
        out["fanout_ratio"] = round(many["seconds"] / one["seconds"], 2)
        for label, run in (("1_node", one), (f"{nodes}_nodes", many)):
            out[f"fanout_controller_cpu_s_{label}"] = run["controller_cpu_s"]
            out[f"fanout_agents_cpu_s_{label}"] = run["agents_cpu_s"]
        out[f"controller_rss_mib_{nodes}_nodes"] = many["controller_rss_mib"]
        out[f"controller_peak_rss_mib_{nodes}_nodes"] = many["controller_peak_rss_mib"]
        one = await fanout(prefixes, 1, nice=AGENT_NICE)
        many = await fanout(prefixes, nodes, nice=AGENT_NICE)
        out["fanout_niced_1_node_s"] = one["seconds"]
        out[f"fanout_niced_{nodes}_nodes_s"] = many["seconds"]
        out["fanout_niced_ratio"] = round(many["seconds"] / one["seconds"], 2)
    return out


async def _disconnected(stub):
    s = await stub.GetNodeStatus(controller_pb2.GetNodeStatusRequest(name="n1"))
    return not s.connected


async def _resynced(stub, agent: asyncio.subprocess.Process, log: Path):
    if agent.returncode is not None:  # a restarted agent that failed to start
        raise SystemExit(f"the restarted agent exited: {tail(log)}")
    s = await stub.GetNodeStatus(controller_pb2.GetNodeStatusRequest(name="n1"))
    return s if s.in_sync and s.connected and s.last_full_sync_operations > 0 else None


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        prog="python -m benches.controller_load", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--limit", type=int, help="routes per family (default: all)")
    parser.add_argument("--nodes", type=int, default=8, help="agents of the fan-out (0: none)")
    parser.add_argument("--idle", type=float, default=60.0,
                        help="seconds of step 7, idle with the tables (0: skip)")  # fmt: skip
    args = parser.parse_args()
    if not 0 <= args.idle <= 3600:
        parser.error("--idle is 0 to 3600 seconds")
    with Namespace() as ns:
        for gw, _ in GW:  # the far end of the veth answers for the gateways
            subprocess.run(["ip", "-n", ns.name, "addr", "add", f"{gw}/24", "dev", PORTS[1]],
                           check=True, capture_output=True)  # fmt: skip
        result = asyncio.run(main(args.data, args.limit, ns.name, args.nodes, args.idle))
        print(json.dumps(result, indent=1))
