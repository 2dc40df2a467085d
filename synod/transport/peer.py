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
    frames: deque[bytes] = field(default_factory=deque)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    connected: bool = False
    bytes_sent: int = 0


class PeerTransport:
    """Sends item batches to peers and hands up item batches from them.

    Items are msgpack-encodable values (the runtime encodes core messages and its own
    forwarding messages); `on_frame(sender_id, items)` receives each arriving batch.
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
        self._incoming: set[asyncio.Task[None]] = set()
        self._closing = False
        self._started = False
        self.bytes_received = 0
        self.on_join_query: JoinHandler | None = None
        self.advertise: tuple[str, int] | None = None  # our peer address, told in hellos
        self.advertised: dict[int, tuple[str, int]] = {}  # what senders told in theirs

    async def start(self) -> None:
        host, port = self.listen
        self._server = await asyncio.start_server(self._serve_connection, host, port)
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
        tasks.extend(self._incoming)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
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
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
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
            outgoing.frames.append(frame)
            while len(outgoing.frames) > QUEUED_FRAMES_MAX:
                outgoing.frames.popleft()
            outgoing.wakeup.set()

    async def _run_outgoing(self, outgoing: _Outgoing) -> None:
        backoff_s = BACKOFF_S_MIN
        while not self._closing:
            try:
                _, writer = await asyncio.open_connection(outgoing.host, outgoing.port)
            except OSError:
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, BACKOFF_S_MAX)
                continue
            backoff_s = BACKOFF_S_MIN
            try:
                advertised = list(self.advertise) if self.advertise is not None else None
                writer.write(encode_frame([MAGIC, self.cluster_id, self.node_id, advertised]))
                outgoing.connected = True
                await self._pump(outgoing, writer)
            except Exception as error:
                # Whatever the loop raises (uvloop reports a write to a transport its peer
                # closed as RuntimeError), the link must come back: log and reconnect.
                log.info("connection to peer %s lost: %r", outgoing.peer_id, error)
                await asyncio.sleep(backoff_s)
            finally:
                outgoing.connected = False
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

    async def _pump(self, outgoing: _Outgoing, writer: asyncio.StreamWriter) -> None:
        while not self._closing:
            if not outgoing.frames:
                outgoing.wakeup.clear()
                await outgoing.wakeup.wait()
                continue
            frames = list(outgoing.frames)
            outgoing.frames.clear()
            for frame in frames:
                writer.write(frame)
                outgoing.bytes_sent += len(frame)
            await writer.drain()

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._incoming.add(task)
        peer = writer.get_extra_info("peername")
        try:
            sender_id = await self._read_hello(reader, writer)
            if sender_id is None:
                return
            while not self._closing:
                items = await self._read_frame(reader)
                if not isinstance(items, list):
                    raise WireError("a frame is an array of items")
                self.on_frame(sender_id, items)
        except asyncio.IncompleteReadError:
            pass
        except WireError as error:
            log.warning("closing peer connection from %s: %s", peer, error)
        except (OSError, ConnectionError):
            pass
        except asyncio.CancelledError:
            # stop() cancels readers: end quietly (asyncio's stream callback would log a
            # cancelled connection handler as an error)
            pass
        finally:
            self._incoming.discard(task)
            writer.close()

    async def _read_hello(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> int | None:
        """The sender's id; None when the connection was a join query (answered)."""
        hello = await self._read_frame(reader)
        if isinstance(hello, list) and len(hello) == 2 and hello[0] == JOIN_MAGIC:
            answer = self.on_join_query(str(hello[1])) if self.on_join_query else None
            writer.write(encode_frame([answer]))
            await writer.drain()
            return None
        if not (isinstance(hello, list) and len(hello) in (3, 4) and hello[0] == MAGIC):
            raise WireError(f"bad hello {hello!r:.80}")
        cluster_id, sender_id = hello[1], hello[2]
        advertised = hello[3] if len(hello) == 4 else None
        if cluster_id != self.cluster_id:
            raise WireError(f"peer belongs to cluster {cluster_id}, not {self.cluster_id}")
        if not isinstance(sender_id, int) or sender_id == self.node_id:
            raise WireError(f"bad sender id {sender_id!r}")
        if (
            isinstance(advertised, list)
            and len(advertised) == 2
            and isinstance(advertised[0], str)
            and isinstance(advertised[1], int)
        ):
            self.advertised[sender_id] = (advertised[0], advertised[1])
        return sender_id

    async def _read_frame(self, reader: asyncio.StreamReader) -> object:
        header = await reader.readexactly(FRAME_HEADER.size)
        payload = await reader.readexactly(frame_length(header))
        self.bytes_received += len(header) + len(payload)
        return decode_payload(payload)


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
