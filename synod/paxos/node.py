"""The Multi-Paxos node: a deterministic state machine with no I/O (API skeleton)."""

from __future__ import annotations

import enum
import random
from collections.abc import Sequence
from dataclasses import dataclass

from synod.paxos.config import Config
from synod.paxos.messages import Message
from synod.paxos.ready import Ready
from synod.paxos.types import Ballot, Entry, HardState, Membership, NodeId, Slot, SnapshotMeta


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(frozen=True, slots=True)
class Restore:
    """What a member recovered from storage. Bootstrap: empty hard state, snapshot at slot 0
    carrying the initial membership, no entries."""

    hard_state: HardState
    snapshot: SnapshotMeta
    entries: tuple[Entry, ...]

    @staticmethod
    def bootstrap(voters: Sequence[int]) -> Restore:
        membership = Membership(tuple(sorted(NodeId(v) for v in voters)))
        return Restore(HardState(), SnapshotMeta(Slot(0), membership), ())


class Node:
    def __init__(self, node_id: NodeId, config: Config, rng: random.Random, restore: Restore):
        raise NotImplementedError

    # inputs
    def tick(self) -> None: ...
    def step(self, message: Message) -> None: ...
    def propose(self, commands: Sequence[bytes]) -> None:
        """Queue commands; raises NotLeader or ProposalDropped."""
    def read_index(self, read_id: int) -> None:
        """Start a linearizable read; raises NotLeader."""
    def transfer_leadership(self, target: NodeId) -> None: ...
    def persisted(self, number: int) -> None: ...
    def applied(self, slot: Slot) -> None: ...
    def compact(self, meta: SnapshotMeta) -> None: ...
    # outputs
    def has_ready(self) -> bool: ...
    def ready(self) -> Ready: ...
    def check_invariants(self) -> None: ...
    # introspection
    @property
    def role(self) -> Role: ...
    @property
    def ballot(self) -> Ballot: ...
    @property
    def leader(self) -> NodeId | None: ...
    @property
    def commit_slot(self) -> Slot: ...
    @property
    def applied_slot(self) -> Slot: ...
    @property
    def membership(self) -> Membership: ...
