"""The etcd gRPC door: grpc.aio servicers for KV, Watch, Lease, Cluster, Maintenance and
Lock/Election over the transport-independent `Handlers`.

Each servicer method only moves messages: it awaits the handler and, on an `EtcdError`,
aborts the call with its status code and etcd's message (what etcd clients match on). The
streams (Watch, LeaseKeepAlive) read the client's requests in a task of their own so that
responses flow while requests arrive; when the client closes the stream (or the call is
cancelled) the session closes.

The server refuses messages above etcd's request limit plus gRPC overhead (as etcd does),
so a slightly too large request reaches the handler and gets etcd's message, and it never
shares its port (`so_reuseport` off): a busy port is an error, not a silent second server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc
from grpc import aio

from synod.api.errors import NO_LEADER, EtcdError, StatusCode
from synod.api.handlers import REQUEST_BYTES_MAX, Handlers
from synod.api.lock import ElectionService, LockService
from synod.api.proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from synod.api.proto.v3electionpb import v3election_pb2, v3election_pb2_grpc
from synod.api.proto.v3lockpb import v3lock_pb2, v3lock_pb2_grpc

log = logging.getLogger(__name__)

GRPC_OVERHEAD_BYTES = 512 * 1024  # etcd's grpcOverheadBytes
REQUIRE_LEADER_KEY = "hasleader"  # etcd's rpctypes.MetadataRequireLeaderKey
NO_LEADER_CHECKS_MAX = 3  # etcd's maxNoLeaderCnt
SEND_BYTES_MAX = 2**31 - 1
STATUS_OF_CODE = {int(code.value[0]): code for code in grpc.StatusCode}

Req = TypeVar("Req")
Resp = TypeVar("Resp")


class BindError(OSError):
    """The client address cannot be listened on (busy port, bad host)."""


async def _abort(context: aio.ServicerContext, error: EtcdError) -> NoReturn:
    await context.abort(STATUS_OF_CODE[int(error.code)], error.message)
    raise AssertionError("abort returns only by raising")


def requires_leader(context: aio.ServicerContext) -> bool:
    """etcd clients mark calls that must fail without a leader (clientv3 WithRequireLeader)."""
    metadata = context.invocation_metadata() or ()
    return any(key == REQUIRE_LEADER_KEY and value == "true" for key, value in metadata)


async def _unary(
    call: Callable[[Req], Awaitable[Resp]], request: Req, context: aio.ServicerContext
) -> Resp:
    try:
        return await call(request)
    except EtcdError as error:
        await _abort(context, error)


async def _end_when_leaderless(handlers: Handlers, end: Callable[[EtcdError], None]) -> None:
    """etcd's monitorLeader: a stream that requires a leader ends with "no leader" after
    NO_LEADER_CHECKS_MAX election timeouts in a row without one, so the client moves to
    another member instead of waiting on a cut-off one."""
    leaderless = 0
    while leaderless < NO_LEADER_CHECKS_MAX:
        await asyncio.sleep(handlers.election_timeout_s)
        leaderless = 0 if handlers.has_leader() else leaderless + 1
    end(EtcdError(StatusCode.UNAVAILABLE, NO_LEADER))


class KVServicer(rpc_pb2_grpc.KVServicer):
    def __init__(self, handlers: Handlers) -> None:
        self.h = handlers

    async def Range(self, request: rpc_pb2.RangeRequest, context: Any) -> rpc_pb2.RangeResponse:
        return await _unary(self.h.range, request, context)

    async def Put(self, request: rpc_pb2.PutRequest, context: Any) -> rpc_pb2.PutResponse:
        try:  # `_unary` inline: one coroutine less on the most frequent call
            return await self.h.put(request)
        except EtcdError as error:
            await _abort(context, error)

    async def DeleteRange(
        self, request: rpc_pb2.DeleteRangeRequest, context: Any
    ) -> rpc_pb2.DeleteRangeResponse:
        return await _unary(self.h.delete_range, request, context)

    async def Txn(self, request: rpc_pb2.TxnRequest, context: Any) -> rpc_pb2.TxnResponse:
        return await _unary(self.h.txn, request, context)

    async def Compact(
        self, request: rpc_pb2.CompactionRequest, context: Any
    ) -> rpc_pb2.CompactionResponse:
        return await _unary(self.h.compact, request, context)


class WatchServicer(rpc_pb2_grpc.WatchServicer):
    def __init__(self, handlers: Handlers) -> None:
        self.h = handlers

    async def Watch(
        self, request_iterator: Any, context: Any
    ) -> AsyncIterator[rpc_pb2.WatchResponse]:
        session = self.h.open_watch()
        monitor: asyncio.Task[None] | None = None
        if requires_leader(context):
            if not self.h.has_leader():
                session.close()
                await _abort(context, EtcdError(StatusCode.UNAVAILABLE, NO_LEADER))
            monitor = asyncio.create_task(_end_when_leaderless(self.h, session.close))

        async def pump() -> None:
            # A client that half-closes still gets its events (as from etcd); the stream
            # ends when the client cancels it, or here when its requests fail.
            try:
                async for request in request_iterator:
                    await session.handle(request)
            except Exception:
                session.close()
                raise

        reader = asyncio.create_task(pump())
        try:
            async for response in session.responses():
                yield response
        except EtcdError as error:
            await _abort(context, error)
        finally:
            session.close()
            for task in (reader, monitor):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task


class LeaseServicer(rpc_pb2_grpc.LeaseServicer):
    def __init__(self, handlers: Handlers) -> None:
        self.h = handlers

    async def LeaseGrant(
        self, request: rpc_pb2.LeaseGrantRequest, context: Any
    ) -> rpc_pb2.LeaseGrantResponse:
        return await _unary(self.h.lease_grant, request, context)

    async def LeaseRevoke(
        self, request: rpc_pb2.LeaseRevokeRequest, context: Any
    ) -> rpc_pb2.LeaseRevokeResponse:
        return await _unary(self.h.lease_revoke, request, context)

    async def LeaseKeepAlive(
        self, request_iterator: Any, context: Any
    ) -> AsyncIterator[rpc_pb2.LeaseKeepAliveResponse]:
        try:
            async for request in request_iterator:
                yield await self.h.lease_keep_alive(request)
        except EtcdError as error:
            await _abort(context, error)

    async def LeaseTimeToLive(
        self, request: rpc_pb2.LeaseTimeToLiveRequest, context: Any
    ) -> rpc_pb2.LeaseTimeToLiveResponse:
        return await _unary(self.h.lease_time_to_live, request, context)

    async def LeaseLeases(
        self, request: rpc_pb2.LeaseLeasesRequest, context: Any
    ) -> rpc_pb2.LeaseLeasesResponse:
        return await _unary(self.h.lease_leases, request, context)


class ClusterServicer(rpc_pb2_grpc.ClusterServicer):
    def __init__(self, handlers: Handlers) -> None:
        self.h = handlers

    async def MemberAdd(
        self, request: rpc_pb2.MemberAddRequest, context: Any
    ) -> rpc_pb2.MemberAddResponse:
        return await _unary(self.h.member_add, request, context)

    async def MemberRemove(
        self, request: rpc_pb2.MemberRemoveRequest, context: Any
    ) -> rpc_pb2.MemberRemoveResponse:
        return await _unary(self.h.member_remove, request, context)

    async def MemberUpdate(
        self, request: rpc_pb2.MemberUpdateRequest, context: Any
    ) -> rpc_pb2.MemberUpdateResponse:
        return await _unary(self.h.member_update, request, context)

    async def MemberList(
        self, request: rpc_pb2.MemberListRequest, context: Any
    ) -> rpc_pb2.MemberListResponse:
        return await _unary(self.h.member_list, request, context)

    async def MemberPromote(
        self, request: rpc_pb2.MemberPromoteRequest, context: Any
    ) -> rpc_pb2.MemberPromoteResponse:
        return await _unary(self.h.member_promote, request, context)


class MaintenanceServicer(rpc_pb2_grpc.MaintenanceServicer):
    def __init__(self, handlers: Handlers) -> None:
        self.h = handlers

    async def Alarm(self, request: rpc_pb2.AlarmRequest, context: Any) -> rpc_pb2.AlarmResponse:
        return await _unary(self.h.alarm, request, context)

    async def Status(self, request: rpc_pb2.StatusRequest, context: Any) -> rpc_pb2.StatusResponse:
        return await _unary(self.h.status, request, context)

    async def Defragment(
        self, request: rpc_pb2.DefragmentRequest, context: Any
    ) -> rpc_pb2.DefragmentResponse:
        return await _unary(self.h.defragment, request, context)

    async def Hash(self, request: rpc_pb2.HashRequest, context: Any) -> rpc_pb2.HashResponse:
        return await _unary(self.h.hash, request, context)

    async def HashKV(self, request: rpc_pb2.HashKVRequest, context: Any) -> rpc_pb2.HashKVResponse:
        return await _unary(self.h.hash_kv, request, context)

    async def Snapshot(
        self, request: rpc_pb2.SnapshotRequest, context: Any
    ) -> AsyncIterator[rpc_pb2.SnapshotResponse]:
        try:
            async for chunk in self.h.snapshot(request):
                yield chunk
        except EtcdError as error:
            await _abort(context, error)

    async def MoveLeader(
        self, request: rpc_pb2.MoveLeaderRequest, context: Any
    ) -> rpc_pb2.MoveLeaderResponse:
        return await _unary(self.h.move_leader, request, context)


class LockServicer(v3lock_pb2_grpc.LockServicer):
    def __init__(self, service: LockService) -> None:
        self.s = service

    async def Lock(self, request: v3lock_pb2.LockRequest, context: Any) -> v3lock_pb2.LockResponse:
        return await _unary(self.s.lock, request, context)

    async def Unlock(
        self, request: v3lock_pb2.UnlockRequest, context: Any
    ) -> v3lock_pb2.UnlockResponse:
        return await _unary(self.s.unlock, request, context)


class ElectionServicer(v3election_pb2_grpc.ElectionServicer):
    def __init__(self, service: ElectionService) -> None:
        self.s = service

    async def Campaign(
        self, request: v3election_pb2.CampaignRequest, context: Any
    ) -> v3election_pb2.CampaignResponse:
        return await _unary(self.s.campaign, request, context)

    async def Proclaim(
        self, request: v3election_pb2.ProclaimRequest, context: Any
    ) -> v3election_pb2.ProclaimResponse:
        return await _unary(self.s.proclaim, request, context)

    async def Leader(
        self, request: v3election_pb2.LeaderRequest, context: Any
    ) -> v3election_pb2.LeaderResponse:
        return await _unary(self.s.leader, request, context)

    async def Observe(
        self, request: v3election_pb2.LeaderRequest, context: Any
    ) -> AsyncIterator[v3election_pb2.LeaderResponse]:
        try:
            async for response in self.s.observe(request):
                yield response
        except EtcdError as error:
            await _abort(context, error)

    async def Resign(
        self, request: v3election_pb2.ResignRequest, context: Any
    ) -> v3election_pb2.ResignResponse:
        return await _unary(self.s.resign, request, context)


def build_server() -> aio.Server:
    return aio.server(
        options=[
            ("grpc.max_receive_message_length", REQUEST_BYTES_MAX + GRPC_OVERHEAD_BYTES),
            ("grpc.max_send_message_length", SEND_BYTES_MAX),
            ("grpc.so_reuseport", 0),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 5000),
        ]
    )


def add_servicers(server: aio.Server, handlers: Handlers) -> None:
    rpc_pb2_grpc.add_KVServicer_to_server(KVServicer(handlers), server)
    rpc_pb2_grpc.add_WatchServicer_to_server(WatchServicer(handlers), server)
    rpc_pb2_grpc.add_LeaseServicer_to_server(LeaseServicer(handlers), server)
    rpc_pb2_grpc.add_ClusterServicer_to_server(ClusterServicer(handlers), server)
    rpc_pb2_grpc.add_MaintenanceServicer_to_server(MaintenanceServicer(handlers), server)
    v3lock_pb2_grpc.add_LockServicer_to_server(LockServicer(LockService(handlers)), server)
    v3election_pb2_grpc.add_ElectionServicer_to_server(
        ElectionServicer(ElectionService(handlers)), server
    )


async def start_grpc(handlers: Handlers, address: str) -> aio.Server:
    """Serve the etcd gRPC API on `address` ("host:port"); raise BindError if it cannot."""
    server = build_server()
    add_servicers(server, handlers)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as error:
        raise BindError(f"{error} (is the port in use?)") from error
    if port == 0:
        raise BindError(f"cannot bind {address} (is the port in use?)")
    await server.start()
    log.info("etcd gRPC API on %s", address)
    return server
