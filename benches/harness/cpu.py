"""CPU placement and what the CPUs do: threaded NAPI pinned to a CPU, the router CPU's busy
share and the time the hypervisor takes from it, and the machine's description.

On 2 cores the generator, the sinks' NAPI threads and the harness share GEN_CPU; the router
(its input port's NAPI thread and its workers) has ROUTER_CPU to itself. CORRIDOR_BENCH_RT=1
makes the router's NAPI thread SCHED_FIFO (see benches.forwarding for why it is not)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from benches.harness.topology import Topology, topology
from corridor import lab as L

GEN_CPU, ROUTER_CPU = 0, 1
RT = bool(int(os.environ.get("CORRIDOR_BENCH_RT", "0")))


# Switches threaded NAPI on for $1 and prints the kthreads that appeared (their names carry
# no namespace), after pinning them to CPU $2 and, if $3 is not 0, making them SCHED_FIFO
# at priority $3.
# A shell script, so that it runs the same in a namespace here and on a remote host.
PIN_NAPI = r"""
set -e
napi() { for d in /proc/[0-9]*; do c=$(cat $d/comm 2>/dev/null) || continue
         case $c in napi/*) echo ${d#/proc/};; esac; done | sort; }
echo 0 > /sys/class/net/$1/threaded
before=$(napi)
echo 1 > /sys/class/net/$1/threaded
sleep 0.05
for pid in $(napi); do
  case " $(echo $before) " in *" $pid "*) continue;; esac
  taskset -pc $2 $pid >/dev/null
  if [ "$3" != 0 ]; then chrt -f -p $3 $pid; fi
  echo "$(cat /proc/$pid/comm)"
done
"""


def pin_napi(where: L.Lab | Topology, role: str, dev: str, cpu: int,
             realtime: bool = False, priority: int = 50) -> list[str]:  # fmt: skip
    """Threaded NAPI on `dev`, its kthreads pinned to `cpu`.
    `realtime`: SCHED_FIFO at `priority`, so the thread runs the moment its ring has frames
    instead of waiting out the time slice of a busy neighbour on the CPU (the sink's, which
    shares CPU 0 with the generator: under CFS its 256-frame ring overflowed at 0.2 Mpps
    and the drops were charged to the router)."""
    if realtime and not 1 <= priority <= 99:
        raise ValueError(f"SCHED_FIFO priority {priority}: expected 1 to 99")
    r = topology(where).exec(role, ["sh", "-c", PIN_NAPI, "pin-napi", dev, str(cpu),
                                    str(priority) if realtime else "0"], check=False)  # fmt: skip
    if r.returncode != 0:
        return [f"{dev}: no threaded NAPI ({r.stderr.strip()})"]
    rt = f" (SCHED_FIFO {priority})" if realtime else ""
    return [f"{comm}->cpu{cpu}{rt}" for comm in r.stdout.split()]


STALL_PROBE = """
import json, sys, time
end = time.perf_counter_ns() + int(float(sys.argv[1]) * 1e9)
threshold, gaps, last = int(sys.argv[2]) * 1000, [], time.perf_counter_ns()
while last < end:
    now = time.perf_counter_ns()
    if now - last > threshold:
        gaps.append(now - last)
    last = now
print(json.dumps(gaps))
"""


def host_stalls(where: L.Lab | Topology, seconds: float = 5.0, threshold_us: int = 200) -> dict:
    """How long the router CPU goes missing while nothing else runs on it: a loop pinned
    there reads the clock and keeps every gap over `threshold_us` (the hypervisor running
    something else on this vCPU). A gap longer than the router's 256-frame veth ring takes
    to fill at the offered rate (0.64 ms at 0.4 Mpps) loses frames whatever the router, so
    this is the floor under NDR on this machine, measured in the same run."""
    t = topology(where)
    argv = t.argv("dut", ["taskset", "-c", str(t.router_cpu), sys.executable, "-c",
                          STALL_PROBE, str(seconds), str(threshold_us)])  # fmt: skip
    r = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
    if r.returncode != 0:
        return {"error": r.stderr.strip()}
    gaps = json.loads(r.stdout)
    return {
        "seconds": seconds,
        "over_0.2ms": len(gaps),
        "over_1ms": sum(g > 1_000_000 for g in gaps),
        # One precision for both: a total rounded coarser than its largest gap could come
        # out below it (311.9 against 311.93 with one stall; it failed a test in CI).
        "max_ms": round(max(gaps, default=0) / 1e6, 2),
        "missing_ms": round(sum(gaps) / 1e6, 2),
    }


def describe_stalls(st: dict) -> str:
    if "error" in st:
        return f"not measured ({st['error']})"
    return (f"{st['over_0.2ms']} gaps over 0.2 ms in {st['seconds']:g} s of a busy loop, "
            f"{st['over_1ms']} over 1 ms, longest {st['max_ms']} ms, "
            f"{st['missing_ms']} ms missing in all")  # fmt: skip


def cpu_times(cpu: int) -> tuple[int, int]:
    """(busy, total) jiffies of one CPU from /proc/stat."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            v = [int(x) for x in line.split()[1:]]
            idle = v[3] + v[4]
            return sum(v) - idle, sum(v)
    raise RuntimeError(f"cpu{cpu} not in /proc/stat")


def busy_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    """The busy share of a CPU between two cpu_times() readings."""
    return (after[0] - before[0]) / max(1, after[1] - before[1])


def steal_jiffies() -> int:
    """Jiffies the hypervisor has taken from this machine's CPUs, cumulative."""
    return sum(int(line.split()[8]) for line in Path("/proc/stat").read_text().splitlines()
               if line.startswith("cpu") and not line.startswith("cpu "))  # fmt: skip


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def machine() -> str:
    """This machine as the results name it: host, CPUs, CPU model, kernel."""
    return (f"{platform.node()}, {os.cpu_count()} CPUs, {cpu_model()}, "
            f"Linux {platform.release()}")  # fmt: skip
