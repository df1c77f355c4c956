"""Two controllers on one etcd store (a real one-member etcd), in this process, with real
agents: one leads and writes to the agents; the other follows, serves reads from what the
store holds (routes, watch, stats, node status, who leads) and refuses writes with
FAILED_PRECONDITION naming the leader. When the leader stops, the follower takes the lead
with a higher election id, reads each node and writes nothing to nodes in sync."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import grpc
import pytest

from controller_support import (
    LocalAgent,
    controller_document,
    controller_stub,
    eventually,
    key,
    route,
    wait_in_sync,
)
from corridor.v1 import controller_pb2
from etcd_support import EtcdCluster, free_port

GW = ("198.18.0.2", "cor-c0", 0, 1)


def document(tmp: Path, name: str, agents: dict[str, str], endpoints: list[str]) -> dict:
    d = tmp / name
    d.mkdir()
    port = free_port()
    document = controller_document(d, agents)
    document["listen"] = {"unix": str(d / "controller.sock"), "tcp": f"127.0.0.1:{port}"}
    document["store"] = {"backend": "etcd", "endpoints": endpoints, "lease_seconds": 2}
    return document


async def start(document: dict, tmp: Path):
    from corridor.controller.config import parse
    from corridor.controller.main import start_controller

    return await start_controller(parse(document, base=tmp))


async def leadership(stub) -> controller_pb2.Leadership:
    return (await stub.GetStats(controller_pb2.GetStatsRequest(), timeout=10)).leadership


@pytest.mark.parametrize("members", [1, 3])
async def test_one_leads_the_other_follows_reads_and_refuses_writes(
    tmp_path: Path, members: int
) -> None:
    cluster = EtcdCluster(tmp_path / "etcd", members).start()
    a = await LocalAgent(tmp_path / "a.sock").start()
    b = await LocalAgent(tmp_path / "b.sock").start()
    agents = {"a": a.address, "b": b.address}
    first = await start(document(tmp_path, "one", agents, cluster.endpoints), tmp_path)
    c1, s1 = controller_stub(tmp_path / "one" / "controller.sock")
    second = third = None
    channels = [c1]
    try:
        await eventually(lambda: _leads(s1), what="the first controller leading")
        second = await start(document(tmp_path, "two", agents, cluster.endpoints), tmp_path)
        c2, s2 = controller_stub(tmp_path / "two" / "controller.sock")
        channels.append(c2)
        one, two = await leadership(s1), await leadership(s2)
        assert (one.backend, one.leading, two.leading) == ("etcd", True, False)
        assert two.leader == one.name == first.controller.advertise
        assert one.election_id >= 1 and two.election_id == 0
        assert abs(two.leader_since.ToNanoseconds() / 1e9 - time.time()) < 600

        # Writes to the follower: refused, naming the leader; nothing committed.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await s2.Apply(controller_pb2.ApplyRequest(routes=[route("198.18.9.0/24", GW)]))
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert f"the leader is {one.name}" in refused.value.details()
        node = controller_pb2.Node(name="c", address=f"unix:{tmp_path / 'c.sock'}")
        for call in (
            s2.RegisterNode(controller_pb2.RegisterNodeRequest(node=node)),
            s2.DeregisterNode(controller_pb2.DeregisterNodeRequest(name="a")),
            s2.Delete(controller_pb2.DeleteRequest(routes=[key("198.18.9.0/24")])),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION

        # The follower watches and lists what the leader commits.
        watch = s2.Watch(controller_pb2.WatchRequest())
        snapshot = await watch.read()
        reply = await s1.Apply(
            controller_pb2.ApplyRequest(
                routes=[route("198.18.9.0/24", GW), route("2001:db8:9::/48", GW, node="a")]
            ),
            timeout=30,
        )
        assert snapshot is not None
        seen = []
        async with asyncio.timeout(30):
            while len(seen) < 2:
                message = await watch.read()
                seen += [r for r in message.set]
        watch.cancel()
        listed = await s2.ListRoutes(controller_pb2.ListRoutesRequest(), timeout=10)
        assert len(listed.routes) == 2
        stats = await s2.GetStats(controller_pb2.GetStatsRequest(), timeout=10)
        assert stats.revision == reply.revision
        assert stats.intent.ipv4_routes == 1 and stats.intent.ipv6_routes == 1
        followed = await s2.GetNodeStatus(controller_pb2.GetNodeStatusRequest(name="a"))
        assert followed.leadership.leader == one.name and not followed.leadership.leading
        await wait_in_sync(s1, "a", reply.revision)
        await wait_in_sync(s1, "b", reply.revision)
        generations = {n: (await agent.routes(), await _generation(agent)) for n, agent in
                       (("a", a), ("b", b))}  # fmt: skip

        # The leader stops (it lets the lead go): the follower leads with a higher id,
        # reads each node and writes nothing (they are in sync).
        await first.stop(0)
        first = None
        await eventually(lambda: _leads(s2), within=30, what="the second controller leading")
        two = await leadership(s2)
        assert two.election_id > one.election_id and two.leader == two.name
        for n in ("a", "b"):
            status = await wait_in_sync(s2, n, reply.revision)
            assert status.last_full_sync_operations == 0, status
            assert status.leadership.leading
        for n, agent in (("a", a), ("b", b)):
            assert (await agent.routes(), await _generation(agent)) == generations[n]
        later = await s2.Apply(
            controller_pb2.ApplyRequest(routes=[route("198.18.10.0/24", GW)]), timeout=30
        )
        assert later.revision == reply.revision + 1
        await wait_in_sync(s2, "a", later.revision)
        assert "198.18.10.0/24" in await a.routes()

        # The CLI pointed at either controller says who leads and since when.
        from test_controller_cli import corridor

        follower = f"unix:{tmp_path / 'three' / 'controller.sock'}"
        leader_sock = f"unix:{tmp_path / 'two' / 'controller.sock'}"
        code, out, err = await corridor(leader_sock, "stats")
        assert code == 0, err
        assert f"leader: {two.name} leads (etcd store) since " in out, out
        code, out, err = await corridor(leader_sock, "node", "status", "a", "--json")
        shown = json.loads(out)["leadership"]
        assert (shown["leading"], shown["leader"], shown["backend"]) == (True, two.name, "etcd")

        # A third joins as a follower of the second.
        third = await start(document(tmp_path, "three", agents, cluster.endpoints), tmp_path)
        c3, s3 = controller_stub(tmp_path / "three" / "controller.sock")
        channels.append(c3)
        three = await leadership(s3)
        assert not three.leading and three.leader == two.name
        assert (await s3.GetStats(controller_pb2.GetStatsRequest())).revision == later.revision
        # Metrics: who leads, as each controller sees it.
        from prometheus_client import generate_latest

        led = generate_latest(second.metrics.registry).decode()
        followed = generate_latest(third.metrics.registry).decode()
        assert "corridor_controller_leading 1.0" in led, led
        assert "corridor_controller_leading 0.0" in followed, followed
        for text in (led, followed):
            assert f'corridor_controller_leader{{backend="etcd",leader="{two.name}"}} 1.0' in text
        code, out, err = await corridor(follower, "node", "status", "a")
        assert code == 0, err
        assert re.search(rf"^leader +{re.escape(two.name)} leads since .* follows", out, re.M), out
        code, out, err = await corridor(
            follower, "route", "add", "198.18.11.0/24", "--via", "198.18.0.2,cor-c0"
        )
        assert code == 1 and f"the leader is {two.name}" in err, (code, err)
    finally:
        for channel in channels:
            await channel.close()
        for running in (first, second, third):
            if running is not None:
                await running.stop(0)
        await a.stop()
        await b.stop()
        cluster.stop()


async def _leads(stub) -> bool:
    try:
        return (await leadership(stub)).leading
    except grpc.aio.AioRpcError:
        return False


async def _generation(agent: LocalAgent) -> int:
    from corridor.agent import client as agent_client

    return (await agent_client.read(agent.stub)).generation


async def test_only_the_leader_listens_for_zebra_and_a_new_leader_keeps_bgp_routes(
    tmp_path: Path,
) -> None:
    """BGP routes are the leader's soft state: only the leader listens for zebra; after a
    failover the new leader adopts what the node holds (nothing is withdrawn) and takes
    zebra's connection on its own listener."""
    from fpm_support import frame, route_message

    cluster = EtcdCluster(tmp_path / "etcd", 1).start()
    a = await LocalAgent(tmp_path / "a.sock").start()
    runs = []
    writers = []
    try:
        for name in ("one", "two"):
            d = document(tmp_path, name, {"a": a.address}, cluster.endpoints)
            d["fpm"] = [{"node": "a", "listen": "127.0.0.1:0"}]
            runs.append(await start(d, tmp_path))
            if name == "one":
                await eventually(
                    lambda: _true(runs[0].controller.leading), what="the first leading"
                )
        first, second = (r.controller for r in runs)
        assert first.feeds is not None and second.feeds is None  # the follower binds nothing

        async def zebra(controller, prefix: str) -> None:
            ((_, _, port),) = controller.feeds.listeners
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writers.append(writer)
            writer.write(frame(route_message(prefix, rtype=6)))
            await writer.drain()

        async def holds(prefix: str) -> bool:
            return (await a.routes()).get(prefix) == (2, 0)

        await zebra(first, "198.18.64.0/24")
        await eventually(lambda: holds("198.18.64.0/24"), what="zebra's route on the node")
        await runs[0].stop(0)
        runs[0] = None
        await eventually(lambda: _true(second.leading), what="the second leading")
        c2, s2 = controller_stub(tmp_path / "two" / "controller.sock")
        try:
            await wait_in_sync(s2, "a", second.state.revision)
        finally:
            await c2.close()
        assert await holds("198.18.64.0/24"), "the new leader withdrew a BGP route"
        assert second.feeds is not None
        await zebra(second, "198.18.65.0/24")
        await eventually(lambda: holds("198.18.65.0/24"), what="zebra's route via the new leader")
        assert await holds("198.18.64.0/24")
    finally:
        for writer in writers:
            writer.close()
        for running in runs:
            if running is not None:
                await running.stop(0)
        await a.stop()
        cluster.stop()


async def _true(value: bool) -> bool:
    return value


class CutLink:
    """A TCP relay to one etcd member that the test can cut: the controller behind it loses
    etcd while the others keep it (a leader cut off by the network)."""

    def __init__(self, target: str) -> None:
        self.host, port = target.rsplit(":", 1)
        self.port = int(port)
        self.server: asyncio.base_events.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _relay(self, reader, writer) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        self.writers += [writer, up_writer]

        async def pipe(src, dst) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()


async def test_a_leader_cut_off_from_etcd_steps_down_before_a_follower_leads(
    tmp_path: Path,
) -> None:
    cluster = EtcdCluster(tmp_path / "etcd", 1).start()
    a = await LocalAgent(tmp_path / "a.sock").start()
    link = CutLink(cluster.endpoints[0])
    runs = []
    try:
        relayed = await link.start()
        runs.append(await start(document(tmp_path, "one", {"a": a.address}, [relayed]), tmp_path))
        first = runs[0].controller
        await eventually(lambda: _true(first.leading), what="the first leading")
        runs.append(
            await start(document(tmp_path, "two", {"a": a.address}, cluster.endpoints), tmp_path)
        )
        second = runs[1].controller
        c1, s1 = controller_stub(tmp_path / "one" / "controller.sock")
        c2, s2 = controller_stub(tmp_path / "two" / "controller.sock")
        try:
            reply = await s1.Apply(
                controller_pb2.ApplyRequest(routes=[route("198.18.9.0/24", GW)]), timeout=30
            )
            await wait_in_sync(s1, "a", reply.revision)
            held = await a.routes()
            await link.cut()
            cut = time.monotonic()
            # The old leader must have stepped down by the time the new one leads.
            both = None
            while time.monotonic() - cut < 60:
                if second.leading:
                    both = first.leading
                    break
                await asyncio.sleep(0.01)
            led = time.monotonic() - cut
            print(f"\nleader cut off from etcd: a follower led after {led:.2f} s (lease 2 s)")
            assert second.leading, "no follower took the lead in 60 s"
            assert both is False, "two controllers led at once"
            assert await a.routes() == held  # forwarding state untouched meanwhile
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await s1.Apply(controller_pb2.ApplyRequest(routes=[route("198.18.10.0/24", GW)]))
            assert refused.value.code() in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.FAILED_PRECONDITION,
            )
            later = await s2.Apply(
                controller_pb2.ApplyRequest(routes=[route("198.18.11.0/24", GW)]), timeout=30
            )
            await wait_in_sync(s2, "a", later.revision)
            assert "198.18.11.0/24" in await a.routes()
            assert "198.18.10.0/24" not in await a.routes()
        finally:
            await c1.close()
            await c2.close()
    finally:
        for running in runs:
            await running.stop(0)
        await a.stop()
        cluster.stop()


async def test_a_leader_whose_loop_is_busy_past_its_lease_keeps_the_lead(tmp_path: Path) -> None:
    """The lease is renewed off the event loop: a loop held for twice the lease (a large batch
    on a machine short of CPU) costs no lead while etcd answers."""
    cluster = EtcdCluster(tmp_path / "etcd", 1).start()
    a = await LocalAgent(tmp_path / "a.sock").start()
    running = await start(document(tmp_path, "one", {"a": a.address}, cluster.endpoints), tmp_path)
    controller = running.controller
    channel, stub = controller_stub(tmp_path / "one" / "controller.sock")
    try:
        await eventually(lambda: _true(controller.leading), what="the controller leading")
        before = await leadership(stub)
        time.sleep(2 * 2 + 1)  # noqa: ASYNC251 (the point: the loop held for 2.5 leases)
        await asyncio.sleep(0.5)  # the loop's own timers run late, then catch up
        after = await leadership(stub)
        assert after.leading, "the controller lost the lead while its loop was busy"
        assert (after.election_id, after.leader_since) == (before.election_id, before.leader_since)
        reply = await stub.Apply(
            controller_pb2.ApplyRequest(routes=[route("198.18.12.0/24", GW)]), timeout=30
        )
        await wait_in_sync(stub, "a", reply.revision)
    finally:
        await channel.close()
        await running.stop(0)
        await a.stop()
        cluster.stop()


async def test_a_controller_says_it_leads_only_once_its_nodes_are_there(tmp_path: Path) -> None:
    """Taking the lead commits the nodes of the configuration and starts their sessions;
    until then the controller must not say it leads: a leader answers ListNodes from its
    sessions, and one that said so early listed no nodes (seen as a flaky test under
    load). Watched here at every turn of the loop while the lead is taken."""
    cluster = EtcdCluster(tmp_path / "etcd", 1).start()
    a = await LocalAgent(tmp_path / "a.sock").start()
    try:
        doc = document(tmp_path, "c1", {"a": a.address}, cluster.endpoints)
        running = await start(doc, tmp_path)
        try:
            c = running.controller
            deadline = time.monotonic() + 30
            while not c.leading:
                assert time.monotonic() < deadline, "no lead within 30 s"
                await asyncio.sleep(0)
            # What ListNodes answers from on a leader, read in the turn the lead was seen.
            assert sorted(c.sessions) == ["a"], f"said it leads with the nodes {sorted(c.sessions)}"
        finally:
            await running.stop(0)
    finally:
        await a.stop()
        cluster.stop()
