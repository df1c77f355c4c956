"""The FIB of the Rust engine behind the domain's Fib protocol: the only module that imports
corridor._dataplane. Domain operations become one engine Batch, entry i for operation i, so
the engine's errors name the operations by the same index.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from corridor._dataplane import Batch, FibError
from corridor._dataplane import Fib as _EngineFib
from corridor.agent.config import FibCapacity
from corridor.agent.domain import (
    Adjacency,
    DeleteAdjacency,
    DeleteGroup,
    DeleteRoute,
    InvalidBatch,
    NextHopGroup,
    Operation,
    Route,
    RouteKind,
    Violation,
)

_KIND_OF_TARGET = {kind.value: kind for kind in RouteKind if kind is not RouteKind.FORWARD}


class EngineFib:
    def __init__(self, capacity: FibCapacity) -> None:
        self._fib = _EngineFib(**capacity.keywords())
        # The engine is safe to share, but one caller at a time keeps a scrape or a Read
        # from ever meeting a batch half-way through its Python side.
        self._lock = threading.Lock()

    def apply(self, operations: Sequence[Operation]) -> None:
        batch = Batch()
        for op in operations:
            match op:
                case Route(prefix, RouteKind.FORWARD, group):
                    batch.add_route(prefix, group)
                case Route(prefix, kind):
                    batch.add_route(prefix, kind.value)
                case DeleteRoute(prefix):
                    batch.delete_route(prefix)
                case NextHopGroup(id, members):
                    batch.set_group(id, list(members))
                case DeleteGroup(id):
                    batch.delete_group(id)
                case Adjacency(id, port, vlan, src_mac, dst_mac):
                    batch.set_adjacency(id, port, vlan, src_mac, dst_mac)
                case DeleteAdjacency(id):
                    batch.delete_adjacency(id)
                case _:
                    raise TypeError(f"not a FIB operation: {op!r}")
        with self._lock:
            try:
                self._fib.apply(batch)
            except FibError as e:
                raise InvalidBatch(
                    [
                        Violation(index, "" if index is None else f"operations[{index}]", message)
                        for index, message in e.errors
                    ]
                ) from None

    def entries(self) -> tuple[list[Adjacency], list[NextHopGroup], list[Route]]:
        with self._lock:
            adjacencies = self._fib.adjacencies()
            groups = self._fib.groups()
            routes = self._fib.routes()
        return (
            [Adjacency(*a) for a in adjacencies],
            [NextHopGroup(id, tuple(map(tuple, members))) for id, members in groups],
            [_route(prefix, target) for prefix, target in routes],
        )

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._fib.stats())


def _route(prefix: str, target: int | str) -> Route:
    if isinstance(target, int):
        return Route(prefix, RouteKind.FORWARD, target)
    return Route(prefix, _KIND_OF_TARGET[target])
