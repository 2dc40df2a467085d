"""Round trips of the member's durable state: entries, overwrites, hard state, snapshots.

Goal: `load()` after a restart gives exactly what was saved, in the shape the core restarts
from (`Restore`: hard state, snapshot meta, the log after the snapshot) plus the snapshot's
bytes (DESIGN.md: "A restarted member is an acceptor that never forgot").
Method: save through `DurableStorage` on real files, close, reopen, compare.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from storage_helpers import BOOTSTRAP, MEMBERSHIP, FaultyFileSystem, entry, hard_state

from synod.paxos.node import Restore
from synod.paxos.ready import SnapshotInstall
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
from synod.storage.errors import StorageCorrupt, StorageError, StorageFull, StorageLocked
from synod.storage.storage import SNAPSHOT_SYNC_EVERY_BYTES, DurableStorage
from synod.storage.wal import FRAME_HEADER_BYTES, WalOptions, segment_name

SMALL = WalOptions(segment_bytes_max=4096, sync_thread=False)


def open_storage(directory: Path, options: WalOptions = SMALL) -> DurableStorage:
    return DurableStorage.open(str(directory / "data"), bootstrap=BOOTSTRAP, options=options)


def reopen(directory: Path, storage: DurableStorage) -> tuple[Restore, bytes | None]:
    storage.close()
    again = DurableStorage.open(str(directory / "data"), options=SMALL)
    loaded = again.load()
    again.close()
    return loaded


def test_new_member_starts_from_its_bootstrap_membership(tmp_path: Path) -> None:
    storage = open_storage(tmp_path)
    assert storage.load() == (Restore(HardState(), BOOTSTRAP, ()), None)
    assert reopen(tmp_path, storage) == (Restore(HardState(), BOOTSTRAP, ()), None)


def test_empty_directory_without_bootstrap_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="no bootstrap"):
        DurableStorage.open(str(tmp_path))


def test_entries_and_hard_state_survive_restart(tmp_path: Path) -> None:
    storage = open_storage(tmp_path)
    entries = [entry(slot) for slot in range(1, 6)]
    storage.save(None, entries[:3], hard_state(1, 0), sync=True)
    storage.save(None, entries[3:], hard_state(2, 3), sync=True)
    restore, data = reopen(tmp_path, storage)
    assert restore == Restore(hard_state(2, 3), BOOTSTRAP, tuple(entries))
    assert data is None


def test_every_entry_kind_round_trips(tmp_path: Path) -> None:
    storage = open_storage(tmp_path)
    grown = Membership((NodeId(1), NodeId(2), NodeId(3)), (NodeId(4),))
    entries = [
        Entry(Slot(1), Ballot(3, NodeId(2)), EntryKind.NOOP),
        Entry(Slot(2), Ballot(3, NodeId(2)), EntryKind.MEMBERSHIP, membership=grown),
        Entry(Slot(3), Ballot(3, NodeId(2)), EntryKind.COMMANDS, (b"", b"\x00\xff", b"x" * 999)),
    ]
    storage.save(None, entries, None, sync=True)
    restore, _ = reopen(tmp_path, storage)
    assert restore.entries == tuple(entries)
    assert [e.size_bytes for e in restore.entries] == [e.size_bytes for e in entries]


def test_saving_from_a_slot_overwrites_it_and_keeps_later_slots(tmp_path: Path) -> None:
    storage = open_storage(tmp_path)
    storage.save(None, [entry(slot) for slot in range(1, 6)], None, sync=True)
    storage.save(None, [entry(3, round_=2), entry(4, round_=2)], None, sync=True)
    restore, _ = reopen(tmp_path, storage)
    assert restore.entries == (entry(1), entry(2), entry(3, 2), entry(4, 2), entry(5))


def test_only_the_latest_hard_state_counts(tmp_path: Path) -> None:
    storage = open_storage(tmp_path)
    for round_ in range(1, 50):
        storage.save(None, [], hard_state(round_, 0), sync=round_ % 7 == 0)
    restore, _ = reopen(tmp_path, storage)
    assert restore.hard_state == hard_state(49, 0)


def test_saved_entries_must_not_leave_a_hole(tmp_path: Path) -> None:
    storage = open_storage(tmp_path)
    with pytest.raises(AssertionError):
        storage.save(None, [entry(3)], None, sync=True)
    storage.close()


def test_many_segments_replay_in_order(tmp_path: Path) -> None:
    storage = open_storage(tmp_path)
    for slot in range(1, 301):
        storage.save(None, [entry(slot)], hard_state(1, slot - 1), sync=slot % 10 == 0)
    assert len([n for n in os.listdir(tmp_path / "data") if n.endswith(".wal")]) >= 5
    restore, _ = reopen(tmp_path, storage)
    assert restore.entries == tuple(entry(slot) for slot in range(1, 301))
    assert restore.hard_state == hard_state(1, 299)


def test_compaction_removes_old_segments_and_restarts_from_snapshot_and_tail(
    tmp_path: Path,
) -> None:
    storage = open_storage(tmp_path)
    for slot in range(1, 301):
        storage.save(None, [entry(slot)], hard_state(1, slot), sync=True)
    directory = tmp_path / "data"
    before = sorted(n for n in os.listdir(directory) if n.endswith(".wal"))
    meta = SnapshotMeta(Slot(250), MEMBERSHIP)
    removed = storage.compact(meta, b"state machine at 250")
    after = sorted(n for n in os.listdir(directory) if n.endswith(".wal"))
    assert removed > 0
    assert after == before[removed:]
    storage.save(None, [entry(301)], hard_state(1, 301), sync=True)
    restore, data = reopen(tmp_path, storage)
    assert restore.snapshot == meta
    assert restore.entries == tuple(entry(slot) for slot in range(251, 302))
    assert restore.hard_state == hard_state(1, 301)
    assert data == b"state machine at 250"


def test_a_newer_compaction_replaces_the_older_snapshot_file(tmp_path: Path) -> None:
    storage = open_storage(tmp_path)
    storage.save(None, [entry(slot) for slot in range(1, 101)], None, sync=True)
    storage.compact(SnapshotMeta(Slot(50), MEMBERSHIP), b"fifty")
    storage.compact(SnapshotMeta(Slot(90), MEMBERSHIP), b"ninety")
    assert storage.compact(SnapshotMeta(Slot(80), MEMBERSHIP), b"older") == 0
    snapshots = [n for n in os.listdir(tmp_path / "data") if n.endswith(".snap")]
    assert len(snapshots) == 1
    restore, data = reopen(tmp_path, storage)
    assert (restore.snapshot.last_slot, data) == (90, b"ninety")
    assert restore.entries == tuple(entry(slot) for slot in range(91, 101))


def test_installed_snapshot_resets_the_log(tmp_path: Path) -> None:
    storage = open_storage(tmp_path)
    storage.save(None, [entry(slot) for slot in range(1, 40)], hard_state(1, 3), sync=True)
    meta = SnapshotMeta(Slot(20), Membership((NodeId(1), NodeId(2), NodeId(3), NodeId(5))))
    install = SnapshotInstall(meta, b"from the leader")
    storage.save(install, [entry(21, 4), entry(22, 4)], hard_state(4, 20), sync=True)
    restore, data = reopen(tmp_path, storage)
    assert restore == Restore(hard_state(4, 20), meta, (entry(21, 4), entry(22, 4)))
    assert data == b"from the leader"


def closed_with_a_snapshot(tmp_path: Path, data: bytes) -> tuple[Path, Path]:
    """A closed data dir whose log is compacted to a snapshot of `data` at slot 5; (the
    directory, its snapshot file)."""
    storage = open_storage(tmp_path)
    storage.save(None, [entry(slot) for slot in range(1, 10)], None, sync=True)
    storage.compact(SnapshotMeta(Slot(5), MEMBERSHIP), data)
    storage.close()
    directory = tmp_path / "data"
    (snapshot,) = [n for n in os.listdir(directory) if n.endswith(".snap")]
    return directory, directory / snapshot


def test_missing_snapshot_file_refuses_start(tmp_path: Path) -> None:
    directory, snapshot = closed_with_a_snapshot(tmp_path, b"five")
    os.remove(snapshot)
    with pytest.raises(StorageCorrupt, match="snapshot file is missing"):
        DurableStorage.open(str(directory))


def test_damaged_snapshot_file_refuses_start(tmp_path: Path) -> None:
    directory, snapshot = closed_with_a_snapshot(tmp_path, b"five" * 100)
    raw = bytearray(snapshot.read_bytes())
    raw[len(raw) // 2] ^= 0x08
    snapshot.write_bytes(bytes(raw))
    with pytest.raises(StorageCorrupt) as caught:
        DurableStorage.open(str(directory))
    assert caught.value.path == str(snapshot)


@pytest.mark.parametrize(
    "damage",
    ["frame header", "array header", "meta", "bin header", "first data byte", "last byte", "cut"],
)
def test_a_snapshot_file_damaged_anywhere_refuses_start(tmp_path: Path, damage: str) -> None:
    """Goal: the load hashes the data once (the frame's crc is combined from the data's)
    and decodes only the few bytes before it ahead of the check; a flipped bit anywhere,
    or a cut, is still refused. Method: damage one region of the file, reopen."""
    directory, snapshot = closed_with_a_snapshot(tmp_path, b"five" * 100)
    raw = bytearray(snapshot.read_bytes())
    data_start = len(raw) - 400
    assert raw[data_start - 3] == 0xC5, "a bin 16 header before the 400 data bytes"
    where = {
        "frame header": 0,
        "array header": FRAME_HEADER_BYTES,
        "meta": FRAME_HEADER_BYTES + 3,
        "bin header": data_start - 1,
        "first data byte": data_start,
        "last byte": len(raw) - 1,
    }
    if damage == "cut":
        del raw[-1]
    else:
        raw[where[damage]] ^= 0x08
    snapshot.write_bytes(bytes(raw))
    with pytest.raises(StorageCorrupt) as caught:
        DurableStorage.open(str(directory))
    assert caught.value.path == str(snapshot)


def test_missing_oldest_segment_is_detected_as_a_hole(tmp_path: Path) -> None:
    """Segment numbers cannot show a lost first segment; the next header's last slot does."""
    storage = open_storage(tmp_path)
    for slot in range(1, 200):
        storage.save(None, [entry(slot)], None, sync=True)
    storage.close()
    os.remove(tmp_path / "data" / segment_name(1))
    with pytest.raises(StorageCorrupt, match="no entry for slot 1 "):
        DurableStorage.open(str(tmp_path / "data"))


def test_unreferenced_snapshot_files_are_removed_at_open(tmp_path: Path) -> None:
    storage = open_storage(tmp_path)
    storage.close()
    stray = tmp_path / "data" / f"snapshot-{7:016x}-{0:08x}.snap"
    stray.write_bytes(b"written before a crash, never referenced by the log")
    open_storage(tmp_path).close()
    assert not stray.exists()


def test_saves_go_through_the_commit_thread(tmp_path: Path) -> None:
    storage = open_storage(tmp_path, WalOptions(segment_bytes_max=4096))
    ticket = storage.save_async(None, [entry(1)], hard_state(1, 0))
    storage.wait_durable(ticket)
    storage.save(None, [entry(2)], None, sync=True)
    restore, _ = reopen(tmp_path, storage)
    assert restore.entries == (entry(1), entry(2))


def test_a_data_directory_is_opened_by_one_storage_at_a_time(tmp_path: Path) -> None:
    storage = open_storage(tmp_path)
    with pytest.raises(StorageLocked, match="in use"):
        open_storage(tmp_path)
    storage.close()
    open_storage(tmp_path).close()


def test_disk_full_while_writing_a_snapshot_loses_nothing(tmp_path: Path) -> None:
    fs = FaultyFileSystem()
    directory = str(tmp_path / "data")
    storage = DurableStorage.open(directory, fs=fs, bootstrap=BOOTSTRAP, options=SMALL)
    storage.save(None, [entry(slot) for slot in range(1, 30)], hard_state(1, 29), sync=True)
    fs.space_left_bytes = 100
    with pytest.raises(StorageFull, match="disk full"):
        storage.compact(SnapshotMeta(Slot(20), MEMBERSHIP), b"s" * 1000)
    with pytest.raises(StorageFull):
        storage.save(None, [entry(30)], None, sync=True)
    storage.close()
    restore, data = reopen(tmp_path, DurableStorage.open(directory, options=SMALL))
    assert restore == Restore(hard_state(1, 29), BOOTSTRAP, tuple(entry(s) for s in range(1, 30)))
    assert data is None
    assert not [n for n in os.listdir(directory) if ".snap" in n]


@pytest.mark.parametrize("size", [0, 200, 300, 70_000])
def test_a_snapshot_written_in_pieces_reads_back_as_their_concatenation(
    tmp_path: Path, size: int
) -> None:
    """Goal: compaction from pieces (never joined in memory) writes the same file format, for
    every msgpack bin header size. Method: compact from pieces, restart, compare the bytes."""
    storage = open_storage(tmp_path)
    storage.save(None, [entry(slot) for slot in range(1, 11)], None, sync=True)
    data = bytes(index % 251 for index in range(size))
    pieces = [data[: size // 3], data[size // 3 : size // 2], data[size // 2 :]]
    storage.compact(SnapshotMeta(Slot(8), MEMBERSHIP), pieces)
    restore, loaded = reopen(tmp_path, storage)
    assert restore.snapshot.last_slot == 8
    assert loaded == data


def test_a_large_snapshot_is_synced_as_it_is_written(tmp_path: Path) -> None:
    """Goal: a large snapshot file reaches the disk in steps of SNAPSHOT_SYNC_EVERY_BYTES,
    not in one burst that would hold the members' log fsyncs behind it; it reads back
    whole. Method: count fsyncs of a small and of a 10 MiB compaction."""
    fs = FaultyFileSystem()
    directory = str(tmp_path / "data")
    storage = DurableStorage.open(directory, fs=fs, bootstrap=BOOTSTRAP, options=SMALL)
    storage.save(None, [entry(slot) for slot in range(1, 30)], None, sync=True)
    before = fs.sync_calls
    storage.compact(SnapshotMeta(Slot(10), MEMBERSHIP), [b"small"])
    small_syncs, before = fs.sync_calls - before, fs.sync_calls
    data = os.urandom(10 * 2**20)
    storage.compact(
        SnapshotMeta(Slot(20), MEMBERSHIP),
        [data[i : i + 2**18] for i in range(0, len(data), 2**18)],
    )
    large_syncs = fs.sync_calls - before
    assert large_syncs - small_syncs == len(data) // SNAPSHOT_SYNC_EVERY_BYTES
    storage.close()
    _, loaded = reopen(tmp_path, DurableStorage.open(directory, options=SMALL))
    assert loaded == data


def test_compaction_on_a_thread_while_saves_continue_loses_nothing(tmp_path: Path) -> None:
    """Goal: the member compacts on a worker thread while the event loop keeps saving
    (issue 3: "written atomically while the member keeps applying"). Method: run compact on
    a thread between saves of later slots; every saved slot above the snapshot is there."""
    storage = open_storage(tmp_path, WalOptions(segment_bytes_max=4096))
    storage.save(None, [entry(slot) for slot in range(1, 201)], hard_state(1, 200), sync=True)
    worker = threading.Thread(
        target=storage.compact, args=(SnapshotMeta(Slot(150), MEMBERSHIP), [b"a", b"b" * 9000])
    )
    worker.start()
    for slot in range(201, 401):
        storage.save(None, [entry(slot)], hard_state(1, slot), sync=slot % 20 == 0)
    worker.join()
    assert storage.snapshot_file() is not None
    restore, data = reopen(tmp_path, storage)
    assert data == b"a" + b"b" * 9000
    assert restore.snapshot.last_slot == 150
    assert restore.entries == tuple(entry(slot) for slot in range(151, 401))
