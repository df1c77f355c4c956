"""The FIB adapter: the agent's FIB operations applied to the engine's FIB, corridor._dataplane.
Operations become one engine Batch (`engine_batch`), entry i for operation i, so the engine's
errors name the operations by the same index. Ports are named above this module and
numbered below it (the engine's Adjacency.port is an index into its ports).
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from corridor._dataplane import Batch, FibError
from corridor._dataplane import Fib as _EngineFib
from corridor.agent.config import FibCapacity
from corridor.common.errors import InvalidBatch, Violation
from corridor.common.fib import (
    NO_PORT,
    Adjacency,
    DeleteAdjacency,
    DeleteGroup,
    DeleteMember,
    DeleteRoute,
    FibOperation,
    GleanRoute,
    Member,
    NextHopGroup,
    Route,
    RouteKind,
)

if TYPE_CHECKING:
    from corridor._dataplane import FibStats, Target

# The engine's port index for an adjacency on no port: no engine has that many ports.
NO_PORT_INDEX = 0xFFFF
_TARGET_OF_KIND: dict[RouteKind, Target] = {
    RouteKind.BLACKHOLE: "blackhole",
    RouteKind.UNREACHABLE: "unreachable",
    RouteKind.LOCAL: "local",
}
_KIND_OF_TARGET = {target: kind for kind, target in _TARGET_OF_KIND.items()}


class EngineFib:
    def __init__(self, capacity: FibCapacity, ports: Iterable[str] = ()) -> None:
        """`ports`: the names of the engine's ports, in its order."""
        self._fib = _EngineFib(**capacity.keywords())
        self._fib.prefault()  # the roots' memory now, not in the middle of the first table
        self._port_index = {name: i for i, name in enumerate(ports)}
        self._port_index[NO_PORT] = NO_PORT_INDEX
        self._port_name = {i: name for name, i in self._port_index.items()}
        # The engine is safe to share, but one caller at a time keeps a scrape or a Read
        # from ever meeting a batch half-way through its Python side.
        self._lock = threading.Lock()

    @property
    def native(self) -> _EngineFib:
        """The extension's Fib, for the Engine whose workers read it."""
        return self._fib

    def apply(self, operations: Sequence[FibOperation]) -> None:
        self.apply_batch(engine_batch(operations, self._port_index))

    def apply_batch(self, batch: Batch) -> None:
        """Applies an engine Batch whose entry i is operation i (engine_batch's, or one
        read straight from a writer's bytes, `read_route_write`)."""
        with self._lock:
            try:
                self._fib.apply(batch)
            except FibError as e:
                raise InvalidBatch(
                    [
                        Violation(index, _field(index), message)
                        for index, message in sorted(e.errors, key=_batch_wide_first)
                    ]
                ) from None

    def entries(self) -> tuple[list[Adjacency], list[NextHopGroup], list[Route]]:
        with self._lock:
            adjacencies = self._fib.adjacencies()
            groups = self._fib.groups()
            routes = self._fib.routes()
        name = self._port_name
        # Glean routes are the agent's own (attached subnets), never a writer's.
        return (
            [Adjacency(i, name.get(port, str(port)), vlan, src, dst)
             for i, port, vlan, src, dst in adjacencies],
            [NextHopGroup(i, tuple((a, w) for a, w in members)) for i, members in groups],
            [_route(prefix, target) for prefix, target in routes if target != "glean"],
        )  # fmt: skip

    def has_route(self, prefix: str) -> bool:
        """Whether a route for exactly `prefix` is installed."""
        with self._lock:
            return self._fib.route(prefix) is not None

    def take_adjacency_used(self, ids: list[int]) -> list[bool]:
        """The hit bit of each adjacency (a frame left by it since the last call), cleared."""
        with self._lock:
            return self._fib.take_adjacency_used(ids)

    def stats(self) -> FibStats:
        with self._lock:
            return self._fib.stats()

    def blackhole_slot(self, prefix: str) -> int | None:
        with self._lock:
            return self._fib.blackhole_slot(prefix)

    def members(self) -> list[tuple[int, str, int, str]]:
        """(id, port name, VLAN, MAC) of every member the engine holds."""
        with self._lock:
            members = self._fib.members()
        return [(i, self._port_name.get(p, str(p)), vlan, mac) for i, p, vlan, mac in members]

    def member_sources(self, id: int) -> list[str] | None:
        """A member's source filter as the engine holds it; None when it has none."""
        with self._lock:
            return self._fib.member_sources(id)

    def lookup(self, address: str) -> Route | None:
        """The route the engine gives `address` (its longest-prefix match, as a packet meets
        it), or None (also for an attached subnet's glean route, the agent's own). The
        engine returns the target only: the prefix is the longest one installed exactly
        that holds the address, at most 33 or 129 exact reads."""
        ip = ipaddress.ip_address(address)
        bits = ip.max_prefixlen
        value = int(ip)
        with self._lock:
            target = self._fib.lookup(address)
            if target is None or target == "glean":
                return None
            for length in range(bits, -1, -1):
                host = bits - length
                network = ipaddress.ip_network((value >> host << host, length))
                if self._fib.route(str(network)) is not None:
                    return _route(str(network), target)
        raise AssertionError(f"the engine matched {address} but holds no prefix of it")


def engine_batch(operations: Sequence[FibOperation], port_index: dict[str, int]) -> Batch:
    """The engine Batch of `operations`, entry i for operation i. Consecutive routes to one
    target go in as one text block (one engine call for a run of a full table); the engine
    still makes one entry per line."""
    batch = Batch()
    run: list[str] = []
    run_target: Target | None = None
    forward = RouteKind.FORWARD
    for op in operations:
        if type(op) is Route:
            target: Target = op.group if op.kind is forward else _TARGET_OF_KIND[op.kind]
            if target != run_target or type(target) is not type(run_target):
                _add_routes(batch, run, run_target)
                run_target = target
            run.append(op.prefix)
            continue
        _add_routes(batch, run, run_target)
        if type(op) is DeleteRoute:
            batch.delete_route(op.prefix)
        elif type(op) is NextHopGroup:
            batch.set_group(op.id, list(op.members))
        elif type(op) is DeleteGroup:
            batch.delete_group(op.id)
        elif type(op) is Adjacency:
            port = port_index.get(op.port)
            if port is None:
                raise ValueError(f"adjacency {op.id}: {op.port!r} is not a port of the engine")
            batch.set_adjacency(op.id, port, op.vlan, op.src_mac, op.dst_mac)
        elif type(op) is DeleteAdjacency:
            batch.delete_adjacency(op.id)
        elif type(op) is Member:
            port = port_index.get(op.port)
            if port is None:
                raise ValueError(f"member {op.id}: {op.port!r} is not a port of the engine")
            sources = None if op.sources is None else list(op.sources)
            batch.set_member(op.id, port, op.vlan, op.mac, sources)
        elif type(op) is DeleteMember:
            batch.delete_member(op.id)
        elif type(op) is GleanRoute:
            batch.add_route(op.prefix, "glean")
        else:
            raise TypeError(f"not a FIB operation: {op!r}")
    _add_routes(batch, run, run_target)
    if len(batch) != len(operations):
        raise AssertionError(f"{len(batch)} engine entries for {len(operations)} operations")
    return batch


def _add_routes(batch: Batch, run: list[str], target: Target | None) -> None:
    """Adds the routes of `run` to `target` and empties it."""
    if target is None:
        return
    if len(run) == 1:
        batch.add_route(run[0], target)
    elif run:
        batch.add_routes_text("\n".join(run), target)
    run.clear()


def _batch_wide_first(error: tuple[int | None, str]) -> int:
    """Batch-wide faults first, then by operation, whatever order the FIB found them in."""
    return -1 if error[0] is None else error[0]


def _field(index: int | None) -> str:
    return "operations" if index is None else f"operations[{index}]"


def _route(prefix: str, target: Target) -> Route:
    if isinstance(target, int):
        return Route(prefix, RouteKind.FORWARD, target)
    return Route(prefix, _KIND_OF_TARGET[target])
