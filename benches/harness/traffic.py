"""The generator and the sink (benches/gen, built into target/bench-tools) and the kernel's
drop counters that say where frames were lost between them."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import subprocess
import time
from collections.abc import Callable

from benches.harness import ROOT, TOOLS
from benches.harness.topology import Topology, topology
from corridor import lab as L

# The partial drop rate's loss tolerance, FD.io CSIT's PDR convention. NDR (no loss at all)
# is RFC 2544's throughput; on a shared VM a vCPU stalled by the host for a millisecond
# overflows a 256-frame veth ring at any rate, so NDR measures the host as much as the
# router, and PDR is given beside it.
PDR_LOSS = 0.005
# Seconds for the frames in flight to reach the sinks once the generator has stopped.
IN_FLIGHT = 0.3


def build_tools() -> None:
    r = subprocess.run(["make", "-s", "-C", str(ROOT / "benches" / "gen")],
                       capture_output=True, text=True)  # fmt: skip
    if r.returncode != 0:
        raise SystemExit(f"building the benchmark tools failed:\n{r.stderr}")


class Sink:
    """The counting XDP sink on the sink's port, read through the `sink` tool's stdin
    protocol (over the topology's command prefix: a namespace here, ssh to a VM)."""

    def __init__(self, where: L.Lab | Topology, role: str = "sink", dev: str | None = None):
        t = topology(where)
        argv = t.argv(role, [str(TOOLS / "sink"), "--dev", dev or t.sink_if,
                             "--max-seconds", "86400"])  # fmt: skip
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        line = self.proc.stdout.readline()
        if '"ready"' not in line:
            raise RuntimeError(f"sink did not start: {self.proc.stderr.read().strip()}")

    def read(self) -> dict:
        self.proc.stdin.write("read\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def percentile(hist: dict[int, int], q: float) -> float | None:
    """The q-quantile in microseconds from the sink's log-linear histogram (bucket middles)."""
    total = sum(hist.values())
    if not total:
        return None
    rank, seen = q * total, 0
    for b in sorted(hist):
        seen += hist[b]
        if seen >= rank:
            if b < 16:
                return (b * 64 + 32) / 1000
            m, sub = (b - 16) // 16 + 10, (b - 16) % 16
            width = 1 << (m - 4)
            return ((1 << m) + sub * width + width / 2) / 1000
    return None


@dataclasses.dataclass
class Generated:
    """One run of the generator."""

    report: dict  # the generator's own account: sent, active_seconds, forgiven
    started: float  # time.monotonic() around the run
    ended: float
    during: dict  # what `during` returned


def generate(t: Topology, *, src: str, dsts: str, size: int, rate: float, seconds: float,
             stdin: str | None = None,
             during: Callable[[float], dict] | None = None) -> Generated:  # fmt: skip
    """The generator on the topology's generator CPU and port, toward the router's input
    port: `size`-byte frames (wire bytes) from `src` to the addresses listed in the file
    `dsts` (`/dev/stdin` with `stdin`: the same on a remote host), at `rate` pps (0: as fast
    as it goes) for `seconds`. `during(seconds)` is called while it runs. Returns once the
    frames in flight have reached the sinks."""
    argv = t.argv("gen", [
        "taskset", "-c", str(t.gen_cpu), str(TOOLS / "gen"), "--dev", t.gen_if,
        "--src-mac", t.gen_mac, "--dst-mac", t.dut_in_mac, "--src", src, "--dsts", dsts,
        "--size", str(size), "--rate", str(int(rate)), "--duration", str(seconds),
    ])  # fmt: skip
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdin=None if stdin is None else subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        info = during(seconds) if during is not None else {}
        out, err = proc.communicate(input=stdin, timeout=seconds + 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    ended = time.monotonic()
    if proc.returncode != 0:
        raise RuntimeError(f"generator: {err.strip() or out.strip()}")
    report = json.loads(out)
    time.sleep(IN_FLIGHT)
    return Generated(report, started, ended, info)


def refused_by_router(t: Topology) -> int:
    """Frames the router's input port refused, cumulative: on veth, a frame the peer's full
    ring refuses counts as an XDP transmit error of the generator's port."""
    gen = t.exec("gen", ["ethtool", "-S", t.gen_if]).stdout
    return sum(int(line.split(":")[1]) for line in gen.splitlines() if "xdp_xmit_errors" in line)


def link_dropped(t: Topology, role: str, dev: str, way: str) -> int:
    """The kernel's drop counter of `dev` of `role` in direction `way` (rx or tx)."""
    link = json.loads(t.ip(role, "-s", "-j", "link", "show", dev).stdout)
    return link[0]["stats64"][way]["dropped"]
