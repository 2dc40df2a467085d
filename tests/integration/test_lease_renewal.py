"""Keep-alives answered by the leader without a log entry (etcd's lessor), on a real cluster.

Goal: what a lease holder relies on holds when keep-alives stay off the log: a lease kept
alive through any member lives past its TTL and costs no log entry per keep-alive; every
member reports the leader's remaining time; a lease left alone expires one TTL after its
last keep-alive; and a lease renewed by a leader that then dies lives at least as long as
that renewal promised (the new leader restarts every lease with its full TTL).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from synod.api.proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from tests.integration.cluster import SynodCluster, launched

pytestmark = pytest.mark.slow

TIMEOUT_S = 5.0
TTL_S = 3


@pytest.fixture()
def cluster(tmp_path: Path) -> Iterator[SynodCluster]:
    with launched(tmp_path, token="lease-renewal") as running:
        yield running


def _channel(cluster: SynodCluster, index: int) -> grpc.Channel:
    return grpc.insecure_channel(cluster.members[index].endpoint)


def _keep_alive(channel: grpc.Channel, lease_id: int) -> int:
    stub = rpc_pb2_grpc.LeaseStub(channel)
    answers = list(
        stub.LeaseKeepAlive(iter([rpc_pb2.LeaseKeepAliveRequest(ID=lease_id)]), timeout=TIMEOUT_S)
    )
    assert len(answers) == 1 and lease_id == answers[0].ID
    return answers[0].TTL


def _time_to_live(channel: grpc.Channel, lease_id: int) -> rpc_pb2.LeaseTimeToLiveResponse:
    request = rpc_pb2.LeaseTimeToLiveRequest(ID=lease_id, keys=True)
    return rpc_pb2_grpc.LeaseStub(channel).LeaseTimeToLive(request, timeout=TIMEOUT_S)


def _count(channel: grpc.Channel, key: bytes) -> int:
    response = rpc_pb2_grpc.KVStub(channel).Range(rpc_pb2.RangeRequest(key=key), timeout=TIMEOUT_S)
    return response.count


def _raft_index(channel: grpc.Channel) -> int:
    status = rpc_pb2_grpc.MaintenanceStub(channel).Status(
        rpc_pb2.StatusRequest(), timeout=TIMEOUT_S
    )
    return status.raftIndex


def _grant_with_key(channel: grpc.Channel, key: bytes) -> int:
    granted = rpc_pb2_grpc.LeaseStub(channel).LeaseGrant(
        rpc_pb2.LeaseGrantRequest(TTL=TTL_S), timeout=TIMEOUT_S
    )
    rpc_pb2_grpc.KVStub(channel).Put(
        rpc_pb2.PutRequest(key=key, value=b"held", lease=granted.ID), timeout=TIMEOUT_S
    )
    return granted.ID


def test_keep_alives_through_any_member_hold_a_lease_without_log_entries(
    cluster: SynodCluster,
) -> None:
    """Method: keep a 3 s lease alive for 7 s, every 0.5 s through the three members in
    turn; its key survives, the log grows by far fewer slots than keep-alives were sent
    (each used to be a replicated write), and each member's TimeToLive, right after a
    keep-alive, shows nearly the full TTL (a follower's own record of the grant alone would
    say 0). Then the keep-alives stop: the key goes within a TTL and some slack, and a
    keep-alive is answered TTL 0."""
    channels = [_channel(cluster, index) for index in range(cluster.size)]
    try:
        lease_id = _grant_with_key(channels[0], b"/renew/k")
        time.sleep(1.0)  # let start-up entries (members publishing their URLs) settle
        index_before = max(_raft_index(channel) for channel in channels)
        sent = 0
        ends = time.monotonic() + 7.0
        while time.monotonic() < ends:
            channel = channels[sent % len(channels)]
            assert _keep_alive(channel, lease_id) == TTL_S
            sent += 1
            remaining = _time_to_live(channels[sent % len(channels)], lease_id)
            assert remaining.grantedTTL == TTL_S and remaining.TTL >= TTL_S - 1
            assert list(remaining.keys) == [b"/renew/k"]
            time.sleep(0.5)
        assert all(_count(channel, b"/renew/k") == 1 for channel in channels)
        grown = max(_raft_index(channel) for channel in channels) - index_before
        assert sent >= 10 and grown <= 2, (sent, grown)

        last_renewal = time.monotonic()
        while _count(channels[1], b"/renew/k") and time.monotonic() < last_renewal + TTL_S + 5:
            time.sleep(0.1)
        assert _count(channels[1], b"/renew/k") == 0
        assert time.monotonic() - last_renewal >= TTL_S - 1.0
        assert [_keep_alive(channel, lease_id) for channel in channels] == [0, 0, 0]
        assert _time_to_live(channels[2], lease_id).TTL == -1
    finally:
        for channel in channels:
            channel.close()


def test_a_lease_renewed_by_a_leader_that_dies_lives_as_long_as_promised(
    cluster: SynodCluster,
) -> None:
    """Method: grant a 3 s lease, renew it through the leader 2.5 s later, SIGKILL the
    leader at once. The renewal promised the holder until 3 s after it; the grant alone
    would end 0.5 s after it. The key must still be there 2.5 s after the renewal (the new
    leader restarted every lease with its full TTL), and go once nobody renews it."""
    leader = cluster.wait_leader()
    channel = _channel(cluster, leader)
    try:
        lease_id = _grant_with_key(channel, b"/renew/dies")
        time.sleep(2.5)
        assert _keep_alive(channel, lease_id) == TTL_S
        renewed_at = time.monotonic()
        cluster.kill(leader)
    finally:
        channel.close()
    new_leader = cluster.wait_leader()
    assert new_leader != leader
    survivor = _channel(cluster, new_leader)
    try:
        time.sleep(max(0.0, renewed_at + 2.5 - time.monotonic()))
        assert _count(survivor, b"/renew/dies") == 1
        ends = time.monotonic() + 10
        while _count(survivor, b"/renew/dies") and time.monotonic() < ends:
            time.sleep(0.1)
        assert _count(survivor, b"/renew/dies") == 0
    finally:
        survivor.close()
