"""A benchmark's results: OUT.md (what a reader sees, also printed) and OUT.json (every
number behind it)."""

from __future__ import annotations

import json
from pathlib import Path


def write(out: Path, md: str, data: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(md)
    out.with_suffix(".json").write_text(json.dumps(data, indent=1))


def log(msg: str) -> None:
    """A line of progress, at once (the output may be a pipe)."""
    print(msg, flush=True)
