"""The peer wire: every core message survives encoding, and garbage is refused."""

from __future__ import annotations

import pytest

from synod.paxos.messages import (
    Accept,
    AcceptReply,
    InstallSnapshot,
    Message,
    Prepare,
    PreVote,
    PreVoteReply,
    Promise,
    TimeoutNow,
)
from synod.paxos.types import Ballot, Entry, EntryKind, Membership, NodeId, Slot, SnapshotMeta
from synod.transport.codec import (
    WireError,
    decode_messages,
    decode_payload,
    encode_frame,
    encode_messages,
    frame_length,
)

B = Ballot(3, NodeId(1))
A, Z = NodeId(1), NodeId(2)
MEMBERS = Membership((NodeId(1), NodeId(2), NodeId(3)), (NodeId(4),))
ENTRIES = (
    Entry(Slot(5), B, EntryKind.COMMANDS, (b"a", b"\x00b")),
    Entry(Slot(6), B, EntryKind.NOOP),
    Entry(Slot(7), B, EntryKind.MEMBERSHIP, (), MEMBERS),
)
SAMPLES: list[Message] = [
    PreVote(A, Z, B, Slot(4)),
    PreVoteReply(A, Z, B, True, Ballot(2, NodeId(3))),
    Prepare(A, Z, B, Slot(5), Slot(4), True),
    Promise(A, Z, B, True, B, ENTRIES),
    Accept(A, Z, B, ENTRIES, Slot(4), 9),
    Accept(A, Z, B, (), Slot(4), 0),
    AcceptReply(A, Z, B, False, Slot(7), 9, Ballot(4, NodeId(2)), True),
    InstallSnapshot(A, Z, B, SnapshotMeta(Slot(7), MEMBERS), b"state"),
    TimeoutNow(A, Z, B, Slot(7)),
]


def test_every_message_round_trips_through_a_frame() -> None:
    frame = encode_frame(encode_messages(SAMPLES))
    length = frame_length(frame[:4])
    assert length == len(frame) - 4
    assert decode_messages(decode_payload(frame[4:])) == SAMPLES


@pytest.mark.parametrize(
    "garbage",
    [b"\xc1", b"\x93\x01\x02\x03"],
)
def test_undecodable_bytes_are_refused(garbage: bytes) -> None:
    with pytest.raises(WireError):
        decode_messages(decode_payload(garbage))


@pytest.mark.parametrize(
    "item",
    [
        [99, 1, 2, [1, 1]],
        [5, 1, 2, [1, 1], "not entries", 0, 0],
        [5, -1, 2, [1, 1], [], 0, 0],
        [1, 1, 2],
        [6, 1, 2, [1, 1]],
    ],
)
def test_malformed_messages_are_refused(item: list[object]) -> None:
    with pytest.raises(WireError):
        decode_messages([item])


def test_oversized_frame_length_is_refused() -> None:
    with pytest.raises(WireError):
        frame_length(b"\xff\xff\xff\xff")
