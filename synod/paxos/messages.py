"""The messages members exchange: one closed union of frozen, slotted dataclasses.

Every message names its sender, its receiver and the ballot it speaks for; receivers use the
ballot to ignore the past. Slots are inclusive: `match_slot` is the highest slot the sender
knows it accepted in the ballot (or knows chosen), `commit_slot` the highest slot chosen.
"""

from __future__ import annotations

from dataclasses import dataclass

from synod.paxos.types import Ballot, Entry, NodeId, Slot, SnapshotMeta


@dataclass(frozen=True, slots=True)
class PreVote:
    """Would you promise `ballot` if I asked? Changes no state (the pre-vote round)."""

    src: NodeId
    dst: NodeId
    ballot: Ballot
    commit_slot: Slot


@dataclass(frozen=True, slots=True)
class PreVoteReply:
    src: NodeId
    dst: NodeId
    ballot: Ballot
    granted: bool
    promised: Ballot


@dataclass(frozen=True, slots=True)
class Prepare:
    """Phase 1a for every slot from `from_slot` on. `transfer` skips the leader-lease check."""

    src: NodeId
    dst: NodeId
    ballot: Ballot
    from_slot: Slot
    commit_slot: Slot
    transfer: bool = False


@dataclass(frozen=True, slots=True)
class Promise:
    """Phase 1b: the acceptor's accepted entries from `from_slot` on, or a refusal."""

    src: NodeId
    dst: NodeId
    ballot: Ballot
    granted: bool
    promised: Ballot
    entries: tuple[Entry, ...] = ()


@dataclass(frozen=True, slots=True)
class Accept:
    """Phase 2a for a contiguous run of slots; with no entries it is a heartbeat.

    Carries the commit slot (piggybacked commit progress) and the read round that read-index
    confirmations count.
    """

    src: NodeId
    dst: NodeId
    ballot: Ballot
    entries: tuple[Entry, ...]
    commit_slot: Slot
    read_round: int


@dataclass(frozen=True, slots=True)
class AcceptReply:
    """Phase 2b. `ok=False`: the ballot was refused. `gap=True`: the entries were not stored
    because slots before them are missing; `match_slot` says where to resume."""

    src: NodeId
    dst: NodeId
    ballot: Ballot
    ok: bool
    match_slot: Slot
    read_round: int
    promised: Ballot
    gap: bool = False


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    """A state-machine snapshot for a member that needs slots the leader compacted."""

    src: NodeId
    dst: NodeId
    ballot: Ballot
    meta: SnapshotMeta
    data: bytes


@dataclass(frozen=True, slots=True)
class TimeoutNow:
    """Leader transfer: the leader asks an up-to-date member to start phase 1 at once."""

    src: NodeId
    dst: NodeId
    ballot: Ballot
    commit_slot: Slot


Message = (
    PreVote | PreVoteReply | Prepare | Promise | Accept | AcceptReply | InstallSnapshot | TimeoutNow
)
