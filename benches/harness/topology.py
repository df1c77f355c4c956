"""Where the generator, the router (dut) and the sink run: the lab's three namespaces on this
machine, or three hosts reached by a command prefix (the test VMs of vagrant/)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator

from corridor import lab as L


class Topology:
    """Where the generator, the router (dut) and the sink run, and their ports. Two kinds:
    the lab (three namespaces of this machine, `Topology.lab`) and three hosts (the test
    VMs, `Topology.hosts`: this machine is the router, generator and sink are reached by
    a command prefix, ssh by default). Both use the lab's addressing plan (the Vagrantfile
    gives the VMs the same addresses), so everything else in the benchmark is the same
    code on both."""

    def __init__(self, kind: str, run: dict[str, list[str]], netns: str | None) -> None:
        self.kind, self.run, self.netns = kind, run, netns
        self.gen_if = self.dut_in = self.dut_out = self.sink_if = ""
        self.gen_mac = self.dut_in_mac = self.dut_out_mac = self.sink_mac = ""
        self.gen_cpu, self.router_cpu, self.sink_cpu = 0, 1, 0
        # With two workers, the second one's CPU (the generator's, in the 2-CPU lab).
        self.second_cpu = 0

    @classmethod
    def lab(cls, lab: L.Lab) -> Topology:
        t = cls("lab", {r: ["ip", "netns", "exec", lab.ns(r)] for r in L.ROLES}, lab.ns("dut"))
        t.gen_if, t.dut_in, t.dut_out, t.sink_if = L.GEN_IF, L.DUT_IN, L.DUT_OUT, L.SINK_IF
        t.gen_mac, t.dut_in_mac, t.dut_out_mac, t.sink_mac = (
            L.GEN_MAC, L.DUT_IN_MAC, L.DUT_OUT_MAC, L.SINK_MAC)  # fmt: skip
        return t

    @classmethod
    def hosts(cls, gen: str, sink: str, remote: str) -> Topology:
        """`gen` and `sink` are host names put into the `remote` template ({host}); the
        ports are found by the lab plan's addresses on each host."""
        run = {"gen": [*remote.format(host=gen).split()], "dut": [],
               "sink": [*remote.format(host=sink).split()]}  # fmt: skip
        t = cls("hosts", run, None)
        t.gen_if, t.gen_mac = t.port_with("gen", L.GEN_V4)
        t.dut_in, t.dut_in_mac = t.port_with("dut", L.DUT_IN_V4)
        t.dut_out, t.dut_out_mac = t.port_with("dut", L.DUT_OUT_V4)
        t.sink_if, t.sink_mac = t.port_with("sink", L.SINK_V4)
        cpus = sorted(os.sched_getaffinity(0))
        t.router_cpu = cpus[1] if len(cpus) > 1 else cpus[0]
        t.second_cpu = cpus[2] if len(cpus) > 2 else cpus[0]
        return t

    def argv(self, role: str, argv: list[str]) -> list[str]:
        return [*self.run[role], *argv]

    def exec(self, role: str, argv: list[str], *, check: bool = True, timeout: float = 60,
             input: str | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
        proc = subprocess.run(self.argv(role, argv), capture_output=True, text=True,
                              timeout=timeout, input=input)  # fmt: skip
        if check and proc.returncode != 0:
            raise RuntimeError(f"{role}: {' '.join(argv)}: {proc.stderr.strip()}")
        return proc

    def ip(self, role: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.exec(role, ["ip", *args], check=check)

    def kernel_forwarding(self, on: bool) -> None:
        for key in ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"):
            self.exec("dut", ["sysctl", "-q", "-w", f"{key}={int(on)}"])

    def port_with(self, role: str, address: str) -> tuple[str, str]:
        """(device, MAC) of the port of `role` that holds `address`."""
        out = self.exec(role, ["ip", "-j", "addr", "show"], timeout=30).stdout
        for link in json.loads(out):
            if any(a.get("local") == address for a in link.get("addr_info", [])):
                return link["ifname"], link["address"]
        raise SystemExit(f"{role}: no port holds {address} (the lab's addressing plan; "
                         "vagrant/provision.sh sets it on the VMs)")  # fmt: skip

    def set_queues(self, n: int) -> None:
        """The router's ports with `n` queues, so that `n` workers (or one reference on
        queue 0) see all traffic. A veth refuses fewer rx queues than its peer has tx
        queues, and the lab's generator sends on queue 0 anyway, so the lab changes only
        upward; a VM's virtio NIC spreads flows over its queues and is set exactly."""
        for dev in (self.dut_in, self.dut_out):
            if self.kind == "lab" and n == 1:
                continue
            now = self.exec("dut", ["ethtool", "-l", dev], check=False).stdout
            current = now.split("Current hardware settings:")[-1]
            counts = {k.strip(): v.strip() for k, _, v in
                      (line.partition(":") for line in current.splitlines()) if v}  # fmt: skip
            if str(n) in (counts.get("Combined"), counts.get("RX")):
                continue
            errors = []
            for how in (["combined", str(n)], ["rx", str(n), "tx", str(n)]):
                r = self.exec("dut", ["ethtool", "-L", dev, *how], check=False)
                if r.returncode == 0:
                    break
                errors.append(r.stderr.strip())
            else:
                raise RuntimeError(f"{dev}: cannot have {n} queues: {'; '.join(errors)}")


def topology(where: L.Lab | Topology) -> Topology:
    return where if isinstance(where, Topology) else Topology.lab(where)


@contextlib.contextmanager
def bench_lab() -> Iterator[L.Lab]:
    # CORRIDOR_BENCH_NS: the namespaces' prefix (default cor-b), so runs side by side stay apart.
    lab = L.Lab(prefix=f"{os.environ.get('CORRIDOR_BENCH_NS', 'cor-b')}{os.getpid()}-", queues=2)
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


def parse_hosts(hosts: str, remote: str) -> dict[str, str]:
    """`--hosts gen=HOST,sink=HOST` as a dict ({} for the lab); SystemExit when malformed."""
    if not hosts:
        return {}
    try:
        named = dict(item.split("=", 1) for item in hosts.split(","))
    except ValueError:
        named = {}
    if set(named) != {"gen", "sink"} or not all(named.values()):
        raise SystemExit(f"--hosts {hosts!r}: expected gen=HOST,sink=HOST")
    if "{host}" not in remote:
        raise SystemExit(f"--remote {remote!r}: must contain {{host}}")
    return named


@contextlib.contextmanager
def bench_topology(hosts: dict[str, str], remote: str) -> Iterator[Topology]:
    """The lab (built here, removed at the end) or, with `hosts`, the three hosts."""
    if not hosts:
        with bench_lab() as lab:
            yield Topology.lab(lab)
        return
    yield Topology.hosts(hosts["gen"], hosts["sink"], remote)
