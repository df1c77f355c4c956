"""The agent's configuration: one TOML file, read and checked whole at start-up.

Every error names the field as a path into the file (`ports[1].mtu`) and says what would be
valid; keys the agent does not know are errors too, so a typo never silently means a default.
Relative file paths are taken relative to the directory of the configuration file.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corridor.common.config import (
    HostPort,
    Listen,
    Table,
    TlsFiles,
    load_toml,
    metrics_from,
    tls_and_listen,
)
from corridor.common.edge import OFF, EdgePolicy, UrpfMode, checked_macs, source_mac, urpf_mode
from corridor.common.errors import FieldError
from corridor.common.fib import ADJACENCIES_MAX, GROUPS_MAX, NODES_MAX, VLAN_MAX
from corridor.common.logs import LogConfig, log_from

MTU_MIN, MTU_MAX = 576, 9216
QUEUES_MAX = 256
WORKERS_MAX = 1024
RT_PRIORITY_MAX = 99  # SCHED_FIFO's highest
CAPACITY_MAX = 1 << 32
FIB_MAX = {"v4_nodes": NODES_MAX, "v6_nodes": NODES_MAX, "groups": GROUPS_MAX}
FIB_MAX["adjacencies"] = ADJACENCIES_MAX
IFNAME_MAX = 15  # IFNAMSIZ - 1
RATE_MAX = (1 << 32) - 1  # the engine's rates and bursts are u32
SOURCES_MAX = 1 << 20  # the engine's MAX_ICMP_SOURCES
SAMPLE_RATE_MAX = 1 << 24  # the engine's SAMPLE_RATE_MAX
COUNTER_INTERVAL_MAX = 3600
COLLECTORS_MAX = 16
GLEAN_HOSTS_MAX = 1 << 20
GLEAN_HOSTS_DEFAULT = 512
# The shortest attached subnets taken: a shorter one is a mistake, not a link (a /0 would
# make the whole Internet a glean route).
SUBNET_MIN = {4: 8, 6: 16}

EXAMPLE = """\
# corridor agent --config FILE
workers = 2                               # forwarding threads, one per core
netns = "router"                          # optional: the `ip netns` the ports live in
realtime_priority = 10                    # optional: workers SCHED_FIFO at 1-99, ahead of
                                          # the kernel's receive on their cores (unset:
                                          # ordinary threads)

[listen]
unix = "/run/corridor/agent.sock"         # for local clients; a stale file is replaced
tcp = "[::]:50051"                        # host:port; mutual TLS when [tls] is set

[tls]                                     # all three, or no [tls] at all
cert = "/etc/corridor/agent.pem"
key = "/etc/corridor/agent.key"
client_ca = "/etc/corridor/ca.pem"        # clients must present a certificate it signed

[metrics]
address = "127.0.0.1:9464"                # Prometheus /metrics; omit [metrics] for none

[log]                                     # these are the defaults; SIGHUP applies a change
level = "info"                            # debug, info, warning, error (--log-level wins)
format = "text"                           # text, or json: one JSON object a line

[fib]                                     # capacities; these are the defaults
v4_routes = 2000000
v6_routes = 500000
groups = 65536
adjacencies = 65536

[icmp]                                    # ICMP error limits per worker (the defaults; SIGHUP
                                          # applies new rates and bursts, `sources` on restart)
source_rate = 1                           # per source of the packet (Linux: icmp_ratelimit)
source_burst = 6
sources = 4096                            # sources tracked (least recently used evicted)
port_rate = 1000                          # per ingress port
port_burst = 100
worker_rate = 1000                        # all ports (Linux: icmp_msgs_per_sec, icmp_msgs_burst)
worker_burst = 50

[sflow]                                   # sFlow v5 export; omit [sflow] for none
collectors = ["198.18.9.2:6343"]          # IP:port ("[2001:db8::9]:6343" for IPv6), up to 16
agent_address = "198.18.0.1"              # the agent address in datagrams (default: the
                                          # first port's first address)
counter_interval = 20                     # seconds between counter samples; 0: none
netns = "mgmt"                            # optional: the `ip netns` the datagrams leave from
                                          # (default: the agent's own)
[glean]                                   # hosts on the ports' attached subnets (defaults)
hosts = 512                               # host routes at most: the top ids of the FIB's
                                          # adjacencies and groups are the agent's; each
                                          # holds a kernel neighbour entry (gc_thresh3);
                                          # unset: 512, or a quarter of a smaller FIB's ids
age_seconds = 300                         # a host route unused this long is removed
resolve_rate = 100                        # kernel resolutions started per second at most
resolve_seconds = 3                       # an unanswered resolution is given up after

[[ports]]
name = "eth1"
queues = 2
mtu = 9000
addresses = ["198.18.0.1/24", "2001:db8::1/64"]
vlans = [{ id = 100, addresses = ["198.18.100.1/24"], urpf = "loose" }]
directed_broadcast = false                # forward directed broadcasts (RFC 2644: off)
sample_rate = 1000                        # sFlow: 1 in N frames received; 0 (default) off
# Edge protection of the untagged traffic (a VLAN takes the same keys); all off by default.
urpf = "strict"                           # strict, loose or off (RFC 3704)
urpf_allow_default = false                # the default route counts as a source's route
ethertype_filter = true                   # only IPv4, IPv6 and ARP, dropped in XDP
mac_filter = false                        # only these source MACs, dropped in XDP
allowed_macs = ["02:00:00:00:00:01"]
port_security = false                     # only IP and ARP, from members' MACs (and those)
"""


@dataclass(frozen=True)
class Vlan:
    id: int
    addresses: tuple[ipaddress.IPv4Interface | ipaddress.IPv6Interface, ...] = ()
    policy: EdgePolicy = OFF


@dataclass(frozen=True)
class PortConfig:
    name: str
    queues: int = 1
    mtu: int = 1500
    addresses: tuple[ipaddress.IPv4Interface | ipaddress.IPv6Interface, ...] = ()
    vlans: tuple[Vlan, ...] = ()
    # Directed broadcasts to the subnets of this port and its VLANs: forwarded as a link
    # broadcast when true, else dropped and counted (RFC 2644).
    directed_broadcast: bool = False
    # sFlow: 1 in sample_rate frames received on the port is sampled; 0 is off.
    sample_rate: int = 0
    # Edge protection of the untagged traffic (each VLAN has its own).
    policy: EdgePolicy = OFF

    def policies(self) -> dict[int, EdgePolicy]:
        """Every sub-interface's configured policy, by VLAN (0: untagged)."""
        return {0: self.policy} | {v.id: v.policy for v in self.vlans}


@dataclass(frozen=True)
class Collector:
    """An sFlow collector: an IP address (no name: nothing to resolve at start) and port."""

    host: str
    port: int
    family: int  # socket.AF_INET or AF_INET6

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class SflowConfig:
    """The [sflow] table; the sampling rates are the ports' `sample_rate`."""

    collectors: tuple[Collector, ...]
    agent_address: ipaddress.IPv4Address | ipaddress.IPv6Address
    counter_interval: int = 20
    netns: str | None = None


@dataclass(frozen=True)
class FibCapacity:
    """Sizes of the FIB's tables, as keywords of corridor._dataplane.Fib; None keeps its default."""

    v4_routes: int | None = None
    v6_routes: int | None = None
    v4_nodes: int | None = None
    v6_nodes: int | None = None
    groups: int | None = None
    adjacencies: int | None = None

    def keywords(self) -> dict[str, int]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


# ICMP limit key -> the keyword of corridor._dataplane.Engine, and its bounds.
ICMP_KEYS = {
    "source_rate": ("icmp_source_rate", 0, RATE_MAX),
    "source_burst": ("icmp_source_burst", 0, RATE_MAX),
    "sources": ("icmp_sources", 1, SOURCES_MAX),
    "port_rate": ("icmp_rate", 0, RATE_MAX),
    "port_burst": ("icmp_burst", 0, RATE_MAX),
    "worker_rate": ("icmp_worker_rate", 0, RATE_MAX),
    "worker_burst": ("icmp_worker_burst", 0, RATE_MAX),
}


@dataclass(frozen=True)
class IcmpLimits:
    """The [icmp] table: the keywords of corridor._dataplane.Engine given; the engine's
    defaults (docs/engine.md) for the rest."""

    keywords: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class ElectionPolicy:
    """Who may take the writers' election, by the names in their TLS client certificate (its
    common name, any subject alternative name, or the whole subject, "CN=x,O=y"): `writers`
    may present an election id over TCP (empty: any client the CA signed), `admins` may
    reset it over TCP. The Unix socket is local (file permissions guard it): it may both."""

    writers: tuple[str, ...] = ()
    admins: tuple[str, ...] = ()


@dataclass(frozen=True)
class GleanConfig:
    """Hosts on attached subnets: how many host routes the agent may install (the top
    `hosts` ids of the FIB's adjacency and group tables are reserved for them), how long an
    unused one stays, and how fast and how long the kernel is asked to resolve hosts."""

    # Each host route keeps a kernel neighbour entry: with the gateways' entries they stay
    # under the kernel's default neighbour table limit (net.ipv4.neigh.default.gc_thresh3,
    # 1024); raise both together. None (not set): GLEAN_HOSTS_DEFAULT, or a quarter of the FIB's
    # adjacency and group ids when that is fewer, and none without an attached subnet, so a
    # small FIB starts with its defaults (start_engine).
    hosts: int | None = None
    age_seconds: int = 300
    resolve_rate: int = 100
    resolve_seconds: int = 3


@dataclass(frozen=True)
class AgentConfig:
    listen: Listen
    workers: int = 1
    # SCHED_FIFO priority of the engine's workers (1 to 99); None: SCHED_OTHER.
    realtime_priority: int | None = None
    ports: tuple[PortConfig, ...] = ()
    tls: TlsFiles | None = None
    metrics: HostPort | None = None
    fib: FibCapacity = field(default_factory=FibCapacity)
    # The network namespace (`ip netns` name) of the ports: the engine's workers, the
    # neighbour entries and the link watch live there; the listeners stay in the agent's.
    netns: str | None = None
    election: ElectionPolicy = field(default_factory=ElectionPolicy)
    icmp: IcmpLimits = field(default_factory=IcmpLimits)
    log: LogConfig | None = None
    sflow: SflowConfig | None = None
    glean: GleanConfig = field(default_factory=GleanConfig)


def load(path: str | os.PathLike[str]) -> AgentConfig:
    """Reads and checks the file at `path`; raises ConfigError naming the file and, one per
    line, every field that is wrong."""
    return load_toml(path, parse)


def parse(document: dict[str, Any], base: Path = Path()) -> AgentConfig:
    """Checks a parsed TOML document; relative paths in it are taken relative to `base`."""
    top = Table(document, "")
    config = read(top, base)
    top.finish()
    return config


def read(top: Table, base: Path) -> AgentConfig:
    """Reads an agent's configuration from `top` (a file, or the [agent] table of `corridor
    up`'s), noting problems there (see Table.finish)."""
    workers = top.integer("workers", 1, WORKERS_MAX, default=1)
    realtime_priority = top.optional_integer("realtime_priority", 1, RT_PRIORITY_MAX)
    netns = _netns(top)
    listen, tls = tls_and_listen(top, base)
    metrics = metrics_from(top)
    log = log_from(top)
    fib_table = top.table("fib")
    fib = _fib(fib_table) if fib_table is not None else FibCapacity()
    ports = tuple(_port(t) for t in top.tables("ports"))
    icmp_table = top.table("icmp")
    icmp = _icmp(icmp_table) if icmp_table is not None else IcmpLimits()
    election_table = top.table("election")
    election = _election(election_table) if election_table is not None else ElectionPolicy()
    glean_table = top.table("glean")
    glean = _glean(glean_table) if glean_table is not None else GleanConfig()
    names = [p.name for p in ports]
    for i, name in enumerate(names):
        if name and name in names[:i]:
            top.fail(f"ports[{i}].name", f"{name!r} is already ports[{names.index(name)}]")
    sflow_table = top.table("sflow")
    sflow = _sflow(sflow_table, ports) if sflow_table is not None else None
    if sflow_table is None:
        for i, p in enumerate(ports):
            if p.sample_rate:
                top.fail(
                    f"ports[{i}].sample_rate",
                    "samples for sFlow, but there is no [sflow] table naming the collectors",
                )
    _check_subnets(top, ports)
    top.done()
    return AgentConfig(
        listen=listen,
        workers=workers,
        realtime_priority=realtime_priority,
        ports=ports,
        tls=tls,
        metrics=metrics,
        fib=fib,
        netns=netns,
        election=election,
        icmp=icmp,
        log=log,
        sflow=sflow,
        glean=glean,
    )


def _sflow(t: Table, ports: tuple[PortConfig, ...]) -> SflowConfig | None:
    values = t.get("collectors", list, 'a list of "IP:port", such as ["198.18.9.2:6343"]', None)
    collectors: list[Collector] = []
    if values is None and not t.failed("collectors"):
        t.fail("collectors", 'is required: a list of "IP:port", such as ["198.18.9.2:6343"]')
    for i, value in enumerate(values or []):
        c = _collector(value)
        if isinstance(c, str):
            t.fail(f"collectors[{i}]", c)
        elif c in collectors:
            t.fail(f"collectors[{i}]", f"{value!r} is already collectors[{collectors.index(c)}]")
        else:
            collectors.append(c)
    if values is not None and not values:
        t.fail("collectors", "is empty: name at least one collector, or remove [sflow]")
    if values is not None and len(values) > COLLECTORS_MAX:
        t.fail("collectors", f"{len(values)} collectors: at most {COLLECTORS_MAX}")
    interval = t.integer("counter_interval", 0, COUNTER_INTERVAL_MAX, default=20)
    netns = _netns(t)
    agent: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    text = t.string("agent_address")
    if text is not None:
        try:
            agent = ipaddress.ip_address(text)
        except ValueError:
            t.fail("agent_address", f"{text!r} is not an IPv4 or IPv6 address")
    else:
        first = [a.ip for p in ports for a in p.addresses]
        if first:
            agent = first[0]
        elif not t.failed("agent_address"):
            t.fail("agent_address", "is required when no port has an address")
    if not ports:
        t.fail("collectors", "sFlow samples the ports' frames, and the agent has no [[ports]]")
    t.done()
    if agent is None or not collectors:
        return None
    return SflowConfig(tuple(collectors), agent, interval, netns)


def _collector(value: object) -> Collector | str:
    """The collector of "IP:port", or what is wrong with it."""
    expected = 'an "IP:port" such as "198.18.9.2:6343" or "[2001:db8::9]:6343"'
    if not isinstance(value, str):
        return f"{value!r} is not {expected}"
    host, sep, port_text = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        return f"{value!r}: put an IPv6 address in brackets, {expected}"
    if not sep or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        return f"{value!r} is not {expected} (port 1 to 65535)"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return f"{value!r}: {host!r} is not an IP address (names are not resolved); {expected}"
    if address.is_unspecified or address.is_multicast:
        return f"{value!r}: {host} is not a unicast address"
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    return Collector(str(address), int(port_text), family)


def _glean(t: Table) -> GleanConfig:
    config = GleanConfig(
        hosts=t.optional_integer("hosts", 1, GLEAN_HOSTS_MAX),
        age_seconds=t.integer("age_seconds", 1, 86_400, default=GleanConfig.age_seconds),
        resolve_rate=t.integer("resolve_rate", 1, 100_000, default=GleanConfig.resolve_rate),
        resolve_seconds=t.integer("resolve_seconds", 1, 60, default=GleanConfig.resolve_seconds),
    )
    t.done()
    return config


def _check_subnets(top: Table, ports: tuple[PortConfig, ...]) -> None:
    """The router's addresses and their attached subnets, across every port and VLAN: at
    most one IPv4 and one IPv6 address per port or VLAN (the engine's sub-interface has one
    source address per family), and no subnet that overlaps another's (a host there would
    be reachable two ways, and the glean routes would replace each other)."""
    seen: list[tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network]] = []
    for i, p in enumerate(ports):
        places = [(f"ports[{i}]", p.addresses)]
        places += [(f"ports[{i}].vlans[{j}]", v.addresses) for j, v in enumerate(p.vlans)]
        for where, addresses in places:
            for version in (4, 6):
                of_family = [k for k, a in enumerate(addresses) if a.version == version]
                if len(of_family) > 1:
                    top.fail(
                        f"{where}.addresses[{of_family[1]}]",
                        f"a second IPv{version} address on one port or VLAN; each has at most "
                        f"one IPv4 and one IPv6 address (here addresses[{of_family[0]}])",
                    )
            for k, a in enumerate(addresses):
                path = f"{where}.addresses[{k}]"
                for other_path, other in seen:
                    if a.network.overlaps(other):
                        top.fail(
                            path,
                            f"{a}: its subnet {a.network} overlaps {other} of {other_path}; "
                            "attached subnets must not overlap",
                        )
                        break
                seen.append((path, a.network))


def _icmp(t: Table) -> IcmpLimits:
    keywords = []
    for key, (keyword, low, high) in ICMP_KEYS.items():
        value = t.optional_integer(key, low, high)
        if value is not None:
            keywords.append((keyword, value))
    t.done()
    return IcmpLimits(tuple(keywords))


def _election(t: Table) -> ElectionPolicy:
    lists = []
    for key in ("writers", "admins"):
        values = t.get(key, list, "an array of certificate names", [])
        names = []
        for i, value in enumerate(values):
            if not isinstance(value, str) or not value:
                t.fail(f"{key}[{i}]", "is not a certificate name (CN, SAN or subject) string")
            else:
                names.append(value)
        lists.append(tuple(names))
    t.done()
    return ElectionPolicy(*lists)


def _netns(t: Table) -> str | None:
    name = t.string("netns")
    if name is None:
        return None
    if not name or len(name) > 255 or name in (".", "..") or any(c in name for c in "/\0 \t\n"):
        t.fail(
            "netns",
            f"{name!r} is not a network namespace name as `ip netns add NAME` takes "
            "(1 to 255 characters, no '/' or white space)",
        )
        return None
    return name


def _fib(t: Table) -> FibCapacity:
    sizes = {
        key: t.optional_integer(key, 1, FIB_MAX.get(key, CAPACITY_MAX - 1))
        for key in FibCapacity.__dataclass_fields__
    }
    t.done()
    return FibCapacity(**sizes)


def _port(t: Table) -> PortConfig:
    name = t.required_string("name")
    if not t.failed("name") and (
        not name
        or len(name) > IFNAME_MAX
        or any(c in name for c in "/: \t\n")
        or name in (".", "..")
    ):
        t.fail(
            "name",
            f"{name!r} is not a network interface name "
            f"(1 to {IFNAME_MAX} characters, none of '/', ':' or white space)",
        )
    port = PortConfig(
        name=name,
        queues=t.integer("queues", 1, QUEUES_MAX, default=1),
        mtu=t.integer("mtu", MTU_MIN, MTU_MAX, default=1500),
        addresses=_addresses(t),
        vlans=tuple(_vlan(v) for v in t.tables("vlans")),
        directed_broadcast=t.get("directed_broadcast", bool, "true or false", False),
        sample_rate=t.integer("sample_rate", 0, SAMPLE_RATE_MAX, default=0),
        policy=_policy(t),
    )
    ids = [v.id for v in port.vlans]
    for i, vid in enumerate(ids):
        if vid in ids[:i]:
            t.fail(f"vlans[{i}].id", f"VLAN {vid} is already configured")
    t.done()
    return port


def _vlan(t: Table) -> Vlan:
    vlan = Vlan(id=t.integer("id", 1, VLAN_MAX), addresses=_addresses(t), policy=_policy(t))
    t.done()
    return vlan


def _policy(t: Table) -> EdgePolicy:
    """The edge protection keys of a port or VLAN table."""
    urpf = UrpfMode.OFF
    text = t.string("urpf")
    if text is not None:
        try:
            urpf = urpf_mode(text, "urpf")
        except FieldError as e:
            t.fail(e.field, e.description)
    macs = []
    values = t.get("allowed_macs", list, 'a list of MACs such as "02:00:00:00:00:01"', [])
    for i, value in enumerate(values):
        try:
            macs.append(source_mac(value, f"allowed_macs[{i}]"))
        except FieldError as e:
            t.fail(e.field, e.description)
    try:
        allowed = checked_macs(macs, "allowed_macs")
    except FieldError as e:
        t.fail(e.field, e.description)
        allowed = ()
    mac_filter = t.get("mac_filter", bool, "true or false", False)
    port_security = t.get("port_security", bool, "true or false", False)
    if mac_filter and not values and not port_security and not t.failed("allowed_macs"):
        t.fail(
            "allowed_macs",
            "is empty with mac_filter = true: every frame would be dropped; "
            "list the stations' MACs",
        )
    return EdgePolicy(
        urpf=urpf,
        urpf_allow_default=t.get("urpf_allow_default", bool, "true or false", False),
        ethertype_filter=t.get("ethertype_filter", bool, "true or false", False),
        mac_filter=mac_filter,
        allowed_macs=allowed,
        port_security=port_security,
    )


def _addresses(t: Table) -> tuple[ipaddress.IPv4Interface | ipaddress.IPv6Interface, ...]:
    values = t.get("addresses", list, 'a list of addresses such as "198.18.0.1/24"', [])
    out = []
    for i, value in enumerate(values):
        if not isinstance(value, str) or "/" not in value:
            t.fail(
                f"addresses[{i}]",
                f"{value!r} is not an address with its prefix length, "
                'such as "198.18.0.1/24" or "2001:db8::1/64"',
            )
            continue
        try:
            address = ipaddress.ip_interface(value)
        except ValueError as e:
            t.fail(f"addresses[{i}]", f"{value!r} is not a valid address: {e}")
            continue
        problem = _address_problem(address)
        if problem:
            t.fail(f"addresses[{i}]", f"{value!r}: {problem}")
            continue
        out.append(address)
    return tuple(out)


def _address_problem(a: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> str | None:
    """What is wrong with `a` as a router's address on an attached subnet, if anything."""
    length, shortest = a.network.prefixlen, SUBNET_MIN[a.version]
    if length < shortest:
        return (
            f"prefix length {length} is shorter than /{shortest}: an attached subnet is a "
            f"link's prefix, such as /24 or /64 (/{a.max_prefixlen} for an address alone)"
        )
    ip = a.ip
    if ip.is_multicast or ip.is_unspecified or ip.is_loopback or ip.is_link_local:
        return (
            "not a unicast address of a link's subnet (multicast, unspecified, loopback and "
            "link-local addresses are not configured here)"
        )
    if (
        a.version == 4
        and length <= 30
        and ip in (a.network.network_address, a.network.broadcast_address)
    ):
        which = "network" if a.ip == a.network.network_address else "broadcast"
        return f"is the {which} address of {a.network}, not a host's"
    return None
