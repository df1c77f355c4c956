"""Fixtures shared by the test suite: where the repository and the routing tables are, a
throw-away certificate authority, and a real agent serving on loopback."""

from __future__ import annotations

import copy
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, settings

import daemon_support
from pki_support import Pki, make_ca, make_leaf

REPO = Path(__file__).resolve().parent.parent

# Property tests (tests/test_properties_*.py): in `make test` a fixed set of examples, the
# same on every run, so that a run on a busy machine neither flakes nor slows; `make fuzz`
# runs them with HYPOTHESIS_PROFILE=fuzz, many more examples, new ones each time.
settings.register_profile(
    "default",
    max_examples=100,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "fuzz",
    max_examples=int(os.environ.get("HYPOTHESIS_EXAMPLES", "20000")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(autouse=True)
def _no_daemon_outlives_its_test():
    """A test that fails before stopping the daemons it started (daemon_support) leaves
    none running into the next tests."""
    yield
    daemon_support.kill_leftovers()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real Internet tables: $CORRIDOR_DATA, or ../shared/data beside the repository."""
    path = Path(os.environ.get("CORRIDOR_DATA", REPO.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.fail(f"routing tables not found in {path}; set CORRIDOR_DATA")
    return path


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A certificate authority with a server and a client certificate, made with openssl."""
    d = tmp_path_factory.mktemp("pki")
    make_ca("ca", d)
    make_ca("other-ca", d)
    leaf = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
    make_leaf(
        "server",
        "ca",
        leaf + "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\n",
        d,
    )
    make_leaf("client", "ca", leaf + "extendedKeyUsage=clientAuth\n", d)
    make_leaf("stranger", "other-ca", leaf + "extendedKeyUsage=clientAuth\n", d)
    return Pki(d)


# A small node: two ports, the second with VLANs, and FIB tables sized for tests.
AGENT_CONFIG = {
    "workers": 2,
    "listen": {"unix": "agent.sock", "tcp": "127.0.0.1:0"},
    "fib": {"v4_routes": 2_000_000, "v6_routes": 200_000, "groups": 4096, "adjacencies": 4096},
    "ports": [
        {"name": "cor-test0", "queues": 2, "mtu": 1500, "addresses": ["198.18.0.1/24"]},
        {
            "name": "cor-test1",
            "queues": 1,
            "mtu": 9000,
            "addresses": ["198.19.0.1/24", "2001:db8::1/64"],
            "vlans": [{"id": 100, "addresses": ["198.18.100.1/24"]}, {"id": 200}],
        },
    ],
}


@pytest.fixture
def agent_config() -> dict:
    """The configuration of the `agent` fixture, as the TOML document would parse."""
    return copy.deepcopy(AGENT_CONFIG)


@dataclass
class RunningAgent:
    """An agent served in this process, with a channel to it over TCP."""

    server: object  # corridor.agent.server.AgentServer
    dataplane: object  # corridor.agent.domain.Dataplane
    metrics: object  # corridor.agent.metrics.AgentMetrics
    channel: grpc.aio.Channel
    stub: object  # corridor.v1.dataplane_pb2_grpc.DataplaneStub


@pytest.fixture
async def agent(agent_config: dict, tmp_path: Path) -> AsyncIterator[RunningAgent]:
    """A real agent (the engine's FIB, the gRPC server) on 127.0.0.1:0 and a unix socket."""
    from corridor.agent.config import parse
    from corridor.agent.domain import Dataplane
    from corridor.agent.fib_adapter import EngineFib
    from corridor.agent.metrics import AgentMetrics
    from corridor.agent.server import start_server
    from corridor.v1 import dataplane_pb2_grpc

    config = parse(agent_config, base=tmp_path)
    metrics = AgentMetrics()
    dataplane = Dataplane(
        config, EngineFib(config.fib, [p.name for p in config.ports]), observer=metrics
    )
    metrics.watch(dataplane)
    server = await start_server(dataplane, config.listen, config.tls)
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{server.port}", options=(("grpc.max_receive_message_length", 64 << 20),)
    )
    try:
        yield RunningAgent(
            server, dataplane, metrics, channel, dataplane_pb2_grpc.DataplaneStub(channel)
        )
    finally:
        await channel.close()
        await server.stop(0)


@pytest.fixture(params=["sqlite", "etcd"])
def store_backend(request: pytest.FixtureRequest, tmp_path: Path):
    """Each store backend in turn: a function that points a controller's document at it
    (SQLite: as it is; etcd: a real one-member cluster this fixture starts and stops)."""
    from etcd_support import EtcdCluster

    if request.param == "sqlite":
        yield lambda document: document
        return
    cluster = EtcdCluster(tmp_path / "etcd", 1).start()

    def to_etcd(document: dict) -> dict:
        document["store"] = {"backend": "etcd", "endpoints": cluster.endpoints}
        return document

    try:
        yield to_etcd
    finally:
        cluster.stop()
