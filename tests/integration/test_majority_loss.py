"""Majority loss for good (issue 7, deliverable 5; docs/operator-guide.md "Majority loss"):
a 3-member cluster takes writes, two members are killed and never come back, and the
survivor's data becomes a new one-member cluster (`synod recover`) that serves every write
the survivor had committed, with its revision, and takes new writes.

Method: real `synod serve` processes (tests/integration/cluster.py); the survivor is a
follower that applied everything the leader committed before the kills (checked through
Status), so every acknowledged write must be present after recovery.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from synod.cli import main as synod_main
from synod.client.sync import Client
from tests.integration.cluster import SynodCluster, launch

pytestmark = pytest.mark.slow

CATCH_UP_TIMEOUT_S = 10.0


def wait_caught_up(client: Client, leader: str, follower: str) -> None:
    """Until `follower` applied every slot `leader` committed."""
    deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
    target = client.status(leader).raftIndex
    while client.status(follower).raftAppliedIndex < target:
        assert time.monotonic() < deadline, "the follower did not catch up"
        time.sleep(0.05)


def recover_into(new: SynodCluster, survivor_dir: Path) -> int:
    member = new.members[0]
    return synod_main(
        [
            "recover",
            "--from-data-dir",
            str(survivor_dir),
            "--data-dir",
            str(member.data_dir),
            "--name",
            member.name,
            "--initial-cluster",
            f"{member.name}=http://127.0.0.1:{member.peer_port}",
            "--initial-cluster-token",
            new.token,
            "--initial-cluster-client-urls",
            f"{member.name}=http://{member.endpoint}",
        ]
    )


def test_a_survivor_becomes_a_one_member_cluster_with_every_committed_write(
    tmp_path: Path,
) -> None:
    old = launch(tmp_path / "old", size=3, token="old-cluster")
    try:
        leader = old.wait_leader()
        survivor = next(i for i in old.live() if i != leader)
        with Client(old.endpoints, timeout_s=10) as client:
            acknowledged = {}
            for n in range(30):
                response = client.put(f"k/{n % 10}", f"v{n}")
                acknowledged[f"k/{n % 10}".encode()] = (f"v{n}".encode(), response.header.revision)
            wait_caught_up(client, old.endpoints[leader], old.endpoints[survivor])
        for index in old.live():
            if index != survivor:
                old.kill(index)
        old.kill(survivor)
    finally:
        old.stop_all()

    new = SynodCluster(tmp_path / "new", size=1, token="recovered")
    new.root.mkdir(parents=True)
    assert recover_into(new, old.members[survivor].data_dir) == 0
    new.start_all()
    try:
        new.wait_leader()
        with Client(new.endpoints, timeout_s=10) as client:
            found = {
                kv.key: (kv.value, kv.mod_revision) for kv in client.get("k/", prefix=True).kvs
            }
            assert found == acknowledged
            revision = client.get("k/").header.revision
            assert client.put("after", "x").header.revision == revision + 1
            members = client.member_list().members
            assert [m.name for m in members] == ["m0"]
    finally:
        new.stop_all()
