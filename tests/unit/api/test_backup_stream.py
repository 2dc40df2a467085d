"""How the Snapshot RPC takes the member's state (synod.api.handlers): pulled from the state
machine's snapshot stream in short turns so the member keeps serving, started again when a
compaction or the member's own snapshot voids the stream, and taken in one go after
SNAPSHOT_ATTEMPTS_MAX voided attempts (docs/operator-guide.md, "Backup").

Method: `_pull_pieces` and `Handlers._machine_snapshot` over a fake machine; no member.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, cast

from synod.api import handlers
from synod.api.handlers import Handlers, _pull_pieces
from synod.kv.store import SnapshotCancelled
from synod.paxos.types import Membership, NodeId, Slot, SnapshotMeta


def slow_pieces(count: int, each_s: float) -> Iterator[bytes]:
    for number in range(count):
        time.sleep(each_s)
        yield bytes([number])


def test_pieces_are_pulled_in_turns_with_the_loop_free_in_between() -> None:
    async def main() -> tuple[bytes, int]:
        ticks = 0

        async def other_work() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(other_work())
        await asyncio.sleep(0)
        ticks = 0
        joined = await _pull_pieces(slow_pieces(20, 0.001))
        task.cancel()
        return joined, ticks

    joined, ticks = asyncio.run(main())
    assert joined == bytes(range(20))
    # 20 ms of work in turns of 2 ms: at most 3 pieces a turn, so at least 6 turns
    assert ticks >= 5, "the loop ran other work between turns"


class FakeMachine:
    """A state machine whose first `voided` streams are voided by a compaction."""

    def __init__(self, voided: int) -> None:
        self.voided = voided
        self.streams = 0
        self.whole = 0

    def snapshot_stream(self) -> tuple[SnapshotMeta, Iterator[bytes]]:
        self.streams += 1
        slot = Slot(self.streams)
        meta = SnapshotMeta(slot, Membership((NodeId(1),)))
        return meta, self._pieces(self.streams <= self.voided)

    @staticmethod
    def _pieces(void: bool) -> Iterator[bytes]:
        yield b"state"
        if void:
            raise SnapshotCancelled("a compaction ran during the snapshot")
        yield b"-whole"

    def snapshot(self) -> tuple[SnapshotMeta, bytes]:
        self.whole += 1
        return SnapshotMeta(Slot(99), Membership((NodeId(1),))), b"state-in-one-go"


def take(machine: FakeMachine) -> tuple[SnapshotMeta, bytes]:
    fake_self = cast(Handlers, SimpleNamespace(member=SimpleNamespace(machine=machine)))
    result: Any = asyncio.run(Handlers._machine_snapshot(fake_self))
    return cast(tuple[SnapshotMeta, bytes], result)


def test_a_voided_stream_starts_again_and_the_snapshot_is_of_the_last_start() -> None:
    machine = FakeMachine(voided=2)
    meta, data = take(machine)
    assert (meta.last_slot, data) == (3, b"state-whole")
    assert (machine.streams, machine.whole) == (3, 0)


def test_after_too_many_voided_streams_the_snapshot_is_taken_in_one_go() -> None:
    machine = FakeMachine(voided=handlers.SNAPSHOT_ATTEMPTS_MAX)
    meta, data = take(machine)
    assert (meta.last_slot, data) == (99, b"state-in-one-go")
    assert (machine.streams, machine.whole) == (handlers.SNAPSHOT_ATTEMPTS_MAX, 1)
