"""The asyncio client: every etcd v3 call, with deadlines, failover and safe retries.

Retry rule (the one invariant this module keeps): a request is sent again only when doing
so cannot apply a write twice. That is when the earlier attempt certainly did not reach a
member able to apply it (connection refused, 'no leader'), or when the request is
retry-safe by nature: reads, keep-alives, lease time-to-live, a revoke, and txns guarded
by a compare (txn.is_retry_safe). Anything else whose outcome is unknown raises
`OutcomeUnknown`. Every call has one deadline that covers all its attempts.

Failover: a call that cannot reach its member, or whose member has no leader, moves the
transport to the next endpoint; streams (watch, keep-alive) reconnect there, a watch from
the revision after the last one it delivered, so no event is lost or repeated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TypeVar

from google.protobuf.message import Message

from synod.api.proto.etcdserverpb import rpc_pb2
from synod.api.proto.mvccpb import kv_pb2
from synod.client import errors
from synod.client.native_transport import make_transport
from synod.client.transport import Stream, Transport
from synod.client.txn import is_retry_safe, prefix_end, to_bytes

log = logging.getLogger(__name__)

DEFAULT_ENDPOINTS = ("127.0.0.1:2379", "127.0.0.1:22379", "127.0.0.1:32379")
TIMEOUT_S_DEFAULT = 5.0
TRANSPORT_DEFAULT = "auto"
# A retry-safe call gives each member at most this share of its deadline, so that a
# member stuck behind a dead leader does not eat the whole deadline.
ATTEMPT_SHARE = 0.4
ATTEMPT_S_MIN = 1.0
BACKOFF_S_MIN = 0.05
BACKOFF_S_MAX = 0.5
ATTEMPTS_MAX = 64

M = TypeVar("M", bound=Message)


def _backoff_s(attempt: int, rng: random.Random) -> float:
    ceiling = min(BACKOFF_S_MAX, BACKOFF_S_MIN * (1 << min(attempt, 8)))
    return ceiling / 2 + rng.random() * ceiling / 2


class AsyncClient:
    """A connection to one cluster. Use as `async with AsyncClient(...) as client:`."""

    def __init__(
        self,
        endpoints: str | Sequence[str] = DEFAULT_ENDPOINTS,
        *,
        timeout_s: float = TIMEOUT_S_DEFAULT,
        transport: Transport | str = TRANSPORT_DEFAULT,
        native_endpoints: Sequence[str] | None = None,
    ) -> None:
        """`transport`: a `Transport`, or 'native' (Synod's native door), 'grpc' (etcd's
        API) or 'auto' (native where the members answer on it, else gRPC);
        `native_endpoints`: the members' native doors, one per endpoint (default: each
        endpoint's port + 2)."""
        assert timeout_s > 0, "a deadline must be positive"
        if isinstance(transport, str):
            transport = make_transport(transport, endpoints, native_endpoints)
        self.transport: Transport = transport
        self.timeout_s = timeout_s
        self._rng = random.Random()
        self._closed = False
        self._leases: set[AsyncLease] = set()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for lease in list(self._leases):
            lease.stop_keep_alive()
        await self.transport.close()

    # ------------------------------------------------------------------ the call loop

    async def call(
        self,
        method: str,
        request: Message,
        *,
        retry_safe: bool,
        timeout_s: float | None = None,
        endpoint: str | None = None,
    ) -> Message:
        """One unary call under one deadline. `retry_safe` allows resending after an
        unknown outcome; `endpoint` pins the call to one member (no failover)."""
        if self._closed:
            raise errors.ClientClosed("client closed")
        loop = asyncio.get_running_loop()
        total_s = self.timeout_s if timeout_s is None else timeout_s
        deadline = loop.time() + total_s
        maybe_applied = False
        last: errors.ClientError | None = None
        for attempt in range(ATTEMPTS_MAX):
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            attempt_s = remaining
            if retry_safe and endpoint is None:
                attempt_s = min(remaining, max(ATTEMPT_S_MIN, total_s * ATTEMPT_SHARE))
            target = endpoint or self.transport.current
            try:
                return await self.transport.call(method, request, attempt_s, target)
            except errors.OutcomeUnknown as error:
                if not retry_safe:
                    raise
                maybe_applied = True
                last = error
            except (errors.Unavailable, errors.Timeout) as error:
                last = error
            if endpoint is not None:
                break
            self.transport.failover(target)
            remaining = deadline - loop.time()
            await asyncio.sleep(max(0.0, min(_backoff_s(attempt, self._rng), remaining)))
        assert last is not None or total_s <= 0
        detail = f": {last.message}" if last is not None else ""
        where = last.endpoint if last is not None else ""
        if maybe_applied:
            raise errors.OutcomeUnknown(f"deadline of {total_s:g}s exceeded{detail}", 4, where)
        if isinstance(last, errors.NoLeader | errors.Unavailable) and last is not None:
            if endpoint is not None:
                raise last
            raise type(last)(f"{last.message} (no member answered in {total_s:g}s)", last.code)
        raise errors.Timeout(f"deadline of {total_s:g}s exceeded{detail}", 4, where)

    async def _typed(
        self,
        method: str,
        request: Message,
        response_type: type[M],
        *,
        retry_safe: bool,
        timeout_s: float | None,
        endpoint: str | None = None,
    ) -> M:
        response = await self.call(
            method, request, retry_safe=retry_safe, timeout_s=timeout_s, endpoint=endpoint
        )
        assert isinstance(response, response_type), (method, type(response))
        return response

    # ------------------------------------------------------------------ KV

    async def range(
        self, request: rpc_pb2.RangeRequest, *, timeout_s: float | None = None
    ) -> rpc_pb2.RangeResponse:
        return await self._typed(
            "Range", request, rpc_pb2.RangeResponse, retry_safe=True, timeout_s=timeout_s
        )

    async def get(
        self,
        key: bytes | str,
        *,
        prefix: bool = False,
        range_end: bytes | str = b"",
        revision: int = 0,
        limit: int = 0,
        keys_only: bool = False,
        count_only: bool = False,
        serializable: bool = False,
        sort_target: rpc_pb2.RangeRequest.SortTarget = rpc_pb2.RangeRequest.KEY,
        sort_order: rpc_pb2.RangeRequest.SortOrder = rpc_pb2.RangeRequest.NONE,
        max_create_revision: int = 0,
        timeout_s: float | None = None,
    ) -> rpc_pb2.RangeResponse:
        """A range read (linearizable unless `serializable`)."""
        raw = to_bytes(key)
        end = prefix_end(raw) if prefix else to_bytes(range_end)
        request = rpc_pb2.RangeRequest(
            key=raw,
            range_end=end,
            revision=revision,
            limit=limit,
            keys_only=keys_only,
            count_only=count_only,
            serializable=serializable,
            sort_target=sort_target,
            sort_order=sort_order,
            max_create_revision=max_create_revision,
        )
        return await self.range(request, timeout_s=timeout_s)

    async def get_one(
        self, key: bytes | str, *, timeout_s: float | None = None
    ) -> kv_pb2.KeyValue | None:
        """The key's current value, or None."""
        response = await self.get(key, timeout_s=timeout_s)
        return response.kvs[0] if response.kvs else None

    async def put(
        self,
        key: bytes | str,
        value: bytes | str,
        *,
        lease: int = 0,
        prev_kv: bool = False,
        ignore_value: bool = False,
        ignore_lease: bool = False,
        timeout_s: float | None = None,
    ) -> rpc_pb2.PutResponse:
        """A put; never resent after an unknown outcome (raises `OutcomeUnknown`)."""
        request = rpc_pb2.PutRequest(
            key=to_bytes(key),
            value=to_bytes(value),
            lease=lease,
            prev_kv=prev_kv,
            ignore_value=ignore_value,
            ignore_lease=ignore_lease,
        )
        return await self._typed(
            "Put", request, rpc_pb2.PutResponse, retry_safe=False, timeout_s=timeout_s
        )

    async def delete(
        self,
        key: bytes | str,
        *,
        prefix: bool = False,
        range_end: bytes | str = b"",
        prev_kv: bool = False,
        timeout_s: float | None = None,
    ) -> rpc_pb2.DeleteRangeResponse:
        raw = to_bytes(key)
        request = rpc_pb2.DeleteRangeRequest(
            key=raw, range_end=prefix_end(raw) if prefix else to_bytes(range_end), prev_kv=prev_kv
        )
        return await self._typed(
            "DeleteRange",
            request,
            rpc_pb2.DeleteRangeResponse,
            retry_safe=False,
            timeout_s=timeout_s,
        )

    async def txn(
        self,
        compare: Sequence[rpc_pb2.Compare] = (),
        success: Sequence[rpc_pb2.RequestOp] = (),
        failure: Sequence[rpc_pb2.RequestOp] = (),
        *,
        retry_safe: bool | None = None,
        timeout_s: float | None = None,
    ) -> rpc_pb2.TxnResponse:
        """A transaction. Resent after an unknown outcome only when `txn.is_retry_safe`
        (or `retry_safe=True`): then a `succeeded=False` answer may follow a first attempt
        that succeeded, and the caller checks (recipes read their own key back)."""
        request = rpc_pb2.TxnRequest(compare=compare, success=success, failure=failure)
        safe = is_retry_safe(request) if retry_safe is None else retry_safe
        return await self._typed(
            "Txn", request, rpc_pb2.TxnResponse, retry_safe=safe, timeout_s=timeout_s
        )

    async def compact(
        self, revision: int, *, physical: bool = False, timeout_s: float | None = None
    ) -> rpc_pb2.CompactionResponse:
        request = rpc_pb2.CompactionRequest(revision=revision, physical=physical)
        return await self._typed(
            "Compact", request, rpc_pb2.CompactionResponse, retry_safe=True, timeout_s=timeout_s
        )

    # ------------------------------------------------------------------ leases

    async def lease_grant(
        self, ttl_s: int, *, lease_id: int = 0, timeout_s: float | None = None
    ) -> rpc_pb2.LeaseGrantResponse:
        """Grant a lease. Resent after an unknown outcome: a duplicate grant only leaves an
        unused lease that expires after its TTL."""
        request = rpc_pb2.LeaseGrantRequest(TTL=ttl_s, ID=lease_id)
        response = await self._typed(
            "LeaseGrant",
            request,
            rpc_pb2.LeaseGrantResponse,
            retry_safe=lease_id == 0,
            timeout_s=timeout_s,
        )
        if response.error:
            raise errors.ClientError(response.error)
        return response

    async def lease_revoke(
        self, lease_id: int, *, timeout_s: float | None = None
    ) -> rpc_pb2.LeaseRevokeResponse:
        request = rpc_pb2.LeaseRevokeRequest(ID=lease_id)
        return await self._typed(
            "LeaseRevoke",
            request,
            rpc_pb2.LeaseRevokeResponse,
            retry_safe=True,
            timeout_s=timeout_s,
        )

    async def lease_time_to_live(
        self, lease_id: int, *, keys: bool = False, timeout_s: float | None = None
    ) -> rpc_pb2.LeaseTimeToLiveResponse:
        request = rpc_pb2.LeaseTimeToLiveRequest(ID=lease_id, keys=keys)
        return await self._typed(
            "LeaseTimeToLive",
            request,
            rpc_pb2.LeaseTimeToLiveResponse,
            retry_safe=True,
            timeout_s=timeout_s,
        )

    async def lease_leases(self, *, timeout_s: float | None = None) -> rpc_pb2.LeaseLeasesResponse:
        return await self._typed(
            "LeaseLeases",
            rpc_pb2.LeaseLeasesRequest(),
            rpc_pb2.LeaseLeasesResponse,
            retry_safe=True,
            timeout_s=timeout_s,
        )

    async def lease_keep_alive_once(
        self, lease_id: int, *, timeout_s: float | None = None
    ) -> rpc_pb2.LeaseKeepAliveResponse:
        """Renew a lease once; raises `LeaseNotFound` if it is gone (TTL <= 0)."""
        loop = asyncio.get_running_loop()
        total_s = self.timeout_s if timeout_s is None else timeout_s
        deadline = loop.time() + total_s
        attempt = 0
        while True:
            stream = self.transport.keep_alive()
            try:
                async with asyncio.timeout(max(0.001, deadline - loop.time())):
                    await stream.send(rpc_pb2.LeaseKeepAliveRequest(ID=lease_id))
                    response = await stream.receive()
                if response.TTL <= 0:
                    raise errors.LeaseNotFound(errors.MESSAGE_LEASE_NOT_FOUND, errors.NOT_FOUND)
                return response
            except TimeoutError as error:
                raise errors.Timeout(f"keep-alive: deadline of {total_s:g}s exceeded") from error
            except (errors.Unavailable, errors.Timeout) as error:
                self.transport.failover(stream.endpoint)
                if loop.time() >= deadline:
                    raise error
            finally:
                stream.cancel()
            attempt += 1
            await asyncio.sleep(min(_backoff_s(attempt, self._rng), deadline - loop.time()))

    async def lease(
        self, ttl_s: int, *, on_lost: Callable[[AsyncLease], None] | None = None
    ) -> AsyncLease:
        """Grant a lease and keep it alive in the background until revoked or closed."""
        asked_at = asyncio.get_running_loop().time()
        granted = await self.lease_grant(ttl_s)
        lease = AsyncLease(self, granted.ID, granted.TTL, on_lost=on_lost, granted_at=asked_at)
        self._leases.add(lease)
        lease.start_keep_alive()
        return lease

    # ------------------------------------------------------------------ watch

    def watch(
        self,
        key: bytes | str,
        *,
        prefix: bool = False,
        range_end: bytes | str = b"",
        start_revision: int = 0,
        prev_kv: bool = False,
        no_put: bool = False,
        no_delete: bool = False,
        progress_notify: bool = False,
    ) -> AsyncWatcher:
        """Watch a key or range; iterate the result (`async for response in watcher`)."""
        raw = to_bytes(key)
        filters = []
        if no_put:
            filters.append(rpc_pb2.WatchCreateRequest.NOPUT)
        if no_delete:
            filters.append(rpc_pb2.WatchCreateRequest.NODELETE)
        create = rpc_pb2.WatchCreateRequest(
            key=raw,
            range_end=prefix_end(raw) if prefix else to_bytes(range_end),
            start_revision=start_revision,
            prev_kv=prev_kv,
            filters=filters,
            progress_notify=progress_notify,
        )
        return AsyncWatcher(self, create)

    # ------------------------------------------------------------------ cluster

    async def member_list(self, *, timeout_s: float | None = None) -> rpc_pb2.MemberListResponse:
        return await self._typed(
            "MemberList",
            rpc_pb2.MemberListRequest(),
            rpc_pb2.MemberListResponse,
            retry_safe=True,
            timeout_s=timeout_s,
        )

    async def member_add(
        self, peer_urls: Sequence[str], *, is_learner: bool = False, timeout_s: float | None = None
    ) -> rpc_pb2.MemberAddResponse:
        """Add a member (a voter, or a learner) by its peer URLs; the answer names the id the
        cluster gave it. Then start it with `--initial-cluster-state existing`."""
        return await self._typed(
            "MemberAdd",
            rpc_pb2.MemberAddRequest(peerURLs=list(peer_urls), isLearner=is_learner),
            rpc_pb2.MemberAddResponse,
            retry_safe=False,
            timeout_s=timeout_s,
        )

    async def member_remove(
        self, member_id: int, *, timeout_s: float | None = None
    ) -> rpc_pb2.MemberRemoveResponse:
        """Remove a member for good (resent on an unknown outcome: a second remove of the
        same member answers 'member not found')."""
        return await self._typed(
            "MemberRemove",
            rpc_pb2.MemberRemoveRequest(ID=member_id),
            rpc_pb2.MemberRemoveResponse,
            retry_safe=False,
            timeout_s=timeout_s,
        )

    async def member_update(
        self, member_id: int, peer_urls: Sequence[str], *, timeout_s: float | None = None
    ) -> rpc_pb2.MemberUpdateResponse:
        """Change a member's peer URLs (idempotent, so resent on an unknown outcome)."""
        return await self._typed(
            "MemberUpdate",
            rpc_pb2.MemberUpdateRequest(ID=member_id, peerURLs=list(peer_urls)),
            rpc_pb2.MemberUpdateResponse,
            retry_safe=True,
            timeout_s=timeout_s,
        )

    async def member_promote(
        self, member_id: int, *, timeout_s: float | None = None
    ) -> rpc_pb2.MemberPromoteResponse:
        """Make a learner a voter; refused until the learner caught up with the leader."""
        return await self._typed(
            "MemberPromote",
            rpc_pb2.MemberPromoteRequest(ID=member_id),
            rpc_pb2.MemberPromoteResponse,
            retry_safe=False,
            timeout_s=timeout_s,
        )

    async def status(
        self, endpoint: str | None = None, *, timeout_s: float | None = None
    ) -> rpc_pb2.StatusResponse:
        """Status of one member (`endpoint`, default: whichever answers)."""
        return await self._typed(
            "Status",
            rpc_pb2.StatusRequest(),
            rpc_pb2.StatusResponse,
            retry_safe=True,
            timeout_s=timeout_s,
            endpoint=endpoint,
        )

    async def move_leader(
        self, target_id: int, endpoint: str, *, timeout_s: float | None = None
    ) -> rpc_pb2.MoveLeaderResponse:
        """Ask the leader (`endpoint` must be it) to hand leadership to member `target_id`."""
        return await self._typed(
            "MoveLeader",
            rpc_pb2.MoveLeaderRequest(targetID=target_id),
            rpc_pb2.MoveLeaderResponse,
            retry_safe=False,
            timeout_s=timeout_s,
            endpoint=endpoint,
        )

    async def snapshot(self, endpoint: str) -> AsyncIterator[rpc_pb2.SnapshotResponse]:
        """One member's snapshot in chunks, the last with `remaining_bytes == 0`. No failover
        and no retry: a backup comes whole from one member or not at all."""
        if self._closed:
            raise errors.ClientClosed("client closed")
        stream = self.transport.snapshot(endpoint)
        try:
            await stream.send(rpc_pb2.SnapshotRequest())
            while True:
                chunk = await stream.receive()
                yield chunk
                if chunk.remaining_bytes == 0:
                    return
        finally:
            stream.cancel()


class AsyncLease:
    """A lease kept alive by a background task at a third of its TTL.

    The lease counts as lost when the cluster says it is gone (TTL <= 0) or when no renewal
    succeeded for a whole TTL (the cluster may have expired it: the keys attached to it
    must be assumed deleted). `lost` is then set and `on_lost` called once."""

    def __init__(
        self,
        client: AsyncClient,
        lease_id: int,
        ttl_s: int,
        *,
        on_lost: Callable[[AsyncLease], None] | None = None,
        granted_at: float | None = None,
    ) -> None:
        assert lease_id != 0 and ttl_s > 0
        self.client = client
        self.id = lease_id
        self.ttl_s = ttl_s
        self.lost = asyncio.Event()
        self.lost_reason = ""
        self._on_lost = on_lost
        self._task: asyncio.Task[None] | None = None
        loop = asyncio.get_running_loop()
        # The lease is safe until this loop time: the cluster's expiry is at least the time
        # the grant (or the last answered renewal) was sent plus the TTL it granted.
        self.safe_until = (loop.time() if granted_at is None else granted_at) + ttl_s

    def start_keep_alive(self) -> None:
        assert self._task is None
        self._task = asyncio.get_running_loop().create_task(self._keep_alive())

    def stop_keep_alive(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self.client._leases.discard(self)

    def expires_in_s(self) -> float:
        """Seconds during which this lease is certainly alive (0 when lost)."""
        if self.lost.is_set():
            return 0.0
        return max(0.0, self.safe_until - asyncio.get_running_loop().time())

    def _mark_lost(self, reason: str, *, expected: bool = False) -> None:
        if self.lost.is_set():
            return
        self.lost_reason = reason
        self.lost.set()
        if not expected:
            log.warning("lease %x lost: %s", self.id, reason)
        if self._on_lost is not None:
            self._on_lost(self)

    async def _keep_alive(self) -> None:
        loop = asyncio.get_running_loop()
        client = self.client
        attempt = 0
        while not self.lost.is_set():
            stream = client.transport.keep_alive()
            try:
                while True:
                    sent_at = loop.time()
                    async with asyncio.timeout(max(0.5, self.ttl_s / 3)):
                        await stream.send(rpc_pb2.LeaseKeepAliveRequest(ID=self.id))
                        response = await stream.receive()
                    if response.TTL <= 0:
                        self._mark_lost("the cluster expired or revoked it")
                        return
                    attempt = 0
                    self.ttl_s = int(response.TTL)
                    self.safe_until = sent_at + response.TTL
                    await asyncio.sleep(max(0.2, response.TTL / 3))
            except (errors.ClientError, TimeoutError) as error:
                client.transport.failover(stream.endpoint)
                log.info("lease %x keep-alive via %s failed: %s", self.id, stream.endpoint, error)
            finally:
                stream.cancel()
            if loop.time() >= self.safe_until:
                self._mark_lost("no renewal succeeded within its TTL")
                return
            attempt += 1
            await asyncio.sleep(_backoff_s(attempt, client._rng))

    async def revoke(self) -> None:
        """Stop renewing and revoke (a lease already gone is fine)."""
        self.stop_keep_alive()
        with contextlib.suppress(errors.LeaseNotFound):
            await self.client.lease_revoke(self.id)
        self._mark_lost("revoked", expected=True)

    async def time_to_live(self) -> rpc_pb2.LeaseTimeToLiveResponse:
        return await self.client.lease_time_to_live(self.id)


class AsyncWatcher:
    """One watch, resumed on another member when its stream breaks.

    Iterating yields `WatchResponse`s that carry events (progress notifications are only
    recorded). Raises `Compacted` when the start revision (or the resume point) was
    compacted away, or another `ClientError` when the member refuses the watch."""

    def __init__(self, client: AsyncClient, create: rpc_pb2.WatchCreateRequest) -> None:
        self.client = client
        self._create = create
        self.next_revision = create.start_revision
        self.header_revision = 0
        self._stream: Stream[rpc_pb2.WatchRequest, rpc_pb2.WatchResponse] | None = None
        self._cancelled = False
        self._started = asyncio.Event()
        self.error: errors.ClientError | None = None

    def __aiter__(self) -> AsyncIterator[rpc_pb2.WatchResponse]:
        return self._guarded()

    async def wait_started(self) -> None:
        """Return once the watch is registered with a member (events after it are seen);
        raise the member's refusal if it refused (e.g. `Compacted`)."""
        await self._started.wait()
        if self.error is not None:
            raise self.error

    async def _guarded(self) -> AsyncIterator[rpc_pb2.WatchResponse]:
        try:
            async for response in self._responses():
                yield response
        except errors.ClientError as error:
            self.error = error
            raise
        finally:
            self._started.set()

    def cancel(self) -> None:
        self._cancelled = True
        stream = self._stream
        if stream is not None:
            stream.cancel()

    async def _open(self) -> Stream[rpc_pb2.WatchRequest, rpc_pb2.WatchResponse]:
        transport = self.client.transport
        stream = transport.watch()
        self._stream = stream
        create = rpc_pb2.WatchCreateRequest()
        create.CopyFrom(self._create)
        create.start_revision = self.next_revision
        await stream.send(rpc_pb2.WatchRequest(create_request=create))
        while True:
            response = await stream.receive()
            if response.created or response.canceled:
                break
        self._check_canceled(response, stream.endpoint)
        if self.next_revision == 0:
            self.next_revision = response.header.revision + 1
        self.header_revision = max(self.header_revision, response.header.revision)
        self._started.set()
        return stream

    @staticmethod
    def _check_canceled(response: rpc_pb2.WatchResponse, endpoint: str) -> None:
        if not response.canceled:
            return
        if response.compact_revision:
            error = errors.Compacted(errors.MESSAGE_COMPACTED, errors.OUT_OF_RANGE, endpoint)
            error.compact_revision = response.compact_revision
            raise error
        reason = response.cancel_reason or "watch canceled by the member"
        if reason == errors.MESSAGE_NO_LEADER:
            raise errors.NoLeader(reason, errors.UNAVAILABLE, endpoint)
        raise errors.ClientError(reason, 0, endpoint)

    async def _responses(self) -> AsyncIterator[rpc_pb2.WatchResponse]:
        attempt = 0
        transport = self.client.transport
        while not self._cancelled:
            stream = None
            try:
                stream = await self._open()
                attempt = 0
                while True:
                    response = await stream.receive()
                    self._check_canceled(response, stream.endpoint)
                    self.header_revision = max(self.header_revision, response.header.revision)
                    if not response.events:
                        continue
                    self.next_revision = response.events[-1].kv.mod_revision + 1
                    yield response
            except (errors.Unavailable, errors.Timeout) as error:
                if self._cancelled:
                    return
                opened = stream or self._stream
                endpoint = opened.endpoint if opened is not None else transport.current
                transport.failover(endpoint)
                log.info(
                    "watch via %s broke (%s); resuming at %d", endpoint, error, self.next_revision
                )
            except errors.Cancelled:
                if self._cancelled:
                    return
                raise
            finally:
                if self._stream is not None:
                    self._stream.cancel()
            attempt += 1
            await asyncio.sleep(_backoff_s(attempt, self.client._rng))
