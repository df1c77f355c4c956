"""One leader among the controllers that share an etcd store: the leader holds the key
`<prefix>/leader`, put on a lease of `lease_seconds` that it keeps alive. The key is
created only where none exists (a Txn comparing its create revision with 0), so one
controller holds it at a time; etcd deletes it when the lease runs out (the leader died, or
was cut off from quorum), and the followers, which look for it every quarter second, race
to take it.

A leader that cannot renew its lease steps down by itself before etcd can have let the lease
go (its own clock, from the moment it sent the last renewal that was answered), so two
controllers never both believe they lead for longer than a paused process takes to look at
its clock. Even then the agents refuse the older one: each new leader takes an election id
above every earlier one (EtcdStore.next_election_id), and an agent obeys only the highest.

The lease is renewed from a thread of its own, on blocking channels of its own, and not on
the event loop: a loop busy for seconds with a large batch (or a machine short of CPU) must
not cost the lead while etcd and the network are fine. A process that is paused or killed
stops renewing all the same, and every write stays fenced on the leader key.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from dataclasses import dataclass

import grpc
from aetcd import rpc

from corridor.controller.domain import StoreUnavailable
from corridor.controller.etcd_store import EtcdStore, compare_created, get, put

log = logging.getLogger("corridor.controller.election")

RENEW_SECONDS = 1.0  # a renewal not answered in this long is tried on the next member
LOOK_SECONDS = 0.25  # how often a follower looks for the leader key
MARGIN_SECONDS = 0.5  # a leader steps down this long before its lease could have run out


@dataclass(frozen=True)
class LeaderInfo:
    name: str  # the leader's advertised address
    since: float  # when it took the lead (its clock, seconds since the epoch)
    created: int  # the leader key's create revision


class Election:
    def __init__(self, store: EtcdStore, name: str) -> None:
        self.store = store
        self.client = store.client
        self.name = name
        self.ttl = store.config.lease_seconds
        self.leader: LeaderInfo | None = None  # as last seen
        self.lease = 0
        self.deadline = 0.0  # monotonic: when this leader must have stepped down
        self._keeper: _Keeper | None = None  # renews the lease from the moment it is won

    async def look(self) -> LeaderInfo | None:
        reply = await self.client.call("KV", "Range", rpc.RangeRequest(key=self.store.key_leader))
        if not reply.kvs:
            self.leader = None
        else:
            kv = reply.kvs[0]
            try:
                value = json.loads(kv.value)
                self.leader = LeaderInfo(
                    str(value["name"]), float(value["since"]), kv.create_revision
                )
            except (ValueError, KeyError, TypeError):
                self.leader = LeaderInfo(kv.value.decode(errors="replace"), 0.0, kv.create_revision)
        return self.leader

    async def campaign(self) -> LeaderInfo:
        """Returns once this controller leads (store.fence is then the key's revision)."""
        while True:
            try:
                current = await self.look()
                if current is None:
                    won = await self._try()
                    if won is not None:
                        return won
            except (StoreUnavailable, grpc.aio.AioRpcError) as e:
                # etcd cannot say who leads: nobody does as far as this controller knows (a
                # leader cut off from quorum steps down within its lease).
                self.leader = None
                log.debug("campaign: %s", _short(e))
            await asyncio.sleep(LOOK_SECONDS)

    async def _try(self) -> LeaderInfo | None:
        sent = time.monotonic()
        grant = await self.client.call("Lease", "LeaseGrant", rpc.LeaseGrantRequest(TTL=self.ttl))
        since = time.time()
        value = json.dumps({"name": self.name, "since": since}).encode()
        key = self.store.key_leader
        reply = await self.client.call(
            "KV",
            "Txn",
            rpc.TxnRequest(
                compare=[compare_created(key, 0)],
                success=[put(key, value, grant.ID)],
                failure=[get(key)],
            ),
        )
        if not reply.succeeded:
            await self._revoke(grant.ID)
            return None
        self.lease = grant.ID
        self.deadline = sent + grant.TTL - MARGIN_SECONDS
        self.store.fence = reply.header.revision
        self.leader = LeaderInfo(self.name, since, reply.header.revision)
        self._keeper = _Keeper(self)  # from now: taking the lead may keep the loop busy
        self._keeper.start()
        return self.leader

    async def keep(self) -> str:
        """Keeps the lease alive while this controller leads; returns why the lead was lost
        (the lease could not be renewed in time, or etcd let it go)."""
        keeper = self._keeper
        assert keeper is not None, "keep() without the lead"
        while True:
            if keeper.expired:
                return "etcd let the lease go (it expired)"
            left = keeper.deadline - time.monotonic()
            if left <= 0:
                return f"the lease could not be renewed within {self.ttl} s"
            await asyncio.sleep(min(0.1, left))

    async def resign(self) -> None:
        """Lets the lead go at once (a clean stop), so a follower takes it without waiting
        out the lease."""
        lease, self.lease = self.lease, 0
        self.store.fence = 0
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.stop()
        if lease:
            await self._revoke(lease)

    async def _revoke(self, lease: int) -> None:
        try:
            await self.client.call(
                "Lease", "LeaseRevoke", rpc.LeaseRevokeRequest(ID=lease), budget=1.0
            )
        except (StoreUnavailable, grpc.aio.AioRpcError) as e:
            log.debug("lease revoke: %s", e)


class _Keeper:
    """Renews the lease every quarter of its time to live, on a thread and blocking channels
    of its own (one member at a time, briefly: one that lost its own leader holds a renewal
    until it has a new one, and another member may answer at once). `deadline` (monotonic)
    is when the leader must have stepped down; `expired` says etcd let the lease go."""

    def __init__(self, election: Election) -> None:
        self.lease = election.lease
        self.ttl = election.ttl
        self.client = election.client
        self.deadline = election.deadline
        self.expired = False
        self._stopped = threading.Event()
        self._channels: dict[int, grpc.Channel] = {}
        self._thread = threading.Thread(target=self._run, name="corridor-lease", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stops renewing; returns at once (the thread ends within one renewal's timeout)."""
        self._stopped.set()

    def _run(self) -> None:
        try:
            while not self._stopped.is_set():
                left = self.deadline - time.monotonic()
                if left <= 0:
                    return
                sent = time.monotonic()
                try:
                    ttl = self._renew(min(RENEW_SECONDS, left))
                except (grpc.RpcError, StoreUnavailable) as e:
                    log.warning(
                        "leader lease not renewed through %s: %s", self.client.endpoint, _short(e)
                    )
                    self.client.rotate()
                    self._stopped.wait(min(0.1, max(0.0, self.deadline - time.monotonic())))
                    continue
                if ttl <= 0:
                    self.expired = True
                    return
                self.deadline = sent + ttl - MARGIN_SECONDS
                self._stopped.wait(self.ttl / 4)
        finally:
            for channel in self._channels.values():
                channel.close()

    def _renew(self, timeout: float) -> int:
        i = self.client.current
        channel = self._channels.get(i)
        if channel is None:
            channel = self._channels[i] = self.client.blocking_channel(i)
        replies = rpc.LeaseStub(channel).LeaseKeepAlive(
            iter([rpc.LeaseKeepAliveRequest(ID=self.lease)]),
            timeout=timeout,
            metadata=(("hasleader", "true"),),
        )
        try:
            for reply in replies:
                return int(reply.TTL)
            raise StoreUnavailable("etcd closed the lease stream", full=False)
        finally:
            replies.cancel()


def _short(e: BaseException) -> str:
    if isinstance(e, grpc.aio.AioRpcError | grpc.Call):
        return f"{e.code().name}: {e.details()}"
    return str(e) or type(e).__name__
