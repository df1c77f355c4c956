"""What Corridor's XDP steering program costs per frame, against the program the minimal
C AF_XDP forwarder runs (libxdp's default: redirect every frame to the queue's socket) in
the same run. Each router is started in the lab's dut as the forwarding benchmark starts
it; the program attached to its input port is then run in the kernel with
BPF_PROG_TEST_RUN on fixed frames, `--repeat` times per call, and the kernel's own
average per run is read. Frames: transit IPv4 and IPv6 (both programs redirect them) and,
for Corridor, a frame to one of the router's own addresses (passed to the kernel).

    .venv/bin/python -m benches.steering [--repeat N] [--calls K] [--rounds R] [--out PATH]

As root. BPF_PROG_TEST_RUN sends nothing: the frames exist only inside the kernel call,
in the namespaces `cor-b<pid>-*` this run creates and removes. The data stays in the CPU
cache, so these are instruction costs, not the cache miss of a frame's first touch (the
profile of the forwarding benchmark shows that one). Output: OUT.md and OUT.json
(default benches/results/steering-latest).

BPF_PROG_TEST_RUN by hand through ctypes: it is one syscall with a fixed attribute layout,
no Python package on PyPI or Debian wraps it, and `bpftool prog run` would add a package
and a process per call to what is being timed.
"""

from __future__ import annotations

import argparse
import ctypes
import ipaddress
import json
import os
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

from benches.forwarding.routers import make_router
from benches.harness import RESULTS, ROOT, results
from benches.harness.cpu import GEN_CPU
from benches.harness.tables import test_routes
from benches.harness.topology import Topology, bench_topology
from benches.harness.traffic import build_tools
from corridor import lab as L

SYS_BPF = 321  # x86_64
BPF_PROG_TEST_RUN = 10
BPF_PROG_GET_FD_BY_ID = 13
XDP_ACTIONS = {0: "XDP_ABORTED", 1: "XDP_DROP", 2: "XDP_PASS", 3: "XDP_TX", 4: "XDP_REDIRECT"}
GEN_MAC = bytes.fromhex(L.GEN_MAC.replace(":", ""))


def frames(dut_mac: bytes) -> dict[str, bytes]:
    """64-byte transit frames (IPv6: 78) from the generator to the dut's input port, and
    one to the router's own IPv4 address."""

    def v4(dst: str) -> bytes:
        ip = bytes([0x45, 0, 0, 46, 0, 0, 0, 0, 64, 17, 0, 0])
        ip += ipaddress.IPv4Address(L.GEN_V4).packed + ipaddress.IPv4Address(dst).packed
        return dut_mac + GEN_MAC + b"\x08\x00" + ip + bytes(26)

    def v6(dst: str) -> bytes:
        ip = bytes([0x60, 0, 0, 0, 0, 20, 17, 64])
        ip += ipaddress.IPv6Address(L.GEN_V6).packed + ipaddress.IPv6Address(dst).packed
        return dut_mac + GEN_MAC + b"\x86\xdd" + ip + bytes(20)

    return {
        "IPv4 transit": v4("198.19.7.9"),
        "IPv6 transit": v6("2001:db8:8000::7"),
        "IPv4 to the router": v4(L.DUT_IN_V4),
    }


def _bpf(cmd: int, attr: bytes) -> tuple[int, bytes]:
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(attr, 128)
    rc = libc.syscall(SYS_BPF, cmd, buf, 128)
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bpf({cmd}): {os.strerror(err)}")
    return rc, buf.raw


def test_run(prog_id: int, ifindex: int, frame: bytes, repeat: int) -> tuple[int, int]:
    """(XDP action, ns per run) of program `prog_id` on `frame` arriving on `ifindex`
    queue 0, averaged by the kernel over `repeat` runs. Must run in the port's netns."""
    fd, _ = _bpf(BPF_PROG_GET_FD_BY_ID, struct.pack("III", prog_id, 0, 0))
    try:
        data = ctypes.create_string_buffer(frame, len(frame))
        # struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index.
        md = struct.pack("IIIIII", 0, len(frame), 0, ifindex, 0, 0)
        ctx = ctypes.create_string_buffer(md, len(md))
        attr = struct.pack("IIIIQQIIIIQQIII", fd, 0, len(frame), 0, ctypes.addressof(data), 0,
                           repeat, 0, 24, 0, ctypes.addressof(ctx), 0, 0, 0, 0)  # fmt: skip
        _, out = _bpf(BPF_PROG_TEST_RUN, attr)
        return struct.unpack_from("I", out, 4)[0], struct.unpack_from("I", out, 36)[0]
    finally:
        os.close(fd)


def measure(topo: Topology, repeat: int, calls: int, names: list[str]) -> dict[str, dict]:
    """Runs this module's --test-run inside the dut (pinned to the router CPU) for the
    program attached to the input port; per frame: the action and ns of every call."""
    link = json.loads(topo.ip("dut", "-j", "-d", "link", "show", topo.dut_in).stdout)[0]
    xdp = link.get("xdp") or {}
    attached = [a["prog"] for a in xdp.get("attached", []) if "prog" in a]
    prog = xdp.get("prog") or next(iter(attached), None)
    if prog is None:
        raise RuntimeError(f"no XDP program attached to {topo.dut_in}: {xdp}")
    argv = topo.argv("dut", ["taskset", "-c", str(topo.router_cpu), sys.executable, "-m",
                             "benches.steering", "--test-run",
                             f"{prog['id']},{link['ifindex']},{link['address']}",
                             "--repeat", str(repeat), "--calls", str(calls),
                             "--frames", ",".join(names)])  # fmt: skip
    r = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=ROOT)
    if r.returncode != 0:
        raise RuntimeError(f"test run failed: {r.stderr.strip()}")
    return json.loads(r.stdout) | {"program": prog.get("name", "?")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benches.steering", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--repeat", type=int, default=1_000_000, help="runs per kernel call")
    ap.add_argument(
        "--calls",
        type=int,
        default=9,
        help="kernel calls per frame after one to warm up (median, min, max)",
    )
    ap.add_argument("--rounds", type=int, default=3, help="turns each router takes")
    ap.add_argument("--out", default=str(RESULTS / "steering-latest"))
    ap.add_argument("--test-run", help=argparse.SUPPRESS)  # PROG_ID,IFINDEX,MAC (inside)
    ap.add_argument("--frames", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if not 1_000 <= args.repeat <= 100_000_000:
        raise SystemExit(f"--repeat {args.repeat}: expected 1000 to 100000000")
    if not 1 <= args.calls <= 100:
        raise SystemExit(f"--calls {args.calls}: expected 1 to 100")
    if not 1 <= args.rounds <= 20:
        raise SystemExit(f"--rounds {args.rounds}: expected 1 to 20")
    if args.test_run:
        prog_id, ifindex, mac = args.test_run.split(",")
        all_frames = frames(bytes.fromhex(mac.replace(":", "")))
        out = {}
        for name in args.frames.split(","):
            test_run(int(prog_id), int(ifindex), all_frames[name], args.repeat)  # warm-up
            runs = [test_run(int(prog_id), int(ifindex), all_frames[name], args.repeat)
                    for _ in range(args.calls)]  # fmt: skip
            out[name] = {"action": XDP_ACTIONS.get(runs[0][0], str(runs[0][0])),
                         "ns": [ns for _, ns in runs]}  # fmt: skip
        print(json.dumps(out))
        return 0
    if os.geteuid() != 0:
        raise SystemExit("the benchmark builds network namespaces: run it as root")
    os.sched_setaffinity(0, {GEN_CPU})
    build_tools()
    r4, _, r6, _ = test_routes()
    table = {"v4": r4, "v6": r6}
    transit = ["IPv4 transit", "IPv6 transit"]
    measured: dict[str, dict] = {}
    with bench_topology({}, "") as topo:
        plan = (("afxdp_ref", transit), ("corridor-1", [*transit, "IPv4 to the router"]))
        # The two take turns, so that a drift of the machine's speed (it is shared)
        # lands on both rather than on whichever ran second.
        for _ in range(args.rounds):
            for name, names in plan:
                router = make_router(name, topo, table)
                try:
                    router.start()
                    got = measure(topo, args.repeat, args.calls, names)
                finally:
                    router.stop()
                mine = measured.setdefault(name, {"program": got["program"]})
                for frame in names:
                    entry = mine.setdefault(frame, {"action": got[frame]["action"], "ns": []})
                    if got[frame]["action"] != entry["action"]:
                        raise RuntimeError(f"{name}: {frame} got {got[frame]['action']}, "
                                           f"then {entry['action']}")  # fmt: skip
                    entry["ns"] += got[frame]["ns"]

    def ns(r: dict) -> str:
        return f"{statistics.median(r['ns']):.0f} ({min(r['ns'])}-{max(r['ns'])}, {r['action']})"

    rows = []
    for frame in transit:
        ours, base = measured["corridor-1"][frame], measured["afxdp_ref"][frame]
        ratio = statistics.median(ours["ns"]) / statistics.median(base["ns"])
        rows.append(f"| {frame} | {ns(ours)} | {ns(base)} | {ratio:.2f}x |")
    own = measured["corridor-1"]["IPv4 to the router"]
    lines = [
        f"Steering program per frame, {time.strftime('%Y-%m-%d %H:%M')}: BPF_PROG_TEST_RUN, "
        f"median of {args.rounds} turns x {args.calls} calls (after one to warm up) of "
        f"{args.repeat:,} runs each, on the router CPU; "
        f"Corridor's `{measured['corridor-1']['program']}` against libxdp's "
        f"`{measured['afxdp_ref']['program']}` (the C forwarder's), same run.",
        "",
        "| frame | Corridor: ns (min-max, action) | C forwarder's program: ns (min-max, action) "
        "| ratio |",
        "|---|---|---|---|",
        *rows,
        f"| IPv4 to the router | {ns(own)} | - | - |",
    ]
    md = "\n".join(lines) + "\n"
    results.write(Path(args.out), md, measured)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
