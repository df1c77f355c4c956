"""SIGHUP for the daemons: read the configuration file again and apply, without a restart,
what can change while serving (the log, TLS files, and what each daemon lists); log what was
reloaded and what changed but waits for a restart. A file that does not pass its checks is
logged problem by problem and changes nothing: the running configuration stays. Reloads run
one at a time; a SIGHUP during one asks for one more, and one while starting is answered
once the daemon serves."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from corridor.common import logs, systemd
from corridor.common.config import ConfigError

C = TypeVar("C")

log = logging.getLogger("corridor.reload")


@dataclass
class Reloaded:
    """What a reload did: changes now in force, and changes that need a restart."""

    applied: list[str] = field(default_factory=list)
    restart: list[str] = field(default_factory=list)


def changed(old: Any, new: Any, names: tuple[str, ...], where: str = "") -> list[str]:
    """The names (with `where` before them) of the fields that differ between two configs."""
    return [f"{where}{n}" for n in names if getattr(old, n) != getattr(new, n)]


def reload_log(
    old: logs.LogConfig | None, new: logs.LogConfig | None, level_override: str | None
) -> list[str]:
    """Applies a new [log] table; what changed, for the reload's line."""
    if old == new:
        return []
    logs.configure(new, level_override)
    new = new or logs.LogConfig()
    said = f"log.format {new.format}, log.level {new.level}"
    if level_override is not None:
        said += f" (--log-level {level_override} stays in force)"
    return [said]


def ignore_hangups() -> None:
    """Once the reload's handler is gone (stopping), a SIGHUP is ignored rather than ending
    the process by default, as it would mid-way."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


_deferred = False  # a SIGHUP came while the daemon was starting


def defer_hangups() -> None:
    """Starting, before the reload's handler is in place: a SIGHUP neither ends the process
    (the default) nor is lost; the reload it asks for runs once the daemon serves
    (Hangup.install). An operator who edits the file as the daemon starts and sends SIGHUP
    gets the edit, whichever of the two the daemon saw first."""
    global _deferred
    _deferred = False

    def deferred(signum: int, frame: object) -> None:
        global _deferred
        _deferred = True

    signal.signal(signal.SIGHUP, deferred)


class Hangup(Generic[C]):
    """Reloads the file at `path` on SIGHUP: `load` reads and checks it (raising ConfigError),
    `apply` checks what it needs against the running daemon (raising ConfigError before it
    changes anything) and applies it."""

    def __init__(
        self,
        what: str,
        path: str,
        load: Callable[[str], C],
        apply: Callable[[C], Awaitable[Reloaded]],
    ) -> None:
        self.what = what
        self.path = path
        self._load = load
        self._apply = apply
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self.reloads = 0  # finished reloads, whatever their outcome (tests wait on it)

    def install(self) -> None:
        global _deferred
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._requested)
        if _deferred:
            _deferred = False
            log.info("SIGHUP while starting: reloading now that %s serves", self.what)
            self._requested()

    async def remove(self) -> None:
        asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)  # SIG_DFL again
        ignore_hangups()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _requested(self) -> None:
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            self._again = False
            await self.reload()
            if not self._again:
                return

    async def reload(self) -> None:
        log.info("SIGHUP: reading %s again", self.path)
        systemd.reloading()
        try:
            config = await asyncio.get_running_loop().run_in_executor(None, self._load, self.path)
            done = await self._apply(config)
        except ConfigError as e:
            for problem in e.problems:
                log.error("reload refused: %s", problem)
            log.error("reload refused: the running configuration of %s stays", self.what)
        except Exception:  # a bug: say so, keep serving
            log.exception("reload of %s failed part way; see above for what was applied", self.what)
        else:
            if done.applied:
                log.info("reloaded %s: %s", self.path, "; ".join(done.applied))
            else:
                log.info("reloaded %s: nothing that a reload applies has changed", self.path)
            if done.restart:
                log.warning(
                    "changed in %s, in force only after a restart: %s",
                    self.path,
                    ", ".join(done.restart),
                )
        finally:
            self.reloads += 1
            systemd.ready("serving; reloaded")
