"""The subcommands of `corridor` that show what one node's agent holds now, asked through the
controller (so the CLI needs only the controller's address): `port list`, `counters` and
`route lookup`. `--node` names the node; without it, the only registered node.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
from typing import Any

from corridor import cli_controller as cc


def add_parsers(sub: Any, rsub: Any, client: argparse.ArgumentParser) -> None:
    """`port list` and `counters` under `sub`; `route lookup` under `rsub` (route's actions)."""
    node_help = "the node (default: the only registered node)"
    port = sub.add_parser("port", help="a node's ports: list")
    psub = port.add_subparsers(dest="action", required=True, metavar="ACTION")
    plist = psub.add_parser(
        "list", parents=[client], help="ports with link state, mode, MTU, MAC and addresses"
    )
    plist.add_argument("--node", help=node_help)
    port.set_defaults(run=_run_ports)
    from corridor import cli_port  # imports cli_controller, which imports this module

    cli_port.add_parsers(psub, client)

    counters = sub.add_parser(
        "counters",
        parents=[client],
        help="a node's packets and bytes per port and VLAN, drops per port and reason, "
        "next-hop states",
    )
    counters.add_argument("--node", help=node_help)
    counters.add_argument("--port", help="only this port's interfaces and drops")
    counters.set_defaults(run=_run_counters)

    lookup = rsub.add_parser(
        "lookup",
        parents=[client],
        help="the route an address takes on a node now: prefix, group, members and states",
    )
    lookup.add_argument("address", type=_address, metavar="ADDRESS")
    lookup.add_argument("--node", help=node_help)


def _address(text: str) -> bytes:
    try:
        return ipaddress.ip_address(text).packed
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


async def _node(args: argparse.Namespace, stub: Any) -> str:
    """--node, or the only registered node."""
    from corridor.v1 import controller_pb2

    if args.node is not None:
        return str(args.node)
    reply = await stub.ListNodes(controller_pb2.ListNodesRequest(), timeout=cc.TIMEOUT)
    names = [s.node.name for s in reply.nodes]
    if len(names) == 1:
        return names[0]
    if not names:
        raise cc.CliError("no node is registered", cc.EXIT_FAILED)
    raise cc.CliError(f"give --node: {len(names)} nodes are registered ({', '.join(names)})")


# -- port list


def _run_ports(args: argparse.Namespace) -> int:
    from corridor.v1 import controller_pb2

    async def work(stub: Any) -> int:
        node = await _node(args, stub)
        reply = await stub.ListNodePorts(
            controller_pb2.ListNodePortsRequest(node=node), timeout=cc.TIMEOUT
        )
        ports = [_port_dict(p) for p in reply.ports]
        if args.json:
            print(json.dumps({"node": node, "ports": ports}, indent=1))
            return 0
        cc.table(
            ["PORT", "LINK", "MODE", "XDP", "QUEUES", "MTU", "MAC", "VLANS", "ADDRESSES"],
            [
                [
                    p["name"], p["link"], p["mode"], p["xdp"], p["queues"], p["mtu"],
                    p["mac"] or "-",
                    ",".join(str(v["vlan"]) for v in p["vlans"]) or "-",
                    " ".join(p["addresses"]) or "-",
                ]
                for p in ports
            ],
        )  # fmt: skip
        return 0

    return cc.call(args, work)


def _enum_text(enum: Any, value: int, prefix: str) -> str:
    """ "up" for LINK_STATE_UP, "-" for the unspecified value."""
    if not value:
        return "-"
    return str(enum.Name(value)).removeprefix(prefix).lower().replace("_", "-")


def _addresses(addresses: Any) -> list[str]:
    return [f"{ipaddress.ip_address(a.address)}/{a.prefix_length}" for a in addresses]


def _mac(value: bytes) -> str:
    return ":".join(f"{b:02x}" for b in value)


def _port_dict(p: Any) -> dict[str, Any]:
    from corridor.v1 import dataplane_pb2

    return {
        "name": p.name,
        "link": _enum_text(dataplane_pb2.LinkState, p.link_state, "LINK_STATE_"),
        "mode": _enum_text(dataplane_pb2.PortMode, p.mode, "PORT_MODE_"),
        "xdp": _enum_text(dataplane_pb2.XdpMode, p.xdp_mode, "XDP_MODE_"),
        "queues": p.queues,
        "mtu": p.mtu,
        "mac": _mac(p.mac),
        "addresses": _addresses(p.addresses),
        "vlans": [{"vlan": v.vlan, "addresses": _addresses(v.addresses)} for v in p.sub_interfaces],
        "link_recoveries": p.link_recoveries,
    }


# -- counters


def _run_counters(args: argparse.Namespace) -> int:
    from corridor.v1 import controller_pb2

    async def work(stub: Any) -> int:
        node = await _node(args, stub)
        c = await stub.GetNodeCounters(
            controller_pb2.GetNodeCountersRequest(node=node), timeout=cc.TIMEOUT
        )
        interfaces = [i for i in c.interfaces if args.port is None or i.port == args.port]
        if args.port is not None and not interfaces:
            known = sorted({i.port for i in c.interfaces})
            raise cc.CliError(
                f"node {node} has no port {args.port!r} (its ports: {', '.join(known) or 'none'})",
                cc.EXIT_FAILED,
            )
        drops: dict[tuple[str, str], int] = {}  # (port, reason): packets over workers
        for d in c.drops:
            if args.port is None or d.port == args.port:
                drops[d.port, d.reason] = drops.get((d.port, d.reason), 0) + d.packets
        time = c.time.ToDatetime().strftime("%Y-%m-%dT%H:%M:%SZ") if c.HasField("time") else ""
        data: dict[str, Any] = {
            "node": node,
            "time": time,
            "interfaces": [
                {
                    "port": i.port, "vlan": i.vlan, "rx_packets": i.rx_packets,
                    "rx_bytes": i.rx_bytes, "tx_packets": i.tx_packets, "tx_bytes": i.tx_bytes,
                }
                for i in interfaces
            ],
            "workers": [
                {
                    "worker": w.worker, "rx_packets": w.rx_packets, "tx_packets": w.tx_packets,
                    "dropped_packets": w.dropped_packets, "rx_ring_dropped": w.rx_ring_dropped,
                }
                for w in c.workers
            ],
            "drops": [
                {"port": port, "reason": reason, "packets": n}
                for (port, reason), n in sorted(drops.items())
            ],
            "next_hops": {
                "adjacencies": c.next_hops.adjacencies,
                "unresolved": c.next_hops.unresolved,
                "link_down": c.next_hops.link_down,
                "empty_groups": c.next_hops.empty_groups,
            },
        }  # fmt: skip
        if c.HasField("glean"):
            g = c.glean
            data["glean"] = {f.name: getattr(g, f.name) for f in g.DESCRIPTOR.fields}
        if args.json:
            print(json.dumps(data, indent=1))
            return 0
        cc.table(
            ["PORT", "VLAN", "RX PACKETS", "RX BYTES", "TX PACKETS", "TX BYTES"],
            [
                [i["port"], i["vlan"] or "-", i["rx_packets"], i["rx_bytes"], i["tx_packets"],
                 i["tx_bytes"]]
                for i in data["interfaces"]
            ],
        )  # fmt: skip
        print()
        cc.table(
            ["WORKER", "RX PACKETS", "TX PACKETS", "DROPPED", "RX RING DROPPED"],
            [
                [w["worker"], w["rx_packets"], w["tx_packets"], w["dropped_packets"],
                 w["rx_ring_dropped"]]
                for w in data["workers"]
            ],
        )  # fmt: skip
        print()
        # Reasons that dropped something (--json lists the zeros too); port "-": drops not
        # told apart by port (tx_ring_full, rx_ring_dropped).
        cc.table(
            ["PORT", "DROP REASON", "PACKETS"],
            [[d["port"] or "-", d["reason"], d["packets"]] for d in data["drops"] if d["packets"]],
        )
        h = data["next_hops"]
        print(
            f"\nnext hops: {h['adjacencies']} adjacencies, {h['unresolved']} unresolved, "
            f"{h['link_down']} link down; {h['empty_groups']} groups with no usable member"
        )
        if "glean" in data:
            print(glean_line(data["glean"]))
        return 0

    return cc.call(args, work)


def glean_line(g: dict[str, int]) -> str:
    """The counters' line on hosts of attached subnets (GleanState, by field name)."""
    return (
        f"attached subnets: {g['hosts']} host routes, {g['pending']} resolving; "
        f"engine queued {g['queued']} ({g['deduplicated']} deduplicated, "
        f"{g['engine_rate_limited']} rate-limited, {g['full']} queue full); "
        f"{g['resolved']} resolved, {g['failed']} unanswered, {g['aged']} aged out, "
        f"{g['lost']} lost, {g['mac_changes']} MAC changes; left out: "
        f"{g['rate_limited']} over the rate, {g['table_full']} table full, "
        f"{g['ignored']} not a host of an attached subnet"
    )


# -- route lookup


def run_lookup(args: argparse.Namespace) -> int:
    from corridor.v1 import controller_pb2

    async def work(stub: Any) -> int:
        node = await _node(args, stub)
        reply = await stub.LookupRoute(
            controller_pb2.LookupRouteRequest(node=node, address=args.address), timeout=cc.TIMEOUT
        )
        data = _lookup_dict(node, args.address, reply)
        if args.json:
            print(json.dumps(data, indent=1))
        else:
            _print_lookup(data)
        return 0

    return cc.call(args, work)


def _lookup_dict(node: str, address: bytes, reply: Any) -> dict[str, Any]:
    from corridor.common.addresses import prefix_text
    from corridor.v1 import dataplane_pb2

    data: dict[str, Any] = {"node": node, "address": str(ipaddress.ip_address(address))}
    if not reply.HasField("route"):
        data["route"] = None
        return data
    r = reply.route
    data["route"] = {
        "prefix": prefix_text(r.prefix.address, r.prefix.length),
        "kind": _enum_text(dataplane_pb2.RouteKind, r.kind, "ROUTE_KIND_"),
        "next_hop_group_id": r.next_hop_group_id,
    }
    if reply.HasField("blackhole_dropped_packets"):
        data["route"]["dropped_packets"] = reply.blackhole_dropped_packets
    weights = {m.adjacency_id: m.weight for m in reply.group.members}
    data["members"] = [
        {
            "adjacency_id": a.id,
            "gateway": str(ipaddress.ip_address(a.gateway)) if a.gateway else "",
            "port": a.port,
            "vlan": a.vlan,
            "weight": weights.get(a.id, 0),
            "state": _enum_text(dataplane_pb2.AdjacencyState, a.state, "ADJACENCY_STATE_"),
            "mac": _mac(a.neighbour_mac or a.dst_mac),
        }
        for a in reply.adjacencies
    ]
    return data


def _print_lookup(data: dict[str, Any]) -> None:
    where = f"{data['address']} on node {data['node']}"
    route = data["route"]
    if route is None:
        print(f"{where}: no route (dropped, counted as no_route)")
        return
    if route["kind"] != "forward":
        dropped = route.get("dropped_packets")
        extra = "" if dropped is None else f", {dropped} packets dropped by this route"
        print(f"{where}: {route['prefix']} {route['kind']}{extra}")
        return
    members = data["members"]
    print(
        f"{where}: {route['prefix']} forward to group {route['next_hop_group_id']}, "
        f"{sum(m['state'] == 'usable' for m in members)} of {len(members)} members usable"
    )
    cc.table(
        ["ADJACENCY", "GATEWAY", "PORT", "VLAN", "WEIGHT", "STATE", "MAC"],
        [
            [m["adjacency_id"], m["gateway"] or "-", m["port"], m["vlan"] or "-", m["weight"],
             m["state"], m["mac"] or "-"]
            for m in members
        ],
    )  # fmt: skip
