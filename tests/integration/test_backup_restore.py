"""Backup and restore end to end (issue 7, deliverable 5): `synod ctl snapshot save` from a
member of a live 3-member cluster, `synod snapshot restore` of that file into a NEW
3-member cluster, and every key, value, revision and lease read back through the API as
the old cluster served them; a damaged file is refused before anything is written. Also
the gateway's snapshot stream and `synod ctl move-leader` against the same cluster.

Method: real `synod serve` processes (tests/integration/cluster.py); the commands run
in-process through their `main` functions, as an operator would type them.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from synod.cli import main as synod_main
from synod.client.ctl import main as ctl_main
from synod.client.sync import Client
from synod.kv.messages import RangeRequest
from synod.kv.store import KVStore
from synod.server import snapshot_file
from synod.server.members import decode_machine_snapshot
from tests.integration.cluster import SynodCluster, launch

pytestmark = pytest.mark.slow

CATCH_UP_TIMEOUT_S = 10.0


def kv_facts(client: Client, prefix: str) -> list[tuple[bytes, bytes, int, int, int, int]]:
    response = client.get(prefix, prefix=True)
    return [
        (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)
        for kv in response.kvs
    ]


def caught_up(client: Client, leader: str, member: str) -> None:
    """Wait until `member` applied every slot `leader` committed (a follower's snapshot
    then holds every write acknowledged before)."""
    deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
    target = client.status(leader).raftIndex
    while client.status(member).raftAppliedIndex < target:
        assert time.monotonic() < deadline, f"{member} did not catch up"
        time.sleep(0.05)


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


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SynodCluster]:
    """A live 3-member cluster to back up."""
    cluster = launch(tmp_path_factory.mktemp("source"), size=3, token="old-cluster")
    try:
        yield cluster
    finally:
        cluster.stop_all()


def test_a_saved_snapshot_restores_into_a_new_cluster_with_keys_revisions_and_leases(
    source: SynodCluster, tmp_path: Path
) -> None:
    with Client(source.endpoints, timeout_s=10) as client:
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
        follower = next(i for i in source.live() if i != source.wait_leader())
        caught_up(client, source.endpoints[source.wait_leader()], source.endpoints[follower])
        saved = ctl_main(
            ["ctl", "--endpoints", source.endpoints[follower], "snapshot", "save", str(backup)]
        )
    assert saved == 0
    assert not Path(str(backup) + ".part").exists()

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


def test_the_json_gateway_streams_the_same_backup_format(source: SynodCluster) -> None:
    """etcd's POST /v3/maintenance/snapshot: chunked {"result": {"blob": ...}} documents
    whose blobs concatenate to a file that verifies and decodes."""
    with Client(source.endpoints, timeout_s=10) as client:
        client.put("gateway/k", "v")
        caught_up(client, source.endpoints[source.wait_leader()], source.endpoints[0])
    request = urllib.request.Request(
        f"http://{source.endpoints[0]}/v3/maintenance/snapshot", data=b"{}", method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        documents = [json.loads(line) for line in response.read().splitlines() if line.strip()]
    data = b"".join(base64.b64decode(d["result"]["blob"]) for d in documents)
    assert documents[-1]["result"].get("remaining_bytes", "0") == "0"
    backup = snapshot_file.decode(data)
    _, service = decode_machine_snapshot(backup.machine)
    store = KVStore.restore(service)
    assert store.range(RangeRequest(b"gateway/k")).kvs[0].value == b"v"


def test_move_leader_hands_leadership_to_the_named_member(
    source: SynodCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    leader = source.wait_leader()
    target = next(i for i in source.live() if i != leader)
    with Client(source.endpoints, timeout_s=10) as client:
        target_id = client.status(source.endpoints[target]).header.member_id
    all_endpoints = ",".join(source.endpoints)
    status = ctl_main(["ctl", "--endpoints", all_endpoints, "move-leader", f"{target_id:x}"])
    out = capsys.readouterr().out
    assert status == 0
    assert out.endswith(f"to {target_id:x}\n")
    assert source.wait_leader() == target


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
