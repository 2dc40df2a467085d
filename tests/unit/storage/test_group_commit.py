"""Group commit: one fsync for everything appended while the previous fsync was in flight.

Goal: throughput grows with concurrency (fewer fsyncs than records) while every writer's
acknowledgement still waits for its own record to be durable (DESIGN.md, storage).
Method: a real file system whose fsync can be held at a gate, so the overlap between appends
and an in-flight fsync is arranged by the test, with no sleeps.
"""

from __future__ import annotations

import threading
from pathlib import Path

from storage_helpers import FaultyFile, FaultyFileSystem

from synod.storage.fs import RealFileSystem, WritableFile
from synod.storage.wal import Recovery, Wal, WalOptions, recover

RECORD = 9
WAIT_S = 10.0


class GatedFileSystem(FaultyFileSystem):
    """fsync announces itself, then waits for the test to open the gate (while `gated`)."""

    def __init__(self) -> None:
        super().__init__()
        self.gated = False
        self.sync_started = threading.Semaphore(0)
        self.gate = threading.Semaphore(0)

    def open(self, path: str, create: bool) -> WritableFile:
        return GatedFile(self, RealFileSystem.open(self, path, create))


class GatedFile(FaultyFile):
    def __init__(self, fs: GatedFileSystem, inner: WritableFile) -> None:
        super().__init__(fs, inner)
        self.gated_fs = fs

    def sync(self) -> None:
        if self.gated_fs.gated:
            self.gated_fs.sync_started.release()
            assert self.gated_fs.gate.acquire(timeout=WAIT_S)
        super().sync()


def open_wal(directory: Path, fs: FaultyFileSystem) -> Wal:
    recovery = recover(fs, str(directory))
    return Wal(fs, str(directory), recovery, lambda: b"", WalOptions(preallocate=False), b"")


def payloads(recovery: Recovery) -> list[bytes]:
    return [record.payload for segment in recovery.segments for record in segment.records]


def test_records_appended_during_an_fsync_share_the_next_fsync(tmp_path: Path) -> None:
    fs = GatedFileSystem()
    wal = open_wal(tmp_path, fs)
    fs.gated = True
    first = wal.durable_future(wal.append([(RECORD, b"first")]))
    assert fs.sync_started.acquire(timeout=WAIT_S)
    later = [wal.durable_future(wal.append([(RECORD, b"later-%d" % n)])) for n in range(5)]
    assert not first.done()
    assert not any(future.done() for future in later), "acknowledged before its fsync"
    fs.gate.release()
    first.result(timeout=WAIT_S)
    syncs_before = fs.sync_calls
    assert fs.sync_started.acquire(timeout=WAIT_S)
    assert not any(future.done() for future in later), "acknowledged by an earlier fsync"
    fs.gated = False
    fs.gate.release()
    for future in later:
        future.result(timeout=WAIT_S)
    assert fs.sync_calls == syncs_before + 1, "the five later records took one fsync"
    wal.close()
    assert len(payloads(recover(fs, str(tmp_path)))) == 6


def test_many_writer_threads_need_fewer_fsyncs_than_records(tmp_path: Path) -> None:
    fs = GatedFileSystem()
    wal = open_wal(tmp_path, fs)
    writers, per_writer = 16, 20
    appended = threading.Semaphore(0)
    errors: list[BaseException] = []

    def writer(number: int) -> None:
        try:
            for index in range(per_writer):
                ticket = wal.append([(RECORD, b"w%d-%d" % (number, index))])
                if index == 0:
                    appended.release()
                wal.wait_durable(ticket)
                assert wal._durable >= ticket.number
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    fs.gated = True
    threads = [threading.Thread(target=writer, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for _ in range(writers):
        assert appended.acquire(timeout=WAIT_S)
    fs.gated = False
    while fs.sync_started.acquire(blocking=False):
        fs.gate.release()
    fs.gate.release()
    for thread in threads:
        thread.join(timeout=WAIT_S)
    assert not errors
    total = writers * per_writer
    assert fs.sync_calls < total
    wal.close()
    found = payloads(recover(fs, str(tmp_path)))
    assert sorted(found) == sorted(b"w%d-%d" % (n, i) for n in range(writers) for i in range(20))


def test_waiters_registered_out_of_ticket_order_are_all_released(tmp_path: Path) -> None:
    fs = GatedFileSystem()
    wal = open_wal(tmp_path, fs)
    fs.gated = True
    first = wal.append([(RECORD, b"a")])
    assert fs.sync_started.acquire(timeout=WAIT_S)
    second = wal.append([(RECORD, b"b")])
    later_future = wal.durable_future(second)
    first_future = wal.durable_future(first)
    fs.gated = False
    fs.gate.release()
    first_future.result(timeout=WAIT_S)
    later_future.result(timeout=WAIT_S)
    wal.close()


def test_a_lazy_append_costs_no_fsync_of_its_own_and_rides_with_the_next(tmp_path: Path) -> None:
    """The commit hint a follower writes after learning a commit is lazy: it must not make
    the disk sync once more (the next accept's save would queue behind that fsync)."""
    fs = GatedFileSystem()
    wal = open_wal(tmp_path, fs)
    wal.durable_future(wal.append([(RECORD, b"before")])).result(timeout=WAIT_S)
    syncs_before = fs.sync_calls
    lazy = wal.append([(RECORD, b"lazy")], lazy=True)
    synced = wal.durable_future(wal.append([(RECORD, b"synced")]))
    synced.result(timeout=WAIT_S)
    assert wal.durable_future(lazy).done(), "the later sync covered the lazy record"
    assert fs.sync_calls == syncs_before + 1, "one fsync for the lazy and the synced record"
    wal.close()
    assert payloads(recover(fs, str(tmp_path))) == [b"before", b"lazy", b"synced"]


def test_waiting_for_a_lazy_append_syncs_it(tmp_path: Path) -> None:
    fs = GatedFileSystem()
    wal = open_wal(tmp_path, fs)
    ticket = wal.append([(RECORD, b"lazy")], lazy=True)
    wal.wait_durable(ticket)
    assert payloads(recover(fs, str(tmp_path))) == [b"lazy"]
    wal.close()


def test_lazy_appends_beyond_the_pending_bound_are_written_without_a_waiter(
    tmp_path: Path,
) -> None:
    fs = GatedFileSystem()
    recovery = recover(fs, str(tmp_path))
    options = WalOptions(preallocate=False, pending_bytes_max=4096, record_bytes_max=1024)
    wal = Wal(fs, str(tmp_path), recovery, lambda: b"", options, b"")
    for n in range(64):  # far more than the bound: must neither block forever nor drop any
        wal.append([(RECORD, b"%03d" % n + b"x" * 200)], lazy=True)
    wal.close()
    assert len(payloads(recover(fs, str(tmp_path)))) == 64
