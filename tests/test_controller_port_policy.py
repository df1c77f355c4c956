"""Edge policies through the controller, on each store backend, against real agents served
in this process: a policy set through the API is stored and pushed to the node's agent, a
restarted controller pushes what it stored to a fresh agent, malformed requests are refused
by field with nothing stored or sent, and the CLI sets and shows them."""

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
from corridor.agent import client as agent_client
from corridor.v1 import common_pb2, controller_pb2

REPO = Path(__file__).resolve().parent.parent
STRICT = common_pb2.EdgePolicy(urpf=common_pb2.URPF_MODE_STRICT)
MACS = common_pb2.EdgePolicy(
    urpf=common_pb2.URPF_MODE_LOOSE,
    ethertype_filter=True,
    mac_filter=True,
    allowed_macs=[bytes.fromhex("020000000001")],
)


def policy_request(node: str, port: str, vlan: int, policy) -> controller_pb2.SetPortPolicyRequest:
    return controller_pb2.SetPortPolicyRequest(
        node=node, policy=common_pb2.PortPolicy(port=port, vlan=vlan, policy=policy)
    )


async def until(predicate, what: str, within: float = 30.0):
    """Polls `predicate` (a plain function of process state) until true, bounded in time."""
    deadline = asyncio.get_running_loop().time() + within
    while not (value := predicate()):
        assert asyncio.get_running_loop().time() < deadline, f"{what}: not reached in {within} s"
        await asyncio.sleep(0.05)
    return value


async def test_stored_pushed_and_pushed_again_after_a_restart(
    tmp_path: Path, store_backend
) -> None:
    document = store_backend(controller_document(tmp_path, {"a": f"unix:{tmp_path}/a.sock"}))
    agent = await LocalAgent(tmp_path / "a.sock").start()
    running = await start_controller(document, tmp_path)
    channel, stub = controller_stub(tmp_path / "controller.sock")
    try:
        await wait_in_sync(stub, "a", 0)
        await stub.SetPortPolicy(policy_request("a", "cor-c0", 0, STRICT), timeout=10)
        await stub.SetPortPolicy(policy_request("a", "cor-c1", 100, MACS), timeout=10)
        from corridor.common.edge import UrpfMode

        def pushed() -> bool:
            p = agent.dataplane.policies
            return p[("cor-c0", 0)].urpf is UrpfMode.STRICT and p[("cor-c1", 100)].mac_filter

        await until(pushed, "the policies at the agent")
        listed = await stub.ListPortPolicies(
            controller_pb2.ListNodePortPoliciesRequest(node="a"), timeout=10
        )
        assert [(p.port, p.vlan, p.policy) for p in listed.stored] == [
            ("cor-c0", 0, STRICT),
            ("cor-c1", 100, MACS),
        ]
        in_force = {(p.port, p.vlan): p.policy for p in listed.in_force}
        assert in_force[("cor-c1", 100)] == MACS and in_force[("cor-c1", 0)].urpf in (
            common_pb2.URPF_MODE_OFF,
        )
        assert listed.agent_error == "" and listed.push_error == ""
    finally:
        await channel.close()
        await running.stop(0)
        await agent.stop()
    # A fresh agent (its configured policies: all off) and a restarted controller: the
    # stored policies reach it without anyone asking.
    agent = await LocalAgent(tmp_path / "a.sock").start()
    assert agent.dataplane.policies[("cor-c0", 0)].urpf is UrpfMode.OFF
    running = await start_controller(document, tmp_path)
    channel, stub = controller_stub(tmp_path / "controller.sock")
    try:
        await until(pushed, "the stored policies pushed after the restart")
    finally:
        await channel.close()
        await running.stop(0)
        await agent.stop()


@pytest.fixture
async def node(tmp_path: Path):
    async with one_node(tmp_path) as (agent, running, stub):
        yield agent, running, stub


MALFORMED = [
    (policy_request("a", "", 0, STRICT), grpc.StatusCode.INVALID_ARGUMENT, "policy.port: is empty"),
    (policy_request("a", "cor-c0", 4095, STRICT), grpc.StatusCode.INVALID_ARGUMENT, "policy.vlan"),
    (
        policy_request("a", "cor-c0", 0, common_pb2.EdgePolicy(urpf=7)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "policy.policy.urpf: 7 is not a uRPF mode",
    ),
    (
        policy_request(
            "a", "cor-c0", 0, common_pb2.EdgePolicy(allowed_macs=[b"\x01\x00\x5e\x00\x00\x01"])
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "policy.policy.allowed_macs[0]: 01:00:5e:00:00:01 is a group address",
    ),
    (
        policy_request("zz", "cor-c0", 0, STRICT),
        grpc.StatusCode.NOT_FOUND,
        "node 'zz' is not registered",
    ),
    (
        policy_request("a", "eth9", 0, STRICT),
        grpc.StatusCode.INVALID_ARGUMENT,
        "port 'eth9' is not a port of node a",
    ),
    (
        policy_request("a", "cor-c1", 300, STRICT),
        grpc.StatusCode.INVALID_ARGUMENT,
        "VLAN 300 is not configured on port cor-c1 of node a",
    ),
]


@pytest.mark.parametrize(
    ("request_", "code", "text"), MALFORMED, ids=[t[:24] for _, _, t in MALFORMED]
)
async def test_malformed_requests_store_and_send_nothing(node, request_, code, text: str) -> None:
    agent, running, stub = node
    before = dict(agent.dataplane.policies)
    with pytest.raises(grpc.RpcError) as raised:
        await stub.SetPortPolicy(request_, timeout=10)
    assert raised.value.code() == code
    details = agent_client.write_error(raised.value)
    described = raised.value.details() + "".join(
        v.description for v in (details.violations if details else [])
    )
    assert text in described, described
    assert running.controller.port_policies == {}
    listed = await stub.ListPortPolicies(
        controller_pb2.ListNodePortPoliciesRequest(node="a"), timeout=10
    )
    assert list(listed.stored) == []
    assert agent.dataplane.policies == before


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO / "control"))
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "corridor",
            *args,
            "--controller",
            f"unix:{tmp_path}/controller.sock",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_the_cli_changes_only_what_its_flags_name(node, tmp_path: Path) -> None:
    agent, running, _ = node
    loop = asyncio.get_running_loop()

    async def run(*args: str) -> subprocess.CompletedProcess[str]:
        return await loop.run_in_executor(None, lambda: cli(tmp_path, *args))

    done = await run("port", "policy", "a", "cor-c1", "--vlan", "100", "--urpf", "strict")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "a cor-c1 VLAN 100: urpf=strict"
    done = await run(
        "port", "policy", "a", "cor-c1", "--vlan", "100", "--mac-filter", "on",
        "--allowed-macs", "02:00:00:00:00:09,02-00-00-00-00-08", "--ethertype-filter", "on",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "a cor-c1 VLAN 100: urpf=strict ethertypes=ip,arp macs=2"

    def pushed() -> bool:
        p = agent.dataplane.policies[("cor-c1", 100)]
        return p.mac_filter and p.allowed_macs == ("02:00:00:00:00:08", "02:00:00:00:00:09")

    await until(pushed, "the CLI's policy at the agent")
    shown = await run("port", "policies", "a", "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    [row] = [s for s in data["sub_interfaces"] if (s["port"], s["vlan"]) == ("cor-c1", 100)]
    assert row["stored"] == row["in_force"]
    assert row["stored"]["urpf"] == "strict" and row["stored"]["ethertype_filter"] is True
    table = await run("port", "policies", "a")
    assert "cor-c1  100   urpf=strict ethertypes=ip,arp macs=2" in table.stdout, table.stdout
    # Bad input: a clear message, exit code 2, nothing changed.
    for args, text in (
        (("--urpf", "strictest"), "invalid choice: 'strictest'"),
        (("--allowed-macs", "02:00:00:00:00"), "'02:00:00:00:00' is not a MAC address"),
        (("--mac-filter", "maybe"), "'maybe': use on or off"),
        ((), "nothing to change"),
    ):
        bad = await run("port", "policy", "a", "cor-c0", *args)
        assert bad.returncode == 2 and text in bad.stderr, (args, bad.stderr)
    bad = await run("port", "policy", "a", "eth9", "--urpf", "loose")
    assert bad.returncode != 0 and "port 'eth9' is not a port of node a" in bad.stderr, bad.stderr
    assert set(running.controller.port_policies["a"]) == {("cor-c1", 100)}
