"""`synod recover`: a one-member cluster from a surviving member's data directory, for when a
cluster lost its majority for good (docs/operator-guide.md, "Majority loss").

The survivor's directory is opened as its member would open it (so that member must be
stopped), and its state is rebuilt: the snapshot, then every entry of its log after the
snapshot applied in order, as the member's state machine applies them (synod.server.member
`_Machine.apply`: client commands go to the KV service; no-ops change nothing; MEMBERSHIP
entries and table-only commands are superseded by the new cluster's table). The result is
written as the snapshot of a NEW member of a NEW one-member cluster (new cluster id, new
member id); members are then added with `member add`.

What can be lost, exactly:
- writes the old cluster acknowledged that this member never accepted (the quorum that
  chose them was the members now gone): the survivor never had them;
- if, at some slot, the survivor holds a value from an older ballot while the lost members
  chose another, the chosen one is lost and the survivor's value is applied in its place.
Entries beyond the survivor's commit hint are KEPT by default: each is a value the survivor
accepted; if it was chosen its client may have been acknowledged (the hint lags the leader
by up to one message), so dropping it could lose an acknowledged write, while keeping a
value that was never chosen only applies a write whose client was not acknowledged (its
outcome was unknown). `discard_uncommitted` drops them instead (what etcd's
--force-new-cluster does), for an operator who prefers that.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import msgpack

from synod.paxos.node import Restore
from synod.paxos.types import Entry, EntryKind, Slot
from synod.server.kv_service import KvService
from synod.server.main import MEMBER_FILE
from synod.server.members import (
    TABLE_COMMAND,
    TableError,
    decode_machine_snapshot,
    encode_machine_snapshot,
)
from synod.server.restore import NewCluster, RestoreRefused, check_empty, write_member_dir
from synod.storage.errors import StorageCorrupt, StorageError, StorageLocked
from synod.storage.storage import DurableStorage


@dataclass(frozen=True, slots=True)
class Recovered:
    """What the recovery did, for the operator's record."""

    data_dir: str
    cluster: NewCluster
    snapshot_slot: int
    commit_slot: int
    log_last_slot: int
    last_slot: int
    kept_beyond_commit: int
    dropped_beyond_commit: int
    revision: int

    def report(self) -> dict[str, object]:
        return {
            "data_dir": self.data_dir,
            "cluster_id": f"{self.cluster.cluster_id:x}",
            "member_id": f"{self.cluster.me.member_id:x}",
            "snapshot_slot": self.snapshot_slot,
            "commit_slot": self.commit_slot,
            "log_last_slot": self.log_last_slot,
            "recovered_through_slot": self.last_slot,
            "kept_beyond_commit": self.kept_beyond_commit,
            "dropped_beyond_commit": self.dropped_beyond_commit,
            "revision": self.revision,
        }


def recover(
    from_dir: str, data_dir: str, cluster: NewCluster, discard_uncommitted: bool = False
) -> Recovered:
    """Build `data_dir`, the one member of `cluster`, from the survivor's `from_dir`."""
    if len(cluster.peers) != 1:
        raise RestoreRefused(
            "recovery builds a ONE-member cluster (--initial-cluster NAME=PEER_URL); add the "
            "other members afterwards with `member add`"
        )
    if os.path.realpath(from_dir) == os.path.realpath(data_dir):
        raise RestoreRefused("--data-dir must be a new directory, not --from-data-dir")
    check_empty(data_dir)
    old_cluster_id = _old_cluster_id(from_dir)
    if old_cluster_id == cluster.cluster_id:
        raise RestoreRefused(
            f"the new cluster would have the old cluster's id ({old_cluster_id:016x}): give a "
            "new --initial-cluster-token"
        )
    service = KvService()
    restore, commit = _load(from_dir, service)
    entries = [e for e in restore.entries if not discard_uncommitted or e.slot <= commit]
    for entry in entries:
        _apply(service, entry)
    last = entries[-1].slot if entries else restore.snapshot.last_slot
    log_last = restore.entries[-1].slot if restore.entries else restore.snapshot.last_slot
    beyond = [e for e in restore.entries if e.slot > commit]
    kept = sum(1 for e in entries if e.slot > commit)
    machine = encode_machine_snapshot(cluster.table(), service.snapshot())
    write_member_dir(data_dir, cluster, Slot(max(1, last)), machine)
    return Recovered(
        data_dir,
        cluster,
        restore.snapshot.last_slot,
        commit,
        log_last,
        last,
        kept,
        len(beyond) - kept,
        service.store.revision,
    )


def _load(from_dir: str, service: KvService) -> tuple[Restore, int]:
    """The survivor's recovered state (its service restored from its snapshot) and its
    commit hint. Its directory is opened and closed as its member would (a torn tail is
    truncated, nothing else changes)."""
    if not Path(from_dir).is_dir():
        raise RestoreRefused(f"--from-data-dir {from_dir} is not a directory")
    try:
        storage = DurableStorage.open(from_dir)
    except StorageLocked as error:
        raise RestoreRefused(f"{error} (stop the surviving member before recovering)") from error
    except StorageCorrupt as error:
        raise RestoreRefused(f"the survivor's data is damaged: {error}") from error
    except StorageError as error:
        raise RestoreRefused(f"cannot read {from_dir}: {error}") from error
    try:
        restore, data = storage.load()
    finally:
        storage.close()
    if data is not None:
        try:
            _table, service_bytes = decode_machine_snapshot(data)
        except TableError as error:
            raise RestoreRefused(f"the survivor's snapshot does not decode: {error}") from error
        service.restore(service_bytes)
    return restore, restore.hard_state.commit_slot


def _apply(service: KvService, entry: Entry) -> None:
    """One entry as the member's state machine applies it; membership changes (MEMBERSHIP
    entries and table-only commands) are superseded by the new cluster's table."""
    if entry.kind is not EntryKind.COMMANDS:
        return
    for command in entry.commands:
        origin, _sequence, payload = msgpack.unpackb(command)
        if origin == TABLE_COMMAND:
            continue
        service.apply(payload, entry.slot)


def _old_cluster_id(from_dir: str) -> int | None:
    record = Path(from_dir) / MEMBER_FILE
    try:
        text = record.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "cluster_id":
            try:
                return int(value, 16)
            except ValueError:
                return None
    return None
