"""`corridor controller`: the controller process, on uvloop, stopping cleanly on SIGTERM or
SIGINT. (`corridor up`, corridor/up.py, runs the same with a local agent beside it.)
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from dataclasses import dataclass
from functools import partial

import uvloop

from corridor.common.config import ConfigError
from corridor.common.metrics import MetricsServer
from corridor.controller.config import ControllerConfig, load
from corridor.controller.core import Controller
from corridor.controller.domain import IntentState, Node
from corridor.controller.metrics import ControllerMetrics
from corridor.controller.reconciler import NodeSession
from corridor.controller.server import ControllerServer, StartError, start_server
from corridor.controller.sqlite_store import SqliteStore

log = logging.getLogger("corridor.controller")

STOP_GRACE_SECONDS = 5.0


__all__ = [
    "STOP_GRACE_SECONDS",
    "RunningController",
    "StartError",
    "run",
    "serve",
    "start_controller",
]


def configure_logging(what: str) -> None:
    logging.basicConfig(level=logging.INFO, format=f"corridor {what}: %(name)s: %(message)s")


def run(config_path: str) -> int:
    """Exit status 0 after a clean stop, 2 for a bad configuration, 1 when it could not
    start."""
    configure_logging("controller")
    try:
        config = load(config_path)
    except ConfigError as e:
        print(f"corridor controller: {e}", file=sys.stderr)
        return 2
    try:
        uvloop.run(serve(config))
    except (StartError, OSError) as e:
        print(f"corridor controller: {e}", file=sys.stderr)
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


def _session(
    node: Node,
    state: IntentState,
    election: int,
    drift_check: float,
    metrics: ControllerMetrics,
) -> NodeSession:
    return NodeSession(node, state, election, drift_check, metrics)


async def serve(config: ControllerConfig, extra_nodes: tuple[Node, ...] = ()) -> None:
    """Serves until SIGTERM or SIGINT, then drains and releases everything it bound."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    running = None
    try:
        running = await start_controller(config, extra_nodes)
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
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    log.info("stopped")
