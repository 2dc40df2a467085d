"""The real etcdctl 3.4 (Debian's etcd-client) against a three-member Synod cluster.

Goal: the operator's everyday etcdctl commands work unchanged against Synod and print what
they print against etcd (ETCD_COMPAT.md "Clients that must work"). Method: three `synod
serve` processes on free loopback ports in a temp dir; each test runs etcdctl with
ETCDCTL_API=3 and all three endpoints, and checks its output. Skipped only when no
`etcdctl` binary is on PATH.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

ETCDCTL = shutil.which("etcdctl")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        ETCDCTL is None,
        reason="etcdctl binary not on PATH (install Debian's etcd-client to run)",
    ),
]

MEMBERS = 3
READY_TIMEOUT_S = 20.0


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class Etcdctl:
    def __init__(self, endpoints: list[str]) -> None:
        self.endpoints = endpoints

    def run(
        self, *args: str, stdin: str = "", check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        assert ETCDCTL is not None
        result = subprocess.run(
            [ETCDCTL, "--endpoints=" + ",".join(self.endpoints), "--command-timeout=5s", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=30,
            env=dict(os.environ, ETCDCTL_API="3"),
        )
        if check:
            assert result.returncode == 0, result.stderr
        return result

    def out(self, *args: str, stdin: str = "") -> str:
        return self.run(*args, stdin=stdin).stdout


@pytest.fixture(scope="module")
def etcdctl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Etcdctl]:
    root = tmp_path_factory.mktemp("etcdctl-cluster")
    ports = _free_ports(2 * MEMBERS)
    names = [f"s{i}" for i in range(MEMBERS)]
    clients = [f"http://127.0.0.1:{ports[2 * i]}" for i in range(MEMBERS)]
    peers = [f"http://127.0.0.1:{ports[2 * i + 1]}" for i in range(MEMBERS)]
    cluster = ",".join(f"{n}={p}" for n, p in zip(names, peers, strict=True))
    client_urls = ",".join(f"{n}={c}" for n, c in zip(names, clients, strict=True))
    processes = []
    for i, name in enumerate(names):
        env = dict(
            os.environ,
            SYNOD_NAME=name,
            SYNOD_DATA_DIR=str(root / name),
            SYNOD_LISTEN_CLIENT_URLS=clients[i],
            SYNOD_LISTEN_PEER_URLS=peers[i],
            SYNOD_INITIAL_CLUSTER=cluster,
            SYNOD_INITIAL_CLUSTER_CLIENT_URLS=client_urls,
            SYNOD_HEARTBEAT_INTERVAL="50",
            SYNOD_ELECTION_TIMEOUT="500",
        )
        with open(root / f"{name}.log", "ab") as log:
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "synod.cli", "serve"],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    tool = Etcdctl([c.removeprefix("http://") for c in clients])
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while tool.run("endpoint", "health", check=False).returncode != 0:
            assert time.monotonic() < deadline, "cluster not healthy in time"
            assert all(p.poll() is None for p in processes), "a member exited"
            time.sleep(0.2)
        yield tool
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_put_get_delete(etcdctl: Etcdctl) -> None:
    assert etcdctl.out("put", "/ctl/foo", "bar") == "OK\n"
    assert etcdctl.out("get", "/ctl/foo") == "/ctl/foo\nbar\n"
    assert etcdctl.out("put", "/ctl/foo2", "baz") == "OK\n"
    assert etcdctl.out("get", "/ctl/", "--prefix", "--keys-only").split() == [
        "/ctl/foo",
        "/ctl/foo2",
    ]
    answer = json.loads(etcdctl.out("get", "/ctl/foo", "-w", "json"))
    assert answer["count"] == 1
    assert answer["kvs"][0]["mod_revision"] <= answer["header"]["revision"]
    assert answer["header"]["raft_term"] >= 1
    assert etcdctl.out("del", "/ctl/", "--prefix") == "2\n"
    assert etcdctl.out("get", "/ctl/foo") == ""


def test_txn_interactive(etcdctl: Etcdctl) -> None:
    etcdctl.out("put", "/ctl/user1", "bad")
    script = 'value("/ctl/user1") = "bad"\n\nput /ctl/user1 good\n\nput /ctl/user2 failed\n\n'
    output = etcdctl.out("txn", "-i", stdin=script)
    assert output.splitlines()[-2:] == ["SUCCESS", "OK"] or "SUCCESS" in output
    assert etcdctl.out("get", "/ctl/user1", "--print-value-only") == "good\n"
    output = etcdctl.out("txn", "-i", stdin=script)
    assert "FAILURE" in output
    assert etcdctl.out("get", "/ctl/user2", "--print-value-only") == "failed\n"


def test_watch_prints_events(etcdctl: Etcdctl) -> None:
    assert ETCDCTL is not None
    watcher = subprocess.Popen(
        [ETCDCTL, "--endpoints=" + ",".join(etcdctl.endpoints), "watch", "/ctl/w", "--prefix"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, ETCDCTL_API="3"),
    )
    try:
        time.sleep(0.5)  # let the watch be created before the writes
        etcdctl.out("put", "/ctl/w1", "a")
        etcdctl.out("del", "/ctl/w1")
        assert watcher.stdout is not None
        lines = [watcher.stdout.readline().strip() for _ in range(5)]
        assert lines == ["PUT", "/ctl/w1", "a", "DELETE", "/ctl/w1"]
    finally:
        watcher.terminate()
        watcher.wait(timeout=5)


def test_lease_grant_keep_alive_once_and_errors(etcdctl: Etcdctl) -> None:
    granted = etcdctl.out("lease", "grant", "30")
    assert granted.startswith("lease ") and granted.endswith(" granted with TTL(30s)\n")
    lease = granted.split()[1]
    assert etcdctl.out("put", "/ctl/leased", "v", "--lease=" + lease) == "OK\n"
    assert etcdctl.out("lease", "keep-alive", "--once", lease) == (
        f"lease {lease} keepalived with TTL(30)\n"
    )
    ttl = etcdctl.out("lease", "timetolive", lease, "--keys")
    assert f"lease {lease} granted with TTL(30s)" in ttl and "attached keys([/ctl/leased])" in ttl
    assert lease in etcdctl.out("lease", "list")
    assert etcdctl.out("lease", "revoke", lease) == f"lease {lease} revoked\n"
    assert etcdctl.out("get", "/ctl/leased") == ""
    missing = etcdctl.run("put", "/ctl/k", "v", "--lease=1234", check=False)
    assert missing.returncode != 0
    assert "Error: etcdserver: requested lease not found" in missing.stderr


def test_member_list_endpoint_status_and_health(etcdctl: Etcdctl) -> None:
    members = etcdctl.out("member", "list").splitlines()
    assert len(members) == MEMBERS
    for line in members:
        _, state, name, _, client, learner = line.split(", ")
        assert state == "started" and name.startswith("s") and learner == "false"
        assert client.removeprefix("http://") in etcdctl.endpoints
    status = etcdctl.out("endpoint", "status").splitlines()
    assert len(status) == MEMBERS
    leaders = [line for line in status if ", true, false, " in line]
    assert len(leaders) == 1
    assert all(", 3.4." in line for line in status)
    checked = etcdctl.run("endpoint", "health")
    health = checked.stdout + checked.stderr  # etcdctl 3.4 prints health on stderr
    assert health.count("is healthy: successfully committed proposal") == MEMBERS
    details = json.loads(etcdctl.out("endpoint", "status", "-w", "json"))
    terms = {entry["Status"]["raftTerm"] for entry in details}
    assert len(terms) == 1


def test_lock_runs_a_command_while_held(etcdctl: Etcdctl) -> None:
    assert etcdctl.out("lock", "/ctl/lock", "--", "echo", "held") == "held\n"


def test_snapshot_save_move_leader_and_compaction(
    etcdctl: Etcdctl, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = tmp_path_factory.mktemp("snap") / "snap.db"
    single = Etcdctl(etcdctl.endpoints[:1])
    saved = single.run("snapshot", "save", str(path))
    assert f"Snapshot saved at {path}" in saved.stdout + saved.stderr
    assert path.stat().st_size > 32
    status = json.loads(etcdctl.out("endpoint", "status", "-w", "json"))
    leader = next(e for e in status if e["Status"]["leader"] == e["Status"]["header"]["member_id"])
    target = next(entry for entry in status if entry is not leader)
    moved = Etcdctl([leader["Endpoint"]]).out(
        "move-leader", f"{target['Status']['header']['member_id']:x}"
    )
    assert moved.startswith("Leadership transferred from ")
    revision = json.loads(etcdctl.out("put", "/ctl/c", "1", "-w", "json"))["header"]["revision"]
    assert etcdctl.out("compaction", str(revision)) == f"compacted revision {revision}\n"
    old = etcdctl.run("get", "/ctl/c", f"--rev={revision - 1}", check=False)
    assert "Error: etcdserver: mvcc: required revision has been compacted" in old.stderr
