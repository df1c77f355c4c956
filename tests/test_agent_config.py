"""The agent's TOML configuration: a good file is read whole; every bad one stops start-up
with a message that names the field and says what would be valid."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path

import pytest

from corridor.agent.config import EXAMPLE, load
from corridor.common.config import ConfigError, HostPort

GOOD = """
workers = 4
realtime_priority = 10

[listen]
unix = "run/agent.sock"
tcp = "[::1]:50051"

[tls]
cert = "pki/server.pem"
key = "pki/server.key"
client_ca = "/etc/corridor/ca.pem"

[metrics]
address = "127.0.0.1:9464"

[fib]
v4_routes = 1000000
groups = 1024

[icmp]
source_rate = 2
sources = 64
worker_burst = 0

[[ports]]
name = "eth1"
queues = 4
mtu = 9000
addresses = ["198.18.0.1/24", "2001:db8::1/64"]
directed_broadcast = true

[[ports]]
name = "eth2"
vlans = [{ id = 100, addresses = ["198.19.100.1/24"] }, { id = 200 }]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_a_good_file_is_read_whole(tmp_path: Path) -> None:
    config = load(write(tmp_path, GOOD))
    assert config.workers == 4
    assert config.realtime_priority == 10
    assert config.listen.unix == tmp_path / "run/agent.sock"  # relative to the file
    assert config.listen.tcp == HostPort("::1", 50051)
    assert str(config.listen.tcp) == "[::1]:50051"
    assert config.tls is not None
    assert config.tls.cert == tmp_path / "pki/server.pem"
    assert config.tls.client_ca == Path("/etc/corridor/ca.pem")
    assert config.metrics == HostPort("127.0.0.1", 9464)
    assert config.fib.keywords() == {"v4_routes": 1_000_000, "groups": 1024}
    eth1, eth2 = config.ports
    assert (eth1.name, eth1.queues, eth1.mtu) == ("eth1", 4, 9000)
    assert eth1.addresses == (
        ipaddress.ip_interface("198.18.0.1/24"),
        ipaddress.ip_interface("2001:db8::1/64"),
    )
    assert (eth2.queues, eth2.mtu) == (1, 1500)  # the defaults
    assert [v.id for v in eth2.vlans] == [100, 200]
    assert eth2.vlans[0].addresses == (ipaddress.ip_interface("198.19.100.1/24"),)
    assert (eth1.directed_broadcast, eth2.directed_broadcast) == (True, False)  # RFC 2644
    assert dict(config.icmp.keywords) == {
        "icmp_source_rate": 2, "icmp_sources": 64, "icmp_worker_burst": 0,
    }  # fmt: skip


def test_the_icmp_limits_reach_the_engine_and_are_checked_by_it(tmp_path: Path) -> None:
    from corridor._dataplane import Engine, Fib

    config = load(write(tmp_path, GOOD))
    # Every key the reader accepts is a keyword the engine takes (checked, not started).
    Engine(Fib(), ports=[{"name": "cor-x0"}], **dict(config.icmp.keywords))  # type: ignore[arg-type]
    assert load(write(tmp_path, EXAMPLE)).icmp.keywords  # the example's table is valid


def test_the_engine_gets_the_subnets_and_the_directed_broadcast_switch(tmp_path: Path) -> None:
    from corridor.agent.engine_host import engine_ports

    eth1, eth2 = engine_ports(load(write(tmp_path, GOOD)).ports)
    assert eth1["addresses"] == {0: ["198.18.0.1/24", "2001:db8::1/64"]}
    assert eth1["directed_broadcast"] is True
    assert eth2["addresses"] == {0: [], 100: ["198.19.100.1/24"], 200: []}
    assert eth2["directed_broadcast"] is False


def test_the_example_in_the_help_is_valid(tmp_path: Path) -> None:
    assert load(write(tmp_path, EXAMPLE)).ports[0].name == "eth1"


def test_the_smallest_file_is_a_listener(tmp_path: Path) -> None:
    config = load(write(tmp_path, '[listen]\nunix = "/run/corridor/agent.sock"\n'))
    assert config.workers == 1 and config.ports == () and config.tls is None
    assert config.realtime_priority is None


# (what is changed in GOOD, the message expected after "<file>: ")
BAD = [
    (("mtu = 9000", "mtu = 70000"), "ports[0].mtu: 70000 is not between 576 and 9216"),
    (('name = "eth2"', 'name = "eth2"\nmtu = 100'), "ports[1].mtu: 100 is not between 576"),
    (("queues = 4", "queues = 0"), "ports[0].queues: 0 is not between 1 and 256"),
    (("queues = 4", 'queues = "4"'), "ports[0].queues: is a string ('4'); expected an integer"),
    (("queues = 4", "queues = true"), "ports[0].queues: is a boolean (True); expected an integer"),
    (("workers = 4", "workers = 0"), "workers: 0 is not between 1 and 1024"),
    (("realtime_priority = 10", "realtime_priority = 0"), "realtime_priority: 0 is not between 1"),
    (("realtime_priority = 10", "realtime_priority = 100"), "realtime_priority: 100 is not betwee"),
    (
        ("realtime_priority = 10", 'realtime_priority = "high"'),
        "realtime_priority: is a string ('high'); expected an integer",
    ),
    (("sources = 64", "sources = 0"), "icmp.sources: 0 is not between 1 and 1048576"),
    (("source_rate = 2", "source_rate = -1"), "icmp.source_rate: -1 is not between 0 and"),
    (("source_rate = 2", "source_rates = 2"), "icmp.source_rates: unknown key; known here:"),
    (
        ("directed_broadcast = true", 'directed_broadcast = "yes"'),
        "ports[0].directed_broadcast: is a string ('yes'); expected true or false",
    ),
    (("workers = 4", "worker = 4"), "worker: unknown key; known here:"),
    (("queues = 4", "queues = 4\nspeed = 100"), "ports[0].speed: unknown key; known here:"),
    (("id = 200", "id = 4095"), "ports[1].vlans[1].id: 4095 is not between 1 and 4094"),
    (("id = 200", "id = 100"), "ports[1].vlans[1].id: VLAN 100 is already configured"),
    (("id = 200", "vid = 200"), "ports[1].vlans[1].id: is required; expected an integer"),
    (('"198.18.0.1/24", "2001', '"198.18.0.300/24", "2001'), "ports[0].addresses[0]: "),
    (('"198.18.0.1/24", "2001', '"198.18.0.1", "2001'), "ports[0].addresses[0]: '198.18.0.1' "),
    (('"2001:db8::1/64"', '"2001:db8::1/129"'), "ports[0].addresses[1]: '2001:db8::1/129'"),
    (('name = "eth2"', 'name = "eth1"'), "ports[1].name: 'eth1' is already ports[0]"),
    (('name = "eth2"', 'name = "a-name-far-too-long"'), "ports[1].name: 'a-name-far-too-long'"),
    (('name = "eth2"', 'name = "eth/2"'), "ports[1].name: 'eth/2' is not a network interface"),
    (('tcp = "[::1]:50051"', 'tcp = "::1:50051"'), "listen.tcp: '::1:50051': put an IPv6"),
    (('tcp = "[::1]:50051"', 'tcp = "[::1]:70000"'), "listen.tcp: '[::1]:70000' is not host"),
    (('tcp = "[::1]:50051"', 'tcp = "localhost"'), "listen.tcp: 'localhost' is not host:port"),
    (('unix = "run/agent.sock"', 'unix = ""'), "listen.unix: is empty"),
    (('address = "127.0.0.1:9464"', "address = 9464"), "metrics.address: is an integer (9464)"),
    (('key = "pki/server.key"\n', ""), "tls.key: is required; expected a string"),
    (("v4_routes = 1000000", "v4_routes = -1"), "fib.v4_routes: -1 is not between 1 and"),
    (("v4_routes = 1000000", "v4_nodes = 1.5"), "fib.v4_nodes: is a float (1.5); expected"),
    (("groups = 1024", "group = 1024"), "fib.group: unknown key; known here: adjacencies, groups"),
    (('[[ports]]\nname = "eth1"', '[[ports]]\nlabel = "eth1"'), "ports[0].name: is required"),
    (("[listen]", "[listen]\nfoo = 1"), "listen.foo: unknown key; known here: tcp, unix"),
]


@pytest.mark.parametrize(("change", "message"), BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_a_bad_file_names_the_field(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    old, new = change
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError) as e:
        load(path)
    assert str(e.value).startswith(f"{path}: {message}"), str(e.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("workers = 2\n", "listen: is required; expected a table"),
        ("[listen]\n", "listen: needs unix (a socket path), tcp (host:port), or both"),
        ('listen = "x"\n', "listen: is a string ('x'); expected a table"),
        ("[listen\n", "not valid TOML"),
        ('[listen]\nunix = "a.sock"\n[tls]\ncert = "c"\nkey = "k"\nclient_ca = "ca"\n', "tls: "),
        ('[listen]\nunix = "a.sock"\n[[ports]]\nname = "e"\naddresses = "198.18.0.1/24"\n', ""),
    ],
)
def test_structural_errors(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load(path)
    assert message in str(e.value)


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "absent.toml")


def test_the_command_refuses_a_bad_file_with_the_field(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("mtu = 9000", "mtu = 70000"))
    run = subprocess.run(
        [sys.executable, "-m", "corridor", "agent", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "ports[0].mtu: 70000 is not between 576 and 9216" in run.stderr
    assert "Traceback" not in run.stderr


def test_the_command_checks_a_good_file(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    run = subprocess.run(
        [sys.executable, "-m", "corridor", "agent", "--config", str(path), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
