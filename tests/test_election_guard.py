"""Who may take the election: with mutual TLS, only the certificate identities the agent's
[election] writers names may present an election id (anyone else is PERMISSION_DENIED and
their id never counts); an operator resets a highest id that locks writers out, over the
agent's Unix socket (`corridor agent --reset-election`) or as an [election] admin over TLS."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from controller_support import toml
from corridor.agent import client as c
from corridor.agent.config import TlsFiles, parse
from corridor.agent.domain import Dataplane
from corridor.agent.fib_adapter import EngineFib
from corridor.agent.server import start_server
from corridor.common.status import election_id_from_pb
from corridor.v1 import dataplane_pb2, dataplane_pb2_grpc

TOP = (1 << 128) - 1
CONTROL = str(Path(__file__).resolve().parent.parent / "control")


def make_client_cert(pki, name: str, sans: str = "") -> None:
    """A client certificate CN=`name`, signed by the pki's CA, into the pki's directory."""
    d = pki.dir
    if (d / f"{name}.pem").exists():
        return

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/O=Corridor/CN={name}",
    )  # fmt: skip
    ext = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
    ext += "extendedKeyUsage=clientAuth\n"
    if sans:
        ext += f"subjectAltName={sans}\n"
    (d / f"{name}.ext").write_text(ext)
    openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
    )  # fmt: skip


@dataclass
class TlsAgent:
    port: int
    sock: Path
    dataplane: Dataplane
    pki: object

    def channel(self, who: str) -> grpc.aio.Channel:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.pki.pem("ca.pem"),
            private_key=self.pki.pem(f"{who}.key"),
            certificate_chain=self.pki.pem(f"{who}.pem"),
        )
        return grpc.aio.secure_channel(f"127.0.0.1:{self.port}", credentials)


async def start_tls_agent(pki, agent_config, tmp_path, election=None):
    for name, sans in [("controller", "DNS:controller.corridor.example"), ("intruder", ""),
                       ("operator", "")]:  # fmt: skip
        make_client_cert(pki, name, sans)
    document = agent_config | {
        "listen": {"unix": str(tmp_path / "agent.sock"), "tcp": "127.0.0.1:0"}
    }
    if election is not None:
        document["election"] = election
    config = parse(document, base=tmp_path)
    tls = TlsFiles(pki.dir / "server.pem", pki.dir / "server.key", pki.dir / "ca.pem")
    dataplane = Dataplane(config, EngineFib(config.fib))
    server = await start_server(dataplane, config.listen, tls)
    return server, TlsAgent(server.port, tmp_path / "agent.sock", dataplane, pki)


@pytest.fixture
async def guarded(pki, agent_config: dict, tmp_path: Path) -> AsyncIterator[TlsAgent]:
    server, agent = await start_tls_agent(
        pki, agent_config, tmp_path,
        {"writers": ["controller.corridor.example"], "admins": ["operator"]},
    )  # fmt: skip
    try:
        yield agent
    finally:
        await server.stop(0)


async def write(channel: grpc.aio.Channel, election: int) -> dataplane_pb2.WriteResponse:
    stub = dataplane_pb2_grpc.DataplaneStub(channel)
    return await stub.Write(
        c.write_request(election, [c.set_route("198.18.0.0/15", "blackhole")]), timeout=30
    )


async def reset(channel: grpc.aio.Channel) -> dataplane_pb2.ResetElectionResponse:
    stub = dataplane_pb2_grpc.DataplaneStub(channel)
    return await stub.ResetElection(dataplane_pb2.ResetElectionRequest(), timeout=30)


async def test_an_identity_not_among_the_writers_cannot_take_the_election(guarded) -> None:
    async with guarded.channel("intruder") as intruder, guarded.channel("controller") as ctl:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await write(intruder, TOP)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "intruder" in e.value.details() and "election.writers" in e.value.details()
        [v] = c.write_error(e.value).violations
        assert v.field == "election_id"
        # The refused id never counted: the allowed writer takes the election with a small id.
        assert guarded.dataplane.election.highest == 0
        reply = await write(ctl, 5)
        assert reply.operations == 1
        # A StreamWrite is held to the same rule.
        stub = dataplane_pb2_grpc.DataplaneStub(intruder)
        call = stub.StreamWrite(iter([c.write_request(TOP, [])]), timeout=30)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            async for _ in call:
                pass
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert guarded.dataplane.election.highest == 5


async def test_the_unix_socket_is_local_and_may_write(guarded) -> None:
    async with grpc.aio.insecure_channel(f"unix:{guarded.sock}") as local:
        assert (await write(local, 7)).operations == 1


async def test_an_admin_resets_a_lock_out_and_nobody_else_may(guarded) -> None:
    async with (
        guarded.channel("controller") as ctl,
        guarded.channel("intruder") as intruder,
        guarded.channel("operator") as operator,
        grpc.aio.insecure_channel(f"unix:{guarded.sock}") as local,
    ):
        await write(ctl, TOP)  # an allowed writer's runaway id locks out its own successor
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await write(ctl, 1 << 64)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        for who in (intruder, ctl):
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await reset(who)
            assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "election.admins" in e.value.details()
        reply = await reset(operator)
        assert election_id_from_pb(reply.previous) == TOP
        assert (await write(ctl, 1 << 64)).operations == 1
        reply = await reset(local)  # the Unix socket always may
        assert election_id_from_pb(reply.previous) == 1 << 64
        assert (await write(ctl, 3)).operations == 1


async def test_without_a_writers_list_any_client_of_the_ca_may_write(
    pki, agent_config: dict, tmp_path: Path
) -> None:
    server, agent = await start_tls_agent(pki, agent_config, tmp_path)
    try:
        async with agent.channel("intruder") as intruder:
            assert (await write(intruder, 9)).operations == 1
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await reset(intruder)  # no admins: only the Unix socket resets
            assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        await server.stop(0)


def test_the_election_table_is_checked(agent_config: dict, tmp_path: Path) -> None:
    from corridor.common.config import ConfigError

    for election, message in [
        ({"writers": "controller"}, "election.writers"),
        ({"writers": [""]}, "election.writers[0]"),
        ({"typo": []}, "election.typo"),
    ]:
        with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
            parse(agent_config | {"election": election}, base=tmp_path)


async def test_reset_election_from_the_command_line(tmp_path: Path) -> None:
    """The operator's path: the agent's own config file names its Unix socket."""
    sock = tmp_path / "agent.sock"
    config = tmp_path / "agent.toml"
    config.write_text(toml({"listen": {"unix": str(sock)},
                            "fib": {"v4_routes": 1000, "v6_routes": 1000}}))  # fmt: skip
    env = dict(os.environ, PYTHONPATH=CONTROL)
    agent = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "corridor", "agent", "--config", str(config), env=env,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with grpc.aio.insecure_channel(f"unix:{sock}") as local:
            async with asyncio.timeout(60):
                while True:
                    try:
                        await write(local, TOP)
                        break
                    except grpc.aio.AioRpcError:
                        await asyncio.sleep(0.1)
            with pytest.raises(grpc.aio.AioRpcError):
                await write(local, 2)
            done = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "corridor", "agent", "--config", str(config),
                "--reset-election", env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, err = await asyncio.wait_for(done.communicate(), 60)
            assert done.returncode == 0, err.decode()
            assert f"{TOP >> 64}:{TOP & ((1 << 64) - 1)}" in (out + err).decode()
            assert (await write(local, 2)).operations == 1
    finally:
        agent.terminate()
        await asyncio.wait_for(agent.wait(), 30)
