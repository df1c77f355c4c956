"""The daemons' logs: every line with its time, level and logger; JSON lines on request; the
syslog priority before every line under systemd's journal; the [log] table checked like any
other, and --log-level over it."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import sys
from pathlib import Path

import pytest

from controller_support import toml
from corridor.agent.config import parse as parse_agent
from corridor.common.config import ConfigError
from corridor.common.logs import LineFormatter
from corridor.controller.config import parse as parse_controller
from corridor.up import parse as parse_up
from daemon_support import Daemon

TEXT_LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: \S"
)


def agent_document(tmp: Path, **more: object) -> dict:
    return {
        "workers": 1,
        "listen": {"unix": str(tmp / "agent.sock")},
        "fib": {"v4_routes": 1000, "v6_routes": 1000, "groups": 64, "adjacencies": 64},
        **more,
    }


def test_a_bad_log_table_is_refused_with_every_problem() -> None:
    table = {"level": "loud", "format": 3, "colour": True}
    document = {"listen": {"unix": "a.sock"}, "log": table}
    expected = [
        "log.level: 'loud' is not one of debug, info, warning, error",
        "log.format: is an integer (3); expected a string",
        "log.colour: unknown key; known here: format, level",
    ]
    with pytest.raises(ConfigError) as agent:
        parse_agent(document)
    assert sorted(agent.value.problems) == sorted(expected)
    with pytest.raises(ConfigError) as controller:
        parse_controller({**document, "log": {"format": "xml"}})
    assert controller.value.problems == ("log.format: 'xml' is not one of text, json",)
    # `corridor up` is one process: one [log], at the top.
    up = {"listen": {"unix": "c.sock"}, "agent": {"listen": {"unix": "a.sock"}, "log": {}}}
    with pytest.raises(ConfigError, match=r"agent\.log: is the process's \[log\]"):
        parse_up(up)
    assert parse_agent({**document, "log": {"level": "debug"}}).log.level == "debug"


def record(level: int, message: str, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord("corridor.test", level, __file__, 1, message, (), exc_info)


def test_line_shapes() -> None:
    text = LineFormatter(json_lines=False, journal=False)
    line = text.format(record(logging.WARNING, "link down on %s"))
    assert TEXT_LINE.match(line) and line.endswith("WARNING corridor.test: link down on %s")
    fields = json.loads(LineFormatter(json_lines=True, journal=False).format(record(20, "a\nb")))
    assert (fields["level"], fields["logger"], fields["message"]) == (
        "info",
        "corridor.test",
        "a\nb",
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", fields["time"])
    # Under the journal, each line of a traceback carries the priority: journald reads lines.
    journal = LineFormatter(json_lines=False, journal=True)
    lines = journal.format(record(logging.ERROR, "failed", exc=True)).split("\n")
    assert len(lines) > 3 and all(line.startswith("<3>") for line in lines), lines
    assert "ValueError: boom" in lines[-1]
    for level, priority in ((10, 7), (20, 6), (30, 4), (40, 3), (50, 2)):
        assert journal.format(record(level, "x")).startswith(f"<{priority}>")
    one = LineFormatter(json_lines=True, journal=True).format(record(40, "failed", exc=True))
    assert one.count("\n") == 0 and json.loads(one[3:])["exception"].endswith("boom")


@pytest.mark.slow
async def test_every_line_has_time_level_and_logger(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(toml(agent_document(tmp_path)))
    agent = await Daemon("agent", "--config", str(config)).start()
    await agent.wait_for("serving corridor.v1.Dataplane")
    assert await agent.stop() == 0
    assert len(agent.lines) >= 3, agent.lines
    for line in agent.lines:
        assert TEXT_LINE.match(line), line


@pytest.mark.slow
async def test_log_level_flag_wins_over_the_table(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(toml(agent_document(tmp_path, log={"level": "debug"})))
    agent = await Daemon("agent", "--config", str(config), "--log-level", "warning").start()
    for _ in range(300):  # until it serves: the socket is there
        if (tmp_path / "agent.sock").exists():
            break
        await asyncio.sleep(0.1)
    config.write_text("workers = 0\n")  # a refused reload logs errors, which pass the level
    agent.signal(signal.SIGHUP)
    await agent.wait_for(r"ERROR corridor\.reload: reload refused: .*workers")
    assert await agent.stop() == 0
    assert not [line for line in agent.lines if " INFO " in line or " DEBUG " in line]


@pytest.mark.slow
async def test_json_lines_with_priorities_under_the_journal(tmp_path: Path) -> None:
    """stderr is a file whose device and inode JOURNAL_STREAM names, as systemd sets it for
    a unit whose output goes to the journal: every line starts with `<N>`."""
    config = tmp_path / "agent.toml"
    document = agent_document(tmp_path, log={"format": "json"})
    config.write_text(toml(document))
    out = tmp_path / "stderr"
    with out.open("wb") as stderr:
        st = os.fstat(stderr.fileno())
        env = dict(os.environ, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
        agent = await Daemon("agent", "--config", str(config), env=env, stderr=stderr).start()
        try:
            for _ in range(300):
                if "serving corridor.v1.Dataplane" in out.read_text():
                    break
                await asyncio.sleep(0.1)
            config.write_text(toml({**document, "workers": 0}))
            agent.signal(signal.SIGHUP)
            for _ in range(300):
                if "reload refused" in out.read_text():
                    break
                await asyncio.sleep(0.1)
        finally:
            assert await agent.stop() == 0
    lines = out.read_text().splitlines()
    levels = {"<6>": "info", "<3>": "error", "<4>": "warning", "<7>": "debug"}
    seen = set()
    for line in lines:
        prefix, fields = line[:3], json.loads(line[3:])
        assert levels[prefix] == fields["level"], line
        assert fields["logger"].startswith("corridor.") and fields["time"].endswith("Z"), line
        seen.add(fields["level"])
    assert {"info", "error"} <= seen, lines
