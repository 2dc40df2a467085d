"""The store's KeyValue reaches the wire with every field (synod/api/convert.py).

Protects the direct KeyValue path of the response conversion, which ranges and watches
take for every key they return: a field added to `KeyValue` must not be dropped silently.
"""

from __future__ import annotations

import dataclasses

from synod.api import convert
from synod.api.proto.etcdserverpb import rpc_pb2
from synod.api.proto.mvccpb import kv_pb2
from synod.kv import messages as kv


def test_a_range_response_carries_every_field_of_every_key_value() -> None:
    """Goal: same message as etcd's KeyValue built from all the dataclass's fields.
    Method: a key with every dataclass field set (whatever fields it has) and one with
    defaults, through to_response."""
    every_field_set = {
        field.name: (f"{field.name}".encode() if field.type in ("bytes", bytes) else number)
        for number, field in enumerate(dataclasses.fields(kv.KeyValue), start=2)
    }
    values = (kv.KeyValue(**every_field_set), kv.KeyValue(b"empty"))
    response = kv.RangeResponse(kv.ResponseHeader(revision=5), kvs=values, count=2)
    pb = convert.to_response(response, rpc_pb2.RangeResponse(), lambda: (1, 2, 3))
    assert list(pb.kvs) == [kv_pb2.KeyValue(**dataclasses.asdict(v)) for v in values]
    assert pb.count == 2
    assert (pb.header.revision, pb.header.cluster_id, pb.header.raft_term) == (5, 1, 3)


def test_the_put_conversions_match_the_generic_ones() -> None:
    """Goal: the direct put paths (`put_request`, `put_response`) give what `to_request` and
    `to_response` give, for every field. Method: a request with every field set and one with
    none; a response with and without a previous key-value."""
    requests = (
        rpc_pb2.PutRequest(
            key=b"k", value=b"v", lease=7, prev_kv=True, ignore_value=True, ignore_lease=True
        ),
        rpc_pb2.PutRequest(key=b"k"),
    )
    for request in requests:
        assert convert.put_request(request) == convert.to_request(request, kv.PutRequest)
    previous = kv.KeyValue(b"k", 2, 4, 3, b"old", 9)
    for response in (
        kv.PutResponse(kv.ResponseHeader(revision=5), prev_kv=previous),
        kv.PutResponse(kv.ResponseHeader(revision=5)),
    ):
        direct = convert.put_response(response, lambda: (1, 2, 3))
        generic = convert.to_response(response, rpc_pb2.PutResponse(), lambda: (1, 2, 3))
        assert direct == generic
        assert direct.HasField("prev_kv") == (response.prev_kv is not None)
    assert direct.header == rpc_pb2.ResponseHeader(
        cluster_id=1, member_id=2, revision=5, raft_term=3
    )
