"""The capabilities deploy/systemd gives the agent, tried on this kernel: `corridor agent`
with exactly CAP_NET_ADMIN, CAP_BPF, CAP_NET_RAW and CAP_IPC_LOCK (its bounding set cut to
them, as the unit does) attaches XDP, opens its AF_XDP sockets, resolves a gateway and
forwards; without any one of them it does not start, and says why. The agent runs inside the
lab's router namespace (`ip netns exec`), as a unit on a server runs in the host's. With
`realtime_priority` and neither CAP_SYS_NICE nor an RLIMIT_RTPRIO (the units set
LimitRTPRIO for it) the agent does not start either, and says why."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from corridor import lab as L
from corridor import traffic
from corridor.agent import client as c
from corridor.v1 import dataplane_pb2, dataplane_pb2_grpc
from test_deploy import ENGINE_CAPABILITIES, unit

pytestmark = [pytest.mark.lab, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
# The RLIMIT_MEMLOCK the agent gets without the unit's LimitMEMLOCK=infinity on an older
# system (64 KiB): CAP_IPC_LOCK is what then lets the UMEM be pinned.
SMALL_MEMLOCK = 64 * 1024


@pytest.fixture(scope="module")
def lab() -> Iterator[L.Lab]:
    if os.geteuid() != 0:
        pytest.fail("needs root: network namespaces, XDP, AF_XDP")
    lab = L.Lab(prefix=f"cor-o{os.getpid()}-")
    try:
        lab.up()
    except L.LabError as e:
        lab.down()
        pytest.fail(f"cannot build the lab: {e}")
    try:
        yield lab
    finally:
        lab.down()


def config(directory: Path, top: str = "") -> Path:
    path = directory / "agent.toml"
    path.write_text(
        f"""workers = 1
{top}
[listen]
unix = "{directory / "agent.sock"}"
[fib]
v4_routes = 1000
v6_routes = 1000
groups = 64
adjacencies = 64
[[ports]]
name = "{L.DUT_IN}"
addresses = ["{L.DUT_IN_V4}/24"]
[[ports]]
name = "{L.DUT_OUT}"
addresses = ["{L.DUT_OUT_V4}/24"]
"""
    )
    return path


def start(
    lab: L.Lab, directory: Path, capabilities: set[str], rtprio: int | None = None, top: str = ""
) -> subprocess.Popen[str]:
    """`corridor agent` in the router's namespace with only `capabilities` (root's uid, but
    every other capability out of its bounding set, as CapabilityBoundingSet= does) and, if
    given, an RLIMIT_RTPRIO of `rtprio`; `top` goes at the top of its configuration."""
    caps = ",".join(["-all", *(f"+{c.removeprefix('CAP_').lower()}" for c in capabilities)])
    env = dict(os.environ, PYTHONPATH=str(REPO / "control"))
    return subprocess.Popen(
        ["ip", "netns", "exec", lab.ns("dut"),
         "prlimit", f"--memlock={SMALL_MEMLOCK}",
         *([] if rtprio is None else [f"--rtprio={rtprio}"]),
         "setpriv", f"--bounding-set={caps}", "--inh-caps=-all", "--no-new-privs",
         sys.executable, "-m", "corridor", "agent", "--config", str(config(directory, top))],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


UNIT_RTPRIO = 99  # the units' LimitRTPRIO


def test_the_units_capabilities_are_these() -> None:
    for name in ("corridor-agent", "corridor-up"):
        assert set(unit(name)["CapabilityBoundingSet"][0].split()) == ENGINE_CAPABILITIES
        assert unit(name)["LimitRTPRIO"] == [str(UNIT_RTPRIO)]


def test_the_agent_forwards_with_the_units_capabilities(lab: L.Lab, tmp_path: Path) -> None:
    agent = start(lab, tmp_path, ENGINE_CAPABILITIES)
    sock = tmp_path / "agent.sock"
    try:
        deadline = time.monotonic() + 60
        while not sock.exists():
            assert agent.poll() is None, agent.communicate()[1]
            assert time.monotonic() < deadline, "the agent did not serve within 60 s"
            time.sleep(0.1)
        # `ip netns exec`, prlimit and setpriv each exec the next: the pid is the agent's.
        status = Path(f"/proc/{agent.pid}/status").read_text()
        effective = next(line for line in status.splitlines() if line.startswith("CapEff"))
        assert int(effective.split()[1], 16) == _mask(ENGINE_CAPABILITIES), effective
        with grpc.insecure_channel(f"unix:{sock}") as channel:
            stub = dataplane_pb2_grpc.DataplaneStub(channel)
            adjacency = dataplane_pb2.Adjacency(
                id=1, port=L.DUT_OUT, gateway=bytes(map(int, L.SINK_V4.split(".")))
            )
            operations = [
                dataplane_pb2.Operation(action=dataplane_pb2.ACTION_SET, adjacency=adjacency),
                c.set_group(1, [(1, 1)]),
                c.set_route("198.19.7.0/24", 1),
            ]
            stub.Write(c.write_request(9, operations), timeout=10)
            # The gateway resolves through the kernel's neighbour table (managed entries).
            deadline = time.monotonic() + 10
            while True:
                read = [a for r in stub.Read(dataplane_pb2.ReadRequest(), timeout=10)
                        for a in r.adjacencies]  # fmt: skip
                if read and read[0].state == dataplane_pb2.ADJACENCY_STATE_USABLE:
                    break
                assert time.monotonic() < deadline, read
                time.sleep(0.05)
        spec = traffic.FrameSpec(dst="198.19.7.1", src_mac=L.GEN_MAC, dst_mac=L.DUT_IN_MAC)
        sent = traffic.build_frames(spec, (60,), 1) * 16
        gen_mac = bytes.fromhex(L.GEN_MAC.replace(":", ""))

        def keep(f: bytes) -> bool:
            return traffic.frame_tag(f) is not None and f[6:12] != gen_mac

        with traffic.Capture(L.SINK_IF, lab.ns("sink"), duration=2.0, count=16, keep=keep) as cap:
            out = traffic.open_socket(L.GEN_IF, lab.ns("gen"))
            try:
                traffic.send(out, sent, duration=2.0)
            finally:
                out.close()
            got = cap.wait(3.0)
        assert len(got) == 16, f"{len(got)} of 16 frames forwarded"
    finally:
        agent.terminate()
        _, log = agent.communicate(timeout=30)
    assert agent.returncode == 0, log
    assert "engine on" in log, log


# What each one is for, as the refusal without it says.
WITHOUT = {
    "CAP_BPF": "loading the XDP steering program: map error: failed to create map",
    "CAP_NET_ADMIN": "failed to create map `xsks`",  # an XSKMAP is a networking map
    "CAP_NET_RAW": "socket(AF_XDP)",
    "CAP_IPC_LOCK": "XDP_UMEM_REG",  # the UMEM does not fit the 64 KiB RLIMIT_MEMLOCK
}


@pytest.mark.parametrize("missing", sorted(ENGINE_CAPABILITIES))
def test_without_any_one_of_them_the_agent_does_not_start(
    lab: L.Lab, tmp_path: Path, missing: str
) -> None:
    log = _refused(start(lab, tmp_path, ENGINE_CAPABILITIES - {missing}))
    assert WITHOUT[missing] in log.splitlines()[-1], log
    assert not (tmp_path / "agent.sock").exists()


def test_without_the_rtprio_limit_realtime_workers_do_not_start(lab: L.Lab, tmp_path: Path) -> None:
    # Raising RLIMIT_RTPRIO to the units' 99 needs CAP_SYS_RESOURCE, which root lacks on the
    # test machine (its hard limit is 0): only the refusal can be tried here.
    log = _refused(start(lab, tmp_path, ENGINE_CAPABILITIES, 0, "realtime_priority = 20"))
    assert "SCHED_FIFO at priority 20: Operation not permitted" in log.splitlines()[-1], log
    assert not lab.has_xdp(), "an XDP program stayed attached after the refused start"


def _refused(agent: subprocess.Popen[str]) -> str:
    """The log of an agent that must refuse to start: exit 1 (refused, not crashed), no
    traceback."""
    try:
        _, log = agent.communicate(timeout=60)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    assert agent.returncode == 1, log
    assert "Traceback" not in log, log
    return log


def _mask(capabilities: set[str]) -> int:
    numbers = {"CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_IPC_LOCK": 14, "CAP_BPF": 39}
    return sum(1 << numbers[c] for c in capabilities)
