"""The backup file: one member's state-machine snapshot as `Maintenance.Snapshot` streams it
and `synod ctl snapshot save` (or `etcdctl snapshot save`) stores it.

Layout (everything before the trailer is covered by its sha256):

    magic     b"SYNOD-SNAPSHOT\\n\\0" (16 bytes)
    length    uint64 big-endian, bytes of the body
    body      msgpack [version, cluster id, member id, snapshot meta, machine bytes]
    padding   zero bytes up to a multiple of 512 (etcdctl looks for its sha256 trailer at
              size % 512 == 32, the layout of a bolt file of whole pages)
    trailer   sha256 of all the above (32 bytes)

The machine bytes are exactly what the member's state machine snapshot holds (what a
follower would install), so a restore rebuilds the same state, revisions included. It is
not etcd's bolt database: etcdctl saves the file and checks its trailer, but cannot restore
it.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from synod.paxos.codec import (
    CodecError,
    decode_snapshot_meta,
    encode_snapshot_meta,
    pack,
    unpack,
)
from synod.paxos.types import SnapshotMeta

MAGIC = b"SYNOD-SNAPSHOT\n\0"
VERSION = 1
PAGE_BYTES = 512
SHA256_BYTES = 32
_LENGTH = struct.Struct(">Q")
HEAD_BYTES = len(MAGIC) + _LENGTH.size


class SnapshotFileError(ValueError):
    """The file is not a whole, intact Synod snapshot; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class SnapshotFile:
    """What a backup holds: where it came from, which slot it covers, the machine bytes."""

    cluster_id: int
    member_id: int
    meta: SnapshotMeta
    machine: bytes


def encode(snapshot: SnapshotFile) -> bytes:
    """The whole file, trailer included."""
    body = pack(
        [
            VERSION,
            snapshot.cluster_id,
            snapshot.member_id,
            encode_snapshot_meta(snapshot.meta),
            snapshot.machine,
        ]
    )
    data = MAGIC + _LENGTH.pack(len(body)) + body
    data += bytes(-len(data) % PAGE_BYTES)
    assert len(data) % PAGE_BYTES == 0
    return data + hashlib.sha256(data).digest()


def verify_checksum(data: bytes) -> None:
    """Raise SnapshotFileError unless `data` ends with the sha256 of the rest."""
    if len(data) < PAGE_BYTES + SHA256_BYTES or len(data) % PAGE_BYTES != SHA256_BYTES:
        raise SnapshotFileError(
            f"{len(data)} bytes is not a snapshot file's size (pages of 512 bytes plus a "
            "32-byte sha256): the file is truncated or not a snapshot"
        )
    content, trailer = data[:-SHA256_BYTES], data[-SHA256_BYTES:]
    if hashlib.sha256(content).digest() != trailer:
        raise SnapshotFileError("sha256 mismatch: the snapshot file is corrupted")


def decode(data: bytes) -> SnapshotFile:
    """The snapshot in `data`, after checking its trailer, magic, length and padding."""
    verify_checksum(data)
    if not data.startswith(MAGIC):
        raise SnapshotFileError(
            "not a Synod snapshot (an etcd snapshot is a bolt database: restore it with etcdctl)"
        )
    (length,) = _LENGTH.unpack_from(data, len(MAGIC))
    end = HEAD_BYTES + length
    if end > len(data) - SHA256_BYTES or any(data[end:-SHA256_BYTES]):
        raise SnapshotFileError("the snapshot's length or padding is wrong")
    try:
        version, cluster_id, member_id, meta_raw, machine = unpack(data[HEAD_BYTES:end])
        meta = decode_snapshot_meta(meta_raw)
    except (CodecError, ValueError, TypeError) as error:
        raise SnapshotFileError(f"the snapshot does not decode: {error}") from error
    if version != VERSION:
        raise SnapshotFileError(f"snapshot format version {version}; this Synod reads {VERSION}")
    if not isinstance(cluster_id, int) or not isinstance(member_id, int):
        raise SnapshotFileError("the snapshot's cluster or member id is not an integer")
    if not isinstance(machine, bytes):
        raise SnapshotFileError("the snapshot's state is not bytes")
    return SnapshotFile(cluster_id, member_id, meta, machine)
