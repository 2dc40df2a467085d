"""The real write-ahead log under simulation: `DurableStorage` over an in-memory `MemDisk`.

Owns the adapter that gives the production storage (segments, checksums, snapshot files,
recovery) the simulator's storage interface, so a seed can run the members over the very
code that runs in production instead of the record-level model in `synod.sim.storage`. The
disk keeps what was fsynced and, on a crash, keeps, drops, tears or flips what was not; a
crash during a save is armed as "fail the n-th next disk operation", so it can strike in the
middle of a write, between a write and its fsync, or inside a segment roll.

Invariants: the storage is opened only after a crash (or at first boot); everything the
member reads back on restart comes from `DurableStorage.open` over the crashed disk.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from synod.paxos.ready import SnapshotInstall
from synod.paxos.types import BALLOT_ZERO, Entry, HardState, Membership, Slot, SnapshotMeta
from synod.sim.storage import Recovered, SimulatedCrash, tear_probability
from synod.storage import memdisk
from synod.storage.storage import DurableStorage
from synod.storage.wal import WalOptions

DIRECTORY = "/member"
DISK_OPERATIONS_TO_CRASH_MAX = 8
SEGMENT_BYTES_MAX = 64 * 1024  # small, so that runs roll and compact segments


class WalStorage:
    """A member's storage as production writes it, on a disk that can lose power."""

    def __init__(
        self,
        rng: random.Random,
        membership: Membership,
        empty_snapshot_data: bytes,
        crash_during_save_probability: float = 0.0,
    ) -> None:
        assert 0.0 <= crash_during_save_probability < 1.0
        self._rng = rng
        self._membership = membership
        self._empty_snapshot_data = empty_snapshot_data
        self.crash_during_save_probability = crash_during_save_probability
        self.disk = memdisk.MemDisk()
        self._storage: DurableStorage | None = None
        self._snapshot_slot = Slot(0)
        self._last_promised = BALLOT_ZERO
        self.saves = 0
        self.torn_saves = 0

    def _open(self) -> DurableStorage:
        options = WalOptions(
            segment_bytes_max=SEGMENT_BYTES_MAX,
            record_bytes_max=SEGMENT_BYTES_MAX // 4,
            pending_bytes_max=SEGMENT_BYTES_MAX,
            preallocate=False,
            sync_thread=False,
        )
        bootstrap = SnapshotMeta(Slot(0), self._membership)
        return DurableStorage.open(DIRECTORY, fs=self.disk, bootstrap=bootstrap, options=options)

    def save(
        self,
        snapshot: SnapshotInstall | None,
        entries: Sequence[Entry],
        hard_state: HardState | None,
        sync: bool,
    ) -> None:
        assert self._storage is not None, "a crashed member does not write"
        self.saves += 1
        probability = tear_probability(
            self.crash_during_save_probability, hard_state, self._last_promised
        )
        if hard_state is not None:
            self._last_promised = hard_state.promised
        armed = probability > 0.0 and self._rng.random() < probability
        if armed:
            self.disk.crash_after_ops = self._rng.randint(1, DISK_OPERATIONS_TO_CRASH_MAX)
        try:
            self._storage.save(snapshot, entries, hard_state, sync)
        except memdisk.SimulatedCrash:
            self.torn_saves += 1
            self._power_loss()
            raise SimulatedCrash("power lost during a save of the write-ahead log") from None
        if armed:
            # The save finished before the armed operation: the member dies before returning.
            self.disk.crash_after_ops = None
            self.torn_saves += 1
            self._power_loss()
            raise SimulatedCrash("power lost after a save, before the driver heard of it")
        if snapshot is not None:
            self._snapshot_slot = max(self._snapshot_slot, snapshot.meta.last_slot)

    def save_compaction_snapshot(self, meta: SnapshotMeta, data: bytes) -> None:
        assert self._storage is not None
        self._storage.compact(meta, data)
        self._snapshot_slot = max(self._snapshot_slot, meta.last_slot)

    def crash(self) -> None:
        self._power_loss()

    def _power_loss(self) -> None:
        self.disk.crash(self._rng)
        self._storage = None

    def recover(self) -> Recovered:
        assert self._storage is None, "recover only at boot or after a crash"
        self._storage = self._open()
        restore, data = self._storage.load()
        self._snapshot_slot = restore.snapshot.last_slot
        return Recovered(restore, self._empty_snapshot_data if data is None else data)

    @property
    def snapshot_slot(self) -> Slot:
        return self._snapshot_slot
