"""The in-memory disk keeps what was synced and loses, tears or corrupts the rest on a crash.

Goal: the simulator's disk models power loss the way the WAL must survive it (DESIGN.md,
Simulation: "A simulated disk under the real WAL code that keeps, tears or corrupts unsynced
writes on a crash"). Method: write, sync some, crash with seeded generators, inspect.
"""

from __future__ import annotations

import errno
import random

import pytest

from synod.storage.memdisk import MemDisk, SimulatedCrash


def make_file(disk: MemDisk, path: str, data: bytes, sync: bool) -> None:
    file = disk.open(path, create=True)
    file.write_at(0, data)
    if sync:
        file.sync()
    disk.sync_dir("/d")


def test_synced_bytes_and_names_survive_every_crash() -> None:
    for seed in range(50):
        disk = MemDisk()
        disk.makedirs("/d")
        make_file(disk, "/d/a", b"durable", sync=True)
        file = disk.open("/d/a", create=False)
        file.write_at(7, b"-maybe")
        disk.crash(random.Random(seed))
        assert disk.read("/d/a").startswith(b"durable")


def test_unsynced_bytes_are_kept_dropped_torn_or_flipped() -> None:
    outcomes = set()
    for seed in range(200):
        disk = MemDisk()
        disk.makedirs("/d")
        make_file(disk, "/d/a", b"base", sync=True)
        disk.open("/d/a", create=False).write_at(4, b"0123456789")
        disk.crash(random.Random(seed))
        after = disk.read("/d/a")
        assert after.startswith(b"base")
        if after == b"base0123456789":
            outcomes.add("keep")
        elif after == b"base":
            outcomes.add("drop")
        elif b"base0123456789".startswith(after):
            outcomes.add("tear")
        else:
            assert len(after) == 14
            assert sum(a != b for a, b in zip(after, b"base0123456789", strict=True)) == 1
            outcomes.add("flip")
    assert outcomes == {"keep", "drop", "tear", "flip"}


def test_the_same_seed_does_the_same_damage() -> None:
    def run(seed: int) -> bytes:
        disk = MemDisk()
        disk.makedirs("/d")
        make_file(disk, "/d/a", b"x" * 100, sync=False)
        disk.crash(random.Random(seed))
        return disk.read("/d/a") if disk.exists("/d/a") else b"<gone>"

    assert [run(seed) for seed in range(20)] == [run(seed) for seed in range(20)]


def test_a_file_whose_directory_was_not_synced_may_vanish() -> None:
    vanished = 0
    for seed in range(40):
        disk = MemDisk()
        disk.makedirs("/d")
        file = disk.open("/d/new", create=True)
        file.write_at(0, b"data")
        file.sync()
        disk.crash(random.Random(seed))
        vanished += not disk.exists("/d/new")
    assert 0 < vanished < 40


def test_rename_without_directory_sync_may_be_undone() -> None:
    results = set()
    for seed in range(40):
        disk = MemDisk()
        disk.makedirs("/d")
        make_file(disk, "/d/tmp", b"new", sync=True)
        disk.rename("/d/tmp", "/d/final")
        disk.crash(random.Random(seed))
        results.add((disk.exists("/d/tmp"), disk.exists("/d/final")))
    assert results == {(True, False), (False, True)}


def test_handles_opened_before_a_crash_are_dead() -> None:
    disk = MemDisk()
    disk.makedirs("/d")
    make_file(disk, "/d/a", b"x", sync=True)
    file = disk.open("/d/a", create=False)
    disk.crash(random.Random(1))
    with pytest.raises(OSError) as caught:
        file.write_at(0, b"y")
    assert caught.value.errno == errno.EBADF


def test_injected_faults_fsync_error_full_disk_and_armed_crash() -> None:
    disk = MemDisk(capacity_bytes=10)
    disk.makedirs("/d")
    file = disk.open("/d/a", create=True)
    with pytest.raises(OSError) as full:
        file.write_at(0, b"x" * 11)
    assert full.value.errno == errno.ENOSPC
    disk.sync_error = OSError(errno.EIO, "boom")
    with pytest.raises(OSError):
        file.sync()
    disk.crash_after_ops = 2
    file.write_at(0, b"a")
    with pytest.raises(SimulatedCrash):
        file.write_at(1, b"b")
