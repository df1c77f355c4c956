"""`corridor route load FILE|-`: many routes into intent, one Apply per batch.

Two formats, told apart line by line: the shared/data tables (`PREFIX [ORIGIN-AS]`, every
prefix given the target of `--via`/`--blackhole`/`--unreachable`), and JSON lines, one route
per line as `route list --json` prints them (`{"prefix": ..., "kind": ..., "next_hops": [...],
"node": ...}`). Gzip files are read as such. Blank lines and `#` comments are skipped.

Every line is checked before anything is sent: one bad line and nothing at all is applied,
and every bad line is reported with its number. A batch the controller refuses stops the
load there; the batches before it stay committed, and the summary says which lines they were.
"""

from __future__ import annotations

import argparse
import gzip
import ipaddress
import json
import socket
import sys
import time
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, Any

BATCH = 10_000
MAX_BATCH = 100_000  # the controller takes at most this many routes in one Apply
MAX_BAD_LINES_SHOWN = 20
KINDS = ("forward", "blackhole", "unreachable")


def add_parser(rsub: Any, client: argparse.ArgumentParser) -> None:
    load = rsub.add_parser(
        "load",
        parents=[client],
        help="add or replace many routes from a file or stdin",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    load.add_argument("file", metavar="FILE|-", help="the routes; - for stdin; .gz read as gzip")
    target = load.add_mutually_exclusive_group()
    target.add_argument(
        "--via", action="append", metavar="GATEWAY,PORT[,VLAN[,WEIGHT]]",
        help="next hop of every prefix-only line (repeat for ECMP)",
    )  # fmt: skip
    target.add_argument("--blackhole", action="store_true", help="prefix-only lines drop")
    target.add_argument("--unreachable", action="store_true", help="... drop with ICMP")
    load.add_argument("--node", default=None, help="the node of lines naming none (default: all)")
    load.add_argument(
        "--batch", type=int, default=BATCH, help=f"routes per Apply (default {BATCH})"
    )


class BadLines(ValueError):
    def __init__(self, problems: list[tuple[int, str]]) -> None:
        super().__init__(f"{len(problems)} bad lines")
        self.problems = problems


@dataclass(slots=True)
class Routes:
    """The routes of a file as the load sends them: each already encoded as one `routes`
    entry of an ApplyRequest (a full table is a million of them: bytes take a tenth of the
    memory of message objects), and the line each came from."""

    entries: list[bytes] = field(default_factory=list)
    lines: array[int] = field(default_factory=lambda: array("L"))

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, number: int, route: bytes) -> None:
        self.entries.append(_ROUTES_TAG + _varint(len(route)) + route)
        self.lines.append(number)

    def request(self, start: int, end: int) -> Any:
        """The ApplyRequest of routes[start:end]."""
        from corridor.v1 import controller_pb2

        return controller_pb2.ApplyRequest.FromString(b"".join(self.entries[start:end]))


_ROUTES_TAG = b"\x0a"  # ApplyRequest.routes: field 1, length-delimited


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_routes(lines: Iterable[str], default: Any, node: str | None) -> Routes:
    """Every route of `lines`, or BadLines naming each bad one. `default` is the RouteIntent
    (kind and next hops) of prefix-only lines, None when the command gave no target."""
    from corridor.v1 import common_pb2, controller_pb2

    routes = Routes()
    problems: list[tuple[int, str]] = []
    # A prefix-only line is its prefix (and node) followed by the target's fields: encoded
    # messages that follow each other merge into one.
    target = default.SerializeToString() if default is not None else b""
    for number, text in enumerate(lines, 1):
        text = text.strip()
        if not text or text.startswith("#"):
            continue
        try:
            if text.startswith("{"):
                route = _json_route(text)
                if not route.node and node is not None:
                    route.node = node
                routes.add(number, route.SerializeToString())
                continue
            address, length = _table_prefix(text, default)
        except ValueError as e:
            problems.append((number, str(e)))
            continue
        head = controller_pb2.RouteIntent(
            node=node or "", prefix=common_pb2.IpPrefix(address=address, length=length)
        )
        routes.add(number, head.SerializeToString() + target)
    if problems:
        raise BadLines(problems)
    return routes


def _prefix_parts(text: str) -> tuple[bytes, int]:
    """The address and length of a prefix. The common form (address/length, no host bits)
    is read with inet_pton, at a tenth of the cost of ipaddress; anything else goes to
    ipaddress, which accepts or names the fault as `route add` does."""
    address, slash, length = text.partition("/")
    try:
        packed = socket.inet_pton(socket.AF_INET6 if ":" in address else socket.AF_INET, address)
    except OSError:
        packed = b""
    if packed and slash and length.isascii() and length.isdigit():
        bits = len(packed) * 8
        n = int(length)
        if n <= bits and not int.from_bytes(packed, "big") & ((1 << (bits - n)) - 1):
            return packed, n
    pb = _prefix(text)
    return pb.address, pb.length


def _prefix(text: Any) -> Any:
    from corridor.common.addresses import checked_prefix_to_pb

    if not isinstance(text, str):
        raise ValueError(f"prefix: {text!r} is not text")
    try:
        return checked_prefix_to_pb(text)
    except ValueError as e:
        raise ValueError(f"{text!r} is not a prefix: {e}") from None


def _table_prefix(text: str, default: Any) -> tuple[bytes, int]:
    fields = text.split()
    if len(fields) > 2 or (len(fields) == 2 and not (fields[1].isascii() and fields[1].isdigit())):
        raise ValueError(f"expected PREFIX [ORIGIN-AS] or a JSON object, not {text[:80]!r}")
    if default is None:
        raise ValueError(
            "a prefix without a target: give --via, --blackhole or --unreachable, "
            "or write the route as JSON"
        )
    return _prefix_parts(fields[0])


def _json_route(text: str) -> Any:
    from corridor.v1 import controller_pb2, dataplane_pb2

    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON: {e}") from None
    if not isinstance(d, dict):
        raise ValueError("not a JSON object")
    unknown = set(d) - {"node", "prefix", "kind", "next_hops"}
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)}; expected node, prefix, kind, next_hops")
    route = controller_pb2.RouteIntent(prefix=_prefix(d.get("prefix")))
    node = d.get("node", "")
    if not isinstance(node, str):
        raise ValueError(f"node: {node!r} is not text")
    route.node = node
    hops = d.get("next_hops", [])
    kind = d.get("kind", "forward" if hops else None)
    if kind not in KINDS:
        raise ValueError(f"kind: {kind!r} is not one of {', '.join(KINDS)}")
    route.kind = dataplane_pb2.RouteKind.Value(f"ROUTE_KIND_{kind.upper()}")
    if not isinstance(hops, list):
        raise ValueError("next_hops: not a list")
    for i, h in enumerate(hops):
        where = f"next_hops[{i}]"
        if not isinstance(h, dict) or set(h) - {"gateway", "port", "vlan", "weight"}:
            raise ValueError(f"{where}: expected an object of gateway, port, vlan, weight")
        try:
            gateway = ipaddress.ip_address(h.get("gateway", "")).packed
        except ValueError as e:
            raise ValueError(f"{where}.gateway: {e}") from None
        port, vlan, weight = h.get("port"), h.get("vlan", 0), h.get("weight", 1)
        if not isinstance(port, str) or not port:
            raise ValueError(f"{where}.port: {port!r} is not a port name")
        for name, value in (("vlan", vlan), ("weight", weight)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{where}.{name}: {value!r} is not a number")
        route.next_hops.add(gateway=gateway, port=port, vlan=vlan, weight=weight)
    return route


def _open(name: str) -> IO[str]:
    if name == "-":
        return sys.stdin
    if name.endswith(".gz"):
        return gzip.open(name, "rt", encoding="utf-8", errors="replace")
    return open(name, encoding="utf-8", errors="replace")


def run(args: argparse.Namespace) -> int:
    import grpc

    from corridor import cli_controller as cc
    from corridor.v1 import controller_pb2, dataplane_pb2

    command = cc.command_name(args)
    if not 1 <= args.batch <= MAX_BATCH:
        print(f"{command}: --batch {args.batch}: give 1 to {MAX_BATCH} routes", file=sys.stderr)
        return cc.EXIT_USAGE
    default = None
    try:
        if args.via or args.blackhole or args.unreachable:
            default = controller_pb2.RouteIntent()
            if args.blackhole:
                default.kind = dataplane_pb2.ROUTE_KIND_BLACKHOLE
            elif args.unreachable:
                default.kind = dataplane_pb2.ROUTE_KIND_UNREACHABLE
            else:
                default.kind = dataplane_pb2.ROUTE_KIND_FORWARD
                default.next_hops.extend(cc.next_hop(v) for v in args.via)
        with _open(args.file) as f:
            routes = read_routes(f, default, args.node)
    except cc.CliError as e:
        print(f"{command}: {e}", file=sys.stderr)
        return e.code
    except OSError as e:
        print(f"{command}: {args.file}: {e.strerror or e}", file=sys.stderr)
        return cc.EXIT_USAGE
    except (BadLines, UnicodeDecodeError, EOFError, gzip.BadGzipFile) as e:
        problems = e.problems if isinstance(e, BadLines) else [(0, str(e))]
        for number, problem in problems[:MAX_BAD_LINES_SHOWN]:
            print(f"{command}: {args.file}:{number}: {problem}", file=sys.stderr)
        if len(problems) > MAX_BAD_LINES_SHOWN:
            print(
                f"{command}: {len(problems) - MAX_BAD_LINES_SHOWN} more bad lines",
                file=sys.stderr,
            )
        print(f"{command}: {len(problems)} bad lines; nothing applied", file=sys.stderr)
        return cc.EXIT_USAGE
    progress = sys.stderr.isatty() and not args.json

    async def work(stub: Any) -> int:
        started = time.monotonic()
        applied, revision, batches = 0, 0, 0
        for start in range(0, len(routes), args.batch):
            end = min(start + args.batch, len(routes))
            try:
                reply = await stub.Apply(
                    routes.request(start, end), timeout=max(cc.TIMEOUT, (end - start) / 1000)
                )
            except grpc.RpcError as e:
                if progress:
                    print(file=sys.stderr)
                _report_failure(command, args, e, routes, start, end)
                return cc.EXIT_FAILED
            applied, revision, batches = end, reply.revision, batches + 1
            if progress:
                print(f"\r{command}: {applied}/{len(routes)} routes", end="", file=sys.stderr)
        if progress:
            print(file=sys.stderr)
        seconds = time.monotonic() - started
        cc.out(
            args,
            {"routes": applied, "batches": batches, "revision": revision},
            f"loaded {applied} routes in {batches} batches at revision {revision} "
            f"({seconds:.1f} s)",
        )
        return 0

    return cc.call(args, work)


# A call that ends so may have been committed: the reply, not the request, was lost.
_UNKNOWN_OUTCOME = frozenset(
    ("DEADLINE_EXCEEDED", "UNAVAILABLE", "CANCELLED", "UNKNOWN", "INTERNAL", "DATA_LOSS")
)


def _report_failure(
    command: str, args: argparse.Namespace, e: Any, routes: Routes, start: int, end: int
) -> None:
    """Names the line of each refused route (the controller says routes[i] of the batch),
    and what of the load is committed."""
    from corridor import cli_controller as cc

    for line in cc.rpc_error_lines(e, args.controller):
        where = line.partition("]")[0]
        if where.startswith("routes[") and where[7:].isdigit() and int(where[7:]) < end - start:
            line = f"{args.file}:{routes.lines[start + int(where[7:])]}: {line}"
        print(f"{command}: {line}", file=sys.stderr)
    if e.code().name in _UNKNOWN_OUTCOME:  # the call may have ended after the controller committed
        outcome = "failed, perhaps applied (`corridor route list` shows)"
    else:
        outcome = "refused, not applied"
    done = f"lines up to {routes.lines[start - 1]}" if start else "nothing"
    print(
        f"{command}: batch of lines {routes.lines[start]}-{routes.lines[end - 1]} {outcome}; "
        f"{start} routes ({done}) were committed before it, {len(routes) - end} after it not sent",
        file=sys.stderr,
    )
