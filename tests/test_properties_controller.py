"""Property tests of the controller's request validation (hypothesis), against models written
from the contract in proto/corridor/v1/controller.proto rather than from the code:

- Apply: a generated ApplyRequest is taken as the routes it states exactly when the contract
  allows it, and refused naming every bad route otherwise. Its bytes are read in Rust: any
  bytes give a batch or a refusal, and bytes that protobuf reads give what their message gives.
- Delete's keys, ListRoutes' page tokens and the addresses of nodes: a value or the field's
  own error, nothing else.
- Through a real controller: whatever the bytes of an Apply, the answer is OK or
  INVALID_ARGUMENT, never an internal error.

`HYPOTHESIS_PROFILE=fuzz` (make fuzz) runs the same properties far longer.
"""

from __future__ import annotations

import re
from pathlib import Path

import grpc
import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from controller_support import LocalAgent, controller_document, start_controller
from corridor.common.errors import FieldError, InvalidBatch
from corridor.common.fib import RouteKind
from corridor.controller.api import PageTokens, batch_from_request, keys_from_pb, node_from_pb
from corridor.controller.domain import Intent, RouteBatch
from corridor.v1 import common_pb2, controller_pb2, dataplane_pb2
from properties_support import gateway_model, prefix_model, prefixes, raw_addresses

NODE_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")  # the .proto's words: 1 to 64 of [A-Za-z0-9._-]
NODES = ["", "", "a", "b", "n-1.x_y", "N" * 64, "N" * 65, "bad name", "a\n", "é", "a/b"]


def node_model(name: str) -> bool:
    return NODE_NAME.fullmatch(name) is not None


def intent_model(route: controller_pb2.RouteIntent) -> Intent | None:
    """A route's intent as the contract states it, None if the contract forbids it."""
    if route.kind not in (1, 2, 3, 4):
        return None
    kind = RouteKind(route.kind)
    if kind is not RouteKind.FORWARD:
        return None if route.next_hops else Intent(kind)
    if not 1 <= len(route.next_hops) <= 256:
        return None
    hops: dict[tuple[str, str, int], int] = {}
    for h in route.next_hops:
        gateway = gateway_model(h.gateway)
        if gateway is None or not h.port or h.vlan > 4094 or h.weight > 65_535:
            return None
        if (gateway, h.port, h.vlan) in hops:
            return None  # each gateway/port/vlan once
        hops[(gateway, h.port, h.vlan)] = h.weight or 1  # 0 means 1
    return Intent(kind, tuple(sorted(hops.items())))


Expected = tuple[list[tuple[str, str]], list[Intent]] | set[int]


def apply_model(request: controller_pb2.ApplyRequest) -> Expected:
    """The routes' keys and intents, or the indexes of the bad routes (-1: the batch)."""
    if not 1 <= len(request.routes) <= 100_000:
        return {-1}
    bad: set[int] = set()
    keys: list[tuple[str, str]] = []
    intents: list[Intent] = []
    for i, route in enumerate(request.routes):
        prefix = prefix_model(route.prefix.address, route.prefix.length)
        intent = intent_model(route)
        if prefix is None or intent is None or (route.node and not node_model(route.node)):
            bad.add(i)
        elif (route.node, prefix) in keys:
            bad.add(i)  # a key once per batch
        else:
            keys.append((route.node, prefix))
            intents.append(intent)
    return bad or (keys, intents)


def outcome(request: controller_pb2.ApplyRequest | bytes) -> Expected:
    """What batch_from_request made of `request`, in the model's terms; fails on anything
    but a batch or InvalidBatch."""
    try:
        batch = batch_from_request(request)
    except InvalidBatch as e:
        for v in e.violations:
            assert v.description
            assert v.index is None or v.field.startswith(f"routes[{v.index}]"), v.field
        return {-1 if v.index is None else v.index for v in e.violations}
    assert isinstance(batch, RouteBatch)
    if batch.packed is not None:
        assert len(batch.packed.sort_keys()) == len(batch) == len(batch.nodes)
    return batch.keys(), batch.route_intents()


@st.composite
def next_hops(draw: st.DrawFn) -> controller_pb2.NextHop:
    return controller_pb2.NextHop(
        gateway=draw(raw_addresses()),
        port=draw(st.sampled_from(["cor-c0", "cor-c0", "cor-c1", "", "x" * 300])),
        vlan=draw(st.sampled_from([0, 0, 100, 4094, 4095, 2**32 - 1])),
        weight=draw(st.sampled_from([0, 1, 3, 65_535, 65_536, 2**32 - 1])),
    )


@st.composite
def route_intents(draw: st.DrawFn) -> controller_pb2.RouteIntent:
    route = controller_pb2.RouteIntent(
        node=draw(st.sampled_from(NODES)),
        prefix=draw(prefixes()),
        kind=draw(st.sampled_from([0, 1, 1, 1, 2, 3, 4, 5])),  # type: ignore[arg-type]
    )
    hops = draw(st.lists(next_hops(), max_size=3))
    if draw(st.integers(0, 9)) == 0 and hops:  # the same next hop twice
        hops.append(hops[0])
    route.next_hops.extend(hops)
    return route


APPLY_REQUESTS = st.lists(route_intents(), max_size=6).map(
    lambda routes: controller_pb2.ApplyRequest(routes=routes)
)


BLACKHOLE = dataplane_pb2.ROUTE_KIND_BLACKHOLE


@given(APPLY_REQUESTS)
# Found by these tests: a node name (or agent address) that ends in "\n" was taken, since
# the pattern ended in "$", which also matches before a final newline.
@example(
    controller_pb2.ApplyRequest(
        routes=[controller_pb2.RouteIntent(node="a\n", prefix=common_pb2.IpPrefix(
            address=bytes([198, 18, 0, 0]), length=24), kind=BLACKHOLE)]
    )
)  # fmt: skip
def test_an_apply_request_is_read_as_the_contract_says(
    request: controller_pb2.ApplyRequest,
) -> None:
    assert outcome(request) == apply_model(request)


@st.composite
def mangled(draw: st.DrawFn, messages: st.SearchStrategy[bytes]) -> bytes:
    """Serialized bytes with a few bytes changed, cut short or grown."""
    data = bytearray(draw(messages))
    for _ in range(draw(st.integers(1, 4))):
        what = draw(st.integers(0, 2))
        at = draw(st.integers(0, len(data)))
        if what == 0 and at < len(data):
            data[at] = draw(st.sampled_from([0, 0x80, 0xFF, draw(st.integers(0, 255))]))
        elif what == 1:
            del data[at:]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=6))
    return bytes(data)


APPLY_BYTES = st.one_of(
    mangled(APPLY_REQUESTS.map(lambda r: r.SerializeToString())), st.binary(max_size=64)
)


@given(APPLY_BYTES)
# Found by `make fuzz`: a tag of 2^32 (field 2^29, past protobuf's last) was read as an
# unknown field, so the batch was found empty and the fallback's DecodeError escaped.
@example(b"\x80\x80\x80\x80\x10\x00")
def test_any_apply_bytes_are_a_batch_or_refused_as_protobuf_reads_them(data: bytes) -> None:
    result = outcome(data)
    try:
        message = controller_pb2.ApplyRequest.FromString(data)
    except DecodeError:
        assert isinstance(result, set), "bytes protobuf cannot read were taken"
        return
    assert result == apply_model(message), message


# --- Delete, page tokens, nodes -----------------------------------------------------------


@given(st.lists(st.builds(controller_pb2.RouteKey, node=st.sampled_from(NODES), prefix=prefixes()),
                max_size=5))  # fmt: skip
def test_delete_keys_are_read_as_the_contract_says(keys: list[controller_pb2.RouteKey]) -> None:
    request = controller_pb2.DeleteRequest(routes=keys)
    expected = [(k.node, prefix_model(k.prefix.address, k.prefix.length)) for k in keys]
    bad = {i for i, (_, prefix) in enumerate(expected) if prefix is None}
    # A valid key named again after its first time is refused too (as Apply refuses it).
    bad |= {i for i, key in enumerate(expected) if key[1] is not None and key in expected[:i]}
    try:
        taken = keys_from_pb(request)
    except InvalidBatch as e:
        named = {-1 if v.index is None else v.index for v in e.violations}
        assert named == (bad if keys else {-1})
        return
    assert keys and not bad
    assert taken == expected


TOKENS = PageTokens()
QUERY = repr((None, None, 0))


@given(st.one_of(st.text(max_size=60), st.binary(max_size=60).map(lambda b: b.hex())))
def test_a_page_token_not_given_is_refused(token: str) -> None:
    with pytest.raises(ValueError, match="list again from the first page"):
        TOKENS.read(token, QUERY)


@given(st.sampled_from(NODES[:5]), prefixes(), st.text(max_size=10), st.integers(0, 255))
def test_a_page_token_leads_back_to_its_place_for_its_query_only(
    node: str, prefix: common_pb2.IpPrefix, other: str, phase: int
) -> None:
    text = prefix_model(prefix.address, prefix.length)
    if text is None:
        return
    sort_key = bytes((len(prefix.address),)) + prefix.address + bytes((prefix.length,))
    token = TOKENS.make(QUERY, phase, node, sort_key)  # phase: the routes' source, listed first
    assert TOKENS.read(token, QUERY) == (phase, node, sort_key)
    if other != QUERY:
        with pytest.raises(ValueError):
            TOKENS.read(token, other)


ENDPOINTS = st.one_of(
    st.sampled_from(["unix:/run/a.sock", "unix:", "unix:rel.sock", "198.18.0.1:50051",
                     "[2001:db8::1]:1", "[2001:db8::1]:0", "host:65536", "agent-1.example:9",
                     "-x.example:9", "a..b:9", "[::1:9", "2001:db8::1:9", "host:", ":9", "h\n:9"]),
    st.text(max_size=30),
    st.builds("{}:{}".format, st.from_regex(r"[a-z0-9.\-\[\]:]{0,20}", fullmatch=True),
              st.integers(-1, 70000)),
)  # fmt: skip


@given(st.sampled_from(NODES), ENDPOINTS)
@example("a\n", "unix:/run/a.sock")
@example("a", "agent-1.example\n:9")
def test_a_node_is_taken_or_refused_naming_its_field(name: str, address: str) -> None:
    try:
        node = node_from_pb(controller_pb2.Node(name=name, address=address))
    except FieldError as e:
        assert e.field in ("node.name", "node.address") and e.description
        assert e.field != "node.name" or not node_model(name)
        return
    assert node_model(name), f"node name {name!r} was taken"
    assert node.address == address
    if not address.startswith("unix:"):
        host, _, port = address.rpartition(":")
        assert host and port.isdigit() and 1 <= int(port) <= 65535


# --- a real controller ---------------------------------------------------------------------


@pytest.fixture
async def controller_channel(tmp_path: Path):
    """A controller with one node (a real agent on a Unix socket), and a raw channel to it."""
    agent = await LocalAgent(tmp_path / "a.sock").start()
    running = await start_controller(controller_document(tmp_path, {"a": agent.address}), tmp_path)
    channel = grpc.aio.insecure_channel(f"unix:{tmp_path / 'controller.sock'}")
    try:
        yield channel
    finally:
        await channel.close()
        await running.stop(0)
        await agent.stop()


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(APPLY_BYTES, APPLY_REQUESTS.map(lambda r: r.SerializeToString())))
@example(data=b"\x80\x80\x80\x80\x10\x00")  # a tag past protobuf's last field: see above
async def test_any_apply_gets_a_status_not_an_error(controller_channel, data: bytes) -> None:
    """One controller for every example: whatever earlier ones stored, the answer to bytes
    is their batch or their refusal."""
    apply = controller_channel.unary_unary(
        "/corridor.v1.Controller/Apply",
        request_serializer=None,
        response_deserializer=controller_pb2.ApplyResponse.FromString,
    )
    expected = outcome(data)
    try:
        reply = await apply(data, timeout=30)
    except grpc.aio.AioRpcError as e:
        # Refused: bad bytes or routes, or good routes for a node or port the controller does
        # not know (checked beyond the request, against the nodes).
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, (e.code(), e.details())
        return
    assert not isinstance(expected, set), "the controller took what the contract forbids"
    assert reply.routes == len(expected[0]) and reply.revision > 0
