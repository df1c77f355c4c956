"""`make demo`: Corridor forwarding real traffic with the real Internet tables loaded.

It builds the lab (network namespaces cor-gen → cor-dut → cor-sink), loads the full IPv4 and
IPv6 tables into the FIB, starts the engine on the router's two ports, sends bounded bursts
of IPv4 and IPv6 frames from the generator toward transit destinations behind the sink,
and prints what went in, what came out and what the engine counted. The lab is removed at
the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import gzip
import time
from pathlib import Path

from corridor import lab as L
from corridor import traffic
from corridor._dataplane import Batch, Engine, Fib

TABLES = {
    "IPv4": "ipv4-routeviews-2024-04-06.txt.gz",
    "IPv6": "ipv6-ris-2022-05-27.txt.gz",
}
FRAMES_PER_FAMILY = 100_000


def data_dir(given: str | None) -> Path:
    if given:
        return Path(given)
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent.parent / "shared" / "data"
        if (candidate / TABLES["IPv4"]).exists():
            return candidate
    raise SystemExit("demo: ../shared/data with the routing tables was not found (use --data DIR)")


def load_fib(data: Path) -> tuple[Fib, list[str]]:
    fib = Fib()
    lines = []
    setup = Batch()
    # Port 1 (dut1) toward the sink: every route of the demo leaves there.
    setup.set_adjacency(1, 1, 0, L.DUT_OUT_MAC, L.SINK_MAC)
    setup.set_group(1, [(1, 1)])
    fib.apply(setup)
    for family, name in TABLES.items():
        text = gzip.decompress((data / name).read_bytes()).decode()
        batch = Batch()
        n = batch.add_routes_text(text, 1)
        started = time.perf_counter()
        fib.apply(batch)
        took = time.perf_counter() - started
        lines.append(f"{family}: {n:,} routes from {name} in {took:.2f} s")
    # The transit test prefixes behind the sink (the Internet tables carry no test range).
    test = Batch()
    test.add_route(L.TRANSIT4, 1)
    test.add_route(L.TRANSIT6, 1)
    fib.apply(test)
    return fib, lines


def run(given: str | None) -> int:
    data = data_dir(given)
    print("Corridor demo: the engine in the lab, forwarding with the full Internet tables\n")
    fib, loaded = load_fib(data)
    for line in loaded:
        print(f"  FIB  {line}")
    stats = fib.stats()
    print(
        f"  FIB  {stats['v4_routes']:,} IPv4 + {stats['v6_routes']:,} IPv6 routes, "
        f"{(stats['v4_bytes'] + stats['v6_bytes']) / 2**20:.0f} MiB of entries"
    )

    lab = L.Lab()
    lab.up()
    engine = None
    try:
        engine = Engine(
            fib,
            ports=[
                {"name": L.DUT_IN, "addresses": {0: [L.DUT_IN_V4, L.DUT_IN_V6]}},
                {"name": L.DUT_OUT, "addresses": {0: [L.DUT_OUT_V4, L.DUT_OUT_V6]}},
            ],
            workers=1,
            netns=lab.ns("dut"),
        )
        engine.start()
        for p in engine.ports():
            print(
                f"  port {p['name']}: {p['mac']}, {p['mode']} AF_XDP, {p['xdp_mode']} XDP, "
                f"MTU {p['mtu']}, link {'up' if p['link_up'] else 'down'}"
            )
        print()
        for family, dst, src in ((4, "198.19.1.1", L.GEN_V4), (6, "2001:db8:100::1", L.GEN_V6)):
            spec = traffic.FrameSpec(
                family=family, src=src, dst=dst, src_mac=L.GEN_MAC, dst_mac=L.DUT_IN_MAC,
                vary_addresses=True,
            )  # fmt: skip
            before = lab.link_stats(lab.ns("sink"), L.SINK_IF)["rx_packets"]
            started = time.monotonic()
            sent = traffic.flood(
                lab.ns("gen"), L.GEN_IF, spec, count=FRAMES_PER_FAMILY, processes=2,
                sizes=(60 if family == 4 else 66, 512, 1514), flows=256, duration=30.0,
            )  # fmt: skip
            took = time.monotonic() - started
            time.sleep(0.3)  # the last frames in flight
            arrived = lab.link_stats(lab.ns("sink"), L.SINK_IF)["rx_packets"] - before
            print(
                f"  IPv{family}: sent {sent:,} frames (60-1514 B, 256 flows) in {took:.1f} s; "
                f"{arrived:,} arrived at the sink ({arrived / max(sent, 1):.1%})"
            )
        c = engine.counters()
        print()
        for port in c["ports"]:
            print(
                f"  {port['name']:<6} rx {port['rx_packets']:>9,} pkts {port['rx_bytes']:>12,} B"
                f"   tx {port['tx_packets']:>9,} pkts {port['tx_bytes']:>12,} B"
            )
        drops = {k: v for k, v in c["drops"].items() if v}
        print(f"  drops: {drops or 'none'}; ICMP sent: {c['icmp'].get('icmp_sent', 0)}")
        print(f"  steering: {c['steering']}")
        ring = {}
        for sock in c["xsk"]:
            for key, value in sock["statistics"].items():
                ring[key] = ring.get(key, 0) + value
        print(
            f"  AF_XDP rings: rx_dropped {ring.get('rx_dropped', 0):,} (frames the worker was too "
            f"busy to take), tx_ring_full {c['tx_ring_full']:,}"
        )
        acct = c["accounting"][0]
        balanced = acct["total"] == sum(
            acct[k] for k in ("free", "fill", "rx", "tx", "completion", "held")
        )
        print(f"  frame accounting of worker 0: {acct} ({'balanced' if balanced else 'OFF'})")
    finally:
        if engine is not None:
            engine.stop()
        lab.down()
    print("\n  lab removed; done")
    return 0
