"""The engine inside the agent: corridor._dataplane.Engine over the agent's FIB, started and
stopped in the default executor (both block for up to seconds, with the GIL released), and
read for ports and counters. Only this module and fib_adapter import the extension.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING, NamedTuple, cast

from corridor.agent.config import AgentConfig, PortConfig
from corridor.agent.domain import RefusedMac
from corridor.common.edge import EdgePolicy

if TYPE_CHECKING:
    from corridor._dataplane import (
        EdgeDict,
        EngineCounters,
        Fib,
        IcmpKeywords,
        IcmpRateKeywords,
        PortDict,
        PortStatus,
        SampleStats,
        UrpfDict,
    )
    from corridor.agent.config import IcmpLimits


class EngineStartError(RuntimeError):
    """The engine did not start; the message says which field or system call and why."""


class Counters(NamedTuple):
    engine: EngineCounters
    # Per worker: frames the kernel steered to it but could not place in its AF_XDP sockets'
    # rx rings (the worker was too busy), summed from their XDP_STATISTICS, so that operators
    # see those losses beside the drop reasons.
    rx_ring_dropped: dict[int, int]
    # What became of the destinations of glean drops: queued, deduplicated, rate_limited,
    # full (summed over workers).
    glean: dict[str, int] | None = None


def engine_ports(ports: tuple[PortConfig, ...]) -> list[PortDict]:
    """The agent's ports as the engine takes them: one sub-interface for the untagged port
    (VLAN 0) and one per VLAN, each with its router addresses (the source of ICMP errors)
    and their prefix lengths (the attached subnets, whose directed broadcasts the engine
    knows)."""
    out: list[PortDict] = []
    for p in ports:
        addresses = {0: [str(a) for a in p.addresses]}
        for v in p.vlans:
            addresses[v.id] = [str(a) for a in v.addresses]
        out.append(
            {
                "name": p.name,
                "queues": p.queues,
                "mtu": p.mtu,
                "addresses": addresses,
                "directed_broadcast": p.directed_broadcast,
                "urpf": {vlan: _urpf(policy) for vlan, policy in p.policies().items()},
                "edge": {
                    vlan: _edge(policy)
                    for vlan, policy in p.policies().items()
                    if policy.ethertype_filter or policy.mac_filter or policy.port_security
                },
            }
        )
    return out


def _urpf(policy: EdgePolicy) -> UrpfDict:
    return {"mode": policy.urpf.value, "allow_default": policy.urpf_allow_default}


def _edge(policy: EdgePolicy, member_macs: tuple[str, ...] = ()) -> EdgeDict:
    ethertypes, mac_filter, macs = policy.xdp_filter(member_macs)
    return {"ethertype_filter": ethertypes, "mac_filter": mac_filter, "allowed_macs": list(macs)}


class EngineHost:
    def __init__(self, config: AgentConfig, fib: Fib) -> None:
        from corridor._dataplane import Engine

        if config.netns is not None and not os.path.exists(f"/run/netns/{config.netns}"):
            raise EngineStartError(
                f"netns: no network namespace {config.netns!r} (/run/netns/{config.netns} is"
                " missing); create it with `ip netns add`, or remove netns from the config"
            )
        # Checked by the config's reader: each key one of the engine's ICMP keywords.
        icmp = cast("IcmpKeywords", dict(config.icmp.keywords))
        try:
            self.engine = Engine(
                fib, ports=engine_ports(config.ports), workers=config.workers,
                netns=config.netns, realtime_priority=config.realtime_priority, **icmp,
            )  # fmt: skip
        except ValueError as e:
            raise EngineStartError(f"engine configuration: {e}") from None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, self.engine.start)
        except (RuntimeError, ValueError, OSError) as e:
            raise EngineStartError(f"engine: {e}") from None

    async def stop(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.engine.stop)

    def set_icmp_limits(self, limits: IcmpLimits) -> None:
        """The running workers take `limits` within milliseconds, each bucket keeping its
        tokens up to its new burst; `sources` (the per-source table's size) is fixed at
        start and left out. Keys not given go back to the engine's defaults."""
        rates = {k: v for k, v in limits.keywords if k != "icmp_sources"}
        self.engine.set_icmp_limits(**cast("IcmpRateKeywords", rates))

    def set_policy(
        self, port: str, vlan: int, policy: EdgePolicy, member_macs: tuple[str, ...] = ()
    ) -> None:
        """Blocking for a moment: the sub-interface's policy in force for the next frame (the
        XDP filters first: a frame the new policy refuses is refused from then on).
        `member_macs`: the MACs of its members, the allowed ones under port security."""
        self.engine.set_edge(port, vlan, **_edge(policy, member_macs))
        self.engine.set_urpf(port, vlan, policy.urpf.value, allow_default=policy.urpf_allow_default)

    def refused_macs(self) -> list[RefusedMac]:
        """Blocking for a moment (GIL released)."""
        now = time.time()
        return [
            RefusedMac(r["port"], r["vlan"], r["mac"], r["packets"], now - r["age_seconds"])
            for r in self.engine.refused_macs()
        ]

    def ports(self) -> list[PortStatus]:
        """Blocking for a moment (GIL released): from the executor, or a scrape thread."""
        return self.engine.ports()

    def sample_stats(self) -> list[SampleStats]:
        """Per port, the sFlow samplers' rate, pool, samples and lost samples."""
        return self.engine.sample_stats()

    def blackhole_dropped(self, slot: int) -> int:
        return self.engine.blackhole_dropped(slot)

    def drain_glean(self, most: int) -> list[str]:
        """The destinations the workers queued for resolution (see glean.py). Blocking for
        a moment (GIL released): from the executor."""
        return self.engine.drain_glean(most)

    def counters(self) -> Counters:
        """Blocking for a moment (GIL released): from the executor, or a scrape thread."""
        raw = self.engine.counters()
        glean = self.engine.glean_stats()
        lost: dict[int, int] = {w["worker"]: 0 for w in raw["workers"]}
        for sock in raw["xsk"]:
            stats = sock["statistics"]
            lost[sock["worker"]] = (
                lost.get(sock["worker"], 0) + stats["rx_dropped"] + stats["rx_ring_full"]
            )
        return Counters(raw, lost, glean)
