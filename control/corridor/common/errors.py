"""The errors a writer can meet, in the agent and the controller alike: a batch refused whole
with every violation named, and the fault of one field. No gRPC here (status.py gives them
their wire form)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Violation:
    """What is wrong with one operation (`index`), or with the batch as a whole (None)."""

    index: int | None
    field: str
    description: str


class InvalidBatch(ValueError):
    """The batch was refused whole and nothing of it applied."""

    def __init__(self, violations: Sequence[Violation]) -> None:
        self.violations = list(violations)
        # Every violation, not the first: a client that fixes one at a time would meet them
        # one round trip each. The wire message is cut to a budget; the details list them.
        problems = "; ".join(
            f"{f'operation {v.index}' if v.index is not None else v.field}: {v.description}"
            for v in self.violations
        )
        super().__init__(f"batch refused, nothing applied: {problems}")


class FieldError(ValueError):
    """One field of a request is wrong: `field` is its path below the item being read."""

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field}: {description}")
        self.field = field
        self.description = description


ECHO_KEEP = 64  # characters of a client's value repeated in an error


def echo(value: str, keep: int = ECHO_KEEP) -> str:
    """`value` as an error may repeat it (quoted): cut to its first `keep` characters and its
    length when longer, so an error about a 10 kB name stays small."""
    if len(value) <= keep:
        return repr(value)
    return f"{value[:keep]!r}… ({len(value.encode())} bytes)"


def format_election_id(value: int) -> str:
    """A 128-bit election id as high:low."""
    return f"{value >> 64}:{value & ((1 << 64) - 1)}"
