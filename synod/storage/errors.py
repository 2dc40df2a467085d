"""Typed errors of the storage layer; each says what happened on disk and who must act.

`StorageFatal` means this storage instance can no longer promise durability (an fsync or a
write failed): the member must stop and restart, recovering only from what is on disk.
`StorageFull` is the disk-full case of it: nothing already acknowledged is lost, but no more
writes are accepted until space is freed and the member restarts. `StorageCorrupt` is raised
at start when the log or a snapshot is damaged before its tail: the member refuses to start
(see `synod.storage.repair`).
"""

from __future__ import annotations


class StorageError(Exception):
    """Base of every error the storage layer raises on purpose."""


class StorageFatal(StorageError):
    """A write or fsync failed: durability is unknown, stop and restart from disk.

    Never retry an fsync after a failure: the kernel may have dropped the dirty pages and a
    second fsync would report success for data that is gone.
    """


class StorageFull(StorageFatal):
    """The disk is full (ENOSPC): writes stopped; everything acknowledged before is durable."""


class StorageLocked(StorageError):
    """Another process (or another open storage) is using the data directory."""


class StorageCorrupt(StorageError):
    """The on-disk data is damaged before its tail; the member must not serve from it."""

    def __init__(self, path: str, offset: int | None, reason: str) -> None:
        where = path if offset is None else f"{path} at offset {offset}"
        super().__init__(
            f"storage corrupt: {where}: {reason}; refusing to start "
            "(run `synod repair --data-dir DIR` to move the data aside and re-join)"
        )
        self.path = path
        self.offset = offset
        self.reason = reason
