"""The controller's subcommands of `corridor`: `controller` and `up` run it; `route`, `node`
and `stats` talk to it for people (tables) and scripts (`--json`). Any failure exits
non-zero with one line saying why.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import sys
from pathlib import Path
from typing import Any

DEFAULT_CONTROLLER = "unix:/run/corridor/controller.sock"
TIMEOUT = 30.0


def add_parsers(sub) -> None:
    from corridor.controller.config import EXAMPLE

    for name, help_, up in (
        ("controller", "serve corridor.v1.Controller: intent, stored, on every node", False),
        ("up", "run the controller and a local agent together (one server)", True),
    ):
        p = sub.add_parser(
            name,
            help=help_,
            epilog=f"A configuration file:\n\n{EXAMPLE}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("--config", required=True, metavar="FILE", help="the TOML file")
        p.add_argument(
            "--check",
            action="store_true",
            help="check the file, the store and the TLS files without changing anything, then exit",
        )
        p.add_argument(
            "--accept-empty-store",
            action="store_true",
            help="start although the store lost routes it held (emptied, truncated, replaced): "
            "what it holds now, perhaps nothing, becomes intent and every node is brought to it",
        )
        p.set_defaults(run=_run_up if up else _run_controller)

    client = argparse.ArgumentParser(add_help=False)
    client.add_argument(
        "--controller",
        default=os.environ.get("CORRIDOR_CONTROLLER", DEFAULT_CONTROLLER),
        metavar="ADDRESS",
        help="unix:/path or host:port (default: $CORRIDOR_CONTROLLER or %(default)s)",
    )
    client.add_argument("--ca", help="CA of the controller's certificate (mutual TLS)")
    client.add_argument("--cert", help="this client's certificate (mutual TLS)")
    client.add_argument("--key", help="this client's key (mutual TLS)")
    client.add_argument("--json", action="store_true", help="print JSON for scripts")

    route = sub.add_parser("route", help="routes in intent: add, del, list")
    rsub = route.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = rsub.add_parser(
        "add",
        parents=[client],
        help="add or replace a route",
        description="corridor route add 198.18.0.0/15 --via 198.18.0.2,eth1 "
        "--via 198.18.1.2,eth2,100,3   (gateway,port[,vlan[,weight]])",
    )
    add.add_argument("prefix")
    target = add.add_mutually_exclusive_group(required=True)
    target.add_argument("--via", action="append", metavar="GATEWAY,PORT[,VLAN[,WEIGHT]]")
    target.add_argument("--blackhole", action="store_true", help="drop silently")
    target.add_argument("--unreachable", action="store_true", help="drop with ICMP unreachable")
    add.add_argument("--node", default="", help="one node (default: every node)")
    delete = rsub.add_parser("del", parents=[client], help="delete a route")
    delete.add_argument("prefix")
    delete.add_argument("--node", default="", help="one node (default: the every-node route)")
    lst = rsub.add_parser("list", parents=[client], help="list routes")
    lst.add_argument("--node", help="only this node's routes ('' for the every-node routes)")
    lst.add_argument("--within", metavar="PREFIX", help="only prefixes inside this one")
    lst.add_argument("--limit", type=int, default=1000, help="at most this many (default 1000)")
    route.set_defaults(run=_run_route)

    node = sub.add_parser("node", help="nodes: add, del, list, status")
    nsub = node.add_subparsers(dest="action", required=True, metavar="ACTION")
    nadd = nsub.add_parser("add", parents=[client], help="register a node's agent")
    nadd.add_argument("name")
    nadd.add_argument("address", help="unix:/path/agent.sock or host:port")
    ndel = nsub.add_parser("del", parents=[client], help="forget a node")
    ndel.add_argument("name")
    nsub.add_parser("list", parents=[client], help="every node and its sync state")
    nstatus = nsub.add_parser("status", parents=[client], help="one node in detail")
    nstatus.add_argument("name")
    node.set_defaults(run=_run_node)

    stats = sub.add_parser("stats", parents=[client], help="intent sizes and node states")
    stats.set_defaults(run=_run_stats)


def _run_controller(args) -> int:
    from corridor.controller import main

    return main.run(args.config, args.check, args.accept_empty_store)


def _run_up(args) -> int:
    from corridor import up

    return up.run(args.config, args.check, args.accept_empty_store)


class CliError(Exception):
    pass


def _call(args, work) -> int:
    """Runs `work(stub)` against the controller; prints one line and returns 1 on failure."""
    import grpc

    from corridor.common.status import write_error
    from corridor.v1 import controller_pb2_grpc

    def credentials():
        try:
            return grpc.ssl_channel_credentials(
                Path(args.ca).read_bytes(), Path(args.key).read_bytes(),
                Path(args.cert).read_bytes(),
            )  # fmt: skip
        except (OSError, TypeError) as e:
            raise CliError(f"TLS needs --ca, --cert and --key as readable files: {e}") from e

    async def go(creds):
        if creds is not None:
            channel = grpc.aio.secure_channel(args.controller, creds)
        else:
            channel = grpc.aio.insecure_channel(args.controller)
        async with channel:
            return await work(controller_pb2_grpc.ControllerStub(channel))

    command = f"corridor {args.command}" + (f" {args.action}" if hasattr(args, "action") else "")
    try:
        tls = args.ca or args.cert or args.key
        return asyncio.run(go(credentials() if tls else None))
    except CliError as e:
        print(f"{command}: {e}", file=sys.stderr)
        return 2
    except grpc.RpcError as e:
        reason = e.details() or e.code().name
        details = write_error(e)
        if details is not None and details.violations:
            v = details.violations[0]
            more = len(details.violations) - 1
            reason = f"{v.field}: {v.description}" + (f" (and {more} more)" if more else "")
        if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            reason = f"cannot reach the controller at {args.controller}: {reason}"
        print(f"{command}: {reason}", file=sys.stderr)
        return 1


def _prefix(text: str):
    from corridor.common.addresses import checked_prefix_to_pb as prefix

    try:
        network = ipaddress.ip_network(text)
    except ValueError as e:
        raise CliError(f"{text!r} is not a prefix: {e}") from None
    return prefix(str(network))


def _next_hop(text: str):
    from corridor.v1 import controller_pb2

    parts = text.split(",")
    if not 2 <= len(parts) <= 4:
        raise CliError(f"--via {text!r}: expected GATEWAY,PORT[,VLAN[,WEIGHT]]")
    try:
        gateway = ipaddress.ip_address(parts[0]).packed
        vlan = int(parts[2]) if len(parts) > 2 else 0
        weight = int(parts[3]) if len(parts) > 3 else 1
    except ValueError as e:
        raise CliError(f"--via {text!r}: {e}") from None
    return controller_pb2.NextHop(gateway=gateway, port=parts[1], vlan=vlan, weight=weight)


def _run_route(args) -> int:
    from corridor.v1 import controller_pb2, dataplane_pb2

    if args.action == "add":

        async def work(stub):
            route = controller_pb2.RouteIntent(node=args.node, prefix=_prefix(args.prefix))
            if args.blackhole:
                route.kind = dataplane_pb2.ROUTE_KIND_BLACKHOLE
            elif args.unreachable:
                route.kind = dataplane_pb2.ROUTE_KIND_UNREACHABLE
            else:
                route.kind = dataplane_pb2.ROUTE_KIND_FORWARD
                route.next_hops.extend(_next_hop(v) for v in args.via)
            reply = await stub.Apply(controller_pb2.ApplyRequest(routes=[route]), timeout=TIMEOUT)
            _out(args, {"revision": reply.revision}, f"committed at revision {reply.revision}")
            return 0

    elif args.action == "del":

        async def work(stub):
            key = controller_pb2.RouteKey(node=args.node, prefix=_prefix(args.prefix))
            reply = await stub.Delete(controller_pb2.DeleteRequest(routes=[key]), timeout=TIMEOUT)
            if reply.deleted == 0:
                raise CliError(f"no route {args.prefix} for {_node_text(args.node)}")
            _out(args, {"revision": reply.revision}, f"deleted at revision {reply.revision}")
            return 0

    else:

        async def work(stub):
            request = controller_pb2.ListRoutesRequest(page_size=min(args.limit, 10_000) or 1)
            if args.node is not None:
                request.node = args.node
            if args.within:
                request.within.CopyFrom(_prefix(args.within))
            rows: list[dict[str, Any]] = []
            while len(rows) < args.limit:
                page = await stub.ListRoutes(request, timeout=TIMEOUT)
                rows.extend(_route_dict(r) for r in page.routes)
                if not page.next_page_token:
                    break
                request.page_token = page.next_page_token
            rows = rows[: args.limit]
            if args.json:
                print(json.dumps(rows, indent=1))
            else:
                _table(
                    ["NODE", "PREFIX", "KIND", "NEXT HOPS"],
                    [
                        [r["node"] or "*", r["prefix"], r["kind"], _hops_text(r["next_hops"])]
                        for r in rows
                    ],
                )
            return 0

    return _call(args, work)


def _run_node(args) -> int:
    from corridor.v1 import controller_pb2

    async def work(stub):
        if args.action == "add":
            node = controller_pb2.Node(name=args.name, address=args.address)
            reply = await stub.RegisterNode(
                controller_pb2.RegisterNodeRequest(node=node), timeout=TIMEOUT
            )
            _out(args, {"revision": reply.revision}, f"registered at revision {reply.revision}")
        elif args.action == "del":
            reply = await stub.DeregisterNode(
                controller_pb2.DeregisterNodeRequest(name=args.name), timeout=TIMEOUT
            )
            _out(args, {"revision": reply.revision}, f"deregistered at revision {reply.revision}")
        elif args.action == "list":
            reply = await stub.ListNodes(controller_pb2.ListNodesRequest(), timeout=TIMEOUT)
            _print_nodes(args, [_status_dict(s) for s in reply.nodes])
        else:
            status = await stub.GetNodeStatus(
                controller_pb2.GetNodeStatusRequest(name=args.name), timeout=TIMEOUT
            )
            d = _status_dict(status)
            if args.json:
                print(json.dumps(d, indent=1))
            else:
                width = max(map(len, d))
                for k, v in d.items():
                    print(f"{k:<{width}}  {v}")
        return 0

    return _call(args, work)


def _run_stats(args) -> int:
    from corridor.v1 import controller_pb2

    async def work(stub):
        stats = await stub.GetStats(controller_pb2.GetStatsRequest(), timeout=TIMEOUT)
        nodes = [_status_dict(s) for s in stats.node_status]
        intent = _sizes(stats.intent)
        if args.json:
            print(json.dumps({"revision": stats.revision, "intent": intent, "nodes": nodes}))
            return 0
        print(
            f"revision {stats.revision}: {intent['ipv4_routes']} IPv4 and "
            f"{intent['ipv6_routes']} IPv6 routes, {intent['next_hop_groups']} next-hop groups, "
            f"{intent['adjacencies']} adjacencies in intent; {stats.nodes} nodes"
        )
        _print_nodes(args, nodes)
        return 0

    return _call(args, work)


def _print_nodes(args, nodes: list[dict]) -> None:
    if args.json:
        print(json.dumps(nodes, indent=1))
        return
    _table(
        ["NODE", "ADDRESS", "STATE", "REVISION", "ROUTES", "LAG S", "DRIFT", "RETRIES",
         "LAST ERROR"],
        [
            [
                n["name"], n["address"], n["state"], n["synced_revision"],
                n["installed"]["ipv4_routes"] + n["installed"]["ipv6_routes"],
                f"{n['lag_seconds']:.3f}", n["drift_detected"], n["retries"],
                _error_text(n),
            ]
            for n in nodes
        ],
    )  # fmt: skip


def _error_text(node: dict) -> str:
    """The error a node is failing with and since when; else the last one it recovered from."""
    if node["last_error"]:
        return f"{node['last_error']} (since {node['last_error_time'] or '?'})"
    if node["cleared_error"]:
        return f"cleared {node['cleared_error_time']}: {node['cleared_error']}"
    return "-"


def _status_dict(s) -> dict:
    from corridor.v1 import controller_pb2

    return {
        "name": s.node.name,
        "address": s.node.address,
        "state": controller_pb2.SyncState.Name(s.state).removeprefix("SYNC_STATE_").lower(),
        "connected": s.connected,
        "in_sync": s.in_sync,
        "synced_revision": s.synced_revision,
        "lag_seconds": s.lag_seconds,
        "intended": _sizes(s.intended),
        "installed": _sizes(s.installed),
        "agent_generation": s.agent_generation,
        "reconnects": s.reconnects,
        "drift_detected": s.drift_detected,
        "drift_entries": s.drift_entries,
        "last_full_sync_seconds": s.last_full_sync_seconds,
        "last_full_sync_operations": s.last_full_sync_operations,
        "rx_packets": s.counters.rx_packets,
        "tx_packets": s.counters.tx_packets,
        "dropped_packets": s.counters.dropped_packets,
        "last_error": s.last_error,
        "last_error_time": _time_text(s, "last_error_time"),
        "retries": s.retries,
        "cleared_error": s.cleared_error,
        "cleared_error_time": _time_text(s, "cleared_error_time"),
    }


def _time_text(message, field: str) -> str:
    """A Timestamp field as UTC ISO 8601 text, or "" when it is unset."""
    if not message.HasField(field):
        return ""
    return getattr(message, field).ToDatetime().strftime("%Y-%m-%dT%H:%M:%SZ")


def _sizes(s) -> dict:
    return {
        "ipv4_routes": s.ipv4_routes,
        "ipv6_routes": s.ipv6_routes,
        "next_hop_groups": s.next_hop_groups,
        "adjacencies": s.adjacencies,
    }


def _route_dict(r) -> dict:
    from corridor.common.addresses import prefix_text
    from corridor.v1 import dataplane_pb2

    return {
        "node": r.node,
        "prefix": prefix_text(r.prefix.address, r.prefix.length),
        "kind": dataplane_pb2.RouteKind.Name(r.kind).removeprefix("ROUTE_KIND_").lower(),
        "next_hops": [
            {
                "gateway": str(ipaddress.ip_address(h.gateway)),
                "port": h.port,
                "vlan": h.vlan,
                "weight": h.weight,
            }
            for h in r.next_hops
        ],
    }


def _hops_text(hops: list[dict]) -> str:
    return " ".join(
        f"{h['gateway']}@{h['port']}" + (f".{h['vlan']}" if h["vlan"] else "")
        + (f"*{h['weight']}" if h["weight"] != 1 else "")
        for h in hops
    ) or "-"  # fmt: skip


def _node_text(node: str) -> str:
    return "every node" if not node else f"node {node}"


def _out(args, data: dict, text: str) -> None:
    print(json.dumps(data) if args.json else text)


def _table(header: list[str], rows: list[list]) -> None:
    rows = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    for line in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
