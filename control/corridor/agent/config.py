"""The agent's configuration: one TOML file, read and checked whole at start-up.

Every error names the field as a path into the file (`ports[1].mtu`) and says what would be
valid; keys the agent does not know are errors too, so a typo never silently means a default.
Relative file paths are taken relative to the directory of the configuration file.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

MTU_MIN, MTU_MAX = 576, 9216
QUEUES_MAX = 256
WORKERS_MAX = 1024
VLAN_MIN, VLAN_MAX = 1, 4094
CAPACITY_MAX = 1 << 32
IFNAME_MAX = 15  # IFNAMSIZ - 1

EXAMPLE = """\
# corridor agent --config FILE
workers = 2                               # forwarding threads, one per core
netns = "router"                          # optional: the `ip netns` the ports live in

[listen]
unix = "/run/corridor/agent.sock"         # for local clients; a stale file is replaced
tcp = "[::]:50051"                        # host:port; mutual TLS when [tls] is set

[tls]                                     # all three, or no [tls] at all
cert = "/etc/corridor/agent.pem"
key = "/etc/corridor/agent.key"
client_ca = "/etc/corridor/ca.pem"        # clients must present a certificate it signed

[metrics]
address = "127.0.0.1:9464"                # Prometheus /metrics; omit [metrics] for none

[fib]                                     # capacities; these are the defaults
v4_routes = 2000000
v6_routes = 500000
groups = 65536
adjacencies = 65536

[[ports]]
name = "eth1"
queues = 2
mtu = 9000
addresses = ["198.18.0.1/24", "2001:db8::1/64"]
vlans = [{ id = 100, addresses = ["198.18.100.1/24"] }]
"""


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the field."""


@dataclass(frozen=True)
class Vlan:
    id: int
    addresses: tuple[ipaddress.IPv4Interface | ipaddress.IPv6Interface, ...] = ()


@dataclass(frozen=True)
class PortConfig:
    name: str
    queues: int = 1
    mtu: int = 1500
    addresses: tuple[ipaddress.IPv4Interface | ipaddress.IPv6Interface, ...] = ()
    vlans: tuple[Vlan, ...] = ()


@dataclass(frozen=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Listen:
    unix: Path | None = None
    tcp: HostPort | None = None


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    client_ca: Path


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


@dataclass(frozen=True)
class AgentConfig:
    listen: Listen
    workers: int = 1
    ports: tuple[PortConfig, ...] = ()
    tls: TlsFiles | None = None
    metrics: HostPort | None = None
    fib: FibCapacity = field(default_factory=FibCapacity)
    # The network namespace (`ip netns` name) of the ports: the engine's workers, the
    # neighbour entries and the link watch live there; the listeners stay in the agent's.
    netns: str | None = None


def load(path: str | os.PathLike[str]) -> AgentConfig:
    """Reads and checks the file at `path`; raises ConfigError naming the file and field."""
    return load_toml(path, parse)


def load_toml(path: str | os.PathLike[str], parse_document: Callable[..., T]) -> T:
    """Reads the TOML file at `path` and checks it with `parse_document(document, base=)`,
    relative paths taken from the file's directory; every error names the file."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            document = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from e
    try:
        return parse_document(document, base=path.parent)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e


def parse(document: dict[str, Any], base: Path = Path()) -> AgentConfig:
    """Checks a parsed TOML document; relative paths in it are taken relative to `base`."""
    top = _Table(document, "")
    workers = top.integer("workers", 1, WORKERS_MAX, default=1)
    netns = _netns(top)
    listen = _listen(top.table("listen", required=True), base)
    tls_table = top.table("tls")
    tls = _tls(tls_table, base) if tls_table is not None else None
    if tls is not None and listen.tcp is None:
        raise ConfigError("tls: is set but listen.tcp is not; TLS protects the TCP listener")
    metrics_table = top.table("metrics")
    metrics = None
    if metrics_table is not None:
        metrics = _host_port(metrics_table, "address", required=True)
        metrics_table.done()
    fib_table = top.table("fib")
    fib = _fib(fib_table) if fib_table is not None else FibCapacity()
    ports = tuple(_port(t) for t in top.tables("ports"))
    names = [p.name for p in ports]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ConfigError(f"ports[{i}].name: {name!r} is already ports[{names.index(name)}]")
    top.done()
    return AgentConfig(
        listen=listen,
        workers=workers,
        ports=ports,
        tls=tls,
        metrics=metrics,
        fib=fib,
        netns=netns,
    )


def _netns(t: _Table) -> str | None:
    name = t.string("netns")
    if name is None:
        return None
    if not name or len(name) > 255 or name in (".", "..") or any(c in name for c in "/\0 \t\n"):
        raise ConfigError(
            f"netns: {name!r} is not a network namespace name as `ip netns add NAME` takes "
            "(1 to 255 characters, no '/' or white space)"
        )
    return name


def _listen(t: _Table, base: Path) -> Listen:
    unix = t.string("unix")
    tcp = _host_port(t, "tcp")
    t.done()
    if unix is None and tcp is None:
        raise ConfigError("listen: needs unix (a socket path), tcp (host:port), or both")
    if unix is not None and not unix:
        raise ConfigError("listen.unix: is empty; give the path of the socket to create")
    return Listen(unix=base / unix if unix else None, tcp=tcp)


def _tls(t: _Table, base: Path) -> TlsFiles:
    files = {}
    for key in ("cert", "key", "client_ca"):
        value = t.string(key, required=True)
        if not value:
            raise ConfigError(f"{t.path(key)}: is empty; give the path of a PEM file")
        files[key] = base / value
    t.done()
    return TlsFiles(**files)


def _fib(t: _Table) -> FibCapacity:
    sizes = {key: t.integer(key, 1, CAPACITY_MAX - 1) for key in FibCapacity.__dataclass_fields__}
    t.done()
    return FibCapacity(**sizes)


def _port(t: _Table) -> PortConfig:
    name = t.string("name", required=True)
    if (
        not name
        or len(name) > IFNAME_MAX
        or any(c in name for c in "/: \t\n")
        or name in (".", "..")
    ):
        raise ConfigError(
            f"{t.path('name')}: {name!r} is not a network interface name "
            f"(1 to {IFNAME_MAX} characters, none of '/', ':' or white space)"
        )
    port = PortConfig(
        name=name,
        queues=t.integer("queues", 1, QUEUES_MAX, default=1),
        mtu=t.integer("mtu", MTU_MIN, MTU_MAX, default=1500),
        addresses=_addresses(t),
        vlans=tuple(_vlan(v) for v in t.tables("vlans")),
    )
    ids = [v.id for v in port.vlans]
    for i, vid in enumerate(ids):
        if vid in ids[:i]:
            raise ConfigError(f"{t.path('vlans')}[{i}].id: VLAN {vid} is already configured")
    t.done()
    return port


def _vlan(t: _Table) -> Vlan:
    vlan = Vlan(id=t.integer("id", VLAN_MIN, VLAN_MAX, required=True), addresses=_addresses(t))
    t.done()
    return vlan


def _addresses(t: _Table) -> tuple[ipaddress.IPv4Interface | ipaddress.IPv6Interface, ...]:
    values = t.get("addresses", list, 'a list of addresses such as "198.18.0.1/24"', [])
    out = []
    for i, value in enumerate(values):
        where = f"{t.path('addresses')}[{i}]"
        if not isinstance(value, str) or "/" not in value:
            raise ConfigError(
                f"{where}: {value!r} is not an address with its prefix length, "
                'such as "198.18.0.1/24" or "2001:db8::1/64"'
            )
        try:
            out.append(ipaddress.ip_interface(value))
        except ValueError as e:
            raise ConfigError(f"{where}: {value!r} is not a valid address: {e}") from None
    return tuple(out)


def _host_port(t: _Table, key: str, required: bool = False) -> HostPort | None:
    value = t.string(key, required=required)
    if value is None:
        return None
    expected = 'host:port, such as "127.0.0.1:50051" or "[::1]:50051"'
    host, sep, port_text = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ConfigError(f"{t.path(key)}: {value!r}: put an IPv6 host in brackets, {expected}")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"{t.path(key)}: {value!r} is not {expected}, port 0 to 65535")
    return HostPort(host, int(port_text))


class _Table:
    """A TOML table being read: typed getters that know the path, and a check for leftovers."""

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: is {_kind(data)}; expected a table")
        self.data = data
        self.where = where
        self.seen: set[str] = set()

    def path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(self, key: str, kind: type, expected: str, default: Any = None, required=False):
        self.seen.add(key)
        if key not in self.data:
            if required:
                raise ConfigError(f"{self.path(key)}: is required; expected {expected}")
            return default
        value = self.data[key]
        # TOML booleans are Python ints; a port count of `true` is a mistake, not 1.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(f"{self.path(key)}: is {_kind(value)}; expected {expected}")
        return value

    def string(self, key: str, required: bool = False) -> str | None:
        return self.get(key, str, "a string", required=required)

    def integer(self, key: str, low: int, high: int, default=None, required=False) -> int:
        expected = f"an integer between {low} and {high}"
        value = self.get(key, int, expected, default, required)
        if value is not None and not low <= value <= high:
            raise ConfigError(f"{self.path(key)}: {value} is not between {low} and {high}")
        return value

    def table(self, key: str, required: bool = False) -> _Table | None:
        value = self.get(key, dict, "a table", required=required)
        return None if value is None else _Table(value, self.path(key))

    def tables(self, key: str) -> list[_Table]:
        values = self.get(key, list, "an array of tables", [])
        return [_Table(v, f"{self.path(key)}[{i}]") for i, v in enumerate(values)]

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            known = ", ".join(sorted(self.seen))
            raise ConfigError(f"{self.path(unknown[0])}: unknown key; known here: {known}")


def _kind(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string"}
    names.update({list: "an array", dict: "a table"})
    return f"{names.get(type(value), type(value).__name__)} ({value!r})"
