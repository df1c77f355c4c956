"""The controller's bulk codec (dataplane/intent, corridor._dataplane) against the generated
protobuf code: ApplyRequests made by the generated code read the same as the generated code
reads them, every batch the Python reader refuses is refused (left to it to name the
faults), bytes that are not an ApplyRequest raise; WriteRequests written from FIB
operations parse back to what the generated code would have built."""

from __future__ import annotations

import socket

import pytest

from corridor import _dataplane
from corridor.common.errors import InvalidBatch
from corridor.common.fib import (
    Adjacency,
    DeleteAdjacency,
    DeleteGroup,
    DeleteRoute,
    NextHopGroup,
    Route,
    RouteKind,
)
from corridor.v1 import common_pb2, controller_pb2, dataplane_pb2

FIB_TYPES = (Adjacency, NextHopGroup, Route, DeleteAdjacency, DeleteGroup, DeleteRoute)
A = socket.inet_pton(socket.AF_INET, "198.18.0.2")
B = socket.inet_pton(socket.AF_INET6, "2001:db8::2")

# Addresses whose text has every inet_ntop form: compressed runs (first of equals, the
# longest), no run, a trailing run, embedded IPv4 (::a.b.c.d, ::ffff:a.b.c.d).
V6 = [
    "::", "::1", "2001:db8::", "2001:db8:0:0:1::", "2001:0:0:1::", "2001:db8:0:1:1:1:1:0",
    "::ffff:198.18.0.0", "::198.18.0.0", "::1:0:0", "1::", "fe80::1:2:3:0", "2001:db8:1::",
]  # fmt: skip


def prefix(text: str) -> common_pb2.IpPrefix:
    address, _, length = text.partition("/")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    return common_pb2.IpPrefix(address=socket.inet_pton(family, address), length=int(length))


def route(text: str, kind: int = 1, hops=((A, "p0", 0, 0),), node: str = ""):
    r = controller_pb2.RouteIntent(node=node, prefix=prefix(text), kind=kind)
    for gateway, port, vlan, weight in hops if kind == 1 else ():
        r.next_hops.add(gateway=gateway, port=port, vlan=vlan, weight=weight)
    return r


def read(request: controller_pb2.ApplyRequest):
    return _dataplane.read_apply_request(request.SerializeToString())


def test_an_apply_request_reads_as_the_generated_code_reads_it() -> None:
    texts = [f"{a}/{n}" for a in V6 for n in (128,)] + ["0.0.0.0/0", "198.18.0.0/15"]
    texts += ["10.0.0.0/8", "198.18.255.255/32", "2001:db8::/32", "::/0"]
    routes = [route(t) for t in texts]
    routes.append(route("10.0.0.0/8", node="n1", kind=2))
    routes.append(route("198.18.0.0/15", hops=((B, "p1", 100, 7), (A, "p0", 0, 1)), node="n-2"))
    routes.append(route("198.19.0.0/16", kind=4, node="n1"))
    request = controller_pb2.ApplyRequest(routes=routes)
    intents, nodes, prefixes, index = read(request)
    sort_keys = prefixes.sort_keys()
    parsed = controller_pb2.ApplyRequest.FromString(request.SerializeToString())
    assert len(prefixes) == len(parsed.routes)
    for i, r in enumerate(parsed.routes):
        family = socket.AF_INET if len(r.prefix.address) == 4 else socket.AF_INET6
        text = f"{socket.inet_ntop(family, r.prefix.address)}/{r.prefix.length}"
        assert (nodes[i], prefixes[i], list(prefixes)[i]) == (r.node, text, text)
        address = r.prefix.address
        assert sort_keys[i] == bytes((len(address),)) + address + bytes((r.prefix.length,))
        kind, hops = intents[index[i]]
        assert kind == r.kind
        assert hops == [(h.gateway, h.port, h.vlan, h.weight) for h in r.next_hops]
    assert len(intents) == 4  # one per distinct kind and next hops
    assert nodes[-1] is nodes[-3]  # one string per distinct node


@pytest.mark.parametrize(
    "routes",
    [
        [],
        [route("198.18.0.0/15"), route("198.18.0.0/15", kind=2)],  # the same key twice
        [route("198.18.0.1/15")],  # host bits
        [route("2001:db8::1/32")],
        [
            controller_pb2.RouteIntent(
                prefix=common_pb2.IpPrefix(address=b"\1\2\3", length=8), kind=2
            )
        ],
        [controller_pb2.RouteIntent(prefix=common_pb2.IpPrefix(address=A, length=33), kind=2)],
        [controller_pb2.RouteIntent(prefix=prefix("10.0.0.0/8"))],  # kind unset
        [controller_pb2.RouteIntent(prefix=prefix("10.0.0.0/8"), kind=9)],
        [controller_pb2.RouteIntent(prefix=prefix("10.0.0.0/8"), kind=-1)],
        [route("10.0.0.0/8", hops=())],  # FORWARD without next hops
        [route("10.0.0.0/8", hops=[(A, "p0", i, 0) for i in range(257)])],
        [
            controller_pb2.RouteIntent(
                prefix=prefix("10.0.0.0/8"), kind=2, next_hops=[controller_pb2.NextHop(gateway=A)]
            )
        ],
    ],
)
def test_what_is_wrong_is_left_to_the_python_reader(routes) -> None:
    assert read(controller_pb2.ApplyRequest(routes=routes)) is None


def test_too_many_routes_are_left_to_the_python_reader() -> None:
    routes = [
        route(f"10.{i >> 8 & 255}.{i & 255}.{i >> 16 << 7}/25", kind=2) for i in range(100_001)
    ]
    assert read(controller_pb2.ApplyRequest(routes=routes)) is None
    assert len(read(controller_pb2.ApplyRequest(routes=routes[:-1]))[2]) == 100_000


def test_bytes_that_are_not_an_apply_request_raise() -> None:
    good = controller_pb2.ApplyRequest(routes=[route("10.0.0.0/8")]).SerializeToString()
    for bad in (good[:-1], b"\x0a\x05\x0a\x03\xff\xfe\xfd", b"\x0b"):
        with pytest.raises(ValueError, match=r"not a corridor\.v1\.ApplyRequest"):
            _dataplane.read_apply_request(bad)


def test_a_write_request_parses_as_the_generated_code_builds_it() -> None:
    ops = [
        Adjacency(1, "p0", 100, "", "", "198.18.0.2"),
        Adjacency(2, "p1", 0, "02:00:00:00:00:01", "02:00:00:00:00:02", None),
        Adjacency(3, "p1", 0, "", "", "2001:db8::ffff:1"),
        NextHopGroup(4, ((1, 1), (3, 65535))),
        Route("198.18.0.0/15", RouteKind.FORWARD, 4),
        Route("::ffff:198.18.0.0/120", RouteKind.BLACKHOLE),
        Route("0.0.0.0/0", RouteKind.LOCAL),
        DeleteRoute("2001:db8::/32"),
        DeleteGroup(5),
        DeleteAdjacency(6),
    ]
    data = _dataplane.write_request_bytes((7 << 64) | 9, 12, ops, FIB_TYPES)
    want = dataplane_pb2.WriteRequest(batch_id=12)
    want.election_id.high, want.election_id.low = 7, 9
    SET, DELETE = dataplane_pb2.ACTION_SET, dataplane_pb2.ACTION_DELETE
    pton = socket.inet_pton
    add = want.operations.add
    add(action=SET).adjacency.CopyFrom(
        dataplane_pb2.Adjacency(
            id=1, port="p0", vlan=100, gateway=pton(socket.AF_INET, "198.18.0.2")
        )
    )
    add(action=SET).adjacency.CopyFrom(
        dataplane_pb2.Adjacency(id=2, port="p1", src_mac=bytes.fromhex("020000000001"),
                                dst_mac=bytes.fromhex("020000000002"))
    )  # fmt: skip
    add(action=SET).adjacency.CopyFrom(
        dataplane_pb2.Adjacency(id=3, port="p1", gateway=pton(socket.AF_INET6, "2001:db8::ffff:1"))
    )
    group = add(action=SET).next_hop_group
    group.id = 4
    group.members.add(adjacency_id=1, weight=1)
    group.members.add(adjacency_id=3, weight=65535)
    add(action=SET).route.CopyFrom(
        dataplane_pb2.Route(prefix=prefix("198.18.0.0/15"), kind=1, next_hop_group_id=4)
    )
    add(action=SET).route.CopyFrom(
        dataplane_pb2.Route(prefix=prefix("::ffff:198.18.0.0/120"), kind=2)
    )
    add(action=SET).route.CopyFrom(dataplane_pb2.Route(prefix=prefix("0.0.0.0/0"), kind=4))
    add(action=DELETE).route.prefix.CopyFrom(prefix("2001:db8::/32"))
    add(action=DELETE).next_hop_group.id = 5
    add(action=DELETE).adjacency.id = 6
    assert dataplane_pb2.WriteRequest.FromString(data) == want
    assert data == want.SerializeToString()  # field order and proto3 defaults as generated


def test_what_is_not_an_operation_raises() -> None:
    for bad, error in (
        ([("198.18.0.0/15", 1, 0)], TypeError),
        ([Route("198.18.0.0/33", RouteKind.FORWARD, 1)], ValueError),
        ([Route("nonsense", RouteKind.FORWARD, 1)], ValueError),
        ([Adjacency(1, "p0", 0, "02:00", "", None)], ValueError),
    ):
        with pytest.raises(error):
            _dataplane.write_request_bytes(1, 1, bad, FIB_TYPES)


def test_the_bulk_reader_and_the_python_reader_agree() -> None:
    """What the controller makes of a request read in bulk is what routes_from_pb makes of
    it, and a fault only Python checks (a gateway, a node name) is named as it names it."""
    from corridor.controller.api import batch_from_request, routes_from_pb

    routes = [route(f"{a}/128") for a in V6] + [route("10.0.0.0/8", node="n1", kind=2)]
    routes.append(route("198.18.0.0/15", hops=((B, "p1", 100, 7), (A, "p0", 0, 1)), node="n-2"))
    request = controller_pb2.ApplyRequest(routes=routes)
    batch = batch_from_request(request)
    assert batch.packed is not None  # read in bulk, not by the fallback
    assert list(zip(batch.keys(), batch.route_intents(), strict=True)) == routes_from_pb(request)
    for bad, field in (
        (
            route("10.0.0.0/8", hops=((b"\xff\0\0\1", "p0", 0, 0),)),
            "routes[1].next_hops[0].gateway",
        ),
        (route("10.0.0.0/8", node="no spaces", kind=2), "routes[1].node"),
        (route("10.0.0.0/8", hops=((A, "", 0, 0),)), "routes[1].next_hops[0].port"),
        (route("10.0.0.0/8", hops=((A, "p0", 4095, 0),)), "routes[1].next_hops[0].vlan"),
    ):
        request = controller_pb2.ApplyRequest(routes=[route("198.18.0.0/15"), bad])
        with pytest.raises(InvalidBatch) as refused:
            batch_from_request(request)
        assert [v.field for v in refused.value.violations] == [field]
