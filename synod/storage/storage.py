"""Durable storage of one member: the Paxos log, hard state and snapshots over the WAL.

Owns the data directory: WAL segments (`*.wal`, see `synod.storage.wal`) and state-machine
snapshots (`snapshot-<last slot>-<crc>.snap`). Implements the driver's `Storage` protocol
(`save`) and restart (`load`, which gives the core's `Restore` and the snapshot's bytes).

WAL records: ENTRIES (contiguous entries; slot s now holds this value, later slots stay),
HARD_STATE (promised ballot, commit slot: one checksummed record, so it is atomic), SNAPSHOT
(a reference to a snapshot file; `reset` for a snapshot installed from the leader, which
discards the whole log). Each segment's header carries a checkpoint (hard state, current
snapshot, last slot), so replay can start at the oldest segment left after compaction.

Invariants:
- a snapshot file is durable (temp file, fsync, rename, directory fsync) before the WAL
  record that references it is written; a file no durable record references is deleted at
  open;
- the log never has holes: saved entries start at most one past the last slot, and replay
  checks that every slot after the snapshot up to the last one has an entry, so a lost
  segment or record is reported, not silently skipped;
- a segment is removed only when every entry it holds is at or below a durable snapshot and
  all older segments are removed too;
- after any `StorageFatal` the instance refuses every further write;
- one open storage per directory: `open` takes the directory's lock (flock on `LOCK`) and a
  second opener gets `StorageLocked`.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import re
import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from synod.paxos.node import Restore
from synod.paxos.ready import SnapshotInstall
from synod.paxos.types import Entry, HardState, Slot, SnapshotMeta
from synod.storage import codec
from synod.storage.codec import Checkpoint, CodecError, SnapshotRef
from synod.storage.crc import crc32_combine
from synod.storage.errors import StorageCorrupt, StorageError, StorageFatal, StorageLocked
from synod.storage.fs import FileSystem, RealFileSystem
from synod.storage.wal import (
    FRAME_HEADER_BYTES,
    RecoveredSegment,
    Recovery,
    Ticket,
    Wal,
    WalOptions,
    decode_frame_header,
    encode_frame_header,
    recover,
    storage_failure,
)

log = logging.getLogger(__name__)
# A large snapshot is synced as it is written, not in one burst at the end: the members'
# log fsyncs share the disk, and one sync of a whole snapshot (84 MB after `etcdctl check
# perf --load m`) held each of theirs for hundreds of milliseconds.
SNAPSHOT_SYNC_EVERY_BYTES = 4 * 1024 * 1024

RECORD_ENTRIES = 2
RECORD_HARD_STATE = 3
RECORD_SNAPSHOT = 4
RECORD_SNAPSHOT_FILE = 5
SNAPSHOT_NAME = re.compile(r"^snapshot-[0-9a-f]{16}-[0-9a-f]{8}\.snap$")
TEMP_SUFFIX = ".tmp"
SNAPSHOT_PREFIX_BYTES_MAX = 1 << 16  # the meta before a snapshot file's data, at most
BIN_HEADER_WIDTHS = {0xC4: 1, 0xC5: 2, 0xC6: 4}  # msgpack bin 8/16/32: bytes of its length


@dataclass(slots=True)
class _Replayed:
    hard_state: HardState
    snapshot: SnapshotRef
    log_last_slot: Slot
    entries: dict[int, Entry]
    segment_max_slot: dict[int, int]
    snapshot_seq: int


@dataclass(frozen=True, slots=True)
class SnapshotFile:
    """A durable snapshot file: what it covers, where it is, the crc32 of its data."""

    meta: SnapshotMeta
    path: str
    data_crc: int


class DurableStorage:
    """A member's durable state in one directory; thread-safe; use `open`."""

    def __init__(
        self,
        fs: FileSystem,
        directory: str,
        replayed: _Replayed,
        restore: Restore,
        snapshot_data: bytes | None,
    ) -> None:
        self.fs = fs
        self.directory = directory
        self._lock = threading.Lock()
        self._hard_state = replayed.hard_state
        self._snapshot = replayed.snapshot
        self._log_last = replayed.log_last_slot
        self._segment_max_slot = replayed.segment_max_slot
        self._snapshot_seq = replayed.snapshot_seq
        self._restore = restore
        self._snapshot_data = snapshot_data
        self._failure: StorageFatal | None = None
        self.wal: Wal

    @classmethod
    def open(
        cls,
        directory: str,
        *,
        fs: FileSystem | None = None,
        bootstrap: SnapshotMeta | None = None,
        options: WalOptions | None = None,
    ) -> DurableStorage:
        """Recover `directory`, or create it from `bootstrap` (snapshot at slot 0) if empty.

        Raises StorageCorrupt if the data is damaged before its tail.
        """
        fs = fs or RealFileSystem()
        _ensure_directory(fs, directory)
        lock_directory(fs, directory)
        try:
            return cls._open_locked(fs, directory, bootstrap, options)
        except BaseException:
            fs.unlock(directory)
            raise

    @classmethod
    def _open_locked(
        cls,
        fs: FileSystem,
        directory: str,
        bootstrap: SnapshotMeta | None,
        options: WalOptions | None,
    ) -> DurableStorage:
        _remove_temp_snapshots(fs, directory)
        recovery = recover(fs, directory)
        if not recovery.segments:
            storage = cls._bootstrap(fs, directory, bootstrap)
            initial: bytes | None = storage._checkpoint()
        else:
            replayed, restore = _replay(recovery)
            data = _read_snapshot(fs, directory, replayed.snapshot)
            storage = cls(fs, directory, replayed, restore, data)
            initial = None
        storage._remove_unreferenced_snapshots()
        storage.wal = Wal(fs, directory, recovery, storage._checkpoint, options, initial)
        return storage

    @classmethod
    def _bootstrap(
        cls, fs: FileSystem, directory: str, bootstrap: SnapshotMeta | None
    ) -> DurableStorage:
        if any(SNAPSHOT_NAME.match(name) for name in fs.listdir(directory)):
            raise StorageCorrupt(directory, None, "snapshot files but no log segments")
        if bootstrap is None:
            raise StorageError(f"{directory} holds no data and no bootstrap membership was given")
        assert bootstrap.last_slot == 0, "a new member starts from the empty snapshot"
        ref = SnapshotRef(bootstrap, None, 0, 0)
        replayed = _Replayed(HardState(), ref, Slot(0), {}, {}, 1)
        return cls(fs, directory, replayed, Restore(HardState(), bootstrap, ()), None)

    def load(self) -> tuple[Restore, bytes | None]:
        """What was recovered at open: the core's Restore and the snapshot's bytes (None: empty)."""
        return self._restore, self._snapshot_data

    def release_loaded(self) -> None:
        """The caller restored from `load()`: drop this instance's references to the snapshot's
        bytes and the log tail, which can be hundreds of MB and are stale once compacted."""
        self._snapshot_data = None
        self._restore = dataclasses.replace(self._restore, entries=())

    # -- writing ----------------------------------------------------------------------------

    def save(
        self,
        snapshot: SnapshotInstall | None,
        entries: Sequence[Entry],
        hard_state: HardState | None,
        sync: bool,
    ) -> None:
        """The driver's Storage.save: durable before returning when `sync`."""
        ticket = self.save_async(snapshot, entries, hard_state, lazy=not sync)
        if sync:
            self.wait_durable(ticket)

    def save_async(
        self,
        snapshot: SnapshotInstall | None,
        entries: Sequence[Entry],
        hard_state: HardState | None,
        lazy: bool = False,
    ) -> Ticket:
        """Queue a save (a snapshot install is written and synced at once); see `wait_durable`.
        `lazy`: nobody will wait for it (see `Wal.append`)."""
        with self._lock:
            self._raise_if_failed()
            records: list[tuple[int, bytes]] = []
            ref = None
            if snapshot is not None:
                ref = self._write_snapshot_file(snapshot.meta, [snapshot.data])
                records.append(
                    (RECORD_SNAPSHOT, codec.pack([codec.encode_snapshot_ref(ref), True]))
                )
            if entries:
                log_last = self._log_last if ref is None else ref.meta.last_slot
                assert entries[0].slot <= log_last + 1, "saved entries must not leave a hole"
                records.extend(self._entry_records(entries))
            if hard_state is not None:
                records.append((RECORD_HARD_STATE, codec.pack(codec.encode_hard_state(hard_state))))
            ticket = self._append(records, lazy and ref is None)
            if ref is not None:
                self._apply_install(ref, ticket.segment_seq)
            if entries:
                self._apply_entries(entries, ticket.segment_seq)
            if hard_state is not None:
                self._hard_state = hard_state
            return ticket

    @property
    def saved_hard_state(self) -> HardState:
        """The hard state of the newest save (written, not necessarily durable yet)."""
        return self._hard_state

    def wait_durable(self, ticket: Ticket) -> None:
        try:
            self.wal.wait_durable(ticket)
        except StorageFatal as failure:
            self._failure = self._failure or failure
            raise

    def compact(self, meta: SnapshotMeta, data: bytes | Sequence[bytes]) -> int:
        """Persist a state-machine snapshot and remove log segments wholly below it.

        `data` is the snapshot's bytes, or pieces whose concatenation they are (never
        joined: a large snapshot is written piece by piece). Safe to call from a thread other
        than the one saving: the file is written and the record waited for without holding
        the lock that `save_async` takes, so the saver only ever waits for a few list
        operations. Returns how many segments were removed. A snapshot not newer than the
        current one changes nothing.
        """
        pieces = [data] if isinstance(data, bytes) else data
        with self._lock:
            self._raise_if_failed()
            if meta.last_slot <= self._snapshot.meta.last_slot:
                return 0
        ref = self._write_snapshot_file(meta, pieces)
        with self._lock:
            self._raise_if_failed()
            if meta.last_slot <= self._snapshot.meta.last_slot:
                return 0  # a newer snapshot was installed meanwhile; the file goes at next open
            assert meta.last_slot <= self._log_last, "a snapshot cannot cover unlogged slots"
            payload = codec.pack([codec.encode_snapshot_ref(ref), False])
            ticket = self._append([(RECORD_SNAPSHOT, payload)])
            self._snapshot, self._snapshot_seq = ref, ticket.segment_seq
        self.wait_durable(ticket)
        removed = self._remove_segments_below(meta.last_slot, ticket.segment_seq)
        with self._lock:
            self._remove_unreferenced_snapshots()
        return removed

    def snapshot_file(self) -> SnapshotFile | None:
        """The current snapshot's file (None: the empty bootstrap snapshot has none)."""
        with self._lock:
            ref = self._snapshot
        if ref.file_name is None:
            return None
        return SnapshotFile(ref.meta, os.path.join(self.directory, ref.file_name), ref.data_crc)

    def close(self) -> None:
        """Make everything saved durable, stop the committer, release the directory."""
        try:
            self.wal.close()
        finally:
            self.fs.unlock(self.directory)

    # -- internals --------------------------------------------------------------------------

    def _checkpoint(self) -> bytes:
        """The state before the records being appended: the next segment's header."""
        return codec.encode_checkpoint(Checkpoint(self._hard_state, self._snapshot, self._log_last))

    def _append(self, records: list[tuple[int, bytes]], lazy: bool = False) -> Ticket:
        try:
            return self.wal.append(records, lazy)
        except StorageFatal as failure:
            self._failure = self._failure or failure
            raise

    def _entry_records(self, entries: Sequence[Entry]) -> list[tuple[int, bytes]]:
        """ENTRIES records of at most `record_bytes_max` each, in slot order."""
        for earlier, later in itertools.pairwise(entries):
            assert later.slot == earlier.slot + 1, "saved entries are contiguous"
        payload = codec.encode_entries(list(entries))
        if len(payload) <= self.wal.options.record_bytes_max or len(entries) == 1:
            return [(RECORD_ENTRIES, payload)]
        middle = len(entries) // 2
        return self._entry_records(entries[:middle]) + self._entry_records(entries[middle:])

    def _apply_install(self, ref: SnapshotRef, seq: int) -> None:
        for old in self._segment_max_slot:
            self._segment_max_slot[old] = 0
        self._segment_max_slot[seq] = 0
        self._snapshot, self._snapshot_seq = ref, seq
        self._log_last = ref.meta.last_slot

    def _apply_entries(self, entries: Sequence[Entry], seq: int) -> None:
        last = entries[-1].slot
        self._log_last = max(self._log_last, last)
        self._segment_max_slot[seq] = max(self._segment_max_slot.get(seq, 0), last)

    def _remove_segments_below(self, last_slot: Slot, snapshot_seq: int) -> int:
        through = None
        with self._lock:
            for seq in range(self.wal.oldest_seq, snapshot_seq):
                if self._segment_max_slot.get(seq, 0) > last_slot:
                    break
                through = seq
        if through is None:
            return 0
        removed = self.wal.remove_segments_through(through)
        with self._lock:
            for seq in [seq for seq in self._segment_max_slot if seq <= through]:
                del self._segment_max_slot[seq]
        log.info("storage: compacted %d segments below slot %d", removed, last_slot)
        return removed

    def _write_snapshot_file(self, meta: SnapshotMeta, pieces: Sequence[bytes]) -> SnapshotRef:
        """Write the snapshot durably under its final name; the WAL may then reference it.

        The file is one frame whose payload is msgpack `[meta, data]`; the frame's header and
        the bin header of `data` are computed from the pieces, which are written as they are.
        """
        crc = 0
        size = 0
        for piece in pieces:
            crc = zlib.crc32(piece, crc)
            size += len(piece)
        name = f"snapshot-{meta.last_slot:016x}-{crc:08x}.snap"
        path = os.path.join(self.directory, name)
        temp = path + TEMP_SUFFIX
        prefix = b"\x92" + codec.pack(codec.encode_snapshot_meta(meta)) + _bin_header(size)
        try:
            if self.fs.exists(temp):
                self.fs.remove(temp)
            file = self.fs.open(temp, create=True)
            try:
                payload_crc = zlib.crc32(prefix)
                for piece in pieces:
                    payload_crc = zlib.crc32(piece, payload_crc)
                header = encode_frame_header(
                    RECORD_SNAPSHOT_FILE, len(prefix) + size, payload_crc, 0
                )
                offset = 0
                unsynced = 0
                for chunk in (header, prefix, *pieces):
                    file.write_at(offset, chunk)
                    offset += len(chunk)
                    unsynced += len(chunk)
                    if unsynced >= SNAPSHOT_SYNC_EVERY_BYTES:
                        file.sync()
                        unsynced = 0
                file.sync()
            finally:
                file.close()
            self.fs.rename(temp, path)
            self.fs.sync_dir(self.directory)
        except OSError as error:
            self._failure = storage_failure(f"writing snapshot {path}", error)
            raise self._failure from error
        return SnapshotRef(meta, name, size, crc)

    def _remove_unreferenced_snapshots(self) -> None:
        names = [
            name
            for name in self.fs.listdir(self.directory)
            if SNAPSHOT_NAME.match(name) and name != self._snapshot.file_name
        ]
        for name in names:
            self.fs.remove(os.path.join(self.directory, name))
        if names:
            self.fs.sync_dir(self.directory)

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise type(self._failure)(*self._failure.args) from self._failure
        if self.wal.failure is not None:
            self._failure = StorageFatal(str(self.wal.failure))
            raise self._failure


def _bin_header(size: int) -> bytes:
    """msgpack's header of a bin value of `size` bytes (the smallest form, as packb writes)."""
    if size < 1 << 8:
        return b"\xc4" + size.to_bytes(1, "big")
    if size < 1 << 16:
        return b"\xc5" + size.to_bytes(2, "big")
    assert size < 1 << 32
    return b"\xc6" + size.to_bytes(4, "big")


def lock_directory(fs: FileSystem, directory: str) -> None:
    """Take the data directory for this process; StorageLocked if a running member has it."""
    try:
        fs.lock(directory)
    except BlockingIOError as error:
        raise StorageLocked(
            f"{directory} is in use by another process (a running member?): stop it first"
        ) from error


def verify(directory: str, fs: FileSystem | None = None) -> Restore | None:
    """Check a data directory as `open` would (a torn tail is truncated); None if it has no log.

    Raises StorageCorrupt if the member would refuse to start from it. The caller must hold
    the directory's lock (`lock_directory`).
    """
    fs = fs or RealFileSystem()
    _remove_temp_snapshots(fs, directory)
    recovery = recover(fs, directory)
    if not recovery.segments:
        if any(SNAPSHOT_NAME.match(name) for name in fs.listdir(directory)):
            raise StorageCorrupt(directory, None, "snapshot files but no log segments")
        return None
    replayed, restore = _replay(recovery)
    _read_snapshot(fs, directory, replayed.snapshot)
    return restore


def _ensure_directory(fs: FileSystem, directory: str) -> None:
    if fs.exists(directory):
        return
    fs.makedirs(directory)
    fs.sync_dir(os.path.dirname(os.path.abspath(directory)) or "/")


def _remove_temp_snapshots(fs: FileSystem, directory: str) -> None:
    temps = [n for n in fs.listdir(directory) if n.startswith("snapshot-") and n.endswith(".tmp")]
    for name in temps:
        fs.remove(os.path.join(directory, name))
    if temps:
        fs.sync_dir(directory)


def _corrupt_record(segment: RecoveredSegment, offset: int, error: CodecError) -> StorageCorrupt:
    return StorageCorrupt(segment.path, offset, f"record does not decode: {error}")


def _replay(recovery: Recovery) -> tuple[_Replayed, Restore]:
    """Rebuild the state from the segments; raise StorageCorrupt if it is inconsistent."""
    first = recovery.segments[0]
    try:
        checkpoint = codec.decode_checkpoint(first.checkpoint)
    except CodecError as error:
        raise _corrupt_record(first, 0, error) from error
    state = _Replayed(
        checkpoint.hard_state,
        checkpoint.snapshot,
        checkpoint.log_last_slot,
        {},
        {},
        first.seq,
    )
    for index, segment in enumerate(recovery.segments):
        if index > 0:
            _check_checkpoint(segment, state)
        for record in segment.records:
            try:
                _replay_record(segment, record.type, record.payload, record.offset, state)
            except CodecError as error:
                raise _corrupt_record(segment, record.offset, error) from error
    base = state.snapshot.meta.last_slot
    tail = []
    for slot in range(base + 1, state.log_last_slot + 1):
        if slot not in state.entries:
            raise StorageCorrupt(
                recovery.directory,
                None,
                f"the log has no entry for slot {slot} (snapshot ends at {base}, log at "
                f"{state.log_last_slot}): a segment or record is missing",
            )
        tail.append(state.entries[slot])
    restore = Restore(state.hard_state, state.snapshot.meta, tuple(tail))
    state.entries = {}
    return state, restore


def _check_checkpoint(segment: RecoveredSegment, state: _Replayed) -> None:
    try:
        checkpoint = codec.decode_checkpoint(segment.checkpoint)
    except CodecError as error:
        raise _corrupt_record(segment, 0, error) from error
    expected = Checkpoint(state.hard_state, state.snapshot, state.log_last_slot)
    if checkpoint != expected:
        raise StorageCorrupt(
            segment.path, 0, "segment header disagrees with the log before it: records are missing"
        )


def _replay_record(
    segment: RecoveredSegment, record_type: int, payload: bytes, offset: int, state: _Replayed
) -> None:
    if record_type == RECORD_ENTRIES:
        entries = codec.decode_entries(payload)
        if not entries or entries[0].slot > state.log_last_slot + 1:
            raise StorageCorrupt(segment.path, offset, "entries leave a hole in the log")
        for entry in entries:
            state.entries[entry.slot] = entry
        last = entries[-1].slot
        state.log_last_slot = max(state.log_last_slot, last)
        seq_max = state.segment_max_slot.get(segment.seq, 0)
        state.segment_max_slot[segment.seq] = max(seq_max, last)
    elif record_type == RECORD_HARD_STATE:
        state.hard_state = codec.decode_hard_state(codec.unpack(payload))
    elif record_type == RECORD_SNAPSHOT:
        ref_raw, reset = codec.unpack(payload)
        ref = codec.decode_snapshot_ref(ref_raw)
        if reset:
            state.entries.clear()
            state.segment_max_slot = dict.fromkeys(state.segment_max_slot, 0)
            state.segment_max_slot[segment.seq] = 0
            state.log_last_slot = ref.meta.last_slot
        else:
            state.log_last_slot = max(state.log_last_slot, ref.meta.last_slot)
            for slot in [slot for slot in state.entries if slot <= ref.meta.last_slot]:
                del state.entries[slot]
        state.snapshot, state.snapshot_seq = ref, segment.seq
    else:
        raise StorageCorrupt(segment.path, offset, f"unknown record type {record_type}")


def _read_snapshot(fs: FileSystem, directory: str, ref: SnapshotRef) -> bytes | None:
    """The referenced snapshot's bytes, verified against its reference; None for the empty one."""
    if ref.file_name is None:
        return None
    path = os.path.join(directory, ref.file_name)
    if not fs.exists(path):
        raise StorageCorrupt(path, None, "the current snapshot file is missing")
    meta, data, data_crc = _decode_snapshot_file(fs.read(path), path)
    if meta != ref.meta or data_crc != ref.data_crc:
        raise StorageCorrupt(path, 0, "snapshot file does not match the log's reference to it")
    return data


def decode_snapshot_file(raw: bytes, path: str) -> tuple[SnapshotMeta, bytes]:
    """A snapshot file's metadata and data; StorageCorrupt if it fails its checksum."""
    meta, data, _ = _decode_snapshot_file(raw, path)
    return meta, data


def _decode_snapshot_file(raw: bytes, path: str) -> tuple[SnapshotMeta, bytes, int]:
    """(meta, data, crc32 of data). The data is hashed once: the frame's crc, over the
    payload `[meta, data]`, is combined from the crc of the few bytes before the data and
    the data's own crc, which the caller also compares with the log's reference. Only those
    few bytes are decoded before the checksum passed."""
    header = decode_frame_header(raw, 0)
    payload = memoryview(raw)[FRAME_HEADER_BYTES:]  # a view: hundreds of MB are not copied
    if header is None or header.type != RECORD_SNAPSHOT_FILE or header.length != len(payload):
        raise StorageCorrupt(path, 0, "snapshot file fails its checksum")
    meta_raw, start = _split_snapshot_payload(payload, path)
    data = bytes(payload[start:])
    data_crc = zlib.crc32(data)
    if crc32_combine(zlib.crc32(payload[:start]), data_crc, len(data)) != header.payload_crc:
        raise StorageCorrupt(path, 0, "snapshot file fails its checksum")
    try:
        meta = codec.decode_snapshot_meta(meta_raw)
    except (CodecError, ValueError) as error:
        raise StorageCorrupt(path, 0, f"snapshot file does not decode: {error}") from error
    return meta, data, data_crc


def _split_snapshot_payload(payload: memoryview, path: str) -> tuple[Any, int]:
    """(meta as decoded, where the data starts) of a snapshot file's payload `[meta, data]`:
    the array and bin headers `_write_snapshot_file` wrote, read from its first bytes."""
    try:
        unpacker = msgpack.Unpacker(max_buffer_size=SNAPSHOT_PREFIX_BYTES_MAX)
        unpacker.feed(payload[:SNAPSHOT_PREFIX_BYTES_MAX])
        if unpacker.read_array_header() != 2:
            raise StorageCorrupt(path, 0, "snapshot file fails its checksum")
        meta_raw = unpacker.unpack()
        at = unpacker.tell()
        width = BIN_HEADER_WIDTHS.get(payload[at])
    except (ValueError, TypeError, IndexError, msgpack.UnpackException) as error:
        raise StorageCorrupt(path, 0, "snapshot file fails its checksum") from error
    if width is None or at + 1 + width > len(payload):
        raise StorageCorrupt(path, 0, "snapshot file holds no data bytes")
    start = at + 1 + width
    if int.from_bytes(payload[at + 1 : start], "big") != len(payload) - start:
        raise StorageCorrupt(path, 0, "snapshot file fails its checksum")
    return meta_raw, start
