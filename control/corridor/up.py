"""`corridor up`: the controller and a local agent in one process, so that one command on one
server gives a working data plane and its controller. The controller's file holds two more
tables: [agent], a whole agent configuration (that agent runs here, engine included when it
has ports), and [up], whose `node` names it as the controller's node.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop

from corridor.agent import config as agent_config
from corridor.agent.main import start_agent
from corridor.common.config import ConfigError, Table, load_toml
from corridor.controller import config as controller_config
from corridor.controller import main as controller_main
from corridor.controller.domain import Node, check_node_name
from corridor.controller.main import STOP_GRACE_SECONDS, StartError, log


@dataclass(frozen=True)
class UpConfig:
    controller: controller_config.ControllerConfig
    agent: agent_config.AgentConfig
    node: str = "local"  # the local agent's node name


def load(path: str | os.PathLike[str]) -> UpConfig:
    """Reads and checks the file at `path`; raises ConfigError naming the file and field."""
    return load_toml(path, parse)


def parse(document: dict[str, Any], base: Path = Path()) -> UpConfig:
    controller = controller_config.parse(document, base)
    node = "local"
    top = Table(document, "")
    up = top.table("up")
    if up is not None:
        node = up.string("node") or "local"
        if (problem := check_node_name(node)) is not None:
            raise ConfigError(f"up.node: {problem}")
        up.done()
    agent = top.table("agent")
    if agent is None:
        raise ConfigError("agent: is required by `corridor up` (a table)")
    try:
        local = agent_config.parse(agent.data, base)
    except ConfigError as e:
        raise ConfigError(f"agent.{e}") from None
    return UpConfig(controller, local, node)


def run(config_path: str) -> int:
    """Exit status 0 after a clean stop, 2 for a bad configuration, 1 when it could not
    start."""
    controller_main.configure_logging("up")
    try:
        config = load(config_path)
    except ConfigError as e:
        print(f"corridor up: {e}", file=sys.stderr)
        return 2
    from corridor.agent.engine_host import EngineStartError

    try:
        uvloop.run(serve(config))
    except (StartError, EngineStartError, OSError) as e:
        print(f"corridor up: {e}", file=sys.stderr)
        return 1
    return 0


async def serve(config: UpConfig) -> None:
    """The local agent first (the controller's node), then the controller until SIGTERM or
    SIGINT; the agent stops last."""
    if config.agent.listen.unix is None and config.agent.tls is not None:
        raise StartError("agent: `corridor up` reaches its agent over listen.unix; set it")
    agent = await start_agent(config.agent)
    try:
        server = agent.server
        assert server is not None  # start_agent returns a serving agent
        address = (
            f"unix:{server.unix_path}"
            if server.unix_path is not None
            else f"127.0.0.1:{server.port}"
        )
        log.info("local agent serving corridor.v1.Dataplane on %s", address)
        await controller_main.serve(config.controller, (Node(config.node, address),))
    finally:
        await agent.stop(STOP_GRACE_SECONDS)
