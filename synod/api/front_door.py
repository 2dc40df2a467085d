"""One client port for gRPC and the JSON gateway, as etcd serves both on 2379.

An asyncio server accepts every client connection and looks at its first bytes:

- the HTTP/2 connection preface (`PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n`, what every gRPC
  client sends first on a cleartext connection) → the connection is spliced, byte for byte
  with flow control both ways, to one of the member's gRPC worker processes
  (synod.api.grpc_workers) or, with none serving, to the grpc.aio server in this process
  listening on an internal address (`127.0.0.1:PORT` or `unix:/path`);
- anything else → the connection is handed, with the bytes already read, to the aiohttp
  application's own protocol in this process (no second hop): `transport.set_protocol`,
  `connection_made`, `data_received`. Garbage is answered by aiohttp with a 400 and closed.

The decision needs at most 24 bytes and usually 2 (`PO`ST, `GE`T differ from `PR`I). A
connection that sends no decisive bytes within `first_bytes_timeout` is closed. Failures
are per connection: a broken upstream closes the client connection that used it, nothing
else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web

if TYPE_CHECKING:
    from synod.api.handlers import Handlers
    from synod.api.metrics import SynodMetrics

log = logging.getLogger(__name__)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FIRST_BYTES_TIMEOUT_S = 10.0
UPSTREAM_CONNECT_TIMEOUT_S = 5.0
HTTP_SHUTDOWN_TIMEOUT_S = 1.0


class _Splice(asyncio.Protocol):
    """One direction's receiving end of a spliced pair: what arrives here is written to
    `peer`; when `peer`'s buffer is full this side stops reading."""

    def __init__(self, door: FrontDoor) -> None:
        self.door = door
        self.transport: asyncio.Transport | None = None
        self.peer: _Splice | None = None
        self._peer_paused_us = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.door._transports.add(self.transport)

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.transport.is_closing():
            peer.transport.write(data)

    def eof_received(self) -> bool:
        peer = self.peer
        if peer is not None and peer.transport is not None and peer.transport.can_write_eof():
            with contextlib.suppress(OSError, RuntimeError):
                peer.transport.write_eof()
            return True  # keep our sending half open until the peer closes too
        return False

    def pause_writing(self) -> None:
        # our transport's send buffer is full: stop reading from the peer
        if self.peer is not None and self.peer.transport is not None:
            with contextlib.suppress(RuntimeError):
                self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            with contextlib.suppress(RuntimeError):
                self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.door._transports.discard(self.transport)
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


class _Sniffer(asyncio.Protocol):
    """The protocol of a fresh client connection until its first bytes decide its door."""

    def __init__(self, door: FrontDoor) -> None:
        self.door = door
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.decided = False
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.door._transports.add(self.transport)
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.door.first_bytes_timeout, self._timed_out)

    def _timed_out(self) -> None:
        if not self.decided and self.transport is not None:
            log.debug("front door: no request within %.1fs, closing", self.door.first_bytes_timeout)
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.decided:  # bytes that arrive while the upstream connection is being made
            self.buffer += data
            return
        self.buffer += data
        head = self.buffer[: len(PREFACE)]
        if head == PREFACE:
            self._decide()
            self._to_grpc()
        elif not PREFACE.startswith(head):
            self._decide()
            self._to_http()

    def eof_received(self) -> bool:
        if not self.decided:
            self._decide()
            if self.buffer and not PREFACE.startswith(self.buffer):
                self._to_http()
                return True
            return False  # closes the connection
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.transport is not None:
            self.door._transports.discard(self.transport)
        self.decided = True

    def _decide(self) -> None:
        self.decided = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _to_http(self) -> None:
        transport = self.transport
        assert transport is not None
        self.door._transports.discard(transport)
        self.door.http_connections += 1
        protocol = self.door._http_protocol()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self.buffer:
            protocol.data_received(self.buffer)
        self.buffer = b""

    def _to_grpc(self) -> None:
        transport = self.transport
        assert transport is not None
        transport.pause_reading()
        self.door.grpc_connections += 1
        task = asyncio.get_running_loop().create_task(self._connect_upstream(transport))
        self.door._tasks.add(task)
        task.add_done_callback(self.door._tasks.discard)

    async def _connect_upstream(self, transport: asyncio.Transport) -> None:
        client = _Splice(self.door)
        upstream = _Splice(self.door)
        client.peer, upstream.peer = upstream, client
        # the server speaks first (its SETTINGS) as soon as it is connected, possibly
        # before this coroutine resumes: the client's transport must already be writable
        client.transport = transport
        try:
            async with asyncio.timeout(UPSTREAM_CONNECT_TIMEOUT_S):
                await self.door._open_upstream(lambda: upstream)
        except (OSError, TimeoutError) as error:
            log.warning(
                "front door: cannot reach the gRPC server %s: %s", self.door.grpc_target, error
            )
            transport.close()
            return
        if transport.is_closing():
            if upstream.transport is not None:
                upstream.transport.close()
            return
        transport.set_protocol(client)  # `client` already holds the transport
        assert upstream.transport is not None
        upstream.transport.write(self.buffer)
        self.buffer = b""
        transport.resume_reading()


class FrontDoor:
    """The client listener; `address` is where it listens (with the real port)."""

    def __init__(
        self,
        grpc_target: str,
        app: web.Application,
        first_bytes_timeout: float = FIRST_BYTES_TIMEOUT_S,
    ) -> None:
        self.grpc_target = grpc_target
        self.app = app
        self.first_bytes_timeout = first_bytes_timeout
        self.address: tuple[str, int] = ("", 0)
        # Where gRPC connections go first: synod.api.grpc_workers.GrpcWorkers.targets
        self.workers: Callable[[], list[str]] | None = None
        self.grpc_connections = 0
        self.http_connections = 0
        self._server: asyncio.Server | None = None
        self._runner = web.AppRunner(
            app,
            handler_cancellation=True,
            access_log=None,
            shutdown_timeout=HTTP_SHUTDOWN_TIMEOUT_S,
        )
        self._transports: set[asyncio.Transport] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    async def _start(self, listen: tuple[str, int]) -> None:
        await self._runner.setup()
        loop = asyncio.get_running_loop()
        host, port = listen
        try:
            self._server = await loop.create_server(
                lambda: _Sniffer(self), host or None, port, reuse_address=True
            )
        except BaseException:
            await self._runner.cleanup()
            raise
        sock = self._server.sockets[0]
        bound = sock.getsockname()
        self.address = (bound[0], bound[1])
        for s in self._server.sockets:
            with contextlib.suppress(OSError):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _http_protocol(self) -> asyncio.Protocol:
        server = self._runner.server
        assert server is not None
        protocol: Any = server()
        return protocol  # type: ignore[no-any-return]

    async def _open_upstream(self, factory: Any) -> None:
        """Connect `factory` to a gRPC worker that serves, or else to the member's own
        gRPC server (a worker that just died is skipped)."""
        workers = self.workers() if self.workers is not None else []
        for target in workers:
            try:
                await _connect(target, factory)
                return
            except OSError as error:
                log.info("front door: gRPC worker %s unreachable (%s); next", target, error)
        await _connect(self.grpc_target, factory)

    async def close(self) -> None:
        """Stop listening, close every connection, stop the HTTP handlers."""
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for transport in list(self._transports):
            transport.close()
        await self._runner.cleanup()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._server is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(HTTP_SHUTDOWN_TIMEOUT_S):
                    await self._server.wait_closed()

    async def stop(self, grace: float | None = None) -> None:
        """`close()` under the name synod.server.main's ClientDoor expects."""
        await self.close()


async def _connect(target: str, factory: Any) -> None:
    loop = asyncio.get_running_loop()
    if target.startswith("unix:"):
        path = target[len("unix:") :]
        if path.startswith("//"):
            path = path[2:]
        await loop.create_unix_connection(factory, path)
        return
    host, _, port = target.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    _, protocol = await loop.create_connection(factory, host, int(port))
    transport = protocol.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def start_front_door(
    listen: tuple[str, int],
    grpc_target: str,
    app: web.Application,
    *,
    first_bytes_timeout: float = FIRST_BYTES_TIMEOUT_S,
) -> FrontDoor:
    """Listen on `listen` (port 0: any free port, see `.address`), sending gRPC connections
    to `grpc_target` and serving everything else with `app`."""
    door = FrontDoor(grpc_target, app, first_bytes_timeout)
    await door._start(listen)
    return door


class EtcdClientPort:
    """Everything that serves etcd clients on one listen address: the front door, the
    internal grpc.aio server behind it and the JSON gateway in front of the handlers.
    `stop(grace)` matches synod.server.main's ClientDoor."""

    def __init__(self, door: FrontDoor, grpc_server: Any, metrics: SynodMetrics) -> None:
        self.door = door
        self.grpc_server = grpc_server
        self.metrics = metrics

    @property
    def address(self) -> tuple[str, int]:
        return self.door.address

    async def stop(self, grace: float | None = None) -> None:
        await self.door.close()
        await self.grpc_server.stop(grace)


async def start_etcd_client_port(
    handlers: Handlers,
    listen: tuple[str, int] | str,
    metrics: SynodMetrics | None = None,
    *,
    grpc_address: str = "127.0.0.1:0",
) -> EtcdClientPort:
    """The etcd API of a member on `listen` ((host, port) or "host:port"): gRPC and the
    JSON gateway on one port.

    gRPC is served by synod.api.grpc_server's servicers on `grpc_address` (an ephemeral
    loopback port by default, or `unix:/path`), reached only through the front door.
    `metrics` is the member's SynodMetrics (one per member, shared by its ports); without
    it one is made from the handlers' member and KV service (`.metrics` of the result).
    """
    from synod.api.gateway import VersionInfo, build_gateway
    from synod.api.grpc_server import BindError, add_servicers, build_server
    from synod.api.handlers import ETCD_CLUSTER_VERSION, ETCD_VERSION
    from synod.api.lock import ElectionService, LockService
    from synod.api.metrics import SynodMetrics, member_sampler

    if isinstance(listen, str):
        host, _, port_text = listen.rpartition(":")
        listen = (host.strip("[]"), int(port_text))
    if metrics is None:
        metrics = SynodMetrics(member_sampler(handlers.member, handlers.service))

    server = build_server()
    add_servicers(server, handlers)
    try:
        port = server.add_insecure_port(grpc_address)
    except RuntimeError as error:
        raise BindError(f"cannot listen on {grpc_address}: {error}") from error
    if port == 0:
        raise BindError(f"cannot listen on {grpc_address}")
    if grpc_address.startswith("unix:"):
        target = grpc_address
    else:
        target = f"{grpc_address.rpartition(':')[0] or '127.0.0.1'}:{port}"
    await server.start()
    member = handlers.member
    app = build_gateway(
        handlers,
        VersionInfo(ETCD_VERSION, ETCD_CLUSTER_VERSION),
        metrics,
        lock=LockService(handlers),
        election=ElectionService(handlers),
        has_leader=lambda: member.leader_id is not None,
    )
    try:
        door = await start_front_door(listen, target, app)
    except BaseException:
        await server.stop(None)
        raise
    log.info("etcd API (gRPC and JSON gateway) on %s:%d", *door.address)
    return EtcdClientPort(door, server, metrics)
