"""Majority-loss recovery (synod.server.recover): the survivor's snapshot plus its log
tail become the snapshot of a NEW one-member cluster; entries beyond the survivor's commit
hint are kept (a chosen one may have been acknowledged) unless the operator asks to drop
them; the survivor's directory stays usable; wrong inputs are refused before anything is
written.

Method: a survivor's data directory written through DurableStorage as its member would
(snapshot, entries, hard state with a commit hint below the last slot), recovered, and the
new directory read back (docs/operator-guide.md, "Majority loss").
"""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest

from synod.kv.codec import encode_command
from synod.kv.messages import Command, PutRequest, RangeRequest
from synod.kv.store import KVStore
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
from synod.server.members import (
    MemberInfo,
    MemberTable,
    decode_machine_snapshot,
    encode_table_command,
)
from synod.server.recover import recover
from synod.server.restore import NewCluster, RestoreRefused, new_cluster
from synod.storage.storage import DurableStorage

OLD = Membership((NodeId(1), NodeId(2), NodeId(3)))
BALLOT = Ballot(1, NodeId(1))


def put(slot: int, key: str, value: str) -> Entry:
    payload = encode_command(Command(PutRequest(key.encode(), value.encode()), 0))
    return Entry(Slot(slot), BALLOT, EntryKind.COMMANDS, (msgpack.packb([1, slot, payload]),))


def table_command(slot: int) -> Entry:
    """A table-only change (a member publishing its name) as the runtime logs it."""
    table = MemberTable.of([MemberInfo(1, "old", ("http://old:1",))])
    command = encode_table_command(7, table, table)
    return Entry(Slot(slot), BALLOT, EntryKind.COMMANDS, (command,))


def survivor(directory: Path, commit: int) -> None:
    """Slots 1-5: three puts, a no-op (with a table-only command in between), a put; the
    member knows slots up to `commit` chosen."""
    entries = [
        put(1, "a", "1"),
        put(2, "b", "2"),
        put(3, "a", "3"),
        Entry(Slot(4), BALLOT, EntryKind.NOOP),
        put(5, "c", "5"),
        table_command(6),
    ]
    storage = DurableStorage.open(str(directory), bootstrap=SnapshotMeta(Slot(0), OLD))
    try:
        storage.save(None, entries, HardState(BALLOT, Slot(commit)), sync=True)
    finally:
        storage.close()


def one_member(token: str = "recovered") -> NewCluster:
    return new_cluster("solo", "solo=http://127.0.0.1:9", token)


def recovered_store(directory: Path) -> tuple[KVStore, int, Membership]:
    storage = DurableStorage.open(str(directory))
    try:
        restore, data = storage.load()
    finally:
        storage.close()
    assert data is not None
    assert restore.entries == ()
    table, service = decode_machine_snapshot(data)
    assert table is not None and table.membership() == restore.snapshot.membership
    return KVStore.restore(service), restore.snapshot.last_slot, restore.snapshot.membership


def values(store: KVStore) -> dict[bytes, bytes]:
    return {kv.key: kv.value for kv in store.range(RangeRequest(b"\0", b"\0")).kvs}


def test_entries_beyond_the_commit_hint_are_kept_by_default(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    survivor(tmp_path / "old", commit=3)
    result = recover(str(tmp_path / "old"), str(tmp_path / "new"), one_member())
    assert (result.commit_slot, result.last_slot, result.kept_beyond_commit) == (3, 6, 3)
    assert not caplog.records, "the table command never reaches the KV service"
    store, slot, membership = recovered_store(tmp_path / "new")
    assert values(store) == {b"a": b"3", b"b": b"2", b"c": b"5"}
    assert store.range(RangeRequest(b"c")).kvs[0].mod_revision == 5, "revisions as applied"
    assert slot == 6
    assert membership == one_member().membership, "a one-member cluster of the new id"


def test_discard_uncommitted_stops_at_the_commit_hint(tmp_path: Path) -> None:
    survivor(tmp_path / "old", commit=3)
    result = recover(str(tmp_path / "old"), str(tmp_path / "new"), one_member(), True)
    assert (result.last_slot, result.dropped_beyond_commit) == (3, 3)
    store, slot, _ = recovered_store(tmp_path / "new")
    assert values(store) == {b"a": b"3", b"b": b"2"}
    assert slot == 3


def test_the_survivors_directory_still_opens_with_its_log(tmp_path: Path) -> None:
    survivor(tmp_path / "old", commit=5)
    recover(str(tmp_path / "old"), str(tmp_path / "new"), one_member())
    storage = DurableStorage.open(str(tmp_path / "old"))
    try:
        restore, _ = storage.load()
    finally:
        storage.close()
    assert [entry.slot for entry in restore.entries] == [1, 2, 3, 4, 5, 6]


def test_recovery_refuses_several_members_a_used_dir_and_an_empty_survivor(
    tmp_path: Path,
) -> None:
    survivor(tmp_path / "old", commit=5)
    three = new_cluster("a", "a=http://h:1,b=http://h:2,c=http://h:3", "t")
    with pytest.raises(RestoreRefused, match="ONE-member"):
        recover(str(tmp_path / "old"), str(tmp_path / "new"), three)
    with pytest.raises(RestoreRefused, match="new directory"):
        recover(str(tmp_path / "old"), str(tmp_path / "old"), one_member())
    (tmp_path / "empty").mkdir()
    with pytest.raises(RestoreRefused, match="no data"):
        recover(str(tmp_path / "empty"), str(tmp_path / "new"), one_member())
    assert not (tmp_path / "new").exists()


def test_recovery_refuses_a_survivor_its_member_still_holds(tmp_path: Path) -> None:
    survivor(tmp_path / "old", commit=5)
    running = DurableStorage.open(str(tmp_path / "old"))
    try:
        with pytest.raises(RestoreRefused, match="stop the surviving member"):
            recover(str(tmp_path / "old"), str(tmp_path / "new"), one_member())
    finally:
        running.close()
