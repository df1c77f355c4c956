"""Many watchers on a large intent: 200 Watch calls on 100 000 routes each get their whole
snapshot, and Apply stays quick while the snapshots go out (they are encoded once, off the
event loop, and shared). Run as a script with --full for the figure on the full tables."""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import statistics
import sys
import time
from pathlib import Path

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from corridor.v1 import common_pb2, controller_pb2

WATCHERS = 200
ROUTES = 100_000
CONTROL = str(Path(__file__).resolve().parent.parent / "control")
HOP = controller_pb2.NextHop(gateway=bytes([198, 18, 0, 2]), port="cor-c0", weight=1)


def _header_class():
    """WatchResponse with its routes left as bytes: a watcher counts 100 000 routes without
    building them (the test process must not be what is slow)."""
    fd = descriptor_pb2.FileDescriptorProto(name="watch_load_test.proto", package="wlt")
    m = fd.message_type.add(name="WatchCount")
    f = descriptor_pb2.FieldDescriptorProto
    m.field.add(name="revision", number=1, type=f.TYPE_UINT64, label=f.LABEL_OPTIONAL)
    m.field.add(name="snapshot", number=2, type=f.TYPE_BOOL, label=f.LABEL_OPTIONAL)
    m.field.add(name="snapshot_end", number=3, type=f.TYPE_BOOL, label=f.LABEL_OPTIONAL)
    m.field.add(name="set", number=4, type=f.TYPE_BYTES, label=f.LABEL_REPEATED)
    m.field.add(name="deleted", number=5, type=f.TYPE_BYTES, label=f.LABEL_REPEATED)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("wlt.WatchCount"))


WatchCount = _header_class()


def routes_v4(count: int) -> list[controller_pb2.RouteIntent]:
    """`count` /32 routes in 198.18.0.0/15 (131 072 of them at most)."""
    assert count <= 1 << 17
    base = (198 << 24) | (18 << 16)
    return [
        controller_pb2.RouteIntent(
            prefix=common_pb2.IpPrefix(address=(base + i).to_bytes(4), length=32),
            kind=1,
            next_hops=[HOP],
        )
        for i in range(count)
    ]


def table_routes(path: Path) -> list[controller_pb2.RouteIntent]:
    import ipaddress

    out = []
    with gzip.open(path, "rt") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            network = ipaddress.ip_network(line.split()[0], strict=False)
            hop = (
                HOP
                if network.version == 4
                else controller_pb2.NextHop(
                    gateway=bytes.fromhex("20010db8" + "0" * 23 + "2"), port="cor-c0", weight=1
                )
            )
            out.append(
                controller_pb2.RouteIntent(
                    prefix=common_pb2.IpPrefix(
                        address=network.network_address.packed, length=network.prefixlen
                    ),
                    kind=1,
                    next_hops=[hop],
                )
            )
    return out


async def spawn_controller(tmp: Path) -> asyncio.subprocess.Process:
    from controller_support import controller_document, toml

    config = tmp / "controller.toml"
    document = controller_document(tmp, {})
    del document["nodes"]  # intent alone: no node to program
    config.write_text(toml(document))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (CONTROL, env.get("PYTHONPATH")) if p)
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "corridor", "controller", "--config", str(config), env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


async def watch_load(
    tmp: Path, routes: list[controller_pb2.RouteIntent], watchers: int, deadline: float
) -> dict:
    """Starts a controller process, applies `routes`, measures one-route Apply latency idle
    and while `watchers` Watch calls take their snapshots; returns what it saw."""
    process = await spawn_controller(tmp)
    channel = grpc.aio.insecure_channel(
        f"unix:{tmp / 'controller.sock'}",
        options=(("grpc.max_receive_message_length", 64 << 20),
                 ("grpc.max_send_message_length", 64 << 20)),
    )  # fmt: skip
    apply = channel.unary_unary(
        "/corridor.v1.Controller/Apply",
        request_serializer=controller_pb2.ApplyRequest.SerializeToString,
        response_deserializer=controller_pb2.ApplyResponse.FromString,
    )
    watch = channel.unary_stream(
        "/corridor.v1.Controller/Watch",
        request_serializer=controller_pb2.WatchRequest.SerializeToString,
        response_deserializer=WatchCount.FromString,
    )
    try:
        async with asyncio.timeout(60):
            while True:
                if process.returncode is not None:
                    raise AssertionError(f"the controller exited with {process.returncode}")
                try:
                    await apply(controller_pb2.ApplyRequest(routes=routes[:1]), timeout=1)
                    break
                except grpc.aio.AioRpcError:
                    await asyncio.sleep(0.1)
        loaded = time.perf_counter()
        for start in range(0, len(routes), 100_000):
            await apply(controller_pb2.ApplyRequest(routes=routes[start : start + 100_000]),
                        timeout=600)  # fmt: skip
        loaded = time.perf_counter() - loaded
        probe_prefix = common_pb2.IpPrefix(
            address=bytes.fromhex("20010db8ffff" + "0" * 20), length=48
        )

        def probe(i: int) -> controller_pb2.ApplyRequest:
            # One route, blackhole and unreachable in turn: every probe is a commit, and
            # intent holds one route more than `routes` whenever a watcher starts.
            kind = 2 + i % 2
            return controller_pb2.ApplyRequest(
                routes=[controller_pb2.RouteIntent(prefix=probe_prefix, kind=kind)]
            )

        async def timed(i: int) -> float:
            started = time.perf_counter()
            await apply(probe(i), timeout=120)
            return time.perf_counter() - started

        idle = [await timed(i) for i in range(30)]

        started = time.perf_counter()
        firsts: list[float] = []
        snapshots: list[int] = []
        changes: list[set[int]] = [set() for _ in range(watchers)]
        done = asyncio.Event()
        heard = asyncio.Event()  # every watcher heard the revision in `target`
        target: list[int] = []

        async def watcher(n: int) -> None:
            count = 0
            first = True
            async for message in watch(controller_pb2.WatchRequest()):
                if first:
                    firsts.append(time.perf_counter() - started)
                    first = False
                if message.snapshot:
                    count += len(message.set)
                    if message.snapshot_end:
                        snapshots.append(count)
                        if len(snapshots) == watchers:
                            done.set()
                else:
                    changes[n].add(message.revision)
                    if target and all(target[0] in c for c in changes):
                        heard.set()

        tasks = [asyncio.create_task(watcher(n)) for n in range(watchers)]
        busy = []
        i = 100
        try:
            async with asyncio.timeout(deadline):
                while not done.is_set():
                    busy.append(await timed(i))
                    i += 1
                    failed = [t for t in tasks if t.done() and t.exception() is not None]
                    if failed:
                        raise failed[0].exception()
                snapshot_seconds = time.perf_counter() - started
                # After its snapshot, each watcher hears every commit.
                last = await apply(probe(i), timeout=120)
                target.append(last.revision)
                if not all(last.revision in c for c in changes):  # some heard it already
                    await heard.wait()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return {
            "routes": len(routes),
            "loaded_seconds": loaded,
            "snapshots": snapshots,
            "first_message_seconds": max(firsts),
            "snapshot_seconds": snapshot_seconds,
            "idle_ms": statistics.median(idle) * 1e3,
            "busy_ms": statistics.median(busy) * 1e3,
            "busy_max_ms": max(busy) * 1e3,
            "probes": len(busy),
        }
    finally:
        await channel.close()
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)


async def test_200_watchers_on_100k_routes_get_their_snapshots_and_apply_stays_quick(
    tmp_path: Path,
) -> None:
    result = await watch_load(tmp_path, routes_v4(ROUTES), WATCHERS, deadline=240)
    print(result)
    assert result["snapshots"] == [ROUTES + 1] * WATCHERS, result  # the routes and the first probe
    # Apply is not held behind the snapshots: while 200 of them stream, one-route Applies keep
    # committing, each a small part of the time the snapshots take. Both are measured under
    # the same load, so a busy machine slows them alike (a bound on the idle latency did not:
    # it failed now and then on a loaded machine). Before the fix an Apply waited for the
    # snapshots' encoding: a handful of probes, each about as long as all the snapshots.
    assert result["probes"] >= 5, result
    assert result["busy_ms"] <= result["snapshot_seconds"] * 1e3 / 5, result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Watch under load, as a figure")
    parser.add_argument("--full", action="store_true", help="the full IPv4 and IPv6 tables")
    parser.add_argument("--watchers", type=int, default=WATCHERS)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import tempfile

    data = Path(
        os.environ.get("CORRIDOR_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
    )
    with tempfile.TemporaryDirectory() as tmp:
        routes = (
            table_routes(data / "ipv4-routeviews-2024-04-06.txt.gz")
            + table_routes(data / "ipv6-ris-2022-05-27.txt.gz")
            if args.full else routes_v4(ROUTES)
        )  # fmt: skip
        import resource

        result = asyncio.run(watch_load(Path(tmp), routes, args.watchers, deadline=3600))
        result["snapshots"] = sorted(set(result["snapshots"]))
        usage = resource.getrusage(resource.RUSAGE_SELF)
        result["client_cpu_seconds"] = usage.ru_utime + usage.ru_stime
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        result["controller_cpu_seconds"] = usage.ru_utime + usage.ru_stime
        print(result)
