"""An in-memory model of a member's durable storage, with the crash semantics of a real disk.

Owns what survives a member's crash: the latest snapshot (metadata and state-machine bytes),
the accepted log entries above it, and the hard state. It implements the driver's `Storage`
protocol. Writes are records applied in order (snapshot, then entries, then hard state), the
order a write-ahead log appends them. A save with `sync` makes every record written so far
durable before it returns; records of an unsynced save stay volatile until a later sync.

Crash model (FoundationDB's non-durable file, at record granularity; a real WAL's checksums
turn a torn record into a missing one):
- `crash()` (the member dies between saves) keeps a random prefix of the volatile records;
- a crash *during* a save, drawn per save with `crash_during_save_probability`, keeps a random
  prefix (possibly empty, never all) of the volatile records plus this save's records, then
  raises `SimulatedCrash` out of `save`: the driver never sends the messages that waited for
  this persist, and the simulator throws the member's volatile state away.

Invariants: durable entries all lie above the durable snapshot's slot; a snapshot never
moves backwards; what `recover()` returns is exactly what was durable at the crash.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from synod.paxos.node import Restore
from synod.paxos.ready import SnapshotInstall
from synod.paxos.types import BALLOT_ZERO, Ballot, Entry, HardState, Membership, Slot, SnapshotMeta

VOLATILE_RECORDS_MAX = 1_000_000
PROMISE_TEAR_PROBABILITY_MIN = 0.3

Record = SnapshotInstall | Entry | HardState


def tear_probability(base: float, hard_state: HardState | None, last_promised: Ballot) -> float:
    """How likely this save is torn. A save that raises the promise is where a promise sent
    before its persist does harm (a restarted acceptor must never forget a promise), so when
    torn saves are enabled at all they strike those saves more often."""
    assert 0.0 <= base < 1.0
    if base == 0.0 or hard_state is None or hard_state.promised == last_promised:
        return base
    return max(base, PROMISE_TEAR_PROBABILITY_MIN)


class SimulatedCrash(Exception):
    """The member died while its storage was writing; caught by the simulator, never the core."""


@dataclass(frozen=True, slots=True)
class Recovered:
    """What a restarting member reads back: the core's `Restore` and the snapshot's bytes."""

    restore: Restore
    snapshot_data: bytes


class MemberStorage(Protocol):
    """What the simulator needs of a member's storage: the driver's `save`, plus compaction,
    crash and recovery. `MemoryStorage` (this module) and `WalStorage` (the production WAL on
    a simulated disk, `synod.sim.disk`) both provide it."""

    crash_during_save_probability: float
    torn_saves: int

    def save(
        self,
        snapshot: SnapshotInstall | None,
        entries: Sequence[Entry],
        hard_state: HardState | None,
        sync: bool,
    ) -> None: ...

    def save_compaction_snapshot(self, meta: SnapshotMeta, data: bytes) -> None: ...

    def crash(self) -> None: ...

    def recover(self) -> Recovered: ...

    @property
    def snapshot_slot(self) -> Slot: ...


class MemoryStorage:
    """Durable state of one member, kept across its crashes and restarts."""

    def __init__(
        self,
        rng: random.Random,
        membership: Membership,
        empty_snapshot_data: bytes,
        crash_during_save_probability: float = 0.0,
    ) -> None:
        assert 0.0 <= crash_during_save_probability < 1.0
        self._rng = rng
        self.crash_during_save_probability = crash_during_save_probability
        self._hard_state = HardState()
        self._snapshot = SnapshotInstall(SnapshotMeta(Slot(0), membership), empty_snapshot_data)
        self._entries: dict[Slot, Entry] = {}
        self._volatile: list[Record] = []
        self._last_promised = BALLOT_ZERO
        self.tear_next_promise = False  # a directed scenario's way to tear one promise save
        self.saves = 0
        self.torn_saves = 0
        self.lost_records = 0

    # -- the driver's Storage protocol ------------------------------------------------------

    def save(
        self,
        snapshot: SnapshotInstall | None,
        entries: Sequence[Entry],
        hard_state: HardState | None,
        sync: bool,
    ) -> None:
        """Write the records in log order; durable on return when `sync` (or torn, and raise)."""
        assert snapshot is not None or entries or hard_state is not None, "an empty save"
        self.saves += 1
        records: list[Record] = []
        if snapshot is not None:
            records.append(snapshot)
        records.extend(entries)
        if hard_state is not None:
            records.append(hard_state)
        probability = tear_probability(
            self.crash_during_save_probability, hard_state, self._last_promised
        )
        promise_raised = hard_state is not None and hard_state.promised != self._last_promised
        if self.tear_next_promise and promise_raised:
            self.tear_next_promise = False
            probability = 1.0
        if hard_state is not None:
            self._last_promised = hard_state.promised
        if probability and self._rng.random() < probability:
            self.torn_saves += 1
            pending = self._volatile + records
            kept = self._rng.randrange(len(pending))  # a strict prefix: the save never finished
            self._make_durable(pending[:kept])
            self.lost_records += len(pending) - kept
            self._volatile = []
            raise SimulatedCrash(f"crashed during a save after {kept} of {len(pending)} records")
        assert len(self._volatile) + len(records) <= VOLATILE_RECORDS_MAX, "unsynced writes pile up"
        self._volatile.extend(records)
        if sync:
            self._make_durable(self._volatile)
            self._volatile = []

    # -- the simulator's side ---------------------------------------------------------------

    def save_compaction_snapshot(self, meta: SnapshotMeta, data: bytes) -> None:
        """Durably keep a local state-machine snapshot and drop the entries it covers.

        A real store writes the snapshot to a new file and renames it into place, so this is
        atomic: a crash leaves either the old snapshot or the new one, never a mix.
        """
        assert meta.last_slot >= self._snapshot.meta.last_slot, "snapshots never move back"
        self._make_durable(self._volatile)
        self._volatile = []
        self._make_durable([SnapshotInstall(meta, data)])

    def crash(self) -> None:
        """The member died between saves: unsynced records survive only as a random prefix."""
        if self._volatile:
            kept = self._rng.randint(0, len(self._volatile))
            self._make_durable(self._volatile[:kept])
            self.lost_records += len(self._volatile) - kept
        self._volatile = []

    def recover(self) -> Recovered:
        """The durable state, as a restarting member reads it."""
        assert not self._volatile, "recover only after a crash"
        slot = self._snapshot.meta.last_slot
        entries = tuple(self._entries[s] for s in sorted(self._entries))
        assert all(entry.slot > slot for entry in entries)
        restore = Restore(self._hard_state, self._snapshot.meta, entries)
        return Recovered(restore, self._snapshot.data)

    @property
    def snapshot_slot(self) -> Slot:
        return self._snapshot.meta.last_slot

    @property
    def durable_entry_count(self) -> int:
        return len(self._entries)

    def _make_durable(self, records: Sequence[Record]) -> None:
        for record in records:
            if isinstance(record, HardState):
                self._hard_state = record
            elif isinstance(record, Entry):
                # Entries the snapshot already covers are chosen and applied: nothing to keep.
                if record.slot > self._snapshot.meta.last_slot:
                    self._entries[record.slot] = record
            else:
                self._install(record)

    def _install(self, snapshot: SnapshotInstall) -> None:
        slot = snapshot.meta.last_slot
        if slot < self._snapshot.meta.last_slot:
            return  # an older snapshot than the one kept: it covers nothing new
        self._snapshot = snapshot
        # Entries above the snapshot are an acceptor's accepted values: they must stay.
        for covered in [s for s in sorted(self._entries) if s <= slot]:
            del self._entries[covered]
