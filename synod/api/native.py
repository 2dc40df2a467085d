"""Synod's native door: etcd's protobuf messages in length-prefixed frames over plain TCP,
many requests in flight on one connection, answered as they complete.

The frame layout and method codes live in synod.api.proto.native_wire (shared with the
client). This module owns the server side and keeps these rules:

- Every request reaches the same `Handlers` as the gRPC door and gets the same answers:
  a response frame, or an error frame with the gRPC code and etcd's message.
- A connection is an asyncio Protocol: bytes are decoded from one bytearray, each unary
  request runs as a task (a put, the hot path, as two plain calls around the member's
  future: `Handlers.put_begin` / `put_end`), and response frames produced in one loop
  iteration leave in one `transport.write`.
- Everything a client can make the server hold is bounded: a frame's size, requests in
  flight per connection (frames beyond IN_FLIGHT_MAX wait, undecoded work and unread bytes,
  and reading resumes when half are done), streams per
  connection, and a slow reader (reading pauses while the send buffer is full; a watch
  stream that falls too far behind is ended by its session).
- A connection that breaks the protocol (a frame too large, an unknown method or flag,
  a body that does not decode, an id in use) is closed with one log line naming the peer
  and the fault; no other connection notices.
- Watch streams require a leader, as etcd's clients ask with `hasleader`: refused without
  one, ended after NO_LEADER_CHECKS_MAX election timeouts in a row without one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

from google.protobuf.message import Message

from synod.api.errors import NO_LEADER, EtcdError, StatusCode
from synod.api.handlers import Handlers, WatchSession
from synod.api.proto import native_wire as wire
from synod.api.proto.etcdserverpb import rpc_pb2

log = logging.getLogger(__name__)

IN_FLIGHT_MAX = 1024  # requests being handled for one connection before reading pauses
STREAMS_MAX = 4096  # open streams on one connection
STREAM_QUEUE_MAX = 1024  # stream requests waiting for their turn, per stream
NO_LEADER_CHECKS_MAX = 3  # etcd's maxNoLeaderCnt

UnaryHandler = Callable[[Any], Awaitable[Message]]
# A unary call in two halves: begin (raise EtcdError to refuse) and end (the answer, or
# EtcdError, once the begun future is done).
SplitHandler = tuple[Callable[[Any], "asyncio.Future[Any]"], Callable[[Any], Message]]

_UNARY_HANDLERS = {
    "Range": "range",
    "Put": "put",
    "DeleteRange": "delete_range",
    "Txn": "txn",
    "Compact": "compact",
    "LeaseGrant": "lease_grant",
    "LeaseRevoke": "lease_revoke",
    "LeaseTimeToLive": "lease_time_to_live",
    "LeaseLeases": "lease_leases",
    "MemberList": "member_list",
    "MemberAdd": "member_add",
    "MemberRemove": "member_remove",
    "MemberUpdate": "member_update",
    "MemberPromote": "member_promote",
    "Status": "status",
    "Alarm": "alarm",
    "HashKV": "hash_kv",
    "Hash": "hash",
    "MoveLeader": "move_leader",
}
assert set(_UNARY_HANDLERS) == {m.name for m in wire.METHODS.values() if not m.streaming}


class _Stream:
    """One client stream (watch or keep-alive): its requests handled one at a time, in
    order, by a worker task; its responses sent as frames with the stream's id."""

    def __init__(
        self,
        connection: NativeConnection,
        stream_id: int,
        method: wire.Method,
        leader_required: bool = True,
    ) -> None:
        self.connection = connection
        self.id = stream_id
        self.method = method
        self.leader_required = leader_required
        self.requests: asyncio.Queue[Message | None] = asyncio.Queue(STREAM_QUEUE_MAX)
        self.tasks: list[asyncio.Task[None]] = []
        self.session: WatchSession[bytes] | None = None
        self.ended = False

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        handlers = self.connection.door.handlers
        if self.method.name == "Watch":
            if self.leader_required and not handlers.has_leader():
                self.end(EtcdError(StatusCode.UNAVAILABLE, NO_LEADER))
                return
            self.session = handlers.open_serialized_watch()
            self.tasks.append(loop.create_task(self._pump_watch(self.session)))
            if self.leader_required:
                self.tasks.append(loop.create_task(self._monitor_leader(self.session)))
        self.tasks.append(loop.create_task(self._work()))

    def feed(self, request: Message) -> bool:
        """Queue one request; False when the client overran the stream's queue."""
        if self.ended:
            return True  # the stream ended on our side; late requests are dropped
        try:
            self.requests.put_nowait(request)
        except asyncio.QueueFull:
            return False
        return True

    async def _work(self) -> None:
        handlers = self.connection.door.handlers
        while True:
            request = await self.requests.get()
            if request is None:
                return
            if self.session is not None:
                assert isinstance(request, rpc_pb2.WatchRequest)
                await self.session.handle(request)
                continue
            if isinstance(request, rpc_pb2.SnapshotRequest):
                await self._send_snapshot(request)
                return
            assert isinstance(request, rpc_pb2.LeaseKeepAliveRequest)
            try:
                response = await handlers.lease_keep_alive(request)
            except EtcdError as error:
                self.end(error)
                return
            self.connection.send(self.id, self.method.code, 0, response.SerializeToString())

    async def _send_snapshot(self, request: rpc_pb2.SnapshotRequest) -> None:
        """A server stream: every chunk (paced by the client's reading), then the end."""
        connection = self.connection
        try:
            async for chunk in connection.door.handlers.snapshot(request):
                if not connection.writable.is_set():
                    await connection.writable.wait()
                if self.ended:
                    return
                connection.send(self.id, self.method.code, 0, chunk.SerializeToString())
        except EtcdError as error:
            self.end(error)
            return
        self.end(None)

    async def _pump_watch(self, session: WatchSession[bytes]) -> None:
        connection = self.connection
        try:
            async for response in session.responses():
                if not connection.writable.is_set():
                    await connection.writable.wait()
                connection.send(self.id, self.method.code, 0, response)
        except EtcdError as error:
            self.end(error)
            return
        self.end(None)

    async def _monitor_leader(self, session: WatchSession[bytes]) -> None:
        """etcd's monitorLeader: end the stream once the member is leaderless for long."""
        handlers = self.connection.door.handlers
        leaderless = 0
        while leaderless < NO_LEADER_CHECKS_MAX:
            await asyncio.sleep(handlers.election_timeout_s)
            leaderless = 0 if handlers.has_leader() else leaderless + 1
        session.close(EtcdError(StatusCode.UNAVAILABLE, NO_LEADER))

    def end(self, error: EtcdError | None) -> None:
        """End from the server's side: the last frame (FLAG_END, with the error if any)."""
        if self.ended:
            return
        if error is None:
            self.connection.send(self.id, self.method.code, wire.FLAG_END, b"")
        else:
            body = wire.encode_error(int(error.code), error.message)
            self.connection.send(self.id, self.method.code, wire.FLAG_END | wire.FLAG_ERROR, body)
        self.close()

    def close(self) -> None:
        """Release everything the stream holds (no frame is sent)."""
        if self.ended:
            return
        self.ended = True
        self.connection.streams.pop(self.id, None)
        if self.session is not None:
            self.session.close()
        current = asyncio.current_task()
        for task in self.tasks:
            if task is not current:
                task.cancel()


class NativeConnection(asyncio.Protocol):
    """One client connection of the native door."""

    def __init__(self, door: NativeDoor) -> None:
        self.door = door
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.buffer = bytearray()
        self.waiting: collections.deque[tuple[int, int, int, bytes]] = collections.deque()
        self.calls: dict[int, asyncio.Future[Any]] = {}
        self.streams: dict[int, _Stream] = {}
        self.writable = asyncio.Event()
        self.writable.set()
        self._frames = wire.FrameSender(self._write)
        self._reading_paused = False
        self._closed = False
        self._loop = asyncio.get_running_loop()

    # ------------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.door.connections.add(self)
        self.door.connections_accepted += 1
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        wire.no_delay(transport)

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        self.buffer += data
        try:
            self.waiting.extend(wire.decode_frames(self.buffer, wire.SERVER_FRAME_BYTES_MAX))
        except wire.FrameError as error:
            self.refuse(str(error))
            return
        self._drain()

    def _drain(self) -> None:
        """Handle the frames read so far while fewer than IN_FLIGHT_MAX calls run; the rest
        wait here (reading pauses) until calls finish."""
        try:
            while self.waiting and len(self.calls) < IN_FLIGHT_MAX and not self._closed:
                self._on_frame(*self.waiting.popleft())
        except wire.FrameError as error:
            self.refuse(str(error))
            return
        self._pace()

    def eof_received(self) -> bool:
        return False  # the client is done sending: close once our side is written

    def pause_writing(self) -> None:
        self.writable.clear()
        self._pace()

    def resume_writing(self) -> None:
        self.writable.set()
        self._pace()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.door.connections.discard(self)
        self.waiting.clear()
        for task in list(self.calls.values()):
            task.cancel()
        self.calls.clear()
        for stream in list(self.streams.values()):
            stream.close()
        self.writable.set()  # wake pumps so they see their stream closed

    # ------------------------------------------------------------------ requests

    def _on_frame(self, request_id: int, code: int, flags: int, body: bytes) -> None:
        if code == wire.HELLO:
            self.send(request_id, wire.HELLO, 0, wire.HELLO_BODY)
            return
        method = wire.METHODS.get(code)
        if method is None:
            raise wire.FrameError(f"unknown method {code}")
        if flags & wire.FLAG_ERROR:
            raise wire.FrameError("a client frame with the error flag")
        if flags & wire.FLAG_END:
            self._end(request_id)
            return
        request = wire.parse(method.request, body)
        if method.streaming:
            self._stream_request(request_id, method, request, flags)
            return
        if request_id in self.calls or request_id in self.streams:
            raise wire.FrameError(f"request id {request_id} already in use")
        split = self.door.split.get(code)
        if split is not None:
            self._begin(request_id, method, split, request)
            return
        handler = self.door.unary[code]
        self.calls[request_id] = self._loop.create_task(
            self._unary(request_id, method, handler, request)
        )

    def _begin(
        self, request_id: int, method: wire.Method, split: SplitHandler, request: Message
    ) -> None:
        begin, end = split
        try:
            outcome = begin(request)
        except EtcdError as error:
            body = _error_frame(method, error)
            self.send(request_id, method.code, wire.FLAG_END | wire.FLAG_ERROR, body)
            return
        self.calls[request_id] = outcome
        outcome.add_done_callback(lambda done: self._finish(request_id, method, end, done))

    def _finish(
        self,
        request_id: int,
        method: wire.Method,
        end: Callable[[Any], Message],
        outcome: asyncio.Future[Any],
    ) -> None:
        if self.calls.get(request_id) is outcome:
            del self.calls[request_id]
        if outcome.cancelled():
            return
        try:
            body = end(outcome).SerializeToString()
            flags = 0
        except Exception as error:
            body, flags = _error_frame(method, error), wire.FLAG_END | wire.FLAG_ERROR
        self.send(request_id, method.code, flags, body)
        self._drain()

    def _stream_request(
        self, stream_id: int, method: wire.Method, request: Message, flags: int
    ) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            if stream_id in self.calls:
                raise wire.FrameError(f"request id {stream_id} already in use")
            if len(self.streams) >= STREAMS_MAX:
                raise wire.FrameError(f"more than {STREAMS_MAX} streams")
            leader_required = not flags & wire.FLAG_LEADERLESS_OK
            stream = _Stream(self, stream_id, method, leader_required)
            self.streams[stream_id] = stream
            stream.start()
        elif stream.method is not method:
            raise wire.FrameError(f"stream {stream_id} is a {stream.method.name} stream")
        if not stream.feed(request):
            raise wire.FrameError(f"stream {stream_id} sent more than {STREAM_QUEUE_MAX} ahead")

    def _end(self, request_id: int) -> None:
        """The client closed its stream or gave up on its call."""
        stream = self.streams.get(request_id)
        if stream is not None:
            stream.close()
            return
        task = self.calls.pop(request_id, None)
        if task is not None:
            task.cancel()

    async def _unary(
        self, request_id: int, method: wire.Method, handler: UnaryHandler, request: Message
    ) -> None:
        try:
            response = await handler(request)
            body = response.SerializeToString()
            flags = 0
        except asyncio.CancelledError:
            return
        except Exception as error:
            body, flags = _error_frame(method, error), wire.FLAG_END | wire.FLAG_ERROR
        finally:
            if self.calls.get(request_id) is asyncio.current_task():
                del self.calls[request_id]
        self.send(request_id, method.code, flags, body)
        self._drain()

    # ------------------------------------------------------------------ output

    def send(self, request_id: int, method: int, flags: int, body: bytes) -> None:
        """Send one frame (see `wire.FrameSender`: the first of a loop turn at once, the
        rest of that turn together)."""
        if not self._closed:
            self._frames.send(request_id, method, flags, body)

    def _write(self, data: bytes) -> None:
        if not self._closed and self.transport is not None:
            self.transport.write(data)

    def _pace(self) -> None:
        """Stop reading while too many requests are in flight or the client does not read."""
        if self._closed or self.transport is None:
            return
        busy = bool(self.waiting) or not self.writable.is_set()
        if busy and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()
        elif self._reading_paused and not busy and len(self.calls) <= IN_FLIGHT_MAX // 2:
            self._reading_paused = False
            self.transport.resume_reading()

    def refuse(self, reason: str) -> None:
        """Close this connection for a protocol fault of the client's."""
        if self._closed:
            return
        log.warning("native door: closing connection from %s: %s", self.peer, reason)
        self.door.connections_refused += 1
        self._closed = True
        if self.transport is not None:
            self.transport.close()


def _error_frame(method: wire.Method, error: Exception) -> bytes:
    """The body of the error frame answering a failed call: etcd's code and message, or an
    internal error (logged with its traceback: call from the `except` that caught it)."""
    if isinstance(error, EtcdError):
        return wire.encode_error(int(error.code), error.message)
    log.exception("native door: %s failed", method.name)
    return wire.encode_error(int(StatusCode.INTERNAL), f"synod: internal error: {error}")


class NativeDoor:
    """The native door's listener; `address` is where it listens (with the real port).
    `stop(grace)` matches synod.server.main's ClientDoor."""

    def __init__(self, handlers: Handlers) -> None:
        self.handlers = handlers
        self.unary: dict[int, UnaryHandler] = {
            method.code: getattr(handlers, _UNARY_HANDLERS[method.name])
            for method in wire.METHODS.values()
            if not method.streaming
        }
        self.split: dict[int, SplitHandler] = {
            wire.METHODS_BY_NAME["Put"].code: (handlers.put_begin, handlers.put_end),
        }
        self.address: tuple[str, int] = ("", 0)
        self.connections: set[NativeConnection] = set()
        self.connections_accepted = 0
        self.connections_refused = 0
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: NativeConnection(self), host or None, port, reuse_address=True
        )
        bound = self._server.sockets[0].getsockname()
        self.address = (bound[0], bound[1])

    async def stop(self, grace: float | None = None) -> None:
        """Stop listening and close every connection (calls in flight are cancelled)."""
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.close()
            connection.connection_lost(None)
        if self._server is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(grace or 1.0):
                    await self._server.wait_closed()
            self._server = None


async def start_native_door(handlers: Handlers, listen: tuple[str, int] | str) -> NativeDoor:
    """Serve the native door on `listen` ((host, port) or "host:port"; port 0: any free
    port, see `.address`)."""
    if isinstance(listen, str):
        host, _, port_text = listen.rpartition(":")
        listen = (host.strip("[]"), int(port_text))
    door = NativeDoor(handlers)
    await door.start(*listen)
    log.info("native door on %s:%d", *door.address)
    return door
