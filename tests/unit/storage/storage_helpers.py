"""Shared helpers of the storage tests: values, and a real file system with injected faults."""

from __future__ import annotations

import errno

from synod.paxos.types import (
    Ballot,
    Entry,
    EntryKind,
    HardState,
    Membership,
    NodeId,
    Slot,
    SnapshotMeta,
)
from synod.storage.fs import RealFileSystem, WritableFile

MEMBERSHIP = Membership((NodeId(1), NodeId(2), NodeId(3)))
BOOTSTRAP = SnapshotMeta(Slot(0), MEMBERSHIP)


def entry(slot: int, round_: int = 1, command: bytes | None = None) -> Entry:
    value = command if command is not None else f"cmd-{slot}-{round_}".encode()
    return Entry(Slot(slot), Ballot(round_, NodeId(1)), EntryKind.COMMANDS, (value,))


def hard_state(round_: int, commit: int) -> HardState:
    return HardState(Ballot(round_, NodeId(2)), Slot(commit))


class FaultyFile:
    def __init__(self, fs: FaultyFileSystem, inner: WritableFile) -> None:
        self.fs = fs
        self.inner = inner

    def write_at(self, offset: int, data: bytes) -> None:
        if self.fs.space_left_bytes is not None:
            if len(data) > self.fs.space_left_bytes:
                part = data[: self.fs.space_left_bytes]
                self.inner.write_at(offset, part)
                self.fs.space_left_bytes = 0
                raise OSError(errno.ENOSPC, "No space left on device")
            self.fs.space_left_bytes -= len(data)
        self.inner.write_at(offset, data)

    def sync(self) -> None:
        self.fs.sync_calls += 1
        if self.fs.sync_error is not None:
            raise self.fs.sync_error
        self.inner.sync()

    def truncate(self, size_bytes: int) -> None:
        self.inner.truncate(size_bytes)

    def allocate(self, size_bytes: int) -> None:
        if self.fs.space_left_bytes is not None:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.inner.allocate(size_bytes)

    def close(self) -> None:
        self.inner.close()


class FaultyFileSystem(RealFileSystem):
    """Real files whose fsyncs can fail and whose disk can fill up, on demand."""

    def __init__(self) -> None:
        super().__init__()
        self.sync_error: OSError | None = None
        self.space_left_bytes: int | None = None
        self.sync_calls = 0

    def open(self, path: str, create: bool) -> WritableFile:
        return FaultyFile(self, super().open(path, create))
