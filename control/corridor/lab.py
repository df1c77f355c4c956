"""The lab: three network namespaces joined by veth pairs, where the engine forwards real
frames between a traffic generator and a sink. `corridor lab up|down|status` drives it; the
data-plane tests build their own copy under a unique prefix and remove it afterwards.

    {prefix}gen                    {prefix}dut                      {prefix}sink
    gen0  ─────── veth ───────  dut0      dut1  ─────── veth ───────  sink0
    gen0.10 ── VLAN 10 ──────── dut0.10   dut1.20 ── VLAN 20 ──────── sink0.20
                                          dut1.21 ── VLAN 21 ──────── sink0.21

Addressing plan (only 198.18.0.0/15 and 2001:db8::/32, MACs locally administered 02:…):

    link            prefix (v4, v6)                     router (dut)       peer
    gen0 ↔ dut0     198.18.0.0/24   2001:db8:0::/64     .1  ::1  dut0      .2  ::2  gen0
    VLAN 10         198.18.10.0/24  2001:db8:10::/64    .1  ::1  dut0.10   .2  ::2  gen0.10
    dut1 ↔ sink0    198.18.1.0/24   2001:db8:1::/64     .1  ::1  dut1      .2  ::2  sink0
    VLAN 20         198.18.20.0/24  2001:db8:20::/64    .1  ::1  dut1.20   .2  ::2  sink0.20
    VLAN 21         198.18.21.0/24  2001:db8:21::/64    .1  ::1  dut1.21   .2  ::2  sink0.21

    MACs: dut0 02:c0:00:00:00:01, gen0 02:c0:00:00:00:02,
          dut1 02:c0:00:00:01:01, sink0 02:c0:00:00:01:02 (VLAN devices share their parent's).

The VLAN devices are made only when the kernel has 802.1Q (CONFIG_VLAN_8021Q); without it
the VLANs exist in tagged frames alone, which is all the engine and the raw tools need.

Transit destinations "behind the sink" are 198.19.0.0/16 and 2001:db8:100::/48: nobody owns
them, so frames the router forwards there end at the sink's capture and go no further. gen
routes 198.18.0.0/15 and 2001:db8::/32 via dut0; sink routes them back via dut1; the dut's
kernel routes the transit prefixes via sink0 (used only with `kernel_forwarding(True)`, which
is off after `up`, so nothing the engine passes to the kernel is forwarded behind its back).
IPv6 DAD is off (addresses usable at once); checksum, segmentation, GRO and VLAN offloads
are off on every veth so raw frames cross unchanged and tags stay in the frame data.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROLES = ("gen", "dut", "sink")

GEN_IF = "gen0"
DUT_IN = "dut0"
DUT_OUT = "dut1"
SINK_IF = "sink0"

GEN_MAC = "02:c0:00:00:00:02"
DUT_IN_MAC = "02:c0:00:00:00:01"
DUT_OUT_MAC = "02:c0:00:00:01:01"
SINK_MAC = "02:c0:00:00:01:02"

# The gen side (router port dut0).
GEN_NET4, GEN_NET6 = "198.18.0.0/24", "2001:db8::/64"
DUT_IN_V4, DUT_IN_V6 = "198.18.0.1", "2001:db8::1"
GEN_V4, GEN_V6 = "198.18.0.2", "2001:db8::2"
# The sink side (router port dut1).
SINK_NET4, SINK_NET6 = "198.18.1.0/24", "2001:db8:1::/64"
DUT_OUT_V4, DUT_OUT_V6 = "198.18.1.1", "2001:db8:1::1"
SINK_V4, SINK_V6 = "198.18.1.2", "2001:db8:1::2"
# Transit prefixes behind the sink: owned by nobody.
TRANSIT4, TRANSIT6 = "198.19.0.0/16", "2001:db8:100::/48"


@dataclass(frozen=True)
class Vlan:
    """An 802.1Q sub-interface pair: `{parent}.{id}` in dut, `{peer_parent}.{id}` in the
    peer's namespace, on 198.18.{id}.0/24 and 2001:db8:{id}::/64 (router .1, peer .2)."""

    id: int
    parent: str  # dut0 or dut1
    peer_parent: str  # gen0 or sink0
    peer_role: str  # gen or sink

    @property
    def router_if(self) -> str:
        return f"{self.parent}.{self.id}"

    @property
    def peer_if(self) -> str:
        return f"{self.peer_parent}.{self.id}"

    @property
    def v4(self) -> str:
        return f"198.18.{self.id}.1"

    @property
    def v6(self) -> str:
        return f"2001:db8:{self.id}::1"

    @property
    def peer_v4(self) -> str:
        return f"198.18.{self.id}.2"

    @property
    def peer_v6(self) -> str:
        return f"2001:db8:{self.id}::2"


VLANS = (
    Vlan(10, DUT_IN, GEN_IF, "gen"),
    Vlan(20, DUT_OUT, SINK_IF, "sink"),
    Vlan(21, DUT_OUT, SINK_IF, "sink"),
)
VLAN_BY_ID = {v.id: v for v in VLANS}

# (router port, its MAC, v4, v6, peer role, peer port, peer MAC, peer v4, peer v6)
_LINKS = (
    (DUT_IN, DUT_IN_MAC, DUT_IN_V4, DUT_IN_V6, "gen", GEN_IF, GEN_MAC, GEN_V4, GEN_V6),
    (DUT_OUT, DUT_OUT_MAC, DUT_OUT_V4, DUT_OUT_V6, "sink", SINK_IF, SINK_MAC, SINK_V4, SINK_V6),
)

OFFLOADS = (
    "tx",
    "off",
    "tso",
    "off",
    "gso",
    "off",
    "gro",
    "off",
    "rxvlan",
    "off",
    "txvlan",
    "off",
)


class LabError(RuntimeError):
    """A lab command failed, or a tool the lab needs is missing."""


def require_tools() -> None:
    """Raise LabError naming what is missing to build a lab: root, `ip`, `ethtool`."""
    import os

    if os.geteuid() != 0:
        raise LabError("the lab needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN): run as root")
    for tool, package in (("ip", "iproute2"), ("ethtool", "ethtool")):
        if shutil.which(tool) is None:
            raise LabError(f"the lab needs `{tool}` (Debian package {package}; `make deps`)")


class Lab:
    """The three namespaces `{prefix}gen`, `{prefix}dut`, `{prefix}sink`.

    `Lab()` is the operator's lab (`cor-gen`, ...); tests use `Lab(prefix=f"cor-t{pid}-")`
    so parallel or left-over runs never collide. A context manager: up on entry, down on
    exit, also when the body fails.
    """

    def __init__(self, prefix: str = "cor-", queues: int = 1) -> None:
        if not prefix.startswith("cor-"):
            raise ValueError(f"lab prefix {prefix!r}: must start with 'cor-'")
        if not 1 <= queues <= 64:
            raise ValueError(f"lab queues {queues}: must be between 1 and 64")
        self.prefix = prefix
        # veth queues per device: more than one lets an engine run one worker per queue
        # (a veth delivers on the rx queue matching the sender's tx queue).
        self.queues = queues
        # Set by up(): whether the VLAN sub-interfaces exist as kernel devices.
        self.kernel_vlans = False

    # -- names -------------------------------------------------------------------------

    def ns(self, role: str) -> str:
        """The namespace of `role` (gen, dut, sink); a full name passes through."""
        if role in ROLES:
            return f"{self.prefix}{role}"
        if role.startswith(self.prefix):
            return role
        raise ValueError(f"namespace {role!r}: expected one of {', '.join(ROLES)}")

    @property
    def namespaces(self) -> list[str]:
        return [self.ns(r) for r in ROLES]

    # -- commands ------------------------------------------------------------------------

    def exec(
        self, ns: str, argv: Sequence[str], *, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` inside namespace `ns` (a role or a full name); raise LabError with the
        command's stderr when it fails and `check` is set."""
        return command(["ip", "netns", "exec", self.ns(ns), *argv], check=check, timeout=timeout)

    def ip(self, ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`ip -n NS args...`."""
        return command(["ip", "-n", self.ns(ns), *args], check=check)

    def sysctl(self, ns: str, key: str, value: str | int) -> None:
        self.exec(ns, ["sysctl", "-q", "-w", f"{key}={value}"])

    # -- lifecycle -----------------------------------------------------------------------

    def up(self) -> Lab:
        """Build the lab from scratch (a stale one is removed first)."""
        require_tools()
        self.down()
        try:
            self._build()
        except BaseException:
            self.down()
            raise
        return self

    def _build(self) -> None:
        for ns in self.namespaces:
            command(["ip", "netns", "add", ns])
        for role in ROLES:
            self.ip(role, "link", "set", "lo", "up")
            # Before any address exists: DAD off so IPv6 addresses work at once; no
            # forwarding until asked; no reverse-path filter that would hide test frames.
            for key, value in (
                ("net.ipv6.conf.all.accept_dad", 0),
                ("net.ipv6.conf.default.accept_dad", 0),
                ("net.ipv6.conf.all.accept_ra", 0),
                ("net.ipv6.conf.default.accept_ra", 0),
                ("net.ipv4.conf.all.rp_filter", 0),
                ("net.ipv4.conf.default.rp_filter", 0),
                ("net.ipv4.ip_forward", 0),
                ("net.ipv6.conf.all.forwarding", 0),
            ):
                self.sysctl(role, key, value)
        for port, mac, v4, v6, peer_role, peer, peer_mac, peer_v4, peer_v6 in _LINKS:
            self.ip(
                "dut", "link", "add", port, "address", mac,
                "numtxqueues", str(self.queues), "numrxqueues", str(self.queues), "type", "veth",
                "peer", "name", peer, "address", peer_mac, "netns", self.ns(peer_role),
                "numtxqueues", str(self.queues), "numrxqueues", str(self.queues),
            )  # fmt: skip
            for role, dev, a4, a6 in (("dut", port, v4, v6), (peer_role, peer, peer_v4, peer_v6)):
                self.exec(role, ["ethtool", "-K", dev, *OFFLOADS])
                self.ip(role, "link", "set", dev, "up")
                self.ip(role, "addr", "add", f"{a4}/24", "dev", dev)
                self.ip(role, "-6", "addr", "add", f"{a6}/64", "dev", dev, "nodad")
                # Threaded NAPI (a kthread per queue) spreads veth rx over the cores when
                # XDP is attached; veths without NAPI refuse it, which is fine.
                self.exec(
                    role, ["sh", "-c", f"echo 1 > /sys/class/net/{dev}/threaded"], check=False
                )
        self.kernel_vlans = self._kernel_has_vlans()
        for v in VLANS if self.kernel_vlans else ():
            for role, parent, dev, a4, a6 in (
                ("dut", v.parent, v.router_if, v.v4, v.v6),
                (v.peer_role, v.peer_parent, v.peer_if, v.peer_v4, v.peer_v6),
            ):
                vid = str(v.id)
                self.ip(role, "link", "add", "link", parent, "name", dev, "type", "vlan", "id", vid)
                self.ip(role, "link", "set", dev, "up")
                self.ip(role, "addr", "add", f"{a4}/24", "dev", dev)
                self.ip(role, "-6", "addr", "add", f"{a6}/64", "dev", dev, "nodad")
        # The rest of the test space is behind the router, seen from either end.
        self.ip("gen", "route", "add", "198.18.0.0/15", "via", DUT_IN_V4)
        self.ip("gen", "route", "add", "2001:db8::/32", "via", DUT_IN_V6)
        self.ip("sink", "route", "add", "198.18.0.0/15", "via", DUT_OUT_V4)
        self.ip("sink", "route", "add", "2001:db8::/32", "via", DUT_OUT_V6)
        self.ip("dut", "route", "add", TRANSIT4, "via", SINK_V4)
        self.ip("dut", "route", "add", TRANSIT6, "via", SINK_V6)

    def _kernel_has_vlans(self) -> bool:
        """Whether this kernel has 802.1Q devices (CONFIG_VLAN_8021Q). Without them the
        VLANs exist only in tagged frames: the engine and the raw traffic tools need no
        kernel VLAN device, but the kernel then cannot answer ARP/ND on a VLAN."""
        probe = self.ip(
            "dut", "link", "add", "link", DUT_IN, "name", "cor-vprobe", "type", "vlan",
            "id", "4094", check=False,
        )  # fmt: skip
        if probe.returncode != 0:
            return False
        self.ip("dut", "link", "del", "cor-vprobe")
        return True

    def down(self) -> None:
        """Remove the lab's namespaces (and with them every interface in them)."""
        for ns in self.namespaces:
            if Path("/var/run/netns", ns).exists():
                command(["ip", "netns", "del", ns], check=False)

    def exists(self) -> bool:
        return all(Path("/var/run/netns", ns).exists() for ns in self.namespaces)

    def status(self) -> str:
        """A human summary: per namespace, its links and addresses (brief form)."""
        lines = []
        for ns in self.namespaces:
            if not Path("/var/run/netns", ns).exists():
                lines.append(f"{ns}: absent")
                continue
            links = command(["ip", "-n", ns, "-br", "link", "show"], check=False).stdout
            addrs = command(["ip", "-n", ns, "-br", "addr", "show"], check=False).stdout
            xdp = "xdp" in command(["ip", "-n", ns, "link", "show"], check=False).stdout
            lines.append(f"{ns}:{' (XDP attached)' if xdp else ''}")
            lines += [f"  {line}" for line in links.splitlines()]
            lines += [f"  {line}" for line in addrs.splitlines() if not line.startswith("lo ")]
        return "\n".join(lines)

    def kernel_forwarding(self, on: bool) -> None:
        """Let the dut's kernel forward IPv4 and IPv6 (for comparison with the engine)."""
        self.sysctl("dut", "net.ipv4.ip_forward", int(on))
        self.sysctl("dut", "net.ipv6.conf.all.forwarding", int(on))

    # -- observation ---------------------------------------------------------------------

    def link_stats(self, ns: str, dev: str) -> dict[str, int]:
        """The kernel's counters of `dev` in `ns` (/sys/class/net/DEV/statistics)."""
        out = self.exec(
            ns, ["sh", "-c", f"cd /sys/class/net/{dev}/statistics && grep -H . *"]
        ).stdout
        stats = {}
        for line in out.splitlines():
            name, _, value = line.partition(":")
            stats[name] = int(value)
        return stats

    def has_xdp(self) -> bool:
        """True if any link of the dut has an XDP program attached."""
        return "xdp" in self.ip("dut", "link", "show").stdout

    def __enter__(self) -> Lab:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()


def command(
    argv: Sequence[str], *, check: bool = True, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run `argv` here; raise LabError with its stderr when it fails and `check` is set.
    Public for tools that add namespaces and links of their own to a lab."""
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as e:
        raise LabError(f"{argv[0]}: not installed ({e})") from e
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc


def run(action: str, prefix: str = "cor-") -> int:
    """`corridor lab up|down|status`."""
    lab = Lab(prefix)
    try:
        if action == "up":
            lab.up()
            print(lab.status())
        elif action == "down":
            lab.down()
        else:
            print(lab.status())
    except LabError as e:
        print(f"corridor lab {action}: {e}", file=sys.stderr)
        return 1
    return 0
