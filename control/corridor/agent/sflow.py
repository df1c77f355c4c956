"""sFlow v5 export (sflow.org, sflow_version_5.txt): the engine's workers sample 1 frame in N
per port into bounded rings; this module drains them, encodes flow samples (a raw packet
header record with the first 128 octets as received) and generic interface counter samples
(every `counter_interval` seconds, from the engine's port counters), and sends the
datagrams over UDP to the configured collectors.

Encoded here by hand: PyPI has no maintained sFlow v5 *encoder* (pysflow, 2018, only
parses), and the subset needed is a few fixed XDR structures over `struct`. Draining and
encoding run in the default executor; the event loop only hands finished datagrams to a
non-blocking UDP transport, so a burst of samples never holds it up.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from corridor._dataplane import Engine, EngineCounters, SampleDict, SampleStats
    from corridor.agent.config import SflowConfig

log = logging.getLogger("corridor.agent.sflow")

VERSION = 5
# Data formats (enterprise 0): sample types and record types, section 5.
FLOW_SAMPLE = 1
COUNTERS_SAMPLE = 2
RAW_PACKET_HEADER = 1
EXTENDED_SWITCH = 1001
GENERIC_INTERFACE = 1
HEADER_PROTOCOL_ETHERNET = 1  # ETHERNET-ISO88023
IF_TYPE_ETHERNET = 6  # ethernetCsmacd
# Output interface of a discarded packet: 0x40000000 | reason (section 5, "interface").
DISCARDED = 0x4000_0000
REASON_UNKNOWN = 256
DROP_CODES = {
    "no_route": 0,  # ICMP net unreachable
    "unreachable": 0,
    "glean": 1,  # host unreachable (not resolved yet)
    "ttl_expired": 257,
    "mtu_exceeded": 262,  # packet too big
    "fragmentation_needed": 262,
}
# Datagrams stay below an Ethernet MTU with IPv6 and UDP headers.
DATAGRAM_MAX = 1400
U32 = 0xFFFF_FFFF
DRAIN_INTERVAL = 0.1  # seconds between drains of the workers' rings
DRAIN_MAX = 16384  # samples taken per drain (the rings hold 1024 per worker)


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _record(data_format: int, body: bytes) -> bytes:
    return struct.pack("!II", data_format, len(body)) + body


def raw_header_record(header: bytes, frame_len: int) -> bytes:
    """sampled_header (format 1): Ethernet, the frame's length as received, none stripped."""
    body = struct.pack("!IIII", HEADER_PROTOCOL_ETHERNET, frame_len, 0, len(header))
    return _record(RAW_PACKET_HEADER, body + _pad(header))


def extended_switch_record(
    src_vlan: int, src_priority: int, dst_vlan: int, dst_priority: int
) -> bytes:
    """extended_switch (format 1001): the 802.1Q VLAN and priority in and out (0 untagged)."""
    return _record(
        EXTENDED_SWITCH, struct.pack("!IIII", src_vlan, src_priority, dst_vlan, dst_priority)
    )


def ingress_priority(header: bytes) -> int:
    """The 802.1p priority of a tagged frame's header; 0 untagged."""
    return header[14] >> 5 if len(header) >= 16 and header[12:14] == b"\x81\x00" else 0


def flow_sample(
    sequence: int, if_index: int, rate: int, pool: int, drops: int, output: int, records: bytes,
    count: int,
) -> bytes:  # fmt: skip
    """flow_sample (format 1): source is the ingress ifIndex (type 0)."""
    body = struct.pack(
        "!IIIIIIII", sequence & U32, if_index & 0xFF_FFFF, rate, pool & U32, drops & U32,
        if_index, output, count,
    )  # fmt: skip
    return _record(FLOW_SAMPLE, body + records)


@dataclass(frozen=True)
class InterfaceCounters:
    """if_counters (generic interface counters, format 1) of one port."""

    if_index: int
    up: bool
    in_octets: int
    in_packets: int
    in_discards: int
    out_octets: int
    out_packets: int
    speed: int = 0  # bits/s; 0 unknown


def counter_sample(sequence: int, c: InterfaceCounters) -> bytes:
    status = 3 if c.up else 1  # bit 0 admin up, bit 1 oper up
    body = struct.pack(
        "!IIQIIQIIIIIIQIIIIII",
        c.if_index, IF_TYPE_ETHERNET, c.speed, 1, status,  # ifDirection 1: full-duplex
        c.in_octets, c.in_packets & U32, 0, 0, c.in_discards & U32, 0, 0,
        c.out_octets, c.out_packets & U32, 0, 0, 0, 0, 0,
    )  # fmt: skip
    record = _record(GENERIC_INTERFACE, body)
    head = struct.pack("!III", sequence & U32, c.if_index & 0xFF_FFFF, 1)
    return _record(COUNTERS_SAMPLE, head + record)


def datagram(
    agent: ipaddress.IPv4Address | ipaddress.IPv6Address, sequence: int, uptime_ms: int,
    samples: list[bytes],
) -> bytes:  # fmt: skip
    kind = 1 if agent.version == 4 else 2
    head = struct.pack("!II", VERSION, kind) + agent.packed
    head += struct.pack("!IIII", 0, sequence & U32, uptime_ms & U32, len(samples))
    return head + b"".join(samples)


def pack(samples: Iterable[bytes], room: int = DATAGRAM_MAX - 40) -> list[list[bytes]]:
    """Samples grouped into datagrams of at most `room` octets of samples each."""
    groups: list[list[bytes]] = []
    size = room
    for s in samples:
        if size + len(s) > room:
            groups.append([])
            size = 0
        groups[-1].append(s)
        size += len(s)
    return groups


@dataclass
class SflowStats:
    """What the exporter did since the agent started."""

    flow_samples: int = 0
    counter_samples: int = 0
    datagrams: int = 0
    send_errors: int = 0
    per_port_flow_samples: dict[int, int] = field(default_factory=dict)


class Encoder:
    """Sequence numbers and encoding; used from one executor call at a time."""

    def __init__(
        self, agent: ipaddress.IPv4Address | ipaddress.IPv6Address, if_indexes: list[int]
    ) -> None:
        self.agent = agent
        self.if_indexes = if_indexes
        self.started = time.monotonic()
        self.datagram_sequence = 0
        self.flow_sequence = [0] * len(if_indexes)
        self.counter_sequence = [0] * len(if_indexes)

    def _datagrams(self, samples: list[bytes]) -> list[bytes]:
        uptime = int((time.monotonic() - self.started) * 1000)
        out = []
        for group in pack(samples):
            self.datagram_sequence += 1
            out.append(datagram(self.agent, self.datagram_sequence, uptime, group))
        return out

    def flows(self, samples: list[SampleDict], stats: list[SampleStats]) -> list[bytes]:
        encoded = []
        for s in samples:
            port = s["port"]
            if not 0 <= port < len(self.if_indexes):
                continue
            self.flow_sequence[port] += 1
            out_port, dropped = s["out_port"], s["dropped"]
            if out_port is not None and 0 <= out_port < len(self.if_indexes):
                output = self.if_indexes[out_port]
            else:
                output = DISCARDED | DROP_CODES.get(dropped or "", REASON_UNKNOWN)
            st = stats[port]
            records = raw_header_record(s["header"], s["frame_len"])
            count = 1
            if out_port is not None:
                # Where a forwarded frame came from and went, as a switch reports it.
                records += extended_switch_record(
                    s["vlan"], ingress_priority(s["header"]),
                    s["out_vlan"] or 0, s["out_priority"] or 0,
                )  # fmt: skip
                count = 2
            encoded.append(
                flow_sample(
                    self.flow_sequence[port], self.if_indexes[port], max(st["rate"], 1),
                    max(st["pool"], s["pool"]), st["dropped"], output, records, count,
                )
            )  # fmt: skip
        return self._datagrams(encoded)

    def counters(self, ports: list[InterfaceCounters]) -> list[bytes]:
        encoded = []
        for i, c in enumerate(ports):
            self.counter_sequence[i] += 1
            encoded.append(counter_sample(self.counter_sequence[i], c))
        return self._datagrams(encoded)


def interface_counters(
    engine: EngineCounters, if_indexes: list[int], names: list[str], up: list[bool]
) -> list[InterfaceCounters]:
    """Per port, the engine's counters summed over its sub-interfaces (as GetCounters
    reports them), the drops of frames received on it as discards."""
    rx = [[0, 0] for _ in names]
    tx = [[0, 0] for _ in names]
    for s in engine["ports"]:
        p = s["port"]
        if 0 <= p < len(names):
            rx[p][0] += s["rx_packets"]
            rx[p][1] += s["rx_bytes"]
            tx[p][0] += s["tx_packets"]
            tx[p][1] += s["tx_bytes"]
    discards = [0] * len(names)
    for w in engine["workers"]:
        for i, name in enumerate(names):
            discards[i] += sum(w["port_drops"].get(name, {}).values())
    return [
        InterfaceCounters(
            if_index=if_indexes[i],
            up=up[i],
            in_octets=rx[i][1],
            in_packets=rx[i][0],
            in_discards=discards[i],
            out_octets=tx[i][1],
            out_packets=tx[i][0],
        )
        for i in range(len(names))
    ]


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, stats: SflowStats) -> None:
        self.stats = stats

    def error_received(self, exc: Exception) -> None:
        # An ICMP error from a collector (port unreachable): counted, the export goes on.
        self.stats.send_errors += 1


class SflowExporter:
    """Drains the engine's samples every DRAIN_INTERVAL and its counters every
    `counter_interval` seconds, and sends both to every collector."""

    def __init__(
        self,
        config: SflowConfig,
        engine: Engine,
        ports: list[tuple[str, int, int]],
        stats: SflowStats | None = None,
    ) -> None:
        """`ports`: (name, ifindex, sampling rate) in the engine's order; `stats`: where
        to count (shared by the exporters a reload replaces)."""
        self.config = config
        self.engine = engine
        self.names = [n for n, _, _ in ports]
        self.if_indexes = [i for _, i, _ in ports]
        self.rates = [r for _, _, r in ports]
        self.encoder = Encoder(config.agent_address, self.if_indexes)
        self.stats = stats if stats is not None else SflowStats()
        self._transports: dict[int, asyncio.DatagramTransport] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        from corridor.agent.neighbours import in_netns

        families = {c.family for c in self.config.collectors}
        try:
            for family in sorted(families):
                sock = await loop.run_in_executor(
                    None, in_netns, self.config.netns, lambda f=family: _udp_socket(f)
                )
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _Protocol(self.stats), sock=sock
                )
                self._transports[family] = transport
            await loop.run_in_executor(None, self.engine.set_sample_rates, self.rates)
        except BaseException:
            await self.stop()
            raise
        self._tasks = [loop.create_task(self._run(), name="sflow-export")]
        log.info(
            "sFlow to %s (rates %s, counters every %ss)",
            ", ".join(str(c) for c in self.config.collectors),
            dict(zip(self.names, self.rates, strict=True)),
            self.config.counter_interval,
        )

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except asyncio.CancelledError:
                pass
        self._tasks = []
        for transport in self._transports.values():
            transport.close()
        self._transports = {}

    def _send(self, datagrams: list[bytes]) -> None:
        for d in datagrams:
            for c in self.config.collectors:
                transport = self._transports.get(c.family)
                if transport is None:
                    continue
                try:
                    transport.sendto(d, (c.host, c.port))
                except OSError:
                    self.stats.send_errors += 1
            self.stats.datagrams += 1

    def _drain_and_encode(self) -> tuple[list[bytes], int, dict[int, int]]:
        samples = self.engine.drain_samples(DRAIN_MAX)
        if not samples:
            return [], 0, {}
        stats = self.engine.sample_stats()
        per_port: dict[int, int] = {}
        for s in samples:
            per_port[s["port"]] = per_port.get(s["port"], 0) + 1
        return self.encoder.flows(samples, stats), len(samples), per_port

    async def _run(self) -> None:
        """One task for both kinds of sample, so datagrams leave in the order of their
        sequence numbers and the encoder is used by one executor call at a time."""
        loop = asyncio.get_running_loop()
        interval = self.config.counter_interval
        next_counters = time.monotonic() + interval
        while True:
            try:
                datagrams, n, per_port = await loop.run_in_executor(None, self._drain_and_encode)
            except Exception:  # never stop exporting over one bad round
                log.exception("draining sFlow samples")
                datagrams, n, per_port = [], 0, {}
            self._send(datagrams)
            self.stats.flow_samples += n
            for p, k in per_port.items():
                self.stats.per_port_flow_samples[p] = self.stats.per_port_flow_samples.get(p, 0) + k
            if interval > 0 and time.monotonic() >= next_counters:
                # On the interval's grid: a slow round does not shift every later one, and
                # one that fell far behind starts a new grid rather than sending a burst.
                next_counters += interval
                if next_counters < time.monotonic():
                    next_counters = time.monotonic() + interval
                try:
                    datagrams = await loop.run_in_executor(None, self._read_counters)
                except Exception:
                    log.exception("reading counters for sFlow")
                else:
                    self._send(datagrams)
                    self.stats.counter_samples += len(self.names)
            await asyncio.sleep(DRAIN_INTERVAL)

    def _read_counters(self) -> list[bytes]:
        engine = self.engine.counters()
        links = {p["name"]: p["link_up"] for p in self.engine.ports()}
        up = [links.get(n, False) for n in self.names]
        return self.encoder.counters(interface_counters(engine, self.if_indexes, self.names, up))


def _udp_socket(family: int) -> socket.socket:
    s = socket.socket(family, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    s.setblocking(False)
    return s
