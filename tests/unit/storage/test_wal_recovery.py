"""Recovery of the WAL from damaged files on a real disk.

Goal: a torn tail (bytes never reported durable) is truncated with a log line; damage before
the tail, a missing segment, a failed fsync and a full disk are reported by typed errors and
nothing that was acknowledged is lost (DESIGN.md, storage: "guarantees that what it reports
durable survives power loss, detects corruption by checksum, never returns a torn record").
Method: write through the WAL, damage the files directly, recover.
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from storage_helpers import FaultyFileSystem

from synod.storage.errors import StorageCorrupt, StorageFatal, StorageFull
from synod.storage.fs import RealFile, RealFileSystem
from synod.storage.wal import (
    FRAME_HEADER_BYTES,
    Recovery,
    Wal,
    WalOptions,
    encode_frame,
    recover,
    segment_name,
)

RECORD = 7


def payload(number: int) -> bytes:
    return f"record-{number:04d}".encode() * 3


def open_wal(directory: Path, fs: RealFileSystem | None = None, **options: Any) -> Wal:
    fs = fs or RealFileSystem()
    directory.mkdir(exist_ok=True)
    recovery = recover(fs, str(directory))
    settings: dict[str, Any] = {
        "segment_bytes_max": 1 << 20,
        "preallocate": False,
        "sync_thread": False,
    }
    settings.update(options)
    return Wal(fs, str(directory), recovery, lambda: b"cp", WalOptions(**settings), b"cp")


def write_records(directory: Path, count: int, **options: Any) -> None:
    wal = open_wal(directory, **options)
    for number in range(count):
        wal.append_durably([(RECORD, payload(number))])
    wal.close()


def payloads(recovery: Recovery) -> list[bytes]:
    return [record.payload for segment in recovery.segments for record in segment.records]


def only_segment(directory: Path) -> Path:
    (name,) = [n for n in os.listdir(directory) if n.endswith(".wal")]
    return directory / name


def test_torn_tail_record_is_truncated_with_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_records(tmp_path, 10)
    segment = only_segment(tmp_path)
    size = segment.stat().st_size
    os.truncate(segment, size - 5)
    with caplog.at_level(logging.WARNING, logger="synod.storage.wal"):
        recovery = recover(RealFileSystem(), str(tmp_path))
    assert payloads(recovery) == [payload(n) for n in range(9)]
    assert recovery.truncated_bytes == FRAME_HEADER_BYTES + len(payload(9)) - 5
    assert "truncating torn tail" in caplog.text
    assert str(segment) in caplog.text
    assert segment.stat().st_size == size - FRAME_HEADER_BYTES - len(payload(9))


def test_log_continues_after_a_truncated_tail(tmp_path: Path) -> None:
    write_records(tmp_path, 4)
    segment = only_segment(tmp_path)
    os.truncate(segment, segment.stat().st_size - 1)
    wal = open_wal(tmp_path)
    wal.append_durably([(RECORD, b"after")])
    wal.close()
    assert payloads(recover(RealFileSystem(), str(tmp_path)))[-2:] == [payload(2), b"after"]


def test_half_written_record_at_the_tail_is_dropped(tmp_path: Path) -> None:
    """A short write cut by a crash: only the first half of the last frame reached the disk."""
    write_records(tmp_path, 3)
    segment = only_segment(tmp_path)
    frame = encode_frame(RECORD, b"never acknowledged" * 10, 0)
    with open(segment, "ab") as file:
        file.write(frame[: len(frame) // 2])
    assert payloads(recover(RealFileSystem(), str(tmp_path))) == [payload(n) for n in range(3)]


def test_short_pwrites_are_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel may write fewer bytes than asked: the rest is written, nothing is lost."""
    real_pwrite = os.pwrite

    def short_pwrite(fd: int, data: bytes, offset: int) -> int:
        return real_pwrite(fd, bytes(data[:3]), offset)

    monkeypatch.setattr(os, "pwrite", short_pwrite)
    write_records(tmp_path, 5)
    monkeypatch.undo()
    assert payloads(recover(RealFileSystem(), str(tmp_path))) == [payload(n) for n in range(5)]


def test_real_file_reports_a_pwrite_that_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = RealFileSystem().open(str(tmp_path / "f"), create=True)
    assert isinstance(file, RealFile)
    monkeypatch.setattr(os, "pwrite", lambda fd, data, offset: 0)
    with pytest.raises(OSError):
        file.write_at(0, b"abc")
    file.close()


def test_bit_flip_in_the_middle_refuses_start_naming_file_and_offset(tmp_path: Path) -> None:
    write_records(tmp_path, 10)
    segment = only_segment(tmp_path)
    data = bytearray(segment.read_bytes())
    offsets = [m for m in range(len(data)) if data[m:].startswith(payload(5))]
    damaged_frame = offsets[0] - FRAME_HEADER_BYTES
    data[offsets[0] + 4] ^= 0x01
    segment.write_bytes(bytes(data))
    with pytest.raises(StorageCorrupt) as caught:
        recover(RealFileSystem(), str(tmp_path))
    assert caught.value.path == str(segment)
    assert caught.value.offset == damaged_frame
    assert f"{segment} at offset {damaged_frame}" in str(caught.value)


def test_bit_flip_in_a_frame_length_still_refuses_start(tmp_path: Path) -> None:
    write_records(tmp_path, 10)
    segment = only_segment(tmp_path)
    data = bytearray(segment.read_bytes())
    frame_start = data.index(payload(3)) - FRAME_HEADER_BYTES
    data[frame_start] ^= 0x40
    segment.write_bytes(bytes(data))
    with pytest.raises(StorageCorrupt) as caught:
        recover(RealFileSystem(), str(tmp_path))
    assert caught.value.offset == frame_start


def test_zero_filled_tail_is_treated_as_unwritten(tmp_path: Path) -> None:
    """Zeros where the last records were (a file extended but never written): end of log."""
    write_records(tmp_path, 6, preallocate=True)
    segment = only_segment(tmp_path)
    data = bytearray(segment.read_bytes())
    start = data.index(payload(4)) - FRAME_HEADER_BYTES
    data[start:] = bytes(len(data) - start)
    segment.write_bytes(bytes(data))
    assert payloads(recover(RealFileSystem(), str(tmp_path))) == [payload(n) for n in range(4)]
    wal = open_wal(tmp_path, preallocate=True)
    wal.append_durably([(RECORD, b"next")])
    wal.close()
    assert payloads(recover(RealFileSystem(), str(tmp_path)))[-1] == b"next"


def test_missing_middle_segment_refuses_start(tmp_path: Path) -> None:
    write_records(tmp_path, 200, segment_bytes_max=4096)
    segments = sorted(n for n in os.listdir(tmp_path) if n.endswith(".wal"))
    assert len(segments) >= 3
    os.remove(tmp_path / segments[1])
    with pytest.raises(StorageCorrupt) as caught:
        recover(RealFileSystem(), str(tmp_path))
    assert caught.value.path == str(tmp_path / segment_name(2))
    assert "missing" in str(caught.value)


def test_damage_in_a_sealed_segment_refuses_start(tmp_path: Path) -> None:
    write_records(tmp_path, 200, segment_bytes_max=4096)
    first = tmp_path / segment_name(1)
    data = bytearray(first.read_bytes())
    position = data.index(payload(2))
    data[position] ^= 0xFF
    first.write_bytes(bytes(data))
    with pytest.raises(StorageCorrupt) as caught:
        recover(RealFileSystem(), str(tmp_path))
    assert caught.value.path == str(first)
    assert caught.value.offset == position - FRAME_HEADER_BYTES


def test_sealed_segment_cut_short_refuses_start(tmp_path: Path) -> None:
    write_records(tmp_path, 200, segment_bytes_max=4096)
    first = tmp_path / segment_name(1)
    os.truncate(first, first.stat().st_size - 10)
    with pytest.raises(StorageCorrupt):
        recover(RealFileSystem(), str(tmp_path))


def test_damaged_segment_header_refuses_start(tmp_path: Path) -> None:
    write_records(tmp_path, 3)
    segment = only_segment(tmp_path)
    data = bytearray(segment.read_bytes())
    data[FRAME_HEADER_BYTES] ^= 0x02
    segment.write_bytes(bytes(data))
    with pytest.raises(StorageCorrupt) as caught:
        recover(RealFileSystem(), str(tmp_path))
    assert caught.value.offset == 0


def test_fsync_failure_is_fatal_and_never_retried(tmp_path: Path) -> None:
    fs = FaultyFileSystem()
    wal = open_wal(tmp_path, fs)
    wal.append_durably([(RECORD, payload(0))])
    fs.sync_error = OSError(errno.EIO, "Input/output error")
    ticket = wal.append([(RECORD, payload(1))])
    with pytest.raises(StorageFatal, match="durability unknown"):
        wal.wait_durable(ticket)
    calls = fs.sync_calls
    fs.sync_error = None
    with pytest.raises(StorageFatal):
        wal.wait_durable(ticket)
    with pytest.raises(StorageFatal):
        wal.append([(RECORD, payload(2))])
    assert fs.sync_calls == calls, "an fsync that failed must not be retried"
    wal.close()
    assert payloads(recover(RealFileSystem(), str(tmp_path)))[0] == payload(0)


def test_fsync_failure_on_the_commit_thread_fails_every_waiter(tmp_path: Path) -> None:
    fs = FaultyFileSystem()
    wal = open_wal(tmp_path, fs, sync_thread=True)
    wal.append_durably([(RECORD, payload(0))])
    fs.sync_error = OSError(errno.EIO, "Input/output error")
    future = wal.durable_future(wal.append([(RECORD, payload(1))]))
    with pytest.raises(StorageFatal):
        future.result()
    with pytest.raises(StorageFatal):
        wal.append([(RECORD, payload(2))])
    wal.close()


def test_disk_full_stops_writes_and_loses_nothing_durable(tmp_path: Path) -> None:
    fs = FaultyFileSystem()
    wal = open_wal(tmp_path, fs)
    for number in range(5):
        wal.append_durably([(RECORD, payload(number))])
    fs.space_left_bytes = 20
    with pytest.raises(StorageFull, match="disk full"):
        wal.append_durably([(RECORD, payload(5))])
    with pytest.raises(StorageFull):
        wal.append([(RECORD, payload(6))])
    wal.close()
    assert payloads(recover(RealFileSystem(), str(tmp_path))) == [payload(n) for n in range(5)]


def test_disk_full_when_a_new_segment_is_preallocated(tmp_path: Path) -> None:
    fs = FaultyFileSystem()
    wal = open_wal(tmp_path, fs, segment_bytes_max=4096, preallocate=True)
    written = 0
    while wal.oldest_seq == 1 and written < 40:
        wal.append_durably([(RECORD, payload(written))])
        written += 1
    fs.space_left_bytes = 10_000
    with pytest.raises(StorageFull):
        for number in range(written, written + 200):
            wal.append_durably([(RECORD, payload(number))])
            written = number + 1
    wal.close()
    assert payloads(recover(RealFileSystem(), str(tmp_path))) == [
        payload(n) for n in range(written)
    ]


def test_missing_newest_segment_is_detected_by_the_head_file(tmp_path: Path) -> None:
    write_records(tmp_path, 200, segment_bytes_max=4096)
    segments = sorted(n for n in os.listdir(tmp_path) if n.endswith(".wal"))
    os.remove(tmp_path / segments[-1])
    with pytest.raises(StorageCorrupt, match="newest segment") as caught:
        recover(RealFileSystem(), str(tmp_path))
    assert caught.value.path == str(tmp_path / segments[-1])
