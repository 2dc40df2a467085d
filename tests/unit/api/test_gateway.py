"""The JSON gateway against a fake handlers object: paths, the proto3 JSON mapping etcd 3.4
prints (int64 as strings, zero values omitted, base64 bytes, original field names), error
bodies and statuses, keep-alive, watch chunks, /version, /health, /metrics.

The expected shapes were taken from a real etcd 3.4.23 (see docs/gateway.md).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient, TestServer

from synod.api import json_mapping as jm
from synod.api.errors import EtcdError, StatusCode
from synod.api.gateway import VersionInfo, build_gateway
from synod.api.metrics import MemberSample, PeerSample, SynodMetrics
from synod.api.proto.etcdserverpb import rpc_pb2
from synod.api.proto.mvccpb import kv_pb2

CLUSTER_ID = 324952591200643719
MEMBER_ID = 3319814642761637952
LEASE_NOT_FOUND = "etcdserver: requested lease not found"

# ---------------------------------------------------------------------------- the fake


class FakeWatch:
    def __init__(self, owner: FakeHandlers) -> None:
        self.owner = owner
        self.queue: asyncio.Queue[rpc_pb2.WatchResponse | None] = asyncio.Queue()
        self.keys: dict[int, bytes] = {}
        self.closed = False
        self.requests: list[rpc_pb2.WatchRequest] = []

    async def handle(self, request: rpc_pb2.WatchRequest) -> None:
        self.requests.append(request)
        if request.HasField("create_request"):
            create = request.create_request
            if create.start_revision and create.start_revision < self.owner.compacted:
                self.queue.put_nowait(
                    rpc_pb2.WatchResponse(
                        header=self.owner.header(revision=0),
                        watch_id=len(self.keys),
                        created=True,
                    )
                )
                self.queue.put_nowait(
                    rpc_pb2.WatchResponse(
                        header=self.owner.header(revision=0),
                        watch_id=len(self.keys),
                        canceled=True,
                        compact_revision=self.owner.compacted,
                    )
                )
                return
            watch_id = len(self.keys)
            self.keys[watch_id] = create.key
            self.queue.put_nowait(
                rpc_pb2.WatchResponse(header=self.owner.header(), watch_id=watch_id, created=True)
            )

    def emit(self, events: list[kv_pb2.Event]) -> None:
        for watch_id, key in self.keys.items():
            mine = [e for e in events if e.kv.key == key]
            if mine:
                self.queue.put_nowait(
                    rpc_pb2.WatchResponse(
                        header=self.owner.header(), watch_id=watch_id, events=mine
                    )
                )

    async def responses(self) -> AsyncIterator[rpc_pb2.WatchResponse]:
        while True:
            response = await self.queue.get()
            if response is None:
                if self.owner.watch_failure is not None:
                    raise self.owner.watch_failure
                return
            yield response

    def close(self) -> None:
        self.closed = True
        self.queue.put_nowait(None)


class FakeHandlers:
    def __init__(self) -> None:
        self.revision = 1
        self.compacted = 0
        self.kvs: dict[bytes, kv_pb2.KeyValue] = {}
        self.leases: dict[int, int] = {}
        self.leader = MEMBER_ID
        self.watches: list[FakeWatch] = []
        self.watch_failure: EtcdError | None = None
        self.failure: EtcdError | None = None  # raised by every call when set
        self.alarms: list[rpc_pb2.AlarmMember] = []
        self.range_delay = 0.0

    def header(self, revision: int | None = None) -> rpc_pb2.ResponseHeader:
        return rpc_pb2.ResponseHeader(
            cluster_id=CLUSTER_ID,
            member_id=MEMBER_ID,
            revision=self.revision if revision is None else revision,
            raft_term=2,
        )

    def _check(self) -> None:
        if self.failure is not None:
            raise self.failure

    # KV
    async def range(self, request: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        self._check()
        if self.range_delay:
            await asyncio.sleep(self.range_delay)
        if request.revision > self.revision:
            raise EtcdError(
                StatusCode.OUT_OF_RANGE, "etcdserver: mvcc: required revision is a future revision"
            )
        if not request.key:
            raise EtcdError(StatusCode.INVALID_ARGUMENT, "etcdserver: key is not provided")
        found = [kv for key, kv in sorted(self.kvs.items()) if key == request.key]
        return rpc_pb2.RangeResponse(header=self.header(), kvs=found, count=len(found))

    def _put(self, request: rpc_pb2.PutRequest) -> rpc_pb2.PutResponse:
        if request.lease and request.lease not in self.leases:
            raise EtcdError(StatusCode.NOT_FOUND, LEASE_NOT_FOUND)
        self.revision += 1
        old = self.kvs.get(request.key)
        kv = kv_pb2.KeyValue(
            key=request.key,
            value=request.value,
            create_revision=old.create_revision if old else self.revision,
            mod_revision=self.revision,
            version=old.version + 1 if old else 1,
            lease=request.lease,
        )
        self.kvs[request.key] = kv
        for watch in self.watches:
            watch.emit([kv_pb2.Event(type=kv_pb2.Event.PUT, kv=kv)])
        response = rpc_pb2.PutResponse(header=self.header())
        if request.prev_kv and old is not None:
            response.prev_kv.CopyFrom(old)
        return response

    async def put(self, request: rpc_pb2.PutRequest) -> rpc_pb2.PutResponse:
        self._check()
        return self._put(request)

    async def delete_range(
        self, request: rpc_pb2.DeleteRangeRequest
    ) -> rpc_pb2.DeleteRangeResponse:
        self._check()
        old = self.kvs.pop(request.key, None)
        if old is None:
            return rpc_pb2.DeleteRangeResponse(header=self.header())
        self.revision += 1
        for watch in self.watches:
            watch.emit(
                [
                    kv_pb2.Event(
                        type=kv_pb2.Event.DELETE,
                        kv=kv_pb2.KeyValue(key=request.key, mod_revision=self.revision),
                    )
                ]
            )
        response = rpc_pb2.DeleteRangeResponse(header=self.header(), deleted=1)
        if request.prev_kv:
            response.prev_kvs.append(old)
        return response

    async def txn(self, request: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        self._check()
        ok = all(
            (c.key in self.kvs) == (c.create_revision != 0)
            for c in request.compare
            if c.target == rpc_pb2.Compare.CREATE
        )
        responses = []
        for op in request.success if ok else request.failure:
            if op.HasField("request_put"):
                put = self._put(op.request_put)
                put.header.Clear()
                put.header.revision = self.revision
                responses.append(rpc_pb2.ResponseOp(response_put=put))
            elif op.HasField("request_range"):
                got = await self.range(op.request_range)
                got.header.Clear()
                got.header.revision = self.revision
                responses.append(rpc_pb2.ResponseOp(response_range=got))
        return rpc_pb2.TxnResponse(header=self.header(), succeeded=ok, responses=responses)

    async def compact(self, request: rpc_pb2.CompactionRequest) -> rpc_pb2.CompactionResponse:
        self._check()
        if request.revision <= self.compacted:
            raise EtcdError(
                StatusCode.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted"
            )
        self.compacted = request.revision
        return rpc_pb2.CompactionResponse(header=self.header())

    # Lease
    async def lease_grant(self, request: rpc_pb2.LeaseGrantRequest) -> rpc_pb2.LeaseGrantResponse:
        self._check()
        lease_id = request.ID or 7587810000000000000 + len(self.leases)
        self.leases[lease_id] = request.TTL
        return rpc_pb2.LeaseGrantResponse(header=self.header(), ID=lease_id, TTL=request.TTL)

    async def lease_revoke(
        self, request: rpc_pb2.LeaseRevokeRequest
    ) -> rpc_pb2.LeaseRevokeResponse:
        self._check()
        if self.leases.pop(request.ID, None) is None:
            raise EtcdError(StatusCode.NOT_FOUND, LEASE_NOT_FOUND)
        return rpc_pb2.LeaseRevokeResponse(header=self.header())

    async def lease_time_to_live(
        self, request: rpc_pb2.LeaseTimeToLiveRequest
    ) -> rpc_pb2.LeaseTimeToLiveResponse:
        self._check()
        ttl = self.leases.get(request.ID)
        if ttl is None:
            return rpc_pb2.LeaseTimeToLiveResponse(header=self.header(), ID=request.ID, TTL=-1)
        keys = [k for k, kv in self.kvs.items() if kv.lease == request.ID] if request.keys else []
        return rpc_pb2.LeaseTimeToLiveResponse(
            header=self.header(), ID=request.ID, TTL=ttl, grantedTTL=ttl, keys=keys
        )

    async def lease_leases(
        self, request: rpc_pb2.LeaseLeasesRequest
    ) -> rpc_pb2.LeaseLeasesResponse:
        self._check()
        return rpc_pb2.LeaseLeasesResponse(
            header=self.header(),
            leases=[rpc_pb2.LeaseStatus(ID=i) for i in sorted(self.leases)],
        )

    async def lease_keep_alive(
        self, request: rpc_pb2.LeaseKeepAliveRequest
    ) -> rpc_pb2.LeaseKeepAliveResponse:
        self._check()
        ttl = self.leases.get(request.ID, 0)
        return rpc_pb2.LeaseKeepAliveResponse(header=self.header(), ID=request.ID, TTL=ttl)

    # Cluster
    async def member_list(self, request: rpc_pb2.MemberListRequest) -> rpc_pb2.MemberListResponse:
        self._check()
        header = self.header(revision=0)
        return rpc_pb2.MemberListResponse(
            header=header,
            members=[
                rpc_pb2.Member(
                    ID=MEMBER_ID,
                    name="p",
                    peerURLs=["http://127.0.0.1:23800"],
                    clientURLs=["http://127.0.0.1:23790"],
                )
            ],
        )

    async def member_add(self, request: rpc_pb2.MemberAddRequest) -> rpc_pb2.MemberAddResponse:
        raise EtcdError(StatusCode.UNIMPLEMENTED, "synod: adding members is not supported yet")

    async def member_remove(
        self, request: rpc_pb2.MemberRemoveRequest
    ) -> rpc_pb2.MemberRemoveResponse:
        raise EtcdError(StatusCode.NOT_FOUND, "etcdserver: member not found")

    async def member_update(
        self, request: rpc_pb2.MemberUpdateRequest
    ) -> rpc_pb2.MemberUpdateResponse:
        raise EtcdError(StatusCode.NOT_FOUND, "etcdserver: member not found")

    async def member_promote(
        self, request: rpc_pb2.MemberPromoteRequest
    ) -> rpc_pb2.MemberPromoteResponse:
        raise EtcdError(StatusCode.NOT_FOUND, "etcdserver: member not found")

    # Maintenance
    async def status(self, request: rpc_pb2.StatusRequest) -> rpc_pb2.StatusResponse:
        self._check()
        return rpc_pb2.StatusResponse(
            header=self.header(),
            version="3.4.23",
            dbSize=20480,
            leader=self.leader,
            raftIndex=19,
            raftTerm=2,
            raftAppliedIndex=19,
            dbSizeInUse=16384,
        )

    async def alarm(self, request: rpc_pb2.AlarmRequest) -> rpc_pb2.AlarmResponse:
        self._check()
        return rpc_pb2.AlarmResponse(alarms=self.alarms)

    async def defragment(self, request: rpc_pb2.DefragmentRequest) -> rpc_pb2.DefragmentResponse:
        self._check()
        return rpc_pb2.DefragmentResponse()

    async def hash(self, request: rpc_pb2.HashRequest) -> rpc_pb2.HashResponse:
        self._check()
        return rpc_pb2.HashResponse(header=self.header(), hash=588939844)

    async def hash_kv(self, request: rpc_pb2.HashKVRequest) -> rpc_pb2.HashKVResponse:
        self._check()
        return rpc_pb2.HashKVResponse(header=self.header(), hash=1, compact_revision=0)

    async def snapshot(
        self, request: rpc_pb2.SnapshotRequest
    ) -> AsyncIterator[rpc_pb2.SnapshotResponse]:
        self._check()
        yield rpc_pb2.SnapshotResponse(header=self.header(), remaining_bytes=3, blob=b"abc")
        yield rpc_pb2.SnapshotResponse(header=self.header(), remaining_bytes=0, blob=b"def")

    async def move_leader(self, request: rpc_pb2.MoveLeaderRequest) -> rpc_pb2.MoveLeaderResponse:
        raise EtcdError(StatusCode.FAILED_PRECONDITION, "etcdserver: bad leader transferee")

    def open_watch(self) -> FakeWatch:
        watch = FakeWatch(self)
        self.watches.append(watch)
        return watch


# ---------------------------------------------------------------------------- harness


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


HEADER = {
    "cluster_id": str(CLUSTER_ID),
    "member_id": str(MEMBER_ID),
    "raft_term": "2",
}


def header(revision: int) -> dict[str, str]:
    return {**HEADER, "revision": str(revision)} if revision else dict(HEADER)


Scenario = Callable[[TestClient[Any, Any], FakeHandlers], Awaitable[None]]


def run(scenario: Scenario, fake: FakeHandlers | None = None, **options: Any) -> None:
    fake = fake if fake is not None else FakeHandlers()

    async def main() -> None:
        app = build_gateway(fake, VersionInfo("3.4.23", "3.4.0"), None, **options)
        async with TestClient(TestServer(app)) as client:
            await scenario(client, fake)

    asyncio.run(main())


async def post(
    client: TestClient[Any, Any], path: str, body: Any = None, raw: bytes | None = None
) -> tuple[int, Any, aiohttp.ClientResponse]:
    data = raw if raw is not None else json.dumps(body if body is not None else {}).encode()
    response = await client.post(path, data=io.BytesIO(data) if len(data) > 65536 else data)
    text = await response.text()
    return response.status, json.loads(text) if text else None, response


# ---------------------------------------------------------------------------- KV


def test_put_range_json_mapping() -> None:
    async def scenario(client: TestClient[Any, Any], fake: FakeHandlers) -> None:
        status, body, response = await post(
            client, "/v3/kv/put", {"key": b64(b"a"), "value": b64(b"1")}
        )
        assert status == 200 and response.content_type == "application/json"
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert body == {"header": header(2)}  # no prev_kv, nothing else

        status, body, _ = await post(client, "/v3/kv/range", {"key": b64(b"a")})
        assert status == 200
        assert body == {
            "header": header(2),
            "kvs": [
                {
                    "key": "YQ==",
                    "create_revision": "2",
                    "mod_revision": "2",
                    "version": "1",
                    "value": "MQ==",
                }
            ],
            "count": "1",
        }
        # a missing key: only the header (kvs and count 0 omitted)
        status, body, _ = await post(client, "/v3/kv/range", {"key": b64(b"zz")})
        assert body == {"header": header(2)}
        # an empty value is omitted from the kv, int64 fields given as JSON numbers work
        await post(client, "/v3/kv/put", {"key": b64(b"e"), "value": ""})
        status, body, _ = await post(client, "/v3/kv/range", {"key": b64(b"e"), "limit": 5})
        assert status == 200 and "value" not in body["kvs"][0]
        # camelCase JSON names and enum names or numbers are accepted, as by etcd
        for extra in ({"rangeEnd": b64(b"f")}, {"sort_order": "DESCEND"}, {"sort_order": 2}):
            status, body, _ = await post(client, "/v3/kv/range", {"key": b64(b"e"), **extra})
            assert status == 200, extra

    run(scenario)


def test_v3beta_alias_and_put_prev_kv() -> None:
    async def scenario(client: TestClient[Any, Any], fake: FakeHandlers) -> None:
        await post(client, "/v3beta/kv/put", {"key": b64(b"k"), "value": b64(b"v1")})
        status, body, _ = await post(
            client, "/v3beta/kv/put", {"key": b64(b"k"), "value": b64(b"v2"), "prev_kv": True}
        )
        assert status == 200
        assert body["prev_kv"] == {
            "key": b64(b"k"),
            "create_revision": "2",
            "mod_revision": "2",
            "version": "1",
            "value": b64(b"v1"),
        }
        status, body, _ = await post(
            client, "/v3/kv/deleterange", {"key": b64(b"k"), "prev_kv": True}
        )
        assert body["deleted"] == "1" and body["prev_kvs"][0]["value"] == b64(b"v2")

    run(scenario)


def test_txn_shapes() -> None:
    async def scenario(client: TestClient[Any, Any], fake: FakeHandlers) -> None:
        txn = {
            "compare": [
                {"key": b64(b"L"), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}
            ],
            "success": [{"request_put": {"key": b64(b"L"), "value": b64(b"me")}}],
            "failure": [{"request_range": {"key": b64(b"L")}}],
        }
        status, body, _ = await post(client, "/v3/kv/txn", txn)
        assert status == 200
        assert body == {
            "header": header(2),
            "succeeded": True,
            "responses": [{"response_put": {"header": {"revision": "2"}}}],
        }
        status, body, _ = await post(client, "/v3/kv/txn", txn)
        assert "succeeded" not in body  # false is omitted
        assert body["responses"][0]["response_range"]["kvs"][0]["value"] == b64(b"me")

    run(scenario)


def test_compaction_errors() -> None:
    async def scenario(client: TestClient[Any, Any], fake: FakeHandlers) -> None:
        fake.revision = 10
        status, body, _ = await post(client, "/v3/kv/compaction", {"revision": "3"})
        assert (status, body) == (200, {"header": header(10)})
        status, body, _ = await post(client, "/v3/kv/compaction", {"revision": "3"})
        message = "etcdserver: mvcc: required revision has been compacted"
        assert status == 400
        assert body == {"error": message, "message": message, "code": 11}

    run(scenario)


# ---------------------------------------------------------------------------- errors


def test_error_bodies_and_statuses() -> None:
    async def scenario(client: TestClient[Any, Any], fake: FakeHandlers) -> None:
        status, body, response = await post(
            client, "/v3/kv/put", {"key": b64(b"a"), "value": "", "lease": "12345"}
        )
        assert status == 404 and response.content_type == "application/json"
        assert body == {"error": LEASE_NOT_FOUND, "message": LEASE_NOT_FOUND, "code": 5}

        status, body, _ = await post(client, "/v3/kv/range", {"key": "YQ==", "revision": "1000"})
        assert status == 400 and body["code"] == 11
        assert body["error"] == "etcdserver: mvcc: required revision is a future revision"

        status, body, _ = await post(client, "/v3/maintenance/transfer-leadership", {"targetID": 5})
        assert status == 412 and body["code"] == 9  # grpc-gateway v1: FAILED_PRECONDITION

        status, body, _ = await post(client, "/v3/cluster/member/add", {"peerURLs": ["x"]})
        assert status == 501 and body["code"] == 12

        for code, http in ((14, 503), (4, 504), (13, 500), (8, 429), (2, 500)):
            fake.failure = EtcdError(code, "boom")
            status, body, _ = await post(client, "/v3/kv/range", {"key": "YQ=="})
            assert (status, body) == (http, {"error": "boom", "message": "boom", "code": code})
        fake.failure = None

    run(scenario)


def test_bad_request_bodies() -> None:
    async def scenario(client: TestClient[Any, Any], fake: FakeHandlers) -> None:
        bad = [
            b'{"key":',  # broken JSON
            b"[]",  # not an object
            b'{"key":"YQ==","limit":"abc"}',
            b'{"key":"YQ==","limit":1.5}',
            b'{"key":"YQ==","serializable":"true"}',
            b'{"key":"YQ==","sort_order":"BOGUS"}',
            b'{"key":"not base64!"}',
            b"\xff\xfe",
        ]
        for raw in bad:
            status, body, _ = await post(client, "/v3/kv/range", raw=raw)
            assert status == 400, raw
            assert body["code"] == 3 and body["error"] == body["message"] and body["error"], raw
        status, body, _ = await post(client, "/v3/kv/range", raw=b'{"key":')
        assert body["error"] == "unexpected EOF"
        # unknown fields are ignored, as etcd's gateway does
        status, body, _ = await post(
            client,
            "/v3/kv/txn",
            {"bogus": 1, "success": [{"request_put": {"key": "YQ==", "nope": [1]}, "x": 2}]},
        )
        assert status == 200 and body["succeeded"]
        # an empty body or null is the empty request (here refused by the handler)
        for raw in (b"", b"null"):
            status, body, _ = await post(client, "/v3/kv/range", raw=raw)
            assert status == 400 and body["error"] == "etcdserver: key is not provided"

    run(scenario)


def test_unknown_path_and_method() -> None:
    async def scenario(client: TestClient[Any, Any], fake: FakeHandlers) -> None:
        response = await client.post("/v3/kv/nothing", data=b"{}")
        assert response.status == 404
        response = await client.get("/v3/kv/range")
        assert response.status == 405
        response = await client.post("/v3/auth/authenticate", data=b"{}")
        assert response.status == 501 and (await response.json())["code"] == 12

    run(scenario)


def test_unexpected_handler_exception_is_unknown() -> None:
    class Broken(FakeHandlers):
        async def hash(self, request: rpc_pb2.HashRequest) -> rpc_pb2.HashResponse:
            raise RuntimeError("oops")

    async def scenario(client: TestClient[Any, Any], fake: FakeHandlers) -> None:
        status, body, _ = await post(client, "/v3/maintenance/hash", {})
        assert status == 500 and body["code"] == 2

    run(scenario, Broken())


def test_request_too_large() -> None:
    async def scenario(client: TestClient[Any, Any], fake: FakeHandlers) -> None:
        big = {"key": b64(b"k"), "value": b64(bytes(7 * 1024 * 1024))}
        status, body, _ = await post(client, "/v3/kv/put", big)
        assert status == 400 and body["error"] == "etcdserver: request is too large"

    run(scenario)


# ---------------------------------------------------------------------------- lease


def test_lease_paths() -> None:
    async def scenario(client: TestClient[Any, Any], fake: FakeHandlers) -> None:
        status, body, _ = await post(client, "/v3/lease/grant", {"TTL": 30, "ID": "7587"})
        assert body == {"header": header(1), "ID": "7587", "TTL": "30"}
        status, body, _ = await post(client, "/v3/lease/timetolive", {"ID": "7587"})
        assert body == {"header": header(1), "ID": "7587", "TTL": "30", "grantedTTL": "30"}
        status, body, _ = await post(client, "/v3/kv/lease/timetolive", {"ID": "999"})
        assert body == {"header": header(1), "ID": "999", "TTL": "-1"}
        for path in ("/v3/lease/leases", "/v3/kv/lease/leases"):
            status, body, _ = await post(client, path, {})
            assert body == {"header": header(1), "leases": [{"ID": "7587"}]}
        status, body, _ = await post(client, "/v3/kv/lease/revoke", {"ID": "7587"})
        assert (status, body) == (200, {"header": header(1)})
        status, body, _ = await post(client, "/v3/lease/revoke", {"ID": "7587"})
        assert status == 404 and body["error"] == LEASE_NOT_FOUND

    run(scenario)


def test_keepalive_answered_once() -> None:
    async def scenario(client: TestClient[Any, Any], fake: FakeHandlers) -> None:
        await post(client, "/v3/lease/grant", {"TTL": 20, "ID": "42"})
        response = await client.post("/v3/lease/keepalive", data=b'{"ID":"42"}')
        raw = await response.read()
        assert response.status == 200 and raw.endswith(b"}\n")
        assert json.loads(raw) == {"result": {"header": header(1), "ID": "42", "TTL": "20"}}
        # unknown lease: HTTP 200, no TTL field at all (Patroni's test for a lost lease)
        status, body, _ = await post(client, "/v3/lease/keepalive", {"ID": "999"})
        assert status == 200
        assert body == {"result": {"header": header(1), "ID": "999"}}
        # an error is a stream error, with the HTTP status of its code
        fake.failure = EtcdError(StatusCode.UNAVAILABLE, "etcdserver: no leader")
        status, body, _ = await post(client, "/v3/lease/keepalive", {"ID": "42"})
        assert status == 503
        assert body == {
            "error": {
                "grpc_code": 14,
                "http_code": 503,
                "message": "etcdserver: no leader",
                "http_status": "Service Unavailable",
            }
        }
        fake.failure = None
        # a broken body on a stream is code 2, HTTP 500 (as etcd)
        status, body, _ = await post(client, "/v3/lease/keepalive", raw=b'{"ID":')
        assert status == 500 and body["code"] == 2

    run(scenario)


def test_keepalive_negative_ttl_omitted() -> None:
    class Dead(FakeHandlers):
        async def lease_keep_alive(
            self, request: rpc_pb2.LeaseKeepAliveRequest
        ) -> rpc_pb2.LeaseKeepAliveResponse:
            return rpc_pb2.LeaseKeepAliveResponse(header=self.header(), ID=request.ID, TTL=-1)

    async def scenario(client: TestClient[Any, Any], fake: FakeHandlers) -> None:
        _, body, _ = await post(client, "/v3/lease/keepalive", {"ID": "5"})
        assert "TTL" not in body["result"]

    run(scenario, Dead())


# ---------------------------------------------------------------------------- cluster, maintenance


def test_cluster_and_maintenance_shapes() -> None:
    async def scenario(client: TestClient[Any, Any], fake: FakeHandlers) -> None:
        status, body, _ = await post(client, "/v3/cluster/member/list", {})
        assert body == {
            "header": header(0),
            "members": [
                {
                    "ID": str(MEMBER_ID),
                    "name": "p",
                    "peerURLs": ["http://127.0.0.1:23800"],
                    "clientURLs": ["http://127.0.0.1:23790"],
                }
            ],
        }
        for path in ("remove", "update", "promote"):
            status, body, _ = await post(client, f"/v3/cluster/member/{path}", {"ID": "5"})
            assert status == 404 and body["error"] == "etcdserver: member not found"
        status, body, _ = await post(client, "/v3/maintenance/status", {})
        assert body == {
            "header": header(1),
            "version": "3.4.23",
            "dbSize": "20480",
            "leader": str(MEMBER_ID),
            "raftIndex": "19",
            "raftTerm": "2",
            "raftAppliedIndex": "19",
            "dbSizeInUse": "16384",
        }
        status, body, _ = await post(client, "/v3/maintenance/alarm", {"action": "GET"})
        assert (status, body) == (200, {})
        status, body, _ = await post(client, "/v3/maintenance/defragment", {})
        assert (status, body) == (200, {})
        status, body, _ = await post(client, "/v3/maintenance/hash", {})
        assert body == {"header": header(1), "hash": 588939844}  # uint32: a JSON number
        status, body, _ = await post(client, "/v3/maintenance/hashkv", {})
        assert body == {"header": header(1), "hash": 1}

    run(scenario)


def test_snapshot_stream() -> None:
    async def scenario(client: TestClient[Any, Any], fake: FakeHandlers) -> None:
        response = await client.post("/v3/maintenance/snapshot", data=b"{}")
        assert response.status == 200
        assert response.headers.get("Transfer-Encoding") == "chunked"
        lines = (await response.read()).decode().splitlines()
        assert [json.loads(line) for line in lines] == [
            {"result": {"header": header(1), "remaining_bytes": "3", "blob": b64(b"abc")}},
            {"result": {"header": header(1), "blob": b64(b"def")}},
        ]

    run(scenario)


# ---------------------------------------------------------------------------- watch


async def read_chunk(response: aiohttp.ClientResponse) -> Any:
    line = await asyncio.wait_for(response.content.readline(), 5)
    assert line.endswith(b"\n"), line
    return json.loads(line)


def test_watch_stream() -> None:
    async def scenario(client: TestClient[Any, Any], fake: FakeHandlers) -> None:
        response = await client.post(
            "/v3/watch", data=b'{"create_request":{"key":"YQ==","prev_kv":true}}'
        )
        assert response.status == 200
        assert response.headers.get("Transfer-Encoding") == "chunked"
        assert await read_chunk(response) == {"result": {"header": header(1), "created": True}}
        await post(client, "/v3/kv/put", {"key": "YQ==", "value": "MQ=="})
        event = await read_chunk(response)
        assert event == {
            "result": {
                "header": header(2),
                "events": [
                    {
                        "kv": {
                            "key": "YQ==",
                            "create_revision": "2",
                            "mod_revision": "2",
                            "version": "1",
                            "value": "MQ==",
                        }
                    }
                ],
            }
        }  # a PUT event has no "type", watch_id 0 is omitted
        await post(client, "/v3/kv/deleterange", {"key": "YQ=="})
        event = await read_chunk(response)
        assert event["result"]["events"] == [
            {"type": "DELETE", "kv": {"key": "YQ==", "mod_revision": "3"}}
        ]
        watch = fake.watches[0]
        assert not watch.closed
        response.close()
        for _ in range(100):
            if watch.closed:
                break
            await asyncio.sleep(0.05)
        assert watch.closed

    run(scenario)


def test_watch_compacted_and_several_requests_in_one_body() -> None:
    async def scenario(client: TestClient[Any, Any], fake: FakeHandlers) -> None:
        fake.compacted = 3
        body = (
            b'{"create_request":{"key":"YQ==","start_revision":"2"}}\n'
            b'{"create_request":{"key":"Yg=="}}'
        )
        response = await client.post("/v3/watch", data=body)
        created = await read_chunk(response)
        assert created["result"]["created"] is True
        canceled = await read_chunk(response)
        assert canceled == {
            "result": {"header": header(0), "canceled": True, "compact_revision": "3"}
        }
        second = await read_chunk(response)
        assert second["result"] == {"header": header(1), "created": True}
        assert len(fake.watches[0].requests) == 2
        response.close()

    run(scenario)


def test_watch_error_before_and_inside_stream() -> None:
    async def scenario(client: TestClient[Any, Any], fake: FakeHandlers) -> None:
        # broken JSON before anything was sent: HTTP 500, code 2 (as etcd)
        response = await client.post("/v3/watch", data=b'{"create_request":{"key":"Yg=="')
        assert response.status == 500
        assert (await response.json())["code"] == 2
        # an error after the first chunk: an error chunk, then the end of the stream
        response = await client.post("/v3/watch", data=b'{"create_request":{"key":"YQ=="}}')
        assert (await read_chunk(response))["result"]["created"]
        fake.watch_failure = EtcdError(StatusCode.UNAVAILABLE, "etcdserver: no leader")
        fake.watches[-1].close()
        rest = await asyncio.wait_for(response.read(), 5)
        assert json.loads(rest) == {
            "error": {
                "grpc_code": 14,
                "http_code": 503,
                "message": "etcdserver: no leader",
                "http_status": "Service Unavailable",
            }
        }

    run(scenario)


def test_watch_error_first_sets_status() -> None:
    class NoLeaderWatch(FakeHandlers):
        def open_watch(self) -> FakeWatch:
            watch = super().open_watch()
            self.watch_failure = EtcdError(StatusCode.UNAVAILABLE, "etcdserver: no leader")
            watch.close()
            return watch

    async def scenario(client: TestClient[Any, Any], fake: FakeHandlers) -> None:
        response = await client.post("/v3/watch", data=b'{"create_request":{"key":"YQ=="}}')
        assert response.status == 503
        body = await response.json()
        assert body["error"]["grpc_code"] == 14

    run(scenario, NoLeaderWatch())


# ---------------------------------------------------------------------------- plain GETs


def test_version() -> None:
    async def scenario(client: TestClient[Any, Any], fake: FakeHandlers) -> None:
        for data in (None, b"{}"):
            response = await client.get("/version", data=data)
            assert response.status == 200 and response.content_type == "application/json"
            assert await response.read() == b'{"etcdserver":"3.4.23","etcdcluster":"3.4.0"}'
        assert (await client.post("/version", data=b"{}")).status == 405

    run(scenario)


def test_health() -> None:
    async def scenario(client: TestClient[Any, Any], fake: FakeHandlers) -> None:
        response = await client.get("/health")
        assert response.status == 200
        assert await response.read() == b'{"health":"true"}'
        fake.leader = 0
        response = await client.get("/health")
        assert response.status == 503 and await response.read() == b'{"health":"false"}'
        fake.leader = MEMBER_ID
        fake.alarms = [rpc_pb2.AlarmMember(memberID=1, alarm=rpc_pb2.NOSPACE)]
        assert (await client.get("/health")).status == 503
        fake.alarms = []
        fake.range_delay = 3.0  # the quorum read must answer within a second
        assert (await client.get("/health")).status == 503

    run(scenario)


def test_health_uses_has_leader_when_given() -> None:
    leader = [False]

    async def scenario(client: TestClient[Any, Any], fake: FakeHandlers) -> None:
        assert (await client.get("/health")).status == 503
        leader[0] = True
        assert (await client.get("/health")).status == 200

    run(scenario, has_leader=lambda: leader[0])


def test_metrics_page() -> None:
    metrics = SynodMetrics()
    metrics.observe_fsync(0.002)

    async def main() -> None:
        app = build_gateway(FakeHandlers(), VersionInfo(), metrics)
        async with TestClient(TestServer(app)) as client:
            response = await client.get("/metrics")
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            text = await response.text()
            assert "etcd_disk_wal_fsync_duration_seconds_count 1.0" in text

            app2 = build_gateway(FakeHandlers(), VersionInfo(), None)
            async with TestClient(TestServer(app2)) as other:
                assert (await other.get("/metrics")).status == 404

    asyncio.run(main())


# ---------------------------------------------------------------------------- mapping unit


def test_http_status_mapping() -> None:
    assert jm.http_status(StatusCode.NOT_FOUND) == 404
    assert jm.http_status(5) == 404
    assert jm.http_status(StatusCode.FAILED_PRECONDITION) == 412
    assert jm.http_status(StatusCode.OUT_OF_RANGE) == 400
    assert jm.http_status(StatusCode.UNIMPLEMENTED) == 501
    assert jm.http_status(99) == 500


def test_grpc_status_code_accepted() -> None:
    import grpc

    assert jm.code_number(grpc.StatusCode.UNAVAILABLE) == 14
    assert jm.http_status(grpc.StatusCode.DEADLINE_EXCEEDED) == 504


def test_event_type_and_int64() -> None:
    event = kv_pb2.Event(type=kv_pb2.Event.DELETE, kv=kv_pb2.KeyValue(key=b"\x00\xff", lease=-1))
    assert jm.message_dict(event) == {"type": "DELETE", "kv": {"key": "AP8=", "lease": "-1"}}
    assert jm.parse_request(b'{"key":"AP8=","lease":-1}', kv_pb2.KeyValue()).lease == -1


# ---------------------------------------------------------------------------- metrics


def sample(**changes: Any) -> MemberSample:
    values: dict[str, Any] = {
        "member_id": 0xABC,
        "leader_id": 0xABC,
        "is_leader": True,
        "ballot_round": 7,
        "commit_slot": 120,
        "applied_slot": 118,
        "last_slot": 125,
        "leader_changes": 2,
        "proposals_received": 50,
        "proposals_failed": 1,
        "proposals_pending": 5,
        "bytes_received": 1000,
        "bytes_sent": 2000,
        "watchers": 3,
        "leases": 4,
        "keys": 9,
        "db_size_bytes": 4096,
        "peers": (
            PeerSample(peer_id=0xB, connected=True, lag_slots=0, round_trip_seconds=0.001),
            PeerSample(peer_id=0xC, connected=False, lag_slots=40),
        ),
    }
    values.update(changes)
    return MemberSample(**values)


def test_metrics_from_sample_and_events() -> None:
    metrics = SynodMetrics(lambda: sample(), process=False)
    metrics.observe_fsync(0.003)
    metrics.observe_proposal(0.0005)
    metrics.observe_apply(0.00002)
    metrics.observe_snapshot_save(0.2)
    metrics.observe_snapshot_install(1.5)
    v = metrics.value
    assert v("etcd_server_has_leader") == 1 and v("etcd_server_is_leader") == 1
    assert v("etcd_server_leader_changes_seen_total") == 2
    assert v("etcd_server_proposals_committed_total") == 120
    assert v("etcd_server_proposals_applied_total") == 118
    assert v("etcd_server_proposals_pending") == 5
    assert v("etcd_server_proposals_failed_total") == 1
    assert v("synod_proposals_received_total") == 50
    assert v("synod_ballot_round") == 7 and v("synod_apply_lag_slots") == 2
    assert v("synod_peer_lag_slots", {"peer": "c"}) == 40
    assert v("synod_peer_connected", {"peer": "b"}) == 1
    assert v("synod_peer_round_trip_seconds", {"peer": "b"}) == 0.001
    assert v("synod_peer_round_trip_seconds", {"peer": "c"}) is None
    assert v("etcd_debugging_mvcc_keys_total") == 9
    assert v("etcd_debugging_mvcc_watcher_total") == 3
    assert v("etcd_mvcc_db_total_size_in_bytes") == 4096
    assert v("etcd_server_id", {"server_id": "abc"}) == 1
    assert v("etcd_disk_wal_fsync_duration_seconds_count") == 1
    assert v("etcd_disk_wal_fsync_duration_seconds_bucket", {"le": "0.004"}) == 1
    assert v("synod_snapshot_install_duration_seconds_count") == 1
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    assert b"# TYPE etcd_server_leader_changes_seen_total counter" in body


def test_metrics_registries_are_separate_and_robust() -> None:
    leaderless = SynodMetrics(lambda: sample(leader_id=0, is_leader=False, keys=None))
    other = SynodMetrics()  # same names, its own registry: no collision
    leaderless.observe_fsync(0.1)
    assert other.value("etcd_disk_wal_fsync_duration_seconds_count") == 0
    assert other.value("etcd_server_has_leader") is None  # no sampler: no member state
    assert leaderless.value("etcd_server_has_leader") == 0
    assert leaderless.value("etcd_debugging_mvcc_keys_total") is None
    assert b"process_cpu_seconds_total" in leaderless.render()[0]

    def broken() -> MemberSample:
        raise RuntimeError("member gone")

    other.set_sampler(broken)
    body, _ = other.render()  # a failing sampler leaves the rest of the page intact
    assert b"etcd_disk_wal_fsync_duration_seconds" in body
    assert b"etcd_server_has_leader" not in body


def test_watch_refusals() -> None:
    class Refusing(FakeHandlers):
        def open_watch(self) -> FakeWatch:
            if len(self.watches) >= 1:
                raise EtcdError(StatusCode.RESOURCE_EXHAUSTED, "too many watch streams")
            watch = super().open_watch()
            original = watch.handle

            async def handle(request: rpc_pb2.WatchRequest) -> None:
                if request.create_request.key == b"bad":
                    raise EtcdError(StatusCode.INVALID_ARGUMENT, "bad watch")
                await original(request)

            watch.handle = handle  # type: ignore[method-assign]
            return watch

    async def scenario(client: TestClient[Any, Any], fake: FakeHandlers) -> None:
        body = b'{"create_request":{"key":"YmFk"}}'  # "bad"
        response = await client.post("/v3/watch", data=body)
        assert response.status == 400
        assert (await response.json())["error"]["message"] == "bad watch"
        assert fake.watches[0].closed
        response = await client.post("/v3/watch", data=b'{"create_request":{"key":"YQ=="}}')
        assert response.status == 429
        assert (await response.json())["error"]["grpc_code"] == 8

    run(scenario, Refusing())


def test_watch_garbage_after_first_request_keeps_stream() -> None:
    async def scenario(client: TestClient[Any, Any], fake: FakeHandlers) -> None:
        body = b'{"create_request":{"key":"YQ=="}} {"create_req'
        response = await client.post("/v3/watch", data=body)
        assert response.status == 200
        assert (await read_chunk(response))["result"]["created"] is True
        await post(client, "/v3/kv/put", {"key": "YQ==", "value": "MQ=="})
        assert (await read_chunk(response))["result"]["events"][0]["kv"]["value"] == "MQ=="
        response.close()

    run(scenario)


def test_member_sampler_on_a_three_member_cluster(tmp_path: Any) -> None:
    import socket

    from synod.api.metrics import member_sampler
    from synod.paxos.config import Config as CoreConfig
    from synod.server.config import ServerConfig, Url, parse_initial_cluster
    from synod.server.kv_service import KvService
    from synod.server.member import Member

    async def main() -> None:
        socks = [socket.socket() for _ in range(3)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        ports = [s.getsockname()[1] for s in socks]
        for s in socks:
            s.close()
        text = ",".join(f"m{i}=http://127.0.0.1:{p}" for i, p in enumerate(ports))
        cluster = parse_initial_cluster(text, "metrics")
        members = []
        for i in range(3):
            config = ServerConfig(
                name=f"m{i}",
                data_dir=str(tmp_path / f"m{i}"),
                listen_client_urls=(Url("http", "127.0.0.1", 1),),
                advertise_client_urls=(Url("http", "127.0.0.1", 1),),
                listen_peer_url=cluster[i].peer_url,
                initial_cluster=cluster,
                initial_cluster_token="metrics",
                tick_ms=20,
                core=CoreConfig(heartbeat_ticks=1, election_ticks=10),
            )
            members.append((Member(config, KvService(election_timeout_ms=200)), config))
        for member, _ in members:
            await member.start()
        try:
            leader = None
            for _ in range(300):
                leaders = [m for m, _ in members if m.is_leader]
                if leaders and all(m.leader_id == leaders[0].member_id for m, _ in members):
                    leader = leaders[0]
                    break
                await asyncio.sleep(0.02)
            assert leader is not None
            service = leader.service
            assert isinstance(service, KvService)
            metrics = SynodMetrics(member_sampler(leader, service), process=False)
            follower = next(m for m, _ in members if m is not leader)
            follower_metrics = SynodMetrics(member_sampler(follower), process=False)
            await asyncio.sleep(0.2)  # heartbeats: peers connected, match slots known
            v = metrics.value
            assert v("etcd_server_is_leader") == 1 and v("etcd_server_has_leader") == 1
            peers = [f"{m.member_id:x}" for m, _ in members if m is not leader]
            for peer in peers:
                assert v("synod_peer_connected", {"peer": peer}) == 1
                lag = v("synod_peer_lag_slots", {"peer": peer})
                assert lag is not None and lag >= 0
            assert (v("synod_peer_received_bytes_total") or 0) > 0
            assert v("etcd_debugging_mvcc_keys_total") == 0
            assert follower_metrics.value("etcd_server_is_leader") == 0
            assert follower_metrics.value("etcd_server_has_leader") == 1
            assert follower_metrics.value("synod_peer_lag_slots", {"peer": peers[0]}) is None
        finally:
            for member, _ in members:
                await member.stop()

    asyncio.run(main())


def test_loop_histograms_scrape_like_prometheus_client_histograms() -> None:
    """Goal: the lock-free histograms of the write path (synod_proposal_duration_seconds,
    synod_apply_duration_seconds) expose exactly the samples a prometheus_client Histogram
    with the same buckets would (names, `le` labels, counts, sum), so dashboards and alerts
    read them unchanged. Method: the same observations, including values on bucket bounds
    and above the last bound, into both; compare every sample but `_created`."""
    from prometheus_client import CollectorRegistry, Histogram

    from synod.api.metrics import REQUEST_BUCKETS

    metrics = SynodMetrics(process=False)
    registry = CollectorRegistry()
    reference = Histogram(
        "synod_proposal_duration_seconds", "x", buckets=REQUEST_BUCKETS, registry=registry
    )
    for seconds in (0.00005, 0.0001, 0.00015, 0.0032, 0.5, 3.2768, 100.0):
        metrics.observe_proposal(seconds)
        reference.observe(seconds)

    def samples(collected: object) -> dict[tuple[str, str], float]:
        return {
            (s.name, s.labels.get("le", "")): s.value
            for family in collected  # type: ignore[attr-defined]
            for s in family.samples
            if family.name == "synod_proposal_duration_seconds" and not s.name.endswith("_created")
        }

    ours = samples(metrics.registry.collect())
    assert ours == samples(registry.collect())
    assert ours[("synod_proposal_duration_seconds_count", "")] == 7
    assert metrics.value("synod_proposal_duration_seconds_bucket", {"le": "0.0001"}) == 2
    assert metrics.value("synod_proposal_duration_seconds_created") is not None
