"""corridor._dataplane.IntentRoutes, the operator's routes of a node as the controller keeps
them (domain.IntentState.routes): it must behave as the dict it replaced, under any mix of
operations, and refuse what is not a prefix without changing anything."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corridor._dataplane import IntentRoutes
from corridor.common.fib import RouteKind
from corridor.controller.domain import Intent

PREFIXES = (
    [f"198.18.{i}.0/24" for i in range(8)]
    + ["198.18.0.0/16", "198.18.0.0/15", "0.0.0.0/0", "198.18.0.1/32"]
    + [str(ipaddress.ip_network(f"2001:db8:{i:x}::/48")) for i in range(8)]
    + ["2001:db8::/32", "::/0", "2001:db8::1/128"]
)
INTENTS = [
    Intent(RouteKind.BLACKHOLE),
    Intent(RouteKind.UNREACHABLE),
    Intent(RouteKind.FORWARD, ((("198.18.0.2", "p0", 0), 1),)),
]

ops = st.lists(
    st.one_of(
        st.tuples(st.just("set"), st.sampled_from(PREFIXES), st.integers(0, 2)),
        st.tuples(st.just("pop"), st.sampled_from(PREFIXES), st.just(0)),
        st.tuples(st.just("del"), st.sampled_from(PREFIXES), st.just(0)),
        st.tuples(
            st.just("many"),
            st.lists(st.sampled_from(PREFIXES), unique=True, max_size=10),
            st.integers(0, 2),
        ),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_it_holds_what_a_dict_holds_whatever_the_operations(operations) -> None:
    routes, model = IntentRoutes(), {}
    for op, prefix, i in operations:
        if op == "set":
            routes[prefix] = model[prefix] = INTENTS[i]
        elif op == "pop":
            assert routes.pop(prefix, None) == model.pop(prefix, None)
        elif op == "del":
            if prefix in model:
                del routes[prefix]
                del model[prefix]
            else:
                with pytest.raises(KeyError):
                    del routes[prefix]
        else:  # a batch: prefix i of it gets intent (i + offset) % 3
            index = [(n + i) % 3 for n in range(len(prefix))]
            assert routes.get_many(prefix) == [model.get(p) for p in prefix]
            assert routes.any_in(prefix) == any(p in model for p in prefix)
            routes.set_many(prefix, index, INTENTS)
            model.update({p: INTENTS[n] for p, n in zip(prefix, index, strict=True)})
        assert len(routes) == len(model)
    assert routes == model and routes == routes.copy()
    assert sorted(routes.keys()) == sorted(model) and sorted(routes) == sorted(model)
    assert dict(routes.items()) == model
    assert routes.v6 == sum(1 for p in model if ":" in p)
    for p in PREFIXES:
        assert (p in routes) == (p in model)
        assert routes.get(p) == model.get(p)


def test_it_lists_in_the_stores_order() -> None:
    """IPv4 first, each family by address, then length (as the store's sort keys)."""
    routes = IntentRoutes()
    for p in reversed(PREFIXES):
        routes[p] = INTENTS[0]
    four = [p for p in routes.keys() if ":" not in p]
    assert routes.keys()[: len(four)] == four
    assert four[:4] == ["0.0.0.0/0", "198.18.0.0/15", "198.18.0.0/16", "198.18.0.0/24"]
    assert [p for p, _ in routes.items()] == routes.keys()


def test_a_copy_is_its_own() -> None:
    routes = IntentRoutes()
    routes["198.18.0.0/24"] = INTENTS[0]
    copy = routes.copy()
    routes["198.18.1.0/24"] = INTENTS[1]
    del routes["198.18.0.0/24"]
    assert dict(copy.items()) == {"198.18.0.0/24": INTENTS[0]}
    items = routes.items()  # taken now: later changes are not in it
    routes["198.18.2.0/24"] = INTENTS[2]
    assert list(items) == [("198.18.1.0/24", INTENTS[1])]


@pytest.mark.parametrize("bad", ["198.18.0.0/33", "not a prefix", "", "2001:db8::/129", 7, None])
def test_what_is_not_a_prefix_is_refused_or_absent(bad) -> None:
    routes = IntentRoutes()
    routes["198.18.0.0/24"] = INTENTS[0]
    assert bad not in routes and routes.get(bad) is None and routes.get(bad, 5) == 5
    assert routes.pop(bad, "none") == "none"
    with pytest.raises(KeyError):
        routes[bad]
    with pytest.raises(KeyError):
        routes.pop(bad)
    with pytest.raises(ValueError, match="is not a prefix"):
        routes[bad] = INTENTS[1]
    with pytest.raises(ValueError, match="is not a prefix"):
        routes.get_many(["198.18.0.0/24", bad])
    # A batch with one bad prefix sets none of them.
    with pytest.raises(ValueError, match="is not a prefix"):
        routes.set_many(["198.18.1.0/24", bad], [0, 0], [INTENTS[1]])
    assert routes == {"198.18.0.0/24": INTENTS[0]}


def test_a_batch_whose_index_does_not_fit_is_refused() -> None:
    routes = IntentRoutes()
    with pytest.raises(ValueError, match="index"):
        routes.set_many(["198.18.0.0/24"], [0, 0], INTENTS)
    with pytest.raises(ValueError, match="index"):
        routes.set_many(["198.18.0.0/24"], [3], INTENTS)
    assert len(routes) == 0


def test_it_equals_only_the_same_routes() -> None:
    a, b = IntentRoutes(), IntentRoutes()
    a["198.18.0.0/24"] = b["198.18.0.0/24"] = INTENTS[0]
    assert a == b and a == {"198.18.0.0/24": INTENTS[0]}
    b["198.18.0.0/24"] = INTENTS[1]
    assert a != b and a != {"198.18.0.0/24": INTENTS[1]}
    assert a != {"198.18.1.0/24": INTENTS[0]} and a != {} and a != [("198.18.0.0/24", 0)]
