"""Where intent lives: the small interface the controller needs of a store, so that a
replicated store (etcd, for a controller cluster) can replace the embedded SQLite one
(sqlite_store.py) without touching the rest.

Contract: `commit` returns only once the change is durable (it survives a power cut); a
change is committed whole or not at all; revisions increase by one per commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from corridor.common.edge import EdgePolicy
from corridor.controller.domain import (
    AdjacencyKey,
    Change,
    GroupKey,
    Intent,
    Node,
    RouteKey,
)
from corridor.controller.members import MemberRecord, Sample


class StoreError(Exception):
    """The store cannot be used as it is: what is wrong with it and what to do."""


@dataclass
class Loaded:
    """Everything a store holds, read once at start-up."""

    revision: int
    routes: list[tuple[RouteKey, Intent]]
    nodes: list[Node]
    group_ids: dict[GroupKey, int]
    adjacency_ids: dict[AdjacencyKey, int]
    drained: list[tuple[str, AdjacencyKey]]
    # What the operator accepted to start from (--accept-empty-store): "" if nothing, else
    # what the store had lost, for the log.
    accepted: str = ""


@dataclass(frozen=True)
class RouteQuery:
    node: str | None  # None: every node
    within: str | None  # a prefix, or None
    kind: int  # 0: any
    limit: int
    after: tuple[str, bytes] | None  # (node, prefix sort key) of the last route returned


@dataclass(frozen=True)
class PortPolicyRecord:
    node: str
    port: str
    vlan: int
    policy: EdgePolicy


class Store(Protocol):
    async def load(self) -> Loaded: ...

    async def commit(self, change: Change) -> None:
        """Durably records `change` (its revision is the store's next)."""

    async def next_election_id(self) -> int:
        """A new election id, above every id this store handed out before, durably."""

    async def list_routes(self, query: RouteQuery) -> list[tuple[RouteKey, Intent, bytes]]:
        """Routes in (node, sort key) order, with each one's sort key."""

    # Edge policies of the nodes' sub-interfaces (common/edge.py): a small table beside
    # intent, written one at a time, each write durable like a commit.
    async def list_port_policies(self) -> list[PortPolicyRecord]: ...

    async def put_port_policy(self, record: PortPolicyRecord) -> None:
        """Adds or replaces (by node, port, VLAN) a sub-interface's policy."""

    # Exchange members (controller/members.py) and their counters' samples: small tables
    # beside intent, written one at a time, each write durable like a commit.
    async def list_members(self) -> list[MemberRecord]: ...

    async def put_member(self, member: MemberRecord) -> None:
        """Adds or replaces (by name) a member."""

    async def delete_member(self, name: str) -> None: ...

    async def add_samples(self, samples: Sequence[Sample]) -> None:
        """Records samples; one per (member, time), a second replaces the first."""

    async def samples(self, member: str, start: float, end: float) -> list[Sample]:
        """A member's samples with start <= time < end, by time."""

    async def close(self) -> None: ...
