"""`corridor controller` and `corridor up` as they refuse to start: every problem of the
configuration on its own line, naming the field; a store that cannot be opened or written, a
socket directory that cannot be made, a TLS key that does not match its certificate, FIB
sizes the engine would refuse: one line naming the field and the cause, exit status 2, no
traceback, and nothing on disk made or changed. `--check` finds the same without starting."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from controller_support import start_controller, toml
from pki_support import Pki

CONTROL = str(Path(__file__).resolve().parent.parent / "control")


def corridor(*args: str, wrap: str = "") -> tuple[int, str]:
    """Runs `python -m corridor ARGS` (inside the shell command `wrap`, if given, where
    {} stands for it); its exit status and stderr."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (CONTROL, env.get("PYTHONPATH")) if p)
    command = [sys.executable, "-m", "corridor", *args]
    if wrap:
        command = ["sh", "-c", wrap.replace("{}", shlex.join(command))]
    process = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    return process.returncode, process.stderr


def snapshot(root: Path) -> dict[str, tuple[int, int, int, bytes | None]]:
    """Every file and directory under `root`: mode, size, mtime and the bytes of files."""
    out = {}
    for p in sorted([root, *root.rglob("*")]):
        st = p.lstat()
        data = p.read_bytes() if p.is_file() and not p.is_symlink() else None
        out[str(p.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns, data)
    return out


def refused(root: Path, *args: str, wrap: str = "") -> list[str]:
    """Runs corridor ARGS; asserts exit status 2, no traceback, and nothing under `root`
    changed. Returns the lines of stderr."""
    before = snapshot(root)
    code, err = corridor(*args, wrap=wrap)
    assert code == 2, err
    assert "Traceback" not in err, err
    assert snapshot(root) == before, f"a refused start changed files: {err}"
    return err.splitlines()


def controller_file(tmp: Path, **tables: dict) -> dict:
    document = {
        "listen": {"unix": str(tmp / "run" / "controller.sock"), "tcp": "127.0.0.1:0"},
        "store": {"path": str(tmp / "lib" / "intent.db")},
        "reconcile": {"max_groups": 1024, "max_adjacencies": 1024},
    }
    document.update(tables)
    return document


def agent_table(tmp: Path) -> dict:
    return {
        "listen": {"unix": str(tmp / "run" / "agent.sock")},
        "fib": {"v4_routes": 1000, "v6_routes": 1000, "groups": 64, "adjacencies": 64},
    }


def write(tmp: Path, document: dict, name: str = "corridor.toml") -> Path:
    path = tmp / "etc" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(toml(document))
    return path


def test_every_problem_of_a_file_is_reported_each_on_its_own_line(tmp_path: Path) -> None:
    document = controller_file(tmp_path)
    document["listen"]["unx"] = "/run/x.sock"  # a typo
    document["store"]["path"] = ""
    document["reconcile"]["max_groups"] = 0
    document["reconcile"]["drift_check_seconds"] = "often"
    document["nodes"] = [
        {"name": "bad name!", "address": "ix1:50051"},
        {"name": "ix2", "address": "not an address"},
    ]
    config = write(tmp_path, document)
    expected = [
        "listen.unx: unknown key",
        "store.path: is empty",
        "reconcile.drift_check_seconds: is a string",
        "reconcile.max_groups: 0 is not between",
        "nodes[0].name: 'bad name!' is not a node name",
        "nodes[1].address: 'not an address' is not an agent address",
    ]
    for args in (("controller",), ("controller", "--check")):
        lines = refused(tmp_path, *args, "--config", str(config))
        assert len(lines) == len(expected), lines
        for line, words in zip(lines, expected, strict=True):
            assert line.startswith(f"corridor controller: {config}: {words}"), (line, words)

    # `corridor up` reports the controller's problems and its agent's alike.
    document["agent"] = agent_table(tmp_path)
    document["agent"]["workers"] = 0
    document["agent"]["fib"]["groups"] = 4294967295
    document["up"] = {"node": "no good"}
    config = write(tmp_path, document)
    for args in (("up",), ("up", "--check")):
        lines = refused(tmp_path, *args, "--config", str(config))
        assert len(lines) == len(expected) + 3, lines
        text = "\n".join(lines)
        for words in [*expected, "agent.workers: 0", "agent.fib.groups: 4294967295", "up.node"]:
            assert f"corridor up: {config}: {words}" in text, (words, text)


def test_fib_sizes_the_engine_refuses_fail_the_check(tmp_path: Path) -> None:
    agent = agent_table(tmp_path)
    agent["fib"]["groups"] = 4294967295
    agent_config = write(tmp_path, agent, "agent.toml")
    lines = refused(tmp_path, "agent", "--check", "--config", str(agent_config))
    assert len(lines) == 1 and lines[0].startswith(
        f"corridor agent: {agent_config}: fib.groups: 4294967295 is not between 1 and "
    ), lines

    document = controller_file(tmp_path, agent=agent)
    config = write(tmp_path, document)
    for args in (("up", "--check"), ("up",)):
        lines = refused(tmp_path, *args, "--config", str(config))
        assert len(lines) == 1 and lines[0].startswith(
            f"corridor up: {config}: agent.fib.groups: 4294967295 is not between 1 and "
        ), lines
    assert not (tmp_path / "lib").exists() and not (tmp_path / "run").exists()


def test_a_store_that_cannot_be_opened_is_refused(tmp_path: Path) -> None:
    document = controller_file(tmp_path)
    store = tmp_path / "lib" / "intent.db"
    store.mkdir(parents=True)  # a directory where the file should be
    config = write(tmp_path, document)
    for check in ((), ("--check",)):
        lines = refused(tmp_path, "controller", *check, "--config", str(config))
        assert lines == [f"corridor controller: store.path {store}: is a directory, not a file"]

    # Its directory cannot be made: a file stands in the way.
    (tmp_path / "blocker").write_text("")
    store = tmp_path / "blocker" / "lib" / "intent.db"
    document["store"]["path"] = str(store)
    config = write(tmp_path, document)
    for check in ((), ("--check",)):
        (line,) = refused(tmp_path, "controller", *check, "--config", str(config))
        assert line.startswith(f"corridor controller: store.path {store}: cannot make ")
        assert f"{tmp_path / 'blocker'} is not a directory" in line


def read_only(directory: Path) -> str:
    """A shell command that runs {} with `directory` mounted read-only, in a mount namespace
    of its own (the rest of the machine sees no change)."""
    d = shlex.quote(str(directory))
    mount = f"mount --bind {d} {d} && mount -o remount,bind,ro {d}"
    return f"exec unshare -m sh -c '{mount} && exec {{}}'"


async def test_a_read_only_store_is_refused(tmp_path: Path) -> None:
    document = controller_file(tmp_path)
    lib = tmp_path / "lib"
    lib.mkdir()
    config = write(tmp_path, document)
    wrap = read_only(lib)
    store = lib / "intent.db"
    for check in ((), ("--check",)):
        lines = refused(tmp_path, "controller", *check, "--config", str(config), wrap=wrap)
        assert lines == [
            f"corridor controller: store.path {store}: cannot create it: "
            f"{lib} is on a read-only filesystem"
        ], lines

    # A store made by a real controller, then its filesystem read-only.
    running = await start_controller(document, tmp_path)
    await running.stop()
    assert store.stat().st_size > 0
    for check in ((), ("--check",)):
        lines = refused(tmp_path, "controller", *check, "--config", str(config), wrap=wrap)
        assert lines == [
            f"corridor controller: store.path {store}: cannot write it: "
            f"{lib} is on a read-only filesystem"
        ], lines


def test_a_listen_unix_directory_that_cannot_be_made_is_refused(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("")
    sock = tmp_path / "blocker" / "run" / "controller.sock"
    document = controller_file(tmp_path)
    document["listen"]["unix"] = str(sock)
    config = write(tmp_path, document)
    for check in ((), ("--check",)):
        lines = refused(tmp_path, "controller", *check, "--config", str(config))
        assert lines == [
            f"corridor controller: listen.unix: cannot make {sock.parent}: "
            f"{tmp_path / 'blocker'} is not a directory"
        ], lines
    assert not (tmp_path / "lib").exists()  # the store was not created either


def test_a_tls_key_that_does_not_match_its_certificate_is_refused(tmp_path: Path, pki: Pki) -> None:
    tls = {
        "cert": str(pki.dir / "server.pem"),
        "key": str(pki.dir / "client.key"),  # another certificate's key
        "client_ca": str(pki.dir / "ca.pem"),
    }
    config = write(tmp_path, controller_file(tmp_path, tls=tls))
    for check in ((), ("--check",)):
        lines = refused(tmp_path, "controller", *check, "--config", str(config))
        assert lines == [
            f"corridor controller: tls.key: {pki.dir / 'client.key'} is not the key of "
            f"tls.cert {pki.dir / 'server.pem'}"
        ], lines
    assert not (tmp_path / "lib").exists() and not (tmp_path / "run").exists()

    # The local agent's of `corridor up` likewise, before anything starts.
    agent = agent_table(tmp_path)
    agent["listen"]["tcp"] = "127.0.0.1:0"
    agent["tls"] = tls
    config = write(tmp_path, controller_file(tmp_path, agent=agent))
    for check in ((), ("--check",)):
        lines = refused(tmp_path, "up", *check, "--config", str(config))
        assert lines == [
            f"corridor up: agent.tls.key: {pki.dir / 'client.key'} is not the key of "
            f"agent.tls.cert {pki.dir / 'server.pem'}"
        ], lines
    assert not (tmp_path / "lib").exists() and not (tmp_path / "run").exists()


def test_check_passes_a_good_file_and_changes_nothing(tmp_path: Path) -> None:
    config = write(tmp_path, controller_file(tmp_path, agent=agent_table(tmp_path)))
    before = snapshot(tmp_path)
    for command in ("controller", "up"):
        code, err = corridor(command, "--check", "--config", str(config))
        assert code == 0, err
        assert err.splitlines() == [
            f"corridor {command}: {config}: valid; store.path {tmp_path / 'lib' / 'intent.db'}"
            ": does not exist yet, a new store will be made"
        ], err
    assert snapshot(tmp_path) == before
