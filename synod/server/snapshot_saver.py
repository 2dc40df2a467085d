"""Taking the member's state-machine snapshot without stalling the event loop.

Issue 3 asks that the snapshot be "written atomically while the member keeps applying" and
that snapshotting "never blocks client traffic for more than a few milliseconds". The
design, and why:

- The state lives in Python objects that only the event loop may touch, so serializing it
  on a thread would either race with `apply` or need a lock held for the whole copy. Forking
  a child that serializes the copy-on-write memory is what Redis does, but this process has
  threads (the WAL committer, gRPC's), so the child could run only async-signal-safe code,
  and msgpack in Python is not; the child would also touch every object's reference count
  and so copy nearly every page, doubling the memory of a large store.
- Instead the service yields its snapshot *in pieces* (`KVStore.snapshot_stream`): the
  stream fixes the state at the moment it opens, and the store keeps, for each key the
  stream has not reached yet, the records it had then, just before a command changes it.
  The loop pulls pieces for at most `STEP_S_MAX` per turn, so commands, client requests and
  timers run between the turns; the pieces join to exactly the bytes a one-shot snapshot
  would have produced at the opening slot.
- The pieces (never joined) go to one worker thread that writes the file (temporary file,
  fsync, rename, directory fsync), appends the WAL record, waits for it to be durable and
  removes the segments below it (`DurableStorage.compact`). Writing and checksumming
  release the GIL; the storage lock is held only for list operations.
- When the worker reports done, the loop compacts the core's in-memory log.

A service without `snapshot_stream` (a test double, say) is serialized in one piece on the
loop, as before. At most one snapshot is under way at a time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import logging
import time
from collections.abc import Callable, Iterator
from typing import Protocol

from synod.kv.store import SnapshotCancelled
from synod.paxos.types import SnapshotMeta
from synod.storage.storage import DurableStorage

log = logging.getLogger(__name__)

STEP_S_MAX = 0.001


class SnapshotSource(Protocol):
    def snapshot(self) -> bytes: ...


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a snapshot is restored, then freeze
    what is alive. Building a large store allocates millions of objects and no cycles; the
    collections those allocations trigger, each walking every live object, cost a third of
    the restore, and the first full collection after it would walk the whole store again
    (seconds for millions of keys). Frozen objects are never walked again; they are still
    freed by reference counting, which is all the store's acyclic objects need."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


def service_pieces(service: SnapshotSource) -> Iterator[bytes]:
    """The service's snapshot as pieces: streamed if it can, else in one piece."""
    stream: Callable[[], Iterator[bytes]] | None = getattr(service, "snapshot_stream", None)
    if stream is not None:
        return stream()
    return iter([service.snapshot()])


class SnapshotSaver:
    """Runs one snapshot at a time: pieces on the loop in short turns, the file on a thread."""

    def __init__(
        self,
        storage: DurableStorage,
        on_saved: Callable[[SnapshotMeta, float], None],
        on_failed: Callable[[BaseException], None],
    ) -> None:
        self.storage = storage
        self.on_saved = on_saved
        self.on_failed = on_failed
        self._executor = concurrent.futures.ThreadPoolExecutor(1, "synod-snapshot")
        self._meta: SnapshotMeta | None = None
        self._stream: Iterator[bytes] | None = None
        self._pieces: list[bytes] = []
        self._writing: concurrent.futures.Future[int] | None = None
        self._started = 0.0
        self._closed = False

    @property
    def busy(self) -> bool:
        return self._meta is not None

    def start(self, meta: SnapshotMeta, pieces: Iterator[bytes]) -> None:
        """Take the snapshot `pieces` yields, which is the state as of `meta.last_slot`."""
        assert not self.busy, "one snapshot at a time"
        assert not self._closed
        self._meta, self._stream, self._pieces = meta, pieces, []
        self._started = time.perf_counter()
        asyncio.get_running_loop().call_soon(self._step)

    def _step(self) -> None:
        """Pull pieces for at most STEP_S_MAX, then yield the loop to everything else."""
        if self._stream is None or self._closed:
            return
        deadline = time.perf_counter() + STEP_S_MAX
        try:
            while time.perf_counter() < deadline:
                self._pieces.append(next(self._stream))
        except StopIteration:
            self._stream = None
            self._write()
            return
        except SnapshotCancelled as reason:
            log.info("snapshot at slot %s abandoned: %s", self._meta, reason)
            self._reset()
            return
        asyncio.get_running_loop().call_soon(self._step)

    def _write(self) -> None:
        meta = self._meta
        assert meta is not None
        loop = asyncio.get_running_loop()
        self._writing = self._executor.submit(self.storage.compact, meta, self._pieces)
        self._pieces = []
        self._writing.add_done_callback(
            lambda _: loop.call_soon_threadsafe(self._on_written) if not loop.is_closed() else None
        )

    def _on_written(self) -> None:
        if self._closed:
            return
        writing, meta = self._writing, self._meta
        assert writing is not None and writing.done()
        assert meta is not None
        self._reset()
        failure = writing.exception()
        if failure is not None:
            self.on_failed(failure)
            return
        self.on_saved(meta, time.perf_counter() - self._started)

    def _reset(self) -> None:
        if self._stream is not None and hasattr(self._stream, "close"):
            self._stream.close()
        self._meta, self._stream, self._pieces, self._writing = None, None, [], None

    async def close(self) -> None:
        """Stop taking pieces and wait for a file being written (the storage closes next)."""
        self._closed = True
        writing = self._writing
        if writing is not None:
            with contextlib.suppress(Exception):
                await asyncio.wrap_future(writing)
        self._reset()
        self._executor.shutdown(wait=True)
