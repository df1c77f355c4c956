"""The second sink: the dut's third port (dut2), its peer sinkb0 in a namespace of its own,
which the failover takes down."""

from __future__ import annotations

from pathlib import Path

from benches.harness.topology import Topology
from corridor import lab as L

# The second sink: the dut's third port, its peer in a namespace of its own.
SINKB_ROLE = "sinkb"
DUT_B, SINKB_IF = "dut2", "sinkb0"
DUT_B_MAC, SINKB_MAC = "02:c0:00:00:03:01", "02:c0:00:00:03:02"
DUT_B_V4, DUT_B_V6 = "198.18.3.1", "2001:db8:3::1"
SINKB_V4, SINKB_V6 = "198.18.3.2", "2001:db8:3::2"


class SinkB:
    """`{prefix}sinkb` and the veth dut2 (in the dut) <-> sinkb0, built as the lab builds its
    links (198.18.3.0/24, 2001:db8:3::/64, offloads off); removed by down()."""

    def __init__(self, lab: L.Lab) -> None:
        self.lab = lab
        self.ns = lab.prefix + SINKB_ROLE

    def up(self) -> SinkB:
        self.down()
        L.command(["ip", "netns", "add", self.ns])
        try:
            lab = self.lab
            lab.ip(self.ns, "link", "set", "lo", "up")
            for key, value in (
                ("net.ipv6.conf.all.accept_dad", 0),
                ("net.ipv6.conf.default.accept_dad", 0),
                ("net.ipv6.conf.all.accept_ra", 0),
                ("net.ipv6.conf.default.accept_ra", 0),
                # The failover takes sinkb0 down: keep its IPv6 address through it.
                ("net.ipv6.conf.all.keep_addr_on_down", 1),
                ("net.ipv4.conf.all.rp_filter", 0),
                ("net.ipv4.conf.default.rp_filter", 0),
            ):
                lab.sysctl(self.ns, key, value)
            lab.ip("dut", "link", "add", DUT_B, "address", DUT_B_MAC,
                   "numtxqueues", str(lab.queues), "numrxqueues", str(lab.queues), "type", "veth",
                   "peer", "name", SINKB_IF, "address", SINKB_MAC, "netns", self.ns,
                   "numtxqueues", str(lab.queues), "numrxqueues", str(lab.queues))  # fmt: skip
            for ns, dev, a4, a6 in (("dut", DUT_B, DUT_B_V4, DUT_B_V6),
                                    (self.ns, SINKB_IF, SINKB_V4, SINKB_V6)):  # fmt: skip
                lab.exec(ns, ["ethtool", "-K", dev, *L.OFFLOADS])
                lab.ip(ns, "link", "set", dev, "up")
                lab.ip(ns, "addr", "add", f"{a4}/24", "dev", dev)
                lab.ip(ns, "-6", "addr", "add", f"{a6}/64", "dev", dev, "nodad")
        except BaseException:
            self.down()
            raise
        return self

    def link(self, up: bool) -> None:
        self.lab.ip(self.ns, "link", "set", SINKB_IF, "up" if up else "down")

    def down(self) -> None:
        if Path("/var/run/netns", self.ns).exists():
            L.command(["ip", "netns", "del", self.ns], check=False)

    def topology(self) -> Topology:
        """The harness's view of the lab with this namespace as one more role, for its Sink
        and pin_napi."""
        t = Topology.lab(self.lab)
        t.run[SINKB_ROLE] = ["ip", "netns", "exec", self.ns]
        return t
