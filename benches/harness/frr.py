"""FRR and BIRD as the tests and benchmarks run them: zebra (with `-M dplane_fpm_nl`), staticd
and bgpd started by hand (no systemd, no /etc/frr), one config file each, inside a network
namespace, with BIRD announcing routes to bgpd from another. `FrrLab` makes two `cor-`
namespaces of its own; `LabFrr` runs in those of a corridor.lab Lab: FRR where `corridor
agent` hosts the engine (dut), BIRD in the sink's namespace over dut1 and, for the tests, a
second BIRD in gen's over dut0 (one prefix from both: ECMP)."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from ipaddress import ip_address, ip_network
from pathlib import Path

from corridor import lab as L
from corridor.fpm.routes import IPAddress, IPNetwork

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
        self._stop_all()
        for ns in (self.router, self.peer):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _stop_all(self) -> None:
        for process in self.daemons.values():
            if process.poll() is None:
                process.terminate()
        for process in self.daemons.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


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


# -- FRR in a corridor.lab Lab ---------------------------------------------------------------

# Test prefixes, announced by BIRD from the sink's namespace (traffic goes to these only).
TO_SINK4 = "198.19.70.0/24"  # over the IPv4 session: via 198.18.1.2 on dut1
TO_SINK6 = "2001:db8:170::/48"  # via the sink's link-local address on dut1
ECMP4 = "198.19.71.0/24"  # from both BIRDs: via the sink on dut1 and gen on dut0
UNOWNED4 = "198.19.72.0/24"  # a static route of FRR's through an interface no port is


class LabFrr(FrrLab):
    """FRR in `lab`'s dut namespace and BIRD in its sink namespace announcing `routes4` and
    `routes6`. With `extras` (the tests): the test prefixes above, RTBH, a route through a
    management interface, and the second BIRD in gen's namespace; without (the benchmark):
    the tables alone."""

    def __init__(
        self,
        lab: L.Lab,
        routes4: list[IPNetwork],
        routes6: list[IPNetwork],
        nexthop_groups: bool,
        extras: bool = True,
    ) -> None:
        super().__init__(routes4, routes6, nexthop_groups)
        self.lab = lab
        self.extras = extras

    @property
    def router(self) -> str:
        return self.lab.ns("dut")

    @property
    def peer(self) -> str:
        return self.lab.ns("sink")

    def create_network(self) -> None:
        if not self.extras:
            return
        # An interface of the router's namespace that is none of Corridor's ports (the
        # management port): FRR's static route through it is counted, never installed.
        self.lab.ip("dut", "link", "add", "cor-mgmt", "type", "veth", "peer", "name", "cor-mgmtp")
        self.lab.ip("dut", "addr", "add", "198.18.99.1/24", "dev", "cor-mgmt")
        for dev in ("cor-mgmt", "cor-mgmtp"):
            self.lab.ip("dut", "link", "set", dev, "up")

    def write_frr(self, fpm_port: int) -> None:
        nhg = "fpm use-next-hop-groups" if self.nexthop_groups else "no fpm use-next-hop-groups"
        (self.dir / "zebra.conf").write_text(
            f"hostname {self.router}\nfpm address 127.0.0.1 port {fpm_port}\n{nhg}\n"
        )
        statics = f"ip route {DISCARD_V4}/32 blackhole\nip route {UNOWNED4} 198.18.99.2\n"
        (self.dir / "staticd.conf").write_text(statics if self.extras else "")
        (self.dir / "bgpd.conf").write_text(LAB_BGPD_CONF.format(
            router_as=ROUTER_AS, peer_as=PEER_AS, router_v4=L.DUT_OUT_V4,
            peer_v4=L.SINK_V4, peer_v6=L.SINK_V6, peer2=L.GEN_V4, discard=DISCARD_V4,
        ))  # fmt: skip

    def write_bird(self) -> None:
        extras4 = "".join(f"  route {n} blackhole;\n" for n in (RTBH_PREFIX, TO_SINK4, ECMP4))
        (self.dir / "bird.conf").write_text(LAB_BIRD_CONF.format(
            router_as=ROUTER_AS, peer_as=PEER_AS, router_v4=L.DUT_OUT_V4,
            peer_v4=L.SINK_V4, router_v6=L.DUT_OUT_V6, peer_v6=L.SINK_V6, rtbh=RTBH_PREFIX,
            via_v6=VIA_V6_PREFIX,
            extras4=extras4 if self.extras else "",
            extras6=f"  route {TO_SINK6} blackhole;\n" if self.extras else "",
            routes4="".join(f"  route {n} blackhole;\n" for n in self.routes4),
            routes6="".join(f"  route {n} blackhole;\n" for n in self.routes6),
            x4="" if self.extras else "disabled;",
        ))  # fmt: skip

    def start(self, fpm_port: int) -> None:
        super().start(fpm_port)
        if not self.extras:
            return
        (self.dir / "bird2.conf").write_text(LAB_BIRD2_CONF.format(
            router_as=ROUTER_AS, peer_as=PEER_AS, router_v4=L.DUT_IN_V4,
            peer_v4=L.GEN_V4, ecmp=ECMP4,
        ))  # fmt: skip
        shutil.chown(self.dir / "bird2.conf", "frr", "frr")
        self._start("bird2", self.lab.ns("gen"), "bird", "-f", "-c", str(self.dir / "bird2.conf"),
                    "-s", str(self.dir / "bird2.ctl"))  # fmt: skip
        self._wait_for(self.dir / "bird2.ctl", "the second BIRD's control socket")

    def birdc2(self, *words: str) -> str:
        return _run("birdc", "-s", str(self.dir / "bird2.ctl"), *words)

    def stop_daemons(self, *names: str, kill: bool = False) -> None:
        for name in names:
            process = self.daemons.pop(name)
            if process.poll() is None:
                process.kill() if kill else process.terminate()
            process.wait(timeout=20)

    def start_frr(self) -> None:
        """zebra, staticd and bgpd again (after stop_daemons), with the files written."""
        (self.dir / "zserv.api").unlink(missing_ok=True)
        self._frr("zebra", "-M", "dplane_fpm_nl")
        self._wait_for(self.dir / "zserv.api", "zebra's zserv socket")
        self._frr("staticd")
        self._frr("bgpd")

    # -- counts, for the benchmark

    def received(self) -> int:
        """Prefixes bgpd has received from its peers, both families."""
        total = 0
        for family in ("ipv4", "ipv6"):
            summary = json.loads(self.vtysh(f"show bgp {family} unicast summary json"))
            total += sum(p.get("pfxRcd", 0) for p in summary.get("peers", {}).values())
        return total

    def installed(self) -> int:
        """BGP routes zebra has installed in the kernel's FIB, both families."""
        total = 0
        for family in ("ip", "ipv6"):
            summary = json.loads(self.vtysh(f"show {family} route summary json"))
            total += sum(r.get("fib", 0) for r in summary.get("routes", [])
                         if r.get("type") == "ebgp")  # fmt: skip
        return total

    def kernel_routes(self) -> int:
        """BGP routes in the kernel's FIB as `ip route` lists them (slow: once)."""
        count = 0
        for family in ("-4", "-6"):
            shown = _run("ip", "-n", self.router, family, "route", "show", "proto", "bgp",
                         timeout=300)  # fmt: skip
            count += sum(1 for line in shown.splitlines() if line and not line[0].isspace())
        return count

    def stop(self) -> None:
        """Every daemon down; the lab removes the namespaces."""
        self._stop_all()
        shutil.rmtree(self.dir, ignore_errors=True)


LAB_BGPD_CONF = """\
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
 neighbor {peer_v4} timers connect 2
 neighbor {peer_v4} disable-connected-check
 neighbor {peer2} remote-as {peer_as}
 neighbor {peer2} timers connect 2
 neighbor {peer_v6} remote-as {peer_as}
 neighbor {peer_v6} timers connect 2
 neighbor {peer_v6} capability extended-nexthop
 neighbor {peer_v6} capability extended-nexthop
 address-family ipv4 unicast
  maximum-paths 4
  neighbor {peer_v4} activate
  neighbor {peer_v4} route-map FROM-PEER in
  neighbor {peer2} activate
  neighbor {peer_v6} activate
 exit-address-family
 address-family ipv6 unicast
  neighbor {peer_v6} activate
 exit-address-family
"""

LAB_BIRD2_CONF = """\
router id {peer_v4};
protocol device {{}}
protocol static e4 {{ ipv4; route {ecmp} blackhole; }}
protocol bgp g4 {{
  connect delay time 1; connect retry time 2; error wait time 1, 4;
  local {peer_v4} as {peer_as}; neighbor {router_v4} as {router_as};
  ipv4 {{ import none; export where proto = "e4"; }};
}}
"""

LAB_BIRD_CONF = """\
router id {peer_v4};
protocol device {{}}
template bgp fast {{ connect delay time 1; connect retry time 2; error wait time 1, 4; }}
protocol static s4 {{
  ipv4;
{extras4}{routes4}}}
protocol static s6 {{
  ipv6;
{extras6}{routes6}}}
protocol bgp v4 from fast {{
  local {peer_v4} as {peer_as}; neighbor {router_v4} as {router_as};
  ipv4 {{ import none; export filter {{
    if proto != "s4" then reject;
    if net = {rtbh} then bgp_community.add((65535, 666));
    accept;
  }}; }};
}}
protocol static x4 {{ ipv4; {x4} route {via_v6} blackhole; }}
protocol bgp v6 from fast {{
  local {peer_v6} as {peer_as}; neighbor {router_v6} as {router_as};
  ipv6 {{ import none; export where proto = "s6"; }};
  ipv4 {{ import none; extended next hop on; export where proto = "x4"; }};
}}
"""
