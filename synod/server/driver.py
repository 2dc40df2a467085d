"""The synchronous driver: carries out each `Ready` of a core in the order safety needs.

Production (the asyncio runtime) and the simulator run this same code; only the Storage,
Outbox and StateMachine behind it differ. Order per Ready: send the messages that may go at
once; persist (snapshot, entries, hard state); send the messages that waited for the persist;
acknowledge the persist to the core; apply committed entries; serve released reads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from synod.paxos.messages import InstallSnapshot, Message
from synod.paxos.node import Node
from synod.paxos.ready import Ready, SnapshotInstall
from synod.paxos.types import Entry, HardState, Slot, SnapshotMeta

READY_ROUNDS_MAX = 64


class Storage(Protocol):
    def save(
        self,
        snapshot: SnapshotInstall | None,
        entries: Sequence[Entry],
        hard_state: HardState | None,
        sync: bool,
    ) -> None:
        """Make the snapshot, entries and hard state durable (when `sync`) before returning."""


class Outbox(Protocol):
    def send(self, messages: Sequence[Message]) -> None: ...


class StateMachine(Protocol):
    def apply(self, entry: Entry) -> None:
        """Apply one committed entry; a pure function of the entries applied so far."""

    def snapshot(self) -> tuple[SnapshotMeta, bytes]:
        """The latest snapshot to ship to a lagging member."""

    def restore(self, meta: SnapshotMeta, data: bytes) -> None: ...


ReadHandler = Callable[[int], None]


def needs_persist(ready: Ready) -> bool:
    return ready.snapshot is not None or bool(ready.entries) or ready.hard_state is not None


class Driver:
    """Feeds a Node's Readys to storage, network and state machine, in order."""

    def __init__(
        self,
        node: Node,
        storage: Storage,
        outbox: Outbox,
        state_machine: StateMachine,
        on_read: ReadHandler,
        on_read_failed: ReadHandler,
    ) -> None:
        self.node = node
        self.storage = storage
        self.outbox = outbox
        self.state_machine = state_machine
        self.on_read = on_read
        self.on_read_failed = on_read_failed

    def run(self) -> int:
        """Carry out Readys until the core has none; returns how many were handled."""
        rounds = 0
        while self.node.has_ready():
            assert rounds < READY_ROUNDS_MAX, "core keeps producing Readys: a livelock"
            self.handle(self.node.ready())
            rounds += 1
        return rounds

    def handle(self, ready: Ready) -> None:
        """Carry out one Ready synchronously: the save returns once durable."""
        self.begin(ready)
        if needs_persist(ready):
            self.storage.save(ready.snapshot, ready.entries, ready.hard_state, ready.must_sync)
        self.complete(ready)

    def begin(self, ready: Ready) -> None:
        """The part that may run before the persist: messages that reveal nothing unsaved.

        A runtime that persists asynchronously calls `begin`, starts the save, and calls
        `complete` once it is durable, completing Readys in the order they were made.
        """
        if ready.messages:
            self.outbox.send(ready.messages)

    def complete(self, ready: Ready) -> None:
        """The part that must wait for the persist of `ready` (and of every earlier one)."""
        self.acknowledge(ready)
        self.apply(ready)

    def acknowledge(self, ready: Ready) -> None:
        """What reveals the save: the replies that waited for it, and the core's notice."""
        if ready.persisted_messages:
            self.outbox.send(ready.persisted_messages)
        self.node.persisted(ready.number)

    def apply(self, ready: Ready) -> None:
        """What follows from the chosen entries. A runtime may run it before `acknowledge`
        for a Ready that installs no snapshot and saves no entries (only a commit slot: its
        entries are chosen whether or not this member remembers so), once every earlier
        Ready is applied (synod.server.deferred_sync)."""
        if ready.snapshot is not None:
            self.state_machine.restore(ready.snapshot.meta, ready.snapshot.data)
        last_applied: Slot | None = None
        for entry in ready.committed:
            self.state_machine.apply(entry)
            last_applied = entry.slot
        if last_applied is not None:
            self.node.applied(last_applied)
        for read in ready.reads:
            self.on_read(read.read_id)
        for read_id in ready.failed_reads:
            self.on_read_failed(read_id)
        if ready.snapshot_requests:
            self._ship_snapshots(ready)

    def _ship_snapshots(self, ready: Ready) -> None:
        meta, data = self.state_machine.snapshot()
        messages = [
            InstallSnapshot(self.node.node_id, request.to, request.ballot, meta, data)
            for request in ready.snapshot_requests
        ]
        self.outbox.send(messages)
