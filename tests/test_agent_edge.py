"""Edge policies in the agent: read from its configuration per port and VLAN (bad values
named by field), handed to the engine at start, and set and read over gRPC: all or nothing,
under the writers' election, every malformed entry refused by name with nothing applied."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from corridor.agent.config import load
from corridor.agent.engine_host import engine_ports
from corridor.common.config import ConfigError
from corridor.common.edge import EdgePolicy, UrpfMode
from corridor.common.status import write_error
from corridor.v1 import common_pb2, dataplane_pb2

CONFIG = """
[listen]
unix = "agent.sock"

[[ports]]
name = "eth1"
urpf = "strict"
urpf_allow_default = true
ethertype_filter = true
mac_filter = true
allowed_macs = ["02:00:00:00:00:0B", "02-00-00-00-00-0a", "02:00:00:00:00:0a"]
vlans = [{ id = 100, urpf = "loose" }, { id = 200 }]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_policies_are_read_per_port_and_vlan(tmp_path: Path) -> None:
    port = load(write(tmp_path, CONFIG)).ports[0]
    assert port.policies() == {
        0: EdgePolicy(
            urpf=UrpfMode.STRICT,
            urpf_allow_default=True,
            ethertype_filter=True,
            mac_filter=True,
            allowed_macs=("02:00:00:00:00:0a", "02:00:00:00:00:0b"),
        ),
        100: EdgePolicy(urpf=UrpfMode.LOOSE),
        200: EdgePolicy(),
    }
    assert engine_ports((port,))[0]["urpf"] == {
        0: {"mode": "strict", "allow_default": True},
        100: {"mode": "loose", "allow_default": False},
        200: {"mode": "off", "allow_default": False},
    }


BAD = [
    (('urpf = "strict"', 'urpf = "strictest"'), "ports[0].urpf: 'strictest' is not a uRPF mode"),
    (('urpf = "strict"', "urpf = 1"), "ports[0].urpf: is an integer (1); expected a string"),
    (
        ("urpf_allow_default = true", 'urpf_allow_default = "yes"'),
        "ports[0].urpf_allow_default: is a string ('yes'); expected true or false",
    ),
    (
        ('"02:00:00:00:00:0B"', '"01:00:5e:00:00:01"'),
        "ports[0].allowed_macs[0]: 01:00:5e:00:00:01 is a group",
    ),
    (
        ('"02:00:00:00:00:0B"', '"02:00:00:00:00"'),
        "ports[0].allowed_macs[0]: '02:00:00:00:00' is not a MAC",
    ),
    (
        ('"02:00:00:00:00:0B"', '"00:00:00:00:00:00"'),
        "ports[0].allowed_macs[0]: 00:00:00:00:00:00 is all zero",
    ),
    (
        ('"02:00:00:00:00:0B"', '"02:00:00:00:00:zz"'),
        "ports[0].allowed_macs[0]: '02:00:00:00:00:zz'",
    ),
    (
        (
            'allowed_macs = ["02:00:00:00:00:0B", "02-00-00-00-00-0a", "02:00:00:00:00:0a"]',
            "allowed_macs = []",
        ),
        "ports[0].allowed_macs: is empty with mac_filter = true",
    ),
    (
        ('{ id = 100, urpf = "loose" }', '{ id = 100, urpf = "lose" }'),
        "ports[0].vlans[0].urpf: 'lose' is not",
    ),
    (
        ("{ id = 200 }", "{ id = 200, mac_filter = 1 }"),
        "ports[0].vlans[1].mac_filter: is an integer",
    ),
    (
        ("{ id = 200 }", '{ id = 200, port_security = "on" }'),
        "ports[0].vlans[1].port_security: is a string ('on'); expected true or false",
    ),
]


def test_port_security_needs_no_listed_mac(tmp_path: Path) -> None:
    """Port security allows the members' MACs, which the controller writes later: with no
    member yet and no listed MAC the XDP filter drops every frame (and says so in
    ListPortPolicies), which is what a port with no registered router should do."""
    text = CONFIG.replace("{ id = 200 }", "{ id = 200, port_security = true }")
    port = load(write(tmp_path, text)).ports[0]
    policy = port.policies()[200]
    assert policy == EdgePolicy(port_security=True)
    assert policy.xdp_filter(()) == (True, True, ())
    assert policy.xdp_filter(("02:00:00:00:00:02", "02:00:00:00:00:01")) == (
        True,
        True,
        ("02:00:00:00:00:01", "02:00:00:00:00:02"),
    )
    assert engine_ports((port,))[0]["edge"][200] == {
        "ethertype_filter": True,
        "mac_filter": True,
        "allowed_macs": [],
    }
    listed = EdgePolicy(port_security=True, allowed_macs=("02:00:00:00:00:09",))
    assert listed.xdp_filter(("02:00:00:00:00:01",))[2] == (
        "02:00:00:00:00:01",
        "02:00:00:00:00:09",
    )


@pytest.mark.parametrize(
    ("change", "message"), BAD, ids=[m.split(":")[0] + str(i) for i, (_, m) in enumerate(BAD)]
)
def test_a_bad_policy_names_the_field(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    old, new = change
    assert old in CONFIG
    path = write(tmp_path, CONFIG.replace(old, new, 1))
    with pytest.raises(ConfigError) as e:
        load(path)
    assert f"{path}: {message}" in str(e.value), str(e.value)


def test_too_many_macs_are_refused(tmp_path: Path) -> None:
    macs = ", ".join(f'"02:00:00:00:{i >> 8:02x}:{i & 0xFF:02x}"' for i in range(1025))
    text = CONFIG.replace(
        'allowed_macs = ["02:00:00:00:00:0B", "02-00-00-00-00-0a", "02:00:00:00:00:0a"]',
        f"allowed_macs = [{macs}]",
    )
    with pytest.raises(
        ConfigError, match=r"ports\[0\].allowed_macs: 1025 MACs exceed the limit of 1024"
    ):
        load(write(tmp_path, text))


# -- over gRPC (the `agent` fixture: cor-test0 untagged; cor-test1 with VLANs 100, 200) --

STRICT = common_pb2.EdgePolicy(urpf=common_pb2.URPF_MODE_STRICT, urpf_allow_default=True)


def election(low: int) -> common_pb2.ElectionId:
    return common_pb2.ElectionId(high=0, low=low)


def request(*policies: common_pb2.PortPolicy, low: int = 5) -> dataplane_pb2.SetPortPoliciesRequest:
    return dataplane_pb2.SetPortPoliciesRequest(election_id=election(low), policies=policies)


async def listed(agent) -> dict[tuple[str, int], common_pb2.EdgePolicy]:
    reply = await agent.stub.ListPortPolicies(dataplane_pb2.ListPortPoliciesRequest(), timeout=10)
    return {(p.port, p.vlan): p.policy for p in reply.policies}


async def test_set_and_list(agent) -> None:
    before = await listed(agent)
    assert set(before) == {
        ("cor-test0", 0),
        ("cor-test1", 0),
        ("cor-test1", 100),
        ("cor-test1", 200),
    }
    assert all(p.urpf == common_pb2.URPF_MODE_OFF for p in before.values())
    macs = common_pb2.EdgePolicy(
        urpf=common_pb2.URPF_MODE_LOOSE,
        mac_filter=True,
        allowed_macs=[bytes.fromhex("020000000002")],
    )
    await agent.stub.SetPortPolicies(
        request(
            common_pb2.PortPolicy(port="cor-test0", vlan=0, policy=STRICT),
            common_pb2.PortPolicy(port="cor-test1", vlan=100, policy=macs),
        ),
        timeout=10,
    )
    after = await listed(agent)
    assert after[("cor-test0", 0)] == STRICT
    assert after[("cor-test1", 100)] == macs
    assert after[("cor-test1", 0)] == before[("cor-test1", 0)], "not named: kept"


def bad_macs(*macs: bytes) -> common_pb2.EdgePolicy:
    return common_pb2.EdgePolicy(mac_filter=True, allowed_macs=list(macs))


MALFORMED = [
    (
        common_pb2.PortPolicy(port="nope", vlan=0, policy=STRICT),
        "policies[1].port",
        "'nope' is not a configured port",
    ),
    (
        common_pb2.PortPolicy(port="cor-test1", vlan=300, policy=STRICT),
        "policies[1].vlan",
        "300 is not a sub-interface",
    ),
    (
        common_pb2.PortPolicy(port="cor-test0", vlan=0, policy=STRICT),
        "policies[1]",
        "already policies[0]",
    ),
    (
        common_pb2.PortPolicy(port="cor-test1", vlan=0, policy=common_pb2.EdgePolicy(urpf=9)),
        "policies[1].policy.urpf",
        "9 is not a uRPF mode",
    ),
    (
        common_pb2.PortPolicy(port="cor-test1", vlan=0, policy=bad_macs(b"\x02\x00")),
        "policies[1].policy.allowed_macs[0]",
        "is 2 bytes; a MAC address is 6",
    ),
    (
        common_pb2.PortPolicy(port="cor-test1", vlan=0, policy=bad_macs(b"\xff" * 6)),
        "policies[1].policy.allowed_macs[0]",
        "group address",
    ),
    (
        common_pb2.PortPolicy(
            port="cor-test1", vlan=0, policy=common_pb2.EdgePolicy(port_security=True, urpf=7)
        ),
        "policies[1].policy.urpf",
        "7 is not a uRPF mode",
    ),
    (
        common_pb2.PortPolicy(port="cor-test1", vlan=0, policy=bad_macs()),
        "policies[1].policy.allowed_macs",
        "is empty with mac_filter set",
    ),
]


@pytest.mark.parametrize(("bad", "field", "text"), MALFORMED, ids=[f for _, f, _ in MALFORMED])
async def test_a_malformed_entry_refuses_the_request_whole(
    agent, bad, field: str, text: str
) -> None:
    good = common_pb2.PortPolicy(port="cor-test0", vlan=0, policy=STRICT)
    before = await listed(agent)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await agent.stub.SetPortPolicies(request(good, bad), timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert text in e.value.details()
    details = write_error(e.value)
    assert details is not None
    violations = details.violations
    assert [(v.field, text in v.description) for v in violations] == [(field, True)]
    assert await listed(agent) == before, "nothing applied"


async def test_the_election_guards_policies(agent) -> None:
    good = common_pb2.PortPolicy(port="cor-test0", vlan=0, policy=STRICT)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await agent.stub.SetPortPolicies(request(good, low=0), timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "election_id: is missing or zero" in e.value.details()
    await agent.stub.SetPortPolicies(request(low=10), timeout=10)  # claims primacy
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await agent.stub.SetPortPolicies(request(good, low=9), timeout=10)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (await listed(agent))[("cor-test0", 0)].urpf == common_pb2.URPF_MODE_OFF


async def test_port_security_is_set_with_no_listed_mac(agent) -> None:
    secured = common_pb2.EdgePolicy(urpf=common_pb2.URPF_MODE_OFF, port_security=True)
    await agent.stub.SetPortPolicies(
        request(common_pb2.PortPolicy(port="cor-test1", vlan=200, policy=secured)), timeout=10
    )
    assert (await listed(agent))[("cor-test1", 200)] == secured
