"""Conversion between the etcd protobuf messages (rpc_pb2, kv_pb2) and the KV store's
dataclasses (synod.kv.messages), in one place.

The dataclasses carry the proto field names, so most of the mapping is generic: a request
is built from the pb fields its dataclass declares, and a response is written into a pb
message field by field, recursing into nested messages and repeated fields. Only the proto
oneofs are special: `Compare.target_union`, `RequestOp.request` and `ResponseOp.response`.
Enum values are the proto numbers on both sides; an unknown one is refused here with
etcd's message.

Headers: a top-level response's header is the store's revision plus the member's
cluster id, member id and term (`HeaderSource`). A header the store left empty (a nested
txn, a compacted watch) keeps revision 0 as etcd sends it.
"""

from __future__ import annotations

import dataclasses
import enum
import operator
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from google.protobuf.message import Message

from synod.api.errors import EtcdError, StatusCode
from synod.api.proto.etcdserverpb import rpc_pb2
from synod.api.proto.mvccpb import kv_pb2
from synod.kv import fast
from synod.kv import messages as kv

T = TypeVar("T")
M = TypeVar("M", bound=Message)

# The header fields a member adds to the store's revision: (cluster_id, member_id, term).
HeaderSource = Callable[[], tuple[int, int, int]]

_FIELDS: dict[type, tuple[str, ...]] = {}
_ENUM_FIELDS: dict[str, type[enum.IntEnum]] = {
    "result": kv.CompareResult,
    "target": kv.CompareTarget,
}
_OP_FIELDS: tuple[tuple[str, type], ...] = (
    ("request_range", kv.RangeRequest),
    ("request_put", kv.PutRequest),
    ("request_delete_range", kv.DeleteRangeRequest),
    ("request_txn", kv.TxnRequest),
)
_RESPONSE_FIELDS: dict[type, str] = {
    kv.RangeResponse: "response_range",
    kv.PutResponse: "response_put",
    kv.DeleteRangeResponse: "response_delete_range",
    kv.TxnResponse: "response_txn",
}
_TARGET_FIELDS = {
    kv.CompareTarget.VERSION: "version",
    kv.CompareTarget.CREATE: "create_revision",
    kv.CompareTarget.MOD: "mod_revision",
    kv.CompareTarget.VALUE: "value",
    kv.CompareTarget.LEASE: "lease",
}


# Request fields converted by to_request rather than copied as they are.
_SPECIAL_FIELDS = frozenset(("compare", "success", "failure", "filters", *_ENUM_FIELDS))
_PLAIN_GETTERS: dict[type, Callable[[Message], tuple[Any, ...]] | None] = {}


def _plain_getter(cls: type) -> Callable[[Message], tuple[Any, ...]] | None:
    """For a request class whose fields all copy as they are (put, range, ...): one C call
    that reads them in declaration order; None for the others."""
    if cls not in _PLAIN_GETTERS:
        names = _field_names(cls)
        getter: Callable[[Message], tuple[Any, ...]] | None = None
        if any(name in _SPECIAL_FIELDS for name in names):
            getter = None
        elif len(names) == 1:
            single = operator.attrgetter(names[0])
            getter = lambda pb: (single(pb),)  # noqa: E731
        else:
            getter = operator.attrgetter(*names)
        _PLAIN_GETTERS[cls] = getter
    return _PLAIN_GETTERS[cls]


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELDS.get(cls)
    if names is None:
        names = tuple(f.name for f in dataclasses.fields(cls))
        _FIELDS[cls] = names
    return names


def _invalid(message: str) -> EtcdError:
    return EtcdError(StatusCode.INVALID_ARGUMENT, message)


# --- pb requests -> store requests ------------------------------------------------------


def to_request(pb: Message, cls: type[T]) -> T:
    """A store request from the pb message of the same name (nested ones included)."""
    plain = _plain_getter(cls)
    if plain is not None:
        return cls(*plain(pb))
    values: dict[str, Any] = {}
    for name in _field_names(cls):
        value = getattr(pb, name)
        if name == "compare":
            value = tuple(_compare(item) for item in value)
        elif name in ("success", "failure"):
            value = tuple(_request_op(item) for item in value)
        elif name == "filters":
            value = tuple(kv.WatchFilter(f) for f in value if f in (0, 1))
        elif name in _ENUM_FIELDS:
            value = _enum(_ENUM_FIELDS[name], value)
        values[name] = value
    return cls(**values)


def put_request(pb: rpc_pb2.PutRequest) -> kv.PutRequest:
    """`to_request(pb, kv.PutRequest)` for the most frequent request."""
    return fast.put_request(
        pb.key, pb.value, pb.lease, pb.prev_kv, pb.ignore_value, pb.ignore_lease
    )


def _enum(kind: type[enum.IntEnum], value: int) -> enum.IntEnum:
    try:
        return kind(value)
    except ValueError:
        raise _invalid(f"etcdserver: invalid {kind.__name__} {value}") from None


def _compare(pb: rpc_pb2.Compare) -> kv.Compare:
    """The oneof `target_union` holds the operand of the field `target` names."""
    result = _enum(kv.CompareResult, pb.result)
    target = _enum(kv.CompareTarget, pb.target)
    assert isinstance(target, kv.CompareTarget)
    assert isinstance(result, kv.CompareResult)
    operand: dict[str, Any] = {}
    chosen = pb.WhichOneof("target_union")
    if chosen is not None:
        operand[chosen] = getattr(pb, chosen)
    return kv.Compare(result, target, pb.key, pb.range_end, **operand)


def _request_op(pb: rpc_pb2.RequestOp) -> kv.RequestOp:
    chosen = pb.WhichOneof("request")
    for name, cls in _OP_FIELDS:
        if chosen == name:
            op: kv.RequestOp = to_request(getattr(pb, name), cls)
            return op
    # etcd 3.4 answers an operation with nothing set this way (observed).
    raise _invalid("etcdserver: key not found")


def watch_create(pb: rpc_pb2.WatchCreateRequest) -> kv.WatchCreateRequest:
    return to_request(pb, kv.WatchCreateRequest)


# --- store responses -> pb responses ----------------------------------------------------


def to_response(value: Any, pb: M, header: HeaderSource | None) -> M:
    """Write the store response `value` into the empty pb message `pb` and return it.

    `header` fills the top-level header's member fields; nested messages get none.
    """
    _fill(value, pb, header)
    return pb


def put_response(value: kv.PutResponse, header: HeaderSource) -> rpc_pb2.PutResponse:
    """`to_response(value, rpc_pb2.PutResponse(), header)` without the generic walk."""
    pb = rpc_pb2.PutResponse()
    _fill_header(value.header, pb.header, header)
    if value.prev_kv is not None:
        _fill_key_value(value.prev_kv, pb.prev_kv)
    return pb


def _fill(value: Any, pb: Message, header: HeaderSource | None) -> None:
    if type(value) is kv.KeyValue:
        _fill_key_value(value, pb)
        return
    for name in _field_names(type(value)):
        item = getattr(value, name)
        if item is None:
            continue
        if name == "header":
            _fill_header(item, pb.header, header)
        elif name == "responses":
            for response in item:
                op = pb.responses.add()
                _fill(response, getattr(op, _RESPONSE_FIELDS[type(response)]), None)
        elif dataclasses.is_dataclass(item):
            _fill(item, getattr(pb, name), None)
        elif isinstance(item, tuple):
            repeated = getattr(pb, name)
            for element in item:
                if dataclasses.is_dataclass(element):
                    _fill(element, repeated.add(), None)
                else:
                    repeated.append(element)
        else:
            setattr(pb, name, int(item) if isinstance(item, enum.IntEnum) else item)


def _fill_key_value(value: kv.KeyValue, pb: Any) -> None:
    """Most of what ranges and watches return: the six fields set directly rather than
    by the generic walk (same result: none is ever None)."""
    pb.key = value.key
    pb.create_revision = value.create_revision
    pb.mod_revision = value.mod_revision
    pb.version = value.version
    pb.value = value.value
    pb.lease = value.lease


def _fill_header(
    value: kv.ResponseHeader, pb: rpc_pb2.ResponseHeader, header: HeaderSource | None
) -> None:
    pb.revision = value.revision
    if header is not None:
        pb.cluster_id, pb.member_id, pb.raft_term = header()
    else:
        pb.cluster_id, pb.member_id, pb.raft_term = (
            value.cluster_id,
            value.member_id,
            value.raft_term,
        )


def watch_response(value: kv.WatchResponse, header: HeaderSource) -> rpc_pb2.WatchResponse:
    return to_response(value, rpc_pb2.WatchResponse(), header)


def _is_delivery(value: kv.WatchResponse) -> bool:
    return not (value.created or value.canceled or value.compact_revision or value.fragment)


class _SharedWatchParts:
    """The pb header and events of one hub call, each converted once (the watchers of one
    revision share them: synod.kv.watch)."""

    def __init__(self, header: HeaderSource) -> None:
        self.fields = header()
        self.events_pb: dict[int, kv_pb2.Event] = {}
        self.headers_pb: dict[kv.ResponseHeader, rpc_pb2.ResponseHeader] = {}

    def header(self, value: kv.WatchResponse) -> rpc_pb2.ResponseHeader:
        header_pb = self.headers_pb.get(value.header)
        if header_pb is None:
            header_pb = self.headers_pb[value.header] = rpc_pb2.ResponseHeader()
            _fill_header(value.header, header_pb, lambda: self.fields)
        return header_pb

    def events(self, value: kv.WatchResponse) -> list[kv_pb2.Event]:
        events = []
        for event in value.events:
            event_pb = self.events_pb.get(id(event))
            if event_pb is None:
                event_pb = self.events_pb[id(event)] = kv_pb2.Event()
                _fill(event, event_pb, None)
            events.append(event_pb)
        return events


def watch_responses(
    values: Sequence[kv.WatchResponse], header: HeaderSource
) -> list[rpc_pb2.WatchResponse]:
    """The pb messages of the responses of one hub call, in order. Event deliveries to many
    watchers share their header and Event objects (synod.kv.watch): each distinct one is
    converted once and copied into every message that carries it, not rebuilt per watcher."""
    parts = _SharedWatchParts(header)
    messages = []
    for value in values:
        if not _is_delivery(value):
            messages.append(watch_response(value, lambda: parts.fields))
            continue
        messages.append(
            rpc_pb2.WatchResponse(
                header=parts.header(value), watch_id=value.watch_id, events=parts.events(value)
            )
        )
    return messages


def _watch_id_field(watch_id: int) -> bytes:
    """WatchResponse field 2 (`watch_id`, int64) on the wire: a varint key and value;
    nothing for 0, as proto3 leaves a default out."""
    if watch_id == 0:
        return b""
    value = watch_id & 0xFFFF_FFFF_FFFF_FFFF  # a negative int64 is ten bytes
    out = bytearray(b"\x10")
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def watch_response_bodies(values: Sequence[kv.WatchResponse], header: HeaderSource) -> list[bytes]:
    """`watch_responses` serialized, for a door that sends bytes (the native door). An event
    delivery to many watchers is serialized once without its watch id, and each watcher's
    message is those bytes plus its own id field: protobuf fields may come in any order, so
    it parses to the message `watch_responses` gives (tested), without building and
    serializing a message per watcher."""
    parts = _SharedWatchParts(header)
    bodies: dict[tuple[int, ...], bytes] = {}
    out = []
    for value in values:
        if not _is_delivery(value):
            out.append(watch_response(value, lambda: parts.fields).SerializeToString())
            continue
        key = (id(value.header), *(id(event) for event in value.events))
        body = bodies.get(key)
        if body is None:
            message = rpc_pb2.WatchResponse(header=parts.header(value), events=parts.events(value))
            body = bodies[key] = message.SerializeToString()
        out.append(body + _watch_id_field(value.watch_id))
    return out
