"""`corridor agent`: the agent process. Reads the configuration, builds the FIB, serves gRPC
and /metrics on uvloop, reloads what it can on SIGHUP (the log, TLS files, the ICMP limits,
the election's writers and admins) and stops cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import uvloop

from corridor.agent.config import AgentConfig, IcmpLimits, PortConfig, load
from corridor.agent.domain import Dataplane
from corridor.agent.metrics import AgentMetrics
from corridor.agent.server import AgentServer, StartError, start_server
from corridor.agent.sflow import SflowStats
from corridor.common import logs, systemd
from corridor.common.config import ConfigError
from corridor.common.metrics import MetricsServer
from corridor.common.reload import Hangup, Reloaded, changed, defer_hangups, reload_log

if TYPE_CHECKING:
    from corridor.agent.engine_host import EngineHost
    from corridor.agent.fib_adapter import EngineFib
    from corridor.agent.glean import Glean
    from corridor.agent.neighbours import LinkWatch
    from corridor.agent.nexthops import Gateway
    from corridor.agent.sflow import SflowExporter

log = logging.getLogger("corridor.agent")

STOP_GRACE_SECONDS = 5.0


def run(config_path: str, check_only: bool = False, log_level: str | None = None) -> int:
    """The process: exit status 0 after a clean stop, 2 for a bad configuration, 1 when the
    agent could not start."""
    defer_hangups()
    logs.configure(None, log_level)
    try:
        config = load(config_path)
    except ConfigError as e:
        for problem in e.problems:
            print(f"corridor agent: {problem}", file=sys.stderr)
        return 2
    if check_only:
        print(f"corridor agent: {Path(config_path)}: valid", file=sys.stderr)
        return 0
    logs.configure(config.log, log_level)
    from corridor.agent.engine_host import EngineStartError

    def hangup(running: RunningAgent) -> Hangup[AgentConfig]:
        return Hangup("the agent", config_path, load, lambda new: reload(running, new, log_level))

    try:
        uvloop.run(serve(config, hangup))
    except (StartError, EngineStartError) as e:
        print(f"corridor agent: {e}", file=sys.stderr)
        return 1
    return 0


def reset_election(config_path: str) -> int:
    """`corridor agent --config FILE --reset-election`: over the Unix socket of the agent
    that runs with FILE, makes it forget the highest election id (a writer's runaway or
    hostile id that locks every writer out). Exit 0 when done, 1 when the agent could not be
    reached or refused, 2 for a bad file."""
    try:
        config = load(config_path)
    except ConfigError as e:
        for problem in e.problems:
            print(f"corridor agent: {problem}", file=sys.stderr)
        return 2
    if config.listen.unix is None:
        print(
            f"corridor agent: {config_path}: listen.unix is not set; the election is reset over "
            "the agent's Unix socket",
            file=sys.stderr,
        )
        return 2
    import grpc

    from corridor.common.errors import format_election_id
    from corridor.common.status import election_id_from_pb
    from corridor.v1 import dataplane_pb2, dataplane_pb2_grpc

    async def call() -> int:
        async with grpc.aio.insecure_channel(f"unix:{config.listen.unix}") as channel:
            stub = dataplane_pb2_grpc.DataplaneStub(channel)
            reply = await stub.ResetElection(dataplane_pb2.ResetElectionRequest(), timeout=10)
        return election_id_from_pb(reply.previous)

    try:
        previous = asyncio.run(call())
    except grpc.RpcError as e:
        print(f"corridor agent: reset-election: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    print(
        f"election reset: the highest id was {format_election_id(previous)}; the next "
        "writer's id takes the election"
    )
    return 0


async def serve(
    config: AgentConfig, hangup: Callable[[RunningAgent], Hangup[AgentConfig]] | None = None
) -> None:
    """Serves until SIGTERM or SIGINT, then drains and releases everything it bound; with
    `hangup`, reloads on SIGHUP."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    try:
        running = await start_agent(config)
        reloading = hangup(running) if hangup is not None else None
        try:
            if reloading is not None:
                reloading.install()
            systemd.ready("serving corridor.v1.Dataplane")
            await stopping.wait()
            systemd.stopping()
            log.info("stopping")
        finally:
            if reloading is not None:
                await reloading.remove()
            await running.stop(STOP_GRACE_SECONDS)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    log.info("stopped")


# What a reload applies (below) and what only a restart does.
RESTART_FIELDS = ("listen", "workers", "ports", "metrics", "fib", "netns", "glean")


async def reload(
    running: RunningAgent, new: AgentConfig, log_level: str | None, where: str = ""
) -> Reloaded:
    """Applies what can change while serving: [log], [tls] (new connections), [election],
    the [icmp] rates and bursts, [sflow] and the ports' sample_rate; says what else changed.
    Checks first: a ConfigError leaves everything as it was."""
    dataplane = running.dataplane
    old = dataplane.config
    # Ports that differ only in their sampling rates are a change a reload applies.
    rates_only = _without_rates(old.ports) == _without_rates(new.ports)
    done = Reloaded(
        restart=changed(old, replace(new, ports=old.ports) if rates_only else new,
                        RESTART_FIELDS, where)
    )  # fmt: skip
    server = running.server
    tls_changed = old.tls != new.tls or new.tls is not None  # the files may be new
    if tls_changed and (old.tls is None or new.tls is None):
        done.restart.append(f"{where}tls")  # a listener gets or loses TLS only by a restart
    elif tls_changed and new.tls is not None and server is not None and server.tls is not None:
        tls = new.tls
        await asyncio.get_running_loop().run_in_executor(None, server.reload_tls, tls, where)
        done.applied.append(f"{where}tls: {tls.cert}, {tls.key}, {tls.client_ca} read again")
    if old.election != new.election:
        done.applied.append(f"{where}election")
    # The rates and bursts apply now; the per-source table's size as started stays.
    sources = dict(old.icmp.keywords).get("icmp_sources")
    if dict(new.icmp.keywords).get("icmp_sources") != sources:
        done.restart.append(f"{where}icmp.sources")
    rates = [(k, v) for k, v in new.icmp.keywords if k != "icmp_sources"]
    icmp = IcmpLimits(tuple(rates + ([("icmp_sources", sources)] if sources else [])))
    if dict(icmp.keywords) != dict(old.icmp.keywords):
        if running.host is not None:
            await asyncio.get_running_loop().run_in_executor(
                None, running.host.set_icmp_limits, icmp
            )
        done.applied.append(f"{where}icmp")
    sflow_changed = old.sflow != new.sflow or _rates(old.ports) != _rates(new.ports)
    if rates_only and sflow_changed and running.host is not None:
        try:
            await running.replace_sflow(new)
        except StartError as e:
            raise ConfigError(f"{where}{e}") from None
        done.applied.append(f"{where}sflow")
    done.applied += reload_log(old.log, new.log, log_level) if not where else []
    # What is in force: the new election policy and log; the rest as the engine runs it.
    keep = {name: getattr(old, name) for name in RESTART_FIELDS}
    keep["tls"] = old.tls if f"{where}tls" in done.restart else new.tls
    if rates_only:
        keep["ports"] = new.ports
    elif sflow_changed:
        done.restart.append(f"{where}sflow")
    dataplane.config = replace(new, icmp=icmp, sflow=new.sflow if rates_only else old.sflow, **keep)
    return done


def _without_rates(ports: tuple[PortConfig, ...]) -> tuple[PortConfig, ...]:
    return tuple(replace(p, sample_rate=0) for p in ports)


def _rates(ports: tuple[PortConfig, ...]) -> list[int]:
    return [p.sample_rate for p in ports]


@dataclass
class RunningAgent:
    """An agent that serves: its gRPC server, and the engine and link watch when it has
    ports. `corridor agent` and `corridor up` both start one with `start_agent`."""

    dataplane: Dataplane
    server: AgentServer | None = None
    host: EngineHost | None = None
    watch: LinkWatch | None = None
    metrics_server: MetricsServer | None = None
    glean: Glean | None = None
    sflow: SflowExporter | None = None
    # The exporters' counts, for /metrics: one object across the exporters reloads start.
    sflow_stats: SflowStats = field(default_factory=SflowStats)

    async def replace_sflow(self, config: AgentConfig) -> None:
        """Starts the exporter of `config` (or turns sampling off without [sflow]) before the
        old one stops: when the new one cannot start (StartError), the old runs on. A new
        exporter counts its sequence numbers and uptime from the start again."""
        if self.host is None:
            return
        new = None
        if config.sflow is not None:
            new = await start_sflow(config, self.host, self.sflow_stats)
        if new is None:
            loop = asyncio.get_running_loop()
            off = [0] * len(config.ports)
            await loop.run_in_executor(None, self.host.engine.set_sample_rates, off)
        if self.sflow is not None:
            await self.sflow.stop()
        self.sflow = new

    async def stop(self, grace: float) -> None:
        if self.server is not None:
            await self.server.stop(grace)
        if self.sflow is not None:
            await self.sflow.stop()
        if self.glean is not None:
            await self.glean.stop()
        if self.watch is not None:
            await self.watch.stop()
        if self.host is not None:
            self.dataplane.engine = None
            await self.host.stop()
            log.info("engine stopped")
        if self.metrics_server is not None:
            self.metrics_server.stop()


async def start_agent(config: AgentConfig) -> RunningAgent:
    """Builds the FIB, starts the engine on the configured ports (if any), /metrics and the
    gRPC server. On failure nothing is left running."""
    loop = asyncio.get_running_loop()
    # Imported here: the engine is needed to serve, not to check a configuration.
    from corridor.agent.fib_adapter import EngineFib

    ports = [p.name for p in config.ports]
    fib = await loop.run_in_executor(None, EngineFib, config.fib, ports)  # sizes tables: slow
    metrics = AgentMetrics()
    dataplane = Dataplane(config, fib, observer=metrics)
    metrics.watch(dataplane)
    running = RunningAgent(dataplane)
    try:
        if config.ports:
            running.host, running.watch, running.glean = await start_engine(config, fib, dataplane)
            metrics.watch_sflow(running.sflow_stats)
            if config.sflow is not None:
                running.sflow = await start_sflow(config, running.host, running.sflow_stats)
        if config.metrics is not None:
            try:
                running.metrics_server = MetricsServer(metrics.registry, config.metrics)
            except OSError as e:
                raise StartError(f"metrics.address: cannot listen on {config.metrics}: {e}") from e
            log.info("metrics on http://%s/metrics", config.metrics)
        running.server = server = await start_server(dataplane, config.listen, config.tls)
    except BaseException:
        await running.stop(0)
        raise
    where = []
    if server.unix_path is not None:
        where.append(f"unix:{server.unix_path}")
    if config.listen.tcp is not None:
        mode = "mutual TLS" if config.tls is not None else "plaintext"
        where.append(f"{config.listen.tcp.host}:{server.port} ({mode})")
    log.info("serving corridor.v1.Dataplane on %s", " and ".join(where))
    return running


async def start_engine(
    config: AgentConfig, fib: EngineFib, dataplane: Dataplane
) -> tuple[EngineHost, LinkWatch, Glean]:
    """Starts the engine on the configured ports, the watch of their links and neighbours
    and the hosts of the attached subnets (glean); returns them. On failure nothing is left
    running."""
    from corridor.agent.engine_host import EngineHost, EngineStartError
    from corridor.agent.glean import Glean, HostTable, attached_subnets, host_room
    from corridor.agent.neighbours import LinkWatch

    stats = fib.stats()
    subnets = attached_subnets(config.ports)
    try:
        hosts = host_room(
            config.glean.hosts, bool(subnets), stats["adjacency_capacity"], stats["group_capacity"]
        )
    except ValueError as e:
        raise EngineStartError(str(e)) from None
    table = HostTable(
        subnets,
        replace(config.glean, hosts=hosts),
        first_adjacency=stats["adjacency_capacity"] - hosts,
        first_group=stats["group_capacity"] - hosts,
    )
    host = EngineHost(config, fib.native)
    await host.start()
    ports = host.ports()
    log.info(
        "engine on %s (%d worker(s)%s)",
        ", ".join(f"{p['name']}: {p['mode']}, XDP {p['xdp_mode']}" for p in ports),
        config.workers,
        f", namespace {config.netns}" if config.netns else "",
    )
    push = NextHopPush(dataplane)
    vlans = {p.name: tuple(v.id for v in p.vlans) for p in config.ports}
    watch = LinkWatch(vlans, config.netns, push)
    push.watch = watch
    try:
        await watch.start()
    except BaseException:
        await host.stop()
        raise
    dataplane.engine = host
    dataplane.ifindex_of = watch.ifindex

    def want() -> None:
        watch.want(dataplane.gateways | table.wanted())

    def facts() -> tuple[dict[Gateway, str], dict[str, str]]:
        return watch.neighbours, watch.port_mac

    glean = Glean(table, dataplane, host.drain_glean, want, facts, watch.forget)
    push.glean = glean

    def written() -> None:
        want()
        push()

    dataplane.on_next_hops_written = written
    dataplane.glean = table
    dataplane.on_taken = glean.take_over
    try:
        await glean.start()
    except BaseException:
        dataplane.glean = None
        dataplane.engine = None
        await watch.stop()
        await host.stop()
        raise
    return host, watch, glean


async def start_sflow(
    config: AgentConfig, host: EngineHost, stats: SflowStats | None = None
) -> SflowExporter:
    """Sets the ports' sampling rates and starts sending to the collectors. StartError
    when the collectors' sockets cannot be opened (a namespace that is not there)."""
    from corridor.agent.sflow import SflowExporter

    assert config.sflow is not None
    ifindex = {p["name"]: p["ifindex"] for p in host.ports()}
    ports = [(p.name, ifindex.get(p.name, 0), p.sample_rate) for p in config.ports]
    exporter = SflowExporter(config.sflow, host.engine, ports, stats)
    try:
        await exporter.start()
    except OSError as e:
        raise StartError(f"sflow: cannot open the collectors' sockets: {e}") from e
    return exporter


class NextHopPush:
    """Hands the watch's facts to the dataplane, coalescing bursts of events: at most one
    refresh runs, and one more follows if facts changed meanwhile."""

    def __init__(self, dataplane: Dataplane) -> None:
        self.dataplane = dataplane
        self.watch: LinkWatch | None = None
        self.glean: Glean | None = None
        self._task: asyncio.Task[None] | None = None
        self._again = False

    def __call__(self) -> None:
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            self._again = False
            w = self.watch
            if w is None:
                return
            try:
                await self.dataplane.refresh(w.link_up, w.port_mac, w.neighbours)
            except Exception:  # a refusal here is a bug; keep following events
                log.exception("applying link and neighbour changes")
            if self.glean is not None:
                try:
                    await self.glean.refresh()
                except Exception:
                    log.exception("glean: following neighbour changes")
            if not self._again:
                return
