"""Snapshot shipping in checked, resumable chunks (issue 3: "a lagging member receives the
snapshot in chunks, each checked, resumable after a broken connection").

Method: a real snapshot file written by `DurableStorage`, a `SnapshotSender` and a
`SnapshotReceiver` joined by an in-memory wire that the test can corrupt, cut and reconnect;
the receiver's deliveries are the `InstallSnapshot`s its core would see.
"""

from __future__ import annotations

import os
import random
from collections import deque
from pathlib import Path
from typing import Any

from synod.paxos.messages import InstallSnapshot
from synod.paxos.types import Ballot, Membership, NodeId, Slot, SnapshotMeta
from synod.server.snapshot_transfer import (
    INCOMING_NAME,
    SNAPSHOT_ACK,
    SNAPSHOT_BEGIN,
    SNAPSHOT_CHUNK,
    SnapshotReceiver,
    SnapshotSender,
)
from synod.storage.storage import DurableStorage, SnapshotFile
from tests.unit.storage.storage_helpers import entry

LEADER, FOLLOWER = 1, 2
MEMBERSHIP = Membership((NodeId(1), NodeId(2), NodeId(3)))
BALLOT = Ballot(3, NodeId(LEADER))
CHUNK = 4096


class Wire:
    """Items in flight both ways; `connected` False drops them, as a broken link does."""

    def __init__(self) -> None:
        self.in_flight: deque[tuple[int, list[Any]]] = deque()
        self.connected = True
        self.chunks_sent: list[int] = []
        self.corrupt_offsets: set[int] = set()

    def sender_side(self, peer: int, items: list[Any]) -> None:
        assert peer == FOLLOWER
        for item in items:
            if item[0] == SNAPSHOT_CHUNK:
                self.chunks_sent.append(item[2])
                if item[2] in self.corrupt_offsets:
                    self.corrupt_offsets.discard(item[2])
                    damaged = bytearray(item[3])
                    damaged[len(damaged) // 2] ^= 0x40
                    item = [*item[:3], bytes(damaged), *item[4:]]
            if self.connected:
                self.in_flight.append((FOLLOWER, item))

    def receiver_side(self, peer: int, items: list[Any]) -> None:
        assert peer == LEADER
        if self.connected:
            self.in_flight.extend((LEADER, item) for item in items)


class Pair:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.wire = Wire()
        self.delivered: list[InstallSnapshot] = []
        self.sender = SnapshotSender(self.wire.sender_side, chunk_bytes=CHUNK)
        directory = tmp_path / "follower"
        directory.mkdir()
        self.receiver = SnapshotReceiver(
            FOLLOWER, str(directory), self.wire.receiver_side, self.delivered.append
        )

    def run(self, steps_max: int = 100_000) -> None:
        """Deliver items until none are in flight."""
        for _ in range(steps_max):
            if not self.wire.in_flight:
                return
            to, item = self.wire.in_flight.popleft()
            if to == FOLLOWER and item[0] == SNAPSHOT_BEGIN:
                self.receiver.on_begin(LEADER, item)
            elif to == FOLLOWER and item[0] == SNAPSHOT_CHUNK:
                self.receiver.on_chunk(LEADER, item)
            elif to == LEADER and item[0] == SNAPSHOT_ACK:
                self.sender.on_ack(FOLLOWER, item)
        raise AssertionError("the transfer does not settle")

    def run_until_chunks(self, count: int) -> None:
        while len(self.wire.chunks_sent) < count:
            assert self.wire.in_flight
            to, item = self.wire.in_flight.popleft()
            if to == FOLLOWER and item[0] == SNAPSHOT_BEGIN:
                self.receiver.on_begin(LEADER, item)
            elif to == FOLLOWER:
                self.receiver.on_chunk(LEADER, item)
            else:
                self.sender.on_ack(FOLLOWER, item)


def snapshot_file(tmp_path: Path, name: str, slot: int, size: int, seed: int) -> SnapshotFile:
    """A durable snapshot of `size` random bytes at `slot`, as the leader's storage writes it."""
    storage = DurableStorage.open(str(tmp_path / name), bootstrap=SnapshotMeta(Slot(0), MEMBERSHIP))
    storage.save(None, [entry(s) for s in range(1, slot + 1)], None, sync=True)
    data = random.Random(seed).randbytes(size)
    storage.compact(SnapshotMeta(Slot(slot), MEMBERSHIP), data)
    file = storage.snapshot_file()
    storage.close()
    assert file is not None
    return file


def expect_delivered(pair: Pair, file: SnapshotFile, size: int, seed: int) -> None:
    assert len(pair.delivered) == 1
    message = pair.delivered[0]
    assert message.meta == file.meta
    assert message.data == random.Random(seed).randbytes(size)
    assert (message.src, message.dst, message.ballot) == (LEADER, FOLLOWER, BALLOT)
    assert not os.path.exists(pair.tmp_path / "follower" / INCOMING_NAME)
    assert pair.sender.sending_to(FOLLOWER) is None


def test_a_multi_chunk_snapshot_arrives_whole(tmp_path: Path) -> None:
    file = snapshot_file(tmp_path, "leader", 40, 50_000, seed=1)
    pair = Pair(tmp_path)
    pair.sender.offer(FOLLOWER, BALLOT, file)
    pair.run()
    expect_delivered(pair, file, 50_000, seed=1)
    assert len(pair.wire.chunks_sent) == -(-os.stat(file.path).st_size // CHUNK)


def test_a_corrupt_chunk_is_dropped_and_fetched_again(tmp_path: Path) -> None:
    file = snapshot_file(tmp_path, "leader", 40, 50_000, seed=2)
    pair = Pair(tmp_path)
    pair.wire.corrupt_offsets = {3 * CHUNK, 7 * CHUNK}
    pair.sender.offer(FOLLOWER, BALLOT, file)
    pair.run()
    expect_delivered(pair, file, 50_000, seed=2)
    assert pair.receiver.chunks_refused == 2
    assert pair.wire.chunks_sent.count(3 * CHUNK) == 2


def test_after_a_broken_connection_the_transfer_resumes_from_the_receivers_offset(
    tmp_path: Path,
) -> None:
    file = snapshot_file(tmp_path, "leader", 40, 80_000, seed=3)
    pair = Pair(tmp_path)
    pair.sender.offer(FOLLOWER, BALLOT, file)
    pair.run_until_chunks(10)
    pair.wire.connected = False  # everything in flight and sent from now on is lost
    pair.wire.in_flight.clear()
    for _ in range(30):
        pair.sender.tick()
    pair.wire.connected = True
    sent_before = len(pair.wire.chunks_sent)
    for _ in range(10):
        pair.sender.tick()  # the sender notices no progress and asks where the receiver is
    pair.run()
    expect_delivered(pair, file, 80_000, seed=3)
    resumed_at = pair.wire.chunks_sent[sent_before]
    assert resumed_at >= 5 * CHUNK, "resumed, not restarted from zero"
    assert pair.wire.chunks_sent.count(0) == 1


def test_a_newer_snapshot_supersedes_an_unfinished_older_one(tmp_path: Path) -> None:
    older = snapshot_file(tmp_path, "leader-old", 30, 60_000, seed=4)
    newer = snapshot_file(tmp_path, "leader-new", 45, 20_000, seed=5)
    pair = Pair(tmp_path)
    pair.sender.offer(FOLLOWER, BALLOT, older)
    pair.run_until_chunks(5)
    pair.sender.offer(FOLLOWER, BALLOT, newer)
    pair.run()
    expect_delivered(pair, newer, 20_000, seed=5)


def test_a_file_that_fails_its_whole_checksum_is_fetched_again(tmp_path: Path) -> None:
    """Every chunk passes its own check, but the assembled file does not: a damaged byte
    on the sender's disk. The receiver discards it and delivers nothing."""
    file = snapshot_file(tmp_path, "leader", 40, 30_000, seed=6)
    with open(file.path, "r+b") as handle:
        handle.seek(20_000)
        byte = handle.read(1)
        handle.seek(20_000)
        handle.write(bytes([byte[0] ^ 1]))
    pair = Pair(tmp_path)
    pair.sender.offer(FOLLOWER, BALLOT, file)
    pair.run_until_chunks(20)
    assert pair.delivered == []
    assert pair.wire.chunks_sent.count(0) >= 2, "the transfer started over"
