"""Shipping a snapshot to a lagging member in checked, resumable chunks.

The core asks for a snapshot to be sent by emitting an `InstallSnapshot`; the runtime does
not put the state in that one message (it may be larger than a frame, and a broken
connection would lose all of it). Instead the leader streams its current durable snapshot
*file* (synod.storage: one checksummed frame holding the metadata and the data) over the
peer transport, and the receiver rebuilds the `InstallSnapshot` and steps it into its core
once the whole file is there and verified.

Runtime items (codes 110-119 of the peer frames):
- `[BEGIN, key, ballot_round, ballot_node, round]` sender to receiver: a transfer of the
  file `key = [last_slot, data_crc, size_bytes]` in that ballot. The receiver answers with
  an ACK `again` of what it already holds of that key (0 for a new one); a different key
  replaces (and deletes) the unfinished transfer it had: a newer snapshot supersedes an
  older one.
- `[CHUNK, key, offset, data, crc32(data), round]`: `data` belongs at `offset`. The
  receiver writes a chunk only if it starts exactly where its file ends and its checksum
  holds; otherwise it drops it and answers `ACK again`, asking for everything from its offset.
- `[ACK, key, offset, again, round]` receiver to sender: every byte below `offset` is
  written. An ACK of the whole size ends the transfer.

`round` numbers the sender's attempts: it moves on with every BEGIN and every rewind, and
an `again` rewinds the sender only if it answers the current round. The chunks in flight
behind a refused one, or BEGINs queued while a link was down, each provoke an `again`; only
the first of them costs a resend.

The sender keeps at most `WINDOW_CHUNKS` unacknowledged chunks in flight. Loss (the
transport drops frames while a connection is down) shows as no progress for
`RESEND_TICKS`: the sender then repeats BEGIN, the receiver answers with its offset, and the
transfer resumes from there rather than from zero. When the file is complete the receiver
checks the frame's checksums and the data's crc32 against the key (the whole-snapshot
checksum); a mismatch discards the file and restarts the transfer from zero.

Invariants: at most one transfer per peer on the sending side and one on the receiving
side; the receiver's file holds exactly the key's first `received` bytes; nothing reaches
the core unless the whole file verified.
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from synod.paxos.messages import InstallSnapshot
from synod.paxos.types import Ballot, Entry, NodeId, SnapshotMeta
from synod.server.driver import StateMachine
from synod.storage.errors import StorageCorrupt
from synod.storage.storage import DurableStorage, SnapshotFile, decode_snapshot_file

log = logging.getLogger(__name__)

SNAPSHOT_BEGIN = 110
SNAPSHOT_CHUNK = 111
SNAPSHOT_ACK = 112
CHUNK_BYTES = 1 << 20
WINDOW_CHUNKS = 4
RESEND_TICKS = 10
ABANDON_TICKS = 300
INCOMING_NAME = "snapshot-incoming.part"

Key = tuple[int, int, int]  # last slot, crc32 of the data, size of the file in bytes
Send = Callable[[int, list[Any]], None]


class FileShippingMachine:
    """The state machine as the driver sees it in the member runtime. The driver asks for
    `snapshot()` only to ship one to a lagging member; the runtime streams the durable file
    instead, so this gives that file's metadata and no bytes rather than serialize the whole
    state on the loop for every request."""

    def __init__(self, machine: StateMachine, storage: DurableStorage) -> None:
        self.machine = machine
        self.storage = storage

    def apply(self, entry: Entry) -> None:
        self.machine.apply(entry)

    def restore(self, meta: SnapshotMeta, data: bytes) -> None:
        self.machine.restore(meta, data)

    def snapshot(self) -> tuple[SnapshotMeta, bytes]:
        file = self.storage.snapshot_file()
        if file is None:  # the core compacts only below a durable snapshot: not expected
            return self.machine.snapshot()
        return file.meta, b""


def _key(raw: Any) -> Key | None:
    if isinstance(raw, list) and len(raw) == 3 and all(type(v) is int and v >= 0 for v in raw):
        return raw[0], raw[1], raw[2]
    return None


@dataclass
class _Outgoing:
    key: Key
    ballot: Ballot
    fd: int
    acked: int = 0
    next_offset: int = 0
    round: int = 0
    idle_ticks: int = 0
    stalled_ticks: int = 0


class SnapshotSender:
    """The leader's side: streams snapshot files to the peers that need them."""

    def __init__(self, send: Send, chunk_bytes: int = CHUNK_BYTES) -> None:
        assert chunk_bytes >= 1
        self.send = send
        self.chunk_bytes = chunk_bytes
        self._transfers: dict[int, _Outgoing] = {}
        self.completed = 0

    def offer(self, peer: int, ballot: Ballot, snapshot: SnapshotFile) -> None:
        """The core wants `peer` to have a snapshot: continue, supersede or begin a transfer."""
        size = os.stat(snapshot.path).st_size
        key = (snapshot.meta.last_slot, snapshot.data_crc, size)
        current = self._transfers.get(peer)
        if current is not None and current.key == key:
            if current.ballot != ballot:
                current.ballot = ballot
                self._begin(peer)  # the receiver must step the snapshot in the new ballot
            return
        if current is not None:
            log.info("snapshot %s for member %x supersedes %s", key, peer, current.key)
            self._drop(peer)
        fd = os.open(snapshot.path, os.O_RDONLY | os.O_CLOEXEC)
        self._transfers[peer] = _Outgoing(key, ballot, fd)
        self._begin(peer)

    def on_ack(self, peer: int, item: list[Any]) -> None:
        transfer = self._transfers.get(peer)
        key = _key(item[1]) if len(item) == 5 else None
        if transfer is None or key != transfer.key or type(item[2]) is not int:
            return
        offset, again = item[2], bool(item[3]) and item[4] == transfer.round
        if not 0 <= offset <= key[2]:
            return
        if offset > transfer.acked:
            transfer.acked = offset
            transfer.idle_ticks = transfer.stalled_ticks = 0
        if offset == key[2]:
            log.info("snapshot %s delivered to member %x", key, peer)
            self.completed += 1
            self._drop(peer)
            return
        if again:
            # The receiver holds exactly `offset` bytes (it may have discarded a damaged file).
            transfer.acked = transfer.next_offset = offset
            transfer.round += 1
        transfer.next_offset = max(transfer.next_offset, transfer.acked)
        self._pump(peer, transfer)

    def tick(self) -> None:
        """No progress for RESEND_TICKS: ask the receiver where it stands (after a broken
        connection, say). No progress for ABANDON_TICKS: give up until the core asks again."""
        for peer in sorted(self._transfers):
            transfer = self._transfers[peer]
            transfer.idle_ticks += 1
            transfer.stalled_ticks += 1
            if transfer.stalled_ticks >= ABANDON_TICKS:
                log.warning("snapshot %s to member %x abandoned", transfer.key, peer)
                self._drop(peer)
            elif transfer.idle_ticks >= RESEND_TICKS:
                transfer.idle_ticks = 0
                self._begin(peer)

    def close(self) -> None:
        for peer in sorted(self._transfers):
            self._drop(peer)

    def sending_to(self, peer: int) -> Key | None:
        transfer = self._transfers.get(peer)
        return None if transfer is None else transfer.key

    def _begin(self, peer: int) -> None:
        transfer = self._transfers[peer]
        transfer.round += 1
        ballot, key = transfer.ballot, list(transfer.key)
        self.send(peer, [[SNAPSHOT_BEGIN, key, ballot.round, ballot.node_id, transfer.round]])

    def _pump(self, peer: int, transfer: _Outgoing) -> None:
        size = transfer.key[2]
        window_end = transfer.acked + WINDOW_CHUNKS * self.chunk_bytes
        items = []
        while transfer.next_offset < min(size, window_end):
            offset = transfer.next_offset
            data = os.pread(transfer.fd, min(self.chunk_bytes, size - offset), offset)
            if not data:
                log.error("snapshot file of %s ended early at %d", transfer.key, offset)
                self._drop(peer)
                return
            key = list(transfer.key)
            items.append([SNAPSHOT_CHUNK, key, offset, data, zlib.crc32(data), transfer.round])
            transfer.next_offset = offset + len(data)
        if items:
            self.send(peer, items)

    def _drop(self, peer: int) -> None:
        transfer = self._transfers.pop(peer)
        os.close(transfer.fd)


@dataclass
class _Incoming:
    sender: int
    key: Key
    ballot: Ballot
    fd: int
    received: int = 0
    round: int = 0  # of the sender's latest BEGIN or chunk seen: acks answer it


class SnapshotReceiver:
    """The lagging member's side: assembles one snapshot file, then hands it to the core."""

    def __init__(
        self,
        node_id: int,
        directory: str,
        send: Send,
        deliver: Callable[[InstallSnapshot], None],
    ) -> None:
        self.node_id = node_id
        self.path = os.path.join(directory, INCOMING_NAME)
        self.send = send
        self.deliver = deliver
        self._transfer: _Incoming | None = None
        self.chunks_refused = 0
        if os.path.exists(self.path):
            os.remove(self.path)  # from before a restart: the sender will begin again

    def on_begin(self, sender: int, item: list[Any]) -> None:
        key = _key(item[1]) if len(item) == 5 else None
        if key is None or any(type(value) is not int for value in item[2:]):
            log.warning("dropping a malformed snapshot offer from member %x", sender)
            return
        ballot = Ballot(max(item[2], 0), NodeId(max(item[3], 0)))
        transfer = self._transfer
        if transfer is not None and transfer.key == key and transfer.sender == sender:
            transfer.ballot = ballot
        else:
            if transfer is not None:
                log.info("snapshot %s from member %x supersedes %s", key, sender, transfer.key)
            self._discard()
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            transfer = self._transfer = _Incoming(sender, key, ballot, fd)
        transfer.round = item[4]
        self._ack(transfer, again=True)

    def on_chunk(self, sender: int, item: list[Any]) -> None:
        transfer = self._transfer
        key = _key(item[1]) if len(item) == 6 else None
        if transfer is None or transfer.sender != sender or key != transfer.key:
            return  # a chunk of a transfer superseded or never begun
        offset, data, crc = item[2], item[3], item[4]
        if type(item[5]) is int:
            transfer.round = item[5]
        if type(offset) is not int or not isinstance(data, bytes) or offset < transfer.received:
            return  # a duplicate of what is written
        if offset > transfer.received:
            self._ack(transfer, again=True)  # a chunk before this one was lost or refused
            return
        if zlib.crc32(data) != crc:
            self.chunks_refused += 1
            log.warning("snapshot chunk at %d from member %x fails its checksum", offset, sender)
            self._ack(transfer, again=True)
            return
        if transfer.received + len(data) > transfer.key[2]:
            log.warning("snapshot chunk from member %x runs past the file's size", sender)
            self._ack(transfer, again=True)
            return
        os.pwrite(transfer.fd, data, offset)
        transfer.received += len(data)
        if transfer.received < transfer.key[2]:
            self._ack(transfer, again=False)
            return
        self._finish(transfer)

    def progress(self) -> tuple[Key, int] | None:
        """The unfinished transfer's key and how many of its bytes are written."""
        transfer = self._transfer
        return None if transfer is None else (transfer.key, transfer.received)

    def close(self) -> None:
        self._discard()

    def _finish(self, transfer: _Incoming) -> None:
        with open(self.path, "rb") as file:
            raw = file.read()
        try:
            meta, data = decode_snapshot_file(raw, self.path)
            if meta.last_slot != transfer.key[0] or zlib.crc32(data) != transfer.key[1]:
                raise StorageCorrupt(self.path, 0, "snapshot does not match its transfer key")
        except StorageCorrupt as error:
            log.warning("received snapshot %s is damaged, fetching again: %s", transfer.key, error)
            os.ftruncate(transfer.fd, 0)
            transfer.received = 0
            self._ack(transfer, again=True)
            return
        self._ack(transfer, again=False)
        self._discard()
        log.info("snapshot %s received from member %x", transfer.key, transfer.sender)
        src, dst = NodeId(transfer.sender), NodeId(self.node_id)
        self.deliver(InstallSnapshot(src, dst, transfer.ballot, meta, data))

    def _ack(self, transfer: _Incoming, again: bool) -> None:
        item = [SNAPSHOT_ACK, list(transfer.key), transfer.received, again, transfer.round]
        self.send(transfer.sender, [item])

    def _discard(self) -> None:
        transfer, self._transfer = self._transfer, None
        if transfer is not None:
            os.close(transfer.fd)
            os.remove(self.path)
