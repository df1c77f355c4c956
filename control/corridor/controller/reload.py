"""What a reload (SIGHUP) changes in a running controller: the log, the TCP listener's TLS
files (for new connections), the drift check interval, and nodes added to or changed in the
file (registered as RegisterNode would). Nodes taken out of the file stay registered, as they
would after a restart (`corridor node del` removes one). The rest waits for a restart."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from corridor.common.reload import Reloaded, changed, reload_log
from corridor.controller.config import ControllerConfig

if TYPE_CHECKING:
    from corridor.controller.main import RunningController

log = logging.getLogger("corridor.controller")

RESTART_FIELDS = (
    "listen", "store", "metrics", "max_groups", "max_adjacencies", "fpm", "etcd", "advertise",
)  # fmt: skip


async def reload(
    running: RunningController, new: ControllerConfig, log_level: str | None, where: str = ""
) -> Reloaded:
    """Applies `new` as far as a reload can (see the module); the TLS files are checked
    before anything changes, and a ConfigError leaves everything as it was. `where` is the
    path of the controller's tables in the file (`corridor up` logs on its own)."""
    old = running.config
    done = Reloaded(restart=changed(old, new, RESTART_FIELDS, where))
    server = running.server
    tls = old.tls
    if (old.tls is None) != (new.tls is None):
        done.restart.append(f"{where}tls")  # a listener gets or loses TLS only by a restart
    elif new.tls is not None and server.tls is not None:
        await asyncio.get_running_loop().run_in_executor(None, server.reload_tls, new.tls, where)
        tls = new.tls
        done.applied.append(f"{where}tls: {tls.cert}, {tls.key}, {tls.client_ca} read again")
    if old.drift_check_seconds != new.drift_check_seconds:
        running.sessions.drift_check = new.drift_check_seconds
        for session in running.controller.sessions.values():
            session.drift_check = new.drift_check_seconds  # from the next check on
        done.applied.append(f"{where}reconcile.drift_check_seconds {new.drift_check_seconds:g}")
    if not where:
        done.applied += reload_log(old.log, new.log, log_level)
    keep = {name: getattr(old, name) for name in RESTART_FIELDS}
    running.config = replace(new, tls=tls, nodes=old.nodes, **keep)
    registered = running.controller.state.nodes
    if not running.controller.leading:
        # A follower of a cluster on etcd: the nodes of its file are registered when it
        # takes the lead (the leader's file registers its own).
        running.controller.configured = new.nodes
        running.config = replace(running.config, nodes=new.nodes)
        return done
    for node in new.nodes:
        if registered.get(node.name) != node:
            await running.controller.register(node)
            done.applied.append(f"node {node.name} registered ({node.address})")
    running.config = replace(running.config, nodes=new.nodes)
    gone = sorted({n.name for n in old.nodes} - {n.name for n in new.nodes})
    if gone:
        log.info(
            "no longer in the file but still registered, as after a restart: %s "
            "(`corridor node del NAME` deregisters one)",
            ", ".join(gone),
        )
    return done
