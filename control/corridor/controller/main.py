"""`corridor controller`: the controller process, on uvloop, reloading what it can on SIGHUP
(corridor/controller/reload.py) and stopping cleanly on SIGTERM or SIGINT. (`corridor up`,
corridor/up.py, runs the same with a local agent beside it.)
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import uvloop

from corridor.common import logs, serving, systemd
from corridor.common.config import ConfigError, HostPort
from corridor.common.metrics import MetricsServer
from corridor.common.reload import Hangup, defer_hangups
from corridor.controller.config import ControllerConfig, load
from corridor.controller.core import Controller
from corridor.controller.domain import IntentState, Node
from corridor.controller.etcd_store import EtcdStore
from corridor.controller.metrics import ControllerMetrics
from corridor.controller.reconciler import NodeSession
from corridor.controller.server import ControllerServer, StartError, bind_server
from corridor.controller.sqlite_store import SqliteStore
from corridor.controller.store import Loaded, StoreError

log = logging.getLogger("corridor.controller")

STOP_GRACE_SECONDS = 5.0


__all__ = [
    "STOP_GRACE_SECONDS",
    "RunningController",
    "StartError",
    "check",
    "run",
    "run_command",
    "serve",
    "start_controller",
]


C = TypeVar("C")


def run(
    config_path: str,
    check_only: bool = False,
    accept_empty_store: bool = False,
    log_level: str | None = None,
) -> int:
    """`corridor controller`; see run_command for the exit status."""
    defer_hangups()
    logs.configure(None, log_level)

    async def check_config(config: ControllerConfig) -> str:
        store, loaded = await check(config)
        await store.close()
        return summary(config, loaded)

    async def serve_config(config: ControllerConfig) -> None:
        from corridor.controller import reload

        logs.configure(config.log, log_level)

        def hangup(running: RunningController) -> Hangup[ControllerConfig]:
            return Hangup(
                "the controller",
                config_path,
                load,
                lambda new: reload.reload(running, new, log_level),
            )

        await serve(config, accept_empty_store=accept_empty_store, hangup=hangup)

    return run_command(
        "corridor controller", config_path, load, check_config, serve_config, check_only
    )


def run_command(
    command: str,
    config_path: str,
    load_config: Callable[[str], C],
    check_config: Callable[[C], Coroutine[Any, Any, str]],
    serve_config: Callable[[C], Coroutine[Any, Any, None]],
    check_only: bool,
) -> int:
    """Runs `corridor controller` or `corridor up`. Exit status 2 when the configuration or
    a file it names cannot be used, one line per problem and nothing changed on disk; 1 when
    it could not start for a passing reason (an address in use); 0 after a clean stop, or
    when `check_only` found nothing wrong (checking changes nothing either)."""
    try:
        config = load_config(config_path)
        if check_only:
            found: str = uvloop.run(check_config(config))
            print(f"{command}: {config_path}: valid; {found}", file=sys.stderr)
            return 0
        uvloop.run(serve_config(config))
    except ConfigError as e:
        for problem in e.problems:
            print(f"{command}: {problem}", file=sys.stderr)
        return 2
    except StartError as e:
        print(f"{command}: {e}", file=sys.stderr)
        return 1
    return 0


AnyStore = SqliteStore | EtcdStore


async def check(
    config: ControllerConfig, accept_empty_store: bool = False, where: str = ""
) -> tuple[AnyStore, Loaded]:
    """Everything a start can check without changing anything on disk: the store read whole
    and checked, the listeners' paths and TLS files. Returns the store (to open) and what it
    holds; raises ConfigError with every problem, each naming its field."""
    store: AnyStore
    problems = []
    loaded = None
    if config.etcd is not None:
        store = EtcdStore(config.etcd, config.max_groups, config.max_adjacencies)
        try:
            loaded = await store.check(accept_empty_store)
        except StoreError as e:
            await store.close()
            raise StartError(f"{where}store ({store.describe()}): {e}") from None
    else:
        store = SqliteStore(config.store, config.max_groups, config.max_adjacencies)
        try:
            loaded = await store.check(accept_empty_store)
        except StoreError as e:
            problems.append(f"{where}store.path {config.store}: {e}")
    problems += serving.check(config.listen, config.tls, where)
    if problems or loaded is None:
        await store.close()
        raise ConfigError(*problems)
    return store, loaded


def summary(config: ControllerConfig, loaded: Loaded) -> str:
    """What --check found in the store, for its one line."""
    if config.etcd is not None:
        return (
            f"store {config.etcd.describe()}: revision {loaded.revision}, "
            f"{len(loaded.routes)} routes, {len(loaded.nodes)} nodes"
        )
    if not config.store.exists():
        return f"store.path {config.store}: does not exist yet, a new store will be made"
    return (
        f"store.path {config.store}: revision {loaded.revision}, {len(loaded.routes)} "
        f"routes, {len(loaded.nodes)} nodes"
    )


@dataclass
class RunningController:
    controller: Controller
    server: ControllerServer
    store: AnyStore
    metrics: ControllerMetrics
    sessions: SessionMaker
    config: ControllerConfig  # in force: a reload replaces it with what it applied
    metrics_server: MetricsServer | None = None

    async def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        await self.server.stop(grace)
        await self.controller.stop()
        await self.store.close()
        if self.metrics_server is not None:
            self.metrics_server.stop()


async def start_controller(
    config: ControllerConfig,
    extra_nodes: tuple[Node, ...] = (),
    accept_empty_store: bool = False,
    checked: tuple[AnyStore, Loaded] | None = None,
) -> RunningController:
    """Checks what it can without changing anything (see `check`, unless `checked` holds
    its result), binds the listeners, then opens the store, loads intent, starts node
    sessions and serves. A refused start leaves the disk as it found it."""
    store, _ = checked if checked is not None else await check(config, accept_empty_store)
    metrics = ControllerMetrics()
    factory = SessionMaker(config.drift_check_seconds, metrics)
    controller = Controller(
        store,
        factory,
        config.max_groups,
        config.max_adjacencies,
        metrics=metrics,
        fpm=config.fpm,
        advertise=config.advertise,
    )
    controller.sample_seconds = config.sample_seconds
    metrics.watch(controller)
    server = None
    metrics_server = None
    opened = False
    try:
        if config.metrics is not None:
            try:
                metrics_server = MetricsServer(metrics.registry, config.metrics)
            except OSError as e:
                raise StartError(f"metrics.address: cannot listen on {config.metrics}: {e}") from e
        server = await bind_server(controller, config.listen, config.tls)
        if config.listen.tcp is not None and controller.advertise == str(config.listen.tcp):
            # Port 0: followers name the port that was bound.
            controller.advertise = str(HostPort(config.listen.tcp.host, server.port or 0))
        try:
            await store.open()  # the first change on disk
        except StoreError as e:
            raise ConfigError(f"store.path {config.store}: {e}") from None
        opened = True
        await controller.start(config.nodes + extra_nodes)
        await server.serve()
        return RunningController(
            controller, server, store, metrics, factory, config, metrics_server
        )
    except BaseException:
        if server is not None:
            if opened:
                await server.stop(0)
            else:
                await server.unbind()
        await controller.stop()
        await store.close()
        if metrics_server is not None:
            metrics_server.stop()
        raise


class SessionMaker:
    """Makes each node's session, with the drift interval in force (a reload changes it)."""

    def __init__(self, drift_check: float, metrics: ControllerMetrics) -> None:
        self.drift_check = drift_check
        self.metrics = metrics

    def __call__(self, node: Node, state: IntentState, election: int) -> NodeSession:
        return NodeSession(node, state, election, self.drift_check, self.metrics)


async def serve(
    config: ControllerConfig,
    extra_nodes: tuple[Node, ...] = (),
    accept_empty_store: bool = False,
    checked: tuple[AnyStore, Loaded] | None = None,
    hangup: Callable[[RunningController], Hangup[Any]] | None = None,
) -> None:
    """Serves until SIGTERM or SIGINT, then drains and releases everything it bound; with
    `hangup`, reloads on SIGHUP."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    running = None
    reloading = None
    try:
        running = await start_controller(config, extra_nodes, accept_empty_store, checked)
        if hangup is not None:
            reloading = hangup(running)
            reloading.install()
        _collect_less()
        where = []
        if running.server.unix_path is not None:
            where.append(f"unix:{running.server.unix_path}")
        if config.listen.tcp is not None:
            mode = "mutual TLS" if config.tls is not None else "plaintext"
            where.append(f"{config.listen.tcp.host}:{running.server.port} ({mode})")
        log.info("serving corridor.v1.Controller on %s", " and ".join(where))
        systemd.ready("serving corridor.v1.Controller")
        await stopping.wait()
        systemd.stopping()
        log.info("stopping")
    finally:
        if reloading is not None:
            await reloading.remove()
        if running is not None:
            await running.stop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    log.info("stopped")


def _collect_less() -> None:
    """A full table's intent is millions of long-lived objects, which the cyclic collector
    would scan again and again while batches allocate (a few to 15 % of a full table's
    Apply time, measured with the collector off). What the start loaded is frozen out of its
    scans, and collections run after 100 000 allocations rather than 700: the controller
    makes few reference cycles, and those wait a little longer to be freed."""
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)
