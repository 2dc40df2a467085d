"""Backup and restore end to end (issue 7, deliverable 5): `synod ctl snapshot save` from a
member of a live 3-member cluster, `synod snapshot restore` of that file into a NEW
3-member cluster, and every key, value, revision and lease read back through the API as
the old cluster served them; a damaged file is refused before anything is written.

Method: real `synod serve` processes (tests/integration/cluster.py); the commands run
in-process through their `main` functions, as an operator would type them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from synod.cli import main as synod_main
from synod.client.ctl import main as ctl_main
from synod.client.sync import Client
from tests.integration.cluster import SynodCluster, launch

pytestmark = pytest.mark.slow


def kv_facts(client: Client, prefix: str) -> list[tuple[bytes, bytes, int, int, int, int]]:
    response = client.get(prefix, prefix=True)
    return [
        (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)
        for kv in response.kvs
    ]


def restore_into(cluster: SynodCluster, backup: Path) -> list[int]:
    """`synod snapshot restore` for every member of `cluster`; their exit statuses."""
    peers = ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in cluster.members)
    clients = ",".join(f"{m.name}=http://{m.endpoint}" for m in cluster.members)
    return [
        synod_main(
            [
                "snapshot",
                "restore",
                str(backup),
                "--name",
                member.name,
                "--data-dir",
                str(member.data_dir),
                "--initial-cluster",
                peers,
                "--initial-cluster-token",
                cluster.token,
                "--initial-cluster-client-urls",
                clients,
            ]
        )
        for member in cluster.members
    ]


def test_a_saved_snapshot_restores_into_a_new_cluster_with_keys_revisions_and_leases(
    tmp_path: Path,
) -> None:
    old = launch(tmp_path / "old", size=3, token="old-cluster")
    try:
        with Client(old.endpoints, timeout_s=10) as client:
            lease = client.lease_grant(300).ID
            client.put("app/a", "1")
            client.put("app/b", "2")
            client.put("app/a", "3")
            client.put("app/session", "alive", lease=lease)
            client.delete("app/b")
            expected = kv_facts(client, "app/")
            revision = client.get("app/").header.revision
            old_cluster_id = client.get("app/").header.cluster_id
        backup = tmp_path / "backup.db"
        follower = next(i for i in old.live() if i != old.wait_leader())
        saved = ctl_main(
            ["ctl", "--endpoints", old.endpoints[follower], "snapshot", "save", str(backup)]
        )
        assert saved == 0
        assert not Path(str(backup) + ".part").exists()
    finally:
        old.stop_all()

    new = SynodCluster(tmp_path / "new", size=3, token="new-cluster")
    new.root.mkdir(parents=True)
    assert restore_into(new, backup) == [0, 0, 0]
    new.start_all()
    try:
        new.wait_leader()
        with Client(new.endpoints, timeout_s=10) as client:
            assert kv_facts(client, "app/") == expected
            header = client.get("app/").header
            assert header.revision == revision
            assert header.cluster_id != old_cluster_id
            alive = client.lease_time_to_live(lease, keys=True)
            assert alive.TTL > 0
            assert alive.grantedTTL == 300
            assert list(alive.keys) == [b"app/session"]
            assert client.put("app/c", "4").header.revision == revision + 1
            members = sorted((m.name, list(m.clientURLs)) for m in client.member_list().members)
            assert members == [(m.name, [f"http://{m.endpoint}"]) for m in new.members]
    finally:
        new.stop_all()


def test_a_corrupted_snapshot_file_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    old = launch(tmp_path / "old", size=1, token="old-one")
    try:
        with Client(old.endpoints, timeout_s=10) as client:
            client.put("k", "v")
        backup = tmp_path / "backup.db"
        assert (
            ctl_main(["ctl", "--endpoints", old.endpoints[0], "snapshot", "save", str(backup)]) == 0
        )
    finally:
        old.stop_all()
    data = bytearray(backup.read_bytes())
    data[len(data) // 3] ^= 0x20
    backup.write_bytes(bytes(data))
    new = SynodCluster(tmp_path / "new", size=1, token="new-one")
    assert restore_into(new, backup) == [1]
    assert not new.members[0].data_dir.exists()
