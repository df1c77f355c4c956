"""Configuration files, read one way for every process: TOML, checked whole at start-up.
Every error names the field as a path into the file (`ports[1].mtu`) and says what would be
valid; keys nobody reads are errors too, so a typo never silently means a default. Relative
file paths are taken relative to the directory of the file. Here: the checked reader of
TOML tables and what every server configures alike (listeners, TLS, host:port).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration that cannot be used: one or more problems, each naming the field (or
    the file) and what would be right, one per line."""

    def __init__(self, *problems: str) -> None:
        super().__init__("\n".join(problems))
        self.problems: tuple[str, ...] = problems


@dataclass(frozen=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Listen:
    unix: Path | None = None
    tcp: HostPort | None = None


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    client_ca: Path


def load_toml(path: str | os.PathLike[str], parse_document: Callable[..., T]) -> T:
    """Reads the TOML file at `path` and checks it with `parse_document(document, base=)`,
    relative paths taken from the file's directory; every error names the file."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            document = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from e
    try:
        return parse_document(document, base=path.parent)
    except ConfigError as e:
        raise ConfigError(*(f"{path}: {p}" for p in e.problems)) from e


class Table:
    """A TOML table being read: typed getters that know the path, and a check for leftovers.
    A getter that meets a bad value notes the problem and returns the default (or a stand-in)
    so reading goes on: `finish` on the top table then reports every problem at once."""

    def __init__(self, data: Any, where: str, problems: dict[str, str] | None = None) -> None:
        # field path -> its problem; shared by a file's tables, in the order found
        self.problems: dict[str, str] = {} if problems is None else problems
        self.where = where
        self.seen: set[str] = set()
        if not isinstance(data, dict):
            self._note(where, f"is {_kind(data)}; expected a table")
            data = {}
        self.data: dict[str, Any] = data

    def path(self, key: str) -> str:
        """The path of `key` in the file ("" for this table itself)."""
        if not key or not self.where:
            return key or self.where
        return f"{self.where}.{key}"

    def fail(self, key: str, message: str) -> None:
        """Notes a problem of the value at `key` (only the first one per field)."""
        self._note(self.path(key), message)

    def failed(self, key: str) -> bool:
        return self.path(key) in self.problems

    def _note(self, path: str, message: str) -> None:
        self.problems.setdefault(path, message)

    def finish(self) -> None:
        """Raises ConfigError with every problem noted in this file's tables, if any."""
        if self.problems:
            raise ConfigError(*(f"{p}: {m}" if p else m for p, m in self.problems.items()))

    def get(
        self, key: str, kind: type, expected: str, default: Any = None, required: bool = False
    ) -> Any:
        self.seen.add(key)
        if key not in self.data:
            if required:
                self.fail(key, f"is required; expected {expected}")
            return default
        value = self.data[key]
        # TOML booleans are Python ints; a port count of `true` is a mistake, not 1.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.fail(key, f"is {_kind(value)}; expected {expected}")
            return default
        return value

    def string(self, key: str, required: bool = False) -> str | None:
        value: str | None = self.get(key, str, "a string", required=required)
        return value

    def required_string(self, key: str) -> str:
        """The string at `key`; "" (and a problem noted) when it is missing or not a string."""
        value: str = self.get(key, str, "a string", default="", required=True)
        return value

    def integer(self, key: str, low: int, high: int, default: int | None = None) -> int:
        """The integer at `key`, or `default`; required when there is no default (then `low`
        stands in for a bad value, with the problem noted)."""
        expected = f"an integer between {low} and {high}"
        fallback = low if default is None else default
        value: int = self.get(key, int, expected, fallback, required=default is None)
        if not low <= value <= high:
            self.fail(key, f"{value} is not between {low} and {high}")
            return fallback
        return value

    def optional_integer(self, key: str, low: int, high: int) -> int | None:
        expected = f"an integer between {low} and {high}"
        value: int | None = self.get(key, int, expected)
        if value is not None and not low <= value <= high:
            self.fail(key, f"{value} is not between {low} and {high}")
            return None
        return value

    def table(self, key: str, required: bool = False) -> Table | None:
        value = self.get(key, dict, "a table", required=required)
        return None if value is None else Table(value, self.path(key), self.problems)

    def tables(self, key: str) -> list[Table]:
        values = self.get(key, list, "an array of tables", [])
        out = []
        for i, value in enumerate(values):
            where = f"{self.path(key)}[{i}]"
            if isinstance(value, dict):
                out.append(Table(value, where, self.problems))
            else:
                self._note(where, f"is {_kind(value)}; expected a table")
        return out

    def done(self) -> None:
        """Notes every key of this table that nobody read."""
        known = ", ".join(sorted(self.seen))
        for key in sorted(set(self.data) - self.seen):
            self.fail(key, f"unknown key; known here: {known}")


def listen_from(t: Table | None, base: Path) -> Listen:
    """The required [listen] table (its absence is noted by the reader of the table that
    holds it): a unix socket path, a TCP host:port, or both."""
    if t is None:
        return Listen()
    unix = t.string("unix")
    tcp = host_port_from(t, "tcp")
    t.done()
    if unix is None and tcp is None and not t.failed("unix") and not t.failed("tcp"):
        t.fail("", "needs unix (a socket path), tcp (host:port), or both")
    if unix is not None and not unix:
        t.fail("unix", "is empty; give the path of the socket to create")
    return Listen(unix=base / unix if unix else None, tcp=tcp)


def tls_from(t: Table, base: Path) -> TlsFiles:
    """A [tls] table: cert, key and client_ca, all three PEM files."""
    files = {}
    for key in ("cert", "key", "client_ca"):
        value = t.required_string(key)
        if not value and not t.failed(key):
            t.fail(key, "is empty; give the path of a PEM file")
        files[key] = base / value
    t.done()
    return TlsFiles(**files)


def tls_and_listen(top: Table, base: Path) -> tuple[Listen, TlsFiles | None]:
    """[listen] and the optional [tls] that protects its TCP listener."""
    listen_table = top.table("listen", required=True)
    listen = listen_from(listen_table, base)
    tls_table = top.table("tls")
    tls = tls_from(tls_table, base) if tls_table is not None else None
    if tls is not None and listen.tcp is None and listen_table is not None:
        if not listen_table.failed("tcp"):
            top.fail("tls", "is set but listen.tcp is not; TLS protects the TCP listener")
    return listen, tls


def metrics_from(top: Table) -> HostPort | None:
    """The optional [metrics] table: the address of the /metrics endpoint."""
    t = top.table("metrics")
    if t is None:
        return None
    address = host_port_from(t, "address", required=True)
    t.done()
    return address


def host_port_from(t: Table, key: str, required: bool = False) -> HostPort | None:
    value = t.string(key, required=required)
    if value is None:
        return None
    expected = 'host:port, such as "127.0.0.1:50051" or "[::1]:50051"'
    host, sep, port_text = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        t.fail(key, f"{value!r}: put an IPv6 host in brackets, {expected}")
        return None
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        t.fail(key, f"{value!r} is not {expected}, port 0 to 65535")
        return None
    return HostPort(host, int(port_text))


def _kind(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string"}
    names.update({list: "an array", dict: "a table"})
    return f"{names.get(type(value), type(value).__name__)} ({value!r})"
