"""Helpers of the FPM tests: netlink messages built with pyroute2's encoders, FPM frames, and a
sink that records what a listener delivers and keeps the resulting routing table."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

from corridor.fpm import NextHopUpdate, Operation, Peer, RouteUpdate, Update
from corridor.fpm.netlink import (
    RTM_DELNEXTHOP,
    RTM_DELROUTE,
    RTM_NEWNEXTHOP,
    RTM_NEWROUTE,
    fpm_rtmsg,
    nhmsg,
)
from corridor.fpm.routes import IPAddress, IPNetwork

NLM_F_REQUEST, NLM_F_CREATE, NLM_F_REPLACE = 0x1, 0x400, 0x100


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


# -- a lab with real daemons: FRR (zebra with dplane_fpm_nl, bgpd, staticd) and a BIRD peer --

FRR_DIR = Path("/usr/lib/frr")
ROUTER_AS, PEER_AS = 64512, 64513
ROUTER_V4, PEER_V4 = "198.18.200.1", "198.18.200.2"
ROUTER_V6, PEER_V6 = "2001:db8:200::1", "2001:db8:200::2"
DISCARD_V4 = "198.19.255.1"  # the RTBH route-map's next hop, routed to a static blackhole
RTBH_PREFIX = "198.19.66.0/24"  # announced with 65535:666
VIA_V6_PREFIX = "198.19.46.0/24"  # an IPv4 route announced over IPv6 (RFC 8950)
# Never announced from the tables: the lab's own addresses and what routing cannot carry.
RESERVED = [
    ip_network(n)
    for n in ("0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "198.18.0.0/15", "224.0.0.0/3",
              "::/8", "2001:db8::/32", "fe80::/10", "ff00::/8")
]  # fmt: skip


def missing_tools() -> list[str]:
    """The programs the lab needs that are not installed (Debian packages frr and bird2)."""
    wanted = [FRR_DIR / d for d in ("zebra", "bgpd", "staticd")] + [
        Path(shutil.which(p) or f"/usr/sbin/{p}") for p in ("vtysh", "bird", "birdc")
    ]
    found = [p for p in wanted if not p.exists()]
    module = Path("/usr/lib/x86_64-linux-gnu/frr/modules/dplane_fpm_nl.so")
    if not module.exists():
        found.append(module)
    return [str(p) for p in found]


def table_slice(path: Path, count: int) -> list[IPNetwork]:
    """About `count` prefixes spread evenly over a real table (`prefix [asn]` per line, gzip),
    none overlapping RESERVED."""
    with gzip.open(path, "rt") as lines:
        prefixes = [line.split()[0] for line in lines if line.strip()]
    stride = max(1, len(prefixes) // count)
    out: list[IPNetwork] = []
    for text in prefixes[::stride]:
        net = ip_network(text)
        if not any(net.version == r.version and net.overlaps(r) for r in RESERVED):
            out.append(net)
    return out


def _run(*args: str, timeout: float = 30) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


@dataclass
class FrrLab:
    """Two `cor-` namespaces joined by a veth: the router (zebra, staticd, bgpd) and its eBGP
    peer (BIRD) announcing `routes4` over IPv4, `routes6` and one IPv4 prefix over IPv6."""

    routes4: list[IPNetwork]
    routes6: list[IPNetwork]
    nexthop_groups: bool
    tag: str = field(default_factory=lambda: f"{os.getpid() % 100000}")
    dir: Path = field(init=False)
    daemons: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # FRR's daemons drop to user frr: their directory must be theirs, outside pytest's
        # root-only tmp tree.
        self.dir = Path(tempfile.mkdtemp(prefix="cor-fpm-"))
        self.dir.chmod(0o755)

    @property
    def router(self) -> str:
        return f"cor-fpm{self.tag}-r"

    @property
    def peer(self) -> str:
        return f"cor-fpm{self.tag}-p"

    def create_network(self) -> None:
        for ns in (self.router, self.peer):
            _run("ip", "netns", "add", ns)
            _run("ip", "-n", ns, "link", "set", "lo", "up")
            for key in ("all", "default"):  # addresses usable at once, link-local included
                _run(
                    "ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{key}.accept_dad=0"
                )
        _run("ip", "-n", self.router, "link", "add", "vr", "type", "veth", "peer", "name", "vp",
             "netns", self.peer)  # fmt: skip
        for ns, dev, v4, v6 in (
            (self.router, "vr", ROUTER_V4, ROUTER_V6),
            (self.peer, "vp", PEER_V4, PEER_V6),
        ):
            _run("ip", "-n", ns, "addr", "add", f"{v4}/24", "dev", dev)
            _run("ip", "-n", ns, "addr", "add", f"{v6}/64", "dev", dev, "nodad")
            _run("ip", "-n", ns, "link", "set", dev, "up")

    def ifindex(self) -> int:
        """The router's veth, as zebra names it in RTA_OIF."""
        return int(
            json.loads(_run("ip", "-n", self.router, "-j", "link", "show", "vr"))[0]["ifindex"]
        )

    def peer_link_local(self, seconds: float = 10) -> IPAddress:
        """The peer's fe80:: address (the kernel adds it once the link is up)."""
        deadline = time.monotonic() + seconds
        while True:
            shown = json.loads(
                _run(
                    "ip", "-n", self.peer, "-j", "-6", "addr", "show", "dev", "vp", "scope", "link"
                )
            )
            for info in shown[0]["addr_info"] if shown else ():
                if "local" in info:  # iproute2 prints {} for the addresses it filtered out
                    return ip_address(info["local"])
            if time.monotonic() > deadline:
                raise RuntimeError(f"no link-local address on {self.peer}'s vp after {seconds} s")
            time.sleep(0.05)

    # -- configuration ----------------------------------------------------------------------

    def write_frr(self, fpm_port: int) -> None:
        nhg = "fpm use-next-hop-groups" if self.nexthop_groups else "no fpm use-next-hop-groups"
        (self.dir / "zebra.conf").write_text(
            f"hostname {self.router}\nfpm address 127.0.0.1 port {fpm_port}\n{nhg}\n"
        )
        (self.dir / "staticd.conf").write_text(f"ip route {DISCARD_V4}/32 blackhole\n")
        (self.dir / "bgpd.conf").write_text(BGPD_CONF.format(
            router_as=ROUTER_AS, peer_as=PEER_AS, router_v4=ROUTER_V4, peer_v4=PEER_V4,
            peer_v6=PEER_V6, discard=DISCARD_V4,
        ))  # fmt: skip

    def write_bird(self) -> None:
        (self.dir / "bird.conf").write_text(BIRD_CONF.format(
            router_as=ROUTER_AS, peer_as=PEER_AS, router_v4=ROUTER_V4, peer_v4=PEER_V4,
            router_v6=ROUTER_V6, peer_v6=PEER_V6, rtbh=RTBH_PREFIX, via_v6=VIA_V6_PREFIX,
            routes4="".join(f"  route {n} blackhole;\n" for n in self.routes4),
            routes6="".join(f"  route {n} blackhole;\n" for n in self.routes6),
        ))  # fmt: skip

    # -- daemons ------------------------------------------------------------------------------

    def _start(self, name: str, ns: str, *argv: str) -> None:
        log = open(self.dir / f"{name}.log", "wb")
        self.daemons[name] = subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv], stdout=log, stderr=subprocess.STDOUT, cwd=self.dir
        )
        log.close()

    def _frr(self, daemon: str, *extra: str) -> None:
        self._start(
            daemon, self.router, str(FRR_DIR / daemon),
            "-f", str(self.dir / f"{daemon}.conf"), "-i", str(self.dir / f"{daemon}.pid"),
            "-z", str(self.dir / "zserv.api"), "--vty_socket", str(self.dir), *extra,
        )  # fmt: skip

    def start(self, fpm_port: int) -> None:
        self.write_frr(fpm_port)
        self.write_bird()
        shutil.chown(self.dir, "frr", "frr")
        for path in self.dir.iterdir():
            shutil.chown(path, "frr", "frr")
        self._frr("zebra", "-M", "dplane_fpm_nl")
        self._wait_for(self.dir / "zserv.api", "zebra's zserv socket")
        self._frr("staticd")
        self._frr("bgpd")
        self._start("bird", self.peer, "bird", "-f", "-c", str(self.dir / "bird.conf"),
                    "-s", str(self.dir / "bird.ctl"))  # fmt: skip
        self._wait_for(self.dir / "bird.ctl", "BIRD's control socket")
        time.sleep(0.5)
        for name, process in self.daemons.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited ({process.returncode}): {self.log(name)}")

    def _wait_for(self, path: Path, what: str, seconds: float = 20) -> None:
        deadline = time.monotonic() + seconds
        while not path.exists():
            for name, process in self.daemons.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited ({process.returncode}): {self.log(name)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {what} after {seconds} s")
            time.sleep(0.05)

    def log(self, name: str) -> str:
        path = self.dir / f"{name}.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def vtysh(self, *commands: str) -> str:
        argv = ["vtysh", "--vty_socket", str(self.dir)]
        for command in commands:
            argv += ["-c", command]
        return _run(*argv)

    def birdc(self, *words: str) -> str:
        return _run("birdc", "-s", str(self.dir / "bird.ctl"), *words)

    def stop(self) -> None:
        """Everything down and gone; safe to call on a half-started lab."""
        for process in self.daemons.values():
            if process.poll() is None:
                process.terminate()
        for process in self.daemons.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        for ns in (self.router, self.peer):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)


BGPD_CONF = """\
bgp community-list standard BLACKHOLE seq 5 permit 65535:666
route-map FROM-PEER permit 10
 match community BLACKHOLE
 set ip next-hop {discard}
route-map FROM-PEER permit 20
!
router bgp {router_as}
 bgp router-id {router_v4}
 no bgp ebgp-requires-policy
 no bgp default ipv4-unicast
 neighbor {peer_v4} remote-as {peer_as}
 neighbor {peer_v4} disable-connected-check
 neighbor {peer_v6} remote-as {peer_as}
 neighbor {peer_v6} capability extended-nexthop
 address-family ipv4 unicast
  neighbor {peer_v4} activate
  neighbor {peer_v4} route-map FROM-PEER in
  neighbor {peer_v6} activate
 exit-address-family
 address-family ipv6 unicast
  neighbor {peer_v6} activate
 exit-address-family
"""

BIRD_CONF = """\
router id {peer_v4};
protocol device {{}}
protocol static s4 {{
  ipv4;
  route {rtbh} blackhole;
{routes4}}}
protocol static s6 {{
  ipv6;
{routes6}}}
protocol static x4 {{ ipv4; route {via_v6} blackhole; }}
protocol bgp v4 {{
  local {peer_v4} as {peer_as}; neighbor {router_v4} as {router_as};
  ipv4 {{ import none; export filter {{
    if proto != "s4" then reject;
    if net = {rtbh} then bgp_community.add((65535, 666));
    accept;
  }}; }};
}}
protocol bgp v6 {{
  local {peer_v6} as {peer_as}; neighbor {router_v6} as {router_as};
  ipv6 {{ import none; export where proto = "s6"; }};
  ipv4 {{ import none; extended next hop on; export where proto = "x4"; }};
}}
"""
