"""The byte layout of the core's values (ballots, memberships, entries, hard state, snapshot
metadata), shared by storage (the WAL) and transport (peer messages).

Each value is a msgpack array with its fields in a fixed order; ballots, entry kinds and
memberships are spelled out as integers and arrays (never pickle), so the layout is readable
by any msgpack decoder and stable across Python versions.

Invariants: `decode_x(encode_x(v)) == v` for every value; decoding checks types and ranges
and raises `CodecError` for anything else, so bytes that passed a checksum but have an
unexpected shape are reported, never half-applied.
"""

from __future__ import annotations

import itertools
from typing import Any

import msgpack

from synod.paxos.types import (
    Ballot,
    Entry,
    EntryKind,
    HardState,
    Membership,
    NodeId,
    Slot,
    SnapshotMeta,
)


class CodecError(ValueError):
    """A checksummed record that does not decode to the value its type promises."""


def pack(value: object) -> bytes:
    data: bytes = msgpack.packb(value, use_bin_type=True)
    return data


def unpack(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as error:
        raise CodecError(f"undecodable msgpack: {error}") from error


def expect_int(value: object, low: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise CodecError(f"expected an integer >= {low}, got {value!r}")
    return value


def expect_array(value: object, length: int | None = None) -> list[Any]:
    if not isinstance(value, list) or (length is not None and len(value) != length):
        raise CodecError(f"expected an array of {length} items, got {value!r:.80}")
    return value


def _node_ids(value: object) -> tuple[NodeId, ...]:
    ids = tuple(NodeId(expect_int(item)) for item in expect_array(value))
    if ids != tuple(sorted(set(ids))):
        raise CodecError(f"node ids must be sorted and unique: {ids}")
    return ids


def encode_ballot(ballot: Ballot) -> list[int]:
    return [ballot.round, ballot.node_id]


def decode_ballot(value: object) -> Ballot:
    round_, node_id = expect_array(value, 2)
    return Ballot(expect_int(round_), NodeId(expect_int(node_id)))


def encode_membership(membership: Membership) -> list[list[int]]:
    return [list(membership.voters), list(membership.learners)]


def decode_membership(value: object) -> Membership:
    voters_raw, learners_raw = expect_array(value, 2)
    voters, learners = _node_ids(voters_raw), _node_ids(learners_raw)
    if not voters or set(voters) & set(learners):
        raise CodecError(f"bad membership: voters {voters}, learners {learners}")
    return Membership(voters, learners)


def encode_entry(entry: Entry) -> list[Any]:
    membership = None if entry.membership is None else encode_membership(entry.membership)
    return [
        entry.slot,
        encode_ballot(entry.ballot),
        int(entry.kind),
        list(entry.commands),
        membership,
        entry.size_bytes,
    ]


def decode_entry(value: object) -> Entry:
    slot, ballot, kind_raw, commands_raw, membership_raw, size_bytes = expect_array(value, 6)
    try:
        kind = EntryKind(expect_int(kind_raw, 1))
    except ValueError as error:
        raise CodecError(f"unknown entry kind {kind_raw!r}") from error
    commands = tuple(expect_array(commands_raw))
    if not all(isinstance(command, bytes) for command in commands):
        raise CodecError("entry commands must be bytes")
    membership = None if membership_raw is None else decode_membership(membership_raw)
    if (kind is EntryKind.MEMBERSHIP) != (membership is not None):
        raise CodecError(f"entry of kind {kind.name} with membership {membership}")
    if kind is EntryKind.NOOP and commands:
        raise CodecError(f"entry of kind {kind.name} carries commands")
    return Entry(
        Slot(expect_int(slot, 1)),
        decode_ballot(ballot),
        kind,
        commands,
        membership,
        expect_int(size_bytes),
    )


def encode_entries(entries: list[Entry] | tuple[Entry, ...]) -> bytes:
    return pack([encode_entry(entry) for entry in entries])


def decode_entries(payload: bytes) -> list[Entry]:
    entries = [decode_entry(item) for item in expect_array(unpack(payload))]
    for earlier, later in itertools.pairwise(entries):
        if later.slot != earlier.slot + 1:
            raise CodecError(f"entries not contiguous: slot {later.slot} after {earlier.slot}")
    return entries


def encode_hard_state(hard_state: HardState) -> list[Any]:
    return [encode_ballot(hard_state.promised), hard_state.commit_slot]


def decode_hard_state(value: object) -> HardState:
    promised, commit_slot = expect_array(value, 2)
    return HardState(decode_ballot(promised), Slot(expect_int(commit_slot)))


def encode_snapshot_meta(meta: SnapshotMeta) -> list[Any]:
    return [meta.last_slot, encode_membership(meta.membership)]


def decode_snapshot_meta(value: object) -> SnapshotMeta:
    last_slot, membership = expect_array(value, 2)
    return SnapshotMeta(Slot(expect_int(last_slot)), decode_membership(membership))
