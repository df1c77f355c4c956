"""The churn scenario: forwarding at 90 % of the base rate, undisturbed and then while
more-specific prefixes inside the looked-up /24s cycle through via B, via A, deleted."""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import random
import statistics
import threading
import time
from pathlib import Path

import grpc

from benches.change.agent import GROUP_A, GROUP_B, next_hops, running_agent
from benches.change.search import Mode, Traffic, base_rate, trial_json
from benches.harness.agent import ELECTION
from benches.harness.results import log
from benches.harness.tables import ROUTES4_IN
from benches.harness.topology import Topology
from benches.harness.traffic import Sink
from corridor import lab as L
from corridor.agent import client as c
from corridor.v1 import dataplane_pb2_grpc


@dataclasses.dataclass
class ChurnTable:
    stable: list[str]  # via group A, never touched
    churned: list[str]  # more-specifics inside the stable /24s
    dsts: list[str]  # in the stable /24s, covered by no churned prefix


def churn_table(seed: int = 9, n24: int = 192, per24: int = 16, dsts_per24: int = 3) -> ChurnTable:
    """The stable prefixes (198.19.0.0/16, 16 each of /17-/23, `n24` /24s) and, in every
    stable /24, `dsts_per24` destinations and `per24` prefixes /25-/32 that avoid them."""
    rnd = random.Random(seed)
    base = ROUTES4_IN
    stable = {base}
    for length in range(17, 24):
        for _ in range(16):
            stable.add(ipaddress.ip_network((int(base.network_address) | rnd.getrandbits(16),
                                             length), strict=False))  # fmt: skip
    slash24 = rnd.sample(list(base.subnets(new_prefix=24)), n24)
    stable.update(slash24)
    churned: list[ipaddress.IPv4Network] = []
    dsts: list[str] = []
    for net in slash24:
        first = int(net.network_address)
        hosts = [ipaddress.ip_address(first + h) for h in rnd.sample(range(1, 255), dsts_per24)]
        dsts += map(str, hosts)
        mine: set[ipaddress.IPv4Network] = set()
        for _ in range(per24 * 50):  # bounded: the /24 has room for far more
            if len(mine) == per24:
                break
            length = rnd.randrange(25, 33)
            p = ipaddress.ip_network((first | rnd.getrandbits(8), length), strict=False)
            if not any(h in p for h in hosts):
                mine.add(p)
        churned += sorted(mine)
    for d in dsts:
        assert ipaddress.ip_address(d) in ROUTES4_IN
    return ChurnTable(sorted(map(str, stable)), list(map(str, churned)), dsts)


def churn_states(prefixes: list[str]) -> list[int]:
    """Start states (0 absent, 1 via sink B, 2 via sink A), one per /24: all of a /24's
    prefixes move together, so its trie node is made when they come and collapsed when
    they go, under the stable lookups through it; the /24s are staggered, so that every
    batch sets, re-points and deletes."""
    return [(int(ipaddress.ip_network(p).network_address) >> 8) % 3 for p in prefixes]


def churn_requests(prefixes: list[str], batches: int, batch: int) -> list:
    """`batches` WriteRequests of `batch` operations, each moving the next prefixes (in a
    round) one state on: absent -> via B -> via A -> absent."""
    ops = [(c.delete_route(p), c.set_route(p, GROUP_B), c.set_route(p, GROUP_A))
           for p in prefixes]  # fmt: skip
    state = churn_states(prefixes)
    out, i = [], 0
    for _ in range(batches):
        request = c.write_request(ELECTION, [])
        for _ in range(batch):
            k = i % len(prefixes)
            state[k] = (state[k] + 1) % 3
            request.operations.append(ops[k][state[k]])
            i += 1
        out.append(request)
    return out


class ChurnWriter(threading.Thread):
    """Writes prepared batches over Write, one every `interval` seconds from the start (late
    batches go at once, none is skipped), until stopped or out of batches. Pinned to `cpu`."""

    def __init__(self, sock: Path, requests: list, interval: float, cpu: int) -> None:
        super().__init__(name="churn-writer", daemon=True)
        self.sock, self.requests, self.interval, self.cpu = sock, requests, interval, cpu
        self._halt = threading.Event()
        self.acks: list[tuple[float, int]] = []  # (time.monotonic() of the ack, operations)
        self.latencies: list[float] = []
        self.late = 0.0  # the most a batch went out behind its schedule
        self.error: str | None = None
        self.exhausted = False
        self.started_at = self.stopped_at = 0.0

    def run(self) -> None:
        os.sched_setaffinity(0, {self.cpu})
        with grpc.insecure_channel(f"unix:{self.sock}") as channel:
            stub = dataplane_pb2_grpc.DataplaneStub(channel)
            self.started_at = t0 = time.monotonic()
            try:
                for k, request in enumerate(self.requests):
                    wait = t0 + k * self.interval - time.monotonic()
                    if self._halt.wait(max(0.0, wait)):
                        break
                    request.batch_id = k + 1
                    sent = time.monotonic()
                    self.late = max(self.late, -wait)
                    reply = stub.Write(request, timeout=10)
                    now = time.monotonic()
                    self.latencies.append(now - sent)
                    self.acks.append((now, reply.operations))
                else:
                    self.exhausted = True
            except grpc.RpcError as e:
                self.error = f"{e.code().name}: {e.details()}"
            self.stopped_at = time.monotonic()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=30)

    def rate(self, start: float, end: float) -> float:
        """Operations acknowledged per second between `start` and `end` (monotonic)."""
        return sum(n for t, n in self.acks if start <= t <= end) / max(1e-9, end - start)


def run_churn(lab: L.Lab, topo: Topology, sinks: tuple[Sink, Sink], tmp: Path, mode: Mode,
              args) -> dict:  # fmt: skip
    table = churn_table()
    if args.churn_batch > len(table.churned):
        raise SystemExit(f"--churn-batch {args.churn_batch}: at most {len(table.churned)} (the "
                         "churned prefixes), so that no batch holds a prefix twice")  # fmt: skip
    log(f"churn: {len(table.stable)} stable prefixes, {len(table.churned)} churned "
        f"(/25-/32 in {len({p.rsplit('.', 1)[0] for p in table.churned})} of the stable /24s),"
        f" {len(table.dsts)} destinations")  # fmt: skip
    dsts = tmp / "churn-dsts.txt"
    dsts.write_text("\n".join(table.dsts) + "\n")
    batches = math.ceil((mode.seconds + 10) * args.churn_rate / args.churn_batch)
    requests = churn_requests(table.churned, batches, args.churn_batch)
    with running_agent(lab, args.control_cpu) as agent:
        traffic = Traffic(topo, sinks, dsts, agent)
        agent.write(next_hops(failover=False))
        agent.write([c.set_route(p, GROUP_A) for p in table.stable])
        start = churn_states(table.churned)
        agent.write([c.set_route(p, GROUP_B if s == 1 else GROUP_A)
                     for p, s in zip(table.churned, start, strict=True) if s])  # fmt: skip
        agent.place()
        log("  zero-loss search (undisturbed)")
        zl, zl_measured, criterion = base_rate(traffic, mode, b_is_wrong=True)
        rate = 0.9 * zl
        log(f"  {criterion}: {zl / 1e6:.3f} Mpps asked ({zl_measured / 1e6:.3f} measured by the "
            f"generator); both trials at 90 %: {rate / 1e6:.3f} Mpps")  # fmt: skip
        agent.place()
        calm = traffic.trial(rate, mode.seconds)
        log(f"  undisturbed: {calm.fwd_pps / 1e6:.3f} Mpps forwarded, lost {calm.lost}, "
            f"at sink B {calm.at_b}, router CPU {calm.cpu:.0%}")  # fmt: skip
        agent.place()
        writer = ChurnWriter(agent.sock, requests, args.churn_batch / args.churn_rate,
                             args.control_cpu)  # fmt: skip
        writer.start()
        try:
            time.sleep(0.2)  # the writer is in its stride when the traffic starts
            churn = traffic.trial(rate, mode.seconds)
        finally:
            writer.stop()
        if writer.error:
            raise RuntimeError(f"the churn writer was refused: {writer.error}")
        achieved = writer.rate(churn.started, churn.ended)
        acked = sum(n for _, n in writer.acks)
        lat = sorted(writer.latencies) or [0.0]
        log(f"  under churn: {churn.fwd_pps / 1e6:.3f} Mpps forwarded, lost {churn.lost}, "
            f"at sink B {churn.at_b}, router CPU {churn.cpu:.0%}; {achieved:,.0f} updates/s "
            f"({len(writer.acks)} batches, {acked} operations acknowledged)")  # fmt: skip
        placement = agent.placement
    return {
        "stable_routes": len(table.stable),
        "churned_prefixes": len(table.churned),
        "destinations": len(table.dsts),
        "zero_loss_pps": zl,
        "zero_loss_measured_pps": zl_measured,
        "criterion": criterion,
        "offered_pps": rate,
        "undisturbed": trial_json(calm),
        "churn": trial_json(churn),
        "ratio": churn.fwd_pps / calm.fwd_pps if calm.fwd_pps else None,
        "updates_asked_per_s": args.churn_rate,
        "updates_per_s": achieved,
        "writer": {
            "cpu": args.control_cpu,
            "batch": args.churn_batch,
            "batches_acked": len(writer.acks),
            "operations_acked": acked,
            "run_seconds": writer.stopped_at - writer.started_at,
            "ack_p50_ms": statistics.median(lat) * 1000,
            "ack_p99_ms": lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1000,
            "ack_max_ms": lat[-1] * 1000,
            "most_late_ms": writer.late * 1000,
            "ran_out_of_batches": writer.exhausted,
        },
        "placement": placement,
    }
