"""Real FRR feeds the FPM listener: zebra (`-M dplane_fpm_nl`) and bgpd in one `cor-`
namespace, BIRD announcing a slice of the real Internet tables in another. Every announced
route arrives with the right next hops, in both FPM forms; withdrawals arrive as deletes; and
zebra reconnects and replays everything to a restarted listener."""

from __future__ import annotations

import time
from collections.abc import Iterator
from ipaddress import IPv4Address, ip_address
from pathlib import Path

import pytest
from benches.harness.frr import RTBH_PREFIX, VIA_V6_PREFIX, FrrLab, missing_tools, table_slice

from corridor.fpm import NextHop, Operation, RouteType, RouteUpdate, start_listener
from fpm_support import RecordingSink, canon, wait_until

pytestmark = [pytest.mark.lab, pytest.mark.timeout(900)]

BGP = 186  # RTPROT_BGP
V4_COUNT, V6_COUNT = 50_000, 20_000
FRR_IPV4_LL = IPv4Address("169.254.0.1")  # FRR's stand-in gateway for an IPv4 route via IPv6


@pytest.fixture(scope="module")
def tables(data_dir: Path) -> tuple[list, list]:  # type: ignore[type-arg]
    v4 = [canon(p) for p in table_slice(data_dir / "ipv4-routeviews-2024-04-06.txt.gz", V4_COUNT)]
    v6 = [canon(p) for p in table_slice(data_dir / "ipv6-ris-2022-05-27.txt.gz", V6_COUNT)]
    assert len(v4) >= V4_COUNT and len(v6) >= V6_COUNT
    return v4, v6


@pytest.fixture
def tools() -> Iterator[None]:
    missing = missing_tools()
    if missing:
        pytest.fail(f"FRR and BIRD are needed (apt-get install frr bird2); missing: {missing}")
    yield


def bgp_routes(sink: RecordingSink) -> dict:  # type: ignore[type-arg]
    return {prefix: r for (_, prefix), r in sink.routes.items() if r.protocol == BGP}


@pytest.mark.parametrize("nexthop_groups", [True, False], ids=["nexthop-groups", "inline"])
async def test_frr_feeds_every_route_with_its_next_hops(
    tables: tuple[list, list],  # type: ignore[type-arg]
    tools: None,
    nexthop_groups: bool,
) -> None:
    routes4, routes6 = tables
    lab = FrrLab(routes4, routes6, nexthop_groups)
    listener = None
    timings: dict[str, float] = {}
    try:
        lab.create_network()
        sink = RecordingSink()
        listener, port = await start_listener("127.0.0.1", 0, sink, netns=lab.router)
        started = time.monotonic()
        lab.start(port)
        ifindex = lab.ifindex()
        peer_ll = lab.peer_link_local()
        expected_total = len(routes4) + len(routes6) + 2  # + the RTBH and RFC 8950 prefixes

        await wait_until(
            lambda: len(bgp_routes(sink)) >= expected_total,
            300,
            f"{expected_total} BGP routes over FPM (have {len(bgp_routes(sink))}; "
            f"bgpd: {lab.vtysh('show bgp summary')!r})",
        )
        timings["all routes"] = time.monotonic() - started

        set4, set6 = set(routes4), set(routes6)

        def check(received: dict) -> None:  # type: ignore[type-arg]
            assert set(received) == {
                *routes4,
                *routes6,
                canon(RTBH_PREFIX),
                canon(VIA_V6_PREFIX),
            }
            v4_hop = (NextHop(ip_address("198.18.200.2"), ifindex, 1),)
            v6_hop = (NextHop(peer_ll, ifindex, 1),)
            wrong = [
                r
                for r in received.values()
                if r.op is not Operation.ADD
                or (r.prefix in set4 and (r.type, r.next_hops) != (RouteType.UNICAST, v4_hop))
                or (r.prefix in set6 and (r.type, r.next_hops) != (RouteType.UNICAST, v6_hop))
                or (r.type is RouteType.UNICAST and (r.nexthop_id is not None) != nexthop_groups)
            ]
            assert wrong[:5] == []
            rtbh = received[canon(RTBH_PREFIX)]
            assert (rtbh.type, rtbh.next_hops) == (RouteType.BLACKHOLE, ())
            via = received[canon(VIA_V6_PREFIX)]
            # With next-hop objects the IPv6 next hop arrives as it is. Inline, FRR 8.4 writes
            # an IPv4 route via IPv6 as 169.254.0.1 on-link (its BGP-unnumbered convention,
            # the IPv6 neighbour not named), so only the object form carries RFC 8950 whole.
            gateway = peer_ll if nexthop_groups else FRR_IPV4_LL
            assert via.type is RouteType.UNICAST
            assert via.next_hops == (NextHop(gateway, ifindex, 1),)

        check(bgp_routes(sink))
        assert listener.counters.errors == {}
        assert sink.ups == 1

        # the listener restarts: zebra reconnects on its own and replays everything
        await listener.stop()
        assert sink.downs == ["listener stopped"]
        replay = RecordingSink()
        restarted = time.monotonic()
        listener, _ = await start_listener("127.0.0.1", port, replay, netns=lab.router)
        await wait_until(
            lambda: len(bgp_routes(replay)) >= expected_total, 120, "zebra's replay after restart"
        )
        timings["reconnect and replay"] = time.monotonic() - restarted
        check(bgp_routes(replay))

        # BIRD withdraws every IPv6 route: each arrives as a delete
        withdrawn = time.monotonic()
        lab.birdc("disable", "s6")
        await wait_until(
            lambda: not any(r.family == 6 for r in bgp_routes(replay).values()),
            120,
            "the IPv6 withdrawals",
        )
        timings["withdraw IPv6"] = time.monotonic() - withdrawn
        deleted = {r.prefix for r in replay.deletes if r.protocol == BGP}
        assert deleted == set(routes6)
        assert all(isinstance(r, RouteUpdate) and r.op is Operation.DELETE for r in replay.deletes)
        assert len(bgp_routes(replay)) == len(routes4) + 2
        assert listener.counters.errors == {}
        print(
            f"\nfpm lab ({'nexthop-groups' if nexthop_groups else 'inline'}, "
            f"{len(routes4)} IPv4 + {len(routes6)} IPv6): "
            + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
        )
    finally:
        if listener is not None:
            await listener.stop()
        lab.stop()
