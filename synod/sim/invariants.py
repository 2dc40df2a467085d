"""Safety properties checked after every event of a run.

Owns the simulator's global view of what was decided, built only from what members apply:
- at most one value is chosen per slot: every entry any member applies at a slot carries the
  same value (`Entry.same_value`) as the first one applied there, in any incarnation;
- a member's committed prefix never changes: a member applies slots in order without gaps,
  and after a restart or a snapshot install it resumes from a state equal to the global one;
- state machines at equal applied slots are equal: one digest per applied slot, globally;
- at most one leader per ballot, and only the ballot's own proposer leads it;
- no acknowledged write is lost: a write a client was told succeeded sits in the chosen log.

Violations raise `SafetyViolation` naming the property; the run stops there and prints the
trace and the command that reproduces it.
"""

from __future__ import annotations

from dataclasses import dataclass

from synod.paxos.node import Node, Role
from synod.paxos.types import Ballot, Entry, NodeId, Slot
from synod.sim.kvmachine import Command, Outcome, describe_entry

SLOTS_TRACKED_MAX = 10_000_000


class SafetyViolation(Exception):
    """A safety property failed: `prop` names it, the message says how."""

    def __init__(self, prop: str, detail: str) -> None:
        super().__init__(f"{prop}: {detail}")
        self.prop = prop
        self.detail = detail


@dataclass(frozen=True, slots=True)
class _Chosen:
    entry: Entry
    first_member: NodeId


class SafetyMonitor:
    """The global record of chosen values, state digests and leaders."""

    def __init__(self) -> None:
        self._chosen: dict[Slot, _Chosen] = {}
        self._digests: dict[Slot, bytes] = {}
        self._leaders: dict[Ballot, NodeId] = {}
        self._applied: dict[NodeId, Slot] = {}
        self._write_slots: dict[tuple[int, int], Slot] = {}
        self._acknowledged: dict[tuple[int, int], Slot] = {}

    @property
    def chosen_slot_max(self) -> Slot:
        return max(self._chosen, default=Slot(0))

    @property
    def acknowledged_count(self) -> int:
        return len(self._acknowledged)

    def on_restored(self, member: NodeId, slot: Slot, digest: bytes) -> None:
        """A member's state machine now holds the state at `slot` (restart or install)."""
        self._check_digest(member, slot, digest, "restored state")
        self._applied[member] = slot

    def on_applied(
        self, member: NodeId, entry: Entry, outcomes: tuple[Outcome, ...], digest: bytes
    ) -> None:
        expected = self._applied.get(member, Slot(0)) + 1
        if entry.slot != expected:
            raise SafetyViolation(
                "committed prefix",
                f"member {member} applied slot {entry.slot}, expected slot {expected}",
            )
        self._applied[member] = entry.slot
        chosen = self._chosen.get(entry.slot)
        if chosen is None:
            assert len(self._chosen) < SLOTS_TRACKED_MAX
            self._chosen[entry.slot] = _Chosen(entry, member)
            for outcome in outcomes:
                if not outcome.duplicate:
                    self._write_slots[(outcome.client, outcome.seq)] = entry.slot
        elif not chosen.entry.same_value(entry):
            raise SafetyViolation(
                "one value per slot",
                f"member {chosen.first_member} applied {describe_entry(chosen.entry)}; "
                f"member {member} applied {describe_entry(entry)}",
            )
        self._check_digest(member, entry.slot, digest, "state machine")

    def _check_digest(self, member: NodeId, slot: Slot, digest: bytes, what: str) -> None:
        known = self._digests.setdefault(slot, digest)
        if known != digest:
            raise SafetyViolation(
                "equal states at equal slots",
                f"member {member}'s {what} at slot {slot} differs from another member's",
            )

    def on_acknowledged(self, client: int, seq: int) -> None:
        """A client was told its write succeeded: it must be in the chosen log, for good."""
        slot = self._write_slots.get((client, seq))
        if slot is None:
            raise SafetyViolation(
                "acknowledged write", f"client {client} seq {seq} acknowledged but never chosen"
            )
        self._acknowledged[(client, seq)] = slot

    def check_node(self, member: NodeId, node: Node) -> bool:
        """The core's own invariants, and one leader per ballot; True if `member` has just
        become the leader of a ballot not seen leading before."""
        node.check_invariants()
        if node.role is not Role.LEADER:
            return False
        ballot = node.ballot
        if ballot.node_id != member:
            raise SafetyViolation(
                "one leader per ballot", f"member {member} leads ballot {ballot} of another"
            )
        leader = self._leaders.get(ballot)
        if leader is None:
            self._leaders[ballot] = member
            return True
        if leader != member:
            raise SafetyViolation(
                "one leader per ballot", f"members {leader} and {member} both lead {ballot}"
            )
        return False

    def check_acknowledged_writes(self) -> None:
        """At the end: every acknowledged write still sits in the chosen slot it was told of."""
        for (client, seq), slot in sorted(self._acknowledged.items()):
            chosen = self._chosen[slot]
            found = any(
                (command.client, command.seq) == (client, seq)
                for command in (Command.decode(data) for data in chosen.entry.commands)
            )
            if not found:
                raise SafetyViolation(
                    "acknowledged write", f"client {client} seq {seq} missing from slot {slot}"
                )
