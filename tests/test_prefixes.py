"""corridor._dataplane.Prefixes, an Apply's prefixes as packed keys (what the Apply reader
gives the controller): to Python it must read as the list of canonical texts it stands for,
its sort keys must be the store's, its parts the store's log rows, and the route tables
must take it as they take the texts; what is not a prefix is refused by name."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corridor._dataplane import IntentRoutes, Prefixes, RouteTable
from corridor.common.addresses import prefix_text
from corridor.controller.domain import prefix_sort_key


def canonical(address: int, length: int, family: int) -> str:
    """The controller's canonical text (inet_ntop's) of the prefix of `address`, an IPv4
    one when `family` is 4."""
    kind = ipaddress.IPv4Network if family == 4 else ipaddress.IPv6Network
    network = kind((address, length), strict=False)
    return prefix_text(network.network_address.packed, length)


v4 = st.builds(canonical, st.integers(0, 2**32 - 1), st.integers(0, 32), st.just(4))
v6 = st.builds(canonical, st.integers(0, 2**128 - 1), st.integers(0, 128), st.just(16))
texts = st.lists(st.one_of(v4, v6), max_size=40)


@settings(max_examples=200, deadline=None)
@given(texts, st.data())
def test_it_reads_as_the_list_of_its_texts(prefixes: list[str], data) -> None:
    packed = Prefixes(prefixes)
    assert len(packed) == len(prefixes)
    assert bool(packed) == bool(prefixes)
    assert list(packed) == packed.texts() == prefixes
    assert [packed[i] for i in range(-len(prefixes), len(prefixes))] == prefixes + prefixes
    start, stop = data.draw(st.integers(-50, 50)), data.draw(st.integers(-50, 50))
    step = data.draw(st.integers(-3, 3).filter(bool))
    assert list(packed[start:stop:step]) == prefixes[start:stop:step]
    assert packed.v6 == sum(":" in p for p in prefixes)
    assert packed.sort_keys() == [prefix_sort_key(p) for p in prefixes]
    with pytest.raises(IndexError):
        packed[len(prefixes)]
    with pytest.raises(IndexError):
        packed[-len(prefixes) - 1]


@settings(max_examples=200, deadline=None)
@given(texts.map(lambda t: list(dict.fromkeys(t))), st.data())
def test_parts_are_the_store_rows_of_a_batch(prefixes: list[str], data) -> None:
    """A part per intent and key size, the keys end to end in the batch's order, parts in
    the order their first prefix comes: what the store's log wrote from per-route keys."""
    index = data.draw(st.lists(st.integers(0, 3), min_size=len(prefixes), max_size=len(prefixes)))
    want: dict[tuple[int, int], list[bytes]] = {}
    for i, p in zip(index, prefixes, strict=True):
        key = prefix_sort_key(p)
        want.setdefault((i, len(key)), []).append(key)
    got = Prefixes(prefixes).parts(index)
    assert got == [(i, size, b"".join(keys)) for (i, size), keys in want.items()]


@settings(max_examples=100, deadline=None)
@given(texts.map(lambda t: list(dict.fromkeys(t))), st.integers(0, 3))
def test_the_route_tables_take_it_as_they_take_its_texts(prefixes: list[str], g: int) -> None:
    by_text, by_keys = RouteTable(), RouteTable()
    assert by_text.set_uniform(prefixes, 1, g) == by_keys.set_uniform(Prefixes(prefixes), 1, g)
    index = [i % 2 for i in range(len(prefixes))]
    made = [(1, g + 1), None]
    assert by_text.set_indexed(prefixes, index, made) == by_keys.set_indexed(
        Prefixes(prefixes), index, made
    )
    assert by_text == by_keys
    routes, intents = IntentRoutes(), ["a", "b"]
    routes.set_many(Prefixes(prefixes), index, intents)
    assert routes.get_many(prefixes) == routes.get_many(Prefixes(prefixes))
    assert routes.get_many(prefixes) == [intents[i] for i in index]
    assert routes.any_in(Prefixes(prefixes)) == bool(prefixes)
    assert not IntentRoutes().any_in(Prefixes(prefixes))


@pytest.mark.parametrize(
    "bad",
    ["198.18.0.0", "198.18.0.0/33", "2001:db8::/129", "198.18.0.256/24", "", "/", 7, None, b"1"],
)
def test_what_is_not_a_prefix_is_refused_by_name(bad) -> None:
    with pytest.raises(ValueError, match=f"{bad!r} is not a prefix"):
        Prefixes(["198.18.0.0/15", bad])
    table = RouteTable()
    with pytest.raises(ValueError, match="is not a prefix"):
        table.set_uniform(["198.18.0.0/15", bad], 1, 0)
    assert len(table) == 0  # read whole before anything is set
    with pytest.raises(ValueError, match="index: one intent per prefix"):
        Prefixes(["198.18.0.0/15"]).parts([0, 1])
    with pytest.raises(TypeError):
        Prefixes(["198.18.0.0/15"])["0"]
    with pytest.raises(TypeError):
        Prefixes(7)
