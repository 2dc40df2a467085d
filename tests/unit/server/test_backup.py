"""Backup files and restore (synod.server.snapshot_file, synod.server.restore): a backup
round-trips bit for bit, any damage is refused before anything is written, and a restored
data directory opens as a member of the NEW cluster holding the backup's state.

Method: encode a backup of a real KVStore, then restore it into temp dirs and open them
with DurableStorage as `synod serve` does. No processes, no network (the end-to-end path
through `synod ctl snapshot save` is tests/integration/test_backup_restore.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from synod.kv.messages import Command, PutRequest, RangeRequest
from synod.kv.store import KVStore
from synod.paxos.types import Membership, NodeId, Slot, SnapshotMeta
from synod.server import snapshot_file
from synod.server.main import MEMBER_FILE
from synod.server.members import decode_machine_snapshot
from synod.server.restore import NewCluster, RestoreRefused, describe, new_cluster, restore
from synod.storage.storage import DurableStorage

OLD_CLUSTER_ID = 0x1234


def store_with_history() -> KVStore:
    store = KVStore()
    for key, value in [(b"a", b"1"), (b"b", b"2"), (b"a", b"3")]:
        store.apply(Command(PutRequest(key, value), 0))
    return store


def backup_bytes(store: KVStore, slot: int = 7) -> bytes:
    meta = SnapshotMeta(Slot(slot), Membership((NodeId(1), NodeId(2), NodeId(3))))
    return snapshot_file.encode(
        snapshot_file.SnapshotFile(OLD_CLUSTER_ID, 2, meta, store.snapshot())
    )


def cluster(name: str = "n1", token: str = "new") -> NewCluster:
    peers = "n1=http://127.0.0.1:1,n2=http://127.0.0.1:2,n3=http://127.0.0.1:3"
    return new_cluster(name, peers, token)


def test_a_backup_is_whole_pages_plus_a_sha256_and_decodes_to_what_was_encoded() -> None:
    store = store_with_history()
    data = backup_bytes(store)
    assert len(data) % 512 == 32, "etcdctl finds its sha256 trailer at size % 512 == 32"
    decoded = snapshot_file.decode(data)
    assert (decoded.cluster_id, decoded.member_id, decoded.meta.last_slot) == (OLD_CLUSTER_ID, 2, 7)
    assert decoded.machine == store.snapshot()


@pytest.mark.parametrize("where", [0, 100, -33, -1])
def test_a_flipped_byte_anywhere_is_refused(where: int) -> None:
    data = bytearray(backup_bytes(store_with_history()))
    data[where] ^= 0x01
    with pytest.raises(snapshot_file.SnapshotFileError, match="sha256 mismatch"):
        snapshot_file.decode(bytes(data))


def test_a_truncated_file_and_a_foreign_file_with_a_valid_trailer_are_refused() -> None:
    import hashlib

    data = backup_bytes(store_with_history())
    with pytest.raises(snapshot_file.SnapshotFileError, match="truncated"):
        snapshot_file.decode(data[:-512])
    bolt_like = bytes(1024)
    with pytest.raises(snapshot_file.SnapshotFileError, match="not a Synod snapshot"):
        snapshot_file.decode(bolt_like + hashlib.sha256(bolt_like).digest())


def test_restore_writes_a_member_of_the_new_cluster_holding_the_backups_state(
    tmp_path: Path,
) -> None:
    store = store_with_history()
    file = tmp_path / "backup.db"
    file.write_bytes(backup_bytes(store))
    new = cluster()
    restored = restore(str(file), str(tmp_path / "n1"), new)
    assert restored.source_cluster_id == OLD_CLUSTER_ID
    storage = DurableStorage.open(str(tmp_path / "n1"))
    try:
        recovered, data = storage.load()
    finally:
        storage.close()
    assert recovered.snapshot.last_slot == 7
    assert recovered.hard_state.commit_slot == 7, "every slot of the backup is chosen"
    assert recovered.entries == ()
    assert recovered.snapshot.membership == new.membership
    assert data is not None
    table, service = decode_machine_snapshot(data)
    assert table is not None
    by_id = {m.member_id: (m.name, m.peer_urls) for m in table.members}
    assert by_id == {p.member_id: (p.name, (str(p.peer_url),)) for p in new.peers}
    assert table.membership() == new.membership, "the new cluster's table, not the old one's"
    back = KVStore.restore(service)
    kvs = back.range(RangeRequest(b"a")).kvs
    assert (kvs[0].value, kvs[0].create_revision, kvs[0].mod_revision, kvs[0].version) == (
        b"3",
        2,
        4,
        2,
    )
    identity = (tmp_path / "n1" / MEMBER_FILE).read_text()
    assert f"cluster_id={new.cluster_id:016x}" in identity
    assert describe(str(file))["revision"] == 4


def test_every_member_restored_from_one_file_gets_the_same_state_and_membership(
    tmp_path: Path,
) -> None:
    file = tmp_path / "backup.db"
    file.write_bytes(backup_bytes(store_with_history()))
    loaded = []
    for name in ("n1", "n2", "n3"):
        restore(str(file), str(tmp_path / name), cluster(name))
        storage = DurableStorage.open(str(tmp_path / name))
        loaded.append(storage.load())
        storage.close()
    assert loaded[0] == loaded[1] == loaded[2]


def test_restore_refuses_a_non_empty_data_dir_a_corrupt_file_and_the_old_cluster_id(
    tmp_path: Path,
) -> None:
    file = tmp_path / "backup.db"
    good = backup_bytes(store_with_history())
    file.write_bytes(good)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "something").write_text("x")
    with pytest.raises(RestoreRefused, match="not empty"):
        restore(str(file), str(busy), cluster())
    assert sorted(p.name for p in busy.iterdir()) == ["something"]

    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(good[:100] + bytes([good[100] ^ 0xFF]) + good[101:])
    with pytest.raises(RestoreRefused, match="corrupted"):
        restore(str(corrupt), str(tmp_path / "fresh"), cluster())
    assert not (tmp_path / "fresh").exists(), "nothing is written for a refused file"

    same = cluster()
    old = snapshot_file.decode(good)
    reused = snapshot_file.SnapshotFile(
        same.cluster_id,
        old.member_id,
        old.meta,
        old.machine,
    )
    file.write_bytes(snapshot_file.encode(reused))
    with pytest.raises(RestoreRefused, match="new --initial-cluster-token"):
        restore(str(file), str(tmp_path / "fresh"), same)


def test_new_cluster_flags_are_checked() -> None:
    with pytest.raises(RestoreRefused, match="not in --initial-cluster"):
        new_cluster("zz", "n1=http://127.0.0.1:1", "t")
    with pytest.raises(RestoreRefused, match="peer URL"):
        new_cluster("n1", "n1=http://127.0.0.1:1", "t", "http://127.0.0.1:9")
    with pytest.raises(RestoreRefused, match="token"):
        new_cluster("n1", "n1=http://127.0.0.1:1", " ")
