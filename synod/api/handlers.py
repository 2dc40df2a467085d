"""Transport-independent etcd v3 handlers: one async method per RPC, pb message in, pb
message out, `EtcdError` for every refusal.

Every door (the gRPC servicers, the JSON gateway) calls these methods and only translates
the wire. What they keep:

- Writes (put, delete, txn with a write, compact, lease grant/revoke/keep-alive) are
  replicated: `member.write(encode_command(...))`, answered once applied on this member.
  Requests are checked (size, etcd's static txn rules) before they reach the log, so a
  refused request costs no slot; the store checks again when it applies.
- Reads are linearizable unless the request says `serializable`: a read-index barrier
  (`member.read_barrier()`), then the local store. A txn whose every branch only reads is
  a read.
- Every top-level response header carries the cluster id, this member's id, the store's
  revision and as `raft_term` the member's highest promised ballot round, which never
  decreases on a member and, across members, only lags while a member is cut off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any, Generic, TypeVar, cast

from synod.api import convert
from synod.api import errors as api_errors
from synod.api.errors import EtcdError, StatusCode
from synod.api.proto.etcdserverpb import rpc_pb2
from synod.kv import fast
from synod.kv import messages as kv
from synod.kv.codec import encode_command
from synod.kv.errors import KVError
from synod.kv.store import SnapshotCancelled
from synod.kv.txn import check_delete, check_put, check_txn
from synod.paxos.errors import NotLeader, ProposalDropped
from synod.paxos.node import TransferRefused
from synod.paxos.types import NodeId, SnapshotMeta
from synod.server import snapshot_file
from synod.server.config import ServerConfig
from synod.server.errors import NoLeader, Overloaded, RequestTimeout
from synod.server.kv_service import LEASE_RENEW, LEASE_TIME_TO_LIVE, KvService
from synod.server.member import Member
from synod.server.members import MemberChangeError, MemberInfo, MemberTable
from synod.server.reconfig import ChangeResult, MemberOp

log = logging.getLogger(__name__)

ETCD_VERSION = "3.4.23"  # the etcd release whose API and behaviour Synod follows
ETCD_CLUSTER_VERSION = "3.4.0"
REQUEST_BYTES_MAX = 1536 * 1024  # etcd's --max-request-bytes default
SNAPSHOT_CHUNK_BYTES = 32 * 1024
SNAPSHOT_STEP_S_MAX = 0.002  # one turn of building a backup on the event loop
SNAPSHOT_ATTEMPTS_MAX = 3
WATCH_QUEUE_MAX = 100_000  # responses buffered for one slow watch stream
TRANSFER_POLL_S = 0.02
DB_SIZE_REFRESH_S = 10.0
# Test-only, never in production: serve linearizable reads from local state without the
# read-index round (stale reads), so the chaos harness can prove it catches the bug.
UNSAFE_LOCAL_READS_ENV = "SYNOD_UNSAFE_LOCAL_READS"

T = TypeVar("T")


def _now_ms() -> int:
    return int(time.time() * 1000)


def _runtime_error(error: Exception) -> EtcdError:
    """The member's runtime errors as etcd reports them."""
    if isinstance(error, EtcdError):
        return error
    if isinstance(error, KVError):
        return api_errors.from_kv_error(error)
    if isinstance(error, RequestTimeout | TimeoutError):  # a member future's deadline
        return api_errors.request_timed_out()
    if isinstance(error, Overloaded):
        return api_errors.too_many_requests()
    if isinstance(error, NoLeader | NotLeader):
        text = str(error)
        message = text if text.startswith("etcdserver: ") else api_errors.NO_LEADER
        return EtcdError(StatusCode.UNAVAILABLE, message)
    if isinstance(error, ProposalDropped):
        if "transfer" in str(error):
            return EtcdError(StatusCode.UNAVAILABLE, api_errors.LEADER_CHANGED)
        return api_errors.too_many_requests()
    log.error("unexpected error from the member: %r", error)
    return EtcdError(StatusCode.INTERNAL, f"synod: internal error: {error}")


async def _pull_pieces(pieces: Iterator[bytes]) -> bytes:
    """Every piece, pulled for at most SNAPSHOT_STEP_S_MAX at a time with the event loop
    free in between; the pieces joined."""
    collected: list[bytes] = []
    while True:
        deadline = time.perf_counter() + SNAPSHOT_STEP_S_MAX
        while time.perf_counter() < deadline:
            piece = next(pieces, None)
            if piece is None:
                return b"".join(collected)
            collected.append(piece)
        await asyncio.sleep(0)


def _read_only(request: kv.TxnRequest) -> bool:
    for op in (*request.success, *request.failure):
        if isinstance(op, kv.TxnRequest):
            if not _read_only(op):
                return False
        elif not isinstance(op, kv.RangeRequest):
            return False
    return True


class Handlers:
    """The etcd v3 API of one member."""

    def __init__(self, member: Member, service: KvService, config: ServerConfig) -> None:
        self.member = member
        self.service = service
        self.config = config
        self._db_size_at: tuple[float, int] | None = None
        self._unsafe_local_reads = os.environ.get(UNSAFE_LOCAL_READS_ENV, "") == "1"
        if self._unsafe_local_reads:
            log.warning(
                "UNSAFE: %s=1: linearizable reads skip the read index and may be STALE; "
                "for fault-testing only, never in production",
                UNSAFE_LOCAL_READS_ENV,
            )

    # ------------------------------------------------------------------ plumbing

    def header_fields(self) -> tuple[int, int, int]:
        """(cluster_id, member_id, raft_term) for a response header."""
        return (self.member.cluster_id, self.member.member_id, self.member.node.ballot.round)

    def has_leader(self) -> bool:
        return self.member.leader_id is not None

    @property
    def election_timeout_s(self) -> float:
        return self.config.tick_ms * self.config.core.election_ticks / 1000

    def header(self) -> rpc_pb2.ResponseHeader:
        cluster_id, member_id, term = self.header_fields()
        return rpc_pb2.ResponseHeader(
            cluster_id=cluster_id,
            member_id=member_id,
            revision=self.service.store.revision,
            raft_term=term,
        )

    async def _guard(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except (EtcdError, asyncio.CancelledError):
            raise
        except Exception as error:
            raise _runtime_error(error) from error

    async def _write(self, request: kv.WriteRequest) -> object:
        """Replicate one command; the store's response, or raise its refusal."""
        payload = encode_command(kv.Command(request, _now_ms()))
        if len(payload) > REQUEST_BYTES_MAX:
            raise api_errors.request_too_large()
        result = await self._guard(self.member.write(payload))
        if isinstance(result, Exception):
            raise _runtime_error(result)
        return result

    async def _barrier(self, serializable: bool = False) -> None:
        if not serializable and not self._unsafe_local_reads:
            await self._guard(self.member.read_barrier())

    @staticmethod
    def _local(call: Callable[[], T]) -> T:
        """Run a store read or check on this member; its refusal as an EtcdError."""
        try:
            return call()
        except KVError as error:
            raise api_errors.from_kv_error(error) from error

    # ------------------------------------------------------------------ KV

    async def range(self, request: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        store_request = convert.to_request(request, kv.RangeRequest)
        await self._barrier(request.serializable)
        response = self._local(lambda: self.service.store.range(store_request))
        return convert.to_response(response, rpc_pb2.RangeResponse(), self.header_fields)

    async def put(self, request: rpc_pb2.PutRequest) -> rpc_pb2.PutResponse:
        outcome = self.put_begin(request)
        with contextlib.suppress(Exception):  # put_end reads the outcome, failure or not
            await outcome
        return self.put_end(outcome)

    def put_begin(self, request: rpc_pb2.PutRequest) -> asyncio.Future[object]:
        """The most frequent write, in two halves with no coroutine between them (the
        native door calls them directly): start it here; raise EtcdError to refuse it."""
        store_request = convert.put_request(request)
        try:
            check_put(store_request)
        except KVError as error:
            raise api_errors.from_kv_error(error) from error
        payload = encode_command(fast.command(store_request, _now_ms()))
        if len(payload) > REQUEST_BYTES_MAX:
            raise api_errors.request_too_large()
        try:
            return self.member.write_nowait(payload)
        except Exception as error:
            raise _runtime_error(error) from error

    def put_end(self, outcome: asyncio.Future[object]) -> rpc_pb2.PutResponse:
        """The answer to a put begun by `put_begin` once `outcome` is done (not cancelled)."""
        error = outcome.exception()
        if error is not None:
            raise _runtime_error(cast(Exception, error)) from error
        response = outcome.result()
        if type(response) is not kv.PutResponse:
            assert isinstance(response, Exception), response
            raise _runtime_error(response)
        return convert.put_response(response, self.header_fields)

    async def delete_range(
        self, request: rpc_pb2.DeleteRangeRequest
    ) -> rpc_pb2.DeleteRangeResponse:
        store_request = convert.to_request(request, kv.DeleteRangeRequest)
        self._local(lambda: check_delete(store_request))
        response = await self._write(store_request)
        assert isinstance(response, kv.DeleteRangeResponse)
        return convert.to_response(response, rpc_pb2.DeleteRangeResponse(), self.header_fields)

    async def txn(self, request: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        if request.ByteSize() > REQUEST_BYTES_MAX:
            raise api_errors.request_too_large()
        store_request = convert.to_request(request, kv.TxnRequest)
        self._local(lambda: check_txn(store_request))
        if _read_only(store_request):
            response = await self._read_txn(store_request)
        else:
            response = await self._write(store_request)
        assert isinstance(response, kv.TxnResponse)
        return convert.to_response(response, rpc_pb2.TxnResponse(), self.header_fields)

    async def _read_txn(self, request: kv.TxnRequest) -> object:
        """A txn that cannot write, served from the local store after a barrier. Applying it
        locally changes nothing: the store moves its revision only when a key changes."""
        # etcd's isTxnSerializable: every top-level op a serializable range.
        serializable = all(
            isinstance(op, kv.RangeRequest) and op.serializable
            for op in (*request.success, *request.failure)
        )
        await self._barrier(serializable)
        store = self.service.store
        revision = store.revision
        applied = self._local(lambda: store.apply(kv.Command(request, 0)))
        assert store.revision == revision, "a read-only txn changed the store"
        assert not applied.events
        return applied.response

    async def compact(self, request: rpc_pb2.CompactionRequest) -> rpc_pb2.CompactionResponse:
        store_request = convert.to_request(request, kv.CompactionRequest)
        response = await self._write(store_request)
        assert isinstance(response, kv.CompactionResponse)
        return convert.to_response(response, rpc_pb2.CompactionResponse(), self.header_fields)

    # ------------------------------------------------------------------ leases

    async def lease_grant(self, request: rpc_pb2.LeaseGrantRequest) -> rpc_pb2.LeaseGrantResponse:
        store_request = convert.to_request(request, kv.LeaseGrantRequest)
        response = await self._write(store_request)
        assert isinstance(response, kv.LeaseGrantResponse)
        return convert.to_response(response, rpc_pb2.LeaseGrantResponse(), self.header_fields)

    async def lease_revoke(
        self, request: rpc_pb2.LeaseRevokeRequest
    ) -> rpc_pb2.LeaseRevokeResponse:
        store_request = convert.to_request(request, kv.LeaseRevokeRequest)
        response = await self._write(store_request)
        assert isinstance(response, kv.LeaseRevokeResponse)
        return convert.to_response(response, rpc_pb2.LeaseRevokeResponse(), self.header_fields)

    async def lease_keep_alive(
        self, request: rpc_pb2.LeaseKeepAliveRequest
    ) -> rpc_pb2.LeaseKeepAliveResponse:
        """One keep-alive, one answer, from the leader's lease clock without a log entry
        (see KvService.leader_query). An unknown or expired lease is answered with TTL 0
        and no error, as etcd does on its keep-alive stream (clients test TTL <= 0)."""
        ttl_s = await self._guard(self.member.ask_leader(LEASE_RENEW, int(request.ID)))
        return rpc_pb2.LeaseKeepAliveResponse(header=self.header(), ID=request.ID, TTL=ttl_s)

    async def lease_time_to_live(
        self, request: rpc_pb2.LeaseTimeToLiveRequest
    ) -> rpc_pb2.LeaseTimeToLiveResponse:
        """Asked of the leader: its keep-alives leave no trace in the other members' state."""
        argument = [int(request.ID), bool(request.keys)]
        ttl_s, granted_s, keys = await self._guard(
            self.member.ask_leader(LEASE_TIME_TO_LIVE, argument)
        )
        return rpc_pb2.LeaseTimeToLiveResponse(
            header=self.header(), ID=request.ID, TTL=ttl_s, grantedTTL=granted_s, keys=keys
        )

    async def lease_leases(
        self, request: rpc_pb2.LeaseLeasesRequest
    ) -> rpc_pb2.LeaseLeasesResponse:
        await self._barrier()
        response = self.service.store.lease_leases()
        return convert.to_response(response, rpc_pb2.LeaseLeasesResponse(), self.header_fields)

    # ------------------------------------------------------------------ cluster

    @staticmethod
    def _member_pb(info: MemberInfo) -> rpc_pb2.Member:
        return rpc_pb2.Member(
            ID=info.member_id,
            name=info.name,
            peerURLs=list(info.peer_urls),
            clientURLs=list(info.client_urls),
            isLearner=info.is_learner,
        )

    def _members(self, table: MemberTable | None = None) -> list[rpc_pb2.Member]:
        """The member table (by default as applied here), as etcd lists it: an added
        member that has not started yet has no name and no client URLs."""
        table = self.member.table if table is None else table
        members = [self._member_pb(info) for info in table.members]
        for member in members:
            if self.member.member_id == member.ID and not member.clientURLs:
                # not published through the log yet (it is, moments after the start):
                # this member knows its own client URLs
                member.clientURLs.extend(str(u) for u in self.config.advertise_client_urls)
        return members

    def _cluster_header(self) -> rpc_pb2.ResponseHeader:
        header = self.header()
        header.revision = 0  # etcd's cluster RPCs carry no store revision
        return header

    async def _change(self, op: MemberOp) -> ChangeResult:
        try:
            return await self.member.reconfig.change(op)
        except MemberChangeError as error:
            raise api_errors.from_member_refusal(error.refusal) from error
        except (NoLeader, RequestTimeout) as error:
            raise _runtime_error(error) from error

    async def member_list(self, request: rpc_pb2.MemberListRequest) -> rpc_pb2.MemberListResponse:
        table = self.member.reconfig.pending_addition() or self.member.table
        return rpc_pb2.MemberListResponse(
            header=self._cluster_header(), members=self._members(table)
        )

    async def member_add(self, request: rpc_pb2.MemberAddRequest) -> rpc_pb2.MemberAddResponse:
        op = MemberOp("add", peer_urls=tuple(request.peerURLs), is_learner=request.isLearner)
        result = await self._change(op)
        added = result.table.get(result.member_id)
        assert added is not None, "an applied add names its member"
        member = rpc_pb2.Member(
            ID=added.member_id, peerURLs=list(added.peer_urls), isLearner=added.is_learner
        )
        return rpc_pb2.MemberAddResponse(
            header=self._cluster_header(), member=member, members=self._members(result.table)
        )

    async def member_remove(
        self, request: rpc_pb2.MemberRemoveRequest
    ) -> rpc_pb2.MemberRemoveResponse:
        result = await self._change(MemberOp("remove", request.ID))
        return rpc_pb2.MemberRemoveResponse(
            header=self._cluster_header(), members=self._members(result.table)
        )

    async def member_update(
        self, request: rpc_pb2.MemberUpdateRequest
    ) -> rpc_pb2.MemberUpdateResponse:
        result = await self._change(MemberOp("update", request.ID, tuple(request.peerURLs)))
        return rpc_pb2.MemberUpdateResponse(
            header=self._cluster_header(), members=self._members(result.table)
        )

    async def member_promote(
        self, request: rpc_pb2.MemberPromoteRequest
    ) -> rpc_pb2.MemberPromoteResponse:
        result = await self._change(MemberOp("promote", request.ID))
        return rpc_pb2.MemberPromoteResponse(
            header=self._cluster_header(), members=self._members(result.table)
        )

    # ------------------------------------------------------------------ maintenance

    def _db_size(self) -> int:
        """The snapshot's size, recomputed at most every DB_SIZE_REFRESH_S: serializing a
        large store blocks the event loop, and Status may be polled by monitoring."""
        now = time.monotonic()
        if self._db_size_at is None or now - self._db_size_at[0] >= DB_SIZE_REFRESH_S:
            self._db_size_at = (now, len(self.service.store.snapshot()))
        return self._db_size_at[1]

    async def status(self, request: rpc_pb2.StatusRequest) -> rpc_pb2.StatusResponse:
        node = self.member.node
        db_size = self._db_size()
        return rpc_pb2.StatusResponse(
            header=self.header(),
            version=ETCD_VERSION,
            dbSize=db_size,
            dbSizeInUse=db_size,
            leader=node.leader or 0,
            raftIndex=node.commit_slot,
            raftTerm=node.ballot.round,
            raftAppliedIndex=self.member.machine.applied_slot,
            isLearner=self.member.member_id in node.membership.learners,
        )

    async def alarm(self, request: rpc_pb2.AlarmRequest) -> rpc_pb2.AlarmResponse:
        """Synod raises no alarms (no space quota, no corruption alarm yet): always none,
        and (as etcd 3.4 answers when there are none) without a header."""
        return rpc_pb2.AlarmResponse()

    async def defragment(self, request: rpc_pb2.DefragmentRequest) -> rpc_pb2.DefragmentResponse:
        """Nothing to defragment: the store lives in memory, snapshots are rewritten whole.
        etcd 3.4 answers without a header."""
        return rpc_pb2.DefragmentResponse()

    async def hash(self, request: rpc_pb2.HashRequest) -> rpc_pb2.HashResponse:
        """crc32 of the store's canonical snapshot (equal stores give equal hashes)."""
        digest = zlib.crc32(self.service.store.snapshot())
        return rpc_pb2.HashResponse(header=self.header(), hash=digest)

    async def hash_kv(self, request: rpc_pb2.HashKVRequest) -> rpc_pb2.HashKVResponse:
        response = self._local(lambda: self.service.store.hash_kv(request.revision))
        return convert.to_response(response, rpc_pb2.HashKVResponse(), self.header_fields)

    async def snapshot(
        self, request: rpc_pb2.SnapshotRequest
    ) -> AsyncIterator[rpc_pb2.SnapshotResponse]:
        """This member's state-machine snapshot as a backup file (synod.server.snapshot_file:
        whole 512-byte pages and a sha256 trailer, the framing etcdctl checks), in chunks.
        One consistent applied slot, serialized in short turns of the event loop (the member
        keeps serving meanwhile); framing and hashing run on a thread."""
        meta, machine = await self._machine_snapshot()
        backup = snapshot_file.SnapshotFile(
            self.member.cluster_id, self.member.member_id, meta, machine
        )
        data = await asyncio.to_thread(snapshot_file.encode, backup)
        header = self.header()
        for offset in range(0, len(data), SNAPSHOT_CHUNK_BYTES):
            blob = data[offset : offset + SNAPSHOT_CHUNK_BYTES]
            remaining = len(data) - offset - len(blob)
            yield rpc_pb2.SnapshotResponse(header=header, remaining_bytes=remaining, blob=blob)

    async def _machine_snapshot(self) -> tuple[SnapshotMeta, bytes]:
        """The state-machine snapshot as of now, pulled from its stream in turns of at most
        SNAPSHOT_STEP_S_MAX. A stream voided on the way (a compaction, or the member's own
        periodic snapshot opening another) starts again; after SNAPSHOT_ATTEMPTS_MAX the
        snapshot is taken in one go, which stalls the member for as long as it takes."""
        machine = self.member.machine
        for _ in range(SNAPSHOT_ATTEMPTS_MAX):
            meta, pieces = machine.snapshot_stream()
            try:
                return meta, await _pull_pieces(pieces)
            except SnapshotCancelled:
                log.info("backup snapshot at slot %d voided; starting again", meta.last_slot)
        return machine.snapshot()

    async def move_leader(self, request: rpc_pb2.MoveLeaderRequest) -> rpc_pb2.MoveLeaderResponse:
        """Hand leadership to `targetID` (sent to the leader, as etcd requires) and wait."""
        target = request.targetID
        if not self.member.is_leader:
            raise EtcdError(StatusCode.FAILED_PRECONDITION, api_errors.NOT_LEADER)
        if target not in self.member.node.membership.voters:
            raise EtcdError(StatusCode.FAILED_PRECONDITION, api_errors.BAD_LEADER_TRANSFEREE)
        try:
            self.member.node.transfer_leadership(NodeId(target))
        except (NotLeader, TransferRefused) as error:
            raise EtcdError(StatusCode.FAILED_PRECONDITION, api_errors.NOT_LEADER) from error
        self.member._schedule_process()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.request_timeout_s
        while self.member.leader_id != target:
            if loop.time() > deadline:
                raise EtcdError(StatusCode.UNAVAILABLE, api_errors.LEADER_TRANSFER_TIMED_OUT)
            await asyncio.sleep(TRANSFER_POLL_S)
        return rpc_pb2.MoveLeaderResponse(header=self.header())

    # ------------------------------------------------------------------ watch

    def open_watch(self) -> WatchSession[rpc_pb2.WatchResponse]:
        return WatchSession(self, convert.watch_responses)

    def open_serialized_watch(self) -> WatchSession[bytes]:
        """A watch stream whose responses come serialized, for a door that sends bytes."""
        return WatchSession(self, convert.watch_response_bodies)


WatchOut = TypeVar("WatchOut")


class WatchSession(Generic[WatchOut]):
    """One client watch stream: its requests in, its responses out, in order.

    Responses of the store's watch hub are queued as they are produced (on create, on
    every applied command, on progress ticks); `responses()` drains the queue until
    `close()`. A stream that lets WATCH_QUEUE_MAX responses pile up is ended with an error
    rather than holding unbounded memory; a door may also end it with an error of its own
    (`close(error)`).
    """

    def __init__(
        self,
        handlers: Handlers,
        convert_responses: Callable[
            [Sequence[kv.WatchResponse], Callable[[], Any]], list[WatchOut]
        ],
    ) -> None:
        self._handlers = handlers
        self._convert = convert_responses
        self._queue: asyncio.Queue[WatchOut | None] = asyncio.Queue()
        self._error: EtcdError | None = None
        self._closed = False
        self._stream_id, self._hub = handlers.service.open_stream(self._sink)

    def _sink(self, responses: tuple[kv.WatchResponse, ...]) -> None:
        if self._closed:
            return
        if self._queue.qsize() + len(responses) > WATCH_QUEUE_MAX:
            self.close(
                EtcdError(StatusCode.RESOURCE_EXHAUSTED, "synod: watch stream fell too far behind")
            )
            return
        for message in self._convert(responses, self._handlers.header_fields):
            self._queue.put_nowait(message)

    async def handle(self, request: rpc_pb2.WatchRequest) -> None:
        if self._closed:
            return
        kind = request.WhichOneof("request_union")
        if kind == "create_request":
            create = convert.watch_create(request.create_request)
            self._sink(self._hub.create(create))
        elif kind == "cancel_request":
            canceled = self._hub.cancel(request.cancel_request.watch_id)
            if canceled is not None:
                self._sink((canceled,))
        elif kind == "progress_request":
            self._sink((self._hub.request_progress(),))

    async def responses(self) -> AsyncIterator[WatchOut]:
        while True:
            response = await self._queue.get()
            if response is None:
                if self._error is not None:
                    raise self._error
                return
            yield response

    def close(self, error: EtcdError | None = None) -> None:
        """End the stream; `responses()` then raises `error` after what was queued."""
        if self._closed:
            return
        self._closed = True
        self._error = error
        self._handlers.service.close_stream(self._stream_id)
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)
