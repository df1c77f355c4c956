"""The FPM listener: zebra (`-M dplane_fpm_nl`) connects over TCP and streams netlink messages,
each behind a 4-byte FPM header; updates reach a sink in batches, one batch per read.

Bad input is counted by reason and logged (rate-limited). A bad message inside a good frame is
skipped; the connection is closed only when the FPM framing itself is broken (an unknown
version or a length shorter than the header), since the next frame's start is then unknown.
FPM has no authentication: a listener beyond loopback needs the list of allowed peers.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Protocol

from corridor._dataplane import fpm_scan
from corridor.fpm.netlink import (
    NLMSG_HEADER,
    ROUTE_TYPES,
    RTM_DELNEXTHOP,
    RTM_DELROUTE,
    RTM_NEWNEXTHOP,
    RTM_NEWROUTE,
    DecodeError,
    address_from_bytes,
    decode_message,
    message_type,
)
from corridor.fpm.nexthops import NextHopTable
from corridor.fpm.routes import IPAddress, NextHop, Operation, RouteUpdate, Update

log = logging.getLogger(__name__)

ADD, DELETE = Operation.ADD, Operation.DELETE

DEFAULT_PORT = 2620  # zebra's `fpm address A.B.C.D [port (1-65535)]` default

# The FPM header (FRR fpm/fpm.h): version, message type, and the frame's length in network
# byte order, the 4 header bytes included. So a frame is at most 65535 bytes.
FPM_HEADER = struct.Struct("!BBH")
FPM_VERSION = 1
FPM_TYPE_NETLINK = 1
MAX_FRAME = 0xFFFF
READ_SIZE = 1 << 16  # one read, one batch: about 1000 routes at most

KNOWN_TYPES = (RTM_NEWROUTE, RTM_DELROUTE, RTM_NEWNEXTHOP, RTM_DELNEXTHOP)


@dataclass(frozen=True, slots=True)
class Peer:
    """The far end of one FPM connection."""

    address: IPAddress
    port: int

    def __str__(self) -> str:
        if self.address.version == 6:
            return f"[{self.address}]:{self.port}"
        return f"{self.address}:{self.port}"


class FpmSink(Protocol):
    """What the listener feeds: the controller implements it. The listener awaits each call
    before reading on, so a slow sink slows zebra through TCP instead of queueing without
    bound."""

    async def connection_up(self, peer: Peer) -> None: ...

    async def updates(self, peer: Peer, batch: Sequence[Update]) -> None:
        """Everything decoded from one read, in order. Routes have concrete next hops."""

    async def connection_down(self, peer: Peer, reason: str) -> None: ...


@dataclass(slots=True)
class FpmCounters:
    """Monotonic counters of one listener, summed over its connections."""

    connections_accepted: int = 0
    connections_refused: int = 0
    connections_closed: int = 0
    frames: int = 0
    messages: int = 0  # netlink messages decoded and delivered
    routes_added: int = 0
    routes_deleted: int = 0
    nexthops_added: int = 0
    nexthops_deleted: int = 0
    updates_held: int = 0  # routes and groups that arrived before an object they name
    errors: dict[str, int] = field(default_factory=dict)  # by reason

    def error(self, reason: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1


class ReasonLog:
    """At most `burst` lines per reason per `interval` seconds; the rest are counted and
    reported in the next line of that reason (a flood of bad input must not flood the log)."""

    def __init__(self, burst: int = 5, interval: float = 10.0) -> None:
        self.burst, self.interval = burst, interval
        self._window: dict[str, tuple[float, int, int]] = {}  # start, logged, suppressed

    def warning(self, reason: str, message: str) -> None:
        now = time.monotonic()
        start, logged, suppressed = self._window.get(reason, (now, 0, 0))
        if now - start >= self.interval:
            start, logged = now, 0
        if logged >= self.burst:
            self._window[reason] = (start, logged, suppressed + 1)
            return
        if suppressed:
            message += f" ({suppressed} more {reason} not logged)"
        log.warning("fpm %s: %s", reason, message)
        self._window[reason] = (start, logged + 1, 0)


class FramingError(Exception):
    """The FPM stream cannot be resynchronised: the connection must close."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class FpmConnection:
    """The decoding state of one connection: the unread tail of the stream and the
    next-hop objects. Pure: bytes in, updates out; no socket, so tests can drive it."""

    fast = True  # False: every frame through the Python decoder (the reference, in tests)

    def __init__(self, peer: Peer, counters: FpmCounters, reasons: ReasonLog) -> None:
        self.peer, self.counters, self.reasons = peer, counters, reasons
        self.nexthops = NextHopTable()
        self.failed: str | None = None  # the reason, once the framing is broken
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes received but not yet a whole frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Update]:
        """The updates of every whole frame in the stream so far. When the framing breaks,
        `failed` is set, the updates decoded before the break are still returned, and the
        caller must close the connection."""
        if self.failed is not None:
            return []
        self._buffer += data
        buffer = bytes(self._buffer)
        out: list[Update] = []
        offset = 0
        try:
            while len(buffer) - offset >= FPM_HEADER.size:
                if self.fast:
                    # Runs of plain route frames, read in Rust; it stops at any frame it is
                    # not sure of, which the code below then takes with its full checks.
                    offset = self._fast_run(buffer, offset, out)
                    if len(buffer) - offset < FPM_HEADER.size:
                        break
                version, kind, length = FPM_HEADER.unpack_from(buffer, offset)
                if version != FPM_VERSION:
                    raise FramingError(
                        "bad_fpm_version",
                        f"FPM version {version} at stream byte {offset}, expected "
                        f"{FPM_VERSION}: not an FPM stream, or out of step",
                    )
                if length < FPM_HEADER.size:
                    raise FramingError(
                        "bad_fpm_length",
                        f"FPM frame length {length} is shorter than its own 4-byte header",
                    )
                if len(buffer) - offset < length:
                    break  # the rest of the frame has not arrived yet
                frame = buffer[offset + FPM_HEADER.size : offset + length]
                offset += length
                self.counters.frames += 1
                if kind != FPM_TYPE_NETLINK:
                    self.refuse(
                        "unknown_fpm_type",
                        f"FPM message type {kind} ({length} bytes) skipped: only netlink (1) "
                        "is understood (set zebra's module to dplane_fpm_nl)",
                    )
                    continue
                self._frame(frame, out)
        except FramingError as error:
            self.failed = error.reason
            self.refuse(error.reason, f"{error}; closing the connection")
            self._buffer.clear()
            return out
        del self._buffer[:offset]
        return out

    def _fast_run(self, buffer: bytes, offset: int, out: list[Update]) -> int:
        """The route frames from `offset` that corridor._dataplane.fpm_scan reads (each one
        netlink route message that the fast path decodes), as `_frame` would have delivered
        them; the offset of the first frame it left."""
        end, routes, sets = fpm_scan(buffer, offset)
        if not routes:
            return end
        hop_sets = [
            tuple(
                NextHop(None if g is None else address_from_bytes(g), ifindex, w)
                for g, ifindex, w in hops
            )
            for hops in sets
        ]
        counters, nexthops = self.counters, self.nexthops
        counters.frames += len(routes)
        for add, prefix, rtype, table, protocol, hops, nexthop_id in routes:
            route = RouteUpdate(
                ADD if add else DELETE,
                prefix,
                ROUTE_TYPES[rtype],
                table,
                protocol,
                () if hops is None else hop_sets[hops],
                nexthop_id,
            )
            held = nexthops.held
            try:
                updates = nexthops.apply(route)
            except DecodeError as error:
                self.refuse(error.reason, str(error))
                continue
            counters.messages += 1
            counters.updates_held += nexthops.held - held
            if nexthops.late_errors:
                for late in nexthops.late_errors:
                    self.refuse(late.reason, str(late))
                nexthops.late_errors.clear()
            for update in updates:
                self._count(update)
            out.extend(updates)
        return end

    def drop_waiting(self) -> None:
        """Count what still waits for a next-hop object when the connection ends."""
        waiting = self.nexthops.waiting
        if waiting:
            self.counters.errors["unknown_nexthop_id"] = (
                self.counters.errors.get("unknown_nexthop_id", 0) + waiting
            )
            self.reasons.warning(
                "unknown_nexthop_id",
                f"from {self.peer}: {waiting} routes or groups still waited for next-hop "
                "objects zebra never sent when the connection ended; dropped",
            )

    def close(self) -> str | None:
        """The reason to count when the stream ends, if it ended inside a frame."""
        if self._buffer:
            reason = "truncated_frame"
            self.refuse(
                reason,
                f"connection closed {len(self._buffer)} bytes into a frame: the frame's "
                "length field reaches past the end of the stream",
            )
            self._buffer.clear()
            return reason
        return None

    def _frame(self, frame: bytes, out: list[Update]) -> None:
        """Each netlink message of one frame (zebra sends one per frame; more are allowed)."""
        offset = 0
        while offset < len(frame):
            if len(frame) - offset < NLMSG_HEADER.size:
                self.refuse(
                    "truncated_message",
                    f"{len(frame) - offset} bytes left in the frame, a netlink header needs "
                    f"{NLMSG_HEADER.size}",
                )
                return
            length = NLMSG_HEADER.unpack_from(frame, offset)[0]
            if length < NLMSG_HEADER.size or length > len(frame) - offset:
                self.refuse(
                    "netlink_length",
                    f"netlink length {length} is not between {NLMSG_HEADER.size} and the "
                    f"{len(frame) - offset} bytes left in its FPM frame; rest of frame skipped",
                )
                return
            message = frame[offset : offset + length]
            offset += (length + 3) & ~3
            kind = message_type(message)
            if kind not in KNOWN_TYPES:
                self.refuse(
                    "unknown_message_type",
                    f"netlink message type {kind} skipped: only routes (24, 25) and next-hop "
                    "objects (104, 105) are understood",
                )
                continue
            held = self.nexthops.held
            try:
                updates = self.nexthops.apply(decode_message(message))
            except DecodeError as error:
                self.refuse(error.reason, str(error))
                continue
            self.counters.messages += 1
            self.counters.updates_held += self.nexthops.held - held
            for late in self.nexthops.late_errors:
                self.refuse(late.reason, str(late))
            self.nexthops.late_errors.clear()
            for update in updates:
                self._count(update)
            out.extend(updates)

    def _count(self, update: Update) -> None:
        add = update.op is Operation.ADD
        if isinstance(update, RouteUpdate):
            if add:
                self.counters.routes_added += 1
            else:
                self.counters.routes_deleted += 1
        elif add:
            self.counters.nexthops_added += 1
        else:
            self.counters.nexthops_deleted += 1

    def refuse(self, reason: str, detail: str) -> None:
        self.counters.error(reason)
        self.reasons.warning(reason, f"from {self.peer}: {detail}")


class FpmListener:
    """A running listener: its counters, and `stop()` which closes the socket and every
    connection (zebra then reconnects and replays to whichever listener comes next)."""

    def __init__(self, sink: FpmSink, allowed: frozenset[IPAddress] | None) -> None:
        self.sink = sink
        self.allowed = allowed
        self.counters = FpmCounters()
        self.reasons = ReasonLog()
        self.server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def connections(self) -> int:
        return len(self._connections)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.server is not None:
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._connection(reader, writer)
        except asyncio.CancelledError:
            pass  # stop() cancels connections; asyncio would log a cancelled handler task
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = writer.get_extra_info("peername")[:2]
        peer = Peer(_unmapped(ip_address(host)), int(port))
        if self.allowed is not None and peer.address not in self.allowed:
            self.counters.connections_refused += 1
            self.counters.error("peer_refused")
            self.reasons.warning(
                "peer_refused",
                f"connection from {peer} refused: not in the allowed peers "
                f"({', '.join(sorted(map(str, self.allowed)))})",
            )
            return
        self.counters.connections_accepted += 1
        log.info("fpm: zebra connected from %s", peer)
        state = FpmConnection(peer, self.counters, self.reasons)
        reason = "closed by peer"
        await self.sink.connection_up(peer)
        try:
            while True:
                data = await reader.read(READ_SIZE)
                if not data:
                    reason = state.close() or reason
                    break
                # Decoding is CPU work (about 5 us a route, so a few ms a read), done on the
                # loop: a thread would hold the GIL in 5 ms slices all the same, and the
                # hand-off to it and back cost a tenth of the feed's time.
                batch = state.feed(data)
                if batch:
                    await self.sink.updates(peer, batch)
                if state.failed is not None:
                    reason = state.failed
                    break
                await asyncio.sleep(0)  # a read of buffered data does not yield: others' turn
        except asyncio.CancelledError:
            reason = "listener stopped"
            raise
        except OSError as error:
            reason = f"socket error: {error}"
        except Exception as error:  # the sink failed: zebra reconnects and replays
            log.exception("fpm: the sink failed on updates from %s; closing", peer)
            reason = f"sink error: {error}"
        finally:
            state.drop_waiting()
            self.counters.connections_closed += 1
            log.info("fpm: connection from %s down: %s", peer, reason)
            await asyncio.shield(self.sink.connection_down(peer, reason))


def _unmapped(address: IPAddress) -> IPAddress:
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _parse_address(text: str, what: str) -> IPAddress:
    try:
        return ip_address(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not an IPv4 or IPv6 address") from None


async def start_listener(
    host: str,
    port: int,
    sink: FpmSink,
    allowed_peers: Iterable[str] | None = None,
    netns: str | None = None,
) -> tuple[FpmListener, int]:
    """Listen for zebra on host:port (port 0: any free port) and return the listener and the
    bound port.

    `allowed_peers`: the addresses zebra may connect from; required unless `host` is a
    loopback address (then None allows any loopback peer). `netns`: bind the socket inside
    that named network namespace (/run/netns/NAME), for a zebra that runs there."""
    address = _parse_address(host, "fpm listen address")
    allowed: frozenset[IPAddress] | None = None
    if allowed_peers is not None:
        allowed = frozenset(_unmapped(_parse_address(p, "fpm allowed peer")) for p in allowed_peers)
    if not address.is_loopback and not allowed:
        raise ValueError(
            f"fpm listen address {host} is beyond loopback and FPM has no authentication: "
            "give allowed_peers, the addresses zebra connects from (or listen on 127.0.0.1)"
        )
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"fpm port {port} is not between 0 and 65535")
    listener = FpmListener(sink, allowed)
    sock = _bound_socket(address, port, netns)
    try:
        listener.server = await asyncio.start_server(listener._serve, sock=sock)
    except BaseException:
        sock.close()
        raise
    bound = int(sock.getsockname()[1])
    log.info("fpm: listening on %s port %d%s", host, bound, f" in {netns}" if netns else "")
    return listener, bound


def _bound_socket(
    address: IPv4Address | IPv6Address, port: int, netns: str | None
) -> socket.socket:
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6

    def bind() -> socket.socket:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((str(address), port))
            sock.listen(16)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    if netns is None:
        return bind()
    # A socket stays in the namespace it was made in. setns(2) moves only the calling
    # thread, so a short-lived thread of its own enters the namespace and makes the socket
    # (never an executor thread, which would stay there and serve other work).
    made: list[socket.socket] = []
    failed: list[BaseException] = []

    def in_namespace() -> None:
        try:
            _enter_netns(netns)
            made.append(bind())
        except BaseException as error:
            failed.append(error)

    thread = threading.Thread(target=in_namespace, name=f"fpm-bind-{netns}")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return made[0]


def _enter_netns(name: str) -> None:
    clone_newnet = 0x40000000
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, clone_newnet) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns into network namespace {name}: {os.strerror(errno)}")
    finally:
        os.close(fd)
