"""The acceptor's log: accepted entries from the first slot after the snapshot onward.

Invariants: entries are contiguous (`entry(s).slot == s`), the first retained slot is
`snapshot_slot + 1`, and an entry is only ever replaced by one of a higher or equal ballot.
Slots at or below the snapshot are gone: they are chosen and live in the state machine.
"""

from __future__ import annotations

from collections.abc import Iterable

from synod.paxos.types import Entry, Slot


class AcceptorLog:
    __slots__ = ("_entries", "_start")

    def __init__(self, snapshot_slot: Slot, entries: Iterable[Entry] = ()) -> None:
        self._start = Slot(snapshot_slot + 1)
        self._entries: list[Entry] = []
        for entry in entries:
            self.store(entry)

    @property
    def first_slot(self) -> Slot:
        """The first slot still held (one past the snapshot)."""
        return self._start

    @property
    def last_slot(self) -> Slot:
        """The highest slot held, or the snapshot slot when empty."""
        return Slot(self._start + len(self._entries) - 1)

    def __len__(self) -> int:
        return len(self._entries)

    def entry(self, slot: Slot) -> Entry | None:
        index = slot - self._start
        if index < 0 or index >= len(self._entries):
            return None
        return self._entries[index]

    def store(self, entry: Entry) -> None:
        """Accept `entry` at its slot: replace what was there, or append right after the end."""
        index = entry.slot - self._start
        assert index >= 0, "cannot store below the snapshot"
        assert index <= len(self._entries), "the log has no holes"
        if index == len(self._entries):
            self._entries.append(entry)
        else:
            assert self._entries[index].ballot <= entry.ballot, "accepted ballots only grow"
            self._entries[index] = entry

    def slice(self, first: Slot, last: Slot) -> list[Entry]:
        """Entries in [first, last], both inclusive; both must be held."""
        assert first >= self._start
        assert last <= self.last_slot
        return self._entries[first - self._start : last - self._start + 1]

    def from_slot(self, first: Slot) -> list[Entry]:
        assert first >= self._start
        return self._entries[first - self._start :]

    def compact(self, snapshot_slot: Slot) -> None:
        """Forget every slot at or below `snapshot_slot`; later entries stay (they may be
        accepted values a future phase 1 must see)."""
        if snapshot_slot < self._start:
            return
        drop = min(snapshot_slot - self._start + 1, len(self._entries))
        del self._entries[:drop]
        self._start = Slot(snapshot_slot + 1)

    def check(self) -> None:
        for offset, entry in enumerate(self._entries):
            assert entry.slot == self._start + offset, "log entries are contiguous"
