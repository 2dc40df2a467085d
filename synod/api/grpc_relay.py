"""A gRPC worker: a process beside its member that serves the etcd gRPC API for it.

grpc.aio costs about 150 µs of CPU per call, more than a member spends on a whole
replicated put, and inside the member it runs on the event loop that drives consensus.
A worker takes that cost to a process of its own (the member's front door splices gRPC
connections to it):

- the unary calls the native door serves (KV, lease grant/revoke/ttl/leases, cluster,
  status, alarm, hash, move-leader) are relayed as bytes over one native connection to the
  member: the gRPC request is the frame's body and the frame's answer is the gRPC response,
  nothing is parsed here. An error frame becomes the same gRPC status and etcd message the
  member's own gRPC server would give;
- the Watch and LeaseKeepAlive streams are relayed the same way, on native streams (a
  watch event reaches the worker as the bytes of its response); a watch whose client
  requires a leader (etcd's `hasleader` metadata) is opened as one, so that the member
  refuses or ends it without a leader, as etcd does;
- every other method (Snapshot, Defragment, Lock, Election) is proxied to the member's
  in-process gRPC server, with its metadata and deadline.

A relayed call whose client goes away or whose deadline passes is cancelled at the member
(an end frame), as the native door's own clients do. The worker exits when its member
does: its stdin is a pipe only the member holds.

    python -m synod.api.grpc_relay --native 127.0.0.1:2381 --member-grpc 127.0.0.1:PORT
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import signal
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any, NoReturn, cast

import grpc
from grpc import aio

from synod.api.grpc_server import (
    SEND_BYTES_MAX,
    STATUS_OF_CODE,
    build_server,
    requires_leader,
)
from synod.api.native import STREAMS_MAX
from synod.api.proto import native_wire as wire
from synod.api.proto.etcdserverpb import rpc_pb2
from synod.api.proto.v3electionpb import v3election_pb2
from synod.api.proto.v3lockpb import v3lock_pb2

log = logging.getLogger(__name__)

READY_PREFIX = "listening "  # the line a worker prints once it serves: "listening HOST:PORT"
CONNECT_TIMEOUT_S = 2.0
_UNAVAILABLE = int(grpc.StatusCode.UNAVAILABLE.value[0])
STREAM_BUFFER_MAX = 100_000  # responses held for a gRPC client that does not read
# A response as large as the member's own gRPC server would send (a big Range), not the
# native client's 64 MiB: one over the limit would break the link for every call on it.
RESPONSE_BYTES_MAX = SEND_BYTES_MAX
_HALF_CLOSED = -1  # put in a relayed stream's inbox when its gRPC client half-closed
STREAMS_PER_LINK = STREAMS_MAX // 2  # streams on one native connection, under its limit
_PROTO_FILES = (rpc_pb2.DESCRIPTOR, v3lock_pb2.DESCRIPTOR, v3election_pb2.DESCRIPTOR)
# Metadata grpc sets itself on every call; forwarding it would duplicate it.
_OWN_METADATA = ("user-agent", "grpc-")


_Inbox = asyncio.Queue[tuple[int, bytes]]


class MemberLost(Exception):
    """The native connection to the member broke; the call's outcome is unknown."""


class _NativeLink(asyncio.Protocol):
    """The worker's connection to its member's native door: raw frames, one future each."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.calls: dict[int, asyncio.Future[tuple[int, bytes]]] = {}
        self.streams: dict[int, tuple[int, _Inbox]] = {}  # id → (method, inbox)
        self.lost = False
        self.loop = asyncio.get_running_loop()
        self._frames = wire.FrameSender(self._write)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        wire.no_delay(transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        try:
            frames = wire.decode_frames(self.buffer, RESPONSE_BYTES_MAX)
        except wire.FrameError as error:
            log.error("gRPC worker: bad frame from the member: %s", error)
            self.close()
            return
        for request_id, _, flags, body in frames:
            future = self.calls.pop(request_id, None)
            if future is not None:
                if not future.done():
                    future.set_result((flags, body))
                continue
            stream = self.streams.get(request_id)
            if stream is None:
                continue
            method, inbox = stream
            if flags & wire.FLAG_END:
                del self.streams[request_id]
            elif inbox.qsize() >= STREAM_BUFFER_MAX:  # its client stopped reading
                del self.streams[request_id]
                self.send(request_id, method, wire.FLAG_END, b"")
                flags = wire.FLAG_END | wire.FLAG_ERROR
                body = wire.encode_error(_UNAVAILABLE, "stream fell too far behind")
            inbox.put_nowait((flags, body))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        calls, self.calls = self.calls, {}
        for future in calls.values():
            if not future.done():
                future.set_exception(MemberLost(f"connection to the member lost: {exc}"))
        streams, self.streams = self.streams, {}
        ended = wire.encode_error(_UNAVAILABLE, f"connection to the member lost: {exc}")
        for _, inbox in streams.values():
            inbox.put_nowait((wire.FLAG_END | wire.FLAG_ERROR, ended))

    def send(self, request_id: int, method: int, flags: int, body: bytes) -> None:
        """Queue one frame; frames queued in one loop iteration leave in one write."""
        self._frames.send(request_id, method, flags, body)

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.lost:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class NativeRelay:
    """Relays calls to the member's native door: unary calls over one connection, streams
    over as many as keep each under the door's per-connection stream limit. A broken
    connection is reopened when next needed."""

    def __init__(self, native_address: str) -> None:
        host, _, port = native_address.rpartition(":")
        self._host = host.strip("[]") or "127.0.0.1"
        self._port = int(port)
        self._ids = itertools.count(1)
        self._link: _NativeLink | None = None
        self._opening: asyncio.Future[_NativeLink] | None = None
        self._stream_links: list[_NativeLink] = []
        self._stream_opening = asyncio.Lock()

    async def _connected(self) -> _NativeLink:
        link = self._link
        if link is not None and not link.lost:
            return link
        if self._opening is None:
            self._opening = asyncio.ensure_future(self._open())
        opening = self._opening
        try:
            self._link = await asyncio.shield(opening)
            return self._link
        finally:
            if opening.done() and self._opening is opening:
                self._opening = None

    async def _open(self) -> _NativeLink:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                _, link = await loop.create_connection(_NativeLink, self._host, self._port)
                hello = loop.create_future()
                link.calls[0] = hello
                link.send(0, wire.HELLO, 0, wire.HELLO_BODY)
                flags, body = await hello
        except (OSError, TimeoutError, MemberLost) as error:
            raise MemberLost(f"cannot reach the member's native door: {error}") from error
        if flags != 0 or body != wire.HELLO_BODY:
            link.close()
            raise MemberLost("the member's native door answered the hello wrongly")
        return link

    async def call(self, method: int, body: bytes) -> tuple[int, bytes]:
        """(flags, body) of the member's answer; cancelling the call cancels it there."""
        link = self._link
        if link is None or link.lost:
            link = await self._connected()
        request_id = next(self._ids)
        future: asyncio.Future[tuple[int, bytes]] = link.loop.create_future()
        link.calls[request_id] = future
        link.send(request_id, method, 0, body)
        try:
            return await future
        except asyncio.CancelledError:
            if link.calls.pop(request_id, None) is not None and not link.lost:
                link.send(request_id, method, wire.FLAG_END, b"")
            raise

    async def open_stream(self, method: int) -> tuple[_NativeLink, int, _Inbox]:
        """A new stream: its link, its id, and where its frames arrive ((flags, body)
        each, the last with FLAG_END). It opens at the member with its first frame."""
        async with self._stream_opening:
            self._stream_links = [link for link in self._stream_links if not link.lost]
            link = next((x for x in self._stream_links if len(x.streams) < STREAMS_PER_LINK), None)
            if link is None:
                link = await self._open()
                self._stream_links.append(link)
        stream_id = next(self._ids)
        inbox: _Inbox = asyncio.Queue()
        link.streams[stream_id] = (method, inbox)
        return link, stream_id, inbox

    def close(self) -> None:
        for link in [self._link, *self._stream_links]:
            if link is not None:
                link.close()


def _forwarded_metadata(context: aio.ServicerContext) -> tuple[tuple[str, str | bytes], ...]:
    return tuple(
        (key, value)
        for key, value in context.invocation_metadata() or ()
        if not key.startswith(":") and not key.startswith(_OWN_METADATA)
    )


def _relayed(relay: NativeRelay, code: int) -> grpc.RpcMethodHandler:
    async def unary(request: bytes, context: aio.ServicerContext) -> bytes:
        try:
            flags, body = await relay.call(code, request)
        except MemberLost as error:
            await _abort(context, grpc.StatusCode.UNAVAILABLE, str(error))
        if flags & wire.FLAG_ERROR:
            await _abort_as_frame(context, body)
        return body

    return grpc.unary_unary_rpc_method_handler(unary)


def _relayed_stream(relay: NativeRelay, method: wire.Method) -> grpc.RpcMethodHandler:
    """A stream (Watch, LeaseKeepAlive) relayed on a native stream.

    A watch requires a leader only when its client says so (etcd's `hasleader` metadata);
    it keeps sending after the client half-closes, as etcd's does. A keep-alive stream
    ends once the requests sent before the half-close are answered, as etcd's does."""
    ends_with_requests = method.name == "LeaseKeepAlive"

    async def stream(requests: Any, context: aio.ServicerContext) -> AsyncIterator[bytes]:
        first_flags = 0
        if method.name == "Watch" and not requires_leader(context):
            first_flags = wire.FLAG_LEADERLESS_OK
        try:
            link, stream_id, inbox = await relay.open_stream(method.code)
        except MemberLost as error:
            await _abort(context, grpc.StatusCode.UNAVAILABLE, str(error))
        sent = 0

        async def pump() -> None:
            nonlocal sent
            async for request in requests:
                if link.lost or stream_id not in link.streams:
                    return
                link.send(stream_id, method.code, first_flags if sent == 0 else 0, request)
                sent += 1
            inbox.put_nowait((_HALF_CLOSED, b""))

        reader = asyncio.create_task(pump())
        answered = 0
        half_closed = False
        try:
            while True:
                flags, body = await inbox.get()
                if flags == _HALF_CLOSED:
                    half_closed = True
                else:
                    if flags & wire.FLAG_ERROR:
                        await _abort_as_frame(context, body)
                    if flags & wire.FLAG_END:
                        return
                    yield body
                    answered += 1
                if ends_with_requests and half_closed and answered >= sent:
                    return
        finally:
            reader.cancel()
            if link.streams.pop(stream_id, None) is not None and not link.lost:
                link.send(stream_id, method.code, wire.FLAG_END, b"")

    return grpc.stream_stream_rpc_method_handler(stream)


async def _abort(context: aio.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    await context.abort(code, message)
    raise AssertionError("abort returns only by raising")


async def _abort_as_frame(context: aio.ServicerContext, body: bytes) -> NoReturn:
    """End the call with the status and etcd message of the member's error frame."""
    status, message = wire.decode_error(body)
    await _abort(context, STATUS_OF_CODE.get(status, grpc.StatusCode.UNKNOWN), message)


async def _abort_as(context: aio.ServicerContext, error: aio.AioRpcError) -> NoReturn:
    trailing = tuple(error.trailing_metadata() or ())  # aio's Metadata; abort takes tuples
    await context.abort(error.code(), error.details() or "", trailing)
    raise AssertionError("abort returns only by raising")


_HANDLER_OF_SHAPE = {  # (client streams, server streams) → grpc's handler constructor
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def _proxied(channel: aio.Channel, path: str, streams_in: bool, streams_out: bool) -> Any:
    """A handler that passes one method's calls (a request, or the request iterator) to
    the member's own gRPC server, with the call's metadata and deadline."""
    shape = (streams_in, streams_out)
    multicallable: Any = {
        (False, False): channel.unary_unary,
        (False, True): channel.unary_stream,
        (True, False): channel.stream_unary,
        (True, True): channel.stream_stream,
    }[shape](path)

    def start(requests: Any, context: aio.ServicerContext) -> Any:
        metadata = _forwarded_metadata(context)
        return multicallable(requests, metadata=metadata, timeout=context.time_remaining())

    async def one(requests: Any, context: aio.ServicerContext) -> bytes:
        try:
            response: bytes = await start(requests, context)
        except aio.AioRpcError as error:
            await _abort_as(context, error)
        return response

    # grpc.aio tells a streaming handler by it being an async generator function
    async def many(requests: Any, context: aio.ServicerContext) -> AsyncIterator[bytes]:
        call = start(requests, context)
        try:
            async for response in call:
                yield response
        except aio.AioRpcError as error:
            await _abort_as(context, error)
        finally:
            call.cancel()

    return _HANDLER_OF_SHAPE[shape](many if streams_out else one)


def method_handlers(
    relay: NativeRelay, channel: aio.Channel
) -> dict[str, dict[str, grpc.RpcMethodHandler]]:
    """Service name → method name → handler, for every service of the etcd API: the
    native door's unary methods relayed, the rest proxied."""
    services: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
    for proto_file in _PROTO_FILES:
        for service in proto_file.services_by_name.values():
            handlers: dict[str, grpc.RpcMethodHandler] = {}
            for method in service.methods:
                native = wire.METHODS_BY_NAME.get(method.name)
                streams_in = method.client_streaming
                streams_out = method.server_streaming
                if native is not None and not native.streaming:
                    handlers[method.name] = _relayed(relay, native.code)
                elif native is not None and streams_in and streams_out:
                    handlers[method.name] = _relayed_stream(relay, native)
                else:
                    path = f"/{service.full_name}/{method.name}"
                    handlers[method.name] = _proxied(channel, path, streams_in, streams_out)
            services[service.full_name] = handlers
    return services


async def serve(
    native_address: str, member_grpc: str, listen: str, ready: Callable[[str], None]
) -> None:
    """Serve until stdin closes (the member exited or stopped this worker)."""
    relay = NativeRelay(native_address)
    channel = aio.insecure_channel(
        member_grpc,
        options=[
            ("grpc.max_receive_message_length", -1),
            ("grpc.max_send_message_length", -1),
        ],
    )
    server = build_server()
    for name, handlers in method_handlers(relay, channel).items():
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
    port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"gRPC worker cannot listen on {listen}")
    await server.start()
    ready(f"{listen.rpartition(':')[0]}:{port}")
    member_gone = asyncio.Event()
    loop = asyncio.get_running_loop()

    class _Stdin(asyncio.Protocol):
        def connection_lost(self, exc: Exception | None) -> None:
            member_gone.set()

    await loop.connect_read_pipe(_Stdin, sys.stdin)
    await member_gone.wait()
    await server.stop(0.2)
    relay.close()
    await channel.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Synod's gRPC worker (started by a member)")
    parser.add_argument("--native", required=True, help="the member's native door host:port")
    parser.add_argument("--member-grpc", required=True, help="the member's own gRPC server")
    parser.add_argument("--listen", default="127.0.0.1:0", help="host:port to serve gRPC on")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s grpc-worker %(levelname)s: %(message)s"
    )

    def ready(address: str) -> None:
        print(READY_PREFIX + address, flush=True)

    # Ctrl-C in a terminal reaches the whole process group: the member stops, then closes
    # our stdin; ending first would cut the calls it is still answering.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    import uvloop

    uvloop.run(serve(args.native, args.member_grpc, args.listen, ready))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
