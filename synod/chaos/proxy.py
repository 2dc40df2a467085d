"""The fault-injecting peer proxy: one listener in front of every member's peer port.

Each member advertises its proxy's address as its peer URL, so every peer connection to
member B ends at B's proxy. Synod's peer links carry one direction each (A's outgoing
connection to B carries only A->B frames), and every connection opens with a hello frame
naming its sender, so the proxy knows the direction of each frame it relays. Per directed
link it can cut (drop every frame), delay (hold every frame for a fixed time, order kept) or
drop a fraction of frames. Frames are whole: a cut never tears one, it loses it, which is
what a lost packet train looks like to the protocol above.

The proxy runs its own asyncio loop in a daemon thread; the harness thread changes link
faults through `set_link` / `heal`, which are thread-safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from dataclasses import dataclass

from synod.transport.codec import FRAME_HEADER, WireError, decode_payload, frame_length

QUEUED_FRAMES_MAX = 4096
START_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class LinkFault:
    """What happens to frames on one directed link; the default relays them untouched."""

    cut: bool = False
    delay_ms: int = 0
    drop_fraction: float = 0.0

    def __post_init__(self) -> None:
        assert self.delay_ms >= 0
        assert 0.0 <= self.drop_fraction <= 1.0

    @property
    def healthy(self) -> bool:
        return not self.cut and self.delay_ms == 0 and self.drop_fraction == 0.0


HEALTHY = LinkFault()


class PeerProxies:
    """Proxies for `targets[name] = real peer port`, each listening on `listen_ports[name]`.

    `ids[member_id] = name` names the sender of each connection from its hello frame.
    """

    def __init__(
        self, targets: dict[str, int], listen_ports: dict[str, int], ids: dict[int, str], seed: int
    ) -> None:
        assert set(targets) == set(listen_ports)
        self.targets = dict(targets)
        self.listen_ports = dict(listen_ports)
        self.ids = dict(ids)
        self._faults: dict[tuple[str, str], LinkFault] = {}
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopping: asyncio.Event | None = None
        self.frames_relayed = 0
        self.frames_dropped = 0

    # ------------------------------------------------------------------ control (any thread)

    def set_link(self, source: str, destination: str, fault: LinkFault) -> None:
        assert source != destination
        assert source in self.targets and destination in self.targets
        with self._lock:
            if fault.healthy:
                self._faults.pop((source, destination), None)
            else:
                self._faults[(source, destination)] = fault

    def fault(self, source: str, destination: str) -> LinkFault:
        with self._lock:
            return self._faults.get((source, destination), HEALTHY)

    def heal(self) -> None:
        with self._lock:
            self._faults.clear()

    def isolate(self, name: str) -> None:
        """Cut every link to and from `name`."""
        for other in self.targets:
            if other != name:
                self.set_link(name, other, LinkFault(cut=True))
                self.set_link(other, name, LinkFault(cut=True))

    def start(self) -> None:
        assert self._thread is None, "started once"
        self._thread = threading.Thread(target=self._run, name="peer-proxies", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            raise RuntimeError("peer proxies did not start")

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        loop, stopping = self._loop, self._stopping
        assert stopping is not None
        loop.call_soon_threadsafe(stopping.set)
        self._thread.join(timeout=10)
        self._thread = None

    # ------------------------------------------------------------------ the proxy loop

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        servers = []
        for name, port in sorted(self.listen_ports.items()):

            async def accept(
                reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: str = name
            ) -> None:
                await self._relay(reader, writer, target)

            servers.append(await asyncio.start_server(accept, "127.0.0.1", port))
        self._ready.set()
        await self._stopping.wait()
        for server in servers:
            server.close()
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()

    async def _relay(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, destination: str
    ) -> None:
        upstream: asyncio.StreamWriter | None = None
        forwarder: asyncio.Task[None] | None = None
        try:
            hello = await _read_frame(reader)
            decoded = decode_payload(hello[FRAME_HEADER.size :])
            # [MAGIC, cluster id, sender id] and, since hellos carry it, the sender's address
            if not (isinstance(decoded, list) and len(decoded) in (3, 4)):
                return
            source = self.ids.get(decoded[2])
            if source is None:
                return
            _, upstream = await asyncio.open_connection("127.0.0.1", self.targets[destination])
            upstream.write(hello)
            queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUED_FRAMES_MAX)
            forwarder = asyncio.create_task(_forward(queue, upstream))
            while True:
                frame = await _read_frame(reader)
                fault = self.fault(source, destination)
                if fault.cut or (
                    fault.drop_fraction and self._random.random() < fault.drop_fraction
                ):
                    self.frames_dropped += 1
                    continue
                if queue.full():
                    self.frames_dropped += 1
                    continue
                self.frames_relayed += 1
                queue.put_nowait((time.monotonic() + fault.delay_ms / 1000, frame))
                if forwarder.done():
                    return
        except (OSError, asyncio.IncompleteReadError, WireError, ConnectionError):
            pass
        finally:
            if forwarder is not None:
                forwarder.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await forwarder
            for stream in (writer, upstream):
                if stream is not None:
                    stream.close()


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    header = await reader.readexactly(FRAME_HEADER.size)
    return header + await reader.readexactly(frame_length(header))


async def _forward(
    queue: asyncio.Queue[tuple[float, bytes]], upstream: asyncio.StreamWriter
) -> None:
    with contextlib.suppress(OSError, ConnectionError, RuntimeError):
        while True:
            release_at, frame = await queue.get()
            wait_s = release_at - time.monotonic()
            if wait_s > 0:
                await asyncio.sleep(wait_s)
            upstream.write(frame)
            await upstream.drain()
