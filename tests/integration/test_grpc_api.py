"""The etcd gRPC API of a real three-member cluster: `synod serve` processes on free loopback
ports in a temp dir, driven only through our generated stubs.

Goal: what etcd clients rely on holds end to end (DESIGN.md "Errors and bad input",
ETCD_COMPAT.md "Response header", "Limits and error strings"): writes and linearizable
reads through any member, txn semantics, leases, watches, etcd's exact error strings, a
raft_term that never goes backwards, and service through a SIGKILL of the leader (watch
resumed from a revision on another member, leases expiring under the new leader, the
killed member catching up after restart). The tests share one cluster and run in order.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from synod.api.proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from synod.api.proto.mvccpb import kv_pb2
from synod.api.proto.v3electionpb import v3election_pb2, v3election_pb2_grpc
from synod.api.proto.v3lockpb import v3lock_pb2, v3lock_pb2_grpc
from tests.integration.cluster import SynodCluster, free_ports, launch

pytestmark = pytest.mark.slow

TIMEOUT_S = 5.0
READY_TIMEOUT_S = 20.0


@dataclass
class Cluster(SynodCluster):
    """The shared launcher (tests/integration/cluster.py), with one gRPC channel per running
    member and frequent snapshots."""

    token: str = "grpc-test"
    extra_flags: tuple[str, ...] = ("--snapshot-count", "50")
    channels: dict[int, grpc.Channel] = field(default_factory=dict)

    def start(self, index: int) -> None:
        super().start(index)
        self.channels[index] = grpc.insecure_channel(self.members[index].endpoint)

    def kill(self, index: int) -> None:
        super().kill(index)
        self._close_channel(index)

    def stop_all(self) -> None:
        super().stop_all()
        for index in list(self.channels):
            self._close_channel(index)

    def _close_channel(self, index: int) -> None:
        channel = self.channels.pop(index, None)
        if channel is not None:
            channel.close()

    def channel(self, index: int) -> grpc.Channel:
        channel = self.channels.get(index)
        assert channel is not None, f"member {index} is not running"
        return channel

    def kv(self, index: int) -> rpc_pb2_grpc.KVStub:
        return rpc_pb2_grpc.KVStub(self.channel(index))

    def lease(self, index: int) -> rpc_pb2_grpc.LeaseStub:
        return rpc_pb2_grpc.LeaseStub(self.channel(index))

    def maintenance(self, index: int) -> rpc_pb2_grpc.MaintenanceStub:
        return rpc_pb2_grpc.MaintenanceStub(self.channel(index))

    def cluster_stub(self, index: int) -> rpc_pb2_grpc.ClusterStub:
        return rpc_pb2_grpc.ClusterStub(self.channel(index))


class Watch:
    """A watch stream on a synchronous channel with a timeout on every receive."""

    def __init__(self, channel: grpc.Channel, create: rpc_pb2.WatchCreateRequest) -> None:
        self.requests: queue.Queue[rpc_pb2.WatchRequest | None] = queue.Queue()
        self.requests.put(rpc_pb2.WatchRequest(create_request=create))
        self.call = rpc_pb2_grpc.WatchStub(channel).Watch(iter(self.requests.get, None))
        self.responses: queue.Queue[rpc_pb2.WatchResponse | Exception] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for response in self.call:
                self.responses.put(response)
        except Exception as error:
            self.responses.put(error)

    def next(self, timeout_s: float = TIMEOUT_S) -> rpc_pb2.WatchResponse:
        item = self.responses.get(timeout=timeout_s)
        if isinstance(item, Exception):
            raise item
        return item

    def events(self, count: int, timeout_s: float = TIMEOUT_S) -> list[kv_pb2.Event]:
        events: list[kv_pb2.Event] = []
        deadline = time.monotonic() + timeout_s
        while len(events) < count:
            events.extend(self.next(max(0.01, deadline - time.monotonic())).events)
        return events

    def close(self) -> None:
        self.requests.put(None)
        self.call.cancel()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    running = launch(tmp_path_factory.mktemp("grpc-cluster"), kind=Cluster)
    try:
        yield running
    finally:
        running.stop_all()


def follower_of(cluster: Cluster) -> int:
    leader = cluster.wait_leader()
    return next(i for i in cluster.live() if i != leader)


def put(
    cluster: Cluster, index: int, key: bytes, value: bytes, lease: int = 0, prev_kv: bool = False
) -> rpc_pb2.PutResponse:
    request = rpc_pb2.PutRequest(key=key, value=value, lease=lease, prev_kv=prev_kv)
    return cluster.kv(index).Put(request, timeout=TIMEOUT_S)


def get(
    cluster: Cluster, index: int, key: bytes, serializable: bool = False
) -> rpc_pb2.RangeResponse:
    request = rpc_pb2.RangeRequest(key=key, serializable=serializable)
    return cluster.kv(index).Range(request, timeout=TIMEOUT_S)


def expect_error(fn: object, code: grpc.StatusCode, message: str) -> None:
    assert callable(fn)
    with pytest.raises(grpc.RpcError) as caught:
        fn()
    error = caught.value
    assert error.code() == code, error
    assert error.details() == message


# ------------------------------------------------------------------ KV


def test_put_through_a_follower_is_read_everywhere_with_consistent_headers(
    cluster: Cluster,
) -> None:
    follower = follower_of(cluster)
    response = put(cluster, follower, b"/kv/a", b"1")
    assert response.header.cluster_id != 0
    assert response.header.raft_term >= 1
    read = get(cluster, follower, b"/kv/a")
    assert [kv.value for kv in read.kvs] == [b"1"]
    assert read.kvs[0].mod_revision == response.header.revision
    for index in cluster.live():
        linear = get(cluster, index, b"/kv/a")
        assert linear.kvs[0].value == b"1"
        assert linear.header.member_id != 0
        assert linear.header.raft_term == response.header.raft_term
    second = put(cluster, follower, b"/kv/a", b"2", prev_kv=True)
    assert second.prev_kv.value == b"1"
    assert second.header.revision == response.header.revision + 1
    again = get(cluster, follower, b"/kv/a")
    assert again.kvs[0].mod_revision == second.header.revision
    assert again.kvs[0].version == 2


def test_range_prefix_delete_and_serializable_read(cluster: Cluster) -> None:
    for i in range(5):
        put(cluster, i % 3, f"/range/{i}".encode(), str(i).encode())
    kv = cluster.kv(0)
    prefix = rpc_pb2.RangeRequest(key=b"/range/", range_end=b"/range0", limit=2)
    page = kv.Range(prefix, timeout=TIMEOUT_S)
    assert [item.key for item in page.kvs] == [b"/range/0", b"/range/1"]
    assert page.more and page.count == 5
    deleted = kv.DeleteRange(
        rpc_pb2.DeleteRangeRequest(key=b"/range/", range_end=b"/range0", prev_kv=True),
        timeout=TIMEOUT_S,
    )
    assert deleted.deleted == 5 and len(deleted.prev_kvs) == 5
    empty = get(cluster, 1, b"/range/", serializable=True)
    assert empty.count == 0 or empty.header.revision < deleted.header.revision


def test_txn_compare_and_swap_and_read_only_txn(cluster: Cluster) -> None:
    kv = cluster.kv(1)
    create = rpc_pb2.Compare(
        key=b"/txn/leader", target=rpc_pb2.Compare.CREATE, result=rpc_pb2.Compare.EQUAL
    )
    create.create_revision = 0
    put_op = rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"/txn/leader", value=b"me"))
    get_op = rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"/txn/leader"))
    first = kv.Txn(
        rpc_pb2.TxnRequest(compare=[create], success=[put_op], failure=[get_op]),
        timeout=TIMEOUT_S,
    )
    assert first.succeeded
    written = first.responses[0].response_put.header.revision
    assert first.header.revision == written
    second = kv.Txn(
        rpc_pb2.TxnRequest(compare=[create], success=[put_op], failure=[get_op]),
        timeout=TIMEOUT_S,
    )
    assert not second.succeeded
    assert second.responses[0].response_range.kvs[0].value == b"me"
    assert second.header.revision == written
    value = rpc_pb2.Compare(
        key=b"/txn/leader", target=rpc_pb2.Compare.VALUE, result=rpc_pb2.Compare.EQUAL
    )
    value.value = b"me"
    delete = rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=b"/txn/leader"))
    third = kv.Txn(rpc_pb2.TxnRequest(compare=[value], success=[delete]), timeout=TIMEOUT_S)
    assert third.succeeded
    assert third.responses[0].response_delete_range.deleted == 1


def test_etcd_error_strings(cluster: Cluster) -> None:
    kv = cluster.kv(2)
    expect_error(
        lambda: put(cluster, 2, b"/err/k", b"v", lease=0x1234),
        grpc.StatusCode.NOT_FOUND,
        "etcdserver: requested lease not found",
    )
    ops = [
        rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=f"/err/{i}".encode()))
        for i in range(129)
    ]
    expect_error(
        lambda: kv.Txn(rpc_pb2.TxnRequest(success=ops), timeout=TIMEOUT_S),
        grpc.StatusCode.INVALID_ARGUMENT,
        "etcdserver: too many operations in txn request",
    )
    twice = [rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"/err/dup"))] * 2
    expect_error(
        lambda: kv.Txn(rpc_pb2.TxnRequest(success=twice), timeout=TIMEOUT_S),
        grpc.StatusCode.INVALID_ARGUMENT,
        "etcdserver: duplicate key given in txn request",
    )
    expect_error(
        lambda: put(cluster, 2, b"/err/big", b"x" * (1536 * 1024 + 10)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "etcdserver: request is too large",
    )
    old = put(cluster, 2, b"/err/c", b"1").header.revision
    current = put(cluster, 2, b"/err/c", b"2").header.revision
    kv.Compact(rpc_pb2.CompactionRequest(revision=current), timeout=TIMEOUT_S)
    expect_error(
        lambda: kv.Range(rpc_pb2.RangeRequest(key=b"/err/c", revision=old), timeout=TIMEOUT_S),
        grpc.StatusCode.OUT_OF_RANGE,
        "etcdserver: mvcc: required revision has been compacted",
    )
    expect_error(
        lambda: kv.Range(
            rpc_pb2.RangeRequest(key=b"/err/c", revision=current + 1000), timeout=TIMEOUT_S
        ),
        grpc.StatusCode.OUT_OF_RANGE,
        "etcdserver: mvcc: required revision is a future revision",
    )
    expect_error(
        lambda: kv.Range(rpc_pb2.RangeRequest(key=b""), timeout=TIMEOUT_S),
        grpc.StatusCode.INVALID_ARGUMENT,
        "etcdserver: key is not provided",
    )
    expect_error(
        lambda: cluster.lease(2).LeaseRevoke(
            rpc_pb2.LeaseRevokeRequest(ID=0x4321), timeout=TIMEOUT_S
        ),
        grpc.StatusCode.NOT_FOUND,
        "etcdserver: requested lease not found",
    )


# ------------------------------------------------------------------ leases and watches


def test_lease_grant_keep_alive_time_to_live_and_revoke(cluster: Cluster) -> None:
    lease = cluster.lease(0)
    granted = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=30), timeout=TIMEOUT_S)
    assert granted.ID > 0 and granted.TTL == 30
    put(cluster, 1, b"/lease/k", b"v", lease=granted.ID)
    requests = iter(
        [rpc_pb2.LeaseKeepAliveRequest(ID=granted.ID), rpc_pb2.LeaseKeepAliveRequest(ID=77)]
    )
    answers = list(lease.LeaseKeepAlive(requests, timeout=TIMEOUT_S))
    assert [(a.ID, a.TTL) for a in answers] == [(granted.ID, 30), (77, 0)]
    ttl = cluster.lease(2).LeaseTimeToLive(
        rpc_pb2.LeaseTimeToLiveRequest(ID=granted.ID, keys=True), timeout=TIMEOUT_S
    )
    assert ttl.grantedTTL == 30 and 0 < ttl.TTL <= 30
    assert list(ttl.keys) == [b"/lease/k"]
    leases = lease.LeaseLeases(rpc_pb2.LeaseLeasesRequest(), timeout=TIMEOUT_S)
    assert granted.ID in [status.ID for status in leases.leases]
    lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=granted.ID), timeout=TIMEOUT_S)
    assert get(cluster, 1, b"/lease/k").count == 0
    gone = lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=granted.ID), timeout=TIMEOUT_S)
    assert gone.TTL == -1


def test_watch_sees_puts_and_deletes_in_order_and_cancels(cluster: Cluster) -> None:
    start = put(cluster, 0, b"/watch/a", b"0").header.revision
    watch = Watch(
        cluster.channel(1),
        rpc_pb2.WatchCreateRequest(key=b"/watch/", range_end=b"/watch0", start_revision=start),
    )
    try:
        created = watch.next()
        assert created.created and created.watch_id == 0
        put(cluster, 2, b"/watch/b", b"1")
        cluster.kv(0).DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"/watch/a"), timeout=TIMEOUT_S)
        events = watch.events(3)
        assert [(e.type, e.kv.key) for e in events] == [
            (kv_pb2.Event.PUT, b"/watch/a"),
            (kv_pb2.Event.PUT, b"/watch/b"),
            (kv_pb2.Event.DELETE, b"/watch/a"),
        ]
        revisions = [e.kv.mod_revision for e in events]
        assert revisions == sorted(revisions) and revisions[0] == start
        watch.requests.put(
            rpc_pb2.WatchRequest(cancel_request=rpc_pb2.WatchCancelRequest(watch_id=0))
        )
        canceled = watch.next()
        assert canceled.canceled and canceled.watch_id == 0
        watch.requests.put(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))
        progress = watch.next()
        assert progress.watch_id == -1 and progress.header.revision >= revisions[-1]
    finally:
        watch.close()


def test_watch_stream_keeps_sending_after_the_client_half_closes(cluster: Cluster) -> None:
    create = rpc_pb2.WatchCreateRequest(key=b"/half/k")
    call = rpc_pb2_grpc.WatchStub(cluster.channel(0)).Watch(
        iter([rpc_pb2.WatchRequest(create_request=create)]), timeout=TIMEOUT_S
    )
    try:
        assert next(call).created
        written = put(cluster, 1, b"/half/k", b"v").header.revision
        assert [e.kv.mod_revision for e in next(call).events] == [written]
    finally:
        call.cancel()


def test_member_list_and_status(cluster: Cluster) -> None:
    listed = cluster.cluster_stub(1).MemberList(rpc_pb2.MemberListRequest(), timeout=TIMEOUT_S)
    assert sorted(m.name for m in listed.members) == ["m0", "m1", "m2"]
    by_name = {m.name: m for m in listed.members}
    for member in cluster.members:
        assert list(by_name[member.name].clientURLs) == [f"http://{member.endpoint}"]
        assert list(by_name[member.name].peerURLs) == [f"http://127.0.0.1:{member.peer_port}"]
    status = cluster.maintenance(2).Status(rpc_pb2.StatusRequest(), timeout=TIMEOUT_S)
    assert status.leader in {m.ID for m in listed.members}
    assert status.version.startswith("3.4")
    assert status.raftTerm == status.header.raft_term
    assert status.raftAppliedIndex > 0 and status.dbSize > 0
    chunks = list(cluster.maintenance(0).Snapshot(rpc_pb2.SnapshotRequest(), timeout=TIMEOUT_S))
    assert chunks and chunks[-1].remaining_bytes == 0
    hashes = {
        cluster.maintenance(i).HashKV(rpc_pb2.HashKVRequest(), timeout=TIMEOUT_S).hash
        for i in cluster.live()
    }
    assert len(hashes) >= 1


def test_lock_waits_for_the_holder_and_election_hands_over_on_resign(cluster: Cluster) -> None:
    lease = cluster.lease(0)
    first = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=30), timeout=TIMEOUT_S).ID
    second = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=30), timeout=TIMEOUT_S).ID
    locks = v3lock_pb2_grpc.LockStub(cluster.channel(1))
    held = locks.Lock(v3lock_pb2.LockRequest(name=b"/lk", lease=first), timeout=TIMEOUT_S)
    assert held.key == b"/lk/" + f"{first:x}".encode()
    waiting = locks.Lock.future(v3lock_pb2.LockRequest(name=b"/lk", lease=second), timeout=10)
    time.sleep(0.3)
    assert not waiting.done()
    locks.Unlock(v3lock_pb2.UnlockRequest(key=held.key), timeout=TIMEOUT_S)
    assert waiting.result().key == b"/lk/" + f"{second:x}".encode()
    locks.Unlock(v3lock_pb2.UnlockRequest(key=waiting.result().key), timeout=TIMEOUT_S)

    election = v3election_pb2_grpc.ElectionStub(cluster.channel(2))
    expect_error(
        lambda: election.Leader(v3election_pb2.LeaderRequest(name=b"/el"), timeout=TIMEOUT_S),
        grpc.StatusCode.UNKNOWN,
        "election: no leader",
    )
    won = election.Campaign(
        v3election_pb2.CampaignRequest(name=b"/el", lease=first, value=b"a"), timeout=TIMEOUT_S
    )
    observe = election.Observe(v3election_pb2.LeaderRequest(name=b"/el"), timeout=10)
    assert next(observe).kv.value == b"a"
    contender = election.Campaign.future(
        v3election_pb2.CampaignRequest(name=b"/el", lease=second, value=b"b"), timeout=10
    )
    election.Proclaim(
        v3election_pb2.ProclaimRequest(leader=won.leader, value=b"a2"), timeout=TIMEOUT_S
    )
    assert next(observe).kv.value == b"a2"
    time.sleep(0.2)
    assert not contender.done()
    election.Resign(v3election_pb2.ResignRequest(leader=won.leader), timeout=TIMEOUT_S)
    assert contender.result().leader.key == b"/el/" + f"{second:x}".encode()
    assert next(observe).kv.value == b"b"
    observe.cancel()
    leader = election.Leader(v3election_pb2.LeaderRequest(name=b"/el"), timeout=TIMEOUT_S)
    assert leader.kv.create_revision == contender.result().leader.rev
    expect_error(
        lambda: election.Proclaim(
            v3election_pb2.ProclaimRequest(leader=won.leader, value=b"stale"), timeout=TIMEOUT_S
        ),
        grpc.StatusCode.UNKNOWN,
        "election: not leader",
    )
    for lease_id in (first, second):
        lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=lease_id), timeout=TIMEOUT_S)


# ------------------------------------------------------------------ failures


def test_leader_killed_service_continues_watch_resumes_leases_expire_member_catches_up(
    cluster: Cluster,
) -> None:
    leader = cluster.wait_leader()
    terms = [
        cluster.maintenance(i).Status(rpc_pb2.StatusRequest(), timeout=TIMEOUT_S).raftTerm
        for i in cluster.live()
    ]
    short = cluster.lease(leader).LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=2), timeout=TIMEOUT_S)
    put(cluster, leader, b"/fail/ephemeral", b"x", lease=short.ID)
    keep = cluster.lease(leader).LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60), timeout=TIMEOUT_S)
    put(cluster, leader, b"/fail/durable", b"y", lease=keep.ID)
    watch = Watch(
        cluster.channel(leader), rpc_pb2.WatchCreateRequest(key=b"/fail/w/", range_end=b"/fail/w0")
    )
    assert watch.next().created
    seen = put(cluster, leader, b"/fail/w/1", b"1").header.revision
    assert watch.events(1)[0].kv.mod_revision == seen
    watch.close()

    cluster.kill(leader)
    new_leader = cluster.wait_leader()
    assert new_leader != leader
    survivor = next(i for i in cluster.live() if i != new_leader)
    missed = put(cluster, survivor, b"/fail/w/2", b"2").header.revision
    for index in cluster.live():
        term = cluster.maintenance(index).Status(rpc_pb2.StatusRequest(), timeout=TIMEOUT_S)
        assert term.raftTerm >= max(terms)
        assert term.header.raft_term >= max(terms)

    resumed = Watch(
        cluster.channel(survivor),
        rpc_pb2.WatchCreateRequest(key=b"/fail/w/", range_end=b"/fail/w0", start_revision=seen + 1),
    )
    try:
        assert resumed.next().created
        events = resumed.events(1)
        assert [(e.kv.key, e.kv.mod_revision) for e in events] == [(b"/fail/w/2", missed)]
    finally:
        resumed.close()

    # The 2 s lease expires under the new leader; the 60 s one does not.
    deadline = time.monotonic() + 10
    while get(cluster, survivor, b"/fail/ephemeral").count and time.monotonic() < deadline:
        time.sleep(0.1)
    assert get(cluster, survivor, b"/fail/ephemeral").count == 0
    assert get(cluster, survivor, b"/fail/durable").kvs[0].value == b"y"

    for i in range(60):  # enough slots for a snapshot (--snapshot-count 50)
        put(cluster, cluster.live()[i % 2], b"/fail/bulk", str(i).encode())
    last = put(cluster, survivor, b"/fail/last", b"z").header.revision
    cluster.start(leader)
    deadline = time.monotonic() + READY_TIMEOUT_S
    caught_up = False
    while time.monotonic() < deadline and not caught_up:
        with contextlib.suppress(grpc.RpcError):
            local = get(cluster, leader, b"/fail/last", serializable=True)
            caught_up = local.count == 1 and local.kvs[0].mod_revision == last
        time.sleep(0.1)
    assert caught_up, "the restarted member did not catch up"
    assert get(cluster, leader, b"/fail/bulk").kvs[0].value == b"59"
    assert get(cluster, leader, b"/fail/ephemeral").count == 0


def test_serve_refuses_a_data_dir_of_another_cluster_and_a_busy_port(
    cluster: Cluster, tmp_path: Path
) -> None:
    member = cluster.members[0]
    command = [("another-token" if arg == "grpc-test" else arg) for arg in cluster.command(member)]
    other = subprocess.run(command, capture_output=True, timeout=30)
    assert other.returncode == 1
    assert b"belongs to another cluster" in other.stdout + other.stderr
    busy = subprocess.run(
        [
            sys.executable,
            "-m",
            "synod.cli",
            "serve",
            "--name",
            "solo",
            "--data-dir",
            str(tmp_path / "solo"),
            "--listen-client-urls",
            f"http://{member.endpoint}",
            "--listen-peer-urls",
            f"http://127.0.0.1:{free_ports(1)[0]}",
        ],
        capture_output=True,
        timeout=30,
    )
    assert busy.returncode == 1
    assert b"cannot listen for clients" in busy.stdout + busy.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "synod.cli", "serve", "--listen-client-urls", "nonsense"],
        capture_output=True,
        timeout=30,
    )
    assert bad.returncode == 2
    assert b"bad URL" in bad.stderr


def test_without_quorum_writes_fail_with_no_leader_and_only_leader_requiring_watches_end(
    cluster: Cluster,
) -> None:
    """Runs last: it leaves one member of three."""
    cluster.wait_leader()
    written = put(cluster, 0, b"/nl/before", b"v").header.revision
    deadline = time.monotonic() + 10
    while get(cluster, 0, b"/nl/before", serializable=True).header.revision < written:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    plain = Watch(cluster.channel(0), rpc_pb2.WatchCreateRequest(key=b"/nl/plain"))
    assert plain.next().created
    for index in cluster.live():
        if index != 0:
            cluster.kill(index)
    watch = rpc_pb2_grpc.WatchStub(cluster.channel(0)).Watch(
        iter([rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"/nl"))]),
        metadata=(("hasleader", "true"),),
        timeout=15,
    )
    deadline = time.monotonic() + 10
    while cluster.maintenance(0).Status(rpc_pb2.StatusRequest(), timeout=1).leader != 0:
        assert time.monotonic() < deadline, "the lone member still believes in a leader"
        time.sleep(0.05)
    expect_error(
        lambda: put(cluster, 0, b"/nl", b"v"), grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader"
    )
    assert get(cluster, 0, b"/nl/before", serializable=True).count == 1
    with pytest.raises(grpc.RpcError) as ended:
        for _ in watch:
            pass
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
    assert ended.value.details() == "etcdserver: no leader"
    # a watch whose client does not require a leader is served without one, as by etcd
    late = Watch(cluster.channel(0), rpc_pb2.WatchCreateRequest(key=b"/nl/late"))
    assert late.next().created
    with pytest.raises(queue.Empty):
        plain.next(timeout_s=0.2)
    late.close()
    plain.close()


def _free_base_port() -> int:
    """A base port whose `synod up` layout (base, +20000, +30000; peers +1) is free now."""
    for candidate in range(10000 + os.getpid() % 5000, 25000, 97):
        ports = [candidate + offset + peer for offset in (0, 20000, 30000) for peer in (0, 1)]
        sockets = []
        try:
            for port in ports:
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return candidate
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise AssertionError("no free port layout for synod up")


def test_synod_up_starts_a_cluster_reports_ready_and_stops_on_sigint(tmp_path: Path) -> None:
    base = _free_base_port()
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "synod.cli",
            "up",
            "--base-port",
            str(base),
            "--data-dir",
            str(tmp_path / "data"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert up.stdout is not None
        lines = [up.stdout.readline() for _ in range(4)]
        assert lines[0].startswith(f"synod1: client http://127.0.0.1:{base} ")
        assert lines[3].startswith("ready: leader "), lines
        channel = grpc.insecure_channel(f"127.0.0.1:{base + 20000}")
        listed = rpc_pb2_grpc.ClusterStub(channel).MemberList(
            rpc_pb2.MemberListRequest(), timeout=TIMEOUT_S
        )
        channel.close()
        assert sorted(m.name for m in listed.members) == ["synod1", "synod2", "synod3"]
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=20) == 0
        assert up.stdout.read().strip().endswith("stopped")
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGTERM)  # `synod up` stops its children; a kill would not
            try:
                up.wait(timeout=20)
            except subprocess.TimeoutExpired:
                up.kill()
                up.wait()
