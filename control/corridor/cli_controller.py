"""The controller's subcommands of `corridor`: `controller` and `up` run it; `route`, `node`,
`nexthop` and `stats` talk to it for people (tables) and scripts (`--json`).

Exit codes, the same for every subcommand: 0 done; 1 the controller refused the request or
it failed (unreachable, not found, a violation: one line per problem); 2 the command line
or a file it names is wrong (nothing was sent).
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

from corridor.common import logs

DEFAULT_CONTROLLER = "unix:/run/corridor/controller.sock"
TIMEOUT = 30.0
EXIT_FAILED = 1  # the controller refused or the call failed
EXIT_USAGE = 2  # the arguments or a file they name are wrong; argparse uses 2 as well


def add_client_options(parser: argparse.ArgumentParser, *, default: bool) -> None:
    """The options of every command that talks to the controller. The top-level parser holds
    the defaults; each subcommand accepts them again without defaults of its own
    (SUPPRESS), so `corridor --json route list` and `corridor route list --json` agree."""

    def d(value: Any) -> Any:
        return value if default else argparse.SUPPRESS

    parser.add_argument(
        "--controller",
        default=d(os.environ.get("CORRIDOR_CONTROLLER", DEFAULT_CONTROLLER)),
        metavar="ADDRESS",
        help=f"unix:/path or host:port (default: $CORRIDOR_CONTROLLER or {DEFAULT_CONTROLLER})",
    )
    parser.add_argument("--ca", default=d(None), help="CA of the controller's certificate (mTLS)")
    parser.add_argument("--cert", default=d(None), help="this client's certificate (mTLS)")
    parser.add_argument("--key", default=d(None), help="this client's key (mTLS)")
    parser.add_argument(
        "--json", action="store_true", default=d(False), help="print JSON for scripts"
    )


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
        logs.add_level_argument(p)
        p.set_defaults(run=_run_up if up else _run_controller)

    client = argparse.ArgumentParser(add_help=False)
    add_client_options(client, default=False)

    route = sub.add_parser("route", help="routes: add, del, list, load; lookup on a node")
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
    lst.add_argument(
        "--limit",
        type=_count,
        default=0,
        help="at most this many; says so on stderr when more exist (default: all)",
    )
    lst.add_argument(
        "--source",
        choices=("static", "bgp"),
        help="only the operator's routes or only BGP's (default: both, the operator's first)",
    )
    from corridor import cli_agent, cli_load

    cli_load.add_parser(rsub, client)
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

    nexthop = sub.add_parser(
        "nexthop", help="drain a next hop (traffic moves to the other members) or restore it"
    )
    hsub = nexthop.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, help_ in (
        ("drain", "take a next hop out of every group that holds it (on one node or all)"),
        ("restore", "put a drained next hop back"),
    ):
        h = hsub.add_parser(action, parents=[client], help=help_)
        h.add_argument("next_hop", metavar="GATEWAY,PORT[,VLAN]")
        h.add_argument("--node", default="", help="one node (default: every node)")
    nexthop.set_defaults(run=_run_nexthop)

    cli_agent.add_parsers(sub, rsub, client)
    from corridor import cli_members

    cli_members.add_parsers(sub, client)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count (0 or more)")
    return value


def _run_controller(args) -> int:
    from corridor.controller import main

    return main.run(args.config, args.check, args.accept_empty_store, args.log_level)


def _run_up(args) -> int:
    from corridor import up

    return up.run(args.config, args.check, args.accept_empty_store, args.log_level)


class CliError(Exception):
    """A command that cannot go on: one line for the user and the exit code (EXIT_USAGE when
    the arguments are at fault, EXIT_FAILED when the controller's answer is)."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def call(args, work) -> int:
    """Runs `work(stub)` against the controller. On failure prints one line per problem,
    each starting with the command, and returns the exit code."""
    import grpc

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

    command = command_name(args)
    try:
        tls = args.ca or args.cert or args.key
        return asyncio.run(go(credentials() if tls else None))
    except CliError as e:
        print(f"{command}: {e}", file=sys.stderr)
        return e.code
    except grpc.RpcError as e:
        for line in rpc_error_lines(e, args.controller):
            print(f"{command}: {line}", file=sys.stderr)
        return EXIT_FAILED


def command_name(args) -> str:
    return f"corridor {args.command}" + (f" {args.action}" if hasattr(args, "action") else "")


def rpc_error_lines(e, controller: str) -> list[str]:
    """What went wrong with a call, one line per problem: every violation the controller
    listed (a batch is refused whole, so the user fixes them all at once), else the message."""
    import grpc

    from corridor.common.status import write_error

    details = write_error(e)
    if details is not None and details.violations:
        return [f"{v.field}: {v.description}" for v in details.violations]
    reason = e.details() or e.code().name
    # The controller names a node's agent it could not reach ("node a's agent at ..."); any
    # other such failure is the controller's own.
    unreachable = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    if e.code() in unreachable and not reason.startswith("node "):
        reason = f"cannot reach the controller at {controller}: {reason}"
    return [reason]


def _prefix(text: str):
    from corridor.common.addresses import checked_prefix_to_pb as prefix

    try:
        network = ipaddress.ip_network(text)
    except ValueError as e:
        raise CliError(f"{text!r} is not a prefix: {e}") from None
    return prefix(str(network))


def next_hop(text: str):
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

    if args.action == "load":
        from corridor import cli_load

        return cli_load.run(args)
    if args.action == "lookup":
        from corridor import cli_agent

        return cli_agent.run_lookup(args)
    if args.action == "add":

        async def work(stub):
            route = controller_pb2.RouteIntent(node=args.node, prefix=_prefix(args.prefix))
            if args.blackhole:
                route.kind = dataplane_pb2.ROUTE_KIND_BLACKHOLE
            elif args.unreachable:
                route.kind = dataplane_pb2.ROUTE_KIND_UNREACHABLE
            else:
                route.kind = dataplane_pb2.ROUTE_KIND_FORWARD
                route.next_hops.extend(next_hop(v) for v in args.via)
            reply = await stub.Apply(controller_pb2.ApplyRequest(routes=[route]), timeout=TIMEOUT)
            out(args, {"revision": reply.revision}, f"committed at revision {reply.revision}")
            return 0

    elif args.action == "del":

        async def work(stub):
            key = controller_pb2.RouteKey(node=args.node, prefix=_prefix(args.prefix))
            reply = await stub.Delete(controller_pb2.DeleteRequest(routes=[key]), timeout=TIMEOUT)
            if reply.deleted == 0:
                raise CliError(f"no route {args.prefix} for {_node_text(args.node)}", EXIT_FAILED)
            out(args, {"revision": reply.revision}, f"deleted at revision {reply.revision}")
            return 0

    else:

        async def work(stub):
            limit = args.limit or None
            request = controller_pb2.ListRoutesRequest(page_size=min(limit or 10_000, 10_000))
            if args.node is not None:
                request.node = args.node
            if args.within:
                request.within.CopyFrom(_prefix(args.within))
            if args.source:
                request.source = controller_pb2.RouteSource.Value(
                    f"ROUTE_SOURCE_{args.source.upper()}"
                )
            rows: list[dict[str, Any]] = []
            more = False
            while True:
                page = await stub.ListRoutes(request, timeout=TIMEOUT)
                rows.extend(
                    _route_dict(r, source, active)
                    for r, source, active in zip(
                        page.routes, page.sources, page.active, strict=False
                    )
                )
                if not page.next_page_token:
                    break
                if limit is not None and len(rows) >= limit:
                    more = True
                    break
                request.page_token = page.next_page_token
            if limit is not None and len(rows) > limit:
                rows, more = rows[:limit], True
            if args.json:
                print(json.dumps(rows, indent=1))
            else:
                table(
                    ["NODE", "PREFIX", "SOURCE", "ACTIVE", "KIND", "NEXT HOPS"],
                    [
                        [
                            r["node"] or "*", r["prefix"], r["source"],
                            "yes" if r["active"] else "no", r["kind"],
                            _hops_text(r["next_hops"]),
                        ]
                        for r in rows
                    ],
                )  # fmt: skip
            if more:
                print(
                    f"{command_name(args)}: stopped at --limit {limit}; more routes exist "
                    "(a larger --limit, 0 for all, or a narrower --within)",
                    file=sys.stderr,
                )
            return 0

    return call(args, work)


def _run_node(args) -> int:
    from corridor.v1 import controller_pb2

    async def work(stub):
        if args.action == "add":
            node = controller_pb2.Node(name=args.name, address=args.address)
            reply = await stub.RegisterNode(
                controller_pb2.RegisterNodeRequest(node=node), timeout=TIMEOUT
            )
            out(args, {"revision": reply.revision}, f"registered at revision {reply.revision}")
        elif args.action == "del":
            reply = await stub.DeregisterNode(
                controller_pb2.DeregisterNodeRequest(name=args.name), timeout=TIMEOUT
            )
            out(args, {"revision": reply.revision}, f"deregistered at revision {reply.revision}")
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
                _print_status(d)
        return 0

    return call(args, work)


def _run_stats(args) -> int:
    from corridor.v1 import controller_pb2

    async def work(stub):
        stats = await stub.GetStats(controller_pb2.GetStatsRequest(), timeout=TIMEOUT)
        nodes = [_status_dict(s) for s in stats.node_status]
        intent = _sizes(stats.intent)
        bgp = _sizes(stats.bgp)
        leadership = _leadership_dict(stats.leadership)
        if args.json:
            print(
                json.dumps(
                    {
                        "revision": stats.revision,
                        "intent": intent,
                        "bgp": bgp,
                        "nodes": nodes,
                        "leadership": leadership,
                    }
                )
            )
            return 0
        print(
            f"revision {stats.revision}: {intent['ipv4_routes']} IPv4 and "
            f"{intent['ipv6_routes']} IPv6 routes, {intent['next_hop_groups']} next-hop groups, "
            f"{intent['adjacencies']} adjacencies in intent; {stats.nodes} nodes"
        )
        print(
            f"bgp: {bgp['ipv4_routes']} IPv4 and {bgp['ipv6_routes']} IPv6 routes, "
            f"{bgp['next_hop_groups']} next-hop groups, {bgp['adjacencies']} adjacencies"
        )
        print(f"leader: {_leadership_text(leadership)}")
        _print_nodes(args, nodes)
        return 0

    return call(args, work)


def _run_nexthop(args) -> int:
    from corridor.v1 import controller_pb2

    parts = args.next_hop.split(",")
    try:
        if not 2 <= len(parts) <= 3 or not parts[1]:
            raise ValueError("expected GATEWAY,PORT[,VLAN]")
        gateway = ipaddress.ip_address(parts[0]).packed
        vlan = int(parts[2]) if len(parts) > 2 else 0
    except ValueError as e:
        print(f"{command_name(args)}: {args.next_hop!r}: {e}", file=sys.stderr)
        return EXIT_USAGE
    drained = args.action == "drain"

    async def work(stub):
        reply = await stub.SetNextHopState(
            controller_pb2.SetNextHopStateRequest(
                node=args.node, gateway=gateway, port=parts[1], vlan=vlan, drained=drained
            ),
            timeout=TIMEOUT,
        )
        done = "drained" if drained else "restored"
        out(
            args,
            {"revision": reply.revision, "groups": reply.groups, "drained": drained},
            f"{done} {args.next_hop} on {_node_text(args.node)} at revision {reply.revision}: "
            f"in {reply.groups} next-hop groups",
        )
        return 0

    return call(args, work)


# How `node status` names each field for people, in this order; sizes and counts as numbers.
_STATUS_LABELS = (
    ("name", "node"), ("address", "address"), ("state", "state"), ("connected", "connected"),
    ("in_sync", "in sync"), ("synced_revision", "synced revision"), ("lag_seconds", "lag"),
    ("intended", "intended"), ("installed", "installed"),
    ("agent_generation", "agent generation"), ("reconnects", "reconnects"),
    ("drift_detected", "drift detected"), ("drift_entries", "drift entries"),
    ("last_full_sync_seconds", "last full sync"),
    ("last_full_sync_operations", "last full sync operations"),
    ("rx_packets", "rx packets"), ("tx_packets", "tx packets"),
    ("dropped_packets", "dropped packets"), ("retries", "retries"),
)  # fmt: skip


def _print_status(d: dict) -> None:
    """One node for people: sizes as "a IPv4, b IPv6 routes; ...", seconds rounded to ms,
    yes/no for flags, the error with its time."""

    def text(key: str, value: Any) -> str:
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, dict):
            return (
                f"{value['ipv4_routes']} IPv4, {value['ipv6_routes']} IPv6 routes; "
                f"{value['next_hop_groups']} groups; {value['adjacencies']} adjacencies"
            )
        if key.endswith("_seconds"):
            return f"{value:.3f} s"
        return str(value)

    lines = [(label, text(key, d[key])) for key, label in _STATUS_LABELS]
    lines.append(("last error", _error_text(d)))
    lines.append(("leader", _leadership_text(d["leadership"])))
    bgp = d.get("bgp")
    if bgp is not None:
        lines.append(("bgp", f"zebra {'connected' if bgp['connected'] else 'not connected'} "
                             f"({bgp['sessions']} sessions) on {bgp['listen']}"))  # fmt: skip
        lines.append(("bgp routes", f"{bgp['routes']} ({bgp['active_routes']} active, "
                                    f"{bgp['stale_routes']} stale)"))  # fmt: skip
        for key in ("not_installed", "fpm_errors"):
            reasons = ", ".join(f"{k} {v}" for k, v in bgp[key].items()) or "none"
            lines.append((f"bgp {key.replace('_', ' ')}", reasons))
    width = max(len(label) for label, _ in lines)
    for label, value in lines:
        print(f"{label:<{width}}  {value}")


def _print_nodes(args, nodes: list[dict]) -> None:
    if args.json:
        print(json.dumps(nodes, indent=1))
        return
    table(
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
        "bgp": _bgp_dict(s.bgp) if s.HasField("bgp") else None,
        "leadership": _leadership_dict(s.leadership),
    }


def _leadership_dict(x) -> dict:
    return {
        "backend": x.backend,
        "leading": x.leading,
        "leader": x.leader,
        "leader_since": _time_text(x, "leader_since"),
        "election_id": x.election_id,
        "controller": x.name,
        "leader_changes": x.leader_changes,
    }


def _leadership_text(x: dict) -> str:
    """Which controller leads, as the one asked sees it."""
    if x["leading"]:
        who = x["controller"] or "this controller"
        return (
            f"{who} leads ({x['backend']} store) since {x['leader_since'] or '?'}, "
            f"election id {x['election_id']}:0"
        )
    if x["leader"]:
        return (
            f"{x['leader']} leads since {x['leader_since'] or '?'} "
            f"({x['controller'] or 'this controller'} follows; ask the leader for sync state)"
        )
    return "no controller leads (etcd has no quorum, or an election is under way)"


def _bgp_dict(b) -> dict:
    return {
        "listen": b.listen,
        "connected": b.connected,
        "sessions": b.sessions,
        "routes": b.routes,
        "active_routes": b.active_routes,
        "stale_routes": b.stale_routes,
        "received": b.received,
        "filtered": b.filtered,
        "swept": b.swept,
        "not_installed": dict(sorted(b.not_installed.items())),
        "not_installed_total": dict(sorted(b.not_installed_total.items())),
        "fpm_errors": dict(sorted(b.fpm_errors.items())),
        "fpm_messages": b.fpm_messages,
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


def _route_dict(r, source: int = 0, active: bool = True) -> dict:
    from corridor.common.addresses import prefix_text
    from corridor.v1 import controller_pb2, dataplane_pb2

    return {
        "node": r.node,
        "prefix": prefix_text(r.prefix.address, r.prefix.length),
        "source": controller_pb2.RouteSource.Name(source).removeprefix("ROUTE_SOURCE_").lower(),
        "active": active,
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


def out(args, data: dict, text: str) -> None:
    print(json.dumps(data) if args.json else text)


def table(header: list[str], rows: list[list]) -> None:
    rows = [[str(c) for c in r] for r in rows]
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    for line in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
