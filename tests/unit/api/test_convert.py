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
