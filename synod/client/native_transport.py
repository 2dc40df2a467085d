"""The native transport: the client's `Transport` over Synod's native door (frames in
synod.api.proto.native_wire), one TCP connection per member, every call and stream
multiplexed and pipelined on it.

Endpoints keep the names the client was given (the members' etcd client addresses), so
failover, pinned calls and error messages read the same as over gRPC; each maps to a
native address, given explicitly or its port plus NATIVE_PORT_OFFSET.

`sent` is decided honestly: a call fails as `Unavailable` (not sent) only when no
connection could be opened; once its frame was handed to a connection, a lost connection
or a passed deadline leaves the outcome unknown. A deadline also tells the member to drop
the call (an end frame), which cannot undo a write already proposed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Sequence
from typing import Generic, TypeVar, cast

from google.protobuf.message import Message

from synod.api.proto import native_wire as wire
from synod.api.proto.etcdserverpb import rpc_pb2
from synod.client import errors
from synod.client.grpc_transport import GrpcTransport
from synod.client.transport import Stream, Transport, parse_endpoints

CONNECT_TIMEOUT_S = 2.0
PROBE_TIMEOUT_S = 0.5
STREAM_BUFFER_MAX = 100_000  # responses a stream holds for a slow reader

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)


def native_address(endpoint: str) -> str:
    """The native door beside an etcd client address: its port plus NATIVE_PORT_OFFSET."""
    host, _, port = endpoint.rpartition(":")
    return f"{host}:{int(port) + wire.NATIVE_PORT_OFFSET}"


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def _expire(future: asyncio.Future[tuple[int, bytes]]) -> None:
    """A call's deadline passed: its wait ends with TimeoutError."""
    if not future.done():
        future.set_exception(TimeoutError())


class _Connection(asyncio.Protocol):
    """One TCP connection to one member's native door."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.calls: dict[int, asyncio.Future[tuple[int, bytes]]] = {}
        self.streams: dict[int, NativeStream[Message, Message]] = {}
        self.lost = asyncio.get_running_loop().create_future()
        self._frames = wire.FrameSender(self._write)

    @property
    def open(self) -> bool:
        return not self.lost.done()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        wire.no_delay(transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        try:
            frames = wire.decode_frames(self.buffer, wire.CLIENT_FRAME_BYTES_MAX)
        except wire.FrameError as error:
            self._fail(f"bad frame from the member: {error}")
            return
        for request_id, _, flags, body in frames:
            future = self.calls.pop(request_id, None)
            if future is not None:
                if not future.done():
                    future.set_result((flags, body))
                continue
            stream = self.streams.get(request_id)
            if stream is not None:
                stream._on_frame(flags, body)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(f"connection lost: {exc}" if exc else "connection closed by the member")

    def _fail(self, reason: str) -> None:
        if not self.lost.done():
            self.lost.set_result(reason)
        if self.transport is not None:
            self.transport.close()
        calls, self.calls = self.calls, {}
        for future in calls.values():
            if not future.done():
                future.set_exception(
                    errors.error_from_status(errors.UNAVAILABLE, reason, self.endpoint, sent=True)
                )
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            stream._on_lost(reason)

    def send(self, request_id: int, method: int, flags: int, body: bytes) -> None:
        """Queue one frame; frames queued in one loop iteration leave in one write."""
        self._frames.send(request_id, method, flags, body)

    def _write(self, data: bytes) -> None:
        if self.transport is not None and self.open:
            self.transport.write(data)

    def close(self) -> None:
        self._fail("closed by the client")


class NativeStream(Generic[Req, Resp]):
    """One stream (watch, keep-alive) on a native connection, through the `Stream`
    protocol. It opens with its first request."""

    def __init__(self, transport: NativeTransport, endpoint: str, method: wire.Method) -> None:
        self._transport = transport
        self._endpoint = endpoint
        self._method = method
        self._connection: _Connection | None = None
        self._id = 0
        self._responses: asyncio.Queue[Resp | errors.ClientError] = asyncio.Queue()
        self._cancelled = False
        self._broken: errors.ClientError | None = None

    @property
    def endpoint(self) -> str:
        return self._endpoint

    async def send(self, request: Req) -> None:
        if self._cancelled:
            raise errors.Cancelled("stream cancelled", errors.CANCELLED, self._endpoint)
        if self._broken is not None:
            raise self._broken
        if self._connection is None:
            connection = await self._transport._connect(self._endpoint, CONNECT_TIMEOUT_S)
            if self._cancelled:
                raise errors.Cancelled("stream cancelled", errors.CANCELLED, self._endpoint)
            if not connection.open:
                raise errors.Unavailable(str(connection.lost.result()), 0, self._endpoint)
            self._connection = connection
            self._id = self._transport._next_id()
            connection.streams[self._id] = cast("NativeStream[Message, Message]", self)
        self._connection.send(self._id, self._method.code, 0, request.SerializeToString())

    async def receive(self) -> Resp:
        if self._cancelled:
            raise errors.Cancelled("stream cancelled", errors.CANCELLED, self._endpoint)
        item = await self._responses.get()
        if isinstance(item, errors.ClientError):
            self._responses.put_nowait(item)  # every later receive raises it too
            raise item
        return item

    def cancel(self) -> None:
        if self._cancelled:
            return
        self._cancelled = True
        connection = self._connection
        open_here = connection is not None and connection.streams.pop(self._id, None) is not None
        if open_here and connection is not None and connection.open:
            connection.send(self._id, self._method.code, wire.FLAG_END, b"")
        self._responses.put_nowait(
            errors.Cancelled("stream cancelled", errors.CANCELLED, self._endpoint)
        )

    def _on_frame(self, flags: int, body: bytes) -> None:
        if flags & wire.FLAG_ERROR:
            code, message = wire.decode_error(body)
            self._break(errors.error_from_status(code, message, self._endpoint, sent=True))
        elif flags & wire.FLAG_END:
            self._break(errors.Unavailable("stream ended by the member", 0, self._endpoint))
        elif self._responses.qsize() >= STREAM_BUFFER_MAX:
            self._break(errors.Unavailable("stream fell too far behind", 0, self._endpoint))
            self.cancel()
        else:
            try:
                response = wire.parse(self._method.response, body)
            except wire.FrameError as error:
                self._break(errors.Unavailable(str(error), 0, self._endpoint))
                return
            self._responses.put_nowait(cast(Resp, response))

    def _on_lost(self, reason: str) -> None:
        self._break(errors.Unavailable(f"stream broken: {reason}", 0, self._endpoint))

    def _break(self, error: errors.ClientError) -> None:
        if self._broken is None:
            self._broken = error
            if self._connection is not None:
                self._connection.streams.pop(self._id, None)
            self._responses.put_nowait(error)


class NativeTransport:
    """The `Transport` over Synod's native door."""

    def __init__(
        self, endpoints: str | Sequence[str], native_endpoints: Sequence[str] | None = None
    ) -> None:
        self._endpoints = parse_endpoints(endpoints)
        if native_endpoints is None:
            natives = [native_address(endpoint) for endpoint in self._endpoints]
        else:
            natives = [e.removeprefix("synod://") for e in parse_endpoints(native_endpoints)]
            if len(natives) != len(self._endpoints):
                raise ValueError("give one native endpoint per endpoint, in the same order")
        self._native = dict(zip(self._endpoints, natives, strict=True))
        self._index = 0
        self._ids = itertools.count(1)
        self._connections: dict[str, _Connection] = {}
        self._connecting: dict[str, asyncio.Future[_Connection]] = {}
        self._closed = False

    @property
    def endpoints(self) -> Sequence[str]:
        return tuple(self._endpoints)

    @property
    def current(self) -> str:
        return self._endpoints[self._index]

    def failover(self, failed: str) -> None:
        if self._endpoints[self._index] == failed:
            self._index = (self._index + 1) % len(self._endpoints)

    def _next_id(self) -> int:
        return next(self._ids)

    def _address(self, endpoint: str) -> str:
        native = self._native.get(endpoint)
        if native is not None:
            return native
        if endpoint in self._native.values():
            return endpoint
        return native_address(endpoint)

    async def _connect(self, endpoint: str, timeout_s: float) -> _Connection:
        """The open connection to `endpoint`, made (with a hello) if there is none."""
        connection = self._connections.get(endpoint)
        if connection is not None and connection.open:
            return connection
        if self._closed:
            raise errors.ClientClosed("transport closed")
        pending = self._connecting.get(endpoint)
        if pending is None:
            pending = asyncio.ensure_future(self._open(endpoint))
            self._connecting[endpoint] = pending
            pending.add_done_callback(lambda done: self._opened(endpoint, done))
        try:
            async with asyncio.timeout(max(0.001, min(timeout_s, CONNECT_TIMEOUT_S))):
                return await asyncio.shield(pending)
        except TimeoutError:
            raise errors.Unavailable(
                f"cannot connect to the native door {self._address(endpoint)}: timed out",
                errors.UNAVAILABLE,
                endpoint,
            ) from None

    def _opened(self, endpoint: str, done: asyncio.Future[_Connection]) -> None:
        self._connecting.pop(endpoint, None)
        if not done.cancelled():
            done.exception()  # retrieved: a failure every waiter gave up on is not logged

    async def _open(self, endpoint: str) -> _Connection:
        address = self._address(endpoint)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                host, port = _split(address)
                _, connection = await loop.create_connection(
                    lambda: _Connection(endpoint), host, port
                )
                hello = loop.create_future()
                connection.calls[0] = hello
                connection.send(0, wire.HELLO, 0, wire.HELLO_BODY)
                flags, body = await hello
        except (OSError, TimeoutError, errors.ClientError) as error:
            raise errors.Unavailable(
                f"cannot connect to the native door {address}: {error}",
                errors.UNAVAILABLE,
                endpoint,
            ) from error
        if flags != 0 or body != wire.HELLO_BODY:
            connection.close()
            raise errors.Unavailable(
                f"{address} is not a Synod native door", errors.UNAVAILABLE, endpoint
            )
        if self._closed:
            connection.close()
            raise errors.ClientClosed("transport closed")
        self._connections[endpoint] = connection
        return connection

    async def probe(self, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
        """Whether any endpoint's native door answers a hello within `timeout_s`."""
        attempts = [asyncio.ensure_future(self._connect(e, timeout_s)) for e in self._endpoints]
        try:
            for attempt in asyncio.as_completed(attempts):
                with contextlib.suppress(errors.ClientError):
                    await attempt
                    return True
            return False
        finally:
            for attempt in attempts:
                attempt.cancel()
            await asyncio.gather(*attempts, return_exceptions=True)

    async def call(
        self, method: str, request: Message, timeout_s: float, endpoint: str | None = None
    ) -> Message:
        spec = wire.METHODS_BY_NAME[method]
        assert not spec.streaming and isinstance(request, spec.request), (method, type(request))
        target = endpoint or self.current
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout_s, 0.001)
        connection = self._connections.get(target)
        if connection is None or not connection.open:
            connection = await self._connect(target, timeout_s)
        if not connection.open:  # lost while this call resumed: nothing was sent
            raise errors.Unavailable(str(connection.lost.result()), errors.UNAVAILABLE, target)
        request_id = self._next_id()
        future: asyncio.Future[tuple[int, bytes]] = loop.create_future()
        connection.calls[request_id] = future
        connection.send(request_id, spec.code, 0, request.SerializeToString())
        # One timer handle per call: asyncio.timeout_at costs an object, a reschedule and
        # an exit on every call, a fifth of this client's CPU per put.
        timer = loop.call_at(deadline, _expire, future)
        try:
            flags, body = await future
        except TimeoutError:
            if connection.calls.pop(request_id, None) is not None and connection.open:
                connection.send(request_id, spec.code, wire.FLAG_END, b"")
            raise errors.error_from_status(
                errors.DEADLINE_EXCEEDED, "deadline exceeded", target, sent=True
            ) from None
        except asyncio.CancelledError:
            if connection.calls.pop(request_id, None) is not None and connection.open:
                connection.send(request_id, spec.code, wire.FLAG_END, b"")
            raise
        finally:
            timer.cancel()
        if flags & wire.FLAG_ERROR:
            code, message = wire.decode_error(body)
            raise errors.error_from_status(code, message, target, sent=True)
        try:
            return wire.parse(spec.response, body)
        except wire.FrameError as error:
            connection.close()
            raise errors.OutcomeUnknown(str(error), errors.UNKNOWN, target) from error

    def watch(
        self, endpoint: str | None = None
    ) -> NativeStream[rpc_pb2.WatchRequest, rpc_pb2.WatchResponse]:
        return NativeStream(self, endpoint or self.current, wire.METHODS_BY_NAME["Watch"])

    def keep_alive(
        self, endpoint: str | None = None
    ) -> NativeStream[rpc_pb2.LeaseKeepAliveRequest, rpc_pb2.LeaseKeepAliveResponse]:
        return NativeStream(self, endpoint or self.current, wire.METHODS_BY_NAME["LeaseKeepAlive"])

    def snapshot(
        self, endpoint: str | None = None
    ) -> NativeStream[rpc_pb2.SnapshotRequest, rpc_pb2.SnapshotResponse]:
        return NativeStream(self, endpoint or self.current, wire.METHODS_BY_NAME["Snapshot"])

    async def close(self) -> None:
        self._closed = True
        for pending in list(self._connecting.values()):
            pending.cancel()
        connections, self._connections = self._connections, {}
        for connection in connections.values():
            connection.close()


class _DeferredStream(Generic[Req, Resp]):
    """A stream asked of an undecided `AutoTransport`: opened on the chosen transport at
    its first send."""

    def __init__(self, auto: AutoTransport, kind: str, endpoint: str | None) -> None:
        self._auto = auto
        self._kind = kind
        self._endpoint = endpoint or auto.current
        self._inner: Stream[Req, Resp] | None = None
        self._cancelled = False

    @property
    def endpoint(self) -> str:
        return self._endpoint

    async def _stream(self) -> Stream[Req, Resp]:
        if self._inner is None:
            chosen = await self._auto.decide()
            if self._cancelled:
                raise errors.Cancelled("stream cancelled", errors.CANCELLED, self._endpoint)
            openers = {
                "watch": chosen.watch,
                "keep_alive": chosen.keep_alive,
                "snapshot": chosen.snapshot,
            }
            self._inner = cast("Stream[Req, Resp]", openers[self._kind](self._endpoint))
        return self._inner

    async def send(self, request: Req) -> None:
        await (await self._stream()).send(request)

    async def receive(self) -> Resp:
        return await (await self._stream()).receive()

    def cancel(self) -> None:
        self._cancelled = True
        if self._inner is not None:
            self._inner.cancel()


class AutoTransport:
    """Synod's native door where the members have one, else etcd's gRPC API.

    Until decided, each call first sends a hello to every endpoint's native door
    (PROBE_TIMEOUT_S): an answer settles on the native transport; otherwise the call goes
    over gRPC, and its success settles on gRPC (a member answered, without a native door).
    So a client started while the whole cluster is down does not settle on gRPC."""

    def __init__(
        self, endpoints: str | Sequence[str], native_endpoints: Sequence[str] | None = None
    ) -> None:
        self._native = NativeTransport(endpoints, native_endpoints)
        self._grpc = GrpcTransport(endpoints)
        self._chosen: Transport | None = None
        self._lock: asyncio.Lock | None = None

    @property
    def chosen(self) -> str | None:
        """'native' or 'grpc' once decided."""
        if self._chosen is None:
            return None
        return "native" if self._chosen is self._native else "grpc"

    async def decide(self) -> Transport:
        """The transport to use now: the settled one, else native if it answers a probe
        (then settled), else gRPC for this call only."""
        if self._chosen is not None:
            return self._chosen
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._chosen is None and await self._native.probe():
                self._chosen = self._native
        return self._chosen or self._grpc

    def _settle_on_grpc(self) -> None:
        if self._chosen is None:
            self._chosen = self._grpc

    @property
    def endpoints(self) -> Sequence[str]:
        return self._native.endpoints

    @property
    def current(self) -> str:
        return (self._chosen or self._native).current

    def failover(self, failed: str) -> None:
        # both keep the same endpoint list and index until one is chosen
        self._native.failover(failed)
        self._grpc.failover(failed)

    async def call(
        self, method: str, request: Message, timeout_s: float, endpoint: str | None = None
    ) -> Message:
        chosen = await self.decide()
        response = await chosen.call(method, request, timeout_s, endpoint)
        if chosen is self._grpc:
            self._settle_on_grpc()
        return response

    def watch(
        self, endpoint: str | None = None
    ) -> Stream[rpc_pb2.WatchRequest, rpc_pb2.WatchResponse]:
        if self._chosen is not None:
            return self._chosen.watch(endpoint)
        return _DeferredStream(self, "watch", endpoint)

    def keep_alive(
        self, endpoint: str | None = None
    ) -> Stream[rpc_pb2.LeaseKeepAliveRequest, rpc_pb2.LeaseKeepAliveResponse]:
        if self._chosen is not None:
            return self._chosen.keep_alive(endpoint)
        return _DeferredStream(self, "keep_alive", endpoint)

    def snapshot(
        self, endpoint: str | None = None
    ) -> Stream[rpc_pb2.SnapshotRequest, rpc_pb2.SnapshotResponse]:
        if self._chosen is not None:
            return self._chosen.snapshot(endpoint)
        return _DeferredStream(self, "snapshot", endpoint)

    async def close(self) -> None:
        await self._native.close()
        await self._grpc.close()


TRANSPORT_KINDS = ("auto", "native", "grpc")


def make_transport(
    kind: str, endpoints: str | Sequence[str], native_endpoints: Sequence[str] | None = None
) -> Transport:
    """The transport named `kind`: 'native', 'grpc' or 'auto' (native if the members
    answer on their native door, else gRPC)."""
    if kind == "native":
        return NativeTransport(endpoints, native_endpoints)
    if kind == "grpc":
        return GrpcTransport(endpoints)
    if kind == "auto":
        return AutoTransport(endpoints, native_endpoints)
    raise ValueError(f"transport must be one of {', '.join(TRANSPORT_KINDS)}, not {kind!r}")
