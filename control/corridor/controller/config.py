"""The controller's configuration: one TOML file, checked whole at start-up the way every
Corridor file is (corridor.common.config: errors name the field; unknown keys are errors).
The same file may hold the tables of `corridor up` ([up], [agent]); corridor.up reads them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
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
from corridor.common.fib import ADJACENCIES_MAX, GROUPS_MAX
from corridor.common.logs import LogConfig, log_from
from corridor.controller.bgp import FpmConfig, fpm_from
from corridor.controller.domain import Node, NodeTls, check_node_address, check_node_name
from corridor.controller.etcd_store import EtcdConfig, EtcdTls, endpoints_problem

__all__ = ["ControllerConfig", "load", "parse"]

# Top-level tables of a controller's file that `corridor up` reads (corridor/up.py).
UP_TABLES = ("up", "agent")


EXAMPLE = """\
# corridor controller --config FILE
[listen]
unix = "/run/corridor/controller.sock"    # for the CLI on this host
tcp = "127.0.0.1:50061"                   # mutual TLS when [tls] is set

[store]
path = "/var/lib/corridor/intent.db"      # SQLite, WAL, durable commits
# A cluster of controllers keeps intent in etcd instead (docs/operations.md, high availability):
# backend = "etcd"
# endpoints = ["10.0.0.1:2379", "10.0.0.2:2379", "10.0.0.3:2379"]
# prefix = "/corridor"                    # every key of this exchange's intent
# lease_seconds = 5                       # a dead leader is replaced within this, plus 1 s
# advertise = "10.0.0.1:50061"            # how clients reach this controller (followers name it)
# [store.tls]                             # mutual TLS to etcd
# ca = "etcd-ca.pem"
# cert = "controller.pem"
# key = "controller.key"

[reconcile]
drift_check_seconds = 10                  # how often each node is checked for drift
max_groups = 65536                        # next-hop groups (as the agents' [fib] groups)
max_adjacencies = 65536

[metrics]
address = "127.0.0.1:9465"

[members]
sample_seconds = 300                      # members' counters stored for billing (5 minutes)

[log]                                     # these are the defaults; SIGHUP applies a change
level = "info"                            # debug, info, warning, error (--log-level wins)
format = "text"                           # text, or json: one JSON object a line

[[nodes]]                                 # registered at start (the API can add more)
name = "ix1"
address = "unix:/run/corridor/agent.sock"

# BGP routes of a node from FRR's zebra over FPM:
# [[fpm]]                                 # one per zebra; routes of `node` (docs/fpm.md)
# node = "ix1"
# listen = "127.0.0.1:2620"               # zebra's `fpm address 127.0.0.1 port 2620`
# stale_seconds = 120                     # hold time after zebra's connection drops
# filter_hold_seconds = 60                # members' filters from BGP keep a withdrawn prefix

# corridor up --config FILE: the same, plus a local agent registered as node `up.node`
# [up]
# node = "local"
# [agent]
# listen = { unix = "/run/corridor/agent.sock" }
# [[agent.ports]]
# name = "eth1"
"""


@dataclass(frozen=True)
class ControllerConfig:
    listen: Listen
    store: Path
    tls: TlsFiles | None = None
    metrics: HostPort | None = None
    drift_check_seconds: float = 10.0
    max_groups: int = 65536
    max_adjacencies: int = 65536
    nodes: tuple[Node, ...] = ()
    fpm: tuple[FpmConfig, ...] = ()
    base: Path = field(default_factory=Path)
    log: LogConfig | None = None
    etcd: EtcdConfig | None = None  # [store] backend = "etcd"; None: SQLite at `store`
    advertise: str = ""  # how clients reach this controller, for followers to name it
    sample_seconds: float = 300.0


def load(path: str | os.PathLike[str]) -> ControllerConfig:
    """Reads and checks the file at `path`; raises ConfigError naming the file and, one per
    line, every field that is wrong."""
    return load_toml(path, parse)


def parse(
    document: dict[str, Any], base: Path = Path(), others: Iterable[str] = UP_TABLES
) -> ControllerConfig:
    """Checks a parsed TOML document; the top-level keys in `others` are left to their own
    reader (by default those of `corridor up`)."""
    top = Table(document, "")
    config = read(top, base, others)
    top.finish()
    return config


def read(top: Table, base: Path, others: Iterable[str] = UP_TABLES) -> ControllerConfig:
    """Reads the controller's tables of `top`, noting problems there (see Table.finish)."""
    listen, tls = tls_and_listen(top, base)
    store_table = top.table("store")
    store = base / "corridor-intent.db"
    etcd = None
    advertise = ""
    if store_table is not None:
        backend = store_table.string("backend") or "sqlite"
        if backend not in BACKENDS:
            store_table.fail("backend", f"{backend!r} is not a store backend; use one of: "
                             + ", ".join(BACKENDS))  # fmt: skip
        path = store_table.string("path")
        if path is not None:
            if not path:
                store_table.fail("path", "is empty; give the SQLite file to use")
            elif backend == "etcd":
                store_table.fail("path", "is SQLite's; an etcd store has no path")
            store = base / path
        if backend == "etcd":
            etcd = _etcd(store_table, base)
            advertise = store_table.string("advertise") or ""
            if not advertise and listen.tcp is not None:
                advertise = str(listen.tcp)
        else:
            for key in ETCD_KEYS:
                if key in store_table.data:
                    store_table.fail(key, 'is for an etcd store; set backend = "etcd"')
        store_table.done()
    metrics = metrics_from(top)
    log = log_from(top)
    drift, max_groups, max_adjacencies = 10, 65536, 65536
    reconcile = top.table("reconcile")
    if reconcile is not None:
        drift = reconcile.integer("drift_check_seconds", 1, 86400, default=10)
        max_groups = reconcile.integer("max_groups", 1, GROUPS_MAX, default=65536)
        max_adjacencies = reconcile.integer("max_adjacencies", 1, ADJACENCIES_MAX, default=65536)
        reconcile.done()
    nodes = tuple(_node(t, base) for t in top.tables("nodes"))
    names = [n.name for n in nodes]
    for i, name in enumerate(names):
        if name and name in names[:i]:
            top.fail(f"nodes[{i}].name", f"{name!r} is already nodes[{names.index(name)}]")
    fpm = fpm_from(top)
    sample_seconds = 300
    members = top.table("members")
    if members is not None:
        sample_seconds = members.integer("sample_seconds", 1, 86400, default=300)
        members.done()
    top.seen.update(others)
    top.done()
    return ControllerConfig(
        listen=listen,
        store=store,
        tls=tls,
        metrics=metrics,
        drift_check_seconds=float(drift),
        max_groups=max_groups,
        max_adjacencies=max_adjacencies,
        nodes=nodes,
        fpm=fpm,
        base=base,
        log=log,
        etcd=etcd,
        advertise=advertise,
        sample_seconds=float(sample_seconds),
    )


BACKENDS = ("sqlite", "etcd")
ETCD_KEYS = ("endpoints", "prefix", "lease_seconds", "timeout_seconds", "advertise", "tls")


def _etcd(t: Table, base: Path) -> EtcdConfig:
    """The etcd keys of [store]: endpoints (host:port), prefix, lease, timeout, [store.tls]."""
    endpoints = t.get("endpoints", list, "an array of host:port strings", [], required=True)
    if not endpoints and "endpoints" in t.data:
        t.fail("endpoints", "is empty; give the client address of each etcd member")
    for i, endpoint in enumerate(endpoints):
        problem = endpoints_problem(endpoint) if isinstance(endpoint, str) else "is not a string"
        if problem is not None:
            t.fail(f"endpoints[{i}]", problem)
    prefix = t.string("prefix") or "/corridor"
    if not prefix.startswith("/") or prefix.rstrip("/") == "":
        t.fail("prefix", f'{prefix!r}: give a key prefix such as "/corridor"')
    lease = t.integer("lease_seconds", 2, 60, default=5)
    timeout = t.integer("timeout_seconds", 1, 60, default=3)
    tls = None
    tls_table = t.table("tls")
    if tls_table is not None:
        files = {}
        for key in ("ca", "cert", "key"):
            value = tls_table.required_string(key)
            files[key] = base / value
            if value and not tls_table.failed(key) and not (base / value).is_file():
                tls_table.fail(key, f"{base / value}: no such file")
        tls_table.done()
        tls = EtcdTls(**files)
    advertise = t.string("advertise")
    if advertise is not None and endpoints_problem(advertise) is not None:
        t.fail("advertise", f"{advertise!r} is not the host:port clients reach this controller at")
    return EtcdConfig(
        tuple(e for e in endpoints if isinstance(e, str)),
        prefix.rstrip("/"),
        lease,
        float(timeout),
        tls,
    )


def _node(t: Table, base: Path) -> Node:
    name = t.required_string("name")
    if not t.failed("name") and (problem := check_node_name(name)) is not None:
        t.fail("name", problem)
    address = t.required_string("address")
    if not t.failed("address") and (problem := check_node_address(address)) is not None:
        t.fail("address", problem)
    if address.startswith("unix:") and not address.startswith("unix:/"):
        address = f"unix:{base / address[5:]}"
    tls = None
    tls_table = t.table("tls")
    if tls_table is not None:
        files = {}
        for key in ("ca", "cert", "key"):
            value = tls_table.required_string(key)
            files[key] = str(base / value)
        tls = NodeTls(**files, server_name=tls_table.string("server_name") or "")
        tls_table.done()
    t.done()
    return Node(name, address, tls)
