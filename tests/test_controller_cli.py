"""`corridor route|node|nexthop|port|counters|stats` as people and scripts run them, against a real
controller and agent: tables by default, --json for scripts; exit 1 and one line per problem
when the controller refuses or cannot be reached, exit 2 when the arguments are wrong."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import grpc
import pytest

from controller_support import LocalAgent, controller_document, start_controller
from corridor.v1 import controller_pb2, controller_pb2_grpc, dataplane_pb2

CONTROL = str(Path(__file__).resolve().parent.parent / "control")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (CONTROL, env.get("PYTHONPATH")) if p)
    return env


async def run(*args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    """`corridor ARGS` in a process of its own, as a user runs it."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "corridor", *args, env=_env(),
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(120):
        out, err = await process.communicate(stdin)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def corridor(controller: str, *args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    return await run(*args, "--controller", controller, stdin=stdin)


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
        assert lines[0].split() == ["NODE", "PREFIX", "SOURCE", "ACTIVE", "KIND", "NEXT", "HOPS"]
        assert lines[1].split()[2:4] == ["static", "yes"]
        assert "198.18.0.2@cor-c0 198.19.0.2@cor-c1.100*3" in lines[1]
        code, out, _ = await corridor(ctl, "route", "list", "--source", "bgp", "--json")
        assert (code, json.loads(out)) == (0, [])
        code, _, err = await corridor(ctl, "route", "list", "--source", "ospf")
        assert code == 2 and "invalid choice: 'ospf'" in err
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
        # One controller on SQLite leads from its start.
        assert "leader: this controller leads (sqlite store) since " in out, out
        assert stats["leadership"]["leading"] and stats["leadership"]["backend"] == "sqlite"
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
            (("route", "del", "198.18.9.0/24"), 1, "no route 198.18.9.0/24 for every node"),
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


async def test_empty_tables_print_their_header(tmp_path: Path) -> None:
    """No node, no route: every listing prints its header (and --json an empty list)."""
    running = await start_controller(controller_document(tmp_path, {}), tmp_path)
    ctl = f"unix:{tmp_path / 'controller.sock'}"
    try:
        for args, header in (
            (("node", "list"), "NODE"),
            (("route", "list"), "NODE"),
            (("stats",), "revision"),
        ):
            code, out, err = await corridor(ctl, *args)
            assert (code, err) == (0, ""), (args, err)
            assert out.split()[0] == header, (args, out)
        code, out, err = await corridor(ctl, "route", "list", "--json")
        assert (code, err, json.loads(out)) == (0, "", [])
        code, out, err = await corridor(ctl, "node", "list", "--json")
        assert (code, err, json.loads(out)) == (0, "", [])
    finally:
        await running.stop(0)


def _prefixes(count: int) -> str:
    """`count` /24s in 198.18.0.0/15, in the shared/data format (an origin AS on some)."""
    return "".join(
        f"198.{18 + i // 256}.{i % 256}.0/24" + (" 64500" if i % 2 else "") + "\n"
        for i in range(count)
    )


async def test_load_list_every_page_and_a_closed_pipe(tmp_path: Path) -> None:
    """3,000 routes loaded in batches of 1,000; `route list` pages through them all (beyond
    the controller's page of 1,000), --limit stops and says so; `| head` ends quietly."""
    agent = await LocalAgent(tmp_path / "a.sock").start()
    running = await start_controller(controller_document(tmp_path, {"a": agent.address}), tmp_path)
    ctl = f"unix:{tmp_path / 'controller.sock'}"
    try:
        table = tmp_path / "table.txt"
        table.write_text("# a comment, then a blank line\n\n" + _prefixes(3000))
        code, out, err = await corridor(
            ctl, "route", "load", str(table), "--via", "198.18.0.2,cor-c0", "--batch", "1000"
        )
        assert (code, err) == (0, ""), err
        assert out.startswith("loaded 3000 routes in 3 batches at revision"), out
        code, out, err = await corridor(ctl, "route", "list", "--json")
        rows = json.loads(out)
        assert (code, err, len(rows)) == (0, "", 3000)
        assert rows[-1]["prefix"] == "198.29.183.0/24"
        assert rows[0]["next_hops"] == [
            {"gateway": "198.18.0.2", "port": "cor-c0", "vlan": 0, "weight": 1}
        ]
        code, out, err = await corridor(ctl, "route", "list", "--limit", "1500")
        assert code == 0 and len(out.splitlines()) == 1 + 1500
        assert "stopped at --limit 1500; more routes exist" in err and len(err.splitlines()) == 1
        code, out, err = await corridor(ctl, "route", "list", "--limit", "3000")
        assert (code, err, len(out.splitlines())) == (0, "", 3001)

        # The reader of the output goes away after one line: no traceback, the shell's 141.
        shell = (
            f"set -o pipefail; {sys.executable} -m corridor route list --controller {ctl} "
            "| head -n 1"
        )
        process = await asyncio.create_subprocess_exec(
            "bash", "-c", shell, env=_env(),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        async with asyncio.timeout(120):
            out_b, err_b = await process.communicate()
        assert out_b.decode().split() == [
            "NODE",
            "PREFIX",
            "SOURCE",
            "ACTIVE",
            "KIND",
            "NEXT",
            "HOPS",
        ]
        assert err_b == b"", err_b.decode()
        assert process.returncode == 141

        # JSON lines from stdin, the node given by --node; a blackhole as JSON.
        lines = "\n".join(
            json.dumps(r)
            for r in (
                {"prefix": "2001:db8:1::/48", "kind": "blackhole"},
                {"prefix": "2001:db8:2::/48", "next_hops": [
                    {"gateway": "198.19.0.2", "port": "cor-c1", "vlan": 100, "weight": 2}]},
            )
        )  # fmt: skip
        code, out, err = await corridor(
            ctl, "route", "load", "-", "--node", "a", "--json", stdin=lines.encode()
        )
        assert (code, err) == (0, "") and json.loads(out)["routes"] == 2
        code, out, _ = await corridor(ctl, "route", "list", "--node", "a", "--json")
        assert [(r["prefix"], r["kind"]) for r in json.loads(out)] == [
            ("2001:db8:1::/48", "blackhole"),
            ("2001:db8:2::/48", "forward"),
        ]
    finally:
        await running.stop(0)
        await agent.stop()


async def test_load_refuses_bad_lines_and_names_them(tmp_path: Path) -> None:
    """Bad lines: each named by its number, nothing applied. A batch the controller refuses:
    every refused route named by its line; the batches before it stay, the rest do not."""
    agent = await LocalAgent(tmp_path / "a.sock").start()
    running = await start_controller(controller_document(tmp_path, {"a": agent.address}), tmp_path)
    ctl = f"unix:{tmp_path / 'controller.sock'}"
    try:
        bad = tmp_path / "bad.txt"
        bad.write_text(
            "198.18.0.0/24\n198.18.1.1/24\n198.18.2.0/24 x\n{\"prefix\": \"198.18.3.0/24\"\n"
            + json.dumps({"prefix": "198.18.4.0/24", "kind": "forward", "next_hops": [
                {"gateway": "nope", "port": "cor-c0"}]}) + "\n"
            + json.dumps({"prefix": "198.18.5.0/24", "colour": "red"}) + "\n"
            + "\xff\n"
        )  # fmt: skip
        code, out, err = await corridor(ctl, "route", "load", str(bad), "--blackhole")
        assert code == 2 and out == "", err
        problems = err.splitlines()
        assert [p.split(":")[2] for p in problems[:-1]] == [str(n) for n in range(2, 8)], err
        assert "host bits set" in problems[0]
        assert "expected PREFIX [ORIGIN-AS]" in problems[1]
        assert "not JSON" in problems[2]
        assert "next_hops[0].gateway" in problems[3]
        assert "unknown keys ['colour']" in problems[4]
        assert problems[-1].endswith("6 bad lines; nothing applied")
        code, out, err = await corridor(ctl, "route", "load", str(tmp_path / "table.txt"))
        assert code == 2 and "No such file" in err
        code, out, err = await corridor(ctl, "route", "load", "-", stdin=b"198.18.0.0/24\n")
        assert code == 2 and "a prefix without a target" in err
        code, out, _ = await corridor(ctl, "route", "list", "--json")
        assert json.loads(out) == []  # nothing of it applied

        # Good syntax, refused by the controller in the second batch: two ports unknown.
        lines = [
            json.dumps({"prefix": f"198.18.{i}.0/24", "next_hops": [
                {"gateway": "198.18.0.2", "port": "eth9" if i in (3, 5) else "cor-c0"}]})
            for i in range(6)
        ]  # fmt: skip
        code, out, err = await corridor(
            ctl, "route", "load", "-", "--batch", "3", stdin="\n".join(lines).encode()
        )
        assert code == 1 and out == "", err
        problems = err.splitlines()
        assert problems[0].startswith("corridor route load: -:4: routes[0].next_hops[0]")
        assert problems[1].startswith("corridor route load: -:6: routes[2].next_hops[0]")
        assert "port 'eth9' is not a port of node a" in problems[1]
        assert "lines 4-6 refused, not applied; 3 routes (lines up to 3) were committed" in err
        code, out, _ = await corridor(ctl, "route", "list", "--json")
        assert [r["prefix"] for r in json.loads(out)] == [f"198.18.{i}.0/24" for i in range(3)]
    finally:
        await running.stop(0)
        await agent.stop()


async def test_global_options_version_completion_and_exit_codes(tmp_path: Path) -> None:
    agent = await LocalAgent(tmp_path / "a.sock").start()
    running = await start_controller(controller_document(tmp_path, {"a": agent.address}), tmp_path)
    ctl = f"unix:{tmp_path / 'controller.sock'}"
    try:
        from corridor import __version__

        assert await run("--version") == (0, f"corridor {__version__}\n", "")
        # Global options before the subcommand, and the same after it.
        code, out, err = await run("--controller", ctl, "--json", "route", "add",
                                   "198.18.0.0/15", "--blackhole")  # fmt: skip
        assert (code, err) == (0, "") and json.loads(out)["revision"] > 0
        code, out, err = await run("--json", "node", "list", "--controller", ctl)
        assert (code, err) == (0, "") and json.loads(out)[0]["name"] == "a"
        code, out, _ = await run("--controller", f"unix:{tmp_path / 'none.sock'}", "stats",
                                 "--controller", ctl)  # fmt: skip
        assert code == 0  # the later one wins

        for shell, words in (("bash", "complete"), ("zsh", "#compdef corridor")):
            code, out, err = await run("completion", shell)
            assert (code, err) == (0, "") and words in out and "nexthop" in out
        code, out, err = await run("completion", "fish")
        assert code == 2 and "invalid choice" in err

        # Exit 2: the command line is wrong, nothing was sent (usage from argparse included).
        for args, words in (
            (("route", "list", "--limit", "many"), "is not a count"),
            (("route", "list", "--limit", "-3"), "is not a count"),
            (("route", "add", "198.18.0.0/15"), "one of the arguments"),
            (("route", "frobnicate"), "invalid choice"),
            (("route", "add", "198.18.0.0/15", "--via", "198.18.0.2,cor-c0,x"), "--via"),
            (("route", "add", "10.0.0.0/8", "--via", "nope,cor-c0"), "does not appear"),
            (("route", "list", "--within", "198.18.0.0/99"), "not a prefix"),
            (("nexthop", "drain", "198.18.0.2"), "expected GATEWAY,PORT[,VLAN]"),
            (("nexthop", "drain", "198.18.0.2,cor-c0,vlan"), "invalid literal"),
            (("nexthop", "drain", "bad,cor-c0"), "does not appear"),
            (("route", "load", "-", "--batch", "0", "--blackhole"), "--batch 0: give 1 to"),
            (("node", "list", "--ca", str(tmp_path / "no.pem")), "TLS needs"),
            ((), "the following arguments are required"),
        ):
            code, out, err = await corridor(ctl, *args)
            assert code == 2 and out == "", (args, code, out, err)
            assert words in err, (args, err)
        # Exit 1: the controller refused, or could not be reached.
        for args, words in (
            (("nexthop", "drain", "198.18.0.2,cor-c0", "--node", "zz"), "not registered"),
            (("route", "add", "198.18.0.0/16", "--via", "198.18.0.2,cor-c0,5000"), "vlan"),
        ):
            code, out, err = await corridor(ctl, *args)
            assert code == 1 and out == "", (args, code, out, err)
            assert words in err and len(err.splitlines()) == 1, (args, err)
    finally:
        await running.stop(0)
        await agent.stop()


async def test_node_status_for_people_and_nexthop_drain(tmp_path: Path) -> None:
    agent = await LocalAgent(tmp_path / "a.sock").start()
    running = await start_controller(controller_document(tmp_path, {"a": agent.address}), tmp_path)
    ctl = f"unix:{tmp_path / 'controller.sock'}"
    try:
        code, _, _ = await corridor(
            ctl, "route", "add", "198.18.0.0/15",
            "--via", "198.18.0.2,cor-c0", "--via", "198.19.0.2,cor-c1,100",
        )  # fmt: skip
        assert code == 0

        async def in_sync() -> bool:
            _, out, _ = await corridor(ctl, "node", "status", "a", "--json")
            return bool(json.loads(out)["in_sync"] and json.loads(out)["installed"]["ipv4_routes"])

        for _ in range(100):
            if await in_sync():
                break
            await asyncio.sleep(0.1)
        code, out, err = await corridor(ctl, "node", "status", "a")
        assert (code, err) == (0, "")
        fields = {line.split("  ")[0].strip(): line.split("  ", 1)[1].strip()
                  for line in out.splitlines()}  # fmt: skip
        assert fields["node"] == "a" and fields["in sync"] == "yes", out
        assert fields["installed"] == "1 IPv4, 0 IPv6 routes; 1 groups; 2 adjacencies", out
        assert fields["last error"] == "-"
        assert "{" not in out and "'" not in out, out  # no Python dicts
        lag = fields["lag"]
        assert lag.endswith(" s") and len(lag.split()[0].split(".")[1]) == 3, lag

        code, out, err = await corridor(ctl, "nexthop", "drain", "198.19.0.2,cor-c1,100")
        assert (code, err) == (0, "") and out.startswith("drained 198.19.0.2,cor-c1,100 on every")
        assert out.rstrip().endswith("in 1 next-hop groups"), out
        code, out, err = await corridor(ctl, "nexthop", "restore", "198.19.0.2,cor-c1,100",
                                        "--json")  # fmt: skip
        reply = json.loads(out)
        assert (code, err, reply["drained"], reply["groups"]) == (0, "", False, 1)
    finally:
        await running.stop(0)
        await agent.stop()


async def test_route_lookup_port_list_and_counters_through_the_controller(tmp_path: Path) -> None:
    """The node's agent, asked through the controller: the longest match with its group and
    members, the ports, the counters; malformed addresses and unknown nodes refused."""
    agent = await LocalAgent(tmp_path / "a.sock").start()
    running = await start_controller(controller_document(tmp_path, {"a": agent.address}), tmp_path)
    ctl = f"unix:{tmp_path / 'controller.sock'}"
    try:
        for args in (
            ("198.18.0.0/15", "--via", "198.18.0.2,cor-c0", "--via", "198.19.0.2,cor-c1,100,3"),
            ("198.18.5.0/24", "--blackhole", "--node", "a"),
            ("2001:db8::/33", "--unreachable"),
        ):
            code, _, err = await corridor(ctl, "route", "add", *args)
            assert code == 0, err

        async def in_sync() -> bool:
            _, out, _ = await corridor(ctl, "node", "status", "a", "--json")
            status = json.loads(out)
            return bool(status["in_sync"] and status["installed"]["ipv6_routes"])

        for _ in range(100):
            if await in_sync():
                break
            await asyncio.sleep(0.1)

        # The longest match wins: the /24 inside the /15.
        code, out, err = await corridor(ctl, "route", "lookup", "198.18.5.9")
        assert (code, err, out) == (0, "", "198.18.5.9 on node a: 198.18.5.0/24 blackhole\n")
        code, out, err = await corridor(ctl, "route", "lookup", "198.18.200.1", "--node", "a")
        assert (code, err) == (0, ""), err
        lines = out.splitlines()
        assert lines[0].startswith("198.18.200.1 on node a: 198.18.0.0/15 forward to group "), out
        assert lines[0].endswith(" of 2 members usable"), out
        assert lines[1].split() == [
            "ADJACENCY",
            "GATEWAY",
            "PORT",
            "VLAN",
            "WEIGHT",
            "STATE",
            "MAC",
        ]
        rows = sorted(line.split()[1:5] for line in lines[2:])
        assert rows == [["198.18.0.2", "cor-c0", "-", "1"], ["198.19.0.2", "cor-c1", "100", "3"]]
        code, out, err = await corridor(ctl, "route", "lookup", "198.19.255.255", "--json")
        found = json.loads(out)
        assert (code, err, found["route"]["prefix"], found["route"]["kind"]) == (
            0, "", "198.18.0.0/15", "forward"
        )  # fmt: skip
        assert {m["gateway"]: m["weight"] for m in found["members"]} == {
            "198.18.0.2": 1, "198.19.0.2": 3
        }  # fmt: skip
        # No engine runs and no neighbour answers: no member is usable.
        assert {m["state"] for m in found["members"]} <= {"unresolved", "link-down"}, found
        code, out, err = await corridor(ctl, "route", "lookup", "2001:db8::1")
        assert (code, out) == (0, "2001:db8::1 on node a: 2001:db8::/33 unreachable\n"), err
        code, out, err = await corridor(ctl, "route", "lookup", "2001:db8:8000::1", "--json")
        assert (code, err, json.loads(out)["route"]) == (0, "", None)
        code, out, _ = await corridor(ctl, "route", "lookup", "2001:db8:8000::1")
        assert out == "2001:db8:8000::1 on node a: no route (dropped, counted as no_route)\n"

        code, out, err = await corridor(ctl, "port", "list")
        assert (code, err) == (0, ""), err
        rows = [line.split() for line in out.splitlines()]
        assert rows[0][:4] == ["PORT", "LINK", "MODE", "XDP"], out
        assert [r[0] for r in rows[1:]] == ["cor-c0", "cor-c1"], out
        assert rows[1][-1] == "198.18.0.1/24" and rows[2][-2:] == ["100", "198.19.0.1/24"], out
        code, out, err = await corridor(ctl, "port", "list", "--json")
        ports = json.loads(out)["ports"]
        assert [(p["name"], [v["vlan"] for v in p["vlans"]]) for p in ports] == [
            ("cor-c0", []), ("cor-c1", [100])
        ]  # fmt: skip

        code, out, err = await corridor(ctl, "counters")
        assert (code, err) == (0, ""), err
        assert out.splitlines()[0].split()[:2] == ["PORT", "VLAN"], out
        assert [line.split()[:2] for line in out.splitlines()[1:4]] == [
            ["cor-c0", "-"], ["cor-c1", "-"], ["cor-c1", "100"]
        ], out  # fmt: skip
        assert "next hops: 2 adjacencies, " in out and "DROP REASON" in out, out
        code, out, err = await corridor(ctl, "counters", "--port", "cor-c1", "--json")
        counters = json.loads(out)
        assert [(i["port"], i["vlan"]) for i in counters["interfaces"]] == [
            ("cor-c1", 0), ("cor-c1", 100)
        ]  # fmt: skip
        assert counters["next_hops"]["adjacencies"] == 2 and counters["workers"][0]["worker"] == 0

        # Malformed: exit 2 before anything is sent; refused by the controller: exit 1.
        for args, words in (
            (("route", "lookup", "198.18.0.0/24"), "does not appear to be an IPv4 or IPv6"),
            (("route", "lookup", "nope"), "does not appear"),
            (("route", "lookup"), "the following arguments are required: ADDRESS"),
            (("port", "frobnicate"), "invalid choice"),
        ):
            code, out, err = await corridor(ctl, *args)
            assert (code, out) == (2, ""), (args, err)
            assert words in err, (args, err)
        for args, words in (
            (("route", "lookup", "198.18.0.1", "--node", "zz"), "node 'zz' is not registered"),
            (("counters", "--port", "eth9"), "node a has no port 'eth9' (its ports: cor-c0, "),
            (("port", "list", "--node", "zz"), "node 'zz' is not registered"),
        ):
            code, out, err = await corridor(ctl, *args)
            assert (code, out) == (1, ""), (args, err)
            assert words in err and len(err.splitlines()) == 1, (args, err)
        async with grpc.aio.insecure_channel(ctl) as channel:
            stub = controller_pb2_grpc.ControllerStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await stub.LookupRoute(controller_pb2.LookupRouteRequest(node="a", address=b"\1\2"))
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "address: is 2 bytes" in e.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await agent.stub.Lookup(dataplane_pb2.LookupRequest(address=bytes(5)))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        # Two nodes: --node is needed; a node whose agent is down: its agent named, exit 1.
        code, _, err = await corridor(ctl, "node", "add", "b", f"unix:{tmp_path / 'b.sock'}")
        assert code == 0, err
        code, out, err = await corridor(ctl, "counters")
        assert (code, out) == (2, "") and "give --node: 2 nodes are registered (a, b)" in err
        code, out, err = await corridor(ctl, "counters", "--node", "b")
        assert (code, out) == (1, ""), err
        assert err.startswith(f"corridor counters: node b's agent at unix:{tmp_path}/b.sock: "), err
        assert "cannot reach the controller" not in err
    finally:
        await running.stop(0)
        await agent.stop()
