"""The controller's Prometheus metrics: intent sizes, each node's sync state and lag, apply
latency. Its own registry, so that several controllers can live in one process (tests)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from corridor.common.metrics import new_registry

if TYPE_CHECKING:
    from corridor.controller.core import Controller

APPLY_SECONDS_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


class ControllerMetrics:
    def __init__(self) -> None:
        self.registry = new_registry()
        self.apply_seconds = Histogram(
            "corridor_controller_apply_seconds",
            "Time from a request to its commit in the store, by call and outcome",
            ["call", "outcome"],
            buckets=APPLY_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.node_writes = Counter(
            "corridor_controller_node_write_operations",
            "Operations written to nodes, by node and reason (sync, change, drift)",
            ["node", "reason"],
            registry=self.registry,
        )

    def applied(self, call: str, outcome: str, started: float) -> None:
        self.apply_seconds.labels(call, outcome).observe(time.perf_counter() - started)

    def watch(self, controller: Controller) -> None:
        self.registry.register(_ControllerCollector(controller))


class _ControllerCollector(Collector):
    def __init__(self, controller: Controller) -> None:
        self.controller = controller

    def collect(self) -> Iterator[Metric]:
        c = self.controller
        v4, v6, groups, adjacencies = c.intent_sizes
        intent = GaugeMetricFamily(
            "corridor_controller_intent_entries", "Entries in intent, by table", labels=["table"]
        )
        for table, value in (
            ("ipv4_routes", v4), ("ipv6_routes", v6),
            ("next_hop_groups", groups), ("adjacencies", adjacencies),
        ):  # fmt: skip
            intent.add_metric([table], value)
        yield intent
        yield GaugeMetricFamily(
            "corridor_controller_revision", "The last committed revision", value=c.state.revision
        )
        in_sync = GaugeMetricFamily(
            "corridor_controller_node_in_sync", "1 when the node holds intent", labels=["node"]
        )
        connected = GaugeMetricFamily(
            "corridor_controller_node_connected", "1 with a session to the agent", labels=["node"]
        )
        lag = GaugeMetricFamily(
            "corridor_controller_node_lag_seconds",
            "Age of the oldest committed change not yet on the node",
            labels=["node"],
        )
        behind = GaugeMetricFamily(
            "corridor_controller_node_revisions_behind",
            "Committed revisions the node does not hold yet",
            labels=["node"],
        )
        drift = CounterMetricFamily(
            "corridor_controller_node_drift", "Times drift was found and repaired", labels=["node"]
        )
        for name, s in c.sessions.items():
            in_sync.add_metric([name], float(s.in_sync))
            connected.add_metric([name], float(s.connected))
            lag.add_metric([name], s.lag_seconds())
            behind.add_metric([name], c.state.revision - s.synced_revision)
            drift.add_metric([name], s.drift_detected)
        yield from (in_sync, connected, lag, behind, drift)
        yield from _leadership(c)
        yield from _bgp(c)


def _leadership(c: Controller) -> Iterator[Metric]:
    """Which controller leads and since when (with etcd; with SQLite, this one, from its
    start)."""
    leader, since = c.leader_now()
    yield GaugeMetricFamily(
        "corridor_controller_leading", "1 while this controller leads", value=float(c.leading)
    )
    info = GaugeMetricFamily(
        "corridor_controller_leader",
        "The leader as this controller sees it (1; none while no controller leads)",
        labels=["leader", "backend"],
    )
    if leader:
        info.add_metric([leader, c.backend], 1.0)
    yield info
    yield GaugeMetricFamily(
        "corridor_controller_leader_since_seconds",
        "When the leader took the lead, in seconds since the epoch (0: no leader known)",
        value=since,
    )
    yield GaugeMetricFamily(
        "corridor_controller_election_id",
        "High 64 bits of this controller's election id toward the agents (0 unless leading)",
        value=float(c.election >> 64 if c.leading else 0),
    )
    yield CounterMetricFamily(
        "corridor_controller_leader_changes",
        "Times this controller took the lead",
        value=c.leader_changes,
    )


def _bgp(c: Controller) -> Iterator[Metric]:
    """BGP routes (in memory, from each node's zebra over FPM) and the health of each feed."""
    v4, v6, groups, adjacencies = c.bgp_sizes
    entries = GaugeMetricFamily(
        "corridor_controller_bgp_entries",
        "BGP routes of every node in intent, their next-hop groups and adjacencies, by table",
        labels=["table"],
    )
    for table, value in (
        ("ipv4_routes", v4), ("ipv6_routes", v6),
        ("next_hop_groups", groups), ("adjacencies", adjacencies),
    ):  # fmt: skip
        entries.add_metric([table], value)
    yield entries
    yield from _member_filters(c)
    if c.feeds is None:
        return
    connected = GaugeMetricFamily(
        "corridor_controller_bgp_connected", "1 while the node's zebra is connected",
        labels=["node"],
    )  # fmt: skip
    routes = GaugeMetricFamily(
        "corridor_controller_bgp_routes", "BGP routes of the node in intent", labels=["node"]
    )
    stale = GaugeMetricFamily(
        "corridor_controller_bgp_stale_routes",
        "BGP routes of an earlier session not sent again yet", labels=["node"],
    )  # fmt: skip
    waiting = GaugeMetricFamily(
        "corridor_controller_bgp_not_installed_routes",
        "Routes zebra selected that are not installed now, by reason", labels=["node", "reason"],
    )  # fmt: skip
    received = CounterMetricFamily(
        "corridor_controller_bgp_received_updates", "Route updates from zebra", labels=["node"]
    )
    errors = CounterMetricFamily(
        "corridor_controller_fpm_errors", "Bad input on the FPM socket, by reason",
        labels=["node", "reason"],
    )  # fmt: skip
    for name, source in c.feeds.sources.items():
        connected.add_metric([name], float(source.connected))
        routes.add_metric([name], len(c.bgp.table(name)))
        stale.add_metric([name], source.stale)
        received.add_metric([name], source.counters.received)
        for reason, n in sorted(source.counters.not_installed.items()):
            if n:
                waiting.add_metric([name, reason], n)
    for config, listener, _ in c.feeds.listeners:
        for reason, n in sorted(listener.counters.errors.items()):
            errors.add_metric([config.node, reason], n)
    yield from (connected, routes, stale, waiting, received, errors)


def _member_filters(c: Controller) -> Iterator[Metric]:
    """Members' source filters derived from BGP (bgp_filters.py): how many, and those over
    the limit (not filtered). No member label: the counts say what to look at, and
    `corridor member list` says which."""
    f = c.filters
    yield GaugeMetricFamily(
        "corridor_controller_member_bgp_filters",
        "Members whose source filter is derived from BGP",
        value=len(f.members),
    )
    yield GaugeMetricFamily(
        "corridor_controller_member_bgp_filters_over_limit",
        "Members not filtered now: more prefixes from BGP than a member's filter takes",
        value=sum(1 for d in f.members.values() if d.over_limit),
    )
    yield CounterMetricFamily(
        "corridor_controller_member_bgp_filter_over_limit",
        "Times a member's filter from BGP went over the limit (and was lifted)",
        value=f.over_limit_total,
    )
