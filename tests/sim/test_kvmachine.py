"""The simulator's key-value state machine is deterministic, deduplicates by (client, seq),
and round-trips through snapshots (DESIGN.md: state machines are pure functions of the log).
"""

from __future__ import annotations

from synod.paxos.types import Ballot, Entry, EntryKind, Membership, NodeId, Slot
from synod.sim.kvmachine import Command, KeyValueMachine, Outcome, describe_entry

MEMBERSHIP = Membership((NodeId(1), NodeId(2), NodeId(3)))
BALLOT = Ballot(1, NodeId(1))


def _entry(slot: int, *commands: Command) -> Entry:
    return Entry(Slot(slot), BALLOT, EntryKind.COMMANDS, tuple(c.encode() for c in commands))


def test_command_encoding_round_trips() -> None:
    command = Command(3, 7, "cas", "k1", None, "v")
    assert Command.decode(command.encode()) == command


def test_put_cas_delete_answer_like_a_register() -> None:
    machine = KeyValueMachine(MEMBERSHIP)
    outcomes = machine.execute(_entry(1, Command(1, 1, "put", "k", "a")))
    assert outcomes == (Outcome(1, 1, None, duplicate=False),)
    assert machine.execute(_entry(2, Command(1, 2, "cas", "k", "b", "c")))[0].result is False
    assert machine.execute(_entry(3, Command(1, 3, "cas", "k", "a", "c")))[0].result is True
    assert machine.get("k") == "c"
    assert machine.execute(_entry(4, Command(1, 4, "delete", "k")))[0].result is True
    assert machine.execute(_entry(5, Command(1, 5, "delete", "k")))[0].result is False
    assert machine.execute(_entry(6, Command(1, 6, "cas", "k", None, "d")))[0].result is True
    assert machine.get("k") == "d"
    assert machine.applied_slot == 6


def test_a_command_applied_twice_changes_the_state_once() -> None:
    machine = KeyValueMachine(MEMBERSHIP)
    put = Command(1, 1, "put", "k", "a")
    machine.execute(_entry(1, put))
    machine.execute(_entry(2, Command(2, 1, "put", "k", "b")))
    again = machine.execute(_entry(3, put))
    assert again == (Outcome(1, 1, None, duplicate=True),)
    assert machine.get("k") == "b"


def test_noop_and_membership_entries_advance_the_slot_only() -> None:
    machine = KeyValueMachine(MEMBERSHIP)
    machine.execute(Entry(Slot(1), BALLOT, EntryKind.NOOP))
    wider = Membership((NodeId(1), NodeId(2), NodeId(3)), (NodeId(4),))
    machine.execute(Entry(Slot(2), BALLOT, EntryKind.MEMBERSHIP, membership=wider))
    assert machine.applied_slot == 2
    assert machine.membership == wider
    assert machine.snapshot()[0].membership == wider


def test_snapshot_and_restore_give_an_equal_machine() -> None:
    machine = KeyValueMachine(MEMBERSHIP)
    machine.execute(_entry(1, Command(1, 1, "put", "x", "1"), Command(2, 1, "put", "y", "2")))
    meta, data = machine.snapshot()
    copy = KeyValueMachine(MEMBERSHIP)
    copy.restore(meta, data)
    assert copy.digest() == machine.digest()
    assert copy.applied_slot == 1
    duplicate = copy.execute(_entry(2, Command(1, 1, "put", "x", "other")))
    assert duplicate[0].duplicate, "the session table travels in the snapshot"


def test_equal_logs_give_equal_digests_in_any_key_insertion_order() -> None:
    first, second = KeyValueMachine(MEMBERSHIP), KeyValueMachine(MEMBERSHIP)
    first.execute(_entry(1, Command(1, 1, "put", "a", "1"), Command(1, 2, "put", "b", "2")))
    second.execute(_entry(1, Command(1, 1, "put", "b", "2")))
    second.execute(_entry(2, Command(1, 2, "put", "a", "1")))
    second.restore(*second.snapshot())
    first_meta, _ = first.snapshot()
    assert first.encode_state() == second.encode_state()
    assert first_meta.last_slot == 1


def test_describe_entry_decodes_commands() -> None:
    text = describe_entry(_entry(4, Command(2, 9, "cas", "k", "a", "b")))
    assert "slot 4" in text
    assert "client 2 seq 9 cas('k', 'a', 'b')" in text
