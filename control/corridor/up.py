"""`corridor up`: the controller and a local agent in one process, so that one command on one
server gives a working data plane and its controller. The controller's file holds two more
tables: [agent], a whole agent configuration (that agent runs here, engine included when it
has ports), and [up], whose `node` names it as the controller's node. The top-level [log]
is the process's; SIGHUP reloads what the controller and the agent each can.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corridor.agent import config as agent_config
from corridor.agent import main as agent_main
from corridor.agent.main import RunningAgent, start_agent
from corridor.common import logs, serving
from corridor.common.config import ConfigError, Table, load_toml
from corridor.common.reload import Hangup, Reloaded, defer_hangups
from corridor.controller import config as controller_config
from corridor.controller import main as controller_main
from corridor.controller import reload as controller_reload
from corridor.controller.domain import Node, check_node_name
from corridor.controller.main import (
    STOP_GRACE_SECONDS,
    AnyStore,
    RunningController,
    StartError,
    log,
)
from corridor.controller.store import Loaded


@dataclass(frozen=True)
class UpConfig:
    controller: controller_config.ControllerConfig
    agent: agent_config.AgentConfig
    node: str = "local"  # the local agent's node name


def load(path: str | os.PathLike[str]) -> UpConfig:
    """Reads and checks the file at `path`; raises ConfigError naming the file and, one per
    line, every field that is wrong."""
    return load_toml(path, parse)


def parse(document: dict[str, Any], base: Path = Path()) -> UpConfig:
    top = Table(document, "")
    controller = controller_config.read(top, base)
    node = "local"
    up = top.table("up")
    if up is not None:
        node = up.string("node") or "local"
        if not up.failed("node") and (problem := check_node_name(node)) is not None:
            up.fail("node", problem)
        up.done()
    agent_table = top.table("agent", required=True)
    local = agent_config.read(agent_table, base) if agent_table is not None else None
    if local is not None and local.listen.unix is None and local.tls is not None:
        top.fail("agent.listen.unix", "is not set; `corridor up` reaches its agent there")
    if local is not None and local.log is not None:
        top.fail("agent.log", "is the process's [log] in `corridor up`: set it at the top")
    top.finish()
    assert local is not None  # finish() raised otherwise
    return UpConfig(controller, local, node)


def run(
    config_path: str,
    check_only: bool = False,
    accept_empty_store: bool = False,
    log_level: str | None = None,
) -> int:
    """`corridor up`; see corridor.controller.main.run_command for the exit status."""
    defer_hangups()
    logs.configure(None, log_level)

    async def check_config(config: UpConfig) -> str:
        store, loaded = await check(config)
        await store.close()
        return controller_main.summary(config.controller, loaded)

    async def serve_config(config: UpConfig) -> None:
        logs.configure(config.controller.log, log_level)
        await serve(config, accept_empty_store, config_path, log_level)

    return controller_main.run_command(
        "corridor up", config_path, load, check_config, serve_config, check_only
    )


async def check(config: UpConfig, accept_empty_store: bool = False) -> tuple[AnyStore, Loaded]:
    """The controller's check (store, listeners, TLS) and the local agent's listeners and
    TLS, before either starts; ConfigError with every problem."""
    agent_problems = serving.check(config.agent.listen, config.agent.tls, "agent.")
    try:
        store, loaded = await controller_main.check(config.controller, accept_empty_store)
    except ConfigError as e:
        raise ConfigError(*e.problems, *agent_problems) from None
    if agent_problems:
        await store.close()
        raise ConfigError(*agent_problems)
    return store, loaded


async def serve(
    config: UpConfig,
    accept_empty_store: bool = False,
    config_path: str | None = None,
    log_level: str | None = None,
) -> None:
    """The local agent first (the controller's node), then the controller until SIGTERM or
    SIGINT; the agent stops last. Nothing starts until both have been checked. With
    `config_path`, SIGHUP reloads the file."""
    checked = await check(config, accept_empty_store)
    from corridor.agent.engine_host import EngineStartError

    try:
        agent = await start_agent(config.agent)
    except EngineStartError as e:
        await checked[0].close()
        raise StartError(str(e)) from None
    except BaseException:
        await checked[0].close()
        raise
    try:
        server = agent.server
        assert server is not None  # start_agent returns a serving agent
        address = (
            f"unix:{server.unix_path}"
            if server.unix_path is not None
            else f"127.0.0.1:{server.port}"
        )
        log.info("local agent serving corridor.v1.Dataplane on %s", address)
        hangup = None
        if config_path is not None:
            path = config_path

            def hangup(running: RunningController) -> Hangup[UpConfig]:
                return Hangup(
                    "corridor up",
                    path,
                    load,
                    lambda new: reload(running, agent, config.node, new, log_level),
                )

        await controller_main.serve(
            config.controller, (Node(config.node, address),), accept_empty_store, checked, hangup
        )
    finally:
        await agent.stop(STOP_GRACE_SECONDS)


async def reload(
    controller: RunningController,
    agent: RunningAgent,
    node: str,
    new: UpConfig,
    log_level: str | None,
) -> Reloaded:
    """The agent's part of a reload, then the controller's (with the process's [log]); the
    TLS files of both are checked before either changes anything."""
    problems = []
    if new.controller.tls is not None:
        problems += serving.tls_problems(new.controller.tls)
    if new.agent.tls is not None:
        problems += serving.tls_problems(new.agent.tls, "agent.")
    if problems:
        raise ConfigError(*problems)
    done = await agent_main.reload(agent, new.agent, log_level, where="agent.")
    more = await controller_reload.reload(controller, new.controller, log_level)
    done.applied += more.applied
    done.restart += more.restart
    if new.node != node:
        done.restart.append("up.node")
    return done
