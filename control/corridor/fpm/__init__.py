"""Routes from FRR: zebra's FPM stream (`-M dplane_fpm_nl`) decoded into route and next-hop
updates with concrete next hops, delivered in batches to a sink. Depends only on the standard
library and pyroute2; the controller wires it to its intent (see docs/fpm.md)."""

from corridor.fpm.listener import (
    DEFAULT_PORT,
    FpmConnection,
    FpmCounters,
    FpmListener,
    FpmSink,
    Peer,
    start_listener,
)
from corridor.fpm.netlink import DecodeError, decode_message
from corridor.fpm.nexthops import NextHopTable
from corridor.fpm.routes import (
    MAX_NEXT_HOPS,
    GroupMember,
    NextHop,
    NextHopUpdate,
    Operation,
    RouteType,
    RouteUpdate,
    Update,
)

__all__ = [
    "DEFAULT_PORT",
    "MAX_NEXT_HOPS",
    "DecodeError",
    "FpmConnection",
    "FpmCounters",
    "FpmListener",
    "FpmSink",
    "GroupMember",
    "NextHop",
    "NextHopTable",
    "NextHopUpdate",
    "Operation",
    "Peer",
    "RouteType",
    "RouteUpdate",
    "Update",
    "decode_message",
    "start_listener",
]
