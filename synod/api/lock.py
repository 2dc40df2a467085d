"""etcd's v3lock and v3election services, built on the KV handlers exactly as etcd builds
them on its client's concurrency package: keys under a prefix, one per lease, ordered by
create revision.

- A contender's key is `NAME/<lease id in hex>`, created (if absent) with its lease in one
  txn that also reads the prefix's oldest key. The owner (lock holder, election leader) is
  the key with the lowest create revision; a contender waits until every older key is
  deleted (released, or its lease expired), watching only the newest older key each time.
  The owner key's create revision is the fencing token.
- While a Lock or Campaign call waits, the server keeps the caller's lease alive (etcd's
  server opens a session on the lease for the call); a call that fails or is cancelled
  deletes the contender's key again.
- Proclaim and Resign act only if the leader key still has the create revision the caller
  won with; a stale Proclaim fails with "election: not leader", a stale Resign does nothing.
- As in etcd, whose services run through its own client, every error reaches the caller as
  an Unknown status carrying the original message.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from synod.api.errors import EtcdError, StatusCode
from synod.api.handlers import Handlers
from synod.api.proto.etcdserverpb import rpc_pb2
from synod.api.proto.mvccpb import kv_pb2
from synod.api.proto.v3electionpb import v3election_pb2
from synod.api.proto.v3lockpb import v3lock_pb2

ELECTION_NOT_LEADER = "election: not leader"
ELECTION_NO_LEADER = "election: no leader"
SESSION_EXPIRED = "concurrency: session expired"
LEADER_FIELD_MISSING = '"leader" field must be provided'
KEEP_ALIVE_FRACTION = 3  # keep a waiting caller's lease alive every TTL/3

T = TypeVar("T")


async def _as_client(call: Awaitable[T]) -> T:
    """etcd runs these services through its own client, so every error reaches the caller
    as an Unknown status with the original message; so do ours."""
    try:
        return await call
    except EtcdError as error:
        if error.code is StatusCode.UNKNOWN:
            raise
        raise EtcdError(StatusCode.UNKNOWN, error.message) from error


def _need_leader(present: bool) -> None:
    if not present:
        raise EtcdError(StatusCode.UNKNOWN, LEADER_FIELD_MISSING)


def _prefix_end(prefix: bytes) -> bytes:
    """The range end covering every key that starts with `prefix` (etcd's GetPrefixRangeEnd)."""
    end = bytearray(prefix)
    for index in range(len(end) - 1, -1, -1):
        if end[index] < 0xFF:
            end[index] += 1
            return bytes(end[: index + 1])
    return b"\0"


class _Contender:
    """Shared mechanics: create the key, find the owner, wait for older keys to go."""

    def __init__(self, handlers: Handlers) -> None:
        self.h = handlers

    def _oldest(self, prefix: bytes, max_create: int = 0) -> rpc_pb2.RangeRequest:
        return rpc_pb2.RangeRequest(
            key=prefix,
            range_end=_prefix_end(prefix),
            sort_order=rpc_pb2.RangeRequest.DESCEND if max_create else rpc_pb2.RangeRequest.ASCEND,
            sort_target=rpc_pb2.RangeRequest.CREATE,
            limit=1,
            max_create_revision=max_create,
        )

    async def create(
        self, prefix: bytes, lease: int, value: bytes
    ) -> tuple[bytes, int, rpc_pb2.TxnResponse]:
        """Create this lease's key under `prefix` if absent; (key, create revision, txn)."""
        key = prefix + f"{lease:x}".encode()
        absent = rpc_pb2.Compare(
            key=key, target=rpc_pb2.Compare.CREATE, result=rpc_pb2.Compare.EQUAL
        )
        absent.create_revision = 0
        put = rpc_pb2.PutRequest(key=key, value=value, lease=lease)
        txn = await self.h.txn(
            rpc_pb2.TxnRequest(
                compare=[absent],
                success=[rpc_pb2.RequestOp(request_put=put)],
                failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=key))],
            )
        )
        if txn.succeeded:
            return key, txn.header.revision, txn
        return key, txn.responses[0].response_range.kvs[0].create_revision, txn

    async def wait_older_gone(self, prefix: bytes, revision: int) -> None:
        """Return once no key under `prefix` has a create revision below `revision`."""
        while True:
            older = await self.h.range(self._oldest(prefix, max_create=revision - 1))
            if not older.kvs:
                return
            await self.wait_delete(older.kvs[0].key, older.header.revision)

    async def wait_delete(self, key: bytes, revision: int) -> None:
        session = self.h.open_watch()
        try:
            create = rpc_pb2.WatchCreateRequest(key=key, start_revision=revision)
            await session.handle(rpc_pb2.WatchRequest(create_request=create))
            async for response in session.responses():
                if response.canceled:
                    return  # compacted or refused: the caller reads the prefix again
                if any(event.type == kv_pb2.Event.DELETE for event in response.events):
                    return
        finally:
            session.close()

    async def keep_alive(self, lease: int) -> None:
        """Keep `lease` alive while a call waits (etcd's server-side session)."""
        ttl = await self.h.lease_time_to_live(rpc_pb2.LeaseTimeToLiveRequest(ID=lease))
        interval_s = max(0.5, ttl.grantedTTL / KEEP_ALIVE_FRACTION)
        while True:
            await asyncio.sleep(interval_s)
            with contextlib.suppress(EtcdError):
                await self.h.lease_keep_alive(rpc_pb2.LeaseKeepAliveRequest(ID=lease))

    async def contend(self, prefix: bytes, lease: int, value: bytes) -> tuple[bytes, int]:
        """Become the owner of `prefix`: (own key, its create revision)."""
        key, revision, txn = await self.create(prefix, lease, value)
        keeper = asyncio.create_task(self.keep_alive(lease))
        try:
            if not txn.succeeded and txn.responses[0].response_range.kvs[0].value != value:
                await self.h.put(rpc_pb2.PutRequest(key=key, value=value, ignore_lease=True))
            await self.wait_older_gone(prefix, revision)
            mine = await self.h.range(rpc_pb2.RangeRequest(key=key))
            if not mine.kvs or mine.kvs[0].create_revision != revision:
                raise EtcdError(StatusCode.UNKNOWN, SESSION_EXPIRED)
            return key, revision
        except BaseException:
            cleanup = asyncio.ensure_future(
                self.h.delete_range(rpc_pb2.DeleteRangeRequest(key=key))
            )
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.shield(cleanup)
            raise
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await keeper


class LockService(_Contender):
    async def lock(self, request: v3lock_pb2.LockRequest) -> v3lock_pb2.LockResponse:
        key, _ = await _as_client(self.contend(request.name + b"/", request.lease, b""))
        return v3lock_pb2.LockResponse(header=self.h.header(), key=key)

    async def unlock(self, request: v3lock_pb2.UnlockRequest) -> v3lock_pb2.UnlockResponse:
        delete = rpc_pb2.DeleteRangeRequest(key=request.key)
        deleted = await _as_client(self.h.delete_range(delete))
        return v3lock_pb2.UnlockResponse(header=deleted.header)


class ElectionService(_Contender):
    async def campaign(
        self, request: v3election_pb2.CampaignRequest
    ) -> v3election_pb2.CampaignResponse:
        contend = self.contend(request.name + b"/", request.lease, request.value)
        key, revision = await _as_client(contend)
        leader = v3election_pb2.LeaderKey(
            name=request.name, key=key, rev=revision, lease=request.lease
        )
        return v3election_pb2.CampaignResponse(header=self.h.header(), leader=leader)

    def _still_leader(self, leader: v3election_pb2.LeaderKey) -> rpc_pb2.Compare:
        compare = rpc_pb2.Compare(
            key=leader.key, target=rpc_pb2.Compare.CREATE, result=rpc_pb2.Compare.EQUAL
        )
        compare.create_revision = leader.rev
        return compare

    async def proclaim(
        self, request: v3election_pb2.ProclaimRequest
    ) -> v3election_pb2.ProclaimResponse:
        _need_leader(request.HasField("leader"))
        put = rpc_pb2.PutRequest(key=request.leader.key, value=request.value, ignore_lease=True)
        txn = await _as_client(
            self.h.txn(
                rpc_pb2.TxnRequest(
                    compare=[self._still_leader(request.leader)],
                    success=[rpc_pb2.RequestOp(request_put=put)],
                )
            )
        )
        if not txn.succeeded:
            raise EtcdError(StatusCode.UNKNOWN, ELECTION_NOT_LEADER)
        return v3election_pb2.ProclaimResponse(header=txn.header)

    async def leader(self, request: v3election_pb2.LeaderRequest) -> v3election_pb2.LeaderResponse:
        oldest = await _as_client(self.h.range(self._oldest(request.name + b"/")))
        if not oldest.kvs:
            raise EtcdError(StatusCode.UNKNOWN, ELECTION_NO_LEADER)
        return v3election_pb2.LeaderResponse(header=oldest.header, kv=oldest.kvs[0])

    async def observe(
        self, request: v3election_pb2.LeaderRequest
    ) -> AsyncIterator[v3election_pb2.LeaderResponse]:
        """Every leader in turn, and each value a leader proclaims, until cancelled."""
        prefix = request.name + b"/"
        while True:
            oldest = await self.h.range(self._oldest(prefix))
            if not oldest.kvs:
                await self._wait_put(prefix, oldest.header.revision + 1)
                continue
            leader = oldest.kvs[0]
            yield v3election_pb2.LeaderResponse(header=oldest.header, kv=leader)
            async for changed in self._follow(leader.key, oldest.header.revision + 1):
                yield v3election_pb2.LeaderResponse(header=self.h.header(), kv=changed)

    async def _wait_put(self, prefix: bytes, revision: int) -> None:
        session = self.h.open_watch()
        try:
            create = rpc_pb2.WatchCreateRequest(
                key=prefix, range_end=_prefix_end(prefix), start_revision=revision
            )
            await session.handle(rpc_pb2.WatchRequest(create_request=create))
            async for response in session.responses():
                if response.canceled or response.events:
                    return
        finally:
            session.close()

    async def _follow(self, key: bytes, revision: int) -> AsyncIterator[kv_pb2.KeyValue]:
        """The leader key's new values until it is deleted."""
        session = self.h.open_watch()
        try:
            create = rpc_pb2.WatchCreateRequest(key=key, start_revision=revision)
            await session.handle(rpc_pb2.WatchRequest(create_request=create))
            async for response in session.responses():
                if response.canceled:
                    return
                for event in response.events:
                    if event.type == kv_pb2.Event.DELETE:
                        return
                    yield event.kv
        finally:
            session.close()

    async def resign(self, request: v3election_pb2.ResignRequest) -> v3election_pb2.ResignResponse:
        _need_leader(request.HasField("leader"))
        delete = rpc_pb2.DeleteRangeRequest(key=request.leader.key)
        txn = await _as_client(
            self.h.txn(
                rpc_pb2.TxnRequest(
                    compare=[self._still_leader(request.leader)],
                    success=[rpc_pb2.RequestOp(request_delete_range=delete)],
                )
            )
        )
        return v3election_pb2.ResignResponse(header=txn.header)
