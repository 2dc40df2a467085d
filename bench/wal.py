"""Benchmark of the WAL's group commit: durable appends/s at 1, 16 and 256 writer threads.

Each writer thread loops: append one record, wait until it is durable. Alongside, the raw
rate of `write + fsync` (and `write + fdatasync`, which the WAL uses) on the same directory
is measured in the same run, so the table shows how far group commit lifts throughput above
one-fsync-per-record. Not part of the test suite.

    .venv/bin/python bench/wal.py [--dir DIR] [--seconds 3] [--record-bytes 256]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time

from synod.storage.fs import RealFileSystem
from synod.storage.wal import Wal, WalOptions, recover

RECORD_TYPE = 2


def raw_sync_rate(directory: str, seconds: float, record_bytes: int, use_fsync: bool) -> float:
    """Appends/s when every append is followed by its own fsync (or fdatasync)."""
    path = os.path.join(directory, "raw-fsync.bin")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    payload = b"r" * record_bytes
    sync = os.fsync if use_fsync else os.fdatasync
    count, offset = 0, 0
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    try:
        while time.perf_counter() < deadline:
            os.pwrite(fd, payload, offset)
            offset += record_bytes
            sync(fd)
            count += 1
    finally:
        os.close(fd)
        os.remove(path)
    return count / (time.perf_counter() - started)


def wal_rate(
    directory: str, seconds: float, record_bytes: int, writers: int
) -> tuple[float, float, float]:
    """(durable appends/s, MB/s of payload, fsyncs/s) with `writers` threads."""
    wal_dir = os.path.join(directory, f"wal-{writers}")
    os.makedirs(wal_dir)
    fs = RealFileSystem()
    wal = Wal(fs, wal_dir, recover(fs, wal_dir), lambda: b"", WalOptions(), b"")
    payload = b"w" * record_bytes
    stop = threading.Event()
    counts = [0] * writers

    def writer(index: int) -> None:
        while not stop.is_set():
            wal.wait_durable(wal.append([(RECORD_TYPE, payload)]))
            counts[index] += 1

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(writers)]
    syncs_before = wal.sync_count
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    syncs = wal.sync_count - syncs_before
    wal.close()
    shutil.rmtree(wal_dir)
    appends = sum(counts) / elapsed
    return appends, appends * record_bytes / 1e6, syncs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=None, help="directory on the disk to measure")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--record-bytes", type=int, default=256)
    parser.add_argument("--writers", default="1,16,256")
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="synod-bench-wal-", dir=args.dir)
    record_bytes, seconds = args.record_bytes, args.seconds
    try:
        fdatasync_rate = raw_sync_rate(directory, seconds, record_bytes, use_fsync=False)
        print(f"disk: {directory}  record: {record_bytes} B  {seconds:.0f} s per case")
        print(f"raw write+fdatasync (what the WAL issues): {fdatasync_rate:.0f} /s")
        print("raw write+fsync is measured right before and after each case (shared disks vary)")
        print()
        header = f"{'writers':>8} {'appends/s':>11} {'MB/s':>8} {'fsyncs/s':>9} {'rec/fsync':>9}"
        print(header + f" {'raw fsync/s':>11} {'x raw':>7} {'x 1 writer':>10}")
        single = None
        for writers in (int(w) for w in args.writers.split(",")):
            before = raw_sync_rate(directory, 1.0, record_bytes, use_fsync=True)
            appends, megabytes, syncs = wal_rate(directory, seconds, record_bytes, writers)
            after = raw_sync_rate(directory, 1.0, record_bytes, use_fsync=True)
            raw = (before + after) / 2
            single = single or appends
            print(
                f"{writers:>8} {appends:>11.0f} {megabytes:>8.2f} {syncs:>9.0f} "
                f"{appends / max(syncs, 1e-9):>9.1f} {raw:>11.0f} {appends / raw:>7.2f} "
                f"{appends / single:>10.2f}"
            )
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
