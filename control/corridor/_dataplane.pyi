"""Type stubs for the Rust extension `corridor._dataplane` (dataplane/python)."""

from typing import Literal, TypedDict

Target = int | Literal["blackhole", "unreachable", "local"]

class FibError(ValueError):
    """A refused write batch. Nothing of the batch was applied."""

    errors: list[tuple[int | None, str]]
    """(entry index, or None for a batch-wide problem such as a full table; message)."""

class Batch:
    """An ordered write batch; entry i is the i-th call (one per line for add_routes_text)."""

    def __init__(self) -> None: ...
    def __len__(self) -> int: ...
    def set_adjacency(self, id: int, port: int, vlan: int, src_mac: str, dst_mac: str) -> None: ...
    def delete_adjacency(self, id: int) -> None: ...
    def set_group(self, id: int, members: list[tuple[int, int]]) -> None:
        """members: (adjacency id, weight) pairs; weights 1 to 65535."""
    def delete_group(self, id: int) -> None: ...
    def add_route(self, prefix: str, target: Target) -> None: ...
    def delete_route(self, prefix: str) -> None: ...
    def add_routes_text(self, text: str, target: Target) -> int:
        """One route per non-empty line of `prefix [anything]`; returns the entries added."""

class FibStats(TypedDict):
    v4_routes: int
    v6_routes: int
    v4_capacity: int
    v6_capacity: int
    groups: int
    group_capacity: int
    adjacencies: int
    adjacency_capacity: int
    v4_nodes_used: int
    v6_nodes_used: int
    v4_bytes: int
    v6_bytes: int

class Fib:
    def __init__(
        self,
        *,
        v4_routes: int | None = None,
        v6_routes: int | None = None,
        v4_nodes: int | None = None,
        v6_nodes: int | None = None,
        groups: int | None = None,
        adjacencies: int | None = None,
    ) -> None: ...
    def apply(self, batch: Batch) -> None:
        """Validate the whole batch, then apply it (GIL released). Raises FibError."""
    def lookup(self, address: str) -> Target | None: ...
    def next_hop(self, group: int, flow_hash: int) -> int | None: ...
    def route(self, prefix: str) -> Target | None: ...
    def routes(self) -> list[tuple[str, Target]]: ...
    def groups(self) -> list[tuple[int, list[tuple[int, int]]]]: ...
    def adjacencies(self) -> list[tuple[int, int, int, str, str]]: ...
    def stats(self) -> FibStats: ...
