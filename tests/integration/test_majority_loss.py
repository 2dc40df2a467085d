"""Majority loss for good (issue 7, deliverable 5; docs/operator-guide.md "Majority loss"):
a 3-member cluster takes writes, two members are killed and never come back, and the
survivor's data becomes a new one-member cluster (`synod recover`) that serves every write
the survivor had committed, with its revision, and takes new writes; two new members are
then added (`synod ctl member add --learner`, joining with --initial-cluster-state
existing, then `member promote`) under client load whose history must be linearizable,
and, with the recovered member killed, they still serve every one of those writes.

Method: real `synod serve` processes (tests/integration/cluster.py); the survivor is a
follower that applied everything the leader committed before the kills (checked through
Status), so every acknowledged write must be present after recovery.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from synod.cli import main as synod_main
from synod.client.ctl import main as ctl_main
from synod.client.errors import ClientError
from synod.client.sync import Client
from synod.sim.linearizability import check_history
from tests.integration.cluster import SynodCluster, launch
from tests.integration.test_membership import Load

pytestmark = pytest.mark.slow

CATCH_UP_TIMEOUT_S = 10.0


def wait_caught_up(client: Client, leader: str, follower: str) -> None:
    """Until `follower` applied every slot `leader` committed."""
    deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
    target = client.status(leader).raftIndex
    while True:
        try:
            if client.status(follower, timeout_s=2).raftAppliedIndex >= target:
                return
        except ClientError:
            pass  # a member still starting
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


def test_a_survivor_becomes_a_cluster_again_with_every_committed_write(
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
            assert committed(client) == acknowledged
            revision = client.get("k/").header.revision
            assert client.put("after", "x").header.revision == revision + 1
            assert [m.name for m in client.member_list().members] == ["m0"]
        # then the operator grows it back, one member at a time, while clients keep going
        load = Load([new.endpoints[0]])
        load.start()
        try:
            for name in ("m1", "m2"):
                add_member(new, name)
        finally:
            load.finish()
        assert len(load.acked) > 20, f"too few writes while growing: {len(load.acked)}"
        verdict = check_history(load.operations)
        assert verdict.ok, verdict.explanation
        with Client(new.endpoints, timeout_s=10) as client:
            deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
            # each started member publishes its name through the log
            while sorted(m.name for m in client.member_list().members) != ["m0", "m1", "m2"]:
                assert time.monotonic() < deadline, client.member_list()
                time.sleep(0.1)
        # the added members are voters holding everything: without the recovered member,
        # they elect a leader and serve every write
        new.kill(0)
        new.wait_leader()
        with Client(new.endpoints[1:], timeout_s=10) as client:
            assert committed(client) == acknowledged
            assert client.get_one("after") is not None
            client.put("grown", "y")
    finally:
        new.stop_all()


def committed(client: Client) -> dict[bytes, tuple[bytes, int]]:
    return {kv.key: (kv.value, kv.mod_revision) for kv in client.get("k/", prefix=True).kvs}


def add_member(cluster: SynodCluster, name: str) -> None:
    """As the guide says: `synod ctl member add --learner`, start it with
    --initial-cluster-state existing (the launcher's new_member), wait until it applied what
    the leader had committed, then `synod ctl member promote` (a one-member cluster cannot
    commit a voter add before the new voter runs: the learner step avoids that)."""
    index = cluster.new_member(name)
    peer_url = cluster.members[index].peer_url
    endpoints = ",".join(m.endpoint for m in cluster.members if m.popen is not None)
    ctl = ["ctl", "--endpoints", endpoints, "member"]
    assert ctl_main([*ctl, "add", name, f"--peer-urls={peer_url}", "--learner"]) == 0
    cluster.start(index)
    leader = cluster.wait_leader()
    with Client(cluster.endpoints[leader], timeout_s=10) as client:
        wait_caught_up(client, cluster.endpoints[leader], cluster.endpoints[index])
        new_id = next(m.ID for m in client.member_list().members if peer_url in m.peerURLs)
    deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
    while ctl_main([*ctl, "promote", f"{new_id:x}"]) != 0:
        assert time.monotonic() < deadline, "the learner was never promoted"
        time.sleep(0.2)
