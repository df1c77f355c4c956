"""Member source filters (BCP 38) through the controller, on each store backend, against
a real agent served in this process: `SetMemberFilter` stores the filter and the node's
session writes it to the agent with the member; a restarted controller writes what it
stored to a fresh agent; malformed requests are refused with nothing stored or sent; the
CLI (`corridor member filter`) sets, removes and lists it, and refuses bad prefixes
before sending anything."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from controller_support import (
    LocalAgent,
    controller_document,
    controller_stub,
    one_node,
    start_controller,
    wait_in_sync,
)
from corridor.common.addresses import checked_prefix_to_pb
from corridor.v1 import controller_pb2

REPO = Path(__file__).resolve().parent.parent
MAC = "02:0a:00:00:00:01"


async def until(predicate, what: str, within: float = 30.0):
    deadline = asyncio.get_running_loop().time() + within
    while not (value := predicate()):
        assert asyncio.get_running_loop().time() < deadline, f"{what}: not reached in {within} s"
        await asyncio.sleep(0.05)
    return value


async def in_sync(stub, node: str) -> None:
    """The node in sync; a controller on etcd takes the lead, and so knows its nodes, a
    moment after it serves (NOT_FOUND until then)."""
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        try:
            await wait_in_sync(stub, node, 0)
            return
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.NOT_FOUND:
                raise
            assert asyncio.get_running_loop().time() < deadline, f"node {node}: {e.details()}"
            await asyncio.sleep(0.1)


def add(name: str, mac: str = MAC) -> controller_pb2.AddMemberRequest:
    return controller_pb2.AddMemberRequest(
        member=controller_pb2.MemberIntent(
            name=name, node="a", port="cor-c0", vlan=0, mac=bytes.fromhex(mac.replace(":", ""))
        )
    )


def filter_request(name: str, *prefixes: str) -> controller_pb2.SetMemberFilterRequest:
    return controller_pb2.SetMemberFilterRequest(
        name=name,
        filter_sources=True,
        allowed_sources=[checked_prefix_to_pb(p) for p in prefixes],
    )


def agent_sources(agent, name: str) -> tuple[str, ...] | bool | None:
    """The filter of member `name` at the agent; False while the agent has no such member."""
    for m in agent.dataplane.members.values():
        if m.name == name:
            return m.sources
    return False


async def test_stored_written_and_written_again_after_a_restart(
    tmp_path: Path, store_backend
) -> None:
    document = store_backend(controller_document(tmp_path, {"a": f"unix:{tmp_path}/a.sock"}))
    agent = await LocalAgent(tmp_path / "a.sock").start()
    running = await start_controller(document, tmp_path)
    channel, stub = controller_stub(tmp_path / "controller.sock")
    own = ("198.18.0.0/24", "2001:db8:a::/48")
    try:
        await in_sync(stub, "a")
        await stub.AddMember(add("acme"), timeout=10)
        await until(lambda: agent_sources(agent, "acme") is None, "the member without a filter")
        m = await stub.SetMemberFilter(filter_request("acme", *reversed(own)), timeout=10)
        assert m.filter_sources and len(m.allowed_sources) == 2
        await until(lambda: agent_sources(agent, "acme") == own, "the filter at the agent")
        listed = await stub.ListMembers(controller_pb2.ListMembersRequest(), timeout=10)
        assert [(x.name, x.filter_sources, len(x.allowed_sources)) for x in listed.members] == [
            ("acme", True, 2)
        ]
    finally:
        await channel.close()
        await running.stop(0)
        await agent.stop()
    # A fresh agent (no members) and a restarted controller: the stored filter comes back.
    agent = await LocalAgent(tmp_path / "a.sock").start()
    running = await start_controller(document, tmp_path)
    channel, stub = controller_stub(tmp_path / "controller.sock")
    try:
        await until(lambda: agent_sources(agent, "acme") == own, "the filter after a restart")
        await stub.SetMemberFilter(
            controller_pb2.SetMemberFilterRequest(name="acme", filter_sources=False), timeout=10
        )
        await until(lambda: agent_sources(agent, "acme") is None, "the filter removed")
    finally:
        await channel.close()
        await running.stop(0)
        await agent.stop()


@pytest.fixture
async def node(tmp_path: Path):
    async with one_node(tmp_path) as (agent, running, stub):
        await stub.AddMember(add("acme"), timeout=10)
        await until(lambda: agent_sources(agent, "acme") is None, "the member at the agent")
        yield agent, running, stub


def _host_bits() -> controller_pb2.SetMemberFilterRequest:
    r = filter_request("acme", "198.18.0.0/24")
    r.allowed_sources[0].address = bytes([198, 18, 0, 1])
    return r


def _too_long() -> controller_pb2.SetMemberFilterRequest:
    r = filter_request("acme", "198.18.0.0/24")
    r.allowed_sources[0].length = 40
    return r


MALFORMED = [
    (_host_bits(), grpc.StatusCode.INVALID_ARGUMENT, "host bits set"),
    (_too_long(), grpc.StatusCode.INVALID_ARGUMENT, "prefix length 40 exceeds 32"),
    (
        controller_pb2.SetMemberFilterRequest(
            name="acme", allowed_sources=[checked_prefix_to_pb("198.18.0.0/24")]
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "set without filter_sources",
    ),
    (
        filter_request("acme", *(f"198.18.{i >> 8}.{i & 255}/32" for i in range(4097))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "4097 source prefixes exceed the limit of 4096",
    ),
    (filter_request("nobody", "198.18.0.0/24"), grpc.StatusCode.NOT_FOUND, "does not exist"),
]


@pytest.mark.parametrize(
    ("request_", "code", "text"), MALFORMED, ids=[t[:24] for _, _, t in MALFORMED]
)
async def test_malformed_requests_store_and_send_nothing(node, request_, code, text: str) -> None:
    agent, running, stub = node
    with pytest.raises(grpc.RpcError) as raised:
        await stub.SetMemberFilter(request_, timeout=10)
    assert raised.value.code() == code
    assert text in (raised.value.details() or ""), raised.value.details()
    assert running.controller.members["acme"].sources is None
    stored = await running.controller.store.list_members()
    assert [m.sources for m in stored] == [None]
    assert agent_sources(agent, "acme") is None


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO / "control"))
    return subprocess.run(
        [sys.executable, "-m", "corridor", *args, "--controller",
         f"unix:{tmp_path}/controller.sock"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


async def test_the_cli_sets_lists_and_removes_filters(node, tmp_path: Path) -> None:
    agent, running, _ = node
    loop = asyncio.get_running_loop()

    async def run(*args: str) -> subprocess.CompletedProcess[str]:
        return await loop.run_in_executor(None, lambda: cli(tmp_path, *args))

    done = await run(
        "member", "filter", "acme", "--allow", "198.18.0.0/24", "--allow", "2001:db8:a::/48"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "member acme: sources 198.18.0.0/24,2001:db8:a::/48"
    await until(
        lambda: agent_sources(agent, "acme") == ("198.18.0.0/24", "2001:db8:a::/48"),
        "the CLI's filter at the agent",
    )
    shown = await run("member", "list", "--json")
    assert json.loads(shown.stdout)[0]["sources"] == ["198.18.0.0/24", "2001:db8:a::/48"]
    table = await run("member", "list")
    assert "198.18.0.0/24,2001:db8:a::/48" in table.stdout, table.stdout
    # Bad input: a clear message, exit code 2, nothing sent or changed.
    for args, text in (
        (("--allow", "198.18.0.1/24"), "has host bits set"),
        (("--allow", "198.18.0.0/33"), "198.18.0.0/33"),
        (("--allow", "acme.example"), "'acme.example'"),
        (("--allow", "198.18.0.0/24", "--off"), "--off removes the filter: give it alone"),
        ((), "give --allow PREFIX, --from-bgp --next-hop ADDRESS, or --off"),
    ):
        bad = await run("member", "filter", "acme", *args)
        assert bad.returncode == 2 and text in bad.stderr, (args, bad.stderr)
    assert running.controller.members["acme"].sources == ("198.18.0.0/24", "2001:db8:a::/48")
    bad = await run("member", "filter", "nobody", "--allow", "198.18.0.0/24")
    assert bad.returncode != 0 and "member 'nobody' does not exist" in bad.stderr, bad.stderr
    done = await run("member", "filter", "acme", "--off")
    assert done.returncode == 0 and done.stdout.strip() == "member acme: sources any"
    await until(lambda: agent_sources(agent, "acme") is None, "the filter removed")


async def test_a_store_from_before_filters_gets_the_column(tmp_path: Path) -> None:
    """A SQLite store written before source filters (members without a `sources` column)
    opens, its members read as unfiltered, and filters are stored from then on; a stored
    filter that is not a list of prefixes is refused by name, not taken."""
    import sqlite3

    from corridor.controller.members import MemberRecord
    from corridor.controller.sqlite_store import SqliteStore
    from corridor.controller.store import StoreError

    path = tmp_path / "old.db"
    store = SqliteStore(path)
    await store.check(accept_loss=True)
    await store.open()
    await store.close()
    db = sqlite3.connect(path)
    db.executescript(
        "DROP TABLE members; CREATE TABLE members (name TEXT PRIMARY KEY, node TEXT NOT NULL,"
        " port TEXT NOT NULL, vlan INTEGER NOT NULL, mac TEXT NOT NULL, id INTEGER NOT NULL);"
        f" INSERT INTO members VALUES ('acme', 'a', 'cor-c0', 0, '{MAC}', 3);"
    )
    db.commit()
    db.close()
    store = SqliteStore(path)
    await store.check(accept_loss=True)
    await store.open()
    try:
        assert await store.list_members() == [MemberRecord("acme", "a", "cor-c0", 0, MAC, 3)]
        filtered = MemberRecord("acme", "a", "cor-c0", 0, MAC, 3, ("198.18.0.0/24",))
        await store.put_member(filtered)
        assert await store.list_members() == [filtered]
    finally:
        await store.close()
    db = sqlite3.connect(path)
    db.execute("UPDATE members SET sources = '\"198.18.0.0/24\"'")
    db.commit()
    db.close()
    store = SqliteStore(path)
    await store.check(accept_loss=True)
    await store.open()
    try:
        with pytest.raises(StoreError, match="members: member acme: stored sources"):
            await store.list_members()
    finally:
        await store.close()
