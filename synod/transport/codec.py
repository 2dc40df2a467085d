"""Byte layout of the messages members exchange, and its length-prefixed framing.

A frame is a 4-byte big-endian length followed by a msgpack array of messages (one frame per
flush carries every message queued for that peer: batching). Each message is an array whose
first item is its type code. Decoding validates shapes and raises `WireError`, so a peer that
sends garbage is disconnected rather than believed.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any

import msgpack

from synod.paxos.codec import (
    CodecError,
    decode_ballot,
    decode_entry,
    decode_snapshot_meta,
    encode_ballot,
    encode_entry,
    encode_snapshot_meta,
)
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
from synod.paxos.types import Ballot, NodeId, Slot

FRAME_HEADER = struct.Struct(">I")
FRAME_BYTES_MAX = 64 << 20


class WireError(ValueError):
    """A peer sent bytes that are not a valid frame or message: the peer is at fault."""


def _entries(value: object) -> tuple[Any, ...]:
    if not isinstance(value, list):
        raise WireError("entries must be an array")
    return tuple(decode_entry(item) for item in value)


def _encode(message: Message) -> list[Any]:
    head = [message.src, message.dst, encode_ballot(message.ballot)]
    match message:
        case PreVote():
            return [1, *head, message.commit_slot]
        case PreVoteReply():
            return [2, *head, message.granted, encode_ballot(message.promised)]
        case Prepare():
            return [3, *head, message.from_slot, message.commit_slot, message.transfer]
        case Promise():
            entries = [encode_entry(entry) for entry in message.entries]
            return [4, *head, message.granted, encode_ballot(message.promised), entries]
        case Accept():
            entries = [encode_entry(entry) for entry in message.entries]
            return [5, *head, entries, message.commit_slot, message.read_round]
        case AcceptReply():
            return [
                6,
                *head,
                message.ok,
                message.match_slot,
                message.read_round,
                encode_ballot(message.promised),
                message.gap,
            ]
        case InstallSnapshot():
            return [7, *head, encode_snapshot_meta(message.meta), message.data]
        case TimeoutNow():
            return [8, *head, message.commit_slot]
    raise AssertionError(f"unknown message {message!r}")


def _decode(value: object) -> Message:
    if not isinstance(value, list) or len(value) < 4:
        raise WireError("a message is an array of at least 4 items")
    code, src, dst, ballot_raw, *rest = value
    if not all(isinstance(x, int) and x >= 0 for x in (src, dst)):
        raise WireError("bad sender or receiver")
    source, target, ballot = NodeId(src), NodeId(dst), decode_ballot(ballot_raw)
    decoder = _DECODERS.get(code) if isinstance(code, int) else None
    if decoder is None:
        raise WireError(f"unknown message type {code!r}")
    try:
        return decoder(source, target, ballot, rest)
    except (TypeError, ValueError, IndexError, AssertionError) as error:
        raise WireError(f"malformed message of type {code}: {error}") from error


Decoder = Callable[[NodeId, NodeId, Ballot, list[Any]], Message]

_DECODERS: dict[int, Decoder] = {
    1: lambda s, d, b, r: PreVote(s, d, b, Slot(int(r[0]))),
    2: lambda s, d, b, r: PreVoteReply(s, d, b, bool(r[0]), decode_ballot(r[1])),
    3: lambda s, d, b, r: Prepare(s, d, b, Slot(int(r[0])), Slot(int(r[1])), bool(r[2])),
    4: lambda s, d, b, r: Promise(s, d, b, bool(r[0]), decode_ballot(r[1]), _entries(r[2])),
    5: lambda s, d, b, r: Accept(s, d, b, _entries(r[0]), Slot(int(r[1])), int(r[2])),
    6: lambda s, d, b, r: AcceptReply(
        s, d, b, bool(r[0]), Slot(int(r[1])), int(r[2]), decode_ballot(r[3]), bool(r[4])
    ),
    7: lambda s, d, b, r: InstallSnapshot(s, d, b, decode_snapshot_meta(r[0]), bytes(r[1])),
    8: lambda s, d, b, r: TimeoutNow(s, d, b, Slot(int(r[0]))),
}


def encode_frame(items: Sequence[object]) -> bytes:
    """One frame holding `items` (already msgpack-encodable values)."""
    payload: bytes = msgpack.packb(list(items), use_bin_type=True)
    if len(payload) > FRAME_BYTES_MAX:
        raise WireError(f"frame of {len(payload)} bytes exceeds {FRAME_BYTES_MAX}")
    return FRAME_HEADER.pack(len(payload)) + payload


def encode_messages(messages: Sequence[Message]) -> list[Any]:
    return [_encode(message) for message in messages]


def decode_messages(items: object) -> list[Message]:
    if not isinstance(items, list):
        raise WireError("a frame of messages is an array")
    try:
        return [_decode(item) for item in items]
    except CodecError as error:
        raise WireError(str(error)) from error


def decode_payload(payload: bytes) -> object:
    try:
        return msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as error:
        raise WireError(f"undecodable frame: {error}") from error


def frame_length(header: bytes) -> int:
    (length,) = FRAME_HEADER.unpack(header)
    if length > FRAME_BYTES_MAX:
        raise WireError(f"frame of {length} bytes exceeds {FRAME_BYTES_MAX}")
    return int(length)
