"""How the daemons (agent, controller, `corridor up`) log: one record a line on stderr with
its time (UTC), level and logger, as text or as JSON lines. Under systemd's journal (when
JOURNAL_STREAM names stderr) every line starts with its syslog priority, `<3>` for an error,
as sd-daemon(3) describes, so `journalctl -p err` finds errors. The level and format come from
the [log] table, --log-level overrides the level, and a reload (SIGHUP) applies a new [log].
The standard library's logging does the work; only the line's shape is ours."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO

from corridor.common.config import Table

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
FORMATS = ("text", "json")

# syslog priorities (sd-daemon(3)): err, warning, info, debug; critical is crit.
_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"
    format: str = "text"


def log_from(top: Table) -> LogConfig | None:
    """The optional [log] table: `level` (debug, info, warning, error) and `format` (text,
    json)."""
    t = top.table("log")
    if t is None:
        return None
    level = t.string("level") or "info"
    if level not in LEVELS:
        t.fail("level", f"{level!r} is not one of {', '.join(LEVELS)}")
        level = "info"
    form = t.string("format") or "text"
    if form not in FORMATS:
        t.fail("format", f"{form!r} is not one of {', '.join(FORMATS)}")
        form = "text"
    t.done()
    return LogConfig(level, form)


def add_level_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-level",
        choices=tuple(LEVELS),
        help="log from this level up (overrides [log] level; default info)",
    )


def configure(config: LogConfig | None, level_override: str | None = None) -> str:
    """Sends the root logger's records to stderr in the shape `config` asks for, replacing
    what an earlier call set; returns the level in force. Safe to call again on a reload."""
    config = config or LogConfig()
    level = level_override or config.level
    root = logging.getLogger()
    for handler in root.handlers[:]:
        if isinstance(handler, _Handler):
            root.removeHandler(handler)
    handler = _Handler(sys.stderr)
    handler.setFormatter(LineFormatter(config.format == "json", journal_is(sys.stderr)))
    root.addHandler(handler)
    root.setLevel(LEVELS[level])
    return level


def journal_is(stream: IO[str]) -> bool:
    """Whether `stream` is connected to systemd's journal: JOURNAL_STREAM holds the device
    and inode of the journal's socket (systemd.exec(5)), compared with the stream's."""
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """Ours, so that configure() replaces it without touching anyone else's handler."""


class LineFormatter(logging.Formatter):
    def __init__(self, json_lines: bool, journal: bool) -> None:
        super().__init__()
        self.json_lines = json_lines
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        time = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        time = time.replace("+00:00", "Z")
        message = record.getMessage()
        extra = ""
        if record.exc_info:
            extra = self.formatException(record.exc_info)
        if record.stack_info:
            extra = f"{extra}\n{self.formatStack(record.stack_info)}".lstrip("\n")
        if self.json_lines:
            fields = {
                "time": time,
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": message,
            }
            if extra:
                fields["exception"] = extra
            line = json.dumps(fields, ensure_ascii=False)
        else:
            line = f"{time} {record.levelname} {record.name}: {message}"
            if extra:
                line = f"{line}\n{extra}"
        if self.journal:
            # journald reads each line on its own: every line carries the priority.
            prefix = f"<{_priority(record.levelno)}>"
            line = "\n".join(prefix + part for part in line.split("\n"))
        return line


def _priority(levelno: int) -> int:
    for level, priority in _PRIORITIES:
        if levelno >= level:
            return priority
    return 7  # debug
