"""Next hops as written and as installed. Writers name adjacencies and groups; the engine gets
them as they can forward now: a gateway adjacency gets its port's MAC and its neighbour's
MAC, and a group keeps only members whose port is up and whose neighbour is resolved (a
group left with none points at a reserved adjacency on no port, which drops and counts).
Pure bookkeeping: no engine, no netlink, no gRPC; the Dataplane applies what it computes.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from corridor.common.errors import Violation
from corridor.common.fib import (
    NO_PORT,
    Adjacency,
    DeleteAdjacency,
    DeleteGroup,
    FibOperation,
    Members,
    NextHopGroup,
    members_problem,
)

# The engine's adjacency 0 (ids from writers start at 1) on no port: the worker drops what
# it would send there and counts it as "unknown_egress".
DROP_ADJACENCY_ID = 0
NO_MAC = "00:00:00:00:00:00"


class State(enum.Enum):
    USABLE = "usable"
    UNRESOLVED = "unresolved"
    LINK_DOWN = "link_down"


@dataclass(frozen=True, slots=True)
class Gateway:
    """A neighbour the agent keeps resolved: (port name, VLAN, IP address text)."""

    port: str
    vlan: int
    address: str


def gateway_of(a: Adjacency) -> Gateway | None:
    return None if a.gateway is None else Gateway(a.port, a.vlan, a.gateway)


class NextHops:
    """The written adjacencies and groups, the live facts they depend on (link state and port
    MAC per port, neighbour MACs), and what the engine holds (`installed_*`)."""

    def __init__(self) -> None:
        self.adjacencies: dict[int, Adjacency] = {}
        self.groups: dict[int, Members] = {}
        self._users: dict[int, set[int]] = {}  # adjacency id -> ids of groups it is in
        self.link_up: dict[str, bool] = {}  # port -> up; absent: assumed up
        self.port_mac: dict[str, str] = {}
        self.neighbours: dict[Gateway, str] = {}  # resolved gateways only
        self.installed_adjacencies: dict[int, Adjacency] = {}  # as the engine holds them
        self.installed_groups: dict[int, Members] = {}
        self.drop_installed = False

    # --- what a written adjacency is now ---------------------------------------------

    def state(self, a: Adjacency) -> State:
        if not self.link_up.get(a.port, True):
            return State.LINK_DOWN
        if a.gateway is not None and (
            gateway_of(a) not in self.neighbours or a.port not in self.port_mac
        ):
            return State.UNRESOLVED
        return State.USABLE

    def neighbour_mac(self, a: Adjacency) -> str | None:
        gateway = gateway_of(a)
        return None if gateway is None else self.neighbours.get(gateway)

    def effective_adjacency(self, a: Adjacency) -> Adjacency:
        """`a` as the engine must hold it: with both MACs, and no gateway."""
        gateway = gateway_of(a)
        if gateway is None:
            return a
        return Adjacency(
            a.id,
            a.port,
            a.vlan,
            self.port_mac.get(a.port, NO_MAC),
            self.neighbours.get(gateway, NO_MAC),
        )

    def effective_members(
        self, members: Iterable[tuple[int, int]], adjacencies: dict[int, Adjacency] | None = None
    ) -> Members:
        """The usable members; an adjacency this agent does not know is kept, so that the
        engine refuses the reference as it would any other."""
        known = self.adjacencies if adjacencies is None else adjacencies
        members = tuple(members)
        if not members:
            return members  # the engine refuses an empty group, with its own words
        kept = []
        for adjacency_id, weight in members:
            a = known.get(adjacency_id)
            if a is None or self.state(a) is State.USABLE:
                kept.append((adjacency_id, weight))
        return tuple(kept) or ((DROP_ADJACENCY_ID, 1),)

    def gateways(self) -> set[Gateway]:
        """The neighbours in use: to keep resolved."""
        return {g for a in self.adjacencies.values() if (g := gateway_of(a)) is not None}

    # --- writes ------------------------------------------------------------------------

    def translate(
        self, operations: Sequence[FibOperation]
    ) -> tuple[list[FibOperation], list[Violation], bool]:
        """The engine's operations for a written batch, one for one (so the engine's errors
        name the writer's operations), violations the engine cannot see (an adjacency
        deleted while a group still uses it), and whether the drop adjacency is needed."""
        out: list[FibOperation] = []
        violations: list[Violation] = []
        adjacencies = dict(self.adjacencies)
        groups: dict[int, Members] | None = None
        needs_drop = False
        for i, op in enumerate(operations):
            if type(op) is Adjacency:
                adjacencies[op.id] = op
                out.append(self.effective_adjacency(op))
            elif type(op) is NextHopGroup:
                if groups is None:
                    groups = dict(self.groups)
                groups[op.id] = op.members
                members = self.effective_members(op.members, adjacencies)
                if members != op.members and (problem := members_problem(op.id, op.members)):
                    # The engine checks only the members it gets: the written ones must be
                    # good too, or the group fails later, when its neighbours resolve.
                    violations.append(Violation(i, f"operations[{i}]", problem))
                needs_drop |= bool(members) and members[0][0] == DROP_ADJACENCY_ID
                out.append(NextHopGroup(op.id, members))
            elif type(op) is DeleteGroup:
                if groups is None:
                    groups = dict(self.groups)
                groups.pop(op.id, None)
                out.append(op)
            elif type(op) is DeleteAdjacency:
                users = self._users_of(op.id, groups)
                if users and op.id in adjacencies:
                    # Worded as the engine words it: it cannot see members left out.
                    violations.append(
                        Violation(
                            i,
                            f"operations[{i}]",
                            f"adjacency {op.id}: still used by {len(users)} group(s); "
                            "remove it from them first",
                        )
                    )
                adjacencies.pop(op.id, None)
                out.append(op)
            else:
                out.append(op)
        return out, violations, needs_drop and not self.drop_installed

    def committed(
        self, operations: Sequence[FibOperation], engine_ops: Sequence[FibOperation]
    ) -> None:
        """Records a batch the engine applied (`engine_ops` is what it got)."""
        for op, sent in zip(operations, engine_ops, strict=True):
            if type(op) is Adjacency and type(sent) is Adjacency:
                self.adjacencies[op.id] = op
                self.installed_adjacencies[op.id] = sent
            elif type(op) is NextHopGroup and type(sent) is NextHopGroup:
                for adjacency_id, _ in self.groups.get(op.id, ()):
                    self._users.get(adjacency_id, set()).discard(op.id)
                self.groups[op.id] = op.members
                for adjacency_id, _ in op.members:
                    self._users.setdefault(adjacency_id, set()).add(op.id)
                self.installed_groups[op.id] = sent.members
            elif type(op) is DeleteGroup:
                for adjacency_id, _ in self.groups.pop(op.id, ()):
                    self._users.get(adjacency_id, set()).discard(op.id)
                self.installed_groups.pop(op.id, None)
            elif type(op) is DeleteAdjacency:
                self.adjacencies.pop(op.id, None)
                self.installed_adjacencies.pop(op.id, None)

    def drop_adjacency(self) -> Adjacency:
        return Adjacency(DROP_ADJACENCY_ID, NO_PORT, 0, NO_MAC, NO_MAC)

    # --- live changes ------------------------------------------------------------------

    def refresh(self) -> list[FibOperation]:
        """The engine operations that bring it to the written state under the live facts:
        adjacencies whose MACs changed, then groups whose usable members changed. Empty when
        nothing changed. The caller applies them, then calls `committed_refresh`."""
        ops: list[FibOperation] = []
        if not self.adjacencies:
            return ops
        if not self.drop_installed:
            ops.append(self.drop_adjacency())
        for adjacency_id, a in self.adjacencies.items():
            effective = self.effective_adjacency(a)
            if self.installed_adjacencies.get(adjacency_id) != effective:
                ops.append(effective)
        for group_id, members in self.groups.items():
            usable = self.effective_members(members)
            if self.installed_groups.get(group_id) != usable:
                ops.append(NextHopGroup(group_id, usable))
        if len(ops) == 1 and not self.drop_installed:
            return []  # only the drop adjacency: not needed yet
        return ops

    def committed_refresh(self, ops: Sequence[FibOperation]) -> None:
        for op in ops:
            if type(op) is Adjacency:
                if op.id == DROP_ADJACENCY_ID:
                    self.drop_installed = True
                else:
                    self.installed_adjacencies[op.id] = op
            elif type(op) is NextHopGroup:
                self.installed_groups[op.id] = op.members

    # --- reporting ---------------------------------------------------------------------

    def summary(self) -> dict[str, int]:
        states = [self.state(a) for a in self.adjacencies.values()]
        empty = sum(1 for g in self.installed_groups.values() if g and g[0][0] == DROP_ADJACENCY_ID)
        return {
            "adjacencies": len(states),
            "unresolved": states.count(State.UNRESOLVED),
            "link_down": states.count(State.LINK_DOWN),
            "empty_groups": empty,
        }

    # --- helpers -----------------------------------------------------------------------

    def _users_of(self, adjacency_id: int, groups: dict[int, Members] | None) -> set[int]:
        if groups is None:
            return set(self._users.get(adjacency_id, ()))
        return {g for g, members in groups.items() if any(a == adjacency_id for a, _ in members)}
