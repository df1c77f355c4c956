"""`corridor member add|remove|filter|list|counters` and `corridor billing report`: exchange members
through the controller, their counters as the node's agent has them now, and the month's
95th-percentile bill from the samples the controller stored (controller/members.py).

The plot needs matplotlib, which only `billing report --plot` imports: it stays out of the
daemons' runtime set (requirements/bench.txt has it, pinned); without it the command says
what to install and prints the figures all the same.
"""

from __future__ import annotations

import argparse
import json
import sys
from ipaddress import ip_address
from typing import Any

from corridor.cli_controller import TIMEOUT, CliError, call, out, table
from corridor.common.addresses import prefix_text


def add_parsers(sub: Any, client: argparse.ArgumentParser) -> None:
    member = sub.add_parser("member", help="exchange members: add, remove, list, counters")
    msub = member.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = msub.add_parser("add", parents=[client], help="name a member router's MAC on a port")
    add.add_argument("name")
    add.add_argument("--port", required=True, help="the node's port the member is on")
    add.add_argument("--vlan", type=int, default=0, help="802.1Q VLAN (default 0: untagged)")
    add.add_argument("--mac", required=True, help="the member router's MAC, aa:bb:cc:dd:ee:ff")
    add.add_argument("--node", default="", help="the node (default: the only one registered)")
    rm = msub.add_parser("remove", parents=[client], help="forget a member")
    rm.add_argument("name")
    filt = msub.add_parser(
        "filter",
        parents=[client],
        help="a member's source filter (BCP 38): the only prefixes it may send from",
    )
    filt.add_argument("name")
    filt.add_argument(
        "--allow",
        action="append",
        metavar="PREFIX",
        help="an allowed source prefix (repeat; the list replaces the member's filter)",
    )
    filt.add_argument(
        "--from-bgp",
        action="store_true",
        help="also allow the prefixes of the node's BGP routes through the member's next hops "
        "(--next-hop), as they are announced and withdrawn",
    )
    filt.add_argument(
        "--next-hop",
        action="append",
        metavar="ADDRESS",
        help="with --from-bgp: the member router's address on the peering LAN (repeat: IPv4 "
        "and IPv6; its EUI-64 link-local address counts too)",
    )
    filt.add_argument("--off", action="store_true", help="remove the filter: any source")
    msub.add_parser("list", parents=[client], help="every member")
    counters = msub.add_parser(
        "counters", parents=[client], help="every member's traffic now, as its node counts it"
    )
    counters.add_argument("--node", default="", help="one node (default: every node)")
    member.set_defaults(run=_run_member)

    billing = sub.add_parser("billing", help="95th-percentile billing from stored samples")
    bsub = billing.add_subparsers(dest="action", required=True, metavar="ACTION")
    report = bsub.add_parser(
        "report", parents=[client], help="a member's 95th percentile in and out for a month"
    )
    report.add_argument("--member", required=True)
    report.add_argument("--month", required=True, help="YYYY-MM (UTC)")
    report.add_argument("--plot", metavar="FILE.png", help="write the month's rates as a PNG")
    billing.set_defaults(run=_run_billing)


def _member_dict(m: Any) -> dict[str, Any]:
    return {
        "name": m.name,
        "node": m.node,
        "port": m.port,
        "vlan": m.vlan,
        "mac": m.mac.hex(":"),
        "id": m.id,
        "sources": [prefix_text(p.address, p.length) for p in m.allowed_sources]
        if m.filter_sources
        else None,
        "bgp": {
            "next_hops": [str(ip_address(a)) for a in m.bgp_next_hops],
            "prefixes": [prefix_text(p.address, p.length) for p in m.bgp_sources],
            "count": m.bgp_prefixes,
            "over_limit": m.bgp_over_limit,
            "pending": m.bgp_pending,
        }
        if m.from_bgp
        else None,
    }


def _filter_text(d: dict[str, Any]) -> str:
    """The SOURCES column: the static prefixes, then what BGP adds."""
    bgp = d["bgp"]
    if bgp is None:
        return _sources_text(d["sources"])
    derived = f"{bgp['count']} prefixes"
    if bgp["over_limit"]:
        derived = "over limit: not filtered"
    elif bgp["pending"]:
        derived += ", not filtered until zebra's table is whole"
    static = f"{_sources_text(d['sources'])} + " if d["sources"] else ""
    return f"{static}bgp via {','.join(bgp['next_hops'])}: {derived}"


def _sources_text(sources: list[str] | None) -> str:
    if sources is None:
        return "any"
    if not sources:
        return "none"
    return ",".join(sources[:4]) + (f",+{len(sources) - 4}" if len(sources) > 4 else "")


def _filter_args_problem(args: argparse.Namespace) -> str:
    """What is wrong with `member filter`'s flags taken together ('' if nothing)."""
    if args.off and (args.allow or args.from_bgp or args.next_hop):
        return "--off removes the filter: give it alone"
    if args.next_hop and not args.from_bgp:
        return "--next-hop names the member's BGP next hops: give it with --from-bgp"
    if not (args.off or args.allow or args.from_bgp):
        return "give --allow PREFIX, --from-bgp --next-hop ADDRESS, or --off"
    if args.from_bgp and not args.next_hop:
        return (
            "--from-bgp needs the member router's address(es) on the peering LAN: "
            "--next-hop ADDRESS (repeat for IPv4 and IPv6)"
        )
    return ""


def _run_member(args: argparse.Namespace) -> int:
    from corridor.common.addresses import checked_prefix_to_pb
    from corridor.controller.members import (
        MemberError,
        check_member,
        check_next_hops,
        check_sources,
    )
    from corridor.v1 import controller_pb2

    if args.action == "add":
        try:  # checked here too, so nothing is sent when the arguments are wrong
            mac = check_member(args.name, args.node or "-", args.port, args.vlan, args.mac)
        except MemberError as e:
            print(f"corridor member add: {e}", file=sys.stderr)
            return 2
    allowed = []
    hops: list[bytes] = []
    if args.action == "filter":
        problem = _filter_args_problem(args)
        if problem:
            print(f"corridor member filter: {problem}", file=sys.stderr)
            return 2
    if args.action == "filter" and not args.off:
        try:  # each prefix checked here: nothing is sent when one is wrong
            allowed = [checked_prefix_to_pb(p) for p in check_sources(args.name, args.allow or ())]
            if args.from_bgp:
                hops = [ip_address(a).packed for a in check_next_hops(args.name, args.next_hop)]
        except MemberError as e:
            print(f"corridor member filter: {e}", file=sys.stderr)
            return 2

    async def work(stub: Any) -> int:
        if args.action == "add":
            intent = controller_pb2.MemberIntent(
                name=args.name,
                node=args.node,
                port=args.port,
                vlan=args.vlan,
                mac=bytes.fromhex(mac.replace(":", "")),
            )
            m = await stub.AddMember(
                controller_pb2.AddMemberRequest(member=intent), timeout=TIMEOUT
            )
            d = _member_dict(m)
            out(args, d, f"member {m.name}: {d['mac']} on {m.node} {m.port} VLAN {m.vlan}")
        elif args.action == "remove":
            m = await stub.RemoveMember(
                controller_pb2.RemoveMemberRequest(name=args.name), timeout=TIMEOUT
            )
            out(args, _member_dict(m), f"member {m.name} removed")
        elif args.action == "filter":
            m = await stub.SetMemberFilter(
                controller_pb2.SetMemberFilterRequest(
                    name=args.name,
                    filter_sources=not args.off,
                    allowed_sources=allowed,
                    from_bgp=args.from_bgp,
                    bgp_next_hops=hops,
                ),
                timeout=TIMEOUT,
            )
            d = _member_dict(m)
            out(args, d, f"member {m.name}: sources {_filter_text(d)}")
        elif args.action == "list":
            reply = await stub.ListMembers(controller_pb2.ListMembersRequest(), timeout=TIMEOUT)
            rows = [_member_dict(m) for m in reply.members]
            if args.json:
                print(json.dumps(rows))
            else:
                table(
                    ["NAME", "NODE", "PORT", "VLAN", "MAC", "ID", "SOURCES"],
                    [
                        [
                            *(r[k] for k in ("name", "node", "port", "vlan", "mac", "id")),
                            _filter_text(r),
                        ]
                        for r in rows
                    ],
                )
        else:
            await _print_counters(args, stub)
        return 0

    return call(args, work)


async def _print_counters(args: argparse.Namespace, stub: Any) -> None:
    from corridor.v1 import controller_pb2

    if args.node:
        nodes = [args.node]
    else:
        listed = await stub.ListNodes(controller_pb2.ListNodesRequest(), timeout=TIMEOUT)
        nodes = [n.node.name for n in listed.nodes]
    rows = []
    for node in nodes:
        c = await stub.GetNodeCounters(
            controller_pb2.GetNodeCountersRequest(node=node), timeout=TIMEOUT
        )
        for m in c.members:
            rows.append(
                {
                    "node": node,
                    "member": "(unknown)" if m.unknown else m.name,
                    "port": m.port,
                    "vlan": m.vlan,
                    "rx_packets": m.rx_packets,
                    "rx_bytes": m.rx_bytes,
                    "tx_packets": m.tx_packets,
                    "tx_bytes": m.tx_bytes,
                    "drops": {d.reason: d.packets for d in m.drops},
                }
            )
    if args.json:
        print(json.dumps(rows))
        return
    table(
        ["NODE", "MEMBER", "PORT", "VLAN", "RX_PACKETS", "RX_BYTES", "TX_PACKETS", "TX_BYTES",
         "DROPPED"],
        [
            [r["node"], r["member"], r["port"] or "-", r["vlan"], r["rx_packets"], r["rx_bytes"],
             r["tx_packets"], r["tx_bytes"], sum(r["drops"].values())]
            for r in rows
        ],
    )  # fmt: skip


def _run_billing(args: argparse.Namespace) -> int:
    from corridor.controller.members import MemberError, Sample, billing, month_bounds
    from corridor.v1 import controller_pb2

    try:
        start, end = month_bounds(args.month)
    except MemberError as e:
        print(f"corridor billing report: {e}", file=sys.stderr)
        return 2

    async def work(stub: Any) -> int:
        request = controller_pb2.ListMemberSamplesRequest(name=args.member)
        # A margin either side: the intervals that end in the month need the samples that
        # start them (see members.billing).
        request.start.FromNanoseconds(int((start - MARGIN) * 1e9))
        request.end.FromNanoseconds(int((end + MARGIN) * 1e9))
        reply = await stub.ListMemberSamples(request, timeout=TIMEOUT)
        samples = [
            Sample(
                args.member, s.time.ToNanoseconds() / 1e9, s.rx_bytes, s.tx_bytes,
                s.rx_packets, s.tx_packets,
            )
            for s in reply.samples
        ]  # fmt: skip
        if len(samples) < 2:
            raise CliError(
                f"member {args.member} has {len(samples)} sample(s) in {args.month}: "
                "a rate needs two (is the member's name right, and was its node connected?)",
                1,
            )
        bill = billing(samples, start, end)
        data = {
            "member": args.member,
            "month": args.month,
            "samples": len(samples),
            "intervals": bill.intervals,
            "in_bps_95th": bill.in_bps,
            "out_bps_95th": bill.out_bps,
        }
        text = (
            f"member {args.member}, {args.month}: 95th percentile in {_bps(bill.in_bps)}, "
            f"out {_bps(bill.out_bps)} ({bill.intervals} intervals from {len(samples)} samples)"
        )
        if args.plot:
            _plot(args.plot, args.member, args.month, bill)
            data["plot"] = args.plot
            text += f"; plot written to {args.plot}"
        out(args, data, text)
        return 0

    return call(args, work)


MARGIN = 24 * 3600.0  # seconds of samples fetched beyond the month: one day of gap bridged


def _bps(value: float) -> str:
    for unit, scale in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if value >= scale:
            return f"{value / scale:.3f} {unit} ({value:.0f} bit/s)"
    return f"{value:.0f} bit/s"


def _plot(path: str, member: str, month: str, bill: Any) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display
        import datetime as dt

        import matplotlib.pyplot as plt
    except ImportError as e:
        raise CliError(f"--plot needs matplotlib (pip install matplotlib): {e}", 1) from e
    times: Any = [dt.datetime.fromtimestamp(t, dt.UTC) for t, _, _ in bill.rates]
    fig, ax = plt.subplots(figsize=(11, 4.5))
    ax.plot(times, [r[1] for r in bill.rates], lw=0.8, label="in (from the member)")
    ax.plot(times, [r[2] for r in bill.rates], lw=0.8, label="out (to the member)")
    ax.axhline(bill.in_bps, color="C0", ls="--", label=f"in 95th: {_bps(bill.in_bps)}")
    ax.axhline(bill.out_bps, color="C1", ls="--", label=f"out 95th: {_bps(bill.out_bps)}")
    ax.set_title(f"{member}, {month}: 5-minute rates and the 95th percentile")
    ax.set_ylabel("bit/s")
    ax.legend(loc="upper right", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    except OSError as e:
        raise CliError(f"--plot {path}: {e}", 1) from e
    finally:
        plt.close(fig)
