"""The agent's per-member Prometheus families: clean for promtool, labelled by member name,
bounded at MEMBER_SERIES_MAX members whatever the exchange's size, zeros for members with
nothing counted yet, and the unknown row as `member="_unknown"`."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from corridor.agent.engine_host import Counters
from corridor.agent.metrics import MEMBER_SERIES_MAX, _member_metrics
from corridor.common.fib import MEMBERS_MAX, Member
from corridor.common.metrics import new_registry
from metrics_support import families, promtool_check, samples


def _text(counters: Counters, members: dict[int, Member]) -> str:
    class One(Collector):
        def collect(self) -> list[Metric]:
            return list(_member_metrics(counters, members))

    registry = new_registry()
    registry.register(One())
    return generate_latest(registry).decode()


def _row(rx: int, drops: dict[str, int] | None = None) -> dict:
    return {"rx_packets": rx, "rx_bytes": rx * 100, "tx_packets": 2 * rx, "tx_bytes": rx * 200,
            "drops": drops or {}}  # fmt: skip


def test_member_series_are_clean_named_and_bounded() -> None:
    members = {i: Member(i, "dut0", 0, f"02:00:00:00:{i >> 8:02x}:{i & 255:02x}", f"m{i}")
               for i in range(MEMBER_SERIES_MAX + 44)}  # fmt: skip
    raw = {3: _row(5, {"blackhole": 2, "no_route": 1}), MEMBERS_MAX: _row(7)}
    counters = Counters(engine={"members": raw}, rx_ring_dropped={})  # type: ignore[typeddict-item]
    text = _text(counters, members)
    promtool_check(text)
    kinds = families(text)
    for f in ("rx_packets", "rx_bytes", "tx_packets", "tx_bytes", "dropped_packets"):
        assert kinds[f"corridor_engine_member_{f}_total"] == "counter"
    s = samples(text)
    assert s['corridor_engine_member_rx_packets_total{member="m3"}'] == 5
    assert s['corridor_engine_member_tx_bytes_total{member="m3"}'] == 1000
    assert s['corridor_engine_member_dropped_packets_total{member="m3"}'] == 3
    assert s['corridor_engine_member_rx_packets_total{member="m4"}'] == 0, "zeros before traffic"
    assert s['corridor_engine_member_rx_bytes_total{member="_unknown"}'] == 700
    rx = [k for k in s if k.startswith("corridor_engine_member_rx_packets_total")]
    assert len(rx) == MEMBER_SERIES_MAX + 1, "the cap, and the unknown row"
    assert f'corridor_engine_member_rx_packets_total{{member="m{MEMBER_SERIES_MAX}"}}' not in s
    assert s["corridor_engine_members_not_exported"] == 44


def test_no_members_only_the_unknown_row() -> None:
    counters = Counters(engine={"members": {}}, rx_ring_dropped={})  # type: ignore[typeddict-item]
    s = samples(_text(counters, {}))
    assert s['corridor_engine_member_rx_packets_total{member="_unknown"}'] == 0
    assert s["corridor_engine_members_not_exported"] == 0
