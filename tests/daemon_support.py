"""A daemon of ours (`corridor agent`, `controller`, `up`) as a real process, with its stderr
read line by line as it comes, so that a test can wait for a line, bounded in time."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


class Daemon:
    def __init__(self, *args: str, env: dict[str, str] | None = None, stderr=None) -> None:
        self.args = args
        self.env = dict(os.environ if env is None else env)
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO / "control"), os.environ.get("PYTHONPATH")) if p
        )
        self._stderr = stderr  # a file to write stderr to instead of reading it here
        self.lines: list[str] = []
        self.process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> Daemon:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "corridor", *self.args, env=self.env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=self._stderr if self._stderr is not None else asyncio.subprocess.PIPE,
        )  # fmt: skip
        if self._stderr is None:
            self._reader = asyncio.create_task(self._read())
        _STARTED.append(self)
        return self

    async def _read(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        async for line in self.process.stderr:
            self.lines.append(line.decode().rstrip("\n"))

    async def wait_for(self, pattern: str, within: float = 30.0, after: int = 0) -> str:
        """The first line from the `after`-th on that matches `pattern` (a regex)."""
        deadline = time.monotonic() + within
        regex = re.compile(pattern)
        while time.monotonic() < deadline:
            for line in self.lines[after:]:
                if regex.search(line):
                    return line
            if self.process is not None and self.process.returncode is not None:
                break
            await asyncio.sleep(0.05)
        text = "\n".join(self.lines)
        raise AssertionError(f"no line matching {pattern!r} in {within} s:\n{text}")

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    async def stop(self) -> int:
        """SIGTERM, then the exit status (kill -9 after 30 s, and the test fails)."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(30):
                code = await self.process.wait()
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            raise AssertionError("the daemon did not stop on SIGTERM within 30 s") from None
        if self._reader is not None:
            await self._reader
        return code


_STARTED: list[Daemon] = []


def kill_leftovers() -> None:
    """SIGKILL for the daemons a test started and did not stop (it failed part way), so that
    none outlives its test holding a socket or a port. The event loop's child watcher reaps
    them."""
    for daemon in _STARTED:
        process = daemon.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                os.kill(process.pid, signal.SIGKILL)
    _STARTED.clear()
