"""Our generated stubs against a real etcd 3.4 over gRPC: the wire contract, checked live.

Starts one throwaway etcd (Debian's etcd-server) on 127.0.0.1 with free ports in a temp
dir and drives it only through synod.api.proto stubs. Skipped when no `etcd` binary is
on PATH.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from synod.api.proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from synod.api.proto.mvccpb import kv_pb2
from synod.api.proto.v3electionpb import v3election_pb2, v3election_pb2_grpc
from synod.api.proto.v3lockpb import v3lock_pb2, v3lock_pb2_grpc

ETCD = shutil.which("etcd")
pytestmark = pytest.mark.skipif(
    ETCD is None, reason="etcd binary not on PATH (install Debian's etcd-server to run)"
)

TIMEOUT = 10.0


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _start_etcd(data_dir: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    assert ETCD is not None
    client_port, peer_port = _free_ports(2)
    client = f"http://127.0.0.1:{client_port}"
    peer = f"http://127.0.0.1:{peer_port}"
    log = data_dir.parent / "etcd.log"
    args = [
        ETCD,
        "--name=synod-compat",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=synod-compat={peer}",
        "--initial-cluster-state=new",
        "--log-outputs=stderr",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
    return proc, f"127.0.0.1:{client_port}", log


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _ready(target: str, proc: subprocess.Popen[bytes], deadline: float) -> grpc.Channel | None:
    """A channel once etcd answers a linearizable read, or None if it died or timed out."""
    channel = grpc.insecure_channel(target)
    kv = rpc_pb2_grpc.KVStub(channel)
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            kv.Range(rpc_pb2.RangeRequest(key=b"\x00"), timeout=1.0)
            return channel
        except grpc.RpcError:
            time.sleep(0.1)
    channel.close()
    return None


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[grpc.Channel, str]]:
    """(gRPC channel, host:port) of a running etcd."""
    logs = []
    for attempt in range(3):  # a free port can be taken between probe and bind
        base = tmp_path_factory.mktemp(f"etcd{attempt}")
        proc, target, log = _start_etcd(base / "data")
        try:
            ch = _ready(target, proc, time.monotonic() + 20)
            if ch is not None:
                try:
                    yield ch, target
                finally:
                    ch.close()
                return
        finally:
            _stop(proc)
        logs.append(log.read_text(errors="replace")[-2000:])
    pytest.fail("etcd did not come up:\n" + "\n---\n".join(logs))


@pytest.fixture(scope="module")
def channel(etcd: tuple[grpc.Channel, str]) -> grpc.Channel:
    return etcd[0]


def _kv(ch: grpc.Channel) -> Any:
    return rpc_pb2_grpc.KVStub(ch)


def test_put_and_range(channel: grpc.Channel) -> None:
    kv = _kv(channel)
    put = kv.Put(rpc_pb2.PutRequest(key=b"/t/a", value=b"1"), timeout=TIMEOUT)
    assert put.header.revision > 1 and put.header.cluster_id != 0 and put.header.member_id != 0
    assert put.header.raft_term >= 1
    kv.Put(rpc_pb2.PutRequest(key=b"/t/b", value=b"2"), timeout=TIMEOUT)
    again = kv.Put(rpc_pb2.PutRequest(key=b"/t/a", value=b"3", prev_kv=True), timeout=TIMEOUT)
    assert again.prev_kv.value == b"1" and again.prev_kv.mod_revision == put.header.revision

    got = kv.Range(
        rpc_pb2.RangeRequest(key=b"/t/", range_end=b"/t0", sort_order=rpc_pb2.RangeRequest.DESCEND),
        timeout=TIMEOUT,
    )
    assert got.count == 2 and not got.more
    assert [(x.key, x.value) for x in got.kvs] == [(b"/t/b", b"2"), (b"/t/a", b"3")]
    a = got.kvs[1]
    assert (a.create_revision, a.mod_revision, a.version) == (
        put.header.revision,
        again.header.revision,
        2,
    )

    counted = kv.Range(
        rpc_pb2.RangeRequest(key=b"/t/", range_end=b"/t0", count_only=True, serializable=True),
        timeout=TIMEOUT,
    )
    assert counted.count == 2 and len(counted.kvs) == 0

    old = kv.Range(rpc_pb2.RangeRequest(key=b"/t/a", revision=put.header.revision), timeout=TIMEOUT)
    assert old.kvs[0].value == b"1"


def test_txn_create_revision_zero_guard(channel: grpc.Channel) -> None:
    kv = _kv(channel)

    def claim(value: bytes) -> Any:
        return kv.Txn(
            rpc_pb2.TxnRequest(
                compare=[
                    rpc_pb2.Compare(
                        key=b"/txn/leader",
                        target=rpc_pb2.Compare.CREATE,
                        result=rpc_pb2.Compare.EQUAL,
                        create_revision=0,
                    )
                ],
                success=[
                    rpc_pb2.RequestOp(
                        request_put=rpc_pb2.PutRequest(key=b"/txn/leader", value=value)
                    )
                ],
                failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"/txn/leader"))],
            ),
            timeout=TIMEOUT,
        )

    first = claim(b"me")
    assert first.succeeded
    assert first.responses[0].WhichOneof("response") == "response_put"
    second = claim(b"you")
    assert not second.succeeded
    assert second.responses[0].response_range.kvs[0].value == b"me"
    assert second.responses[0].response_range.kvs[0].mod_revision == first.header.revision


def test_watch_one_event(channel: grpc.Channel) -> None:
    watch = rpc_pb2_grpc.WatchStub(channel)
    requests: queue.Queue[rpc_pb2.WatchRequest | None] = queue.Queue()

    def feed() -> Iterator[rpc_pb2.WatchRequest]:
        while (req := requests.get()) is not None:
            yield req

    requests.put(
        rpc_pb2.WatchRequest(
            create_request=rpc_pb2.WatchCreateRequest(key=b"/w/", range_end=b"/w0", prev_kv=True)
        )
    )
    call = watch.Watch(feed(), timeout=TIMEOUT)
    try:
        created = next(call)
        assert created.created and not created.events
        _kv(channel).Put(rpc_pb2.PutRequest(key=b"/w/x", value=b"v1"), timeout=TIMEOUT)
        put = _kv(channel).Put(rpc_pb2.PutRequest(key=b"/w/x", value=b"v2"), timeout=TIMEOUT)
        events: list[kv_pb2.Event] = []
        while len(events) < 2:
            resp = next(call)
            assert resp.watch_id == created.watch_id
            events.extend(resp.events)
        ev = events[1]
        assert ev.type == kv_pb2.Event.PUT
        assert (ev.kv.key, ev.kv.value, ev.kv.version) == (b"/w/x", b"v2", 2)
        assert ev.kv.mod_revision == put.header.revision
        assert ev.prev_kv.value == b"v1"
    finally:
        requests.put(None)
        call.cancel()


def test_lease_grant_attach_and_errors(channel: grpc.Channel) -> None:
    lease = rpc_pb2_grpc.LeaseStub(channel)
    kv = _kv(channel)
    grant = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=30), timeout=TIMEOUT)
    assert grant.ID != 0 and grant.TTL == 30 and not grant.error
    kv.Put(rpc_pb2.PutRequest(key=b"/l/k", value=b"v", lease=grant.ID), timeout=TIMEOUT)
    ttl = lease.LeaseTimeToLive(
        rpc_pb2.LeaseTimeToLiveRequest(ID=grant.ID, keys=True), timeout=TIMEOUT
    )
    assert ttl.ID == grant.ID and ttl.grantedTTL == 30 and 0 < ttl.TTL <= 30
    assert list(ttl.keys) == [b"/l/k"]
    leases = lease.LeaseLeases(rpc_pb2.LeaseLeasesRequest(), timeout=TIMEOUT)
    assert grant.ID in [s.ID for s in leases.leases]

    with pytest.raises(grpc.RpcError) as err:
        kv.Put(rpc_pb2.PutRequest(key=b"/l/bad", value=b"v", lease=0x7EADBEEF), timeout=TIMEOUT)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert err.value.details() == "etcdserver: requested lease not found"

    lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=grant.ID), timeout=TIMEOUT)
    gone = kv.Range(rpc_pb2.RangeRequest(key=b"/l/k"), timeout=TIMEOUT)
    assert gone.count == 0
    dead = lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=grant.ID), timeout=TIMEOUT)
    assert dead.TTL == -1


def test_cluster_and_maintenance(channel: grpc.Channel) -> None:
    members = rpc_pb2_grpc.ClusterStub(channel).MemberList(
        rpc_pb2.MemberListRequest(), timeout=TIMEOUT
    )
    assert [m.name for m in members.members] == ["synod-compat"]
    assert members.members[0].clientURLs[0].startswith("http://127.0.0.1:")
    status = rpc_pb2_grpc.MaintenanceStub(channel).Status(rpc_pb2.StatusRequest(), timeout=TIMEOUT)
    assert status.version.startswith("3.4.")
    assert status.leader == members.members[0].ID == status.header.member_id
    assert status.raftTerm >= 1 and status.dbSize > 0


def test_lock_and_election(channel: grpc.Channel) -> None:
    lease = rpc_pb2_grpc.LeaseStub(channel)
    lid = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=30), timeout=TIMEOUT).ID

    locks = v3lock_pb2_grpc.LockStub(channel)
    held = locks.Lock(v3lock_pb2.LockRequest(name=b"mylock", lease=lid), timeout=TIMEOUT)
    assert held.key.startswith(b"mylock/")
    owner = _kv(channel).Range(rpc_pb2.RangeRequest(key=held.key), timeout=TIMEOUT).kvs[0]
    assert owner.lease == lid
    locks.Unlock(v3lock_pb2.UnlockRequest(key=held.key), timeout=TIMEOUT)

    election = v3election_pb2_grpc.ElectionStub(channel)
    won = election.Campaign(
        v3election_pb2.CampaignRequest(name=b"myelection", lease=lid, value=b"n1"),
        timeout=TIMEOUT,
    )
    assert won.leader.name == b"myelection" and won.leader.lease == lid
    election.Proclaim(
        v3election_pb2.ProclaimRequest(leader=won.leader, value=b"n1b"), timeout=TIMEOUT
    )
    who = election.Leader(v3election_pb2.LeaderRequest(name=b"myelection"), timeout=TIMEOUT)
    assert who.kv.key == won.leader.key and who.kv.value == b"n1b"
    assert who.kv.create_revision == won.leader.rev
    election.Resign(v3election_pb2.ResignRequest(leader=won.leader), timeout=TIMEOUT)
    lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=lid), timeout=TIMEOUT)


def _gateway(target: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(
        f"http://{target}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
        out: dict[str, Any] = json.loads(resp.read())
        return out


def test_json_gateway_uses_our_field_names(etcd: tuple[grpc.Channel, str]) -> None:
    # etcd's JSON gateway is the proto3 JSON mapping of these very messages with the
    # original field names: parsing its answers strictly must succeed, and printing
    # them back the same way must give the same JSON.
    channel, target = etcd
    lid = rpc_pb2_grpc.LeaseStub(channel).LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60)).ID
    _kv(channel).Put(rpc_pb2.PutRequest(key=b"/j/k", value=b"v", lease=lid), timeout=TIMEOUT)
    key = base64.b64encode(b"/j/k").decode()
    cases: list[tuple[str, dict[str, Any], Any]] = [
        ("/v3/kv/range", {"key": key}, rpc_pb2.RangeResponse()),
        ("/v3/kv/put", {"key": key, "value": "dg==", "prev_kv": True}, rpc_pb2.PutResponse()),
        ("/v3/lease/timetolive", {"ID": str(lid), "keys": True}, rpc_pb2.LeaseTimeToLiveResponse()),
        ("/v3/cluster/member/list", {}, rpc_pb2.MemberListResponse()),
        ("/v3/maintenance/status", {}, rpc_pb2.StatusResponse()),
    ]
    for path, body, msg in cases:
        raw = _gateway(target, path, body)
        json_format.ParseDict(raw, msg)  # strict: an unknown field name raises
        again = json_format.MessageToDict(msg, preserving_proto_field_name=True)
        assert again == raw, path
    assert raw["header"]["cluster_id"].isdigit()  # 64-bit integers travel as strings
