"""Where the router's cycles go: a perf profile of the router CPU while frames arrive flat
out."""

from __future__ import annotations

import subprocess
from pathlib import Path

from benches.forwarding.search import Traffic


def profile(traffic: Traffic, router: str, out: Path, seconds: float = 5.0) -> str:
    """A perf profile of the router CPU while IPv4 64-byte frames arrive flat out: where
    the router's cycles go (copy into the UMEM, syscalls, lookups, the kernel's stack).
    Software clock sampling: this VM exposes no hardware counters to perf, so cache misses
    are not counted here. Returns the report's path."""
    cpu = traffic.topo.router_cpu
    data = out.with_name(f"{out.name}-profile-{router}.data")
    report = out.with_name(f"{out.name}-profile-{router}.txt")
    argv = ["perf", "record", "-q", "-e", "cpu-clock", "-C", str(cpu), "-g",
            "-o", str(data), "--", "sleep", str(seconds)]  # fmt: skip
    rec = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    t = traffic.trial(4, 64, 0, seconds + 1)
    _, err = rec.communicate(timeout=seconds + 30)
    if rec.returncode != 0:
        return f"perf record failed: {err.strip()}"
    rep = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--no-children",
                          "--sort", "dso,sym", "--percent-limit", "0.5", "-g", "none"],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    head = (f"# {router}: perf record -e cpu-clock -C {cpu} (router CPU) for {seconds} s "
            f"while IPv4 64 B frames arrived at {t.sent_pps / 1e6:.3f} Mpps and "
            f"{t.fwd_pps / 1e6:.3f} Mpps reached the sink\n")  # fmt: skip
    report.write_text(head + rep.stdout)
    data.unlink(missing_ok=True)
    return str(report)
