"""Links and neighbours of the router's namespace, followed live, turned into the facts the
next hops depend on (link up and MAC per port, the MAC of each gateway in use), and kept
resolved: every gateway in use gets a managed kernel neighbour entry (NTF_EXT_MANAGED,
Linux 5.16+), which the kernel itself keeps resolved and re-probes. An entry the agent made
is deleted once no adjacency has used its gateway for UNUSED_SECONDS (managed entries on the
ports' devices count as the agent's, so that those left by an earlier run go too).

Why a raw NETLINK_ROUTE socket rather than `ip monitor`: iproute2 6.1 (Debian 12) has no
JSON output for `ip monitor`, and its text is not a stable interface; the messages we need
(ifinfomsg with IFLA_IFNAME/IFLA_ADDRESS, ndmsg with NDA_DST/NDA_LLADDR) are a few fixed
structs. The socket is opened by a short-lived thread that entered the namespace (a socket
stays in the namespace it was created in), is non-blocking, and is read with
loop.add_reader: nothing blocks the event loop. Writing the entries is rare (once per new
gateway, again after a link flap flushed them), so it goes through `ip neigh replace ...
managed` as an asyncio subprocess.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Literal, TypeVar

from corridor.agent.nexthops import Gateway
from corridor.common.addresses import address_text

T = TypeVar("T")

log = logging.getLogger("corridor.agent")

NETLINK_ROUTE = 0
RTMGRP_LINK = 0x1
RTMGRP_NEIGH = 0x4
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
IFLA_ADDRESS, IFLA_IFNAME = 1, 3
NDA_DST, NDA_LLADDR, NDA_FLAGS_EXT = 1, 2, 15
NTF_EXT_MANAGED = 0x1
IFF_UP, IFF_LOWER_UP = 0x1, 0x10000
# NUD states with a usable link-layer address (include/uapi/linux/neighbour.h).
NUD_HAS_MAC = 0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80  # REACHABLE STALE DELAY PROBE NOARP PERMANENT
CLONE_NEWNET = 0x40000000
NLMSG_HEADER = struct.Struct("=IHHII")
IFINFOMSG = struct.Struct("=BxHiII")
NDMSG = struct.Struct("=BBHiHBB")
RTATTR = struct.Struct("=HH")
RESOLVE_RETRY_SECONDS = 1.0
# A gateway no adjacency uses keeps its entry this long (a route re-pointed back and forth
# does not make the kernel forget and re-probe it), and at least this long after a start
# (the controller re-writes the adjacencies after an agent restart).
UNUSED_SECONDS = 10.0
RECEIVE_BUFFER = 4 << 20


def _attributes(data: bytes, offset: int) -> dict[int, bytes]:
    attrs = {}
    while offset + 4 <= len(data):
        length, kind = RTATTR.unpack_from(data, offset)
        if length < 4:
            break
        attrs[kind & 0x3FFF] = data[offset + 4 : offset + length]
        offset += (length + 3) & ~3
    return attrs


def kernel_link_state(name: str) -> Literal["up", "down"] | None:
    """The kernel's operational state of interface `name` in this namespace (sysfs); None
    when there is no such interface. Blocking: call it from the executor."""
    try:
        state = (Path("/sys/class/net") / name / "operstate").read_text().strip()
    except OSError:
        return None
    # "unknown" is what interfaces without carrier detection (veth peers, tun) report up.
    return "up" if state in ("up", "unknown") else "down"


def kernel_ifindex(name: str) -> int:
    """The kernel's ifindex of interface `name` in this namespace (sysfs); 0 when there is no
    such interface. Blocking: call it from the executor."""
    try:
        return int((Path("/sys/class/net") / name / "ifindex").read_text())
    except (OSError, ValueError):
        return 0


def open_netlink(netns: str | None) -> socket.socket:
    """A non-blocking NETLINK_ROUTE socket subscribed to link and neighbour events, in
    `netns` (an `ip netns` name) or the caller's namespace."""

    def make() -> socket.socket:
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        s.bind((0, RTMGRP_LINK | RTMGRP_NEIGH))
        s.setblocking(False)
        return s

    return in_netns(netns, make)


def in_netns(netns: str | None, make: Callable[[], T]) -> T:
    """`make()` run in network namespace `netns` (an `ip netns` name), or here when None: a
    socket it opens stays in that namespace. Blocking for a moment (a thread is started)."""
    if netns is None:
        return make()
    result: list[T | OSError] = []

    def in_namespace() -> None:
        # This thread alone enters the namespace and ends right after.
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    e = ctypes.get_errno()
                    raise OSError(e, f"setns into {netns}: {os.strerror(e)}")
            finally:
                os.close(fd)
            result.append(make())
        except OSError as e:
            result.append(e)

    t = threading.Thread(target=in_namespace, name="corridor-netns")
    t.start()
    t.join()
    if isinstance(result[0], OSError):
        raise result[0]
    return result[0]


class LinkWatch:
    """Follows the namespace's links and neighbours and keeps the gateways in use resolved.
    `changed()` is called on the loop whenever a fact the next hops depend on changed."""

    def __init__(
        self, vlans: dict[str, tuple[int, ...]], netns: str | None, changed: Callable[[], None]
    ) -> None:
        """`vlans`: the VLANs of each port, by port name."""
        self.netns = netns
        self._changed = changed
        # Kernel device -> (port, VLAN): the port itself, and `<port>.<vlan>`.
        self.devices: dict[str, tuple[str, int]] = {}
        for name, ids in vlans.items():
            self.devices[name] = (name, 0)
            for v in ids:
                self.devices[f"{name}.{v}"] = (name, v)
        self.ifnames: dict[int, str] = {}  # ifindex -> name
        self.ifindexes: dict[str, int] = {}  # name -> ifindex
        self.link_up: dict[str, bool] = {}  # port -> up
        self.port_mac: dict[str, str] = {}
        self.neighbours: dict[Gateway, str] = {}  # resolved
        self.kernel_entries: set[Gateway] = set()  # any state
        self.managed_entries: set[Gateway] = set()  # NTF_EXT_MANAGED: made by the agent
        self.wanted: frozenset[Gateway] = frozenset()
        self._unused_since: dict[Gateway, float] = {}
        self._deleting: set[Gateway] = set()
        self.deleted = 0  # entries removed because no adjacency used them
        self._tried: dict[Gateway, float] = {}
        self._sock: socket.socket | None = None
        self._dumps: list[int] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self.events = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._sock = await loop.run_in_executor(None, open_netlink, self.netns)
        loop.add_reader(self._sock.fileno(), self._readable)
        self._dumps = [RTM_GETLINK, RTM_GETNEIGH]
        self._next_dump()
        self._ticker = asyncio.create_task(self._tick())

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        for t in list(self._tasks):
            t.cancel()
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    def ifindex(self, name: str) -> int:
        """The ifindex of device `name` in the watched namespace; 0 when it has none."""
        return self.ifindexes.get(name, 0)

    def want(self, gateways: frozenset[Gateway]) -> None:
        """The gateways in use now: entries are made for those the kernel lacks."""
        self.wanted = gateways
        self._resolve()

    def forget(self, gateways: Iterable[Gateway]) -> None:
        """Deletes now, not UNUSED_SECONDS later, the agent's entries of `gateways` that no
        one wants (a host's resolution given up: no reason to let the kernel keep probing
        it, or let a scan of an attached subnet fill the kernel's neighbour table)."""
        for g in gateways:
            # An entry still INCOMPLETE has sent no event yet (the kernel tells of its first
            # state change): one the agent made itself is deleted all the same.
            ours = g in self.managed_entries or g in self._tried
            if g not in self.wanted and ours and g not in self._deleting:
                self._tried.pop(g, None)
                self._deleting.add(g)
                self._spawn(self._delete(g))

    # --- netlink -----------------------------------------------------------------------

    def _next_dump(self) -> None:
        if not self._dumps or self._sock is None:
            return
        kind = self._dumps.pop(0)
        body = (
            IFINFOMSG.pack(0, 0, 0, 0, 0)
            if kind == RTM_GETLINK
            else NDMSG.pack(0, 0, 0, 0, 0, 0, 0)
        )
        header = NLMSG_HEADER.pack(
            NLMSG_HEADER.size + len(body), kind, NLM_F_REQUEST | NLM_F_DUMP, kind, 0
        )
        self._sock.send(header + body)

    def _readable(self) -> None:
        changed = False
        while self._sock is not None:
            try:
                data = self._sock.recv(1 << 20)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == errno.ENOBUFS:  # events lost: read everything again
                    log.warning("netlink: events overran the socket buffer; dumping again")
                    self._dumps = [RTM_GETLINK, RTM_GETNEIGH]
                    self._next_dump()
                    continue
                raise
            changed |= self._parse(data)
        if changed:
            self._changed()
            self._resolve()

    def _parse(self, data: bytes) -> bool:
        changed = False
        offset = 0
        while offset + NLMSG_HEADER.size <= len(data):
            length, kind, _flags, _seq, _pid = NLMSG_HEADER.unpack_from(data, offset)
            if length < NLMSG_HEADER.size:
                break
            body = data[offset + NLMSG_HEADER.size : offset + length]
            offset += (length + 3) & ~3
            self.events += 1
            if kind == NLMSG_DONE:
                self._next_dump()
            elif kind in (RTM_NEWLINK, RTM_DELLINK):
                changed |= self._link(kind, body)
            elif kind in (RTM_NEWNEIGH, RTM_DELNEIGH):
                changed |= self._neighbour(kind, body)
        return changed

    def _link(self, kind: int, body: bytes) -> bool:
        if len(body) < IFINFOMSG.size:
            return False
        _family, _type, index, flags, _change = IFINFOMSG.unpack_from(body)
        attrs = _attributes(body, IFINFOMSG.size)
        name = attrs.get(IFLA_IFNAME, b"").rstrip(b"\0").decode(
            errors="replace"
        ) or self.ifnames.get(index, "")
        if kind == RTM_DELLINK:
            self.ifnames.pop(index, None)
            if self.ifindexes.get(name) == index:
                del self.ifindexes[name]
        else:
            old = self.ifnames.get(index)
            if old is not None and old != name and self.ifindexes.get(old) == index:
                del self.ifindexes[old]  # renamed
            self.ifnames[index] = name
            self.ifindexes[name] = index
        where = self.devices.get(name)
        if where is None or where[1] != 0:
            return False  # not a port (VLAN devices follow their port's link)
        port = where[0]
        up = kind == RTM_NEWLINK and bool(flags & IFF_UP) and bool(flags & IFF_LOWER_UP)
        mac = attrs.get(IFLA_ADDRESS)
        before = (self.link_up.get(port), self.port_mac.get(port))
        self.link_up[port] = up
        if mac is not None and len(mac) == 6:
            self.port_mac[port] = mac.hex(":")
        if up and before[0] is False:
            self._tried.clear()  # the flap flushed the entries: make them again at once
        return before != (self.link_up[port], self.port_mac.get(port))

    def _neighbour(self, kind: int, body: bytes) -> bool:
        if len(body) < NDMSG.size:
            return False
        _family, _, _, index, state, _flags, _type = NDMSG.unpack_from(body)
        attrs = _attributes(body, NDMSG.size)
        where = self.devices.get(self.ifnames.get(index, ""))
        dst = attrs.get(NDA_DST)
        if where is None or dst is None or len(dst) not in (4, 16):
            return False
        gateway = Gateway(where[0], where[1], address_text(dst))
        mac = attrs.get(NDA_LLADDR)
        before = self.neighbours.get(gateway)
        flags_ext = attrs.get(NDA_FLAGS_EXT, b"")
        managed = len(flags_ext) >= 4 and bool(
            struct.unpack_from("=I", flags_ext)[0] & NTF_EXT_MANAGED
        )
        if kind == RTM_DELNEIGH:
            self.kernel_entries.discard(gateway)
            self.managed_entries.discard(gateway)
            self.neighbours.pop(gateway, None)
        else:
            self.kernel_entries.add(gateway)
            if managed:
                self.managed_entries.add(gateway)
            else:
                self.managed_entries.discard(gateway)
            if state & NUD_HAS_MAC and mac is not None and len(mac) == 6:
                self.neighbours[gateway] = mac.hex(":")
            else:
                self.neighbours.pop(gateway, None)
        return before != self.neighbours.get(gateway)

    # --- keeping gateways resolved ----------------------------------------------------

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(RESOLVE_RETRY_SECONDS)
            self._resolve()

    def _resolve(self) -> None:
        now = time.monotonic()
        for g in self.wanted:
            # An entry the kernel has (managed, whatever its state) the kernel probes itself;
            # only a missing one (never made, or flushed by a link flap) is made again.
            if g in self.kernel_entries or not self.link_up.get(g.port, False):
                continue
            if now - self._tried.get(g, -1e9) < RESOLVE_RETRY_SECONDS:
                continue
            self._tried[g] = now
            self._spawn(self._replace(g))
        self._forget_unused(now)

    def _forget_unused(self, now: float) -> None:
        """Deletes the agent's entries whose gateway no adjacency used for UNUSED_SECONDS."""
        unused = self.managed_entries - self.wanted
        for g in list(self._unused_since):
            if g not in unused:
                del self._unused_since[g]
        for g in unused:
            since = self._unused_since.setdefault(g, now)
            if now - since >= UNUSED_SECONDS and g not in self._deleting:
                self._deleting.add(g)
                self._spawn(self._delete(g))

    def _spawn(self, work: Coroutine[None, None, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ip(self, *args: str) -> bool:
        netns = ("-n", self.netns) if self.netns else ()
        command = ("ip", *netns, *args)
        process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        _, stderr = await process.communicate()
        if process.returncode != 0:
            log.warning("%s: %s", " ".join(command), stderr.decode().strip())
        return process.returncode == 0

    async def _delete(self, g: Gateway) -> None:
        try:
            # The kernel's event takes it out of managed_entries; a gateway wanted again
            # meanwhile is simply made again by _resolve.
            if g not in self.wanted and await self._ip(
                "neigh", "del", g.address, "dev", _device(g)
            ):
                self.deleted += 1
                log.info("neighbour %s on %s: deleted, nothing uses it", g.address, _device(g))
        finally:
            self._deleting.discard(g)

    async def _replace(self, g: Gateway) -> None:
        await self._ip("neigh", "replace", g.address, "dev", _device(g), "managed")


def _device(g: Gateway) -> str:
    return g.port if g.vlan == 0 else f"{g.port}.{g.vlan}"
