"""The agent's Prometheus metrics: FIB sizes, write latency, election state, next hops
(unresolved, on a down link, empty groups) as `corridor_agent_*` and, with the engine, its
counters per sub-interface, drop reason, ICMP outcome and worker, and its ports' link state as
`corridor_engine_*`. Each agent has its own registry, so several can live in one process.

Exchange members are labelled by name (`member`): at most MEMBER_SERIES_MAX of them (by
id), so one exchange's member list cannot flood Prometheus; the rest, and the drops of each
member by reason, are in GetCounters and `corridor member counters`. Frames from MACs no
member has are `member="_unknown"` (a name cannot start with "_").
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from corridor.agent.domain import Dataplane
from corridor.common.fib import MEMBERS_MAX, Member
from corridor.common.metrics import new_registry

if TYPE_CHECKING:
    from corridor._dataplane import PortStatus, SampleStats
    from corridor.agent.engine_host import Counters
    from corridor.agent.sflow import SflowStats

# Members exported with their own series (5 each): 256 members are 1,280 series.
MEMBER_SERIES_MAX = 256
UNKNOWN_MEMBER_LABEL = "_unknown"

# From a handful of routes (tens of microseconds) to a 100,000-operation batch (seconds).
WRITE_SECONDS_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


class AgentMetrics:
    """Observes writes for the domain (WriteObserver) and reads the rest at scrape time."""

    def __init__(self) -> None:
        self.registry = new_registry()
        self.write_seconds = Histogram(
            "corridor_agent_write_seconds",
            "Time to validate and apply one write batch, by outcome",
            ["outcome"],
            buckets=WRITE_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.write_operations = Counter(
            "corridor_agent_write_operations",
            "Operations in write batches, by outcome (applied, invalid, not_primary)",
            ["outcome"],
            registry=self.registry,
        )

    def written(self, seconds: float, operations: int, outcome: str) -> None:
        self.write_seconds.labels(outcome).observe(seconds)
        self.write_operations.labels(outcome).inc(operations)

    def watch(self, dataplane: Dataplane) -> None:
        self.registry.register(_DataplaneCollector(dataplane))

    def watch_sflow(self, stats: SflowStats) -> None:
        """The sFlow exporter's counts (one object for the agent's life, across reloads)."""
        self.registry.register(_SflowCollector(stats))


class _SflowCollector(Collector):
    def __init__(self, stats: SflowStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self.stats
        for name, help_, value in (
            ("flow_samples", "sFlow flow samples sent to the collectors", s.flow_samples),
            (
                "interface_samples",
                "sFlow counter samples (interface counters) sent",
                s.counter_samples,
            ),
            ("datagrams", "sFlow datagrams sent (each to every collector)", s.datagrams),
            ("send_errors", "sFlow datagrams a collector's socket refused", s.send_errors),
        ):
            yield CounterMetricFamily(f"corridor_agent_sflow_{name}", help_, value=value)


class _DataplaneCollector(Collector):
    def __init__(self, dataplane: Dataplane) -> None:
        self.dataplane = dataplane

    def collect(self) -> Iterator[Metric]:
        # The stats the dataplane kept from its last batch: a scrape never waits on the FIB.
        stats = self.dataplane.stats
        entries = GaugeMetricFamily(
            "corridor_agent_fib_entries", "Entries installed in the FIB, by table", labels=["table"]
        )
        capacity = GaugeMetricFamily(
            "corridor_agent_fib_capacity",
            "Entries the FIB has room for, by table",
            labels=["table"],
        )
        entries.add_metric(["ipv4_routes"], stats["v4_routes"])
        entries.add_metric(["ipv6_routes"], stats["v6_routes"])
        entries.add_metric(["groups"], stats["groups"])
        entries.add_metric(["adjacencies"], stats["adjacencies"])
        capacity.add_metric(["ipv4_routes"], stats["v4_capacity"])
        capacity.add_metric(["ipv6_routes"], stats["v6_capacity"])
        capacity.add_metric(["groups"], stats["group_capacity"])
        capacity.add_metric(["adjacencies"], stats["adjacency_capacity"])
        yield entries
        yield capacity
        nodes = GaugeMetricFamily(
            "corridor_agent_fib_trie_nodes", "Trie nodes in use, by family", labels=["family"]
        )
        memory = GaugeMetricFamily(
            "corridor_agent_fib_bytes",
            "Memory held by the route tables, by family",
            labels=["family"],
        )
        nodes.add_metric(["ipv4"], stats["v4_nodes_used"])
        nodes.add_metric(["ipv6"], stats["v6_nodes_used"])
        memory.add_metric(["ipv4"], stats["v4_bytes"])
        memory.add_metric(["ipv6"], stats["v6_bytes"])
        yield nodes
        yield memory
        yield CounterMetricFamily(
            "corridor_agent_fib_batches_applied",
            "Batches applied to the FIB since the agent started, written or the agent's own "
            "refreshes (the generation a Write reply returns)",
            value=self.dataplane.generation,
        )
        summary = self.dataplane.next_hop_summary
        next_hops = GaugeMetricFamily(
            "corridor_agent_next_hops",
            "Written adjacencies by state: usable, unresolved (gateway without a MAC), "
            "link_down (their port is down)",
            labels=["state"],
        )
        unusable = summary["unresolved"] + summary["link_down"]
        next_hops.add_metric(["usable"], summary["adjacencies"] - unusable)
        next_hops.add_metric(["unresolved"], summary["unresolved"])
        next_hops.add_metric(["link_down"], summary["link_down"])
        yield next_hops
        yield GaugeMetricFamily(
            "corridor_agent_next_hop_groups_empty",
            "Groups with no usable member: their traffic drops (reason unknown_egress)",
            value=summary["empty_groups"],
        )
        yield CounterMetricFamily(
            "corridor_agent_next_hop_refreshes",
            "Batches the agent applied by itself after link or neighbour changes",
            value=self.dataplane.refreshes,
        )
        engine = self.dataplane.engine
        if engine is not None:
            counters = engine.counters()
            ports = engine.ports()
            yield from _engine_metrics(counters, ports)
            yield from _member_metrics(counters, self.dataplane.members)
            yield from _sample_metrics(engine.sample_stats(), ports)
            yield from _glean_metrics(self.dataplane.glean_summary(), counters.glean)
        election = self.dataplane.election
        # 128 bits do not fit a float sample, and a label whose value changes with each
        # election would start a new series every time: the id is two gauges, its high and
        # low 64 bits, exact up to 2**53 each (the controller's ids count up in the high half).
        yield GaugeMetricFamily(
            "corridor_agent_election_id_high",
            "The high 64 bits of the highest election id seen (0 before any writer)",
            value=election.highest >> 64,
        )
        yield GaugeMetricFamily(
            "corridor_agent_election_id_low",
            "The low 64 bits of the highest election id seen (0 before any writer)",
            value=election.highest & ((1 << 64) - 1),
        )
        yield CounterMetricFamily(
            "corridor_agent_election_primary_changes",
            "Times a writer with a higher election id became the primary",
            value=election.changes,
        )
        yield CounterMetricFamily(
            "corridor_agent_election_refusals",
            "Write batches refused because their election id was below the primary's",
            value=election.refusals,
        )


def _engine_metrics(counters: Counters, ports: list[PortStatus]) -> Iterator[Metric]:
    """The engine's counters as Prometheus families (read on the scrape thread: the engine
    releases the GIL and locks no worker)."""
    labels = ["port", "vlan"]
    families = {
        field: CounterMetricFamily(f"corridor_engine_{field}", help_, labels=labels)
        for field, help_ in (
            ("rx_packets", "Frames received by the engine, per port and VLAN"),
            ("rx_bytes", "Bytes received by the engine, per port and VLAN"),
            ("tx_packets", "Frames sent by the engine, per port and VLAN"),
            ("tx_bytes", "Bytes sent by the engine, per port and VLAN"),
        )
    }
    raw = counters.engine
    for e in raw["ports"]:
        labels = [e["name"], str(e["vlan"])]
        families["rx_packets"].add_metric(labels, e["rx_packets"])
        families["rx_bytes"].add_metric(labels, e["rx_bytes"])
        families["tx_packets"].add_metric(labels, e["tx_packets"])
        families["tx_bytes"].add_metric(labels, e["tx_bytes"])
    yield from families.values()
    drops = CounterMetricFamily(
        "corridor_engine_drops",
        'Frames dropped, by reason, worker and ingress port ("" for tx_ring_full and '
        "rx_ring_dropped, not told apart by port)",
        labels=["reason", "worker", "port"],
    )
    icmp = CounterMetricFamily(
        "corridor_engine_icmp_errors",
        "ICMP errors, by outcome and worker",
        labels=["outcome", "worker"],
    )
    passes = CounterMetricFamily(
        "corridor_engine_worker_passes", "Passes through the worker loop", labels=["worker"]
    )
    for w in raw["workers"]:
        worker = str(w["worker"])
        for port, reasons in w["port_drops"].items():
            for reason, packets in reasons.items():
                drops.add_metric([reason, worker, port], packets)
        drops.add_metric(["tx_ring_full", worker, ""], w["tx_ring_full"])
        lost = counters.rx_ring_dropped.get(w["worker"], 0)
        drops.add_metric(["rx_ring_dropped", worker, ""], lost)
        for outcome, packets in w["icmp"].items():
            icmp.add_metric([outcome, worker], packets)
        passes.add_metric([worker], w["passes"])
    yield drops
    edge = CounterMetricFamily(
        "corridor_engine_xdp_edge_drops",
        "Frames the XDP program dropped by a sub-interface's edge filter, by reason "
        "(foreign_ethertype, unknown_source_mac) and ingress port",
        labels=["reason", "port"],
    )
    for port, reasons in raw.get("edge", {}).items():
        for reason, packets in reasons.items():
            edge.add_metric([reason, port], packets)
    yield edge
    yield icmp
    yield passes
    up = GaugeMetricFamily(
        "corridor_engine_port_up", "1 while the port's link is up", labels=["port"]
    )
    recoveries = CounterMetricFamily(
        "corridor_engine_port_recoveries", "Times the engine re-attached a port", labels=["port"]
    )
    for p in ports:
        up.add_metric([p["name"]], 1 if p["link_up"] else 0)
        recoveries.add_metric([p["name"]], p["recoveries"])
    yield up
    yield recoveries


def _sample_metrics(stats: list[SampleStats], ports: list[PortStatus]) -> Iterator[Metric]:
    """The sFlow samplers, per port (docs/sflow.md)."""
    rate = GaugeMetricFamily(
        "corridor_engine_sflow_sample_rate", "sFlow: 1 in N received frames sampled (0 off)",
        labels=["port"],
    )  # fmt: skip
    sampled = CounterMetricFamily(
        "corridor_engine_sflow_samples", "sFlow samples taken by the workers", labels=["port"]
    )
    lost = CounterMetricFamily(
        "corridor_engine_sflow_samples_dropped",
        "sFlow samples lost because a worker's sample ring was full (the agent not draining)",
        labels=["port"],
    )
    for p, s in zip(ports, stats, strict=False):
        rate.add_metric([p["name"]], s["rate"])
        sampled.add_metric([p["name"]], s["sampled"])
        lost.add_metric([p["name"]], s["dropped"])
    yield rate
    yield sampled
    yield lost


# The agent's glean counters, by outcome (GleanState in the API).
GLEAN_OUTCOMES = (
    "resolving", "resolved", "failed", "aged", "lost", "mac_changes", "taken_over",
    "rate_limited", "table_full", "ignored",
)  # fmt: skip


def _glean_metrics(
    summary: dict[str, int] | None, engine: dict[str, int] | None
) -> Iterator[Metric]:
    """Hosts on attached subnets: the host routes and resolutions now, what the agent did
    with the destinations the engine queued, and what the engine's queue let through."""
    if summary is not None:
        hosts = GaugeMetricFamily(
            "corridor_agent_glean_hosts",
            "Hosts on attached subnets: with a host route (installed), being resolved (pending)",
            labels=["state"],
        )
        hosts.add_metric(["installed"], summary["hosts"])
        hosts.add_metric(["pending"], summary["pending"])
        yield hosts
        outcomes = CounterMetricFamily(
            "corridor_agent_glean_events",
            "What became of destinations dropped as glean: resolutions started (resolving), "
            "host routes installed, unanswered, aged out, lost, MAC changes, taken over by a "
            "writer's route, left out over the rate or the table, not a host (ignored)",
            labels=["event"],
        )
        for outcome in GLEAN_OUTCOMES:
            outcomes.add_metric([outcome], summary[outcome])
        yield outcomes
    if engine is not None:
        queue = CounterMetricFamily(
            "corridor_engine_glean_queue",
            "Destinations of glean drops at the engine's queue: queued for the agent, "
            "deduplicated (asked within a second), rate_limited (per worker), full",
            labels=["outcome"],
        )
        for outcome in ("queued", "deduplicated", "rate_limited", "full"):
            queue.add_metric([outcome], engine.get(outcome, 0))
        yield queue


def _member_metrics(counters: Counters, members: dict[int, Member]) -> Iterator[Metric]:
    """Every written member up to MEMBER_SERIES_MAX (zeros before any traffic, so the set of
    series changes only when members do), and the unknown row."""
    raw = counters.engine.get("members", {})
    fields = (
        ("rx_packets", "Frames received from the member's MAC on its port and VLAN"),
        ("rx_bytes", "Octets received from the member"),
        ("tx_packets", "Frames forwarded to the member (an adjacency to its MAC)"),
        ("tx_bytes", "Octets forwarded to the member"),
        ("dropped_packets", "The member's frames not forwarded, any reason"),
    )
    families = {
        f: CounterMetricFamily(f"corridor_engine_member_{f}", help_, labels=["member"])
        for f, help_ in fields
    }
    exported = sorted(members)[:MEMBER_SERIES_MAX]
    rows = [(members[i].name or str(i), raw.get(i)) for i in exported]
    rows.append((UNKNOWN_MEMBER_LABEL, raw.get(MEMBERS_MAX)))
    for label, c in rows:
        values = (0, 0, 0, 0, 0) if c is None else (
            c["rx_packets"], c["rx_bytes"], c["tx_packets"], c["tx_bytes"], sum(c["drops"].values())
        )  # fmt: skip
        for (f, _), v in zip(fields, values, strict=True):
            families[f].add_metric([label], v)
    yield from families.values()
    yield GaugeMetricFamily(
        "corridor_engine_members_not_exported",
        f"Members beyond the {MEMBER_SERIES_MAX} exported here (see GetCounters)",
        value=max(0, len(members) - MEMBER_SERIES_MAX),
    )
