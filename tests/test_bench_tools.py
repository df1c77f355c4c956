"""The forwarding benchmark's own instruments: the generator and the sink (benches/gen), the
reference routers xdp_fwd and afxdp_ref, and the pure helpers of benches.forwarding.
Bad input is refused before a frame goes out; at a low rate every generated frame crosses
the kernel, xdp_fwd and afxdp_ref into the sink; the report's arithmetic holds on numbers
known in advance."""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import os
import re
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import scapy.layers.inet
import scapy.layers.inet6
from benches.forwarding import cli, report, routers, search
from benches.harness import tables, topology
from benches.harness.cpu import describe_stalls, host_stalls, pin_napi
from benches.harness.traffic import percentile
from scapy.layers.l2 import Ether

from corridor import lab as L
from corridor import traffic

REPO = Path(__file__).resolve().parent.parent
GEN_DIR = REPO / "benches" / "gen"
TOOLS = REPO / "target" / "bench-tools"

IP, UDP = scapy.layers.inet.IP, scapy.layers.inet.UDP
IPv6 = scapy.layers.inet6.IPv6

TEST4 = ipaddress.ip_network("198.18.0.0/15")
TEST6 = ipaddress.ip_network("2001:db8::/32")
# Where the benchmark's routes and destinations live: behind the sink, away from lab links.
ROUTES4 = ipaddress.ip_network("198.19.0.0/16")
ROUTES6 = ipaddress.ip_network("2001:db8:8000::/33")

# Low enough that nothing on the path may lose a frame, even on a busy 2-CPU machine.
RATE, SECONDS = 5000, 1.0
# (family, wire size): each family's smallest frame and the largest.
CASES = ((4, 64), (4, 1518), (6, 78), (6, 1518))
BENCH_MAGIC = 0xC0441D07  # bench.h
ARTEFACTS = ("gen", "sink", "gen.bpf.o", "sink.bpf.o", "xdp_fwd.bpf.o", "afxdp_ref")


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("the benchmark tools load XDP programs into namespaces: run as root")


# -- building --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tools() -> Path:
    """target/bench-tools, freshly made; fails (never skips) naming a missing package."""
    _require_root()
    needs = (
        (shutil.which("make"), "make"),
        (shutil.which("cc"), "gcc"),
        (shutil.which("clang"), "clang"),
        (Path("/usr/include/bpf/libbpf.h").exists(), "libbpf-dev"),
        (Path("/usr/include/xdp/xsk.h").exists(), "libxdp-dev"),
    )
    if missing := [package for found, package in needs if not found]:
        pytest.fail(f"building benches/gen needs the Debian packages {', '.join(missing)}")
    r = subprocess.run(["make", "-s", "-C", str(GEN_DIR)], capture_output=True, text=True,
                       timeout=300)  # fmt: skip
    if r.returncode != 0:
        pytest.fail(f"make -C benches/gen failed (clang, libbpf-dev, libxdp-dev?):\n{r.stderr}")
    return TOOLS


@pytest.mark.lab
def test_make_builds_every_tool(tools: Path) -> None:
    sources = {
        "gen": [GEN_DIR / "gen.c", GEN_DIR / "bench.h"],
        "sink": [GEN_DIR / "sink.c", GEN_DIR / "bench.h"],
        "gen.bpf.o": [GEN_DIR / "gen.bpf.c", GEN_DIR / "bench.h"],
        "sink.bpf.o": [GEN_DIR / "sink.bpf.c", GEN_DIR / "bench.h"],
        "xdp_fwd.bpf.o": [REPO / "benches" / "xdp_fwd" / "xdp_fwd.bpf.c"],
        "afxdp_ref": [REPO / "benches" / "afxdp_ref" / "afxdp_ref.c"],
    }
    assert set(sources) == set(ARTEFACTS)
    for name, srcs in sources.items():
        path = tools / name
        assert path.is_file(), f"make did not produce {path}"
        head = path.read_bytes()[:20]
        assert head[:4] == b"\x7fELF", f"{name} is not an ELF file"
        machine = int.from_bytes(head[18:20], "little")
        # EM_BPF (247) for the XDP programs, the host's machine for the executables.
        if name.endswith(".bpf.o"):
            assert machine == 247, f"{name}: e_machine {machine}, expected EM_BPF (247)"
        else:
            assert machine != 247 and os.access(path, os.X_OK), f"{name} is not executable"
        for src in srcs:
            assert path.stat().st_mtime >= src.stat().st_mtime, f"{name} is older than {src}"


# -- the lab ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Bench:
    """The lab set up as the benchmark's kernel router, and the destination files."""

    lab: L.Lab
    dsts: dict[int, Path]


@pytest.fixture(scope="module")
def bench(tools: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    """A private lab: dut forwards (kernel) toward the sink, neighbours permanent as
    routers.install_kernel_table makes them; removed afterwards, also on failure."""
    lab = L.Lab(prefix=f"cor-bt{os.getpid()}-", queues=1)
    try:
        lab.up()
    except L.LabError as e:
        lab.down()
        pytest.fail(f"cannot build the lab: {e}")
    try:
        # dut1 sends MLD reports when forwarding starts and when XDP is attached or removed,
        # one at once and one up to a second later: the sink would count them as "other".
        # Sent 10 ms apart, they are over before a trial begins.
        for version in (1, 2):
            key = f"net.ipv6.conf.{L.DUT_OUT}.mldv{version}_unsolicited_report_interval"
            lab.sysctl("dut", key, 10)
        lab.kernel_forwarding(True)
        # The generator's XDP_TX reaches dut0 only while dut0 has NAPI: GRO on gives it
        # one without an XDP program (as the harness's kernel router does).
        lab.exec("dut", ["ethtool", "-K", L.DUT_IN, "gro", "on"])
        routers.permanent_neighbours(lab)
        lab.ip("dut", "route", "replace", str(ROUTES4), "via", L.SINK_V4)
        lab.ip("dut", "route", "replace", str(ROUTES6), "via", L.SINK_V6)
        _, d4, _, d6 = tables.test_routes()
        dsts = {}
        workdir = tmp_path_factory.mktemp("bench-tools")
        for family, addrs, net in ((4, d4, ROUTES4), (6, d6, ROUTES6)):
            inside = [a for a in addrs if ipaddress.ip_address(a) in net]
            assert inside, f"tables.test_routes() gave no IPv{family} destination inside {net}"
            dsts[family] = workdir / f"dsts{family}.txt"
            dsts[family].write_text("\n".join(inside) + "\n")
        time.sleep(1.0)  # a stray MLD report of dut1 came ~0.8 s after forwarding began
        yield Bench(lab, dsts)
    finally:
        lab.down()


def _tool(
    lab: L.Lab, role: str, argv: list[str], timeout: float = 15
) -> subprocess.CompletedProcess[str]:
    """Run a bench tool in `role`'s namespace, stdin closed (the sink quits on EOF)."""
    return subprocess.run(["ip", "netns", "exec", lab.ns(role), *argv], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=timeout)  # fmt: skip


def _gen_argv(b: Bench, family: int, size: int, rate: float, seconds: float) -> list[str]:
    return [
        str(TOOLS / "gen"), "--dev", L.GEN_IF, "--src-mac", L.GEN_MAC, "--dst-mac",
        L.DUT_IN_MAC, "--src", L.GEN_V4 if family == 4 else L.GEN_V6, "--dsts",
        str(b.dsts[family]), "--size", str(size), "--rate", str(rate), "--duration", str(seconds),
    ]  # fmt: skip


def _xdp_xmit(lab: L.Lab) -> int:
    """Frames gen0 handed to its peer by XDP (accepted or refused): the generator's output."""
    out = lab.exec("gen", ["ethtool", "-S", L.GEN_IF]).stdout
    return sum(int(line.split(":")[1]) for line in out.splitlines() if "xdp_xmit" in line)


# -- bad input -------------------------------------------------------------------------------


def _with(argv: list[str], **changes: str | None) -> list[str]:
    """`argv` (a program and --flag value pairs) with values replaced; None drops a flag."""
    pairs = dict(zip(argv[1::2], argv[2::2], strict=True))
    for flag, value in changes.items():
        pairs[f"--{flag.replace('_', '-')}"] = value
    return [argv[0], *(x for flag, v in pairs.items() if v is not None for x in (flag, v))]


@pytest.mark.lab
def test_gen_refuses_bad_input_before_sending(bench: Bench, tmp_path: Path) -> None:
    lab = bench.lab
    v4 = _gen_argv(bench, 4, 64, 1000, 0.2)
    v6 = _gen_argv(bench, 6, 78, 1000, 0.2)
    outside4 = tmp_path / "outside4.txt"
    outside4.write_text(f"{bench.dsts[4].read_text().split()[0]}\n192.0.2.1\n")
    outside6 = tmp_path / "outside6.txt"
    outside6.write_text(f"{bench.dsts[6].read_text().split()[0]}\n2001:db9::5\n")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    cases = [
        ([str(TOOLS / "gen")], ["--dev", "--src-mac", "--dst-mac", "--src", "--dsts", "required"]),
        *((_with(v4, **{flag: None}), [f"--{flag.replace('_', '-')}", "required"])
          for flag in ("dev", "src_mac", "dst_mac", "src", "dsts")),
        (_with(v4, size="57"), ["--size 57", "IPv4 >= 58"]),
        (_with(v6, size="77"), ["--size 77", "IPv6 >= 78"]),
        (_with(v4, size="1519"), ["--size 1519", "1518"]),
        (_with(v4, src="192.0.2.1"), ["--src 192.0.2.1", "198.18.0.0/15"]),
        (_with(v6, src="2001:db9::1"), ["--src 2001:db9::1", "2001:db8::/32"]),
        (_with(v4, dsts=str(outside4)), ["192.0.2.1", "198.18.0.0/15"]),
        (_with(v6, dsts=str(outside6)), ["2001:db9::5", "2001:db8::/32"]),
        (_with(v4, dsts=str(bench.dsts[6])), ["source's family"]),
        (_with(v4, dsts=str(empty)), [f"--dsts {empty}", "no destination"]),
        (_with(v4, dsts=str(tmp_path / "absent.txt")), ["--dsts", "cannot open"]),
        (_with(v4, dev="nope0"), ["--dev nope0", "no such interface"]),
        (_with(v4, dev="lo"), ["--dev lo", "loopback"]),
        (_with(v4, duration="0"), ["--duration", "(0, 600]"]),
        (_with(v4, duration="601"), ["--duration", "(0, 600]"]),
        (_with(v4, burst="0"), ["--burst", "1 to 256"]),
        (_with(v4, burst="257"), ["--burst", "1 to 256"]),
        (_with(v4, src_mac="02:c0:00:00:00"), ["--src-mac", "xx:xx:xx:xx:xx:xx"]),
        (_with(v4, src_mac="02:c0:00:00:00:0x"), ["--src-mac", "xx:xx:xx:xx:xx:xx"]),
        (_with(v4, dst_mac="02:c0:00:00:00:01junk"), ["--dst-mac", "xx:xx:xx:xx:xx:xx"]),
        (_with(v4, size="64abc"), ["--size 64abc", "expected a number"]),
        (_with(v4, rate="-1"), ["--rate -1", ">= 0"]),
        (_with(v4, rate="fast"), ["--rate fast"]),
        (_with(v4, duration="1s"), ["--duration 1s", "expected seconds"]),
        ([*v4, "--bogus"], ["usage"]),
    ]  # fmt: skip
    before = _xdp_xmit(lab)
    for argv, words in cases:
        r = _tool(lab, "gen", argv)
        shown = " ".join(argv[1:])
        assert r.returncode == 2, f"gen {shown}: exit {r.returncode}, {r.stdout}{r.stderr}"
        assert r.stdout == "", f"gen {shown} ran: {r.stdout}"
        for word in words:
            assert word in r.stderr, f"gen {shown}: {r.stderr.strip()!r} does not say {word!r}"
    assert _xdp_xmit(lab) == before, "a refused generator sent frames"


@pytest.mark.lab
def test_sink_refuses_a_missing_device(bench: Bench) -> None:
    sink = str(TOOLS / "sink")
    for argv, words in (
        ([sink, "--max-seconds", "5"], ["--dev is required"]),
        ([sink, "--dev", L.SINK_IF, "--max-seconds", "0"], ["--max-seconds 0"]),
        ([sink, "--dev", "nope0", "--max-seconds", "5"], ["--dev nope0", "no such interface"]),
        ([sink, "--bogus"], ["usage"]),
    ):
        r = _tool(bench.lab, "sink", argv)
        shown = " ".join(argv[1:])
        assert r.returncode == 2, f"sink {shown}: exit {r.returncode}, {r.stdout}{r.stderr}"
        assert "ready" not in r.stdout, f"sink {shown} started"
        for word in words:
            assert word in r.stderr, f"sink {shown}: {r.stderr.strip()!r} does not say {word!r}"
    assert "xdp" not in bench.lab.ip("sink", "link", "show", L.SINK_IF).stdout


@pytest.mark.lab
def test_afxdp_ref_refuses_bad_input(bench: Bench) -> None:
    good = [str(TOOLS / "afxdp_ref"), "--in", L.DUT_IN, "--out", L.DUT_OUT, "--src-mac",
            L.DUT_OUT_MAC, "--dst-mac", L.SINK_MAC, "--mode", "copy",
            "--duration", "2"]  # fmt: skip
    usage = ["--in", "--out", "--src-mac", "--dst-mac", "--duration"]
    cases = [
        ([good[0]], usage),
        (_with(good, out=None), usage),
        (_with(good, src_mac="02:c0:00:00:01"), usage),
        (_with(good, dst_mac="zz:c0:00:00:01:02"), usage),
        (_with(good, duration="0"), ["--duration in (0, 3600]"]),
        (_with(good, duration="3601"), ["--duration in (0, 3600]"]),
        (_with(good, duration="x"), ["--duration in (0, 3600]"]),
        (_with(good, **{"in": "nope0"}), ["--in", "No such device"]),
        (_with(good, mode="foo"), ["--mode foo", "copy, zc or auto"]),
        (_with(good, src_mac="02:c0:00:00:01:01junk"), usage),
    ]
    for argv, words in cases:
        r = _tool(bench.lab, "dut", argv)
        shown = " ".join(argv[1:])
        assert r.returncode == 2, f"afxdp_ref {shown}: exit {r.returncode}, {r.stderr[-500:]}"
        assert r.stdout == "", f"afxdp_ref {shown} ran: {r.stdout}"
        for word in words:
            assert word in r.stderr, f"afxdp_ref {shown}: {r.stderr[-300:]!r} lacks {word!r}"
    assert not _has_xdp(bench.lab, L.DUT_IN), "a refused afxdp_ref left its program on dut0"


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--routers", "kernel,bogus"], "--routers"),
        (["--sizes", "63"], "--sizes"),
        (["--sizes", "64,1519"], "--sizes"),
        (["--sizes", "64,x"], "--sizes"),
        (["--families", "5"], "--families"),
        (["--families", "4,x"], "--families"),
        (["--reps", "0"], "--reps"),
        (["--reps", "11"], "--reps"),
        (["--trial", "0.1"], "--trial"),
        (["--trial", "61"], "--trial"),
        (["--trials-per-load", "2"], "--trials-per-load"),
        (["--trials-per-load", "0"], "--trials-per-load"),
        (["--trials-per-load", "11"], "--trials-per-load"),
    ],
)
def test_harness_refuses_bad_arguments_before_building(
    argv: list[str], flag: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _require_root()  # main() refuses non-root first
    _forbid_running_the_benchmark(monkeypatch)
    with pytest.raises(SystemExit) as e:
        cli.main(["--quick", *argv])
    message = str(e.value.code)
    assert flag in message, f"{argv}: {message!r} does not name {flag}"
    assert argv[1].split(",")[-1] in message, f"{argv}: {message!r} does not name the value"


@pytest.mark.lab
def test_harness_builds_once_arguments_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    """The counterpart of the refusals: valid arguments do reach the build."""
    _require_root()
    _forbid_running_the_benchmark(monkeypatch)
    with pytest.raises(_Reached, match="build_tools"):
        cli.main(["--quick", "--routers", "kernel,xdp_fwd", "--sizes", "64,1518",
                "--families", "4,6", "--reps", "1", "--trial", "0.5"])  # fmt: skip


class _Reached(Exception):
    pass


def _forbid_running_the_benchmark(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past its argument checks, main() would build and run the whole benchmark."""
    for name in ("build_tools", "real_table", "bench_topology"):

        def reached(*args: object, _name: str = name, **kwargs: object) -> None:
            raise _Reached(_name)

        monkeypatch.setattr(cli, name, reached)


# -- traffic ---------------------------------------------------------------------------------


class Sink:
    """The sink tool on sink0, driven over its stdin; every wait bounded."""

    def __init__(self, lab: L.Lab) -> None:
        argv = ["ip", "netns", "exec", lab.ns("sink"), str(TOOLS / "sink"), "--dev", L.SINK_IF,
                "--max-seconds", "180"]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)  # fmt: skip
        line = self._line(10)
        if '"ready"' not in line:
            self.close()
            pytest.fail(f"the sink did not start: {line}{self.proc.stderr.read()}")

    def _line(self, timeout: float) -> str:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            pytest.fail(f"the sink did not answer within {timeout} s")
        return self.proc.stdout.readline()

    def read(self) -> dict:
        self.proc.stdin.write("read\n")
        self.proc.stdin.flush()
        return json.loads(self._line(5))

    def close(self) -> None:
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
        except (OSError, ValueError):
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def sink(bench: Bench) -> Iterator[Sink]:
    s = Sink(bench.lab)
    try:
        yield s
    finally:
        s.close()
        assert not _has_xdp(bench.lab, L.SINK_IF, "sink"), "the sink left its program on sink0"


@dataclasses.dataclass
class Delivery:
    """One generator run and what the sink counted meanwhile."""

    gen: dict
    pkts: int
    bytes: int
    other: int
    late: int
    hist: dict[int, int]

    def describe(self) -> str:
        return (f"sent {self.gen['sent']}, sink {self.pkts} (other {self.other}, late "
                f"{self.late}); gen {self.gen}")  # fmt: skip


def _deliver(bench: Bench, sink: Sink, family: int, size: int, rate: float = RATE,
             seconds: float = SECONDS) -> Delivery:  # fmt: skip
    before = sink.read()
    argv = _gen_argv(bench, family, size, rate, seconds)
    r = _tool(bench.lab, "gen", argv, timeout=seconds + 20)
    assert r.returncode == 0, f"gen IPv{family} {size} B: exit {r.returncode}: {r.stderr}"
    gen = json.loads(r.stdout)
    # Frames in flight: wait until the sink has them all (or 2 s), then a moment for extras.
    deadline = time.monotonic() + 2.0
    after = sink.read()
    while after["pkts"] - before["pkts"] < gen["sent"] and time.monotonic() < deadline:
        time.sleep(0.05)
        after = sink.read()
    time.sleep(0.05)
    after = sink.read()
    h0 = dict(before["hist"])
    hist = {b: c - h0.get(b, 0) for b, c in after["hist"] if c - h0.get(b, 0)}
    return Delivery(gen, *(after[k] - before[k] for k in ("pkts", "bytes", "other", "late")),
                    hist)  # fmt: skip


def _check_delivery(d: Delivery, family: int, size: int, *, other: bool = True) -> list[str]:
    """What is wrong with one delivery (empty: nothing)."""
    problems = []
    g = d.gen
    if g["error"] or g["family"] != family or g["size"] != size or not g["sent"]:
        problems.append(f"the generator's report is off: {g}")
    if d.pkts != g["sent"]:
        problems.append(f"sink counted {d.pkts} of {g['sent']} frames sent")
    if d.bytes != d.pkts * (size - 4):
        problems.append(f"{d.bytes} bytes for {d.pkts} frames of {size - 4} B (without FCS)")
    if other and d.other:
        problems.append(f"{d.other} frames without the signature reached the sink")
    if d.late:
        problems.append(f"{d.late} signatures from the future or too old")
    if sum(d.hist.values()) != d.pkts - d.late:
        problems.append(f"histogram holds {sum(d.hist.values())} of {d.pkts - d.late} frames")
    # The latencies are sane: the quickest frame took more than nothing and less than 10 ms
    # (a wrong unit or clock would put it far outside), and the median no longer than the
    # run itself. Not the median under 10 ms: a busy-polling router on a busy shared machine
    # loses its CPU for tens of milliseconds, and that is the machine, not the tools.
    fastest, p50 = percentile(d.hist, 0.0), percentile(d.hist, 0.5)
    if fastest is None or not 0 < fastest < 10_000:
        problems.append(f"quickest latency {fastest} µs, expected above 0 and below 10 ms")
    if p50 is None or p50 > (g["seconds"] + 1) * 1e6:
        problems.append(f"latency p50 {p50} µs, longer than the run ({g['seconds']} s)")
    return [f"IPv{family} {size} B: {p}; {d.describe()}" for p in problems]


def _has_xdp(lab: L.Lab, dev: str, role: str = "dut") -> bool:
    return " xdp" in lab.ip(role, "link", "show", "dev", dev).stdout


def _settle_mld() -> None:
    """dut1's MLD reports after an XDP change, 10 ms apart (see the `bench` fixture)."""
    time.sleep(0.15)


def _gen_frame_problems(frame: bytes, family: int, size: int, dsts: set[str]) -> list[str]:
    """What is wrong with one frame as the generator built it (checked with scapy)."""
    pkt = Ether(frame)
    l3 = pkt[IP] if family == 4 else pkt[IPv6]
    udp = pkt[UDP]
    payload = bytes(udp.payload)
    problems = []
    if len(frame) != size - 4:
        problems.append(f"{len(frame)} bytes, expected {size - 4} (the size without FCS)")
    if (pkt.src, pkt.dst) != (L.GEN_MAC, L.DUT_IN_MAC):
        problems.append(f"MACs {pkt.src} -> {pkt.dst}")
    if l3.src != (L.GEN_V4 if family == 4 else L.GEN_V6) or l3.dst not in dsts:
        problems.append(f"addresses {l3.src} -> {l3.dst}")
    if (l3.ttl if family == 4 else l3.hlim) != 64:
        problems.append("TTL / hop limit not 64")
    if udp.dport != 9 or not 1024 <= udp.sport < 1024 + 60000:
        problems.append(f"UDP ports {udp.sport} -> {udp.dport}")
    if udp.len != len(frame) - 14 - (20 if family == 4 else 40):
        problems.append(f"UDP length {udp.len}")
    if int.from_bytes(payload[:4], "big") != BENCH_MAGIC:
        problems.append(f"no signature: payload starts {payload[:4].hex()}")
    for layer in (l3, udp):
        for field in ("chksum", "cksum"):
            if field in layer.fields:
                setattr(layer, field, None)
    if bytes(pkt) != frame:
        problems.append("a checksum is wrong (scapy computes other bytes)")
    return problems


@pytest.mark.lab
def test_kernel_router_delivers_every_generated_frame(bench: Bench, sink: Sink) -> None:
    """Through dut's kernel, which drops bad IPv4 header checksums and expired TTLs; the
    frames as they arrive on dut0 are checked field by field."""
    problems = []
    for family, size in CASES:
        dsts = set(bench.dsts[family].read_text().split())

        def generated(frame: bytes, family: int = family) -> bool:
            ethertype = frame[12:14]
            if frame[6:12] != traffic.mac_bytes(L.GEN_MAC):
                return False
            if family == 4:
                return ethertype == b"\x08\x00" and frame[23] == 17
            return ethertype == b"\x86\xdd" and frame[20] == 17

        cap = traffic.Capture(L.DUT_IN, bench.lab.ns("dut"), duration=SECONDS + 5, count=200,
                              keep=generated).start()  # fmt: skip
        try:
            d = _deliver(bench, sink, family, size)
        finally:
            frames = cap.stop()
        problems += _check_delivery(d, family, size)
        if len(frames) < min(200, d.gen["sent"]):
            problems.append(f"IPv{family} {size} B: captured only {len(frames)} frames on dut0")
        for frame in frames:
            if wrong := _gen_frame_problems(frame, family, size, dsts):
                problems.append(f"IPv{family} {size} B: {Ether(frame).summary()}: {wrong}")
                break
        if len({Ether(f)[IP if family == 4 else IPv6].dst for f in frames}) < min(len(dsts), 2):
            problems.append(f"IPv{family} {size} B: every frame to one destination")
    assert not problems, "\n".join(problems)


@pytest.mark.lab
def test_xdp_fwd_delivers_every_generated_frame(bench: Bench, sink: Sink) -> None:
    lab = bench.lab
    problems = []
    try:
        for dev in (L.DUT_IN, L.DUT_OUT):
            lab.ip("dut", "link", "set", "dev", dev, "xdpdrv", "obj",
                   str(TOOLS / "xdp_fwd.bpf.o"), "sec", "xdp")  # fmt: skip
        _settle_mld()
        for family, size in CASES:
            problems += _check_delivery(_deliver(bench, sink, family, size), family, size)
    finally:
        for dev in (L.DUT_IN, L.DUT_OUT):
            lab.ip("dut", "link", "set", "dev", dev, "xdpdrv", "off", check=False)
        _settle_mld()
    assert not problems, "\n".join(problems)
    assert not _has_xdp(lab, L.DUT_IN) and not _has_xdp(lab, L.DUT_OUT)


@pytest.mark.lab
def test_afxdp_ref_delivers_every_generated_frame(bench: Bench, sink: Sink) -> None:
    """afxdp_ref forwards whatever reaches dut0's queue 0 (ND too), so "other" may move."""
    lab = bench.lab
    argv = ["ip", "netns", "exec", lab.ns("dut"), str(TOOLS / "afxdp_ref"), "--in", L.DUT_IN,
            "--out", L.DUT_OUT, "--src-mac", L.DUT_OUT_MAC, "--dst-mac", L.SINK_MAC,
            "--mode", "copy", "--duration", "30"]  # fmt: skip
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    problems, sent = [], 0
    try:
        # Up once libxdp's program is on dut0; a moment more for the fill ring.
        deadline = time.monotonic() + 5
        while not _has_xdp(lab, L.DUT_IN) and proc.poll() is None:
            assert time.monotonic() < deadline, "afxdp_ref attached nothing to dut0 in 5 s"
            time.sleep(0.05)
        time.sleep(0.3)
        assert proc.poll() is None, f"afxdp_ref exited {proc.returncode}: {proc.stderr.read()}"
        for family, size in CASES:
            d = _deliver(bench, sink, family, size)
            sent += d.gen["sent"]
            problems += _check_delivery(d, family, size, other=False)
    finally:
        proc.terminate()
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        left = _has_xdp(lab, L.DUT_IN)
        lab.ip("dut", "link", "set", "dev", L.DUT_IN, "xdp", "off", check=False)
    assert not problems, "\n".join(problems)
    assert proc.returncode == 0, f"afxdp_ref exited {proc.returncode}: {err[-500:]}"
    counters = json.loads(out)
    assert counters["rx"] >= sent and counters["tx"] >= sent, f"{counters}, {sent} sent"
    assert counters["tx_ring_full"] == 0, counters
    assert not left, "afxdp_ref left its XDP program on dut0 after exiting"


@pytest.mark.lab
def test_l3fwd_delivers_every_generated_frame(bench: Bench, sink: Sink) -> None:
    """DPDK's l3fwd (benches/dpdk) as the benchmark starts it, on net_af_xdp, the test
    routes through its route files: every generated frame reaches the sink, and stopping
    it leaves no XDP program behind."""
    binary = TOOLS / "l3fwd"
    if not binary.exists():
        r = subprocess.run(["make", "-s", "-C", str(REPO / "benches" / "dpdk")],
                           capture_output=True, text=True)  # fmt: skip
        assert r.returncode == 0, f"make -C benches/dpdk (needs libdpdk-dev, dpdk-doc): {r.stderr}"
    lab = bench.lab
    router = routers.L3fwdRouter(lab, {"v4": [str(ROUTES4)], "v6": [str(ROUTES6)]})
    problems = []
    try:
        router.start()
        assert any("lookup fib" in p for p in router.placement), router.placement
        _settle_mld()
        for family, size in CASES:
            problems += _check_delivery(_deliver(bench, sink, family, size), family, size,
                                        other=False)  # fmt: skip
        assert router.proc is not None and router.proc.poll() is None, "l3fwd exited"
    finally:
        router.stop()
        left = _has_xdp(lab, L.DUT_IN) or _has_xdp(lab, L.DUT_OUT)
        for dev in (L.DUT_IN, L.DUT_OUT):
            lab.ip("dut", "link", "set", "dev", dev, "xdp", "off", check=False)
        # Back to the kernel router the other tests expect: GRO on dut0 gives it NAPI.
        lab.exec("dut", ["ethtool", "-K", L.DUT_IN, "gro", "on"], check=False)
        _settle_mld()
    assert not problems, "\n".join(problems)
    assert not left, "l3fwd left an XDP program on a dut port after exiting"


# -- pure helpers ----------------------------------------------------------------------------


def test_test_routes_stay_in_the_test_space_and_cover_their_destinations() -> None:
    r4, d4, r6, d6 = tables.test_routes()
    assert (r4, d4, r6, d6) == tables.test_routes(), "not reproducible"
    assert tables.test_routes(seed=7) != (r4, d4, r6, d6), "the seed changes nothing"
    for routes, dsts, space, home, lengths, bits in (
        (r4, d4, TEST4, ROUTES4, range(16, 33), 32),
        (r6, d6, TEST6, ROUTES6, range(33, 129), 128),
    ):
        nets = [ipaddress.ip_network(r) for r in routes]  # strict: no host bits set
        assert len(set(nets)) == len(nets), "a route is listed twice"
        assert all(n.subnet_of(space) for n in nets), [str(n) for n in nets if
                                                       not n.subnet_of(space)]  # fmt: skip
        # Every length of the documented range, all inside the routes' home (no lab link
        # there).
        assert {n.prefixlen for n in nets} == set(lengths)
        strays = [str(n) for n in nets if not n.subnet_of(home)]
        assert not strays, f"routes outside {home}: {strays}"
        assert dsts and all(ipaddress.ip_address(d) in home for d in dsts)
        by_length: dict[int, set[int]] = {}
        for n in nets:
            by_length.setdefault(n.prefixlen, set()).add(int(n.network_address))
        depths = set()
        for d in dsts:
            a = int(ipaddress.ip_address(d))
            covered = [n for n, prefixes in by_length.items()
                       if (a >> (bits - n)) << (bits - n) in prefixes]  # fmt: skip
            assert covered, f"destination {d} is behind no route"
            depths.add(max(covered))
        assert len(set(dsts)) == len(dsts), "a destination is listed twice"
        # The lookups end at (nearly) every length, not only at the longest ones.
        missing = set(lengths) - depths
        assert len(missing) <= len(lengths) // 20, f"no destination ends at /{sorted(missing)}"


def _bench_h(name: str) -> int:
    text = (GEN_DIR / "bench.h").read_text()
    m = re.search(rf"#define {name} (\d+)", text)
    assert m, f"bench.h defines no {name}"
    return int(m.group(1))


def _sink_bucket(ns: int) -> int:
    """The histogram bucket sink.bpf.c files a latency of `ns` nanoseconds under."""
    linear, sub = _bench_h("HIST_LINEAR"), _bench_h("HIST_SUB")
    assert (linear, sub) == (16, 16), "bench.h's layout changed: revisit percentile"
    if ns < 1024:
        return ns >> 6
    m = ns.bit_length() - 1
    return linear + (m - 10) * sub + ((ns >> (m - 4)) & (sub - 1))


def _histogram(latencies: dict[int, int]) -> dict[int, int]:
    hist: dict[int, int] = {}
    for ns, count in latencies.items():
        hist[_sink_bucket(ns)] = hist.get(_sink_bucket(ns), 0) + count
    return hist


def _near(got: float | None, want_ns: int) -> bool:
    """Within half a bucket, as a bucket's middle is: 32 ns in the linear part, 1/32 of a
    power of two above."""
    if got is None:
        return False
    half = 32 if want_ns < 1024 else 1 << (want_ns.bit_length() - 6)
    return abs(got * 1000 - want_ns) <= half


def test_percentile_reads_the_sinks_histogram() -> None:
    assert percentile({}, 0.5) is None
    latencies = {700: 300, 12_000: 400, 80_000: 250, 3_000_000: 50}  # ns: count
    hist = _histogram(latencies)
    quantiles = ((0.1, 700), (0.3, 700), (0.31, 12_000), (0.5, 12_000), (0.7, 12_000),
                 (0.9, 80_000), (0.95, 80_000), (0.99, 3_000_000), (1.0, 3_000_000))  # fmt: skip
    for q, want in quantiles:
        got = percentile(hist, q)
        assert _near(got, want), f"q={q}: {got} µs, expected about {want / 1000} µs"
    # One latency alone, over the whole range: the quantile is that latency's bucket.
    ns = 1
    while ns < 1 << 41:
        got = percentile({_sink_bucket(ns): 10}, 0.5)
        assert _near(got, ns), f"{ns} ns read back as {got} µs"
        ns = ns * 3 + 7


def _row(router: str, family: int, size: int, rep: int, ndr: float, **more: object) -> dict:
    return {"router": router, "family": family, "size": size, "rep": rep, "ndr_pps": ndr,
            "pdr_pps": ndr * 1.1, "max_fwd_pps": ndr * 1.3, "cpu": 0.5 + rep**2 / 10,
            "p50_us": 10.0 + rep**2, "p99_us": 40.0 + rep**2, "max_lost_at": "router 100%",
            "latency_at": "NDR/2", **more}  # fmt: skip


# Skewed, so that a mean would not pass for the median.
NDR = {"kernel": [200e3, 290e3, 230e3], "xdp_fwd": [900e3, 600e3, 800e3],
       "corridor-1": [450e3, 520e3, 400e3]}  # fmt: skip
METRIC_KEYS = ("ndr_pps", "pdr_pps", "max_fwd_pps")


def _rows() -> list[dict]:
    rows = [_row(router, 4, 64, rep, ndr) for router, ndrs in NDR.items()
            for rep, ndr in enumerate(ndrs)]  # fmt: skip
    rows += [_row("corridor-1", 6, 1518, rep, 100e3) for rep in range(3)]
    rows += [{"router": "afxdp_ref", "family": 4, "size": 64, "rep": rep,
              "error": "afxdp_ref exited (2): socket on --in: No such device"}
             for rep in range(3)]  # fmt: skip
    return rows


def test_summarize_gives_medians_ranges_and_ratios() -> None:
    summary = report.summarize(_rows())
    by = {(s["router"], s["family"], s["size"]): s for s in summary}
    assert set(by) == {("kernel", 4, 64), ("xdp_fwd", 4, 64), ("corridor-1", 4, 64),
                       ("corridor-1", 6, 1518), ("afxdp_ref", 4, 64)}  # fmt: skip
    for router, ndrs in NDR.items():
        s = by[(router, 4, 64)]
        assert s["reps"] == 3
        for key, factor in (("ndr_pps", 1.0), ("pdr_pps", 1.1), ("max_fwd_pps", 1.3)):
            vals = sorted(n * factor for n in ndrs)
            assert s[key] == pytest.approx(vals[1]), (router, key)
            assert (s[f"{key}_min"], s[f"{key}_max"]) == pytest.approx((vals[0], vals[2]))
        assert s["p50_us"] == 11.0 and (s["p50_us_min"], s["p50_us_max"]) == (10.0, 14.0)
        assert s["cpu"] == pytest.approx(0.6)
    assert by[("afxdp_ref", 4, 64)]["error"].startswith("afxdp_ref exited")
    corridor = by[("corridor-1", 4, 64)]
    ratios = {k for k in corridor if k.startswith("x_")}
    # afxdp_ref was not measured: no ratio to it, rather than a ratio to nothing.
    assert ratios == {f"x_{ref}_{key}" for ref in ("kernel", "xdp_fwd") for key in METRIC_KEYS}
    for ref in ("kernel", "xdp_fwd"):
        for key in METRIC_KEYS:
            want = by[("corridor-1", 4, 64)][key] / by[(ref, 4, 64)][key]
            assert corridor[f"x_{ref}_{key}"] == pytest.approx(want)
    assert corridor["x_kernel_ndr_pps"] == pytest.approx(450e3 / 230e3)
    # No reference measured IPv6 1518 B: nothing to compare with.
    assert not [k for k in by[("corridor-1", 6, 1518)] if k.startswith("x_")]
    for ref in ("kernel", "xdp_fwd"):
        assert not [k for k in by[(ref, 4, 64)] if k.startswith("x_")], "a reference's ratio"


def test_markdown_has_a_row_per_router_and_the_error() -> None:
    summary = report.summarize(_rows())
    meta = {"date": "2024-01-01 00:00", "mode": "quick", "reps": 3, "trial_s": 2.0,
            "machine": "test machine", "table": "0 routes", "placement": "nowhere"}  # fmt: skip
    md = report.markdown(summary, meta)
    lines = md.splitlines()
    for router, ndrs in NDR.items():
        row = [line for line in lines if line.startswith(f"| {router} | IPv4 | 64 | ")]
        assert row, f"no row for {router}:\n{md}"
        lo, mid, hi = sorted(ndrs)
        assert f"{mid / 1e6:.3f} ({lo / 1e6:.3f}-{hi / 1e6:.3f})" in row[0], row[0]
    error = [line for line in lines if line.startswith("| afxdp_ref | IPv4 | 64 | ")]
    assert len(error) == 1 and "not measured: afxdp_ref exited (2)" in error[0], md
    ratio = [line for line in lines if line.startswith("| corridor-1 | IPv4 | 64 | ")][-1]
    kernel = 450e3 / 230e3
    assert f"{kernel:.2f} / {kernel:.2f} / {kernel:.2f}" in ratio, ratio
    assert ratio.rstrip().endswith("| - / - / - |"), f"afxdp_ref's ratios: {ratio}"
    assert "test machine" in md and "nowhere" in md


def test_paired_ratios_are_taken_rep_by_rep() -> None:
    # corridor-1e at 0.9x of corridor-1 in each repetition, 0.8x for rep 1's NDR; the base
    # drifting from one repetition to the next. A pair is one repetition's two routers.
    base = [500e3, 300e3, 400e3]
    rows = [_row("corridor-1", 4, 64, rep, ndr) for rep, ndr in enumerate(base)]
    rows += [_row("corridor-1e", 4, 64, rep, ndr * 0.9) for rep, ndr in enumerate(base)]
    rows[4]["ndr_pps"] = 300e3 * 0.8
    rows += [{"router": "corridor-1e", "family": 6, "size": 78, "rep": 0, "error": "no"}]
    got = report.paired(rows)
    assert len(got) == 1, got
    s = got[0]
    assert (s["router"], s["base"], s["family"], s["size"], s["pairs"]) == (
        "corridor-1e", "corridor-1", 4, 64, 3)  # fmt: skip
    for key in METRIC_KEYS:
        assert s[key] == pytest.approx(0.9) and s[f"{key}_max"] == pytest.approx(0.9), key
    assert s["pdr_pps_min"] == pytest.approx(0.9) and s["ndr_pps_min"] == pytest.approx(0.8)
    meta = {"date": "d", "mode": "quick", "reps": 3, "trial_s": 2.0, "machine": "m",
            "table": "t", "placement": "p", "load_average": [7.5, 6.0, 5.25],
            "paired": got}  # fmt: skip
    md = report.markdown(report.summarize(rows), meta)
    row = "| corridor-1e | corridor-1 | IPv4 | 64 | 3 | 0.90 (0.80-0.90) | 0.90 (0.90-0.90) |"
    assert row in md, md
    assert "Load average (1, 5, 15 min) at the end: 7.50, 6.00, 5.25." in md, md


def test_a_build_with_no_loss_free_rate_pairs_as_zero() -> None:
    # NDR 0 in one repetition is that build's result there (every trial lost frames): it
    # must pull the median down, not drop out of it. A base of 0 has no ratio.
    rows = [_row("corridor-1", 4, 64, rep, 400e3) for rep in range(3)]
    rows += [_row("corridor-1e", 4, 64, rep, 400e3) for rep in range(3)]
    rows[4]["ndr_pps"] = 0.0
    rows += [_row("corridor-1", 4, 64, 3, 0.0), _row("corridor-1e", 4, 64, 3, 400e3)]
    s = report.paired(rows)[0]
    assert (s["ndr_pps"], s["ndr_pps_min"], s["ndr_pps_max"]) == (1.0, 0.0, 1.0), s
    assert s["pairs"] == 3, s


def test_l3fwd_is_a_reference_in_the_ratios() -> None:
    rows = [_row("l3fwd", 4, 64, rep, 300e3) for rep in range(3)]
    rows += [_row("corridor-1", 4, 64, rep, 450e3) for rep in range(3)]
    by = {(s["router"], s["family"]): s for s in report.summarize(rows)}
    for key in METRIC_KEYS:
        assert by[("corridor-1", 4)][f"x_l3fwd_{key}"] == pytest.approx(1.5)
    meta = {"date": "d", "mode": "quick", "reps": 3, "trial_s": 2.0, "machine": "m",
            "table": "t", "placement": "p"}  # fmt: skip
    md = report.markdown(report.summarize(rows), meta)
    assert "| x l3fwd |" in md and md.rstrip().endswith("| 1.50 / 1.50 / 1.50 |"), md


def test_plot_has_both_rates_colour_blind_colours_and_says_what_it_shows(
    tmp_path: Path,
) -> None:
    # Needs matplotlib (requirements/bench.txt): an ImportError here says so.
    import matplotlib.image
    import matplotlib.pyplot as plt

    summary = report.summarize(_rows())
    meta = {"date": "2024-01-01 00:00", "machine": "test host"}
    png = tmp_path / "f.png"
    assert report.plot(summary, png, meta) == str(png)
    pixels = matplotlib.image.imread(png)[:, :, :3]
    colours = {tuple(round(float(c) * 255) for c in p) for p in pixels.reshape(-1, 3)[::7]}

    def near(hexcolour: str) -> bool:
        want = tuple(int(hexcolour[i : i + 2], 16) for i in (1, 3, 5))
        return any(all(abs(a - b) <= 3 for a, b in zip(c, want, strict=True)) for c in colours)

    # The first two routers' Okabe-Ito colours are there, matplotlib's default blue is not.
    assert near(report.PALETTE[0]) and near(report.PALETTE[1])
    assert not near("#1f77b4")
    # Two panels (PDR and max forwarded) and the caption: read back from the figure itself.
    seen: dict[str, list[str]] = {}
    orig = plt.Figure.savefig

    def capture(fig: plt.Figure, *a: object, **k: object) -> None:
        seen["titles"] = [ax.get_title() for ax in fig.axes]
        seen["texts"] = [t.get_text() for t in fig.texts] + [fig._suptitle.get_text()]
        orig(fig, *a, **k)

    plt.Figure.savefig = capture  # type: ignore[method-assign]
    try:
        report.plot(summary, png, meta)
    finally:
        plt.Figure.savefig = orig  # type: ignore[method-assign]
    assert any(t.startswith("PDR") for t in seen["titles"]), seen
    assert any(t.startswith("max forwarded") for t in seen["titles"]), seen
    text = " ".join(seen["texts"])
    assert "median of 3" in text and "min-max" in text and "test host" in text, text
    assert "2024-01-01" in text


def test_trial_locates_its_losses() -> None:
    t = search.Trial(offered=1000, sent=1000, received=900, seconds=2.0, cpu=0.5, hist={},
                lost_in=40, lost_sink=10)  # fmt: skip
    assert (t.lost, t.lost_router, t.loss_ratio) == (100, 50, 0.1)
    assert (t.sent_pps, t.fwd_pps) == (500.0, 450.0)
    assert t.where() == "input ring 40%, router 50%, sink ring 10%"
    whole = search.Trial(offered=0, sent=10, received=10, seconds=1.0, cpu=0.0, hist={})
    assert (whole.lost, whole.where()) == (0, "none")
    nothing = search.Trial(offered=0, sent=0, received=0, seconds=1.0, cpu=0.0, hist={})
    assert nothing.loss_ratio == 1.0, "a trial that sent nothing must not pass as lossless"


class _Router:
    """A stand-in for Traffic: a router that forwards up to `capacity` pps and loses
    nothing below it, and a host that stalls the trials whose numbers are in `stalled`
    (counted from 0 in the order run), each losing 2 % at the input ring."""

    GEN_PPS = 4e6  # the generator flat out

    def __init__(self, capacity: float, stalled: set[int]) -> None:
        self.capacity, self.stalled, self.asked = capacity, stalled, []

    def trial(self, family: int, size: int, rate: float, seconds: float) -> search.Trial:
        # The generator's own floor (benches/gen): the smallest frames that hold its signature.
        if size < cli.MIN_SIZE[family]:
            raise RuntimeError(f"generator: --size {size} too small for IPv{family}")
        offered = rate or self.GEN_PPS
        sent = int(offered * seconds)
        received = int(min(offered, self.capacity) * seconds)
        lost_in = int(sent * 0.02) if len(self.asked) in self.stalled else 0
        self.asked.append(rate)
        return search.Trial(offered=rate, sent=sent, received=received - lost_in,
                            seconds=seconds, cpu=0.5, hist={10: 100},
                            lost_in=lost_in)  # fmt: skip


def _search(router: _Router, per_load: int) -> dict:
    mode = search.Mode(trial=1.0, steps=4, reps=1, latency_trial=1.0, per_load=per_load)
    return search.search(router, 4, 64, mode, log=lambda _line: None)  # type: ignore[arg-type]


def test_one_stalled_trial_moves_a_one_trial_search_and_not_a_majority() -> None:
    first_guess = 0.97e6  # just under what got through flat out
    # One trial decides: the flat-out trial is number 0, the first two guesses 1 and 2.
    alone = _Router(1e6, stalled={1, 2})
    r = _search(alone, per_load=1)
    assert alone.asked[1:3] == pytest.approx([first_guess, first_guess / 2])
    assert r["pdr_pps"] < 0.6 * first_guess, "the stalled trials should have failed their rates"
    # The majority of three: flat out is decided by trials 0 and 1 (both over), the first
    # guess by 2 (stalled), 3 and 4, which pass.
    majority = _Router(1e6, stalled={2})
    r = _search(majority, per_load=3)
    assert majority.asked[:5] == pytest.approx([0, 0, first_guess, first_guess, first_guess])
    # The first guess passed, and the search went on up from it.
    assert first_guess <= r["pdr_pps"] <= 1e6 * (1 + search.PDR_LOSS)
    assert first_guess <= r["ndr_pps"] <= 1e6, "2 of 3 trials at the first guess lost nothing"
    assert r["max_fwd_pps"] == pytest.approx(1e6) and r["per_load"] == 3
    assert [t["load"] for t in r["trials"]][:5] == [0, 0, 1, 1, 1]
    assert r["trials"][2]["lost_in"] > 0, "the stalled trial is kept in the record"


def test_a_majority_of_stalled_trials_fails_the_rate() -> None:
    """The rule cuts both ways: a rate that most of its trials lose at is over."""
    quiet = _search(_Router(1e6, stalled=set()), per_load=3)
    stalled = _search(_Router(1e6, stalled={2, 3}), per_load=3)
    assert stalled["pdr_pps"] < 0.97e6 <= quiet["pdr_pps"], "the first guess failed"
    first = [t for t in stalled["trials"] if t["load"] == 1]
    assert len(first) == 2, "two trials over decide a rate of three"


def test_warm_up_runs_one_short_flat_out_trial_per_family_before_the_search() -> None:
    router = _Router(1e6, stalled=set())
    lines: list[str] = []
    done = search.warm_up(router, {4: 64, 6: 78}, lines.append)  # type: ignore[arg-type]
    assert router.asked == [0, 0] and [t.seconds for t in done] == [search.WARM_UP_S] * 2
    assert len(lines) == 2 and all("not recorded" in line for line in lines), lines


def test_a_search_is_bounded_and_finds_the_capacity() -> None:
    for capacity in (0.2e6, 1e6, 3.9e6):
        router = _Router(capacity, stalled=set())
        r = _search(router, per_load=3)
        # Flat out, two criteria of at most 4 steps, 3 trials per rate, and the latency.
        assert len(router.asked) <= 3 + 2 * 4 * 3 + 1
        assert 0.9 * capacity <= r["pdr_pps"] <= capacity * (1 + search.PDR_LOSS)
        assert r["ndr_pps"] <= capacity and r["ndr_pps"] >= 0.9 * capacity
    # A router that forwards everything the generator sends: flat out passes both.
    router = _Router(5e6, stalled=set())
    r = _search(router, per_load=3)
    assert r["pdr_pps"] == r["ndr_pps"] == pytest.approx(4e6)
    assert router.asked == [0, 0, 2e6], "two flat-out trials, then latency at half"


# -- pacing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("family", "size"), [(4, 64), (6, 1518)])
@pytest.mark.lab
def test_gen_paces_at_the_asked_rate(bench: Bench, sink: Sink, family: int, size: int) -> None:
    """gen reports `active_seconds`, the time frames were offered (its calls' set-up and
    every other pause of over GAP_NS left out); the harness divides `sent` by it to get the
    offered rate. gen.bpf.c shifts its schedule by each pause it leaves out, so that rate is
    the one asked for however often the generator is preempted: within a frame of the
    active time, every run. (It restarted the schedule at each pause's end, which sent a
    frame early after every pause: 5 % high on an idle machine, up to 55 % on a busy one.)
    At 5000 frames/s no lag of CATCH_UP frames can build up between runs under GAP_NS
    apart, so nothing is forgiven; over the whole run the rate is never exceeded."""
    for _ in range(3):
        d = _deliver(bench, sink, family, size)
        g = d.gen
        assert 0 < g["active_seconds"] <= g["seconds"] <= SECONDS + 1, g
        assert g["sent"] <= RATE * g["seconds"] * 1.01 + 1, f"more than {RATE} frames/s: {g}"
        assert d.pkts == g["sent"], d.describe()
        assert g["forgiven"] == 0, g
        # Frames go at the active window's start and every 1/RATE after: `sent` is the
        # window times RATE rounded up, give or take one frame per CPU the generator ran on.
        frames = g["active_seconds"] * RATE
        cpus = os.cpu_count() or 1
        assert frames - 1 <= g["sent"] <= frames + cpus, f"asked {RATE} frames/s: {g}"


# -- the steering program's cost (benches.steering) ------------------------------------------


@pytest.mark.lab
def test_steering_bench_runs_both_programs_on_their_frames(tools: Path, tmp_path: Path) -> None:
    """Both programs really ran on the frames: the actions are each program's verdicts
    (redirect transit, pass the router's own address), and the kernel timed every call."""
    out = tmp_path / "steering"
    r = subprocess.run([sys.executable, "-m", "benches.steering", "--repeat", "2000",
                        "--calls", "2", "--rounds", "2", "--out", str(out)],
                       capture_output=True, text=True, timeout=300, cwd=REPO)  # fmt: skip
    assert r.returncode == 0, r.stderr
    got = json.loads(out.with_suffix(".json").read_text())
    assert got["corridor-1"]["program"] == "corridor_steer"
    assert got["afxdp_ref"]["program"] == "xsk_def_prog"
    for router in ("corridor-1", "afxdp_ref"):
        for frame in ("IPv4 transit", "IPv6 transit"):
            assert got[router][frame]["action"] == "XDP_REDIRECT", (router, frame, got)
    assert got["corridor-1"]["IPv4 to the router"]["action"] == "XDP_PASS"
    for router in got.values():
        for frame in (v for v in router.values() if isinstance(v, dict)):
            assert len(frame["ns"]) == 4 and all(0 < ns < 100_000 for ns in frame["ns"]), frame
    assert "| IPv4 transit |" in out.with_suffix(".md").read_text()


@pytest.mark.parametrize(
    "argv", [["--repeat", "5"], ["--repeat", "x"], ["--calls", "0"], ["--rounds", "21"]]
)
def test_steering_bench_refuses_bad_arguments(argv: list[str]) -> None:
    r = subprocess.run([sys.executable, "-m", "benches.steering", *argv],
                       capture_output=True, text=True, timeout=60, cwd=REPO)  # fmt: skip
    assert r.returncode in (1, 2), (r.returncode, r.stderr)
    assert argv[0] in r.stderr, r.stderr


# -- the controller's per-route costs (benches.controller_costs) ------------------------------


def test_controller_costs_times_the_codec_and_the_dicts() -> None:
    r = subprocess.run([sys.executable, "-m", "benches.controller_costs", "--limit", "30000",
                        "--rounds", "2"],
                       capture_output=True, text=True, timeout=300, cwd=REPO)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("60000 prefixes"), r.stdout
    median = r.stdout.splitlines()[-1]
    figures = dict(re.findall(r"(\w+_ns) (\d+)", median))
    assert set(figures) == {
        "read_apply_request_ns", "batch_from_request_ns", "write_request_ns",
        "dict_insert_str_ns", "dict_overwrite_str_ns", "dict_insert_int_in_order_ns",
        "table_set_ns", "table_diff_ns", "table_write_ns", "table_record_ns",
        "intent_plan_ns", "intent_commit_ns",
    }, median  # fmt: skip
    assert all(0 < int(v) < 100_000 for v in figures.values()), median


@pytest.mark.parametrize(
    "argv", [["--rounds", "0"], ["--rounds", "x"], ["--limit", "0"], ["--data", "/nonexistent"]]
)
def test_controller_costs_refuses_bad_arguments(argv: list[str]) -> None:
    r = subprocess.run([sys.executable, "-m", "benches.controller_costs", *argv],
                       capture_output=True, text=True, timeout=60, cwd=REPO)  # fmt: skip
    assert r.returncode in (1, 2), (r.returncode, r.stderr)
    assert argv[0] in r.stderr, r.stderr
    assert "Traceback" not in r.stderr, r.stderr


@pytest.mark.lab
def test_host_stalls_sees_the_router_cpu_taken_away(bench: Bench) -> None:
    """The probe of the router CPU notices when something else holds that CPU: a
    real-time busy loop takes it for 0.3 s in the middle of a 1.5 s probe."""
    cpu = topology.topology(bench.lab).router_cpu
    # The hog ends itself: a real-time loop would starve a `timeout` beside it.
    spin = "import time\nend = time.monotonic() + 0.3\nwhile time.monotonic() < end: pass"
    hog = subprocess.Popen(["sh", "-c", f"sleep 0.5; exec taskset -c {cpu} chrt -f 10 "
                            f"{sys.executable} -c '{spin}'"])  # fmt: skip
    try:
        st = host_stalls(bench.lab, seconds=1.5)
    finally:
        hog.wait(timeout=10)
    assert "error" not in st, st
    assert st["over_1ms"] >= 1 and st["over_0.2ms"] >= st["over_1ms"], st
    assert 250 <= st["max_ms"] <= 1000, st
    assert st["missing_ms"] >= st["max_ms"], st
    text = describe_stalls(st)
    assert f"longest {st['max_ms']} ms" in text and "1.5 s" in text, text
    assert describe_stalls({"error": "boom"}) == "not measured (boom)"


def test_a_router_start_is_retried_while_its_queue_is_busy_and_no_longer() -> None:
    """afxdp_ref started right after its last run can find the queue still bound (the
    kernel frees an AF_XDP socket late): EBUSY is retried, a bounded number of times; any
    other failure is raised at once."""
    calls: list[int] = []

    def busy_twice() -> None:
        calls.append(1)
        if len(calls) <= 2:
            raise RuntimeError(f"afxdp_ref exited (2): afxdp_ref: socket on --in: {routers.BUSY}")

    routers.retry_while_busy(busy_twice, attempts=5, wait=0)
    assert len(calls) == 3

    def always_busy() -> None:
        calls.append(1)
        raise RuntimeError(routers.BUSY)

    calls.clear()
    with pytest.raises(RuntimeError, match=routers.BUSY):
        routers.retry_while_busy(always_busy, attempts=4, wait=0)
    assert len(calls) == 4

    def broken() -> None:
        calls.append(1)
        raise RuntimeError("afxdp_ref exited (2): no such device")

    calls.clear()
    with pytest.raises(RuntimeError, match="no such device"):
        routers.retry_while_busy(broken, attempts=4, wait=0)
    assert len(calls) == 1


def test_every_router_name_makes_that_router() -> None:
    lab = L.Lab(prefix="cor-n-")  # named only: nothing is built
    made = {name: routers.make_router(name, lab, {"v4": [], "v6": []}) for name in routers.ROUTERS}
    assert {name: r.name for name, r in made.items()} == {name: name for name in routers.ROUTERS}
    realtime = {name for name, r in made.items() if getattr(r, "realtime", False)}
    assert realtime == {"afxdp_ref-rt", "corridor-1rt"}
    meta = {"date": "d", "mode": "quick", "reps": 3, "trial_s": 2.0, "machine": "m",
            "table": "t", "placement": "p"}  # fmt: skip
    header = report.markdown(report.summarize(_rows()), meta).splitlines()
    assert any("| x afxdp_ref | x afxdp_ref-rt | x l3fwd |" in line for line in header)


@pytest.mark.lab
def test_pin_napi_places_the_threads_at_the_priority_asked(bench: Bench) -> None:
    """The "-rt" routers' input NAPI runs SCHED_FIFO one step below their forwarding
    thread; the others' under CFS. Each call makes the port's threads anew."""
    t = topology.topology(bench.lab)

    def policies(placed: list[str]) -> dict[str, str]:
        out = {}
        for d in Path("/proc").iterdir():
            comm = d / "comm"
            with contextlib.suppress(OSError):
                name = comm.read_text().strip()
                if any(p.startswith(name + "->") for p in placed):
                    r = subprocess.run(["chrt", "-p", d.name], capture_output=True, text=True)
                    out[name] = r.stdout
        return out

    try:
        placed = pin_napi(bench.lab, "dut", t.dut_in, t.router_cpu, realtime=True,
                          priority=routers.NAPI_RT_PRIORITY)  # fmt: skip
        assert placed and all(p.endswith(f"->cpu{t.router_cpu} (SCHED_FIFO 5)") for p in placed)
        got = policies(placed)
        assert len(got) == len(placed), (placed, got)
        for out in got.values():
            assert "SCHED_FIFO" in out and "priority: 5" in out, out
        assert routers.NAPI_RT_PRIORITY < routers.RT_PRIORITY
        placed = pin_napi(bench.lab, "dut", t.dut_in, t.router_cpu)
        assert placed and all(p.endswith(f"->cpu{t.router_cpu}") for p in placed), placed
        got = policies(placed)
        assert len(got) == len(placed), (placed, got)
        for out in got.values():
            assert "SCHED_OTHER" in out, out
        with pytest.raises(ValueError, match="priority 0"):
            pin_napi(bench.lab, "dut", t.dut_in, t.router_cpu, realtime=True, priority=0)
    finally:
        bench.lab.exec("dut", ["sh", "-c", f"echo 0 > /sys/class/net/{t.dut_in}/threaded"])
