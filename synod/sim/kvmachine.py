"""The simulator's replicated state machine: a small key-value register with sessions.

Commands are msgpack arrays `[client, seq, op, key, first, second]`: put(key, value),
cas(key, expected, new) where `expected = None` means "absent", delete(key). Reads do not go
through the log (they are read-index reads served from `get`). The machine keeps a session
table, client -> (last seq applied, its result), and applies a command only if its seq is
newer than the client's last one, so a command that reaches the log twice changes the state
once and both copies answer with the first result (as ZooKeeper's and etcd's sessions do).

It implements the driver's `StateMachine` protocol. `apply` is a pure function of the
entries applied so far; `snapshot` and `restore` round-trip the whole state, and `digest`
names it so the simulator can compare members at equal applied slots.

Invariants: entries are applied in slot order without gaps; a snapshot never rewinds state
that was applied in this incarnation unless it is restored on purpose.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import msgpack

from synod.paxos.types import Entry, EntryKind, Membership, NodeId, Slot, SnapshotMeta

KEYS_MAX = 100_000
SESSIONS_MAX = 100_000

OP_PUT = "put"
OP_CAS = "cas"
OP_DELETE = "delete"
OPS = (OP_PUT, OP_CAS, OP_DELETE)


@dataclass(frozen=True, slots=True)
class Command:
    """One client write, as carried in a log entry."""

    client: int
    seq: int
    op: str
    key: str
    first: str | None = None
    second: str | None = None

    def __post_init__(self) -> None:
        assert self.client >= 0
        assert self.seq >= 1, "sequence numbers start at 1 so 0 means 'none yet'"
        assert self.op in OPS
        if self.op == OP_PUT:
            assert self.first is not None
        if self.op == OP_CAS:
            assert self.second is not None, "cas cannot swap in 'absent'"

    def encode(self) -> bytes:
        packed: bytes = msgpack.packb(
            [self.client, self.seq, self.op, self.key, self.first, self.second]
        )
        return packed

    @staticmethod
    def decode(data: bytes) -> Command:
        client, seq, op, key, first, second = msgpack.unpackb(data)
        return Command(int(client), int(seq), str(op), str(key), first, second)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What applying one command answered: the result a client waiting on (client, seq) gets.

    put answers None, cas whether it swapped, delete whether the key existed. `duplicate`
    marks a command whose (client, seq) was already applied: the state did not change.
    """

    client: int
    seq: int
    result: bool | None
    duplicate: bool


def describe_entry(entry: Entry) -> str:
    """A readable one-line form of a log entry, commands decoded, for failure reports."""
    head = f"slot {entry.slot} ballot {entry.ballot} {entry.kind.name.lower()}"
    if entry.kind is EntryKind.MEMBERSHIP:
        return f"{head} {entry.membership}"
    if entry.kind is EntryKind.NOOP:
        return head
    shown = []
    for data in entry.commands:
        command = Command.decode(data)
        arguments = ", ".join(repr(a) for a in (command.first, command.second) if a is not None)
        shown.append(
            f"client {command.client} seq {command.seq} {command.op}"
            f"({command.key!r}{', ' if arguments else ''}{arguments})"
        )
    return f"{head} [{'; '.join(shown)}]"


class KeyValueMachine:
    """put / cas / delete over string keys and values, with per-client deduplication."""

    def __init__(self, membership: Membership) -> None:
        self.applied_slot = Slot(0)
        self.membership = membership
        self._data: dict[str, str] = {}
        self._sessions: dict[int, tuple[int, bool | None]] = {}

    # -- the driver's StateMachine protocol -------------------------------------------------

    def apply(self, entry: Entry) -> None:
        self.execute(entry)

    def snapshot(self) -> tuple[SnapshotMeta, bytes]:
        return SnapshotMeta(self.applied_slot, self.membership), self.encode_state()

    def restore(self, meta: SnapshotMeta, data: bytes) -> None:
        voters, learners, items, sessions = msgpack.unpackb(data, strict_map_key=False)
        membership = Membership(
            tuple(NodeId(v) for v in voters), tuple(NodeId(v) for v in learners)
        )
        assert membership == meta.membership, "snapshot bytes and metadata disagree"
        self._data = {str(key): str(value) for key, value in items}
        self._sessions = {int(c): (int(seq), result) for c, seq, result in sessions}
        self.membership = membership
        self.applied_slot = meta.last_slot

    # -- the simulator's side ---------------------------------------------------------------

    def execute(self, entry: Entry) -> tuple[Outcome, ...]:
        """Apply one committed entry and return what each command in it answered."""
        assert entry.slot == self.applied_slot + 1, "entries apply in slot order without gaps"
        self.applied_slot = entry.slot
        if entry.kind is EntryKind.MEMBERSHIP:
            assert entry.membership is not None
            self.membership = entry.membership
            return ()
        return tuple(self._execute_command(Command.decode(data)) for data in entry.commands)

    def get(self, key: str) -> str | None:
        return self._data.get(key)

    def encode_state(self) -> bytes:
        """The whole state as canonical bytes (sorted), the snapshot format."""
        items = [[key, self._data[key]] for key in sorted(self._data)]
        sessions = [[c, *self._sessions[c]] for c in sorted(self._sessions)]
        packed: bytes = msgpack.packb(
            [list(self.membership.voters), list(self.membership.learners), items, sessions]
        )
        return packed

    def digest(self) -> bytes:
        return hashlib.blake2b(self.encode_state(), digest_size=16).digest()

    def _execute_command(self, command: Command) -> Outcome:
        last_seq, last_result = self._sessions.get(command.client, (0, None))
        if command.seq <= last_seq:
            cached = last_result if command.seq == last_seq else None
            return Outcome(command.client, command.seq, cached, duplicate=True)
        result = self._mutate(command)
        assert len(self._sessions) < SESSIONS_MAX or command.client in self._sessions
        self._sessions[command.client] = (command.seq, result)
        return Outcome(command.client, command.seq, result, duplicate=False)

    def _mutate(self, command: Command) -> bool | None:
        current = self._data.get(command.key)
        if command.op == OP_PUT:
            assert command.first is not None
            self._put(command.key, command.first)
            return None
        if command.op == OP_CAS:
            assert command.second is not None
            if current != command.first:
                return False
            self._put(command.key, command.second)
            return True
        assert command.op == OP_DELETE
        return self._data.pop(command.key, None) is not None

    def _put(self, key: str, value: str) -> None:
        assert len(self._data) < KEYS_MAX or key in self._data, "the key space is bounded"
        self._data[key] = value
