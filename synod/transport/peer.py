"""Persistent peer connections: one outgoing TCP connection per peer, batched frames.

Owns sockets and nothing else: it delivers what it is given and hands up what arrives; it
decides nothing. Messages queued for a peer during one event-loop iteration leave together
in one frame. A peer that is down costs a bounded queue (the oldest frames are dropped: the
protocol above tolerates loss) and a reconnect with exponential backoff. A connection that
sends an invalid frame is closed with a log line; nothing else is affected.

Each connection starts with a hello frame `[MAGIC, cluster_id, sender_id, advertised]`
(`advertised`: the sender's peer [host, port], or nil); a hello from another cluster is
refused. The advertised address lets the runtime answer a member it no longer addresses
(one that was removed while it was down).

The address book (`set_peers`) follows the replicated member table: peers are added,
re-addressed and removed while the transport runs. A member joining a running cluster knows
no cluster id yet: it opens a connection with `[JOIN_MAGIC, its peer URL]` instead of a
hello, is answered with one frame (`on_join_query`'s value), and the connection closes
(`query_cluster`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from synod.transport.codec import (
    FRAME_HEADER,
    WireError,
    decode_payload,
    encode_frame,
    frame_length,
)

log = logging.getLogger(__name__)

MAGIC = "synod-peer-1"
JOIN_MAGIC = "synod-join-1"
JOIN_QUERY_TIMEOUT_S = 5.0
QUEUED_FRAMES_MAX = 1024
BACKOFF_S_MIN = 0.05
BACKOFF_S_MAX = 2.0

FrameHandler = Callable[[int, list[Any]], None]
JoinHandler = Callable[[str], object]


@dataclass
class _Outgoing:
    peer_id: int
    host: str
    port: int
    pending: list[Any] = field(default_factory=list)
    frames: deque[bytes] = field(default_factory=deque)  # waiting for the link
    link: _OutgoingLink | None = None
    task: asyncio.Task[None] | None = None
    connected: bool = False
    bytes_sent: int = 0
    # Set when the peer connected to us while our link to it was down: it is back, so the
    # reconnect does not wait out its backoff (up to BACKOFF_S_MAX).
    peer_is_back: asyncio.Event = field(default_factory=asyncio.Event)

    def write(self, frame: bytes) -> None:
        """Send `frame` now if the link takes it, else queue it (the oldest queued go first
        when the queue is full: the protocol above tolerates loss)."""
        link = self.link
        if link is not None and link.writable and not self.frames and link.send(frame):
            self.bytes_sent += len(frame)
            return
        self.frames.append(frame)
        while len(self.frames) > QUEUED_FRAMES_MAX:
            self.frames.popleft()

    def write_queued(self) -> None:
        link = self.link
        while self.frames and link is not None and link.writable:
            if not link.send(self.frames[0]):
                return
            self.bytes_sent += len(self.frames.popleft())


class _OutgoingLink(asyncio.Protocol):
    """Our connection to one peer: written to directly from `PeerTransport._flush` (no task
    wake-up per frame); reading is not expected (peers never answer on it)."""

    def __init__(self, outgoing: _Outgoing) -> None:
        self.outgoing = outgoing
        self.transport: asyncio.Transport
        self.writable = True
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not subclasses

    def send(self, frame: bytes) -> bool:
        """False when the connection is going away (the frame stays queued)."""
        if self.transport.is_closing():
            self.writable = False
            return False
        try:
            self.transport.write(frame)
        except RuntimeError:  # uvloop: the handle closed before connection_lost ran
            self.writable = False
            return False
        return True

    def pause_writing(self) -> None:
        self.writable = False

    def resume_writing(self) -> None:
        self.writable = True
        self.outgoing.write_queued()

    def connection_lost(self, exc: Exception | None) -> None:
        self.writable = False
        if not self.lost.done():
            self.lost.set_result(exc)


class _IncomingLink(asyncio.Protocol):
    """A connection from a peer: frames are cut from what arrives and handed up at once."""

    def __init__(self, owner: PeerTransport) -> None:
        self.owner = owner
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.sender_id: int | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not subclasses
        self.owner._incoming.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.owner._incoming.discard(self)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if self.buffer:
            data = self.buffer + data
        header_size = FRAME_HEADER.size
        offset = 0
        try:
            while len(data) - offset >= header_size:
                end = offset + header_size + frame_length(data[offset : offset + header_size])
                if end > len(data):
                    break
                payload = data[offset + header_size : end]
                offset = end
                self.owner.bytes_received += header_size + len(payload)
                self._on_payload(decode_payload(payload))
                if self.closed:
                    return
        except WireError as error:
            peer = self.transport.get_extra_info("peername") if self.transport else None
            log.warning("closing peer connection from %s: %s", peer, error)
            self.close()
            return
        self.buffer = data[offset:]

    def _on_payload(self, items: object) -> None:
        if self.sender_id is None:
            self.sender_id = self._on_hello(items)
            return
        if not isinstance(items, list):
            raise WireError("a frame is an array of items")
        self.owner.on_frame(self.sender_id, items)

    def _on_hello(self, hello: object) -> int | None:
        """The sender's id; None when the connection was a join query (answered, closed)."""
        owner = self.owner
        if isinstance(hello, list) and len(hello) == 2 and hello[0] == JOIN_MAGIC:
            answer = owner.on_join_query(str(hello[1])) if owner.on_join_query else None
            if self.transport is not None:
                self.transport.write(encode_frame([answer]))
            self.close()  # the transport sends what it holds before closing
            return None
        if not (isinstance(hello, list) and len(hello) in (3, 4) and hello[0] == MAGIC):
            raise WireError(f"bad hello {hello!r:.80}")
        cluster_id, sender_id = hello[1], hello[2]
        advertised = hello[3] if len(hello) == 4 else None
        if cluster_id != owner.cluster_id:
            raise WireError(f"peer belongs to cluster {cluster_id}, not {owner.cluster_id}")
        if not isinstance(sender_id, int) or sender_id == owner.node_id:
            raise WireError(f"bad sender id {sender_id!r}")
        if (
            isinstance(advertised, list)
            and len(advertised) == 2
            and isinstance(advertised[0], str)
            and isinstance(advertised[1], int)
        ):
            owner.advertised[sender_id] = (advertised[0], advertised[1])
        outgoing = owner._outgoing.get(sender_id)
        if outgoing is not None and not outgoing.connected:
            outgoing.peer_is_back.set()
        return sender_id


class PeerTransport:
    """Sends item batches to peers and hands up item batches from them.

    Items are msgpack-encodable values (the runtime encodes core messages and its own
    forwarding messages); `on_frame(sender_id, items)` receives each arriving batch.
    Connections are asyncio protocols, not streams: a frame costs no task wake-up on
    either side.
    """

    def __init__(
        self,
        node_id: int,
        cluster_id: int,
        listen: tuple[str, int],
        peers: dict[int, tuple[str, int]],
        on_frame: FrameHandler,
    ) -> None:
        assert node_id not in peers
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.listen = listen
        self.on_frame = on_frame
        self._outgoing = {
            peer_id: _Outgoing(peer_id, host, port) for peer_id, (host, port) in peers.items()
        }
        self._server: asyncio.Server | None = None
        self._flush_scheduled = False
        self._incoming: set[_IncomingLink] = set()
        self._closing = False
        self._started = False
        self.bytes_received = 0
        self.on_join_query: JoinHandler | None = None
        self.advertise: tuple[str, int] | None = None  # our peer address, told in hellos
        self.advertised: dict[int, tuple[str, int]] = {}  # what senders told in theirs

    async def start(self) -> None:
        host, port = self.listen
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _IncomingLink(self), host, port)
        self._started = True
        for outgoing in self._outgoing.values():
            outgoing.task = asyncio.create_task(self._run_outgoing(outgoing))

    def set_peers(self, peers: dict[int, tuple[str, int]]) -> None:
        """Make the address book `peers`: connect to new peers, reconnect to peers whose
        address changed, drop peers no longer listed (their queued frames are lost)."""
        assert self.node_id not in peers
        for peer_id in sorted(set(self._outgoing) - set(peers)):
            self._drop(peer_id)
        for peer_id, (host, port) in sorted(peers.items()):
            current = self._outgoing.get(peer_id)
            if current is not None and (current.host, current.port) == (host, port):
                continue
            if current is not None:
                self._drop(peer_id)
            outgoing = _Outgoing(peer_id, host, port)
            self._outgoing[peer_id] = outgoing
            if self._started and not self._closing:
                outgoing.task = asyncio.create_task(self._run_outgoing(outgoing))
            log.info("peer %x at %s:%d", peer_id, host, port)

    def _drop(self, peer_id: int) -> None:
        outgoing = self._outgoing.pop(peer_id)
        if outgoing.task is not None:
            outgoing.task.cancel()
        log.info("peer %x removed from the address book", peer_id)

    def address_of(self, peer_id: int) -> tuple[str, int]:
        outgoing = self._outgoing[peer_id]
        return outgoing.host, outgoing.port

    @property
    def peer_ids(self) -> tuple[int, ...]:
        return tuple(sorted(self._outgoing))

    async def stop(self) -> None:
        self._closing = True
        if self._server is not None:
            self._server.close()
        tasks = [o.task for o in self._outgoing.values() if o.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for link in list(self._incoming):
            link.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    def connected(self, peer_id: int) -> bool:
        outgoing = self._outgoing.get(peer_id)
        return outgoing is not None and outgoing.connected

    def send(self, peer_id: int, items: Sequence[Any]) -> None:
        """Queue items for `peer_id`; they leave in one frame at the end of this iteration."""
        outgoing = self._outgoing.get(peer_id)
        if outgoing is None:
            log.warning("dropping %d items for unknown peer %s", len(items), peer_id)
            return
        outgoing.pending.extend(items)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Send what is queued now (it would leave at the end of this iteration anyway):
        before the runtime blocks on the disk."""
        self._flush_scheduled = False
        for outgoing in self._outgoing.values():
            if not outgoing.pending:
                continue
            try:
                frame = encode_frame(outgoing.pending)
            except WireError:
                log.exception("dropping an oversized batch for peer %s", outgoing.peer_id)
                outgoing.pending = []
                continue
            outgoing.pending = []
            outgoing.write(frame)

    async def _run_outgoing(self, outgoing: _Outgoing) -> None:
        loop = asyncio.get_running_loop()
        backoff_s = BACKOFF_S_MIN
        while not self._closing:
            try:
                _, link = await loop.create_connection(
                    lambda: _OutgoingLink(outgoing), outgoing.host, outgoing.port
                )
            except OSError:
                await self._back_off(outgoing, backoff_s)
                backoff_s = min(backoff_s * 2, BACKOFF_S_MAX)
                continue
            backoff_s = BACKOFF_S_MIN
            try:
                advertised = list(self.advertise) if self.advertise is not None else None
                link.transport.write(
                    encode_frame([MAGIC, self.cluster_id, self.node_id, advertised])
                )
                outgoing.link = link
                outgoing.connected = True
                outgoing.write_queued()
                error = await link.lost
                log.info("connection to peer %s lost: %r", outgoing.peer_id, error)
                outgoing.connected = False
                await self._back_off(outgoing, backoff_s)
            finally:
                outgoing.connected = False
                outgoing.link = None
                link.transport.close()

    async def _back_off(self, outgoing: _Outgoing, seconds: float) -> None:
        """Wait `seconds` before reconnecting, or less if the peer connects to us first."""
        outgoing.peer_is_back.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(outgoing.peer_is_back.wait(), seconds)


async def query_cluster(host: str, port: int, peer_url: str) -> object:
    """Ask the member listening on (host, port) about its cluster, as a member whose peer
    URL is `peer_url` that wants to join; its answer (None: it has nothing to say)."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port), JOIN_QUERY_TIMEOUT_S
    )
    try:
        writer.write(encode_frame([JOIN_MAGIC, peer_url]))
        await writer.drain()
        header = await asyncio.wait_for(reader.readexactly(FRAME_HEADER.size), JOIN_QUERY_TIMEOUT_S)
        payload = await asyncio.wait_for(
            reader.readexactly(frame_length(header)), JOIN_QUERY_TIMEOUT_S
        )
        answer = decode_payload(payload)
        if not (isinstance(answer, list) and len(answer) == 1):
            raise WireError(f"bad join answer {answer!r:.80}")
        return answer[0]
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
