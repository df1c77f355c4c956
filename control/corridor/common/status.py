"""Refusals on the wire: a google.rpc-style Status in the trailing metadata, carrying a
corridor.v1.WriteError that lists the violations, and election ids as protobuf."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import NoReturn, Protocol

import grpc
from google.protobuf import any_pb2

from corridor.common.errors import Violation
from corridor.v1 import common_pb2, dataplane_pb2

STATUS_DETAILS_KEY = "grpc-status-details-bin"
# Trailing metadata must stay well below gRPC's default 8 KiB limit of clients, so the
# violations listed in a status stop at this many bytes; a last one counts the rest. The
# message travels twice (grpc-message, and in the Status beside the details), each
# percent-encoded in the first: it is cut at MESSAGE_BUDGET bytes, each violation's field and
# description at VIOLATION_BUDGET, whatever a caller echoed.
DETAILS_BUDGET = 4096
MESSAGE_BUDGET = 1024
VIOLATION_BUDGET = 512


class Context(Protocol):
    """What servicers use of a grpc.aio.ServicerContext (grpc ships no types)."""

    async def abort(
        self,
        code: grpc.StatusCode,
        details: str = "",
        trailing_metadata: tuple[tuple[str, str | bytes], ...] = (),
    ) -> NoReturn: ...

    def peer(self) -> str: ...

    def auth_context(self) -> Mapping[str, Iterable[bytes]]: ...


def bounded(text: str, budget: int) -> str:
    """`text` cut to at most `budget` bytes of UTF-8, saying how long it was."""
    data = text.encode()
    if len(data) <= budget:
        return text
    tail = f"… ({len(data)} bytes)"
    return data[: budget - len(tail.encode())].decode(errors="ignore") + tail


def violation_to_pb(v: Violation) -> dataplane_pb2.WriteError.Violation:
    pb = dataplane_pb2.WriteError.Violation(
        field=bounded(v.field, VIOLATION_BUDGET),
        description=bounded(v.description, VIOLATION_BUDGET),
    )
    if v.index is not None:
        pb.operation = v.index
    return pb


async def refuse(
    context: Context,
    code: grpc.StatusCode,
    message: str,
    violations: Sequence[Violation],
    *,
    items: str,
    batch_id: int = 0,
) -> NoReturn:
    """Ends the call with `code`, `message`, and a WriteError listing the violations in the
    details (as many as DETAILS_BUDGET allows; a last one, on field `items`, counts the rest).
    Whatever the violations echo, the message and details stay within their budgets."""
    message = bounded(message, MESSAGE_BUDGET)
    details = dataplane_pb2.WriteError(batch_id=batch_id)
    for i, v in enumerate(violations):
        pb = violation_to_pb(v)
        # 16 bytes for the framing of each, 64 kept for the count of the rest.
        if details.ByteSize() + pb.ByteSize() + 16 > DETAILS_BUDGET - 64:
            details.violations.add(
                field=items, description=f"{len(violations) - i} more violations not listed"
            )
            break
        details.violations.append(pb)
    packed = any_pb2.Any()
    packed.Pack(details)
    status = common_pb2.Status(code=code.value[0], message=message, details=[packed])
    await context.abort(
        code, message, trailing_metadata=((STATUS_DETAILS_KEY, status.SerializeToString()),)
    )
    raise AssertionError("context.abort returned")


async def abort(context: Context, code: grpc.StatusCode, message: str) -> NoReturn:
    """Ends the call with `code` and `message` (cut to MESSAGE_BUDGET), without details."""
    await context.abort(code, bounded(message, MESSAGE_BUDGET))
    raise AssertionError("context.abort returned")


def write_error(error: grpc.RpcError) -> dataplane_pb2.WriteError | None:
    """The WriteError in a refused call's status details; None if it carries none."""
    for key, value in error.trailing_metadata() or ():
        if key == STATUS_DETAILS_KEY:
            for packed in common_pb2.Status.FromString(value).details:
                details = dataplane_pb2.WriteError()
                if packed.Unpack(details):
                    return details
    return None


def election_id_to_pb(value: int) -> common_pb2.ElectionId:
    return common_pb2.ElectionId(high=value >> 64, low=value & ((1 << 64) - 1))


def election_id_from_pb(election_id: common_pb2.ElectionId) -> int:
    return (election_id.high << 64) | election_id.low
