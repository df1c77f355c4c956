"""`corridor controller` and `corridor up`: the controller process, on uvloop, stopping cleanly
on SIGTERM or SIGINT. `up` also hosts a local agent in the same process and registers it as
a node, so that one command on one server gives a working data plane and its controller.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from dataclasses import dataclass
from functools import partial

import uvloop

from corridor.agent.config import ConfigError
from corridor.agent.metrics import MetricsServer
from corridor.controller.config import ControllerConfig, load
from corridor.controller.core import Controller
from corridor.controller.domain import Node
from corridor.controller.metrics import ControllerMetrics
from corridor.controller.reconciler import NodeSession
from corridor.controller.server import ControllerServer, StartError, start_server
from corridor.controller.sqlite_store import SqliteStore

log = logging.getLogger("corridor.controller")

STOP_GRACE_SECONDS = 5.0


def run(config_path: str, with_agent: bool = False) -> int:
    """Exit status 0 after a clean stop, 2 for a bad configuration, 1 when it could not
    start."""
    what = "up" if with_agent else "controller"
    logging.basicConfig(level=logging.INFO, format=f"corridor {what}: %(name)s: %(message)s")
    try:
        config = load(config_path)
        if with_agent and config.agent is None:
            raise ConfigError(f"{config_path}: agent: is required by `corridor up` (a table)")
    except ConfigError as e:
        print(f"corridor {what}: {e}", file=sys.stderr)
        return 2
    from corridor.agent.engine_host import EngineStartError

    try:
        uvloop.run(serve(config, with_agent))
    except (StartError, EngineStartError, OSError) as e:
        print(f"corridor {what}: {e}", file=sys.stderr)
        return 1
    return 0


@dataclass
class RunningController:
    controller: Controller
    server: ControllerServer
    store: SqliteStore
    metrics: ControllerMetrics
    metrics_server: MetricsServer | None = None

    async def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        await self.server.stop(grace)
        await self.controller.stop()
        await self.store.close()
        if self.metrics_server is not None:
            self.metrics_server.stop()


async def start_controller(
    config: ControllerConfig, extra_nodes: tuple[Node, ...] = ()
) -> RunningController:
    """Opens the store, loads intent, starts node sessions, then serves."""
    store = await SqliteStore(config.store).open()
    metrics = ControllerMetrics()
    factory = partial(_session, drift_check=config.drift_check_seconds, metrics=metrics)
    controller = Controller(
        store, factory, config.max_groups, config.max_adjacencies, metrics=metrics
    )
    metrics.watch(controller)
    server = None
    try:
        await controller.start(config.nodes + extra_nodes)
        server = await start_server(controller, config.listen, config.tls)
        metrics_server = None
        if config.metrics is not None:
            try:
                metrics_server = MetricsServer(metrics.registry, config.metrics)
            except OSError as e:
                raise StartError(f"metrics.address: cannot listen on {config.metrics}: {e}") from e
        return RunningController(controller, server, store, metrics, metrics_server)
    except BaseException:
        if server is not None:
            await server.stop(0)
        await controller.stop()
        await store.close()
        raise


def _session(node, state, election, drift_check, metrics) -> NodeSession:
    return NodeSession(node, state, election, drift_check, metrics)


async def serve(config: ControllerConfig, with_agent: bool = False) -> None:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    agent = None
    running = None
    try:
        extra: tuple[Node, ...] = ()
        if with_agent:
            agent, node = await _start_agent(config)
            extra = (node,)
        running = await start_controller(config, extra)
        where = []
        if running.server.unix_path is not None:
            where.append(f"unix:{running.server.unix_path}")
        if config.listen.tcp is not None:
            mode = "mutual TLS" if config.tls is not None else "plaintext"
            where.append(f"{config.listen.tcp.host}:{running.server.port} ({mode})")
        log.info("serving corridor.v1.Controller on %s", " and ".join(where))
        await stopping.wait()
        log.info("stopping")
    finally:
        if running is not None:
            await running.stop()
        if agent is not None:
            await agent.stop(STOP_GRACE_SECONDS)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    log.info("stopped")


async def _start_agent(config: ControllerConfig):
    """The local agent of `corridor up`: the very agent `corridor agent` runs, engine
    included when the [agent] table has ports."""
    from corridor.agent.main import start_agent

    agent_config = config.agent
    if agent_config.listen.unix is None and agent_config.tls is not None:
        raise StartError("agent: `corridor up` reaches its agent over listen.unix; set it")
    agent = await start_agent(agent_config)
    server = agent.server
    address = (
        f"unix:{server.unix_path}" if server.unix_path is not None else f"127.0.0.1:{server.port}"
    )
    log.info("local agent serving corridor.v1.Dataplane on %s", address)
    return agent, Node(config.local_node, address)
