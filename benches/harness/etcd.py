"""A real etcd cluster for the tests and benchmarks (tests/etcd_support.py): Debian's
etcd-server, 1 or 3 members on loopback ports in a directory of the caller's, started and
stopped by it (members can be killed and started again). Nothing listens beyond 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ETCD = "etcd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data: Path
    log: Path
    process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"


@dataclass
class EtcdCluster:
    """`size` members in `root`; `tls` (a Pki) serves clients with mutual TLS."""

    root: Path
    size: int = 1
    tls: object | None = None
    members: list[Member] = field(default_factory=list)

    def __post_init__(self) -> None:
        if shutil.which(ETCD) is None:
            raise AssertionError("etcd is not installed: apt-get install etcd-server (Makefile)")
        self.root.mkdir(parents=True, exist_ok=True)
        for i in range(self.size):
            self.members.append(
                Member(
                    f"m{i}", free_port(), free_port(), self.root / f"m{i}", self.root / f"m{i}.log"
                )
            )

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def _scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    def _command(self, m: Member, state: str) -> list[str]:
        initial = ",".join(f"{x.name}=http://127.0.0.1:{x.peer_port}" for x in self.members)
        url = f"{self._scheme()}://127.0.0.1:{m.client_port}"
        command = [
            ETCD, "--name", m.name, "--data-dir", str(m.data),
            "--listen-client-urls", url, "--advertise-client-urls", url,
            "--listen-peer-urls", f"http://127.0.0.1:{m.peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{m.peer_port}",
            "--initial-cluster", initial, "--initial-cluster-state", state,
            "--initial-cluster-token", f"cor-test-{os.getpid()}",
            "--heartbeat-interval", "100", "--election-timeout", "1000",
            "--log-level", "warn", "--logger", "zap",
        ]  # fmt: skip
        if self.tls is not None:
            d = self.tls.dir
            command += [
                "--client-cert-auth", "--trusted-ca-file", str(d / "ca.pem"),
                "--cert-file", str(d / "server.pem"), "--key-file", str(d / "server.key"),
            ]  # fmt: skip
        return command

    def _spawn(self, m: Member, state: str) -> None:
        log = m.log.open("ab")
        m.process = subprocess.Popen(
            self._command(m, state), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

    def start(self, within: float = 60.0) -> EtcdCluster:
        """Starts every member; ports another process took between their choice and
        etcd's bind are chosen again (a few times)."""
        for attempt in range(5):
            for m in self.members:
                self._spawn(m, "new")
            try:
                self.wait_healthy(self.members, within)
                return self
            except AssertionError as e:
                if "address already in use" not in str(e) or attempt == 4:
                    self.stop()
                    raise
            self.stop()
            for m in self.members:
                shutil.rmtree(m.data, ignore_errors=True)
                m.client_port, m.peer_port = free_port(), free_port()
        raise AssertionError("unreachable")

    def healthy(self, m: Member) -> bool:
        if self.tls is not None:
            return self._healthy_tls(m)
        try:
            with urllib.request.urlopen(f"http://{m.endpoint}/health", timeout=2) as r:
                return b'"health":"true"' in r.read()
        except OSError:
            return False

    def _healthy_tls(self, m: Member) -> bool:
        import ssl

        d = self.tls.dir
        context = ssl.create_default_context(cafile=str(d / "ca.pem"))
        context.load_cert_chain(str(d / "client.pem"), str(d / "client.key"))
        try:
            with urllib.request.urlopen(
                f"https://{m.endpoint}/health", timeout=2, context=context
            ) as r:
                return b'"health":"true"' in r.read()
        except OSError:
            return False

    def wait_healthy(self, members: list[Member], within: float = 60.0) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for m in members:
                if m.process is not None and m.process.poll() is not None:
                    raise AssertionError(f"etcd {m.name} exited: {m.log.read_text()[-2000:]}")
            if all(self.healthy(m) for m in members):
                return
            time.sleep(0.1)
        raise AssertionError(
            f"etcd not healthy in {within} s: "
            + " | ".join(m.log.read_text()[-1000:] for m in members if m.log.exists())
        )

    def kill(self, i: int) -> None:
        """SIGKILL member i (its data stays: `restart` brings it back)."""
        m = self.members[i]
        if m.process is not None and m.process.poll() is None:
            m.process.send_signal(signal.SIGKILL)
            m.process.wait(timeout=30)

    def restart(self, i: int) -> None:
        m = self.members[i]
        self._spawn(m, "existing")

    def stop(self) -> None:
        for m in self.members:
            if m.process is not None and m.process.poll() is None:
                m.process.send_signal(signal.SIGTERM)
        for m in self.members:
            if m.process is not None:
                try:
                    m.process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    m.process.kill()
                    m.process.wait(timeout=20)
