"""A member's gRPC worker (synod.api.grpc_relay): the process that serves the etcd gRPC API
beside each member, relaying to it.

Goal: an etcd client talking to the worker gets what the member itself answers — results,
etcd's status codes and messages, streams, deadlines — and the worker's life follows its
member's: a killed worker is replaced while clients keep being served through the member's
own gRPC server, and a killed member leaves no worker behind.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from synod.api.proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from synod.api.proto.v3lockpb import v3lock_pb2, v3lock_pb2_grpc
from tests.integration.cluster import SynodCluster, launched

pytestmark = pytest.mark.slow

TIMEOUT_S = 5.0
RESTART_WAIT_S = 15.0
LOCAL_POOL = (("grpc.use_local_subchannel_pool", 1),)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SynodCluster]:
    with launched(tmp_path_factory.mktemp("workers"), token="workers-test") as running:
        yield running


def worker_channel(cluster: SynodCluster, index: int) -> grpc.Channel:
    address = cluster.worker_address(index)
    assert address is not None, f"member {index} has no serving gRPC worker"
    return grpc.insecure_channel(address)


def follower_of(cluster: SynodCluster) -> int:
    leader = cluster.wait_leader()
    return next(i for i in cluster.live() if i != leader)


def test_the_worker_answers_as_its_member_does(cluster: SynodCluster) -> None:
    """Relayed calls (KV, lease), their errors, and proxied streams and calls (watch,
    keep-alive, lock), through a follower's worker."""
    index = follower_of(cluster)
    with worker_channel(cluster, index) as channel:
        kv = rpc_pb2_grpc.KVStub(channel)
        put = kv.Put(rpc_pb2.PutRequest(key=b"w/a", value=b"1"), timeout=TIMEOUT_S)
        assert put.header.revision > 1 and put.header.member_id != 0
        got = kv.Range(rpc_pb2.RangeRequest(key=b"w/a"), timeout=TIMEOUT_S)
        assert [(kv.key, kv.value) for kv in got.kvs] == [(b"w/a", b"1")]

        with pytest.raises(grpc.RpcError) as caught:
            kv.Put(rpc_pb2.PutRequest(key=b"w/b", lease=424242), timeout=TIMEOUT_S)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert caught.value.details() == "etcdserver: requested lease not found"
        with pytest.raises(grpc.RpcError) as caught:
            kv.Put(rpc_pb2.PutRequest(key=b"w/big", value=b"x" * 2_000_000), timeout=TIMEOUT_S)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.details() == "etcdserver: request is too large"
        with pytest.raises(grpc.RpcError) as caught:
            kv.Range(rpc_pb2.RangeRequest(key=b""), timeout=TIMEOUT_S)
        assert caught.value.details() == "etcdserver: key is not provided"

        lease = rpc_pb2_grpc.LeaseStub(channel)
        granted = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=30), timeout=TIMEOUT_S)
        kept = list(lease.LeaseKeepAlive(iter([rpc_pb2.LeaseKeepAliveRequest(ID=granted.ID)])))
        assert [k.ID for k in kept] == [granted.ID] and kept[0].TTL == 30

        requests: queue.Queue[rpc_pb2.WatchRequest | None] = queue.Queue()
        requests.put(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"w/c")))
        watch = rpc_pb2_grpc.WatchStub(channel).Watch(iter(requests.get, None))
        responses = iter(watch)
        assert next(responses).created
        kv.Put(rpc_pb2.PutRequest(key=b"w/c", value=b"2"), timeout=TIMEOUT_S)
        event = next(responses).events[0]
        assert (event.kv.key, event.kv.value) == (b"w/c", b"2")
        requests.put(None)
        watch.cancel()

        locks = v3lock_pb2_grpc.LockStub(channel)
        held = locks.Lock(v3lock_pb2.LockRequest(name=b"w/lock", lease=granted.ID), timeout=5)
        assert held.key.startswith(b"w/lock/")
        # a second waiter's deadline passes while the lock is held: etcd's status, and
        # its wait ends at the member too (the lock is free once the holder unlocks)
        other = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=30), timeout=TIMEOUT_S)
        with pytest.raises(grpc.RpcError) as caught:
            locks.Lock(v3lock_pb2.LockRequest(name=b"w/lock", lease=other.ID), timeout=0.5)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        locks.Unlock(v3lock_pb2.UnlockRequest(key=held.key), timeout=TIMEOUT_S)
        again = locks.Lock(v3lock_pb2.LockRequest(name=b"w/lock", lease=other.ID), timeout=5)
        assert again.key.startswith(b"w/lock/")


def test_a_killed_worker_is_replaced_and_clients_are_served_meanwhile(
    cluster: SynodCluster,
) -> None:
    index = follower_of(cluster)
    (old,) = cluster.worker_pids(index)
    old_address = cluster.worker_address(index)
    assert old_address is not None
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + RESTART_WAIT_S
    # The kernel closes a killed process's listening socket a little after the process is
    # gone; until then it still accepts, and a connection the front door splices there is
    # reset (one UNAVAILABLE for that client, as from a crashed etcd member).
    while (_alive(old) or _accepts(old_address)) and time.monotonic() < deadline:
        time.sleep(0.01)
    endpoint = cluster.members[index].endpoint
    served = 0
    while time.monotonic() < deadline:
        # a new connection each time (not one from grpc's shared pool: a connection that
        # was spliced to the killed worker is broken, as to a crashed etcd member); while
        # no worker serves, new connections reach the member's own gRPC server
        with grpc.insecure_channel(endpoint, options=LOCAL_POOL) as channel:
            rpc_pb2_grpc.KVStub(channel).Put(
                rpc_pb2.PutRequest(key=b"w/served", value=str(served).encode()),
                timeout=TIMEOUT_S,
            )
        served += 1
        pids = cluster.worker_pids(index)
        if pids and old not in pids and cluster.worker_address(index) is not None:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("no new gRPC worker served in time")
    with worker_channel(cluster, index) as channel:
        got = rpc_pb2_grpc.KVStub(channel).Range(
            rpc_pb2.RangeRequest(key=b"w/served"), timeout=TIMEOUT_S
        )
    assert got.kvs[0].value == str(served - 1).encode()


def test_a_worker_outlives_ctrl_c_but_not_its_member(tmp_path: Path) -> None:
    with launched(tmp_path, size=1, token="workers-alone") as single:
        (worker,) = single.worker_pids(0)
        os.kill(worker, signal.SIGINT)  # Ctrl-C reaches the group: the member decides
        time.sleep(0.3)
        assert _alive(worker)
        single.kill(0)
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline and _alive(worker):
            time.sleep(0.05)
        assert not _alive(worker), "the worker outlived its member"


def _accepts(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return False
    return True


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False
