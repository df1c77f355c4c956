"""Helpers of the FPM tests: netlink messages built with pyroute2's encoders, FPM frames, and a
sink that records what a listener delivers and keeps the resulting routing table."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from ipaddress import ip_network
from typing import Any

from corridor.common.addresses import prefix_text
from corridor.fpm import NextHopUpdate, Operation, Peer, RouteUpdate, Update
from corridor.fpm.netlink import (
    RTM_DELNEXTHOP,
    RTM_DELROUTE,
    RTM_NEWNEXTHOP,
    RTM_NEWROUTE,
    fpm_rtmsg,
    nhmsg,
)

NLM_F_REQUEST, NLM_F_CREATE, NLM_F_REPLACE = 0x1, 0x400, 0x100


def canon(prefix: object) -> str:
    """A prefix (text or ipaddress network) as the decoder delivers it: canonical text."""
    net = ip_network(str(prefix))
    return prefix_text(net.network_address.packed, net.prefixlen)


def family_of(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def route_message(
    prefix: str,
    *,
    delete: bool = False,
    rtype: int = 1,
    table: int = 254,
    proto: int = 186,
    gateway: str | None = None,
    via: str | None = None,
    oif: int | None = None,
    multipath: Sequence[dict[str, Any]] | None = None,
    nh_id: int | None = None,
    family: int | None = None,
) -> bytes:
    """An RTM_NEWROUTE / RTM_DELROUTE as zebra's dplane_fpm_nl writes it. `multipath`: dicts
    of gateway / via / oif / weight."""
    address = prefix.split("/")[0]  # kept as given: tests send host bits on purpose
    net = ip_network(prefix, strict=False)
    message = fpm_rtmsg()
    message["header"]["type"] = RTM_DELROUTE if delete else RTM_NEWROUTE
    message["header"]["flags"] = NLM_F_REQUEST | (0 if delete else NLM_F_CREATE | NLM_F_REPLACE)
    message["family"] = family or (socket.AF_INET6 if net.version == 6 else socket.AF_INET)
    message["dst_len"] = net.prefixlen
    message["table"] = table if table < 256 else 252
    message["proto"] = proto
    message["type"] = rtype
    attrs: list[tuple[str, Any]] = [("RTA_DST", address)]
    if table >= 256:
        attrs.append(("RTA_TABLE", table))
    if gateway is not None:
        attrs.append(("RTA_GATEWAY", gateway))
    if via is not None:
        attrs.append(("RTA_VIA", {"family": family_of(via), "addr": via}))
    if oif is not None:
        attrs.append(("RTA_OIF", oif))
    if nh_id is not None:
        attrs.append(("RTA_NH_ID", nh_id))
    if multipath is not None:
        hops = []
        for hop in multipath:
            nested: list[tuple[str, Any]] = []
            if hop.get("gateway") is not None:
                nested.append(("RTA_GATEWAY", hop["gateway"]))
            if hop.get("via") is not None:
                nested.append(("RTA_VIA", {"family": family_of(hop["via"]), "addr": hop["via"]}))
            hops.append(
                {"oif": hop.get("oif", 0), "hops": hop.get("weight", 1) - 1, "attrs": nested}
            )
        attrs.append(("RTA_MULTIPATH", hops))
    message["attrs"] = attrs
    message.encode()
    return bytes(message.data)


def nexthop_message(
    nh_id: int,
    *,
    delete: bool = False,
    gateway: str | None = None,
    oif: int | None = None,
    blackhole: bool = False,
    group: Sequence[tuple[int, int]] | None = None,
) -> bytes:
    """An RTM_NEWNEXTHOP / RTM_DELNEXTHOP. `group`: (id, weight) pairs."""
    message = nhmsg()
    message["header"]["type"] = RTM_DELNEXTHOP if delete else RTM_NEWNEXTHOP
    message["header"]["flags"] = NLM_F_REQUEST | (0 if delete else NLM_F_CREATE | NLM_F_REPLACE)
    message["family"] = family_of(gateway) if gateway else socket.AF_UNSPEC
    attrs: list[tuple[str, Any]] = [("NHA_ID", nh_id)]
    if gateway is not None:
        attrs.append(("NHA_GATEWAY", gateway))
    if oif is not None:
        attrs.append(("NHA_OIF", oif))
    if blackhole:
        attrs.append(("NHA_BLACKHOLE", True))
    if group is not None:
        attrs.append(("NHA_GROUP", list(group)))
    message["attrs"] = attrs
    message.encode()
    return bytes(message.data)


def netlink_message(kind: int, body: bytes) -> bytes:
    """A netlink message of any type, by hand: header and body."""
    return struct.pack("=IHHII", 16 + len(body), kind, NLM_F_REQUEST, 0, 0) + body


def with_attribute(message: bytes, kind: int, payload: bytes) -> bytes:
    """`message` with one more attribute, by hand (for attributes no encoder would write)."""
    attribute = struct.pack("=HH", 4 + len(payload), kind) + payload
    attribute += b"\x00" * (-len(attribute) % 4)
    out = bytearray(message + attribute)
    struct.pack_into("=I", out, 0, len(out))
    return bytes(out)


async def closed_by_far_end(reader: asyncio.StreamReader, seconds: float = 10) -> bool:
    """True once the far end has closed (a reset counts: it closed with our data unread)."""
    try:
        return await asyncio.wait_for(reader.read(), seconds) == b""
    except ConnectionResetError:
        return True


def frame(payload: bytes, *, version: int = 1, kind: int = 1, length: int | None = None) -> bytes:
    """An FPM frame: the 4-byte header (network order, length including itself) and payload."""
    size = len(payload) + 4 if length is None else length
    return struct.pack("!BBH", version, kind, size) + payload


@dataclass
class RecordingSink:
    """Implements FpmSink: records every call, and keeps the routing table the updates build
    (table, prefix) -> RouteUpdate, and the next-hop objects id -> NextHopUpdate."""

    events: list[tuple[str, Peer, Any]] = field(default_factory=list)
    updates_seen: list[Update] = field(default_factory=list)
    routes: dict[tuple[int, Any], RouteUpdate] = field(default_factory=dict)
    nexthops: dict[int, NextHopUpdate] = field(default_factory=dict)
    batches: int = 0
    deletes: list[RouteUpdate] = field(default_factory=list)
    first_update: float | None = None
    last_update: float | None = None

    async def connection_up(self, peer: Peer) -> None:
        self.events.append(("up", peer, None))

    async def updates(self, peer: Peer, batch: Sequence[Update]) -> None:
        assert batch, "the listener must not deliver an empty batch"
        now = time.monotonic()
        self.first_update = self.first_update or now
        self.last_update = now
        self.batches += 1
        self.updates_seen.extend(batch)
        for update in batch:
            if isinstance(update, RouteUpdate):
                key = (update.table, update.prefix)
                if update.op is Operation.ADD:
                    self.routes[key] = update
                else:
                    self.deletes.append(update)
                    self.routes.pop(key, None)
            elif update.op is Operation.ADD:
                self.nexthops[update.id] = update
            else:
                self.nexthops.pop(update.id, None)

    async def connection_down(self, peer: Peer, reason: str) -> None:
        self.events.append(("down", peer, reason))

    @property
    def downs(self) -> list[str]:
        return [reason for kind, _, reason in self.events if kind == "down"]

    @property
    def ups(self) -> int:
        return sum(1 for kind, _, _ in self.events if kind == "up")


async def wait_until(
    predicate: Callable[[], bool], seconds: float, what: str, poll: float = 0.05
) -> None:
    """Poll `predicate` until it holds; fail naming `what` when `seconds` pass."""
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        await asyncio.sleep(poll)
