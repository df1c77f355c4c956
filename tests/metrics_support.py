"""Helpers of the metrics tests: promtool on a scrape, and a scrape read as series and
families."""

from __future__ import annotations

import shutil
import socket
import subprocess
import urllib.request


def promtool_check(text: str) -> None:
    """Fails with promtool's words unless it finds nothing to say about `text`."""
    promtool = shutil.which("promtool")
    assert promtool, (
        "promtool not found (Debian package prometheus, in the Makefile's APT_PACKAGES)"
    )
    done = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, ""), text


def samples(text: str) -> dict[str, float]:
    """Series (name and labels, as written) to value."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            out[series] = float(value)
    return out


def families(text: str) -> dict[str, str]:
    """Family name to type, from the # TYPE lines."""
    return {
        line.split()[2]: line.split()[3] for line in text.splitlines() if line.startswith("# TYPE ")
    }


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        return reply.read().decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
