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

    @property
    def native(self) -> _EngineFib:
        """The extension's Fib, for the Engine whose workers read it."""
        return self._fib

    def apply(self, operations: Sequence[Operation]) -> None:
        batch = Batch()
        # Consecutive routes to one target go in as one text block (one engine call for a
        # run of a full table); the engine still makes one entry per line, so entry i
        # remains operation i.
        run: list[str] = []
        run_target: int | str | None = None
        for op in operations:
            kind = type(op)
            if kind is Route:
                target = op.group if op.kind is RouteKind.FORWARD else op.kind.value
                if target != run_target or type(target) is not type(run_target):
                    _add_routes(batch, run, run_target)
                    run_target = target
                run.append(op.prefix)
                continue
            _add_routes(batch, run, run_target)
            if kind is DeleteRoute:
                batch.delete_route(op.prefix)
            elif kind is NextHopGroup:
                batch.set_group(op.id, list(op.members))
            elif kind is DeleteGroup:
                batch.delete_group(op.id)
            elif kind is Adjacency:
                batch.set_adjacency(op.id, op.port, op.vlan, op.src_mac, op.dst_mac)
            elif kind is DeleteAdjacency:
                batch.delete_adjacency(op.id)
            else:
                raise TypeError(f"not a FIB operation: {op!r}")
        _add_routes(batch, run, run_target)
        if len(batch) != len(operations):
            raise AssertionError(f"{len(batch)} engine entries for {len(operations)} operations")
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
        return (
            [Adjacency(*a) for a in adjacencies],
            [NextHopGroup(id, tuple(map(tuple, members))) for id, members in groups],
            [_route(prefix, target) for prefix, target in routes],
        )

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._fib.stats())


def _add_routes(batch: Batch, run: list[str], target: int | str | None) -> None:
    """Adds the routes of `run` to `target` and empties it."""
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


def _route(prefix: str, target: int | str) -> Route:
    if isinstance(target, int):
        return Route(prefix, RouteKind.FORWARD, target)
    return Route(prefix, _KIND_OF_TARGET[target])
