"""The in-memory storage keeps exactly what a real disk would across a crash.

Goal: the crash model the simulator's durability checks rely on (DESIGN.md: "acceptor state
is durable before any reply that reveals it"). Method: save records, crash, recover, and
compare what came back with what a synced write-ahead log would hold.
"""

from __future__ import annotations

import random

import pytest

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
from synod.sim.storage import MemoryStorage, SimulatedCrash

MEMBERSHIP = Membership((NodeId(1), NodeId(2), NodeId(3)))
BALLOT = Ballot(1, NodeId(1))


def _entry(slot: int) -> Entry:
    return Entry(Slot(slot), BALLOT, EntryKind.COMMANDS, (f"command {slot}".encode(),))


def _storage(seed: int = 1, crash_probability: float = 0.0) -> MemoryStorage:
    return MemoryStorage(random.Random(seed), MEMBERSHIP, b"empty", crash_probability)


def test_a_synced_save_survives_a_crash() -> None:
    storage = _storage()
    hard_state = HardState(BALLOT, Slot(1))
    storage.save(None, [_entry(1), _entry(2)], hard_state, sync=True)
    storage.crash()
    recovered = storage.recover()
    assert recovered.restore.entries == (_entry(1), _entry(2))
    assert recovered.restore.hard_state == hard_state
    assert recovered.restore.snapshot == SnapshotMeta(Slot(0), MEMBERSHIP)
    assert recovered.snapshot_data == b"empty"


def test_unsynced_writes_may_be_lost_but_only_as_a_suffix() -> None:
    outcomes = set()
    for seed in range(40):
        storage = _storage(seed)
        storage.save(None, [], HardState(BALLOT, Slot(1)), sync=False)
        storage.save(None, [], HardState(BALLOT, Slot(2)), sync=False)
        storage.crash()
        outcomes.add(storage.recover().restore.hard_state.commit_slot)
    assert outcomes == {0, 1, 2}


def test_a_later_sync_makes_earlier_unsynced_writes_durable() -> None:
    storage = _storage()
    storage.save(None, [], HardState(BALLOT, Slot(1)), sync=False)
    storage.save(None, [_entry(1)], None, sync=True)
    storage.crash()
    recovered = storage.recover()
    assert recovered.restore.hard_state.commit_slot == 1
    assert recovered.restore.entries == (_entry(1),)


def test_crash_during_save_keeps_a_strict_prefix_and_raises() -> None:
    kept_counts = set()
    for seed in range(60):
        storage = _storage(seed, crash_probability=0.99)
        entries = [_entry(slot) for slot in range(1, 5)]
        with pytest.raises(SimulatedCrash):
            storage.save(None, entries, HardState(BALLOT, Slot(0)), sync=True)
        recovered = storage.recover().restore
        kept = len(recovered.entries) + (recovered.hard_state.promised == BALLOT)
        assert recovered.entries == tuple(entries[: len(recovered.entries)]), "a prefix"
        if recovered.hard_state.promised == BALLOT:
            assert len(recovered.entries) == 4, "the hard state is written after the entries"
        kept_counts.add(kept)
    assert kept_counts == {0, 1, 2, 3, 4}, "never all five records, every strict prefix"


def test_compaction_snapshot_drops_covered_entries_and_keeps_the_rest() -> None:
    storage = _storage()
    storage.save(None, [_entry(slot) for slot in range(1, 6)], None, sync=True)
    storage.save_compaction_snapshot(SnapshotMeta(Slot(3), MEMBERSHIP), b"state at 3")
    storage.crash()
    recovered = storage.recover()
    assert recovered.restore.snapshot.last_slot == 3
    assert recovered.snapshot_data == b"state at 3"
    assert [entry.slot for entry in recovered.restore.entries] == [4, 5]


def test_installed_snapshot_keeps_accepted_entries_above_it() -> None:
    storage = _storage()
    storage.save(None, [_entry(slot) for slot in range(1, 4)], None, sync=True)
    install = SnapshotInstall(SnapshotMeta(Slot(2), MEMBERSHIP), b"state at 2")
    storage.save(install, [_entry(4)], None, sync=True)
    recovered = storage.recover()
    assert recovered.restore.snapshot.last_slot == 2
    assert [entry.slot for entry in recovered.restore.entries] == [3, 4]
    assert storage.snapshot_slot == 2


def test_entries_are_overwritten_by_slot() -> None:
    storage = _storage()
    storage.save(None, [_entry(1)], None, sync=True)
    newer = Entry(Slot(1), Ballot(2, NodeId(2)), EntryKind.NOOP)
    storage.save(None, [newer], None, sync=True)
    assert storage.recover().restore.entries == (newer,)
