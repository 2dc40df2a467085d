"""Typed errors the core raises to its caller; each says who must act."""

from __future__ import annotations

from synod.paxos.types import NodeId


class NotLeader(Exception):
    """The request reached a member that is not the leader; try `leader_hint` if known."""

    def __init__(self, leader_hint: NodeId | None) -> None:
        super().__init__(f"not the leader (leader hint: {leader_hint})")
        self.leader_hint = leader_hint


class ProposalDropped(Exception):
    """The leader refused the proposal before it entered the log: it will never be applied."""


class MembershipChangeRefused(Exception):
    """The leader refused a configuration change before it entered the log; the message
    says why (one change at a time, one voter at a time)."""
