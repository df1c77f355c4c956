"""`corridor port policy|policies`: the edge protection of a node's sub-interfaces (uRPF,
the ethertype and source MAC filters, port security) through the controller, which stores
it and pushes it to the node's agent. A `policy` call changes only what its flags name: the
rest of the stored policy stays.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from corridor.cli_controller import EXIT_USAGE, TIMEOUT, call, command_name, out, table
from corridor.common.edge import (
    OFF,
    EdgePolicy,
    UrpfMode,
    checked_macs,
    policy_from_pb,
    policy_to_pb,
    source_mac,
)
from corridor.common.errors import FieldError


def _switch(text: str) -> bool:
    if text in ("on", "true", "yes"):
        return True
    if text in ("off", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r}: use on or off")


def add_parsers(psub, client: argparse.ArgumentParser) -> None:
    """`policy` and `policies` among `port`'s actions (`psub`)."""
    p = psub.add_parser(
        "policy",
        parents=[client],
        help="set a sub-interface's edge policy (only what the flags name changes)",
    )
    p.add_argument("node")
    p.add_argument("port")
    p.add_argument("--vlan", type=int, default=0, help="802.1Q VLAN (default 0: untagged)")
    p.add_argument("--urpf", choices=[m.value for m in UrpfMode], help="RFC 3704 mode")
    p.add_argument(
        "--allow-default", type=_switch, metavar="on|off", help="the default route counts"
    )
    p.add_argument(
        "--ethertype-filter",
        type=_switch,
        metavar="on|off",
        help="accept only IPv4, IPv6 and ARP (dropped in XDP)",
    )
    p.add_argument(
        "--mac-filter",
        type=_switch,
        metavar="on|off",
        help="accept only the allowed source MACs (dropped in XDP)",
    )
    p.add_argument(
        "--port-security",
        type=_switch,
        metavar="on|off",
        help="accept only IPv4, IPv6 and ARP from the members' MACs (and --allowed-macs)",
    )
    p.add_argument(
        "--allowed-macs",
        metavar="MAC,MAC,...",
        help="the allowed source MACs, replacing the stored list ('' for none)",
    )
    lst = psub.add_parser(
        "policies", parents=[client], help="a node's stored policies and its agent's view"
    )
    lst.add_argument("node")
    p.set_defaults(run=_run_port)
    lst.set_defaults(run=_run_port)


def _changed(args, policy: EdgePolicy) -> EdgePolicy:
    """`policy` with the flags given applied; FieldError for a bad MAC."""
    if args.urpf is not None:
        policy = replace(policy, urpf=UrpfMode(args.urpf))
    if args.allow_default is not None:
        policy = replace(policy, urpf_allow_default=args.allow_default)
    if args.ethertype_filter is not None:
        policy = replace(policy, ethertype_filter=args.ethertype_filter)
    if args.mac_filter is not None:
        policy = replace(policy, mac_filter=args.mac_filter)
    if args.port_security is not None:
        policy = replace(policy, port_security=args.port_security)
    if args.allowed_macs is not None:
        texts = [m for m in args.allowed_macs.split(",") if m]
        macs = [source_mac(m, f"--allowed-macs[{i}]") for i, m in enumerate(texts)]
        policy = replace(policy, allowed_macs=checked_macs(macs, "--allowed-macs"))
    return policy


def _run_port(args) -> int:
    from corridor.v1 import common_pb2, controller_pb2

    if args.action == "policies":
        return call(args, lambda stub: _list(args, stub))
    flags = (
        args.urpf,
        args.allow_default,
        args.ethertype_filter,
        args.mac_filter,
        args.port_security,
    )
    if all(f is None for f in flags) and args.allowed_macs is None:
        print(
            f"{command_name(args)}: nothing to change; give --urpf, --allow-default, "
            "--ethertype-filter, --mac-filter, --port-security or --allowed-macs",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        _changed(args, OFF)  # the flags' own faults, before any call
    except FieldError as e:
        print(f"{command_name(args)}: {e}", file=sys.stderr)
        return EXIT_USAGE

    async def work(stub) -> int:
        listed = await stub.ListPortPolicies(
            controller_pb2.ListNodePortPoliciesRequest(node=args.node), timeout=TIMEOUT
        )
        stored = {(p.port, p.vlan): p.policy for p in listed.stored}
        current = OFF
        if (args.port, args.vlan) in stored:
            current = policy_from_pb(stored[(args.port, args.vlan)], "stored")
        policy = _changed(args, current)
        if policy.mac_filter and not policy.allowed_macs and not policy.port_security:
            print(
                f"{command_name(args)}: --mac-filter on with no allowed MAC would drop every "
                "frame; give --allowed-macs",
                file=sys.stderr,
            )
            return EXIT_USAGE
        await stub.SetPortPolicy(
            controller_pb2.SetPortPolicyRequest(
                node=args.node,
                policy=common_pb2.PortPolicy(
                    port=args.port, vlan=args.vlan, policy=policy_to_pb(policy)
                ),
            ),
            timeout=TIMEOUT,
        )
        out(
            args,
            {"node": args.node, "port": args.port, "vlan": args.vlan, **_policy_dict(policy)},
            f"{args.node} {args.port} VLAN {args.vlan}: {policy.describe()}",
        )
        return 0

    return call(args, work)


def _policy_dict(p: EdgePolicy) -> dict:
    return {
        "urpf": p.urpf.value,
        "urpf_allow_default": p.urpf_allow_default,
        "ethertype_filter": p.ethertype_filter,
        "mac_filter": p.mac_filter,
        "allowed_macs": list(p.allowed_macs),
        "port_security": p.port_security,
    }


async def _list(args, stub) -> int:
    from corridor.v1 import controller_pb2

    reply = await stub.ListPortPolicies(
        controller_pb2.ListNodePortPoliciesRequest(node=args.node), timeout=TIMEOUT
    )
    stored = {(p.port, p.vlan): policy_from_pb(p.policy, "stored") for p in reply.stored}
    in_force = {(p.port, p.vlan): policy_from_pb(p.policy, "in_force") for p in reply.in_force}
    refused = [
        {
            "port": r.port,
            "vlan": r.vlan,
            "mac": r.mac.hex(":"),
            "packets": r.packets,
            "last_seen": r.last_seen.ToJsonString(),
        }
        for r in reply.refused_macs
    ]
    if args.json:
        keys = sorted(set(stored) | set(in_force))
        data = {
            "node": args.node,
            "sub_interfaces": [
                {
                    "port": port,
                    "vlan": vlan,
                    "stored": _policy_dict(stored[(port, vlan)])
                    if (port, vlan) in stored
                    else None,
                    "in_force": _policy_dict(in_force[(port, vlan)])
                    if (port, vlan) in in_force
                    else None,
                }
                for port, vlan in keys
            ],
            "refused_macs": refused,
            "agent_error": reply.agent_error,
            "push_error": reply.push_error,
        }
        out(args, data, "")
        return 0
    rows = []
    for key in sorted(set(stored) | set(in_force)):
        s, f = stored.get(key), in_force.get(key)
        rows.append(
            [
                key[0],
                key[1],
                s.describe() if s else "-",
                f.describe() if f else "?",
            ]
        )
    table(["PORT", "VLAN", "STORED", "IN FORCE"], rows)
    if reply.agent_error:
        print(f"agent: {reply.agent_error}")
    if reply.push_error:
        print(f"the agent refused the stored policies: {reply.push_error}")
    if refused:
        print()
        table(
            ["PORT", "VLAN", "REFUSED SOURCE MAC", "PACKETS", "LAST SEEN"],
            [[r["port"], r["vlan"], r["mac"], r["packets"], r["last_seen"]] for r in refused],
        )
    return 0
