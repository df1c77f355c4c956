"""Routes per second programmed over gRPC, end to end: a client streams the full IPv4 table
(StreamWrite, batches of --batch routes) to a `corridor agent` process on a Unix socket, the
agent running the engine on a veth pair in a namespace of its own (`cor-b<pid>`, removed
afterwards; root), and the clock stops at the last acknowledgement, which the agent sends
once the routes are in the live tables the workers read. The ceiling is measured in the
same run: the engine's own load rate, the same table applied to a Fib directly (one Batch,
no gRPC, no Python per route).

    .venv/bin/python -m benches.agent_load [--runs 3] [--batch 10000] [--table FILE]

Prints a Markdown table; --out FILE also writes it there.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

from benches.harness.agent import (
    ELECTION,
    PORTS,
    Namespace,
    agent_config,
    launch_agent,
    route_requests,
    stop_agent,
)
from benches.harness.tables import DATA, TABLE4, read_prefixes
from corridor import _dataplane
from corridor.agent import client as c
from corridor.v1 import dataplane_pb2, dataplane_pb2_grpc

TABLE = DATA / TABLE4
FIB = {"v4_routes": 2_000_000, "v6_routes": 1000}


def engine_load(prefixes: list[str]) -> float:
    """Seconds for Fib.apply of the whole table (parsing the text included)."""
    fib = _dataplane.Fib(**FIB)
    setup = _dataplane.Batch()
    setup.set_adjacency(1, 0, 0, "02:00:00:00:00:01", "02:00:00:00:00:02")
    setup.set_group(1, [(1, 1)])
    fib.apply(setup)
    text = "\n".join(prefixes)
    started = time.perf_counter()
    batch = _dataplane.Batch()
    batch.add_routes_text(text, 1)
    fib.apply(batch)
    took = time.perf_counter() - started
    assert fib.stats()["v4_routes"] == len(prefixes)
    return took


async def grpc_load(sock: Path, batches: list[dataplane_pb2.WriteRequest], total: int) -> float:
    options = (("grpc.max_send_message_length", 64 << 20),)
    async with grpc.aio.insecure_channel(f"unix:{sock}", options=options) as channel:
        stub = dataplane_pb2_grpc.DataplaneStub(channel)
        setup = [
            c.set_adjacency(1, PORTS[0], 0, "02:00:00:00:00:01", "02:00:00:00:00:02"),
            c.set_group(1, [(1, 1)]),
        ]
        await stub.Write(c.write_request(ELECTION, setup), timeout=10)
        started = time.perf_counter()
        applied = 0
        async for reply in stub.StreamWrite(iter(batches), timeout=600):
            applied += reply.operations
        took = time.perf_counter() - started
        if applied != total:
            raise SystemExit(f"the agent applied {applied} of {total} routes")
        return took


def start_agent(workdir: Path, netns: str) -> tuple[subprocess.Popen, Path]:
    sock = workdir / "agent.sock"
    config = workdir / "agent.toml"
    config.write_text(agent_config(netns, sock, FIB, {port: [] for port in PORTS}))
    process = launch_agent(config, subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not sock.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the agent did not start: {process.stderr.read().decode()}")
        time.sleep(0.05)
    return process, sock


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benches.agent_load", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--table", type=Path, default=TABLE)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if not args.table.is_file():
        raise SystemExit(f"table not found: {args.table} (set CORRIDOR_DATA)")
    prefixes = list(read_prefixes(args.table))
    total = len(prefixes)
    engine = [engine_load(prefixes) for _ in range(args.runs)]
    started = time.perf_counter()
    batches = route_requests(prefixes, args.batch)
    build = time.perf_counter() - started
    over_grpc = []
    with Namespace() as ns:
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory(prefix="corridor-bench-") as d:
                process, sock = start_agent(Path(d), ns.name)
                try:
                    over_grpc.append(asyncio.run(grpc_load(sock, batches, total)))
                finally:
                    stop_agent(process)
    ceiling = statistics.median(engine)
    rows = [
        ("engine: Fib.apply of the table (ceiling)", ceiling, engine),
        (f"gRPC StreamWrite, batches of {args.batch:,} (client to live tables)",
         statistics.median(over_grpc), over_grpc),
    ]  # fmt: skip
    lines = [
        f"Full IPv4 table `{args.table.name}`: {total:,} routes; median of {args.runs} runs"
        f" on {os.cpu_count()} CPU(s); building the requests took {build:.2f} s (not timed).",
        "",
        "| path | seconds | routes/s | runs (s) | of ceiling |",
        "|---|---:|---:|---|---:|",
    ]
    for name, seconds, runs in rows:
        lines.append(
            f"| {name} | {seconds:.2f} | {total / seconds:,.0f} | "
            f"{', '.join(f'{r:.2f}' for r in runs)} | {ceiling / seconds:.0%} |"
        )
    target = "met" if total / rows[1][1] >= 100_000 else "missed"
    lines += ["", f"Target 100 k routes/s (full table under 10 s) over gRPC: {target}."]
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
