"""The real storage code over the simulated disk, crashed at random points (seeded).

Goal: after any crash and restart, everything that was acknowledged durable is present and
nothing torn or invented is returned (DESIGN.md, storage: "guarantees that what it reports
durable survives power loss ... never returns a torn record").
Method: a seeded workload of saves (entries, overwrites, hard states, snapshot installs,
sync and not) and compactions over `MemDisk`; crashes armed at a random later disk
operation or taken while idle. The model keeps the state after every record the storage was
asked to write; after a restart the loaded state must equal one of those states, no older
than the last acknowledgement. A failure names the seed that reproduces it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
from storage_helpers import BOOTSTRAP, MEMBERSHIP, entry, hard_state

from synod.paxos.ready import SnapshotInstall
from synod.paxos.types import Entry, HardState, Slot, SnapshotMeta
from synod.storage.errors import StorageCorrupt
from synod.storage.memdisk import MemDisk, SimulatedCrash
from synod.storage.storage import DurableStorage
from synod.storage.wal import WalOptions

SEEDS = 60
STEPS = 120
DATA_DIR = "/data"

View = tuple[HardState, SnapshotMeta, bytes | None, tuple[Entry, ...]]


@dataclass
class Model:
    hard_state: HardState = field(default_factory=HardState)
    snapshot: SnapshotMeta = BOOTSTRAP
    snapshot_data: bytes | None = None
    entries: dict[int, Entry] = field(default_factory=dict)

    @property
    def log_last(self) -> int:
        return max([self.snapshot.last_slot, *self.entries])

    def view(self) -> View:
        tail = tuple(self.entries[slot] for slot in sorted(self.entries))
        return (self.hard_state, self.snapshot, self.snapshot_data, tail)

    def install(self, meta: SnapshotMeta, data: bytes) -> None:
        self.snapshot, self.snapshot_data, self.entries = meta, data, {}

    def compact(self, meta: SnapshotMeta, data: bytes) -> None:
        self.snapshot, self.snapshot_data = meta, data
        self.entries = {s: e for s, e in self.entries.items() if s > meta.last_slot}

    def restore(self, view: View) -> None:
        self.hard_state, self.snapshot, self.snapshot_data, tail = view
        self.entries = {e.slot: e for e in tail}


def loaded_view(storage: DurableStorage) -> View:
    restore, data = storage.load()
    return (restore.hard_state, restore.snapshot, data, restore.entries)


def random_save(
    rng: random.Random, model: Model, step: int
) -> tuple[SnapshotInstall | None, list[Entry], HardState | None, list[View]]:
    """A save and the model's state after each record it writes, in order."""
    states: list[View] = []
    install = None
    if rng.random() < 0.05:
        last = Slot(model.snapshot.last_slot + rng.randint(1, 30))
        install = SnapshotInstall(SnapshotMeta(last, MEMBERSHIP), b"installed-%d" % step)
        model.install(install.meta, install.data)
        states.append(model.view())
    entries: list[Entry] = []
    if rng.random() < 0.85:
        first = rng.randint(model.snapshot.last_slot + 1, model.log_last + 1)
        round_ = rng.randint(1, 4)
        entries = [
            entry(slot, round_, b"s%d" % step) for slot in range(first, first + rng.randint(1, 4))
        ]
        model.entries.update({e.slot: e for e in entries})
        states.append(model.view())
    new_hard_state = None
    if rng.random() < 0.5 or not states:
        new_hard_state = hard_state(rng.randint(1, 9), rng.randint(0, model.log_last))
        model.hard_state = new_hard_state
        states.append(model.view())
    return install, entries, new_hard_state, states


def restart(
    disk: MemDisk, damage: random.Random, rng: random.Random, options: WalOptions
) -> DurableStorage:
    """Open after a crash; sometimes crash again during recovery itself (it must be idempotent)."""
    for _ in range(3):
        if rng.random() < 0.3:
            disk.crash_after_ops = rng.randint(1, 4)
        try:
            storage = DurableStorage.open(DATA_DIR, fs=disk, options=options)
        except SimulatedCrash:
            disk.crash(damage)
            continue
        disk.crash_after_ops = None
        return storage
    return DurableStorage.open(DATA_DIR, fs=disk, options=options)


def run_seed(seed: int) -> int:
    """One workload; returns how many crashes it survived."""
    rng = random.Random(f"{seed}-workload")
    damage = random.Random(f"{seed}-disk")
    options = WalOptions(segment_bytes_max=4096, sync_thread=False, preallocate=rng.random() < 0.5)
    disk = MemDisk()
    storage = DurableStorage.open(DATA_DIR, fs=disk, bootstrap=BOOTSTRAP, options=options)
    model = Model()
    history, acked, crashes = [model.view()], 0, 0
    for step in range(STEPS):
        if rng.random() < 0.15:
            disk.crash_after_ops = rng.randint(1, 10)
        crashed = False
        try:
            if model.log_last > model.snapshot.last_slot and rng.random() < 0.12:
                meta = SnapshotMeta(
                    Slot(rng.randint(model.snapshot.last_slot + 1, model.log_last)), MEMBERSHIP
                )
                data = b"compacted-%d" % step
                model.compact(meta, data)
                history.append(model.view())
                storage.compact(meta, data)
                acked = len(history) - 1
            else:
                install, entries, new_hard_state, states = random_save(rng, model, step)
                history.extend(states)
                sync = rng.random() < 0.6
                storage.save(install, entries, new_hard_state, sync)
                if sync:
                    acked = len(history) - 1
            crashed = rng.random() < 0.04
        except SimulatedCrash:
            crashed = True
        if not crashed:
            continue
        crashes += 1
        disk.crash(damage)
        storage = restart(disk, damage, rng, options)
        view = loaded_view(storage)
        assert view in history[acked:], (
            f"seed {seed} step {step}: restart lost acknowledged data or returned a state "
            f"never written: {view}"
        )
        model.restore(view)
        history, acked = [view], 0
    disk.crash_after_ops = None
    storage.close()
    return crashes


def test_acknowledged_saves_survive_random_crashes_and_nothing_torn_is_returned() -> None:
    crashes = sum(run_seed(seed) for seed in range(SEEDS))
    assert crashes > SEEDS, "the workload should crash often enough to mean something"


def test_rot_in_acknowledged_bytes_on_the_simulated_disk_refuses_start() -> None:
    disk = MemDisk()
    options = WalOptions(segment_bytes_max=1 << 20, sync_thread=False, preallocate=False)
    storage = DurableStorage.open(DATA_DIR, fs=disk, bootstrap=BOOTSTRAP, options=options)
    for slot in range(1, 20):
        storage.save(None, [entry(slot)], None, sync=True)
    storage.close()
    segment = f"{DATA_DIR}/{1:016x}.wal"
    disk.corrupt(segment, disk.size(segment) // 2)
    with pytest.raises(StorageCorrupt) as caught:
        DurableStorage.open(DATA_DIR, fs=disk, options=options)
    assert caught.value.path == segment
