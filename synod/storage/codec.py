"""Storage's own records: which snapshot is current and the checkpoint at the head of each
WAL segment. The core's values are encoded by `synod.paxos.codec` (re-exported here, so the
WAL speaks one `codec` module).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from synod.paxos.codec import (
    CodecError,
    decode_ballot,
    decode_entries,
    decode_entry,
    decode_hard_state,
    decode_membership,
    decode_snapshot_meta,
    encode_ballot,
    encode_entries,
    encode_entry,
    encode_hard_state,
    encode_membership,
    encode_snapshot_meta,
    expect_array,
    expect_int,
    pack,
    unpack,
)
from synod.paxos.types import HardState, Slot, SnapshotMeta

__all__ = [
    "Checkpoint",
    "CodecError",
    "SnapshotRef",
    "decode_ballot",
    "decode_checkpoint",
    "decode_entries",
    "decode_entry",
    "decode_hard_state",
    "decode_membership",
    "decode_snapshot_meta",
    "decode_snapshot_ref",
    "encode_ballot",
    "encode_checkpoint",
    "encode_entries",
    "encode_entry",
    "encode_hard_state",
    "encode_membership",
    "encode_snapshot_meta",
    "encode_snapshot_ref",
    "pack",
    "unpack",
]


@dataclass(frozen=True, slots=True)
class SnapshotRef:
    """Which snapshot is current: its metadata and the file holding its data (None: empty)."""

    meta: SnapshotMeta
    file_name: str | None
    data_bytes: int
    data_crc: int


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The storage state at the start of a segment: enough to replay from that segment."""

    hard_state: HardState
    snapshot: SnapshotRef
    log_last_slot: Slot


def encode_snapshot_ref(ref: SnapshotRef) -> list[Any]:
    return [encode_snapshot_meta(ref.meta), ref.file_name, ref.data_bytes, ref.data_crc]


def decode_snapshot_ref(value: object) -> SnapshotRef:
    meta, file_name, data_bytes, data_crc = expect_array(value, 4)
    if file_name is not None and not isinstance(file_name, str):
        raise CodecError(f"snapshot file name must be a string, got {file_name!r}")
    return SnapshotRef(
        decode_snapshot_meta(meta), file_name, expect_int(data_bytes), expect_int(data_crc)
    )


def encode_checkpoint(checkpoint: Checkpoint) -> bytes:
    return pack(
        [
            encode_hard_state(checkpoint.hard_state),
            encode_snapshot_ref(checkpoint.snapshot),
            checkpoint.log_last_slot,
        ]
    )


def decode_checkpoint(payload: bytes) -> Checkpoint:
    hard_state, snapshot, log_last_slot = expect_array(unpack(payload), 3)
    return Checkpoint(
        decode_hard_state(hard_state),
        decode_snapshot_ref(snapshot),
        Slot(expect_int(log_last_slot)),
    )
