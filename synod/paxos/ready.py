"""`Ready`: everything the core asks its driver to carry out, in order.

The driver must: send `messages` (they reveal nothing that is not yet durable, so they may go
while the persist runs); persist `snapshot`, `entries` and `hard_state` (fsync when
`must_sync`); only then send `persisted_messages`; call `Node.persisted(number)`; apply
`committed` in order; serve `reads` (each needs the state machine applied through its slot,
which the entries of this and earlier Readys guarantee); fail `failed_reads`; ship snapshots
for `snapshot_requests`.
"""

from __future__ import annotations

from dataclasses import dataclass

from synod.paxos.messages import Message
from synod.paxos.types import Ballot, Entry, HardState, NodeId, Slot, SnapshotMeta


@dataclass(frozen=True, slots=True)
class ReadState:
    """A read-index read confirmed by a quorum round; serve it once applied >= `slot`."""

    read_id: int
    slot: Slot


@dataclass(frozen=True, slots=True)
class SnapshotRequest:
    """Ship the latest state-machine snapshot to `to` in an InstallSnapshot of `ballot`."""

    to: NodeId
    ballot: Ballot


@dataclass(frozen=True, slots=True)
class SnapshotInstall:
    """A snapshot received from the leader: persist it and restore the state machine from it."""

    meta: SnapshotMeta
    data: bytes


@dataclass(frozen=True, slots=True)
class Ready:
    number: int
    hard_state: HardState | None
    snapshot: SnapshotInstall | None
    entries: tuple[Entry, ...]
    must_sync: bool
    messages: tuple[Message, ...]
    persisted_messages: tuple[Message, ...]
    committed: tuple[Entry, ...]
    reads: tuple[ReadState, ...]
    failed_reads: tuple[int, ...]
    snapshot_requests: tuple[SnapshotRequest, ...]

    def __post_init__(self) -> None:
        assert self.number >= 1
        for earlier, later in zip(self.entries, self.entries[1:], strict=False):
            assert later.slot == earlier.slot + 1, "persisted entries are contiguous"
        for earlier, later in zip(self.committed, self.committed[1:], strict=False):
            assert later.slot == earlier.slot + 1, "committed entries are contiguous"
        if self.entries or self.snapshot is not None:
            assert self.must_sync
