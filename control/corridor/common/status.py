"""Refusals on the wire: a google.rpc-style Status in the trailing metadata, carrying a
corridor.v1.WriteError that lists the violations, and election ids as protobuf."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NoReturn, Protocol

import grpc
from google.protobuf import any_pb2

from corridor.common.errors import Violation
from corridor.v1 import common_pb2, dataplane_pb2

STATUS_DETAILS_KEY = "grpc-status-details-bin"
# Trailing metadata must stay well below gRPC's default 8 KiB limit of clients, so the
# violations listed in a status stop at this many bytes; a last one counts the rest.
DETAILS_BUDGET = 4096


class Context(Protocol):
    """What servicers use of a grpc.aio.ServicerContext (grpc ships no types)."""

    async def abort(
        self,
        code: grpc.StatusCode,
        details: str = "",
        trailing_metadata: tuple[tuple[str, str | bytes], ...] = (),
    ) -> NoReturn: ...


def violation_to_pb(v: Violation) -> dataplane_pb2.WriteError.Violation:
    pb = dataplane_pb2.WriteError.Violation(field=v.field, description=v.description)
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
    details (as many as DETAILS_BUDGET allows; a last one, on field `items`, counts the rest)."""
    details = dataplane_pb2.WriteError(batch_id=batch_id)
    for i, v in enumerate(violations):
        details.violations.append(violation_to_pb(v))
        if details.ByteSize() > DETAILS_BUDGET and i + 1 < len(violations):
            details.violations[-1].CopyFrom(
                dataplane_pb2.WriteError.Violation(
                    field=items, description=f"{len(violations) - i} more violations not listed"
                )
            )
            break
    packed = any_pb2.Any()
    packed.Pack(details)
    status = common_pb2.Status(code=code.value[0], message=message, details=[packed])
    await context.abort(
        code, message, trailing_metadata=((STATUS_DETAILS_KEY, status.SerializeToString()),)
    )
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
