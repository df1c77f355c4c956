"""The next-hop objects zebra has sent on one FPM connection, and the routes that use them.

With `fpm use-next-hop-groups` a route names a next-hop object (RTA_NH_ID) instead of carrying
its next hops. This table resolves the id so the consumer always receives concrete next hops,
and follows the kernel's semantics when an object changes under its routes: a replaced
object re-resolves every route that uses it (directly or through a group), a deleted object
deletes the routes that use it directly and leaves the groups that contained it.
"""

from __future__ import annotations

from dataclasses import replace

from corridor.fpm.netlink import DecodeError
from corridor.fpm.routes import (
    MAX_NEXT_HOPS,
    IPNetwork,
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

RouteKey = tuple[int, IPNetwork]  # (table, prefix): zebra sends the selected route per prefix


class NextHopTable:
    """Per connection: next-hop objects by id, and which routes refer to which object."""

    def __init__(self, max_objects: int = MAX_NEXTHOP_OBJECTS) -> None:
        self.max_objects = max_objects
        self.objects: dict[int, NextHopUpdate] = {}
        self._groups_of: dict[int, set[int]] = {}  # member id -> ids of groups containing it
        self._routes_of: dict[int, set[RouteKey]] = {}  # object id -> routes naming it
        self._routes: dict[RouteKey, RouteUpdate] = {}  # routes naming an object, as sent

    def __len__(self) -> int:
        return len(self.objects)

    def apply(self, update: Update) -> list[Update]:
        """The updates the consumer must see for one decoded message, with every route's
        next hops resolved. Raises DecodeError (and changes nothing) when it cannot."""
        if isinstance(update, RouteUpdate):
            return [self._route(update)]
        if update.op is Operation.ADD:
            return self._add_object(update)
        return self._delete_object(update)

    # -- routes ---------------------------------------------------------------------------

    def _route(self, route: RouteUpdate) -> RouteUpdate:
        key = (route.table, route.prefix)
        if route.op is Operation.DELETE:
            self._forget_route(key)
            return route
        if route.nexthop_id is None or route.type is not RouteType.UNICAST:
            self._forget_route(key)
            return route
        resolved = self._resolve(route)
        self._forget_route(key)
        self._routes[key] = route
        self._routes_of.setdefault(route.nexthop_id, set()).add(key)
        return resolved

    def _forget_route(self, key: RouteKey) -> None:
        old = self._routes.pop(key, None)
        if old is not None and old.nexthop_id is not None:
            users = self._routes_of.get(old.nexthop_id)
            if users is not None:
                users.discard(key)
                if not users:
                    del self._routes_of[old.nexthop_id]

    def _resolve(self, route: RouteUpdate) -> RouteUpdate:
        assert route.nexthop_id is not None
        found = self.objects.get(route.nexthop_id)
        if found is None:
            raise DecodeError(
                "unknown_nexthop_id",
                f"route {route.prefix}: next-hop object {route.nexthop_id} was never sent "
                "(zebra sends RTM_NEWNEXTHOP before the routes that use it)",
            )
        if found.blackhole:
            return replace(route, type=RouteType.BLACKHOLE, next_hops=())
        if not found.group:
            return replace(route, next_hops=(NextHop(found.gateway, found.ifindex, 1),))
        hops: list[NextHop] = []
        for member in found.group:
            single = self.objects[member.id]  # members are checked when the group arrives
            if single.blackhole:
                return replace(route, type=RouteType.BLACKHOLE, next_hops=())
            hops.append(NextHop(single.gateway, single.ifindex, member.weight))
        return replace(route, next_hops=tuple(hops))

    # -- objects --------------------------------------------------------------------------

    def _add_object(self, update: NextHopUpdate) -> list[Update]:
        if update.id not in self.objects and len(self.objects) >= self.max_objects:
            raise DecodeError(
                "too_many_nexthop_objects",
                f"next hop {update.id}: the connection already holds {self.max_objects} "
                "next-hop objects",
            )
        for member in update.group:
            single = self.objects.get(member.id)
            if single is None:
                raise DecodeError(
                    "unknown_nexthop_id",
                    f"next-hop group {update.id}: member {member.id} was never sent",
                )
            if single.group:
                raise DecodeError(
                    "undecodable",
                    f"next-hop group {update.id}: member {member.id} is itself a group",
                )
        if update.group and update.id in self._groups_of:
            raise DecodeError(
                "undecodable",
                f"next-hop group {update.id}: is a member of another group (groups do not nest)",
            )
        if len(update.group) > MAX_NEXT_HOPS:  # the decoder checks it too; an invariant here
            raise DecodeError("too_many_next_hops", f"next-hop group {update.id}: too large")
        old = self.objects.get(update.id)
        if old is not None:
            for member in old.group:
                self._leave_group(member.id, update.id)
        self.objects[update.id] = update
        for member in update.group:
            self._groups_of.setdefault(member.id, set()).add(update.id)
        if old is None or old == update:
            return [update]
        return [update, *self._reresolve({update.id, *self._groups_of.get(update.id, ())})]

    def _delete_object(self, update: NextHopUpdate) -> list[Update]:
        old = self.objects.pop(update.id, None)
        if old is None:
            raise DecodeError("unknown_nexthop_id", f"next hop {update.id}: deleted but never sent")
        out: list[Update] = [update]
        for member in old.group:
            self._leave_group(member.id, update.id)
        out.extend(self._delete_routes_of(update.id))
        for group_id in sorted(self._groups_of.pop(update.id, ())):
            group = self.objects[group_id]
            remaining = tuple(m for m in group.group if m.id != update.id)
            if remaining:
                self.objects[group_id] = replace(group, group=remaining)
                out.extend(self._reresolve({group_id}))
            else:  # the kernel removes a group whose last member goes, with its routes
                del self.objects[group_id]
                out.append(NextHopUpdate(op=Operation.DELETE, id=group_id))
                out.extend(self._delete_routes_of(group_id))
        return out

    def _leave_group(self, member: int, group: int) -> None:
        groups = self._groups_of.get(member)
        if groups is not None:
            groups.discard(group)
            if not groups:
                del self._groups_of[member]

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


def _key_order(key: RouteKey) -> tuple[int, int, int, int]:
    table, prefix = key
    return (table, prefix.version, int(prefix.network_address), prefix.prefixlen)
