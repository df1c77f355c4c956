"""The base-rate search of benches.change.search: strict zero loss first, then, where the
machine loses frames at every rate, the partial-drop rate, never a frame at the wrong
sink. The search logic alone, on a model router whose loss is a function of the rate
(the traffic itself is exercised by running the benchmark)."""

from __future__ import annotations

import dataclasses

import pytest
from benches.change import search


@dataclasses.dataclass
class _Trial:
    sent: int
    lost: int
    at_b: int
    sent_pps: float
    fwd_pps: float


class _Router:
    """Forwards up to `capacity` pps; below it loses `floor` of what it is sent (host
    stalls) and puts `at_b` frames at the wrong sink per trial."""

    def __init__(self, capacity: float, floor: float, at_b: int = 0) -> None:
        self.capacity, self.floor, self.at_b = capacity, floor, at_b
        self.asked: list[float] = []

    def trial(self, rate: float, seconds: float) -> _Trial:
        self.asked.append(rate)
        offered = rate or 4e6  # 0: the generator flat out
        sent = int(offered * seconds)
        fwd = min(offered, self.capacity) * (1 - self.floor)
        lost = sent - int(fwd * seconds)
        return _Trial(sent, lost, self.at_b, offered, fwd)


def test_a_loss_free_rate_is_found_and_named() -> None:
    r = _Router(capacity=0.3e6, floor=0.0)
    asked, measured, criterion = search.base_rate(r, search.QUICK, b_is_wrong=True)
    assert criterion == "zero loss"
    assert 0 < asked <= 0.3e6 and measured == asked


def test_stalls_at_every_rate_fall_back_to_the_partial_drop_rate() -> None:
    r = _Router(capacity=0.3e6, floor=0.001)
    asked, _, criterion = search.base_rate(r, search.QUICK, b_is_wrong=True)
    assert "no zero-loss rate found" in criterion and "0.5%" in criterion
    assert 0 < asked <= 0.3e6
    assert len(r.asked) > 1 + search.QUICK.steps, "the second search ran its own trials"


def test_loss_above_the_partial_drop_criterion_everywhere_finds_no_rate() -> None:
    with pytest.raises(search.NoRate, match=r"loss <= 0\.5%"):
        search.base_rate(_Router(capacity=0.3e6, floor=0.01), search.QUICK, b_is_wrong=True)


def test_a_frame_at_the_wrong_sink_is_never_tolerated() -> None:
    with pytest.raises(search.NoRate):
        search.base_rate(_Router(capacity=0.3e6, floor=0.0, at_b=1), search.QUICK, b_is_wrong=True)
    # Failover trials send to both sinks on purpose: there sink B is right.
    asked, _, criterion = search.base_rate(_Router(capacity=0.3e6, floor=0.0, at_b=1), search.QUICK,
                                      b_is_wrong=False)  # fmt: skip
    assert criterion == "zero loss" and asked > 0
