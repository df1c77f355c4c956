"""The next-hop objects zebra has sent on one FPM connection, and the routes that use them.

With `fpm use-next-hop-groups` a route names a next-hop object (RTA_NH_ID) instead of carrying
its next hops. This table resolves the id so the consumer always receives concrete next hops,
and follows the kernel's semantics when an object changes under its routes: a replaced
object re-resolves every route that uses it (directly or through a group), a deleted object
deletes the routes that use it directly and leaves the groups that contained it.

A route or group may arrive before an object it names: when zebra (re)connects it replays its
next-hop objects by walking a hash table while new routes keep flowing, so the order is not
guaranteed. Such an update waits, bounded, until the object arrives; what still waits when
the connection ends is counted as `unknown_nexthop_id`.
"""

from __future__ import annotations

import socket
from dataclasses import replace
from typing import TypeVar

from corridor.fpm.netlink import DecodeError
from corridor.fpm.routes import (
    MAX_NEXT_HOPS,
    NextHop,
    NextHopUpdate,
    Operation,
    RouteType,
    RouteUpdate,
    Update,
)

# zebra makes one object per distinct set of next hops, a few per peer: this bound only
# stops a broken or hostile peer from growing the table without end.
MAX_NEXTHOP_OBJECTS = 65536
# Routes and groups waiting for an object they name: a full table's worth, no more.
MAX_WAITING = 1 << 21

_T = TypeVar("_T")
RouteKey = tuple[int, str]  # (table, prefix text): zebra sends the selected route per prefix


class NextHopTable:
    """Per connection: next-hop objects by id, which routes refer to which object, and the
    updates waiting for an object not sent yet."""

    def __init__(
        self, max_objects: int = MAX_NEXTHOP_OBJECTS, max_waiting: int = MAX_WAITING
    ) -> None:
        self.max_objects = max_objects
        self.max_waiting = max_waiting
        self.objects: dict[int, NextHopUpdate] = {}
        self.held = 0  # monotonic: updates that had to wait for an object
        self.late_errors: list[DecodeError] = []  # waiting updates refused on release
        self._groups_of: dict[int, set[int]] = {}  # member id -> ids of groups containing it
        self._routes_of: dict[int, set[RouteKey]] = {}  # object id -> routes naming it
        self._routes: dict[RouteKey, RouteUpdate] = {}  # routes naming an object, as sent
        self._waiting_routes: dict[RouteKey, RouteUpdate] = {}
        self._waiting_groups: dict[int, NextHopUpdate] = {}
        self._route_waiters: dict[int, set[RouteKey]] = {}  # missing id -> routes waiting
        self._group_waiters: dict[int, set[int]] = {}  # missing id -> groups waiting
        # What each object resolves to, worked out once for the many routes that name it;
        # emptied whenever an object changes (objects change rarely, routes by the million).
        self._resolved: dict[int, tuple[RouteType, tuple[NextHop, ...]]] = {}

    def __len__(self) -> int:
        return len(self.objects)

    @property
    def waiting(self) -> int:
        return len(self._waiting_routes) + len(self._waiting_groups)

    def apply(self, update: Update) -> list[Update]:
        """The updates the consumer must see for one decoded message, with every route's
        next hops resolved (possibly none yet, possibly more: routes that waited for this
        object, or that use it and change with it). Raises DecodeError, changing nothing."""
        if isinstance(update, RouteUpdate):
            return self._route(update)
        if update.op is Operation.ADD:
            return self._add_object(update)
        return self._delete_object(update)

    # -- routes ---------------------------------------------------------------------------

    def _route(self, route: RouteUpdate) -> list[Update]:
        key = (route.table, route.prefix)
        if route.op is Operation.DELETE or route.nexthop_id is None:
            self._unwait_route(key)
            self._forget_route(key)
            return [route]
        if route.type is not RouteType.UNICAST:
            self._unwait_route(key)
            self._forget_route(key)
            return [route]
        if route.nexthop_id not in self.objects:
            # the route installed under this key, if any, stays until this one resolves
            self._unwait_route(key)
            self._wait_check(f"route {route.prefix}", route.nexthop_id)
            self._waiting_routes[key] = route
            self._route_waiters.setdefault(route.nexthop_id, set()).add(key)
            self.held += 1
            return []
        resolved = self._resolve(route)
        self._unwait_route(key)
        self._forget_route(key)
        self._routes[key] = route
        self._routes_of.setdefault(route.nexthop_id, set()).add(key)
        return [resolved]

    def _wait_check(self, what: str, missing: int) -> None:
        if self.waiting >= self.max_waiting:
            raise DecodeError(
                "unknown_nexthop_id",
                f"{what}: next-hop object {missing} was never sent, and "
                f"{self.max_waiting} updates already wait for objects",
            )

    def _unwait_route(self, key: RouteKey) -> None:
        old = self._waiting_routes.pop(key, None)
        if old is not None and old.nexthop_id is not None:
            _discard(self._route_waiters, old.nexthop_id, key)

    def _forget_route(self, key: RouteKey) -> None:
        old = self._routes.pop(key, None)
        if old is not None and old.nexthop_id is not None:
            _discard(self._routes_of, old.nexthop_id, key)

    def _resolve(self, route: RouteUpdate) -> RouteUpdate:
        nexthop_id = route.nexthop_id
        assert nexthop_id is not None
        resolved = self._resolved.get(nexthop_id)
        if resolved is None:
            resolved = self._resolved[nexthop_id] = self._resolution(nexthop_id)
        kind, hops = resolved
        return RouteUpdate(route.op, route.prefix, kind, route.table, route.protocol, hops,
                           nexthop_id)  # fmt: skip

    def _resolution(self, nexthop_id: int) -> tuple[RouteType, tuple[NextHop, ...]]:
        found = self.objects[nexthop_id]
        if found.blackhole:
            return RouteType.BLACKHOLE, ()
        if not found.group:
            return RouteType.UNICAST, (NextHop(found.gateway, found.ifindex, 1),)
        hops: list[NextHop] = []
        for member in found.group:
            single = self.objects[member.id]  # a group is installed only once its members are
            if single.blackhole:
                return RouteType.BLACKHOLE, ()
            hops.append(NextHop(single.gateway, single.ifindex, member.weight))
        return RouteType.UNICAST, tuple(hops)

    # -- objects --------------------------------------------------------------------------

    def _add_object(self, update: NextHopUpdate) -> list[Update]:
        if update.id not in self.objects and len(self.objects) >= self.max_objects:
            raise DecodeError(
                "too_many_nexthop_objects",
                f"next hop {update.id}: the connection already holds {self.max_objects} "
                "next-hop objects",
            )
        if len(update.group) > MAX_NEXT_HOPS:  # the decoder checks it too; an invariant here
            raise DecodeError("too_many_next_hops", f"next-hop group {update.id}: too large")
        if update.group and update.id in self._groups_of:
            raise DecodeError(
                "undecodable",
                f"next-hop group {update.id}: is a member of another group (groups do not nest)",
            )
        missing = [m.id for m in update.group if m.id not in self.objects]
        for member in update.group:
            single = self.objects.get(member.id)
            if single is not None and single.group:
                raise DecodeError(
                    "undecodable",
                    f"next-hop group {update.id}: member {member.id} is itself a group",
                )
        if missing:
            self._unwait_group(update.id)
            self._wait_check(f"next-hop group {update.id}", missing[0])
            self._waiting_groups[update.id] = update
            for member_id in missing:
                self._group_waiters.setdefault(member_id, set()).add(update.id)
            self.held += 1
            return []
        self._unwait_group(update.id)
        old = self.objects.get(update.id)
        if old is not None:
            for member in old.group:
                _discard(self._groups_of, member.id, update.id)
        self.objects[update.id] = update
        self._resolved.clear()
        for member in update.group:
            self._groups_of.setdefault(member.id, set()).add(update.id)
        out: list[Update] = [update]
        if old is not None and old != update:
            out.extend(self._reresolve({update.id, *self._groups_of.get(update.id, ())}))
        out.extend(self._release(update.id))
        return out

    def _unwait_group(self, group_id: int) -> None:
        old = self._waiting_groups.pop(group_id, None)
        if old is not None:
            for member in old.group:
                _discard(self._group_waiters, member.id, group_id)

    def _release(self, object_id: int) -> list[Update]:
        """The groups and routes that waited for `object_id`, now that it is here."""
        out: list[Update] = []
        for group_id in sorted(self._group_waiters.pop(object_id, ())):
            group = self._waiting_groups.get(group_id)
            if group is None or any(m.id not in self.objects for m in group.group):
                continue  # still waiting for another member
            try:
                out.extend(self._add_object(group))
            except DecodeError as error:
                self._unwait_group(group_id)
                self.late_errors.append(error)
        for key in sorted(self._route_waiters.pop(object_id, ()), key=_key_order):
            route = self._waiting_routes.pop(key, None)
            if route is not None:
                out.extend(self._route(route))
        return out

    def _delete_object(self, update: NextHopUpdate) -> list[Update]:
        if update.id in self._waiting_groups:
            self._unwait_group(update.id)
            return [update]
        old = self.objects.pop(update.id, None)
        if old is None:
            raise DecodeError("unknown_nexthop_id", f"next hop {update.id}: deleted but never sent")
        self._resolved.clear()
        out: list[Update] = [update]
        for member in old.group:
            _discard(self._groups_of, member.id, update.id)
        out.extend(self._delete_routes_of(update.id))
        for group_id in sorted(self._groups_of.pop(update.id, ())):
            group = self.objects[group_id]
            remaining = tuple(m for m in group.group if m.id != update.id)
            if remaining:
                self.objects[group_id] = replace(group, group=remaining)
                self._resolved.clear()
                out.extend(self._reresolve({group_id}))
            else:  # the kernel removes a group whose last member goes, with its routes
                del self.objects[group_id]
                out.append(NextHopUpdate(op=Operation.DELETE, id=group_id))
                out.extend(self._delete_routes_of(group_id))
        return out

    def _reresolve(self, ids: set[int]) -> list[Update]:
        out: list[Update] = []
        for object_id in sorted(ids):
            for key in sorted(self._routes_of.get(object_id, ()), key=_key_order):
                out.append(self._resolve(self._routes[key]))
        return out

    def _delete_routes_of(self, object_id: int) -> list[Update]:
        out: list[Update] = []
        for key in sorted(self._routes_of.pop(object_id, ()), key=_key_order):
            route = self._routes.pop(key)
            out.append(replace(route, op=Operation.DELETE, next_hops=()))
        return out


def _discard(index: dict[int, set[_T]], key: int, value: _T) -> None:
    values = index.get(key)
    if values is not None:
        values.discard(value)
        if not values:
            del index[key]


def _key_order(key: RouteKey) -> tuple[int, bytes, int]:
    """By table, then IPv4 before IPv6, then address, then length."""
    table, prefix = key
    address, length = prefix.split("/")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    packed = socket.inet_pton(family, address)
    return (table, bytes([len(packed)]) + packed, int(length))
