"""`corridor agent` as a process on the dut's three ports, a client of its socket, and the
next hops both scenarios write to it."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc

from benches.change.sinkb import DUT_B, DUT_B_MAC, DUT_B_V4, DUT_B_V6, SINKB_MAC
from benches.harness.agent import ELECTION, agent_config, launch_agent, stop_agent
from benches.harness.cpu import ROUTER_CPU, RT, pin_napi
from benches.harness.results import log
from corridor import lab as L
from corridor.agent import client as c
from corridor.v1 import dataplane_pb2, dataplane_pb2_grpc

# Next hops: adjacency 1 toward sink A, 2 toward sink B. Churn: group 1 = A, group 2 = B.
# Failover: group 1 = both (route_requests writes its routes to group 1).
ADJ_A, ADJ_B = 1, 2
GROUP_A, GROUP_B = 1, 2

# The agent's tables: room for the failover's largest table (the Routeviews table and the
# test routes).
FIB = {"v4_routes": 1_100_000, "v6_routes": 10_000, "groups": 1024, "adjacencies": 1024}


class Agent:
    """`corridor agent` as a process on the dut's three ports, and a client of its socket."""

    def __init__(self, lab: L.Lab, workdir: Path, control_cpu: int) -> None:
        self.lab, self.workdir, self.control_cpu = lab, workdir, control_cpu
        self.sock = workdir / "agent.sock"
        self.log_path = workdir / "agent.log"
        self.process: subprocess.Popen | None = None
        self.channel: grpc.Channel | None = None
        self.placement: list[str] = []
        self.napi: list[str] = []

    def start(self) -> Agent:
        config = self.workdir / "agent.toml"
        ports = {L.DUT_IN: [f"{L.DUT_IN_V4}/24", f"{L.DUT_IN_V6}/64"],
                 L.DUT_OUT: [f"{L.DUT_OUT_V4}/24", f"{L.DUT_OUT_V6}/64"],
                 DUT_B: [f"{DUT_B_V4}/24", f"{DUT_B_V6}/64"]}  # fmt: skip
        config.write_text(agent_config(self.lab.ns("dut"), self.sock, FIB, ports))
        with self.log_path.open("w") as err:
            # A session of its own: Ctrl-C reaches this process, which stops the agent itself.
            self.process = launch_agent(config, err, new_session=True)
        self.channel = grpc.insecure_channel(f"unix:{self.sock}")
        self.stub = dataplane_pb2_grpc.DataplaneStub(self.channel)
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the agent exited ({self.process.returncode}): {self.tail()}")
            with contextlib.suppress(grpc.RpcError):
                self.stub.ListPorts(dataplane_pb2.ListPortsRequest(), timeout=1)
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the agent did not serve within 60 s: {self.tail()}")
            time.sleep(0.1)
        self.napi = pin_napi(self.lab, "dut", L.DUT_IN, ROUTER_CPU, realtime=RT)
        self.place()
        return self

    def place(self) -> None:
        """The engine's threads (worker, supervisor) on the router CPU, the rest of the agent
        on the control CPU. Called again before each trial: the executor grows lazily."""
        engine = 0
        for task in Path(f"/proc/{self.process.pid}/task").iterdir():
            with contextlib.suppress(OSError):
                comm = (task / "comm").read_text().strip()
                is_engine = comm.startswith(("corridor-w", "corridor-superv"))
                engine += is_engine
                cpus = {ROUTER_CPU} if is_engine else {self.control_cpu}
                os.sched_setaffinity(int(task.name), cpus)
        self.placement = [f"engine threads ({engine})->cpu{ROUTER_CPU}",
                          f"agent's other threads->cpu{self.control_cpu}", *self.napi]  # fmt: skip

    def write(self, operations: list[dataplane_pb2.Operation], batch: int = 10_000) -> int:
        """Writes `operations` in Write calls of at most `batch`; returns those applied."""
        applied = 0
        for start in range(0, len(operations), batch):
            request = c.write_request(ELECTION, operations[start : start + batch])
            applied += self.stub.Write(request, timeout=60).operations
        return applied

    def stream(self, requests: list[dataplane_pb2.WriteRequest]) -> int:
        """StreamWrite of prepared batches; returns the operations acknowledged."""
        return sum(r.operations for r in self.stub.StreamWrite(iter(requests), timeout=900))

    def counters(self) -> dataplane_pb2.Counters:
        return self.stub.GetCounters(dataplane_pb2.GetCountersRequest(), timeout=5)

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text()[-2000:].strip()
        return ""

    def stop(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.process is not None:
            stop_agent(self.process)  # SIGTERM, then SIGKILL after 30 s
            code, self.process = self.process.returncode, None
            if code != 0:
                log(f"  the agent exited with {code}: {self.tail()}")


@contextlib.contextmanager
def running_agent(lab: L.Lab, control_cpu: int) -> Iterator[Agent]:
    with tempfile.TemporaryDirectory(prefix="cor-change-") as d:
        agent = Agent(lab, Path(d), control_cpu)
        try:
            yield agent.start()
        finally:
            agent.stop()


def next_hops(failover: bool) -> list[dataplane_pb2.Operation]:
    ops = [c.set_adjacency(ADJ_A, L.DUT_OUT, 0, L.DUT_OUT_MAC, L.SINK_MAC),
           c.set_adjacency(ADJ_B, DUT_B, 0, DUT_B_MAC, SINKB_MAC)]  # fmt: skip
    if failover:
        return [*ops, c.set_group(GROUP_A, [(ADJ_A, 1), (ADJ_B, 1)])]
    return [*ops, c.set_group(GROUP_A, [(ADJ_A, 1)]), c.set_group(GROUP_B, [(ADJ_B, 1)])]
