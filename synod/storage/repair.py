"""`synod repair --data-dir DIR`: set a damaged member's data aside so it can re-join.

Owns the one destructive operator action on a data directory. A member whose log or snapshot
is corrupt refuses to start (`StorageCorrupt`); the cure is to give it an empty directory and
let it re-join the cluster and catch up from the leader (a snapshot plus the log tail).

Invariants: nothing is deleted, the damaged directory is renamed to `DIR.damaged-N` (the
first unused N) for post-mortem, and the rename is made durable by an fsync of the parent
directory; a directory that verifies as healthy is left alone unless `force` is given, so a
mistyped path or a premature repair cannot throw away a good replica; a directory locked by a
running member is refused.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from synod.storage.errors import StorageCorrupt, StorageLocked
from synod.storage.fs import RealFileSystem
from synod.storage.storage import lock_directory, verify

log = logging.getLogger(__name__)

DAMAGED_SUFFIXES_MAX = 10_000


class RepairRefused(Exception):
    """The repair was not carried out; the message says why and what to do instead."""


@dataclass(frozen=True, slots=True)
class RepairResult:
    data_dir: str
    moved_to: str
    damage: str  # why the data was judged damaged, or "forced"


def repair(data_dir: str, *, force: bool = False) -> RepairResult:
    """Move `data_dir` aside to `data_dir.damaged-N`; the member then starts empty and re-joins."""
    data_dir = os.path.abspath(data_dir)
    if not os.path.isdir(data_dir):
        raise RepairRefused(f"{data_dir} is not a directory: nothing to repair")
    fs = RealFileSystem()
    try:
        lock_directory(fs, data_dir)
    except StorageLocked as locked:
        raise RepairRefused(str(locked)) from locked
    try:
        damage = "forced" if force else _diagnose(fs, data_dir)
        target = _free_name(data_dir)
        os.rename(data_dir, target)
    finally:
        fs.unlock(data_dir)
    fs.sync_dir(os.path.dirname(data_dir))
    log.warning(
        "repair: moved %s to %s (%s); the member will re-join empty", data_dir, target, damage
    )
    assert not os.path.exists(data_dir)
    return RepairResult(data_dir, target, damage)


def _diagnose(fs: RealFileSystem, data_dir: str) -> str:
    try:
        restore = verify(data_dir, fs)
    except StorageCorrupt as corrupt:
        return str(corrupt)
    if restore is None:
        raise RepairRefused(f"{data_dir} holds no log: nothing to repair")
    raise RepairRefused(
        f"{data_dir} verifies as healthy (log through slot "
        f"{restore.snapshot.last_slot + len(restore.entries)}); refusing to discard it "
        "(use --force to move it aside anyway)"
    )


def _free_name(data_dir: str) -> str:
    for number in range(1, DAMAGED_SUFFIXES_MAX + 1):
        candidate = f"{data_dir}.damaged-{number}"
        if not os.path.exists(candidate):
            return candidate
    raise RepairRefused(f"{DAMAGED_SUFFIXES_MAX} damaged copies of {data_dir} exist; clean up")
