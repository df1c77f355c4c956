"""The agent's sFlow export without a network: the [sflow] table and the ports'
`sample_rate` are read whole or refused naming the field (nothing starts), the engine
refuses bad rates with nothing changed, and the encoder writes the XDR structures of
sFlow v5 with the lengths the specification gives. The real collector is in
test_sflow_lab.py."""

from __future__ import annotations

import ipaddress
import socket
import struct
import tomllib

import pytest

from corridor.agent import sflow
from corridor.agent.config import Collector, parse
from corridor.common.config import ConfigError

BASE = """
[listen]
unix = "agent.sock"
"""
PORT = """
[[ports]]
name = "eth1"
addresses = ["198.18.0.1/24"]
sample_rate = {rate}
"""
SFLOW = """
[sflow]
collectors = {collectors}
"""


def _config(collectors: str = '["198.18.9.2:6343"]', rate: int = 1000, extra: str = "") -> str:
    return BASE + SFLOW.format(collectors=collectors) + extra + PORT.format(rate=rate)


def _problems(text: str) -> str:
    with pytest.raises(ConfigError) as e:
        parse(tomllib.loads(text))
    return str(e.value)


def test_a_good_sflow_table_is_read() -> None:
    extra = 'counter_interval = 5\nnetns = "mgmt"\nagent_address = "2001:db8::1"\n'
    text = _config('["198.18.9.2:6343", "[2001:db8::9]:9995"]', 4096, extra)
    c = parse(tomllib.loads(text))
    assert c.sflow is not None
    assert c.sflow.collectors == (
        Collector("198.18.9.2", 6343, socket.AF_INET),
        Collector("2001:db8::9", 9995, socket.AF_INET6),
    )
    assert (c.sflow.counter_interval, c.sflow.netns) == (5, "mgmt")
    assert c.sflow.agent_address == ipaddress.ip_address("2001:db8::1")
    assert c.ports[0].sample_rate == 4096
    # Defaults: 20 s counters, the first port address as the agent's, rate 0 (off).
    d = parse(tomllib.loads(_config(rate=0)))
    assert d.sflow is not None and d.sflow.counter_interval == 20
    assert d.sflow.agent_address == ipaddress.ip_address("198.18.0.1")
    assert d.ports[0].sample_rate == 0
    assert parse(tomllib.loads(BASE + PORT.format(rate=0))).sflow is None


@pytest.mark.parametrize(
    ("text", "field", "says"),
    [
        (_config('["collector.example:6343"]'), "sflow.collectors[0]", "not an IP address"),
        (_config('["198.18.9.2"]'), "sflow.collectors[0]", "port 1 to 65535"),
        (_config('["198.18.9.2:0"]'), "sflow.collectors[0]", "port 1 to 65535"),
        (_config('["198.18.9.2:70000"]'), "sflow.collectors[0]", "port 1 to 65535"),
        (_config('["2001:db8::9:6343"]'), "sflow.collectors[0]", "in brackets"),
        (_config('["224.0.0.1:6343"]'), "sflow.collectors[0]", "not a unicast"),
        (_config('["0.0.0.0:6343"]'), "sflow.collectors[0]", "not a unicast"),
        (_config("[6343]"), "sflow.collectors[0]", "is not an"),
        (_config('["198.18.9.2:6343", "198.18.9.2:6343"]'), "sflow.collectors[1]", "already"),
        (_config("[]"), "sflow.collectors", "is empty"),
        (_config('"198.18.9.2:6343"'), "sflow.collectors", "expected a list"),
        (BASE + "[sflow]\n" + PORT.format(rate=1), "sflow.collectors", "is required"),
        (_config(rate=(1 << 24) + 1), "ports[0].sample_rate", "not between 0 and 16777216"),
        (_config(rate=-1), "ports[0].sample_rate", "not between 0 and 16777216"),
        (_config(extra="counter_interval = 3601\n"), "sflow.counter_interval", "not between"),
        (_config(extra='agent_address = "router"\n'), "sflow.agent_address", "not an IPv4"),
        (_config(extra='netns = "a/b"\n'), "sflow.netns", "network namespace"),
        (_config(extra="rate = 5\n"), "sflow.rate", "unknown key"),
        (BASE + PORT.format(rate=100), "ports[0].sample_rate", "no [sflow] table"),
        (BASE + SFLOW.format(collectors='["198.18.9.2:6343"]'), "sflow.", ""),
    ],
)
def test_bad_sflow_settings_are_refused_naming_the_field(text: str, field: str, says: str) -> None:
    problems = _problems(text)
    assert field in problems and says in problems, problems


def test_no_port_address_needs_an_agent_address() -> None:
    text = BASE + SFLOW.format(collectors='["198.18.9.2:6343"]') + '[[ports]]\nname = "eth1"\n'
    assert "sflow.agent_address: is required" in _problems(text)


def test_the_engine_refuses_bad_rates_whole() -> None:
    from corridor import _dataplane as dp

    engine = dp.Engine(dp.Fib(), ports=[{"name": "cor-none0"}, {"name": "cor-none1"}])
    with pytest.raises(ValueError, match=r"sample_rates\[1\]: 16777217 is not between 0"):
        engine.set_sample_rates([10, (1 << 24) + 1])
    with pytest.raises(ValueError, match=r"sample_rates\[0\]: -1"):
        engine.set_sample_rates([-1, 0])
    with pytest.raises(dp.EngineError, match="not running"):
        engine.set_sample_rates([10, 10])
    assert engine.drain_samples() == [] and engine.sample_stats() == []


def test_flow_and_counter_samples_have_the_specified_layout() -> None:
    header = bytes(range(61))
    record = sflow.raw_header_record(header, 1000)
    # format 1, length, protocol 1, frame length, stripped 0, header length, padded header.
    fmt, length, proto, frame_len, stripped, hlen = struct.unpack("!IIIIII", record[:24])
    assert (fmt, proto, frame_len, stripped, hlen) == (1, 1, 1000, 0, 61)
    assert length == len(record) - 8 == 16 + 64 and record[24 : 24 + 61] == header
    sample = sflow.flow_sample(7, 3, 1000, 123456, 2, 4, record, 1)
    fmt, length, seq, source, rate, pool, drops, i, o, n = struct.unpack("!10I", sample[:40])
    assert (fmt, seq, source, rate, pool, drops, i, o, n) == (1, 7, 3, 1000, 123456, 2, 3, 4, 1)
    assert length == len(sample) - 8 and sample[40:] == record

    c = sflow.InterfaceCounters(3, True, 2**40, 2**33 + 5, 9, 7, 6)
    counters = sflow.counter_sample(2, c)
    fmt, length, seq, source, n, rfmt, rlen = struct.unpack("!7I", counters[:28])
    assert (fmt, seq, source, n, rfmt, rlen) == (2, 2, 3, 1, 1, 88)
    assert length == len(counters) - 8 == 20 + 88
    body = counters[28:]
    if_index, if_type, _speed, _direction, status, in_octets, in_ucast = struct.unpack(
        "!IIQIIQI", body[:36]
    )
    assert (if_index, if_type, status, in_octets) == (3, 6, 3, 2**40)
    assert in_ucast == 5, "32-bit counters wrap"


def test_datagrams_stay_under_the_limit_and_number_in_sequence() -> None:
    enc = sflow.Encoder(ipaddress.ip_address("198.18.0.1"), [2, 3])
    samples = [
        {"port": 0, "vlan": 0, "member": None, "frame_len": 1500, "pool": 1000 * (i + 1),
         "out_port": 1 if i % 2 else None, "out_vlan": 20 if i % 2 else None,
         "out_priority": 0 if i % 2 else None, "dropped": None if i % 2 else "ttl_expired",
         "icmp_sent": False, "header": bytes(128)}
        for i in range(40)
    ]  # fmt: skip
    stats = [{"rate": 1000, "pool": 40_000, "sampled": 40, "dropped": 0}] * 2
    datagrams = enc.flows(samples, stats)  # type: ignore[arg-type]
    assert len(datagrams) > 1 and all(len(d) <= sflow.DATAGRAM_MAX for d in datagrams)
    total = 0
    for k, d in enumerate(datagrams, start=1):
        version, kind, agent, sub, seq, _, n = struct.unpack("!II4sIIII", d[:28])
        assert (version, kind, agent, sub, seq) == (5, 1, bytes([198, 18, 0, 1]), 0, k)
        off = 28
        for _ in range(n):
            _, length = struct.unpack("!II", d[off : off + 8])
            output, records = struct.unpack("!II", d[off + 8 + 24 : off + 8 + 32])
            assert output in (3, 0x4000_0000 | 257), hex(output)
            if output == 3:
                # Forwarded: the header, then extended_switch with the egress VLAN.
                assert records == 2
                tail = d[off + 8 + length - 24 : off + 8 + length]
                assert struct.unpack("!6I", tail) == (1001, 16, 0, 0, 20, 0)
            else:
                assert records == 1
            off += 8 + length
        assert off == len(d)
        total += n
    assert total == 40


def test_the_samplers_metrics_are_clean_and_per_port() -> None:
    from prometheus_client import generate_latest
    from prometheus_client.core import Metric
    from prometheus_client.registry import Collector

    from corridor.agent.metrics import _sample_metrics
    from corridor.common.metrics import new_registry
    from metrics_support import families, promtool_check, samples

    ports = [{"name": "dut0"}, {"name": "dut1"}]
    stats = [
        {"rate": 1000, "pool": 5000, "sampled": 5, "dropped": 2},
        {"rate": 0, "pool": 0, "sampled": 0, "dropped": 0},
    ]

    class One(Collector):
        def collect(self) -> list[Metric]:
            return list(_sample_metrics(stats, ports))  # type: ignore[arg-type]

    registry = new_registry()
    registry.register(One())
    text = generate_latest(registry).decode()
    promtool_check(text)
    assert families(text)["corridor_engine_sflow_samples_total"] == "counter"
    s = samples(text)
    assert s['corridor_engine_sflow_sample_rate{port="dut0"}'] == 1000
    assert s['corridor_engine_sflow_samples_total{port="dut0"}'] == 5
    assert s['corridor_engine_sflow_samples_dropped_total{port="dut0"}'] == 2
    assert s['corridor_engine_sflow_sample_rate{port="dut1"}'] == 0
