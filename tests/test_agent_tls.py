"""Mutual TLS on the agent's TCP listener: a client with a certificate from the configured
CA is served; one without a certificate, or with one from another CA, is refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from corridor.agent import client as c
from corridor.agent.config import parse
from corridor.agent.domain import Dataplane
from corridor.agent.fib_adapter import EngineFib
from corridor.agent.server import StartError, start_server
from corridor.common.config import Listen, TlsFiles
from corridor.v1 import dataplane_pb2, dataplane_pb2_grpc


@pytest.fixture
async def tls_agent(pki, agent_config: dict, tmp_path: Path) -> AsyncIterator[int]:
    config = parse(agent_config | {"listen": {"tcp": "127.0.0.1:0"}}, base=tmp_path)
    tls = TlsFiles(pki.dir / "server.pem", pki.dir / "server.key", pki.dir / "ca.pem")
    server = await start_server(Dataplane(config, EngineFib(config.fib)), config.listen, tls)
    try:
        yield server.port
    finally:
        await server.stop(0)


async def call(port: int, credentials: grpc.ChannelCredentials) -> dataplane_pb2.ListPortsResponse:
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
        stub = dataplane_pb2_grpc.DataplaneStub(channel)
        return await stub.ListPorts(dataplane_pb2.ListPortsRequest(), timeout=10)


async def test_a_client_of_the_ca_is_served(tls_agent: int, pki) -> None:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.pem("ca.pem"),
        private_key=pki.pem("client.key"),
        certificate_chain=pki.pem("client.pem"),
    )
    reply = await call(tls_agent, credentials)
    assert [p.name for p in reply.ports] == ["cor-test0", "cor-test1"]


@pytest.mark.parametrize("who", ["no certificate", "another CA", "plaintext"])
async def test_other_clients_are_refused(tls_agent: int, pki, who: str) -> None:
    if who == "plaintext":
        async with grpc.aio.insecure_channel(f"127.0.0.1:{tls_agent}") as channel:
            stub = dataplane_pb2_grpc.DataplaneStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await stub.Write(c.write_request(1, []), timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        return
    keys = {}
    if who == "another CA":
        keys = {
            "private_key": pki.pem("stranger.key"),
            "certificate_chain": pki.pem("stranger.pem"),
        }
    credentials = grpc.ssl_channel_credentials(root_certificates=pki.pem("ca.pem"), **keys)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call(tls_agent, credentials)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_unreadable_tls_files_stop_the_start(pki, agent_config: dict, tmp_path: Path) -> None:
    config = parse(agent_config, base=tmp_path)
    for tls, message in [
        (TlsFiles(tmp_path / "absent.pem", pki.dir / "server.key", pki.dir / "ca.pem"),
         "tls.cert: cannot read"),
        (TlsFiles(pki.dir / "server.pem", pki.dir / "server.ext", pki.dir / "ca.pem"),
         "tls.key: "),
    ]:  # fmt: skip
        with pytest.raises(StartError, match=message):
            await start_server(
                Dataplane(config, EngineFib(config.fib)),
                Listen(tcp=config.listen.tcp),
                tls,
            )
