"""`corridor route|node|stats` as people and scripts run them, against a real controller and
agent: tables by default, --json for scripts, exit 1 and one line of reason on error."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from controller_support import LocalAgent, controller_document, start_controller

CONTROL = str(Path(__file__).resolve().parent.parent / "control")


async def corridor(controller: str, *args: str) -> tuple[int, str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (CONTROL, env.get("PYTHONPATH")) if p)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "corridor", *args, "--controller", controller, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    return process.returncode, out.decode(), err.decode()


async def test_cli_against_a_real_controller(tmp_path: Path) -> None:
    agent = await LocalAgent(tmp_path / "a.sock").start()
    running = await start_controller(controller_document(tmp_path, {"a": agent.address}), tmp_path)
    ctl = f"unix:{tmp_path / 'controller.sock'}"
    try:
        code, out, err = await corridor(
            ctl, "route", "add", "198.18.0.0/15", "--via", "198.18.0.2,cor-c0",
            "--via", "198.19.0.2,cor-c1,100,3",
        )  # fmt: skip
        assert (code, err) == (0, "") and out.startswith("committed at revision")
        code, out, _ = await corridor(ctl, "route", "add", "2001:db8::/32", "--blackhole", "--json")
        assert code == 0 and json.loads(out)["revision"] > 0
        code, out, _ = await corridor(ctl, "route", "list")
        lines = out.splitlines()
        assert lines[0].split() == ["NODE", "PREFIX", "KIND", "NEXT", "HOPS"]
        assert "198.18.0.2@cor-c0 198.19.0.2@cor-c1.100*3" in lines[1]
        code, out, _ = await corridor(ctl, "route", "list", "--json")
        assert [r["prefix"] for r in json.loads(out)] == ["198.18.0.0/15", "2001:db8::/32"]

        async def synced():
            _, out, _ = await corridor(ctl, "node", "status", "a", "--json")
            return json.loads(out)["in_sync"] and json.loads(out)["installed"]["ipv6_routes"]

        for _ in range(100):
            if await synced():
                break
            await asyncio.sleep(0.1)
        assert set(await agent.routes()) == {"198.18.0.0/15", "2001:db8::/32"}
        code, out, _ = await corridor(ctl, "node", "list")
        assert code == 0 and out.splitlines()[1].split()[:3] == ["a", agent.address, "in_sync"]
        code, out, _ = await corridor(ctl, "stats", "--json")
        stats = json.loads(out)
        assert stats["intent"]["ipv4_routes"] == 1 and stats["nodes"][0]["name"] == "a"
        code, out, _ = await corridor(ctl, "stats")
        assert code == 0 and out.startswith(f"revision {stats['revision']}: 1 IPv4 and 1 IPv6")
        code, out, _ = await corridor(ctl, "route", "del", "2001:db8::/32")
        assert code == 0

        # Errors: exit non-zero, one line naming what was wrong.
        errors = [
            (("route", "add", "198.18.0.1/15", "--blackhole"), 2, "not a prefix"),
            (("route", "add", "198.18.0.0/16", "--via", "198.18.0.2,eth9"), 1,
             "routes[0].next_hops[0]: port 'eth9' is not a port of node a"),
            (("route", "add", "198.18.0.0/16", "--via", "198.18.0.2"), 2, "GATEWAY,PORT"),
            (("route", "add", "198.18.0.0/16", "--blackhole", "--node", "zz"), 1,
             "routes[0].node: node 'zz' is not registered"),
            (("route", "del", "198.18.9.0/24"), 2, "no route 198.18.9.0/24 for every node"),
            (("node", "status", "zz"), 1, "node 'zz' is not registered"),
        ]  # fmt: skip
        for args, expected_code, words in errors:
            code, out, err = await corridor(ctl, *args)
            assert code == expected_code and out == "", (args, code, out, err)
            assert len(err.splitlines()) == 1 and words in err, (args, err)
        code, _, err = await corridor(f"unix:{tmp_path / 'none.sock'}", "node", "list")
        assert code == 1 and "cannot reach the controller" in err and len(err.splitlines()) == 1
    finally:
        await running.stop(0)
        await agent.stop()


async def test_node_list_shows_a_failing_node_its_retries_and_error_since(tmp_path: Path) -> None:
    """An unreachable node: the table says how often the controller retried and since when
    the error stands, so an operator can tell a flapping node from a dead one."""
    absent = f"unix:{tmp_path / 'absent.sock'}"
    running = await start_controller(controller_document(tmp_path, {"gone": absent}), tmp_path)
    ctl = f"unix:{tmp_path / 'controller.sock'}"
    try:
        node: dict[str, object] = {}
        for _ in range(100):
            _, out, _ = await corridor(ctl, "node", "status", "gone", "--json")
            node = json.loads(out)
            if isinstance(node["retries"], int) and node["retries"] >= 2:
                break
            await asyncio.sleep(0.2)
        assert node["retries"] >= 2 and node["last_error"], node
        assert str(node["last_error_time"]).endswith("Z"), node
        code, out, _ = await corridor(ctl, "node", "list")
        header, row = out.splitlines()[:2]
        assert code == 0 and "RETRIES" in header.split()
        assert row.split()[0] == "gone" and f"(since {node['last_error_time']})" in row, row
    finally:
        await running.stop(0)
