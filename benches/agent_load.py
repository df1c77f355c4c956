"""Routes per second programmed over gRPC, end to end: a client streams the full IPv4 table
(StreamWrite, batches of --batch routes) to a `corridor agent` process on a Unix socket, the
agent running the engine on a veth pair in a namespace of its own (`cor-b<pid>`, removed
afterwards; root), and the clock stops at the last acknowledgement, which the agent sends
once the routes are in the live tables the workers read. The ceiling is measured in the
same run: the engine's own load rate, the same table applied to a Fib directly (one Batch,
no gRPC, no Python per route).

    .venv/bin/python benches/agent_load.py [--runs 3] [--batch 10000] [--table FILE]

Prints a Markdown table; --out FILE also writes it there.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "control"))

import grpc  # noqa: E402

from corridor import _dataplane  # noqa: E402
from corridor.agent import client as c  # noqa: E402
from corridor.v1 import common_pb2, dataplane_pb2, dataplane_pb2_grpc  # noqa: E402

DATA = Path(os.environ.get("CORRIDOR_DATA", REPO.parent / "shared" / "data"))
TABLE = DATA / "ipv4-routeviews-2024-04-06.txt.gz"
ELECTION = 1
PORTS = ("bench0", "bench1")
CONFIG = """
workers = 1
netns = "{netns}"
[listen]
unix = "{sock}"
[fib]
v4_routes = 2000000
v6_routes = 1000
[[ports]]
name = "{p0}"
[[ports]]
name = "{p1}"
"""


def read_table(path: Path) -> list[str]:
    with gzip.open(path, "rt") as f:
        return [line.split(maxsplit=1)[0] for line in f if line.strip()]


def engine_load(prefixes: list[str]) -> float:
    """Seconds for Fib.apply of the whole table (parsing the text included)."""
    fib = _dataplane.Fib(v4_routes=2_000_000, v6_routes=1000)
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


def requests(prefixes: list[str], batch: int) -> list[dataplane_pb2.WriteRequest]:
    out = []
    forward, set_ = dataplane_pb2.ROUTE_KIND_FORWARD, dataplane_pb2.ACTION_SET
    for start in range(0, len(prefixes), batch):
        request = c.write_request(ELECTION, [], batch_id=len(out) + 1)
        add = request.operations.add
        for text in prefixes[start : start + batch]:
            address, _, length = text.partition("/")
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            op = add(action=set_)
            op.route.prefix.CopyFrom(
                common_pb2.IpPrefix(address=socket.inet_pton(family, address), length=int(length))
            )
            op.route.kind = forward
            op.route.next_hop_group_id = 1
        out.append(request)
    return out


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


class Namespace:
    """`cor-b<pid>` with a veth pair for the engine's two ports; removed on exit."""

    def __init__(self) -> None:
        self.name = f"cor-b{os.getpid()}"

    def __enter__(self) -> Namespace:
        if os.geteuid() != 0:
            raise SystemExit("agent_load needs root: the agent runs the engine on a veth pair")
        run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
        run("ip", "netns", "add", self.name)
        try:
            run("ip", "-n", self.name, "link", "add", PORTS[0], "type", "veth", "peer", "name",
                PORTS[1])  # fmt: skip
            for port in PORTS:
                run("ip", "-n", self.name, "link", "set", port, "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


def start_agent(workdir: Path, netns: str) -> tuple[subprocess.Popen, Path]:
    sock = workdir / "agent.sock"
    config = workdir / "agent.toml"
    config.write_text(CONFIG.format(sock=sock, netns=netns, p0=PORTS[0], p1=PORTS[1]))
    env = dict(os.environ, PYTHONPATH=str(REPO / "control"))
    process = subprocess.Popen(
        [sys.executable, "-m", "corridor", "agent", "--config", str(config)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not sock.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the agent did not start: {process.stderr.read().decode()}")
        time.sleep(0.05)
    return process, sock


def stop_agent(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, default=TABLE)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if not args.table.is_file():
        raise SystemExit(f"table not found: {args.table} (set CORRIDOR_DATA)")
    prefixes = read_table(args.table)
    total = len(prefixes)
    engine = [engine_load(prefixes) for _ in range(args.runs)]
    started = time.perf_counter()
    batches = requests(prefixes, args.batch)
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
