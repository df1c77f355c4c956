"""One session per node: keeps the node's FIB equal to intent over corridor.v1.Dataplane.

On connect and every reconnect it Reads the node's FIB, diffs it against intent and writes
only the difference (nothing at all when nothing differs); afterwards it writes each
committed change as it comes. A StreamCounters call doubles as the liveness signal (a dead
agent ends it at once) and feeds the status' counters; every `drift_check` seconds the
agent's generation is compared with the one our last write left, and a full Read repairs
and reports what someone else changed.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from corridor._dataplane import write_request_bytes
from corridor.common.addresses import address_text, prefix_text, prefix_to_pb
from corridor.common.edge import EdgePolicy, policy_to_pb
from corridor.common.fib import (
    Adjacency,
    DeleteAdjacency,
    DeleteGroup,
    DeleteRoute,
    FibOperation,
    NextHopGroup,
    Route,
    RouteKind,
    new_route,
)
from corridor.common.status import election_id_to_pb, write_error
from corridor.controller.domain import (
    ALL_NODES,
    BatchIntents,
    IntentState,
    Node,
    NodeFib,
    Ops,
    apply_operations,
    diff,
)
from corridor.v1 import common_pb2, dataplane_pb2, dataplane_pb2_grpc

if TYPE_CHECKING:
    from corridor.controller.members import MemberRecord
    from corridor.controller.metrics import ControllerMetrics

log = logging.getLogger("corridor.controller")

OPERATIONS_PER_BATCH = 50_000  # below the agent's 100,000
BATCHES_IN_FLIGHT = 4
READ_TIMEOUT = 300.0
WRITE_TIMEOUT = 300.0
COUNTERS_INTERVAL_MS = 1000
BACKOFF = (0.1, 2.0)
BUILD_CHUNK = 20_000  # prefixes per step while building a node's intended FIB
CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
    # Reconnect fast when an agent comes back: the default backoff reaches 2 minutes.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)

CONNECTING, SYNCING, IN_SYNC, FAILING = 1, 2, 3, 4  # corridor.v1.SyncState


class AgentRefused(Exception):
    """The agent refused a write: the message says why (its WriteError's first violation)."""


class NodeSession:
    def __init__(
        self,
        node: Node,
        state: IntentState,
        election: int,
        drift_check: float,
        metrics: ControllerMetrics | None = None,
    ) -> None:
        self.node = node
        self.name = node.name
        self._state = state
        self._election = election
        self.drift_check = drift_check  # seconds; a reload may change it
        self._metrics = metrics
        self.desired: NodeFib | None = None  # built by run()
        self._installed: NodeFib | None = None  # what the node holds, once read
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._pending_revision = 0  # the newest revision with changes for this node
        self._pending_since: float | None = None  # when the oldest unwritten change came
        # Status.
        self.sync_state = CONNECTING
        self.connected = False
        self.synced_revision = 0
        self.last_error = ""
        self.last_error_time = 0.0
        self.retries = 0  # failed attempts since the node was last in sync
        self.cleared_error = ""  # the error a recovery cleared, and when
        self.cleared_error_time = 0.0
        self._warned: int | None = None  # the failing state last warned about
        self.generation = 0
        self.reconnects = 0
        self.drift_detected = 0
        self.drift_entries = 0
        self.last_full_sync_seconds = 0.0
        self.last_full_sync_operations = 0
        self.counters = (0, 0, 0)  # rx, tx, dropped packets
        # The members' counters of the last message of the counters stream, and its time.
        self.member_counters: list[dataplane_pb2.MemberCounters] = []
        self.member_counters_time = 0.0
        self.ports: dict[str, set[int]] | None = None  # port -> VLANs, once read
        # The kernel ifindex of each port (VLAN 0) and VLAN device -> (port, VLAN), once read:
        # how routes from the node's routing daemon (FPM) name their interfaces.
        self.interfaces: dict[int, tuple[str, int]] | None = None
        # Awaited after each Read, before the difference is written: (this session, what the
        # node holds, whether `interfaces` changed). The core's BGP feed uses it.
        self.on_read: Callable[[NodeSession, NodeFib, bool], Awaitable[None]] | None = None
        # The update group the node is a member of: then `desired` and `_installed` are the
        # group's, and the group writes to the node through `_stub`.
        self.group: UpdateGroup | None = None
        self._stub: dataplane_pb2_grpc.DataplaneStub | None = None
        self._resync = False  # left a group while a write to it was under way: read it again
        self._failure: BaseException | None = None  # a group's write to the node failed
        # The node's edge policies as stored, pushed after every full sync and on change;
        # the agent's refusal (a port it does not have) is kept, not retried until a change.
        self.policies: dict[tuple[str, int], EdgePolicy] = {}
        self._push_policies = False
        self.policy_error = ""
        # The node's exchange members (the controller's); kept equal on the agent by
        # `_sync_members` after every full sync and whenever `members_changed` is called.
        self.members_for: Callable[[], list[MemberRecord]] = list
        self._members_dirty = False
        # The agent's members as last read or written (None: read them first). Read streams
        # the whole FIB: members that change often (filters from BGP) are diffed against this
        # between full syncs instead.
        self._agent_members: dict[int, dataplane_pb2.Member] | None = None

    def set_policies(self, policies: dict[tuple[str, int], EdgePolicy]) -> None:
        """The node's edge policies from now on: pushed to its agent at once if connected,
        else when it connects."""
        self.policies = policies
        self._push_policies = True
        self._wake.set()

    async def _send_policies(self, stub: dataplane_pb2_grpc.DataplaneStub) -> None:
        self._push_policies = False
        if not self.policies:
            self.policy_error = ""
            return
        request = dataplane_pb2.SetPortPoliciesRequest(
            election_id=election_id_to_pb(self._election),
            policies=[
                common_pb2.PortPolicy(port=port, vlan=vlan, policy=policy_to_pb(p))
                for (port, vlan), p in sorted(self.policies.items())
            ],
        )
        try:
            await stub.SetPortPolicies(request, timeout=WRITE_TIMEOUT)
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.INVALID_ARGUMENT:
                raise
            if e.details() != self.policy_error:
                log.warning(
                    "node %s: the agent refused its port policies: %s", self.name, e.details()
                )
            self.policy_error = e.details() or "refused"
            return
        self.policy_error = ""

    @property
    def in_sync(self) -> bool:
        return self.sync_state == IN_SYNC

    def lag_seconds(self) -> float:
        return 0.0 if self._pending_since is None else time.monotonic() - self._pending_since

    def installed_sizes(self) -> tuple[int, int, int, int]:
        return self._installed.sizes() if self._installed is not None else (0, 0, 0, 0)

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name=f"node {self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    # -- told by the controller, right after a commit

    def changed(
        self,
        prefixes: Iterable[str],
        revision: int,
        known: BatchIntents | None = None,
    ) -> None:
        """`known`: see IntentState.refresh."""
        if self._in_group():
            assert self.group is not None
            self.group.changed(prefixes, revision, known)
            self._mark(revision, wake=False)
            return
        if self.desired is not None:
            self._state.refresh(self.desired, self.name, prefixes, known)
        self._mark(revision)

    def groups_changed(self, revision: int) -> None:
        if self._in_group():
            assert self.group is not None
            self.group.groups_changed(revision)
            self._mark(revision, wake=False)
            return
        if self.desired is not None:
            self._state.refresh_groups(self.desired, self.name)
        self._mark(revision)

    def members_changed(self) -> None:
        """The node's members changed: written to its agent at once if connected, else at
        the next sync."""
        self._members_dirty = True
        self._wake.set()

    async def _sync_members(self, stub: dataplane_pb2_grpc.DataplaneStub) -> int:
        """Reads the agent's members (in Read's first message) and writes the difference
        to the controller's; returns the operations written. Members are few: one Write."""
        self._members_dirty = False
        installed = self._agent_members
        if installed is None:
            call = stub.Read(dataplane_pb2.ReadRequest(head_only=True), timeout=READ_TIMEOUT)
            first = await call.read()
            call.cancel()
            installed = {} if first is grpc.aio.EOF else {m.id: m for m in first.members}
            self._agent_members = installed
        want = {}
        for m in self.members_for():
            mac = bytes.fromhex(m.mac.replace(":", ""))
            want[m.id] = dataplane_pb2.Member(
                id=m.id,
                port=m.port,
                vlan=m.vlan,
                mac=mac,
                name=m.name,
                filter_sources=m.sources is not None,
                allowed_sources=[prefix_to_pb(p) for p in m.sources or ()],
            )
        ops = [
            dataplane_pb2.Operation(
                action=dataplane_pb2.ACTION_DELETE, member=dataplane_pb2.Member(id=i)
            )
            for i in sorted(installed.keys() - want.keys())
        ]
        ops += [
            dataplane_pb2.Operation(action=dataplane_pb2.ACTION_SET, member=m)
            for i, m in sorted(want.items())
            if installed.get(i) != m
        ]
        if not ops:
            return 0
        request = dataplane_pb2.WriteRequest(
            election_id=election_id_to_pb(self._election), operations=ops
        )
        self._agent_members = None  # unknown until the write is acknowledged
        try:
            response = await stub.Write(request, timeout=WRITE_TIMEOUT)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.INVALID_ARGUMENT:
                found = write_error(e)
                why = found.violations[0].description if found and found.violations else e.details()
                raise AgentRefused(f"members refused by the agent: {why}") from None
            raise
        self.generation = response.generation
        self._agent_members = want
        if self._metrics is not None:
            self._metrics.node_writes.labels(self.name, "members").inc(len(ops))
        return len(ops)

    def _mark(self, revision: int, wake: bool = True) -> None:
        self._pending_revision = revision
        if self._pending_since is None:
            self._pending_since = time.monotonic()
        if wake:
            self._wake.set()

    # -- the update group

    def _in_group(self) -> bool:
        """Whether the node is in its update group after this commit: one that now has
        intent of its own leaves it first (with copies of the group's FIBs)."""
        if self.group is None:
            return False
        if self._state.has_own_intent(self.name):
            self._leave_group()
            return False
        return True

    def _join_group(self, stub: dataplane_pb2_grpc.DataplaneStub) -> None:
        """Joins the update group when the node's intent is the group's and both the node
        and the group hold all of it: then they hold the same FIB."""
        desired, installed = self.desired, self._installed
        if desired is None or installed is None or desired.dirty():
            return
        if self._state.has_own_intent(self.name):
            return
        group = update_group(self._state, self._election)
        if group.members and not group.clean():
            group.waiting.add(self)  # woken when the group is next clean
            return
        self.desired, self._installed = group.join(self, desired, installed)
        self.group = group
        self._stub = stub

    def _leave_group(self, failure: BaseException | None = None) -> None:
        """Goes its own way with copies of the group's FIBs; what the node holds is read
        again if a write to it was under way (or failed)."""
        group = self.group
        assert group is not None
        self.group = None
        self.desired, installed = group.leave(self)
        if failure is not None:
            self._failure = failure
        elif installed is None:
            self._resync = True
        self._installed = installed
        self._wake.set()

    def _group_synced(self, revision: int, more: bool) -> None:
        self.synced_revision = max(self.synced_revision, revision)
        if not more:
            self._pending_since = None
            self.sync_state = IN_SYNC

    async def _send(self, requests: Sequence[asyncio.Future[bytes]], sizes: Sequence[int]) -> None:
        """Writes a group's encoded requests to this node (the group records them)."""
        stub = self._stub
        assert stub is not None, "a member has a stub"

        def acked(index: int, response: dataplane_pb2.WriteResponse) -> None:
            self.generation = response.generation
            if self._metrics is not None:
                self._metrics.node_writes.labels(self.name, "change").inc(sizes[index])

        await _stream_write(stub, len(requests), lambda i: asyncio.shield(requests[i]), acked)

    # -- the session

    async def run(self) -> None:
        await self._build_desired()
        backoff = BACKOFF[0]
        while True:
            try:
                await self._serve()
            except asyncio.CancelledError:
                raise
            except AgentRefused as e:
                self._fail(FAILING, str(e))
            except grpc.RpcError as e:
                code = e.code()
                self._fail(
                    FAILING if code == grpc.StatusCode.PERMISSION_DENIED else CONNECTING,
                    f"{code.name}: {e.details()}",
                )
            except (OSError, TimeoutError, ConnectionError) as e:
                self._fail(CONNECTING, f"{type(e).__name__}: {e}")
            if self.connected:  # it was in sync: the next attempt starts soon again
                backoff = BACKOFF[0]
            self.connected = False
            self._installed = None
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF[1])
            self.reconnects += 1

    def _fail(self, sync_state: int, message: str) -> None:
        """One failed attempt. Warns once per change of state (connecting, failing): an
        unreachable node retries every two seconds, and says so once; the status holds the
        latest error and the count of retries."""
        if self._warned != sync_state:
            log.warning("node %s: %s (retrying)", self.name, message)
            self._warned = sync_state
        self.sync_state = sync_state
        if message != self.last_error:  # the time says since when this error stands
            self.last_error_time = time.time()
        self.last_error = message
        self.retries += 1

    def _recovered(self) -> None:
        """In sync after failures: the error is cleared (kept as cleared_error, with the time)."""
        if self.last_error:
            log.info(
                "node %s: recovered after %d retries; the last error was: %s",
                self.name, self.retries, self.last_error,
            )  # fmt: skip
            self.cleared_error = self.last_error
            self.cleared_error_time = time.time()
        self.last_error = ""
        self.last_error_time = 0.0
        self.retries = 0
        self._warned = None

    async def _build_desired(self) -> None:
        """The node's intended FIB, in steps so the event loop stays responsive; changes
        committed meanwhile refresh it as they come."""
        fib = NodeFib()
        self.desired = fib
        prefixes = list(self._state.prefixes_for(self.name))
        for start in range(0, len(prefixes), BUILD_CHUNK):
            self._state.refresh(fib, self.name, prefixes[start : start + BUILD_CHUNK])
            await asyncio.sleep(0)

    async def _serve(self) -> None:
        channel = _channel(self.node)
        counters: asyncio.Task[None] | None = None
        self._resync = False
        self._failure = None
        try:
            stub = _DataplaneStub(channel)
            self.sync_state = SYNCING
            await self._full_sync(stub, reason="sync")
            await self._send_policies(stub)
            self.connected = True
            self._recovered()
            counters = asyncio.create_task(self._watch_counters(stub))
            next_drift_check = time.monotonic() + self.drift_check
            while True:
                if self._failure is not None:
                    failure, self._failure = self._failure, None
                    raise failure
                if self._resync:
                    self._resync = False
                    await self._full_sync(stub, reason="resync")
                    continue
                if self._push_policies:
                    await self._send_policies(stub)
                if self._members_dirty:
                    await self._sync_members(stub)
                    continue
                if self.group is None:
                    if self._wake.is_set() or self._pending_since is not None:
                        await self._write_changes(stub)
                        continue
                    self._join_group(stub)
                self._wake.clear()
                timeout = max(0.0, next_drift_check - time.monotonic())
                wake = asyncio.ensure_future(self._wake.wait())
                done, _ = await asyncio.wait(
                    {wake, counters}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                wake.cancel()
                if counters in done:
                    counters.result()  # raises what ended it
                    raise ConnectionError("the agent ended the counters stream")
                if time.monotonic() >= next_drift_check:
                    if self.group is None or not self.group.busy:
                        await self._check_drift(stub)
                    next_drift_check = time.monotonic() + self.drift_check
        finally:
            self._agent_members = None
            if self.group is not None:
                self._leave_group()
            self._stub = None
            if counters is not None:
                counters.cancel()
            await channel.close(None)

    async def _full_sync(self, stub: dataplane_pb2_grpc.DataplaneStub, reason: str) -> int:
        """Reads the node, writes the difference to intent; returns the operations written."""
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        async with asyncio.timeout(READ_TIMEOUT):
            installed, generation, ports, interfaces = await _read(stub)
        self.ports = ports
        ports_changed = interfaces != self.interfaces
        self.interfaces = interfaces
        if self.on_read is not None:
            await self.on_read(self, installed, ports_changed)
        revision = self._pending_revision or self._state.revision
        desired = self.desired
        assert desired is not None, "run() builds it first"
        desired.take_dirty()  # a full diff covers everything dirty
        want = desired.clone()  # as it is now: applies may change `desired` meanwhile
        ops = await loop.run_in_executor(None, diff, installed, want)
        self._installed = installed
        self.generation = generation
        if ops:
            # A full diff's operations take the node to `want` exactly: that is what it
            # holds once all are acknowledged, without recording them one by one (a
            # restarted agent's full table: most of the restore's time on the loop).
            await self._write(stub, ops, reason, result=want)
        self._agent_members = None  # read again: the agent may have restarted
        await self._sync_members(stub)
        self.synced_revision = max(self.synced_revision, revision)
        if not desired.routes.has_dirty() and not desired.dirty_groups:
            self._pending_since = None
        self.sync_state = IN_SYNC
        seconds = time.perf_counter() - started
        if reason == "sync":
            self.last_full_sync_seconds = seconds
            self.last_full_sync_operations = len(ops)
            log.info(
                "node %s: in sync at revision %d, %d operations written in %.3f s",
                self.name, revision, len(ops), seconds,
            )  # fmt: skip
        return len(ops)

    async def _write_changes(self, stub: dataplane_pb2_grpc.DataplaneStub) -> None:
        self._wake.clear()
        revision = self._pending_revision
        desired, installed = self.desired, self._installed
        assert desired is not None and installed is not None, "after a full sync"
        routes, groups, adjacencies = desired.take_dirty()
        ops = diff(installed, desired, routes, groups, adjacencies)
        if ops:
            try:
                await self._write(stub, ops, "change")
            except BaseException:
                # Not written: still dirty, for the next write or the next full sync.
                desired.mark_dirty(routes, groups, adjacencies)
                raise
        self.synced_revision = max(self.synced_revision, revision)
        if not self._wake.is_set():
            self._pending_since = None
            self.sync_state = IN_SYNC

    async def _check_drift(self, stub: dataplane_pb2_grpc.DataplaneStub) -> None:
        """Cheap when nothing changed: the generation comes in Read's first message, which
        the agent sends alone (head_only), without walking its FIB."""
        call = stub.Read(dataplane_pb2.ReadRequest(head_only=True), timeout=READ_TIMEOUT)
        first = await call.read()
        call.cancel()
        if first is grpc.aio.EOF or first.generation == self.generation:
            return
        if self.group is not None:
            self._leave_group()  # the node differs from its group's: alone until repaired
        self._resync = False
        written = await self._full_sync(stub, reason="drift")
        if written:
            self.drift_detected += 1
            self.drift_entries += written
            log.warning(
                "node %s: drift: the FIB was changed behind the controller's back "
                "(generation %d, expected %d); %d entries restored",
                self.name, first.generation, self.generation, written,
            )  # fmt: skip

    async def _write(
        self,
        stub: dataplane_pb2_grpc.DataplaneStub,
        ops: Ops,
        reason: str,
        result: NodeFib | None = None,
    ) -> None:
        """Writes `ops` in order, in batches streamed a few ahead, and records each
        acknowledged batch in what the node holds. With `result`, the FIB the node holds
        once every operation is acknowledged: it becomes the record at the end instead
        (and only the acknowledged batches are recorded if the write fails)."""
        loop = asyncio.get_running_loop()
        batches = _batches(ops)
        election = self._election
        acknowledged: list[int] = []

        def request(i: int) -> Awaitable[bytes]:
            return loop.run_in_executor(None, write_request, batches[i], election, i + 1)

        def acked(index: int, response: dataplane_pb2.WriteResponse) -> None:
            batch = batches[index]
            assert self._installed is not None, "read before any write"
            if result is None:
                apply_operations(self._installed, batch)
            else:
                acknowledged.append(index)
            self.generation = response.generation
            if self._metrics is not None:
                self._metrics.node_writes.labels(self.name, reason).inc(len(batch))

        try:
            await _stream_write(stub, len(batches), request, acked)
        except BaseException:
            if result is not None and self._installed is not None:
                for index in sorted(acknowledged):
                    apply_operations(self._installed, batches[index])
            raise
        if result is not None:
            self._installed = result

    async def _watch_counters(self, stub: dataplane_pb2_grpc.DataplaneStub) -> None:
        request = dataplane_pb2.StreamCountersRequest(interval_ms=COUNTERS_INTERVAL_MS)
        async for c in stub.StreamCounters(request):
            self.counters = (
                sum(w.rx_packets for w in c.workers),
                sum(w.tx_packets for w in c.workers),
                sum(w.dropped_packets for w in c.workers),
            )
            self.member_counters = list(c.members)
            self.member_counters_time = c.time.seconds + c.time.nanos / 1e9


def _batches(ops: Ops) -> list[Ops]:
    return [
        ops[start : start + OPERATIONS_PER_BATCH]
        for start in range(0, len(ops), OPERATIONS_PER_BATCH)
    ]


async def _stream_write(
    stub: dataplane_pb2_grpc.DataplaneStub,
    count: int,
    request: Callable[[int], Awaitable[bytes]],
    acked: Callable[[int, dataplane_pb2.WriteResponse], None],
) -> None:
    """Streams `count` serialized WriteRequests (batch ids 1..count), BATCHES_IN_FLIGHT ahead
    of the acknowledgements, each told to `acked` with its index; AgentRefused for a refusal."""
    window = asyncio.Semaphore(BATCHES_IN_FLIGHT)

    async def requests() -> AsyncIterator[bytes]:
        for i in range(count):
            await window.acquire()
            yield await request(i)

    call = stub.StreamWrite(requests(), timeout=WRITE_TIMEOUT)
    try:
        async for response in call:
            acked(response.batch_id - 1, response)
            window.release()
    except grpc.RpcError as e:
        details = write_error(e) if e.code() == grpc.StatusCode.INVALID_ARGUMENT else None
        if details is not None and details.violations:
            v = details.violations[0]
            raise AgentRefused(f"the agent refused a write: {v.field}: {v.description}") from None
        raise


class UpdateGroup:
    """The nodes whose intended FIB is the routes for every node, as every node holds them
    (no routes or drains of their own), and that hold the same FIB: like BGP's update
    groups, they share the work of an update. One intended and one installed FIB for all, one
    refresh and one diff per change, each WriteRequest encoded once and the same bytes sent
    to every member. A member that diverges (a route or drain of its own, a failed write, a
    drift) leaves with copies of both FIBs and goes on alone; it joins again once it and
    the group both hold all of intent."""

    def __init__(self, state: IntentState, election: int) -> None:
        self.state = state
        self.election = election
        self.desired: NodeFib | None = None  # while there are members
        self.installed: NodeFib | None = None  # what every member holds
        self.members: list[NodeSession] = []
        self.busy = False  # a write to the members is under way
        self._sends: dict[NodeSession, asyncio.Task[None]] = {}
        self.waiting: weakref.WeakSet[NodeSession] = weakref.WeakSet()  # nodes that would join
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._revision = 0  # the newest revision told
        self._refreshed = 0  # the revision `desired` was last refreshed for
        self._groups_refreshed = 0

    def clean(self) -> bool:
        """Every member holds all of intent: nothing written, nothing to write."""
        return (
            not self.busy
            and not self._wake.is_set()
            and self.desired is not None
            and not self.desired.dirty()
        )

    def join(
        self, session: NodeSession, desired: NodeFib, installed: NodeFib
    ) -> tuple[NodeFib, NodeFib]:
        """Takes in a node that holds all of its intent (`desired`, equal to `installed`);
        the first member's FIBs become the group's. Returns the FIBs the node uses now."""
        if not self.members:
            if self._task is not None:
                self._task.cancel()  # the task of the group's last members, if still there
            self.desired, self.installed = desired, installed
            self._refreshed = self._groups_refreshed = 0
            self._wake.clear()
            self._task = asyncio.create_task(self._run(), name="update group")
        self.members.append(session)
        assert self.desired is not None and self.installed is not None
        return self.desired, self.installed

    def leave(self, session: NodeSession) -> tuple[NodeFib, NodeFib | None]:
        """Copies of the group's FIBs for a member that goes its own way; no installed FIB
        if a write to it was under way (what it holds is then read again)."""
        self.members.remove(session)
        desired, installed = self.desired, self.installed
        assert desired is not None and installed is not None
        send = self._sends.pop(session, None)
        if send is not None:
            send.cancel()
        mine = desired.clone(), None if self.busy else installed.clone()
        if not self.members:
            self.desired = self.installed = None
            self._wake.set()  # the group's task ends
        return mine

    def changed(
        self,
        prefixes: Iterable[str],
        revision: int,
        known: BatchIntents | None = None,
    ) -> None:
        if self._refreshed != revision:  # once per commit, for whichever member hears first
            self._refreshed = revision
            assert self.desired is not None
            self.state.refresh(self.desired, ALL_NODES, prefixes, known)
        self._revision = revision
        self._wake.set()

    def groups_changed(self, revision: int) -> None:
        if self._groups_refreshed != revision:
            self._groups_refreshed = revision
            assert self.desired is not None
            self.state.refresh_groups(self.desired, ALL_NODES)
        self._revision = revision
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if asyncio.current_task() is not self._task:
                return
            desired, installed = self.desired, self.installed
            if not self.members or desired is None or installed is None:
                return
            revision = self._revision
            ops = diff(installed, desired, *desired.take_dirty())
            if ops:
                self.busy = True
                try:
                    await self._write(ops)
                    apply_operations(installed, ops)  # what every member still here holds
                finally:
                    self.busy = False
            more = self._wake.is_set()
            for member in self.members:
                member._group_synced(revision, more)
            if self.clean():
                for session in self.waiting:
                    session._wake.set()
                self.waiting.clear()

    async def _write(self, ops: Ops) -> None:
        """The same requests to every member, each encoded once; a member whose write
        failed leaves the group (its session reconnects and reads the node)."""
        loop = asyncio.get_running_loop()
        batches = _batches(ops)
        encoded = [
            loop.run_in_executor(None, write_request, batch, self.election, i + 1)
            for i, batch in enumerate(batches)
        ]
        sizes = [len(b) for b in batches]
        sends = {m: asyncio.create_task(m._send(encoded, sizes)) for m in self.members}
        self._sends = sends
        try:
            await asyncio.wait(list(sends.values()))
        finally:
            self._sends = {}
        for member, send in sends.items():
            if member.group is self and not send.cancelled() and send.exception() is not None:
                member._leave_group(send.exception())
        for future in encoded:  # an encoding error is every member's failure, seen above
            if future.done() and not future.cancelled():
                future.exception()


_update_groups: weakref.WeakKeyDictionary[IntentState, UpdateGroup] = weakref.WeakKeyDictionary()


def update_group(state: IntentState, election: int) -> UpdateGroup:
    """The update group of the controller whose intent is `state`."""
    group = _update_groups.get(state)
    if group is None or group.election != election:
        group = _update_groups[state] = UpdateGroup(state, election)
    return group


def _channel(node: Node) -> grpc.aio.Channel:
    if node.tls is None:
        return grpc.aio.insecure_channel(node.address, options=CHANNEL_OPTIONS)
    tls = node.tls
    credentials = grpc.ssl_channel_credentials(
        root_certificates=Path(tls.ca).read_bytes(),
        private_key=Path(tls.key).read_bytes(),
        certificate_chain=Path(tls.cert).read_bytes(),
    )
    options: tuple[tuple[str, int | str], ...] = CHANNEL_OPTIONS
    if tls.server_name:
        options += (("grpc.ssl_target_name_override", tls.server_name),)
    return grpc.aio.secure_channel(node.address, credentials, options=options)


def agent_channel(node: Node) -> grpc.aio.Channel:
    """A channel of its own to the node's agent, made as the session's is: for the API's
    read-only calls, which must not wait behind the session's writes."""
    return _channel(node)


async def _read(
    stub: dataplane_pb2_grpc.DataplaneStub,
) -> tuple[NodeFib, int, dict[str, set[int]], dict[int, tuple[str, int]]]:
    loop = asyncio.get_running_loop()
    responses: list[dataplane_pb2.ReadResponse] = []
    async for response in stub.Read(dataplane_pb2.ReadRequest()):
        responses.append(response)
    return await loop.run_in_executor(None, _installed, responses)


def _installed(
    responses: Iterable[dataplane_pb2.ReadResponse],
) -> tuple[NodeFib, int, dict[str, set[int]], dict[int, tuple[str, int]]]:
    adjacencies: list[Adjacency] = []
    groups: list[NextHopGroup] = []
    routes: list[Route] = []
    generation = 0
    ports: dict[str, set[int]] = {}
    interfaces: dict[int, tuple[str, int]] = {}
    kinds = {k.value: k for k in RouteKind}
    for r in responses:
        generation = r.generation
        for p in r.ports:
            ports[p.name] = {s.vlan for s in p.sub_interfaces}
            if p.ifindex:
                interfaces[p.ifindex] = (p.name, 0)
            interfaces.update((s.ifindex, (p.name, s.vlan)) for s in p.sub_interfaces if s.ifindex)
        for a in r.adjacencies:
            # The gateway form as written; state and neighbour_mac are the agent's findings.
            if a.gateway:
                adjacencies.append(Adjacency(a.id, a.port, a.vlan, "", "", address_text(a.gateway)))
            else:  # explicit MACs: not ours
                adjacencies.append(Adjacency(a.id, a.port, a.vlan, a.src_mac.hex(":"),
                                             a.dst_mac.hex(":")))  # fmt: skip
        for g in r.next_hop_groups:
            members = tuple(sorted((m.adjacency_id, m.weight) for m in g.members))
            groups.append(NextHopGroup(g.id, members))
        append = routes.append
        for route in r.routes:
            prefix = route.prefix
            text = prefix_text(prefix.address, prefix.length)
            append(new_route((text, kinds[route.kind], route.next_hop_group_id)))
    return NodeFib.installed(adjacencies, groups, routes), generation, ports, interfaces


_FIB_TYPES = (Adjacency, NextHopGroup, Route, DeleteAdjacency, DeleteGroup, DeleteRoute)


def write_request(ops: Ops | Sequence[FibOperation], election: int, batch_id: int) -> bytes:
    """The serialized WriteRequest of `ops`, operation i in entry i, written whole by
    corridor._dataplane (no protobuf object per operation; a diff's routes from the route
    table's keys); _DataplaneStub sends it as it is."""
    listed = ops.operations() if isinstance(ops, Ops) else list(ops)
    return write_request_bytes(election, batch_id, listed, _FIB_TYPES)


class _DataplaneStub(dataplane_pb2_grpc.DataplaneStub):
    """The generated stub, but StreamWrite takes its requests already serialized."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        super().__init__(channel)  # type: ignore[no-untyped-call]
        self.StreamWrite = channel.stream_stream(
            "/corridor.v1.Dataplane/StreamWrite",
            request_serializer=None,  # bytes from write_request
            response_deserializer=dataplane_pb2.WriteResponse.FromString,
        )
