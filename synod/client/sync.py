"""The synchronous client: the asyncio client driven from a private event-loop thread.

Every method blocks the calling thread until the call (with all its retries) finishes;
many threads may share one `Client`. Lease keep-alives and watches run on the loop thread
in the background, so a caller blocked elsewhere does not let its lease expire.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import threading
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any, TypeVar

from synod.api.proto.etcdserverpb import rpc_pb2
from synod.api.proto.mvccpb import kv_pb2
from synod.client import errors
from synod.client.aio import (
    DEFAULT_ENDPOINTS,
    TIMEOUT_S_DEFAULT,
    TRANSPORT_DEFAULT,
    AsyncClient,
    AsyncLease,
    AsyncWatcher,
)
from synod.client.transport import Transport

T = TypeVar("T")
# How much longer than the call's own deadline the caller thread waits for its answer.
_GRACE_S = 2.0


class Client:
    """A connection to one cluster for synchronous code. `with Client(...) as client:`."""

    def __init__(
        self,
        endpoints: str | Sequence[str] = DEFAULT_ENDPOINTS,
        *,
        timeout_s: float = TIMEOUT_S_DEFAULT,
        transport_factory: Callable[[], Transport] | None = None,
        transport: str = TRANSPORT_DEFAULT,
        native_endpoints: Sequence[str] | None = None,
    ) -> None:
        """`transport` and `native_endpoints` as for `AsyncClient`; `transport_factory`
        (called on the client's loop) overrides them."""
        self.timeout_s = timeout_s
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="synod-client", daemon=True
        )
        self._thread.start()
        self._closed = False

        async def make() -> AsyncClient:
            chosen = transport_factory() if transport_factory is not None else transport
            return AsyncClient(
                endpoints,
                timeout_s=timeout_s,
                transport=chosen,
                native_endpoints=native_endpoints,
            )

        try:
            self.aio: AsyncClient = self._run(make(), None)
        except BaseException:
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5.0)
            raise

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def _run(self, coroutine: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        if self._closed:
            coroutine.close()
            raise errors.ClientClosed("client closed")
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        wait_s = None if timeout_s is None else timeout_s + _GRACE_S
        try:
            return future.result(wait_s)
        except concurrent.futures.TimeoutError as error:
            future.cancel()
            raise errors.OutcomeUnknown("the client's loop did not answer in time") from error

    def _deadline(self, timeout_s: float | None) -> float:
        return self.timeout_s if timeout_s is None else timeout_s

    def close(self) -> None:
        """Stop keep-alives and watches and close the connections (leases are not revoked:
        they expire after their TTL unless revoked first)."""
        if self._closed:
            return
        with contextlib.suppress(Exception):
            self._run(self.aio.close(), 5.0)
        with contextlib.suppress(Exception):
            self._run(_cancel_other_tasks(), 5.0)
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5.0)
        if not self._thread.is_alive():
            self._loop.close()

    # ------------------------------------------------------------------ KV

    def get(
        self, key: bytes | str, *, timeout_s: float | None = None, **options: Any
    ) -> rpc_pb2.RangeResponse:
        """A range read; options as `AsyncClient.get` (prefix, revision, limit, ...)."""
        return self._run(
            self.aio.get(key, timeout_s=timeout_s, **options), self._deadline(timeout_s)
        )

    def get_one(
        self, key: bytes | str, *, timeout_s: float | None = None
    ) -> kv_pb2.KeyValue | None:
        return self._run(self.aio.get_one(key, timeout_s=timeout_s), self._deadline(timeout_s))

    def put(
        self,
        key: bytes | str,
        value: bytes | str,
        *,
        timeout_s: float | None = None,
        **options: Any,
    ) -> rpc_pb2.PutResponse:
        return self._run(
            self.aio.put(key, value, timeout_s=timeout_s, **options), self._deadline(timeout_s)
        )

    def delete(
        self, key: bytes | str, *, timeout_s: float | None = None, **options: Any
    ) -> rpc_pb2.DeleteRangeResponse:
        return self._run(
            self.aio.delete(key, timeout_s=timeout_s, **options), self._deadline(timeout_s)
        )

    def txn(
        self,
        compare: Sequence[rpc_pb2.Compare] = (),
        success: Sequence[rpc_pb2.RequestOp] = (),
        failure: Sequence[rpc_pb2.RequestOp] = (),
        *,
        retry_safe: bool | None = None,
        timeout_s: float | None = None,
    ) -> rpc_pb2.TxnResponse:
        return self._run(
            self.aio.txn(compare, success, failure, retry_safe=retry_safe, timeout_s=timeout_s),
            self._deadline(timeout_s),
        )

    def compact(
        self, revision: int, *, physical: bool = False, timeout_s: float | None = None
    ) -> rpc_pb2.CompactionResponse:
        return self._run(
            self.aio.compact(revision, physical=physical, timeout_s=timeout_s),
            self._deadline(timeout_s),
        )

    # ------------------------------------------------------------------ leases

    def lease_grant(
        self, ttl_s: int, *, timeout_s: float | None = None
    ) -> rpc_pb2.LeaseGrantResponse:
        return self._run(
            self.aio.lease_grant(ttl_s, timeout_s=timeout_s), self._deadline(timeout_s)
        )

    def lease_revoke(
        self, lease_id: int, *, timeout_s: float | None = None
    ) -> rpc_pb2.LeaseRevokeResponse:
        return self._run(
            self.aio.lease_revoke(lease_id, timeout_s=timeout_s), self._deadline(timeout_s)
        )

    def lease_time_to_live(
        self, lease_id: int, *, keys: bool = False, timeout_s: float | None = None
    ) -> rpc_pb2.LeaseTimeToLiveResponse:
        return self._run(
            self.aio.lease_time_to_live(lease_id, keys=keys, timeout_s=timeout_s),
            self._deadline(timeout_s),
        )

    def lease_leases(self, *, timeout_s: float | None = None) -> rpc_pb2.LeaseLeasesResponse:
        return self._run(self.aio.lease_leases(timeout_s=timeout_s), self._deadline(timeout_s))

    def lease_keep_alive_once(
        self, lease_id: int, *, timeout_s: float | None = None
    ) -> rpc_pb2.LeaseKeepAliveResponse:
        return self._run(
            self.aio.lease_keep_alive_once(lease_id, timeout_s=timeout_s),
            self._deadline(timeout_s),
        )

    def lease(self, ttl_s: int, *, on_lost: Callable[[Lease], None] | None = None) -> Lease:
        """Grant a lease kept alive in the background (`with client.lease(5) as lease:`)."""
        holder: list[Lease] = []

        def lost(_: AsyncLease) -> None:
            if on_lost is not None and holder:
                on_lost(holder[0])

        inner = self._run(self.aio.lease(ttl_s, on_lost=lost), self.timeout_s)
        lease = Lease(self, inner)
        holder.append(lease)
        return lease

    # ------------------------------------------------------------------ watch

    def watch(self, key: bytes | str, **options: Any) -> Watcher:
        """Watch a key or range (options as `AsyncClient.watch`); returns once the watch is
        registered, so every later change is seen."""
        watcher = Watcher(self, key, options)
        watcher.wait_started(self.timeout_s)
        return watcher

    # ------------------------------------------------------------------ cluster

    def member_list(self, *, timeout_s: float | None = None) -> rpc_pb2.MemberListResponse:
        return self._run(self.aio.member_list(timeout_s=timeout_s), self._deadline(timeout_s))

    def member_add(
        self, peer_urls: Sequence[str], *, is_learner: bool = False, timeout_s: float | None = None
    ) -> rpc_pb2.MemberAddResponse:
        call = self.aio.member_add(peer_urls, is_learner=is_learner, timeout_s=timeout_s)
        return self._run(call, self._deadline(timeout_s))

    def member_remove(
        self, member_id: int, *, timeout_s: float | None = None
    ) -> rpc_pb2.MemberRemoveResponse:
        call = self.aio.member_remove(member_id, timeout_s=timeout_s)
        return self._run(call, self._deadline(timeout_s))

    def member_update(
        self, member_id: int, peer_urls: Sequence[str], *, timeout_s: float | None = None
    ) -> rpc_pb2.MemberUpdateResponse:
        call = self.aio.member_update(member_id, peer_urls, timeout_s=timeout_s)
        return self._run(call, self._deadline(timeout_s))

    def member_promote(
        self, member_id: int, *, timeout_s: float | None = None
    ) -> rpc_pb2.MemberPromoteResponse:
        call = self.aio.member_promote(member_id, timeout_s=timeout_s)
        return self._run(call, self._deadline(timeout_s))

    def status(
        self, endpoint: str | None = None, *, timeout_s: float | None = None
    ) -> rpc_pb2.StatusResponse:
        return self._run(self.aio.status(endpoint, timeout_s=timeout_s), self._deadline(timeout_s))

    def move_leader(
        self, target_id: int, endpoint: str, *, timeout_s: float | None = None
    ) -> rpc_pb2.MoveLeaderResponse:
        return self._run(
            self.aio.move_leader(target_id, endpoint, timeout_s=timeout_s),
            self._deadline(timeout_s),
        )

    @property
    def endpoints(self) -> Sequence[str]:
        return self.aio.transport.endpoints


async def _cancel_other_tasks() -> None:
    """End the loop's background work (watch pumps) before the loop stops."""
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class Lease:
    """A lease kept alive in the background; `with` revokes it at the end."""

    def __init__(self, client: Client, inner: AsyncLease) -> None:
        self.client = client
        self.inner = inner
        self.id = inner.id

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.revoke()

    @property
    def ttl_s(self) -> int:
        return self.inner.ttl_s

    @property
    def lost(self) -> bool:
        """True once the lease is known (or must be assumed) gone."""
        return self.inner.lost.is_set()

    @property
    def lost_reason(self) -> str:
        return self.inner.lost_reason

    def expires_in_s(self) -> float:
        async def read() -> float:
            return self.inner.expires_in_s()

        return self.client._run(read(), 1.0)

    def revoke(self) -> None:
        """Stop renewing and revoke; safe to call twice."""
        with contextlib.suppress(errors.ClientClosed):
            self.client._run(self.inner.revoke(), self.client.timeout_s)

    def time_to_live(self) -> rpc_pb2.LeaseTimeToLiveResponse:
        return self.client.lease_time_to_live(self.id)


_END = object()


class Watcher:
    """A watch seen from a thread: iterate it, or `get(timeout_s)` one response."""

    def __init__(self, client: Client, key: bytes | str, options: dict[str, Any]) -> None:
        self.client = client
        self._responses: queue.Queue[rpc_pb2.WatchResponse | BaseException | object] = queue.Queue()
        self._inner: AsyncWatcher | None = None
        self._task: asyncio.Task[None] | None = None  # held: the loop keeps only weak refs
        self._done = False

        async def start() -> None:
            self._inner = client.aio.watch(key, **options)
            self._task = asyncio.get_running_loop().create_task(self._pump(self._inner))

        client._run(start(), client.timeout_s)

    async def _pump(self, inner: AsyncWatcher) -> None:
        try:
            async for response in inner:
                self._responses.put(response)
        except BaseException as error:  # delivered to the reading thread
            self._responses.put(error)
            if isinstance(error, asyncio.CancelledError):
                raise
        finally:
            self._responses.put(_END)

    def wait_started(self, timeout_s: float) -> None:
        inner = self._inner
        assert inner is not None

        async def wait() -> None:
            async with asyncio.timeout(timeout_s):
                await inner.wait_started()

        try:
            self.client._run(wait(), timeout_s)
        except TimeoutError as error:
            self.cancel()
            raise errors.Timeout(f"watch not started in {timeout_s:g}s") from error
        except errors.ClientError:
            self.cancel()
            raise

    @property
    def next_revision(self) -> int:
        """The revision the watch would resume from (one past the last delivered event)."""
        return self._inner.next_revision if self._inner is not None else 0

    @property
    def header_revision(self) -> int:
        return self._inner.header_revision if self._inner is not None else 0

    def get(self, timeout_s: float | None = None) -> rpc_pb2.WatchResponse | None:
        """The next response with events; None on timeout or after `cancel()`."""
        if self._done:
            return None
        try:
            item = self._responses.get(timeout=timeout_s)
        except queue.Empty:
            return None
        if item is _END:
            self._done = True
            return None
        if isinstance(item, BaseException):
            self._done = True
            if isinstance(item, asyncio.CancelledError):
                return None
            raise item
        assert isinstance(item, rpc_pb2.WatchResponse)
        return item

    def events(self, timeout_s: float | None = None) -> list[kv_pb2.Event]:
        response = self.get(timeout_s)
        return list(response.events) if response is not None else []

    def __iter__(self) -> Iterator[rpc_pb2.WatchResponse]:
        while True:
            response = self.get()
            if response is None:
                return
            yield response

    def cancel(self) -> None:
        inner = self._inner
        if inner is None:
            return

        def stop() -> None:
            inner.cancel()

        with contextlib.suppress(RuntimeError):
            self.client.loop.call_soon_threadsafe(stop)

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cancel()
