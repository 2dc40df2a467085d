"""The production WAL under the simulator's disk keeps what it acknowledged across power
loss, including a loss in the middle of a save (DESIGN.md: storage "guarantees that what it
reports durable survives power loss ... never returns a torn record")."""

from __future__ import annotations

import random

import pytest

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
from synod.sim.disk import WalStorage
from synod.sim.storage import SimulatedCrash

MEMBERSHIP = Membership((NodeId(1), NodeId(2), NodeId(3)))
BALLOT = Ballot(1, NodeId(1))


def _entry(slot: int) -> Entry:
    return Entry(Slot(slot), BALLOT, EntryKind.COMMANDS, (f"command {slot}".encode(),))


def test_synced_saves_and_snapshots_survive_power_loss() -> None:
    storage = WalStorage(random.Random(3), MEMBERSHIP, b"empty")
    assert storage.recover().restore.snapshot.last_slot == 0
    storage.save(None, [_entry(1), _entry(2), _entry(3)], HardState(BALLOT, Slot(2)), sync=True)
    storage.save_compaction_snapshot(SnapshotMeta(Slot(2), MEMBERSHIP), b"state at 2")
    storage.crash()
    recovered = storage.recover()
    assert recovered.restore.snapshot.last_slot == 2
    assert recovered.snapshot_data == b"state at 2"
    assert [entry.slot for entry in recovered.restore.entries] == [3]
    assert recovered.restore.hard_state == HardState(BALLOT, Slot(2))
    assert storage.snapshot_slot == 2


@pytest.mark.parametrize("seed", range(20))
def test_power_loss_during_a_save_leaves_the_acknowledged_prefix(seed: int) -> None:
    storage = WalStorage(random.Random(seed), MEMBERSHIP, b"empty", 0.5)
    storage.recover()
    acknowledged = 0
    for slot in range(1, 40):
        try:
            storage.save(None, [_entry(slot)], None, sync=True)
        except SimulatedCrash:
            break
        acknowledged = slot
    else:
        pytest.skip("no crash drawn")
    slots = [entry.slot for entry in storage.recover().restore.entries]
    assert slots[:acknowledged] == list(range(1, acknowledged + 1))
    assert len(slots) <= acknowledged + 1
    assert storage.torn_saves == 1
