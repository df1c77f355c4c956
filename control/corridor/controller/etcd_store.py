"""Intent in etcd v3, for a cluster of controllers: the second backend of store.Store, beside
the embedded SQLite one. Every controller reads and follows it; only the one that holds the
leader key (election.py) commits.

The client: aetcd 1.0 installs with the project's grpcio and protobuf and ships etcd's v3
gRPC stubs (aetcd.rpc: KV, Lease, Watch), but its Client speaks to one endpoint in
plaintext. We call those stubs on our own grpc.aio channels: mutual TLS, several endpoints
tried in turn, and etcd's "require a leader" metadata so a member cut off from quorum says
so at once instead of waiting out a timeout. Nothing of etcd's .proto or client is copied.

Layout under `prefix` (default /corridor):
  head                       {"format", "revision", "chunks": {name: blob revision}}
  blob/<name>@<revision>     one chunk: a node's routes of one hash bucket and family, the
                             next-hop sets or next hops of an id range, nodes, drained
  election                   the last election id handed out
  leader                     the leader's key (election.py), on a lease
A full table does not fit one etcd request (1.5 MiB) nor one Txn (128 operations), so a
commit writes the chunks it changes under new names first (as many Txns as it takes, each
fenced by the leader's key), then swaps the head in one Txn that compares the head's
mod revision and the leader's key: the commit is whole or is not, and a controller that
lost the lead cannot commit. Chunks the head no longer names are deleted afterwards.
A route is 11 bytes (IPv4) or 23 (IPv6) in its chunk, compressed: measured in
docs/operations.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import struct
import time
import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from itertools import starmap
from pathlib import Path
from typing import Any, TypeVar

import grpc
from aetcd import rpc

from corridor.common.edge import policy_from_json, policy_to_json
from corridor.common.fib import RouteKind
from corridor.controller.domain import (
    AdjacencyKey,
    Change,
    GroupKey,
    Intent,
    Node,
    NodeTls,
    RouteKey,
    StoreUnavailable,
    adjacency_from_text,
    adjacency_text,
    group_from_text,
    group_text,
    prefix_of_sort_key,
    prefix_sort_key,
)
from corridor.controller.members import MemberRecord, Sample, bgp_from_fields, check_sources
from corridor.controller.store import Loaded, PortPolicyRecord, RouteQuery, StoreError

log = logging.getLogger("corridor.controller.etcd")
T = TypeVar("T")

FORMAT = 1
TXN_BYTES = 1 << 20  # below etcd's default --max-request-bytes (1.5 MiB), with room to spare
TXN_OPS = 100  # below etcd's default --max-txn-ops (128)
V4_BUCKETS = 64  # a full IPv4 table: ~16 000 routes, ~170 KiB raw, per chunk
V6_BUCKETS = 16
ID_RANGE = 4096  # ids per chunk of next-hop sets or next hops
COMPACT_BYTES = 64 << 20  # chunk bytes written between two compactions of etcd's history
V4 = struct.Struct(">6sBI")  # sort key, kind, group id (0: none)
V6 = struct.Struct(">18sBI")
REQUIRE_LEADER = (("hasleader", "true"),)
_OPTIONS = (
    ("grpc.max_receive_message_length", 256 << 20),
    ("grpc.max_send_message_length", 4 << 20),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 2000),
    ("grpc.keepalive_timeout_ms", 2000),
    ("grpc.keepalive_permit_without_calls", 1),
)
_KINDS = {int(k): k for k in RouteKind}


@dataclass(frozen=True)
class EtcdTls:
    ca: Path
    cert: Path
    key: Path


@dataclass(frozen=True)
class EtcdConfig:
    endpoints: tuple[str, ...]
    prefix: str = "/corridor"
    lease_seconds: int = 5
    timeout_seconds: float = 3.0
    tls: EtcdTls | None = None

    def describe(self) -> str:
        return f"etcd {','.join(self.endpoints)}"


class EtcdUnreachable(StoreUnavailable):
    def __init__(self, message: str) -> None:
        super().__init__(message, full=False)


class NotLeader(Exception):
    """This controller does not lead: the message names the leader, if one is known."""


# -- the client: etcd's stubs on our channels


class EtcdClient:
    """Channels to every endpoint; a call goes to the endpoint that answered last and moves
    on to the next when one is down or has no leader, within one deadline."""

    def __init__(self, config: EtcdConfig) -> None:
        self.config = config
        self._channels: list[grpc.aio.Channel | None] = [None] * len(config.endpoints)
        self._credentials: grpc.ChannelCredentials | None = None
        self._current = 0

    async def open(self) -> None:
        tls = self.config.tls
        if tls is not None:

            def read() -> tuple[bytes, bytes, bytes]:
                return tls.ca.read_bytes(), tls.key.read_bytes(), tls.cert.read_bytes()

            ca, key, cert = await asyncio.get_running_loop().run_in_executor(None, read)
            self._credentials = grpc.ssl_channel_credentials(ca, key, cert)

    def channel(self, i: int) -> grpc.aio.Channel:
        channel = self._channels[i]
        if channel is None:
            target = self.config.endpoints[i]
            if self._credentials is not None:
                channel = grpc.aio.secure_channel(target, self._credentials, _OPTIONS)
            else:
                channel = grpc.aio.insecure_channel(target, _OPTIONS)
            self._channels[i] = channel
        return channel

    def blocking_channel(self, i: int) -> grpc.Channel:
        """A new blocking channel to endpoint `i`, for a thread of its own (the lease's
        renewals, election.py); the caller closes it."""
        target = self.config.endpoints[i]
        if self._credentials is not None:
            return grpc.secure_channel(target, self._credentials, _OPTIONS)
        return grpc.insecure_channel(target, _OPTIONS)

    @property
    def endpoint(self) -> str:
        return self.config.endpoints[self._current]

    @property
    def current(self) -> int:
        return self._current

    def rotate(self) -> None:
        """Moves on to the next endpoint (the current one failed a stream)."""
        self._current = (self._current + 1) % len(self.config.endpoints)

    async def call(
        self, service: str, method: str, request: Any, budget: float | None = None
    ) -> Any:
        """One unary call, on each endpoint in turn until one answers, within `budget` s."""
        budget = self.config.timeout_seconds if budget is None else budget
        deadline = time.monotonic() + budget
        errors: list[str] = []
        n = len(self.config.endpoints)
        start = self._current
        for attempt in range(2 * n):
            i = (start + attempt) % n
            left = deadline - time.monotonic()
            if left <= 0:
                break
            stub = _STUBS[service](self.channel(i))
            # A member that lost its leader may hold a call until it has one: give each
            # member a share of the budget, so another can answer.
            share = max(left / 2, min(left, 1.0)) if n > 1 else left
            try:
                reply = await getattr(stub, method)(request, timeout=share, metadata=REQUIRE_LEADER)
            except grpc.aio.AioRpcError as e:
                if e.code() not in _MOVE_ON:
                    raise
                errors.append(f"{self.config.endpoints[i]}: {e.details() or e.code().name}")
                if e.code() is grpc.StatusCode.UNAVAILABLE and attempt >= n - 1:
                    await asyncio.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
                continue
            self._current = i
            return reply
        seen = "; ".join(dict.fromkeys(errors)) or "no answer"
        raise EtcdUnreachable(
            f"{self.config.describe()}: no member with a quorum answered in {budget:.1f} s ({seen})"
        )

    async def close(self) -> None:
        for channel in self._channels:
            if channel is not None:
                await channel.close()
        self._channels = [None] * len(self.config.endpoints)

    async def watch(self, key: bytes, start_revision: int) -> AsyncIterator[int]:
        """The mod revisions of `key`'s changes from `start_revision` on, on the current
        endpoint; ends (the caller watches again) when the stream breaks."""
        stub = rpc.WatchStub(self.channel(self._current))
        call = stub.Watch(metadata=REQUIRE_LEADER)
        try:
            await call.write(
                rpc.WatchRequest(
                    create_request=rpc.WatchCreateRequest(key=key, start_revision=start_revision)
                )
            )
            while True:
                reply = await call.read()
                if reply is grpc.aio.EOF or reply.canceled or reply.compact_revision:
                    return
                for event in reply.events:
                    yield event.kv.mod_revision
                if reply.created:
                    yield 0
        except grpc.aio.AioRpcError:
            self.rotate()
            return
        finally:
            call.cancel()


# What a member or the way to it answers when another member may do better: down, without
# a leader, slow, or a transport that broke under the call (gRPC's INTERNAL, UNKNOWN).
_MOVE_ON = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
)

_STUBS = {
    "KV": rpc.KVStub,
    "Lease": rpc.LeaseStub,
    "Maintenance": rpc.MaintenanceStub,
}


def put(key: bytes, value: bytes, lease: int = 0) -> Any:
    return rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value, lease=lease))


def get(key: bytes) -> Any:
    return rpc.RequestOp(request_range=rpc.RangeRequest(key=key))


def delete(key: bytes) -> Any:
    return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key))


def compare_mod(key: bytes, revision: int) -> Any:
    return rpc.Compare(
        key=key,
        result=rpc.Compare.CompareResult.EQUAL,
        target=rpc.Compare.CompareTarget.MOD,
        mod_revision=revision,
    )


def compare_created(key: bytes, revision: int) -> Any:
    return rpc.Compare(
        key=key,
        result=rpc.Compare.CompareResult.EQUAL,
        target=rpc.Compare.CompareTarget.CREATE,
        create_revision=revision,
    )


def prefix_end(prefix: bytes) -> bytes:
    return prefix[:-1] + bytes((prefix[-1] + 1,))


# -- chunks


def route_chunk(node: str, sort_key: bytes) -> str:
    v6 = len(sort_key) == 18
    bucket = zlib.crc32(sort_key) % (V6_BUCKETS if v6 else V4_BUCKETS)
    return f"r/{node}/{6 if v6 else 4}/{bucket}"


def decode_routes(name: str, raw: bytes) -> dict[bytes, tuple[int, int]]:
    record = V6 if name.split("/")[2] == "6" else V4
    if len(raw) % record.size:
        raise ValueError(f"{len(raw)} bytes is not a whole number of {record.size}-byte routes")
    return {k: (kind, gid) for k, kind, gid in record.iter_unpack(raw)}


def encode_routes(name: str, routes: dict[bytes, tuple[int, int]]) -> bytes:
    record = V6 if name.split("/")[2] == "6" else V4
    return b"".join(starmap(record.pack, ((k, *routes[k]) for k in sorted(routes))))


def decode_ids(raw: bytes) -> dict[int, str]:
    out = {}
    for line in raw.decode().splitlines():
        id_, _, text = line.partition("\t")
        out[int(id_)] = text
    return out


def encode_ids(ids: dict[int, str]) -> bytes:
    return "".join(f"{i}\t{ids[i]}\n" for i in sorted(ids)).encode()


def pack(raw: bytes) -> bytes:
    return b"\x01" + zlib.compress(raw, 1)


def unpack(value: bytes) -> bytes:
    if value[:1] != b"\x01":
        raise ValueError("not a chunk of format 1")
    return zlib.decompress(value[1:])


# -- the store


class EtcdStore:
    """store.Store on etcd. `fence` is the leader key's create revision while this controller
    leads (election.py sets it): every write compares it, so only the leader writes."""

    def __init__(
        self, config: EtcdConfig, max_groups: int = 1 << 24, max_adjacencies: int = 1 << 24
    ) -> None:
        self.config = config
        self.client = EtcdClient(config)
        self.max_groups = max_groups
        self.max_adjacencies = max_adjacencies
        p = config.prefix.rstrip("/").encode()
        self.key_head = p + b"/head"
        self.key_blob = p + b"/blob/"
        self.key_election = p + b"/election"
        self.key_leader = p + b"/leader"
        self.key_policies = p + b"/port_policies/"
        self.key_members = p + b"/members/"
        self.key_samples = p + b"/samples/"
        self.fence = 0
        # The mirror: what the head this controller last read or wrote names.
        self.revision = 0
        self.head_mod = 0  # the head's mod revision in etcd (0: no head yet)
        self.chunks: dict[str, int] = {}  # chunk name -> blob revision
        self._raw: dict[str, bytes] = {}  # chunk name -> its bytes, uncompressed
        self._group_ids: dict[GroupKey, int] = {}
        self._groups: dict[int, GroupKey] = {}
        self._adjacency_ids: dict[AdjacencyKey, int] = {}
        self._nodes: dict[str, Node] = {}
        self._drained: set[tuple[str, AdjacencyKey]] = set()
        # node -> (its chunks' names and revisions, sorted keys, values), for list_routes:
        # built again when the node's chunks changed
        self._sorted: dict[
            str,
            tuple[tuple[tuple[str, int], ...], list[bytes], dict[bytes, tuple[int, int]]],
        ] = {}
        self._written = 0  # chunk bytes since the last compaction
        self._garbage: list[bytes] = []  # blob keys no head names, to delete
        self._cleaner: asyncio.Task[None] | None = None
        self._opened = False
        self.last_commit_txns = 0  # Txns the last commit took (tests, benchmarks)
        # Chunks are encoded, compressed and decoded on a thread of their own: a full
        # table's are seconds of work, and the event loop keeps the leader's lease alive.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="corridor-etcd")

    async def _off_loop(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def describe(self) -> str:
        return self.config.describe()

    # -- start: check, open, load

    async def check(self, accept_loss: bool = False) -> Loaded:
        """Reads the store whole; StoreError if it cannot be read or is not Corridor's."""
        if not self._opened:
            await self.client.open()
            self._opened = True
        try:
            await self.read_head()
        except StoreUnavailable as e:
            raise StoreError(f"cannot be read: {e}") from None
        except (ValueError, KeyError, TypeError, zlib.error) as e:
            raise StoreError(
                f"{self.key_head.decode()} or a chunk it names is damaged ({e!r}); restore "
                "etcd from a snapshot (docs/operations.md)"
            ) from None
        return await self._off_loop(self.loaded)

    async def open(self) -> EtcdStore:
        if not self._opened:
            await self.check()
        return self

    async def load(self) -> Loaded:
        if not self._opened:
            return await self.check()
        return await self._off_loop(self.loaded)

    def loaded(self) -> Loaded:
        routes: list[tuple[RouteKey, Intent]] = []
        intents: dict[tuple[int, int], Intent] = {}
        for name, raw in self._raw.items():
            if not name.startswith("r/"):
                continue
            node = name.split("/")[1]
            for key, (kind, gid) in decode_routes(name, raw).items():
                intent = intents.get((kind, gid))
                if intent is None:
                    intent = intents[kind, gid] = self._intent(kind, gid)
                prefix = prefix_of_sort_key(key)
                assert prefix is not None
                routes.append(((node, prefix), intent))
        return Loaded(
            self.revision,
            routes,
            list(self._nodes.values()),
            dict(self._group_ids),
            dict(self._adjacency_ids),
            sorted(self._drained),
        )

    def _intent(self, kind: int, gid: int) -> Intent:
        return Intent(_KINDS[kind], self._groups[gid] if gid else None)

    # -- reading the head and its chunks

    async def read_head(self) -> Change | None:
        """Reads the head and the chunks that changed since the mirror's; brings the mirror
        to it. The difference as a Change (None when nothing changed)."""
        for _ in range(5):
            reply = await self.client.call("KV", "Range", rpc.RangeRequest(key=self.key_head))
            if not reply.kvs:
                return None
            kv = reply.kvs[0]
            if kv.mod_revision == self.head_mod:
                return None
            head = json.loads(kv.value)
            if head.get("format") != FORMAT:
                raise ValueError(f"format {head.get('format')!r}; this Corridor reads {FORMAT}")
            chunks = {str(k): int(v) for k, v in head["chunks"].items()}
            wanted = [n for n, r in chunks.items() if self.chunks.get(n) != r]
            values = await self._read_blobs([(n, chunks[n]) for n in wanted])
            if values is None:
                continue  # a newer head replaced some: read it again
            change = await self._off_loop(self._take, int(head["revision"]), chunks, {}, values)
            self.head_mod = kv.mod_revision
            return change
        raise EtcdUnreachable(f"{self.describe()}: the head kept changing while it was read")

    async def _read_blobs(self, wanted: list[tuple[str, int]]) -> dict[str, bytes] | None:
        out: dict[str, bytes] = {}
        for i in range(0, len(wanted), TXN_OPS):
            part = wanted[i : i + TXN_OPS]
            reply = await self.client.call(
                "KV",
                "Txn",
                rpc.TxnRequest(success=[get(self._blob_key(n, r)) for n, r in part]),
                budget=max(self.config.timeout_seconds, 30.0),
            )
            for (name, _), response in zip(part, reply.responses, strict=True):
                kvs = response.response_range.kvs
                if not kvs:
                    return None
                out[name] = kvs[0].value  # unpacked by _take, off the loop
        return out

    def _blob_key(self, name: str, revision: int) -> bytes:
        return self.key_blob + f"{name}@{revision:016x}".encode()

    def _take(
        self,
        revision: int,
        chunks: dict[str, int],
        raw: dict[str, bytes],
        packed: dict[str, bytes] | None = None,
    ) -> Change:
        """Brings the mirror to a head at `revision` naming `chunks`, of which `raw` (or
        `packed`, as etcd holds them) are the ones that changed; the difference as a
        Change, for the controller's memory."""
        if packed:
            raw = {**raw, **{n: unpack(v) for n, v in packed.items()}}
        change = Change(revision=revision)
        gone = [n for n in self.chunks if n not in chunks]
        new_ids: dict[str, dict[int, str]] = {"g": {}, "a": {}}
        old_ids: dict[str, dict[int, str]] = {"g": {}, "a": {}}
        for name in [*raw, *gone]:
            kind = name[0]
            if kind in "ga":
                old_ids[kind].update(decode_ids(self._raw.get(name, b"")))
                new_ids[kind].update(decode_ids(raw.get(name, b"")))
        # Next-hop sets and next hops first: routes name them.
        for i, text in new_ids["a"].items():
            if old_ids["a"].get(i) != text:
                change.new_adjacencies[adjacency_from_text(text)] = i
                self._adjacency_ids[adjacency_from_text(text)] = i
        for i, text in old_ids["a"].items():
            if new_ids["a"].get(i) != text:
                a = adjacency_from_text(text)
                if self._adjacency_ids.get(a) == i:
                    del self._adjacency_ids[a]
                    change.freed_adjacencies.append(a)
        for i, text in new_ids["g"].items():
            if old_ids["g"].get(i) != text:
                g = group_from_text(text)
                change.new_groups[g] = i
                self._group_ids[g] = i
                self._groups[i] = g
        freed_groups = []
        for i, text in old_ids["g"].items():
            if new_ids["g"].get(i) != text:
                g = group_from_text(text)
                if self._group_ids.get(g) == i:
                    del self._group_ids[g]
                    change.freed_groups.append(g)
                freed_groups.append(i)
        v4 = v6 = 0
        intents: dict[tuple[int, int], Intent] = {}

        def intent_of(kind: int, gid: int, groups: dict[int, GroupKey]) -> Intent:
            if groups is not self._groups:
                return Intent(_KINDS[kind], groups[gid] if gid else None)
            found = intents.get((kind, gid))
            if found is None:
                found = intents[kind, gid] = Intent(_KINDS[kind], groups[gid] if gid else None)
            return found

        old_groups = dict(self._groups)
        for i, text in old_ids["g"].items():
            old_groups.setdefault(i, group_from_text(text))
        for name in [*raw, *gone]:
            if not name.startswith("r/"):
                continue
            node = name.split("/")[1]
            before = decode_routes(name, self._raw.get(name, b""))
            after = decode_routes(name, raw.get(name, b""))
            six = name.split("/")[2] == "6"
            for key, value in after.items():
                old = before.get(key)
                if old == value:
                    continue
                prefix = prefix_of_sort_key(key)
                if prefix is None:
                    raise ValueError(f"chunk {name}: {key!r} is not a prefix's sort key")
                intent = intent_of(*value, self._groups)
                change.set[(node, prefix)] = intent
                if intent.group is not None:
                    change.group_refs[intent.group] += 1
                if old is None:
                    v4 += 1
                    v6 += six
                else:
                    previous = intent_of(*old, old_groups)
                    if previous.group is not None:
                        change.group_refs[previous.group] -= 1
            for key, old in before.items():
                if key not in after:
                    prefix = prefix_of_sort_key(key)
                    assert prefix is not None
                    change.deleted.append((node, prefix))
                    previous = intent_of(*old, old_groups)
                    if previous.group is not None:
                        change.group_refs[previous.group] -= 1
                    v4 -= 1
                    v6 -= six
        change.routes_added = (v4, v6)
        for i in freed_groups:
            if i not in new_ids["g"]:
                self._groups.pop(i, None)
        if "n" in raw:
            nodes = _nodes_from(raw["n"])
            change.nodes = [n for n in nodes.values() if self._nodes.get(n.name) != n]
            change.removed_nodes = [n for n in self._nodes if n not in nodes]
            self._nodes = nodes
        if "d" in raw:
            drained = {(n, adjacency_from_text(a)) for n, a in json.loads(raw["d"] or b"[]")}
            change.drained = sorted(drained - self._drained)
            change.restored = sorted(self._drained - drained)
            self._drained = drained
        # A new dict, not the old one changed: readers on the event loop (list_routes) may be
        # going over the old one meanwhile.
        new_raw = {n: v for n, v in self._raw.items() if n not in gone}
        new_raw.update(raw)
        self._raw = new_raw
        self.chunks = chunks
        self.revision = revision
        return change

    # -- commit

    async def commit(self, change: Change) -> None:
        if self.revision + 1 != change.revision:
            raise RuntimeError(f"revision {change.revision} does not follow the store's")
        raw, chunks, head, packed = await self._off_loop(self._prepare, change)
        fences = [compare_created(self.key_leader, self.fence)] if self.fence else []
        # Chunks that do not fit beside the head go first, fenced, in Txns of their own.
        ops: list[Any] = []
        size = len(head)
        self.last_commit_txns = 1
        for name, value in packed.items():
            key = self._blob_key(name, change.revision)
            if ops and (size + len(value) + len(key) > TXN_BYTES or len(ops) >= TXN_OPS):
                await self._txn(fences, ops, change.revision)
                self.last_commit_txns += 1
                ops, size = [], len(head)
            ops.append(put(key, value))
            size += len(value) + len(key)
            self._written += len(value)
        ops.append(put(self.key_head, head))
        guard = [compare_mod(self.key_head, self.head_mod), *fences]
        try:
            reply = await self.client.call(
                "KV",
                "Txn",
                rpc.TxnRequest(
                    compare=guard,
                    success=ops,
                    failure=[get(self.key_head), get(self.key_leader)],
                ),
                budget=self._budget(size),
            )
        except EtcdUnreachable as e:
            raise EtcdUnreachable(
                f"{e}; the commit of revision {change.revision} may or may not have been "
                "made: this controller reads the store again before its next"
            ) from None
        if not reply.succeeded:
            head_kvs = reply.responses[0].response_range.kvs
            leader_kvs = reply.responses[1].response_range.kvs
            if head_kvs and head_kvs[0].value == head:
                pass  # an earlier try of this same Txn was made (a retry on another member)
            elif self.fence and (not leader_kvs or leader_kvs[0].create_revision != self.fence):
                raise NotLeader(
                    "this controller lost the lead before revision "
                    f"{change.revision} was committed; nothing was committed"
                )
            else:
                raise EtcdUnreachable(
                    f"{self.describe()}: the store was changed by another writer; nothing was "
                    "committed (this controller reads it again)"
                )
        else:
            self.head_mod = reply.header.revision
        if not reply.succeeded:
            self.head_mod = reply.responses[0].response_range.kvs[0].mod_revision
        self._garbage += [self._blob_key(n, self.chunks[n]) for n in raw if n in self.chunks]
        for name, value in raw.items():
            if value:
                self._raw[name] = value
            else:
                self._raw.pop(name, None)
        self.chunks = chunks
        self.revision = change.revision
        self._apply_ids(change)
        if self._cleaner is None or self._cleaner.done():
            self._cleaner = asyncio.create_task(self._clean(), name="etcd store cleaner")

    def _budget(self, size: int) -> float:
        """Seconds a write of `size` bytes may take over every member: the configured
        timeout, and one more second per MiB it carries (so that a refusal without a
        quorum comes in seconds, a large write on a busy cluster still goes through)."""
        return self.config.timeout_seconds + size / (1 << 20)

    def _prepare(
        self, change: Change
    ) -> tuple[dict[str, bytes], dict[str, int], bytes, dict[str, bytes]]:
        """The chunks `change` rewrites (raw, b"": gone), the head naming them, and the
        chunks as etcd is to hold them (compressed)."""
        raw = self._chunks_of(change)
        chunks = dict(self.chunks)
        for name, value in raw.items():
            if value:
                chunks[name] = change.revision
            else:
                chunks.pop(name, None)
        head = json.dumps(
            {"format": FORMAT, "revision": change.revision, "chunks": chunks},
            separators=(",", ":"),
            sort_keys=True,
        ).encode()
        return raw, chunks, head, {n: pack(v) for n, v in raw.items() if v}

    async def _txn(self, compare: list[Any], ops: list[Any], revision: int) -> None:
        size = sum(op.request_put.ByteSize() for op in ops)
        reply = await self.client.call(
            "KV",
            "Txn",
            rpc.TxnRequest(compare=compare, success=ops),
            budget=self._budget(size),
        )
        if not reply.succeeded:
            raise NotLeader(
                f"this controller lost the lead while committing revision {revision}; nothing "
                "was committed"
            )

    def _apply_ids(self, change: Change) -> None:
        for group in change.freed_groups:
            self._groups.pop(self._group_ids.pop(group, 0), None)
        for group, id_ in change.new_groups.items():
            self._group_ids[group] = id_
            self._groups[id_] = group
        for a in change.freed_adjacencies:
            self._adjacency_ids.pop(a, None)
        self._adjacency_ids.update(change.new_adjacencies)
        for node in change.nodes:
            self._nodes[node.name] = node
        for name in change.removed_nodes:
            self._nodes.pop(name, None)
        self._drained.update(change.drained)
        self._drained.difference_update(change.restored)

    def _chunks_of(self, change: Change) -> dict[str, bytes]:
        """The new bytes of every chunk `change` touches (b"": the chunk goes)."""
        out: dict[str, bytes] = {}
        known = self._group_ids
        new_groups = change.new_groups

        def gid(group: GroupKey | None) -> int:
            if group is None:
                return 0
            found = new_groups.get(group)
            return known[group] if found is None else found

        touched: dict[str, dict[bytes, tuple[int, int] | None]] = {}
        batch = change.batch
        if batch is not None and batch.packed is not None:
            values = [(int(i.kind), gid(i.group)) for i in batch.intents]
            keys = batch.packed.sort_keys()
            for node, key, index in zip(batch.nodes, keys, batch.index, strict=True):
                touched.setdefault(route_chunk(node, key), {})[key] = values[index]
        else:
            for (node, prefix), intent in change.set.items():
                key = prefix_sort_key(prefix)
                touched.setdefault(route_chunk(node, key), {})[key] = (
                    int(intent.kind),
                    gid(intent.group),
                )
        for node, prefix in change.deleted:
            key = prefix_sort_key(prefix)
            touched.setdefault(route_chunk(node, key), {})[key] = None
        for name, updates in touched.items():
            routes = decode_routes(name, self._raw.get(name, b""))
            for key, value in updates.items():
                if value is None:
                    routes.pop(key, None)
                else:
                    routes[key] = value
            out[name] = encode_routes(name, routes)
        # Ids: the chunks of the ranges they fall in.
        group_texts: dict[int | None, str | None] = {
            self._group_ids.get(g): None for g in change.freed_groups
        }
        group_texts.update({i: group_text(g) for g, i in change.new_groups.items()})
        adjacency_texts: dict[int | None, str | None] = {
            self._adjacency_ids.get(a): None for a in change.freed_adjacencies
        }
        adjacency_texts.update({i: adjacency_text(a) for a, i in change.new_adjacencies.items()})
        for letter, texts in (("g", group_texts), ("a", adjacency_texts)):
            updates_ids: dict[str, dict[int, str | None]] = {}
            for i, t in texts.items():
                if i is not None:
                    updates_ids.setdefault(f"{letter}/{i // ID_RANGE}", {})[i] = t
            for name, changes in updates_ids.items():
                current = decode_ids(self._raw.get(name, b""))
                for i, t in changes.items():
                    if t is None:
                        current.pop(i, None)
                    else:
                        current[i] = t
                out[name] = encode_ids(current)
        if change.nodes or change.removed_nodes:
            nodes = dict(self._nodes)
            nodes.update((n.name, n) for n in change.nodes)
            for name in change.removed_nodes:
                nodes.pop(name, None)
            out["n"] = _nodes_to(nodes)
        if change.drained or change.restored:
            drained = (self._drained | set(change.drained)) - set(change.restored)
            out["d"] = json.dumps(sorted((n, adjacency_text(a)) for n, a in drained)).encode()
        return out

    async def _clean(self) -> None:
        """Deletes chunks no head names any more, and compacts etcd's history now and then
        (a full table rewritten is tens of MiB of history)."""
        while self._garbage:
            part, self._garbage = self._garbage[:TXN_OPS], self._garbage[TXN_OPS:]
            try:
                await self.client.call("KV", "Txn", rpc.TxnRequest(success=map(delete, part)))
            except StoreUnavailable:
                self._garbage += part
                return
        if self._written > COMPACT_BYTES and self.head_mod:
            try:
                await self.client.call(
                    "KV", "Compact", rpc.CompactionRequest(revision=self.head_mod)
                )
                self._written = 0
            except (StoreUnavailable, grpc.aio.AioRpcError) as e:
                log.debug("etcd compaction: %s", e)

    async def sweep(self) -> int:
        """Deletes chunks that no head names (left by a commit that did not finish); run by
        a new leader before it commits. The number deleted."""
        reply = await self.client.call(
            "KV",
            "Range",
            rpc.RangeRequest(
                key=self.key_blob, range_end=prefix_end(self.key_blob), keys_only=True
            ),
            budget=30.0,
        )
        named = {self._blob_key(n, r) for n, r in self.chunks.items()}
        stray = [kv.key for kv in reply.kvs if kv.key not in named]
        self._garbage += stray
        await self._clean()
        return len(stray)

    # -- edge policies: one key each, "<node>/<port>/<vlan>", written by the leader only
    # (fenced on its leader key like every commit)

    async def list_port_policies(self) -> list[PortPolicyRecord]:
        reply = await self.client.call(
            "KV",
            "Range",
            rpc.RangeRequest(key=self.key_policies, range_end=prefix_end(self.key_policies)),
        )
        out = []
        for kv in reply.kvs:
            d = json.loads(kv.value)
            try:
                out.append(
                    PortPolicyRecord(d["node"], d["port"], d["vlan"], policy_from_json(d["policy"]))
                )
            except (ValueError, KeyError, TypeError) as e:
                raise StoreError(f"{kv.key!r}: not a port policy ({e})") from None
        return sorted(out, key=lambda r: (r.node, r.port, r.vlan))

    async def put_port_policy(self, record: PortPolicyRecord) -> None:
        key = self.key_policies + f"{record.node}/{record.port}/{record.vlan}".encode()
        value = json.dumps(
            {
                "node": record.node,
                "port": record.port,
                "vlan": record.vlan,
                "policy": policy_to_json(record.policy),
            }
        ).encode()
        fences = [compare_created(self.key_leader, self.fence)] if self.fence else []
        reply = await self.client.call(
            "KV", "Txn", rpc.TxnRequest(compare=fences, success=[put(key, value)])
        )
        if not reply.succeeded:
            raise NotLeader("this controller lost the lead: the port policy was not written")

    # -- members and their samples (controller/members.py): small records, one key each,
    # written by the leader only (fenced on its leader key like every commit)

    async def _fenced(self, ops: list[Any]) -> None:
        fences = [compare_created(self.key_leader, self.fence)] if self.fence else []
        for start in range(0, len(ops), 100):  # etcd's default operations per Txn: 128
            reply = await self.client.call(
                "KV", "Txn", rpc.TxnRequest(compare=fences, success=ops[start : start + 100])
            )
            if not reply.succeeded:
                raise NotLeader("this controller lost the lead: nothing more was written")

    async def list_members(self) -> list[MemberRecord]:
        reply = await self.client.call(
            "KV",
            "Range",
            rpc.RangeRequest(key=self.key_members, range_end=prefix_end(self.key_members)),
        )
        members = []
        for kv in reply.kvs:
            try:
                d = json.loads(kv.value)
                sources = d.pop("sources", None)
                d["sources"] = None if sources is None else check_sources(d["name"], sources)
                # Records from before filters derived from BGP have neither field.
                d["bgp_next_hops"], d["bgp_sources"] = bgp_from_fields(
                    d["name"], d.pop("bgp_next_hops", None), d.pop("bgp_sources", ())
                )
                members.append(MemberRecord(**d))
            except (ValueError, KeyError, TypeError) as e:
                raise StoreError(f"{kv.key!r}: not a member ({e})") from None
        return sorted(members, key=lambda m: m.name)

    async def put_member(self, member: MemberRecord) -> None:
        value = json.dumps(asdict(member)).encode()
        await self._fenced([put(self.key_members + member.name.encode(), value)])

    async def delete_member(self, name: str) -> None:
        await self._fenced([delete(self.key_members + name.encode())])

    def _sample_key(self, member: str, when: float) -> bytes:
        return self.key_samples + member.encode() + b"/" + f"{when:017.3f}".encode()

    async def add_samples(self, samples: Sequence[Sample]) -> None:
        await self._fenced(
            [
                put(self._sample_key(s.member, s.time), json.dumps(asdict(s)).encode())
                for s in samples
            ]
        )

    async def samples(self, member: str, start: float, end: float) -> list[Sample]:
        """A member's samples with start <= time < end, by time (keys sort by time)."""
        reply = await self.client.call(
            "KV",
            "Range",
            rpc.RangeRequest(
                key=self._sample_key(member, start), range_end=self._sample_key(member, end)
            ),
            budget=30.0,
        )
        return [Sample(**json.loads(kv.value)) for kv in reply.kvs]

    # -- election ids

    async def next_election_id(self) -> int:
        for _ in range(10):
            reply = await self.client.call("KV", "Range", rpc.RangeRequest(key=self.key_election))
            current, mod = (
                (int(reply.kvs[0].value), reply.kvs[0].mod_revision) if reply.kvs else (0, 0)
            )
            fences = [compare_created(self.key_leader, self.fence)] if self.fence else []
            txn = await self.client.call(
                "KV",
                "Txn",
                rpc.TxnRequest(
                    compare=[compare_mod(self.key_election, mod), *fences],
                    success=[put(self.key_election, str(current + 1).encode())],
                ),
            )
            if txn.succeeded:
                return current + 1
            if self.fence:
                leader = await self.client.call(
                    "KV", "Range", rpc.RangeRequest(key=self.key_leader)
                )
                if not leader.kvs or leader.kvs[0].create_revision != self.fence:
                    raise NotLeader("this controller lost the lead while taking an election id")
        raise EtcdUnreachable(f"{self.describe()}: the election id kept changing")

    # -- list

    async def list_routes(self, query: RouteQuery) -> list[tuple[RouteKey, Intent, bytes]]:
        """From the mirror (what the last head read or written holds): reads keep working
        while etcd has no quorum."""
        import bisect
        import ipaddress

        nodes = sorted({n.split("/")[1] for n in self._raw if n.startswith("r/")})
        if query.node is not None:
            nodes = [n for n in nodes if n == query.node]
        if query.after is not None:
            nodes = [n for n in nodes if n >= query.after[0]]
        low = high = None
        if query.within is not None:
            network = ipaddress.ip_network(query.within)
            family = bytes((len(network.network_address.packed),))
            low = family + network.network_address.packed + bytes((network.prefixlen,))
            high = family + network.broadcast_address.packed + b"\xff"
        out: list[tuple[RouteKey, Intent, bytes]] = []
        for node in nodes:
            for _ in range(5):
                keys, values = await self._node_routes(node)
                # Building the node's table yields to the loop, where a head may come in;
                # read it again until the table is the mirror's, so that every group id in
                # it is still known (a head frees a group only by changing its routes).
                if self._sorted[node][0] == self._node_version(node):
                    break
            else:
                raise StoreUnavailable(
                    f"node {node}'s routes changed under five reads in a row; try again", False
                )
            start = 0
            if query.after is not None and query.after[0] == node:
                start = bisect.bisect_right(keys, query.after[1])
            if low is not None:
                start = max(start, bisect.bisect_left(keys, low))
            for i in range(start, len(keys)):
                key = keys[i]
                if high is not None and key > high:
                    break
                kind, gid = values[key]
                if query.kind and kind != query.kind:
                    continue
                prefix = prefix_of_sort_key(key)
                assert prefix is not None
                out.append(((node, prefix), self._intent(kind, gid), key))
                if len(out) >= query.limit:
                    return out
        return out

    def _node_version(self, node: str) -> tuple[tuple[str, int], ...]:
        mine = f"r/{node}/"
        return tuple(sorted((n, r) for n, r in self.chunks.items() if n.startswith(mine)))

    async def _node_routes(self, node: str) -> tuple[list[bytes], dict[bytes, tuple[int, int]]]:
        raw_now = self._raw
        version = self._node_version(node)
        found = self._sorted.get(node)
        if found is None or found[0] != version:
            raws = [(n, raw_now[n]) for n, _ in version if n in raw_now]

            def build() -> tuple[list[bytes], dict[bytes, tuple[int, int]]]:
                values: dict[bytes, tuple[int, int]] = {}
                for name, raw in raws:
                    values.update(decode_routes(name, raw))
                return sorted(values), values

            keys, values = await asyncio.get_running_loop().run_in_executor(None, build)
            found = self._sorted[node] = (version, keys, values)
        return found[1], found[2]

    async def size(self) -> tuple[int, int]:
        """(bytes of chunks the head names, etcd's database size) in bytes."""
        raws = list(self._raw.values())
        chunk_bytes = await self._off_loop(lambda: sum(len(pack(v)) for v in raws))
        reply = await self.client.call("Maintenance", "Status", rpc.StatusRequest())
        return chunk_bytes, reply.dbSize

    async def changes(self) -> AsyncIterator[None]:
        """Wakes the caller whenever the head may have changed (and once on every new
        watch, since a change may have come while none was open)."""
        while True:
            async for _ in self.client.watch(self.key_head, 0):
                yield None
            await asyncio.sleep(0.2)

    async def close(self) -> None:
        if self._cleaner is not None and not self._cleaner.done():
            try:
                async with asyncio.timeout(5):
                    await self._cleaner
            except (TimeoutError, StoreUnavailable):
                pass
        await self.client.close()
        self._thread.shutdown(wait=True)


def _nodes_to(nodes: dict[str, Node]) -> bytes:
    return json.dumps(
        [
            [n.name, n.address]
            + ([n.tls.ca, n.tls.cert, n.tls.key, n.tls.server_name] if n.tls else [])
            for n in sorted(nodes.values(), key=lambda n: n.name)
        ]
    ).encode()


def _nodes_from(raw: bytes) -> dict[str, Node]:
    out = {}
    for item in json.loads(raw or b"[]"):
        name, address, *tls = item
        out[name] = Node(name, address, NodeTls(*tls) if tls else None)
    return out


def endpoints_problem(endpoint: str) -> str | None:
    host, sep, port = endpoint.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        return f'{endpoint!r} is not host:port (port 1 to 65535), such as "127.0.0.1:2379"'
    if "/" in endpoint:
        return f"{endpoint!r}: give host:port, without a scheme (TLS is [store.tls])"
    return None


def tls_files_problem(tls: EtcdTls) -> str | None:
    for field_name in ("ca", "cert", "key"):
        path = getattr(tls, field_name)
        if not os.access(path, os.R_OK):
            return f"tls.{field_name}: {path} cannot be read (missing or not readable)"
    return None


__all__ = [
    "EtcdConfig",
    "EtcdStore",
    "EtcdTls",
    "EtcdUnreachable",
    "NotLeader",
    "endpoints_problem",
    "tls_files_problem",
]
