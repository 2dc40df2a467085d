"""Durable storage of a member: write-ahead log, hard state and snapshots.

Modules, lowest first:
- `fs`: the file-system seam (`FileSystem`, `RealFileSystem`); `memdisk`: the simulator's
  in-memory disk that loses, tears or corrupts unsynced writes on a crash.
- `wal`: segmented, checksummed, append-only record files; group commit on a thread;
  recovery that truncates a torn tail and refuses damage before it.
- `codec`: msgpack layout of entries, ballots, memberships, hard state, snapshot metadata.
- `storage`: `DurableStorage`, the driver's `Storage` (`save`) plus `load` and `compact`.
- `repair`: `synod repair --data-dir DIR`, moving a damaged directory aside.
- `errors`: `StorageFatal` (stop: durability unknown), `StorageFull`, `StorageCorrupt`,
  `StorageLocked`.

The layer's promise (DESIGN.md): what it reports durable survives power loss, corruption is
detected by checksum, and a torn record is never returned.
"""

from synod.storage.errors import (
    StorageCorrupt,
    StorageError,
    StorageFatal,
    StorageFull,
    StorageLocked,
)
from synod.storage.storage import DurableStorage
from synod.storage.wal import Ticket, WalOptions

__all__ = [
    "DurableStorage",
    "StorageCorrupt",
    "StorageError",
    "StorageFatal",
    "StorageFull",
    "StorageLocked",
    "Ticket",
    "WalOptions",
]
