"""Identifiers and values of the Multi-Paxos core.

Owns the vocabulary every other core module speaks: node ids, slots, ballots, log entries,
membership and the hard state an acceptor must never forget. All values are immutable so a
`Ready` handed to the driver cannot change under it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import NewType

NodeId = NewType("NodeId", int)
Slot = NewType("Slot", int)


@dataclass(frozen=True, slots=True, order=True)
class Ballot:
    """A proposal number `(round, node_id)`: totally ordered, unique per proposer."""

    round: int
    node_id: NodeId

    def __post_init__(self) -> None:
        assert self.round >= 0
        assert self.node_id >= 0

    def __str__(self) -> str:
        return f"{self.round}.{self.node_id}"


BALLOT_ZERO = Ballot(0, NodeId(0))


class EntryKind(enum.IntEnum):
    COMMANDS = 1
    NOOP = 2
    MEMBERSHIP = 3


@dataclass(frozen=True, slots=True)
class Membership:
    """Who votes and who only learns. Kept in the log so it can change online."""

    voters: tuple[NodeId, ...]
    learners: tuple[NodeId, ...] = ()

    def __post_init__(self) -> None:
        assert len(self.voters) >= 1
        assert tuple(sorted(set(self.voters))) == self.voters, "voters must be sorted, unique"
        assert tuple(sorted(set(self.learners))) == self.learners, "learners sorted, unique"
        assert not set(self.voters) & set(self.learners), "a member is voter or learner"

    @property
    def members(self) -> tuple[NodeId, ...]:
        return tuple(sorted(self.voters + self.learners))

    def quorum(self) -> int:
        return len(self.voters) // 2 + 1

    def is_quorum(self, nodes: set[NodeId] | frozenset[NodeId]) -> bool:
        return len(nodes.intersection(self.voters)) >= self.quorum()


@dataclass(frozen=True, slots=True)
class Entry:
    """The value a slot holds, and the ballot in which this acceptor accepted it.

    A MEMBERSHIP entry may carry commands too: opaque context (the runtime's member table)
    that the state machine applies together with the configuration.
    """

    slot: Slot
    ballot: Ballot
    kind: EntryKind
    commands: tuple[bytes, ...] = ()
    membership: Membership | None = None
    size_bytes: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        assert self.slot >= 1
        if self.kind is EntryKind.MEMBERSHIP:
            assert self.membership is not None
        else:
            assert self.membership is None
        if self.kind is EntryKind.NOOP:
            assert not self.commands
        if self.size_bytes == 0:
            object.__setattr__(self, "size_bytes", 32 + sum(len(c) for c in self.commands))

    def same_value(self, other: Entry) -> bool:
        """True if both entries carry the same value (ballots may differ)."""
        return (
            self.kind == other.kind
            and self.commands == other.commands
            and self.membership == other.membership
        )

    def with_ballot(self, ballot: Ballot) -> Entry:
        return Entry(self.slot, ballot, self.kind, self.commands, self.membership, self.size_bytes)


@dataclass(frozen=True, slots=True)
class HardState:
    """What an acceptor persists besides entries: its promise, and a commit hint.

    `commit_slot` is the highest slot known chosen (every slot up to it is chosen). A member
    that restarts with a stale one learns the rest from the leader.
    """

    promised: Ballot = BALLOT_ZERO
    commit_slot: Slot = Slot(0)


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """A state-machine snapshot covers every slot up to `last_slot` (0: the empty start)."""

    last_slot: Slot
    membership: Membership
