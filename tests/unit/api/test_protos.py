"""The generated etcd v3 stubs: they import, and they match etcd 3.4's wire contract.

etcd34_wire_facts.json lists every message field (name, number, type, label, oneof),
every enum value and every RPC of etcd 3.4's own .proto files, extracted with protoc from
etcd's v3.4.45 sources (gogoproto and HTTP options dropped; those do not reach the wire).
The hand-written checks below repeat the most load-bearing facts so a reader sees them.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from synod.api.proto.authpb import auth_pb2
from synod.api.proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from synod.api.proto.mvccpb import kv_pb2
from synod.api.proto.v3electionpb import v3election_pb2, v3election_pb2_grpc
from synod.api.proto.v3lockpb import v3lock_pb2, v3lock_pb2_grpc

ROOT = Path(__file__).resolve().parents[3]
FACTS = json.loads((Path(__file__).with_name("etcd34_wire_facts.json")).read_text())
FILES = {
    "etcdserverpb": rpc_pb2.DESCRIPTOR,
    "mvccpb": kv_pb2.DESCRIPTOR,
    "authpb": auth_pb2.DESCRIPTOR,
    "v3lockpb": v3lock_pb2.DESCRIPTOR,
    "v3electionpb": v3election_pb2.DESCRIPTOR,
}

_TYPE_NAMES = {
    v: k.removeprefix("TYPE_").lower() for k, v in descriptor_pb2.FieldDescriptorProto.Type.items()
}


def _all_messages() -> dict[str, Descriptor]:
    out: dict[str, Descriptor] = {}

    def walk(d: Descriptor) -> None:
        out[d.full_name] = d
        for n in d.nested_types:
            walk(n)

    for f in FILES.values():
        for d in f.message_types_by_name.values():
            walk(d)
    return out


def _all_enums() -> dict[str, EnumDescriptor]:
    out: dict[str, EnumDescriptor] = {}
    for f in FILES.values():
        for e in f.enum_types_by_name.values():
            out[e.full_name] = e
    for d in _all_messages().values():
        for e in d.enum_types:
            out[e.full_name] = e
    return out


def _field_facts(f: FieldDescriptor) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "number": f.number,
        "type": _TYPE_NAMES[f.type],
        "label": "repeated" if f.is_repeated else "optional",
    }
    if f.message_type is not None:
        facts["type_name"] = f.message_type.full_name
    elif f.enum_type is not None:
        facts["type_name"] = f.enum_type.full_name
    if f.containing_oneof is not None:
        facts["oneof"] = f.containing_oneof.name
    return facts


# ---------------------------------------------------------------- the whole contract


def test_proto_packages() -> None:
    assert {name: f.package for name, f in FILES.items()} == {n: n for n in FILES}


def test_every_message_and_field_matches_etcd() -> None:
    ours = {
        name: {f.name: _field_facts(f) for f in d.fields} for name, d in _all_messages().items()
    }
    assert ours == FACTS["messages"]


def test_every_enum_matches_etcd() -> None:
    ours = {name: {v.name: v.number for v in e.values} for name, e in _all_enums().items()}
    assert ours == FACTS["enums"]


def test_every_service_and_method_matches_etcd() -> None:
    ours = {}
    for f in FILES.values():
        for s in f.services_by_name.values():
            ours[s.full_name] = {
                m.name: {
                    "input": m.input_type.full_name,
                    "output": m.output_type.full_name,
                    "client_streaming": m.client_streaming,
                    "server_streaming": m.server_streaming,
                }
                for m in s.methods
            }
    assert ours == FACTS["services"]


# ---------------------------------------------------------------- readable samples


def _numbers(msg: Any) -> dict[str, int]:
    return {f.name: f.number for f in msg.DESCRIPTOR.fields}


def test_sample_field_numbers() -> None:
    assert _numbers(rpc_pb2.RangeRequest) == {
        "key": 1, "range_end": 2, "limit": 3, "revision": 4, "sort_order": 5,
        "sort_target": 6, "serializable": 7, "keys_only": 8, "count_only": 9,
        "min_mod_revision": 10, "max_mod_revision": 11, "min_create_revision": 12,
        "max_create_revision": 13,
    }  # fmt: skip
    assert _numbers(rpc_pb2.ResponseHeader) == {
        "cluster_id": 1, "member_id": 2, "revision": 3, "raft_term": 4,
    }  # fmt: skip
    assert _numbers(kv_pb2.KeyValue) == {
        "key": 1, "create_revision": 2, "mod_revision": 3, "version": 4, "value": 5, "lease": 6,
    }  # fmt: skip
    assert _numbers(kv_pb2.Event) == {"type": 1, "kv": 2, "prev_kv": 3}
    assert _numbers(rpc_pb2.WatchRequest) == {
        "create_request": 1, "cancel_request": 2, "progress_request": 3,
    }  # fmt: skip
    union = rpc_pb2.WatchRequest.DESCRIPTOR.oneofs_by_name["request_union"]
    assert [f.name for f in union.fields] == [
        "create_request",
        "cancel_request",
        "progress_request",
    ]
    assert _numbers(rpc_pb2.WatchResponse) == {
        "header": 1, "watch_id": 2, "created": 3, "canceled": 4, "compact_revision": 5,
        "cancel_reason": 6, "fragment": 7, "events": 11,
    }  # fmt: skip
    assert _numbers(rpc_pb2.Compare)["range_end"] == 64
    assert _numbers(rpc_pb2.LeaseGrantRequest) == {"TTL": 1, "ID": 2}
    assert _numbers(rpc_pb2.LeaseGrantResponse) == {"header": 1, "ID": 2, "TTL": 3, "error": 4}
    assert _numbers(rpc_pb2.Member) == {
        "ID": 1, "name": 2, "peerURLs": 3, "clientURLs": 4, "isLearner": 5,
    }  # fmt: skip
    assert _numbers(v3lock_pb2.LockRequest) == {"name": 1, "lease": 2}
    assert _numbers(v3election_pb2.LeaderKey) == {"name": 1, "key": 2, "rev": 3, "lease": 4}


def test_sample_enums() -> None:
    assert rpc_pb2.Compare.CompareTarget.Value("CREATE") == 1
    assert rpc_pb2.Compare.CompareResult.Value("NOT_EQUAL") == 3
    assert rpc_pb2.RangeRequest.SortTarget.Value("MOD") == 3
    assert rpc_pb2.WatchCreateRequest.FilterType.Value("NODELETE") == 1
    assert kv_pb2.Event.EventType.Value("DELETE") == 1
    assert rpc_pb2.AlarmType.Value("NOSPACE") == 1


# ---------------------------------------------------------------- method paths on the wire


class _RecordingChannel:
    """Stands in for a grpc.Channel: records the method paths a client stub binds."""

    def __init__(self) -> None:
        self.paths: dict[str, str] = {}

    def _record(self, kind: str, method: str) -> object:
        self.paths[method] = kind
        return object()

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> object:
        return self._record("unary_unary", method)

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> object:
        return self._record("unary_stream", method)

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> object:
        return self._record("stream_unary", method)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> object:
        return self._record("stream_stream", method)


def test_client_stubs_use_etcd_method_paths() -> None:
    ch = _RecordingChannel()
    for mod, names in (
        (rpc_pb2_grpc, ("KV", "Watch", "Lease", "Cluster", "Maintenance", "Auth")),
        (v3lock_pb2_grpc, ("Lock",)),
        (v3election_pb2_grpc, ("Election",)),
    ):
        for name in names:
            getattr(mod, name + "Stub")(ch)
    expected = {}
    for service, methods in FACTS["services"].items():
        for method, m in methods.items():
            kind = {
                (False, False): "unary_unary",
                (False, True): "unary_stream",
                (True, False): "stream_unary",
                (True, True): "stream_stream",
            }[(m["client_streaming"], m["server_streaming"])]
            expected[f"/{service}/{method}"] = kind
    assert ch.paths == expected
    assert ch.paths["/etcdserverpb.KV/Range"] == "unary_unary"
    assert ch.paths["/etcdserverpb.Watch/Watch"] == "stream_stream"
    assert ch.paths["/etcdserverpb.Lease/LeaseKeepAlive"] == "stream_stream"
    assert ch.paths["/etcdserverpb.Maintenance/Snapshot"] == "unary_stream"
    assert ch.paths["/v3lockpb.Lock/Lock"] == "unary_unary"
    assert ch.paths["/v3electionpb.Election/Observe"] == "unary_stream"


def test_async_stub_names_are_the_same_classes() -> None:
    # The .pyi types <Service>AsyncStub for grpc.aio channels; at runtime it is the stub.
    for mod, service in (
        (rpc_pb2_grpc, "KV"),
        (rpc_pb2_grpc, "Watch"),
        (rpc_pb2_grpc, "Lease"),
        (rpc_pb2_grpc, "Cluster"),
        (rpc_pb2_grpc, "Maintenance"),
        (rpc_pb2_grpc, "Auth"),
        (v3lock_pb2_grpc, "Lock"),
        (v3election_pb2_grpc, "Election"),
    ):
        assert getattr(mod, service + "AsyncStub") is getattr(mod, service + "Stub")


# ---------------------------------------------------------------- bytes on the wire


# (message, hand-encoded protobuf bytes per etcd's field numbers)
WIRE_CASES = [
    (
        rpc_pb2.PutRequest(key=b"foo", value=b"bar", lease=0x1234, prev_kv=True),
        b"\x0a\x03foo" b"\x12\x03bar" b"\x18\xb4\x24" b"\x20\x01",
    ),
    (
        rpc_pb2.RangeRequest(key=b"a", range_end=b"\x00", limit=10, serializable=True,
                             sort_order=rpc_pb2.RangeRequest.DESCEND,
                             sort_target=rpc_pb2.RangeRequest.MOD, max_create_revision=7),
        b"\x0a\x01a" b"\x12\x01\x00" b"\x18\x0a" b"\x28\x02" b"\x30\x03" b"\x38\x01" b"\x68\x07",
    ),
    (
        rpc_pb2.ResponseHeader(cluster_id=2**64 - 1, member_id=1, revision=300, raft_term=2),
        b"\x08" + b"\xff" * 9 + b"\x01" b"\x10\x01" b"\x18\xac\x02" b"\x20\x02",
    ),
    (
        # A oneof member set to zero is still sent: Patroni's CREATE == 0 guard.
        rpc_pb2.TxnRequest(
            compare=[rpc_pb2.Compare(result=rpc_pb2.Compare.EQUAL,
                                     target=rpc_pb2.Compare.CREATE, key=b"k", create_revision=0)],
            success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"k", value=b"v"))],
        ),
        b"\x0a\x07" b"\x10\x01" b"\x1a\x01k" b"\x28\x00"
        b"\x12\x08" b"\x12\x06" b"\x0a\x01k" b"\x12\x01v",
    ),
    (
        rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
            key=b"/p", start_revision=5, prev_kv=True, filters=[rpc_pb2.WatchCreateRequest.NOPUT])),
        b"\x0a\x0b" b"\x0a\x02/p" b"\x18\x05" b"\x2a\x01\x00" b"\x30\x01",
    ),
    (
        rpc_pb2.WatchResponse(watch_id=1, events=[kv_pb2.Event(
            type=kv_pb2.Event.DELETE, kv=kv_pb2.KeyValue(key=b"x", mod_revision=9))]),
        b"\x10\x01" b"\x5a\x09" b"\x08\x01" b"\x12\x05" b"\x0a\x01x" b"\x18\x09",
    ),
    (
        # int64 -1 is a ten-byte varint (a dead lease's TTL in LeaseTimeToLive)
        rpc_pb2.LeaseTimeToLiveResponse(ID=0x10, TTL=-1),
        b"\x10\x10" b"\x18" + b"\xff" * 9 + b"\x01",
    ),
    (
        v3election_pb2.ProclaimRequest(
            leader=v3election_pb2.LeaderKey(name=b"e", key=b"e/1", rev=3, lease=4), value=b"v"),
        b"\x0a\x0c" b"\x0a\x01e" b"\x12\x03e/1" b"\x18\x03" b"\x20\x04" b"\x12\x01v",
    ),
    (v3lock_pb2.LockRequest(name=b"L", lease=99), b"\x0a\x01L" b"\x10\x63"),
]  # fmt: skip


@pytest.mark.parametrize(("msg", "wire"), WIRE_CASES, ids=lambda v: type(v).__name__)
def test_wire_bytes_round_trip(msg: Any, wire: bytes) -> None:
    assert msg.SerializeToString(deterministic=True) == wire
    decoded = type(msg).FromString(wire)
    assert decoded == msg
    assert decoded.SerializeToString(deterministic=True) == wire


def test_compare_zero_oneof_is_distinguishable() -> None:
    c = rpc_pb2.Compare.FromString(b"\x10\x01\x1a\x01k\x28\x00")
    assert c.WhichOneof("target_union") == "create_revision"
    assert c.create_revision == 0


# ---------------------------------------------------------------- committed stubs are fresh


def test_generated_stubs_are_up_to_date(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools (dev dependency) not installed")
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    sys.modules["gen_protos"] = gen
    try:
        spec.loader.exec_module(gen)
        written = gen.generate(tmp_path)
    finally:
        del sys.modules["gen_protos"]
    assert written
    stale = [
        str(rel) for rel in written if (ROOT / rel).read_bytes() != (tmp_path / rel).read_bytes()
    ]
    assert not stale, "run: .venv/bin/python scripts/gen_protos.py"
