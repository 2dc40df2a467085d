"""The log payload: a compact msgpack encoding of `Command`, and a decoder that validates.

Layout: `[FORMAT, now_ms, tag, field, field, ...]`. A request is its tag then its fields in
declaration order, with trailing fields that hold their default left out (most puts are
`[1, key, value]`). Enums travel as their proto numbers, compares and nested ops as arrays of
the same shape. Decoding checks every type, every integer against int64, every enum value,
and bounds nesting, so `decode_command` returns a well-formed `Command` or raises
`MalformedCommand`; what etcd would reject on meaning (too many ops, duplicate keys) is left
to the store, which answers with etcd's errors.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import MISSING
from typing import Any

import msgpack

from synod.kv import fast
from synod.kv.errors import MalformedCommand
from synod.kv.messages import (
    INT64_MAX,
    INT64_MIN,
    Command,
    CompactionRequest,
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    LeaseExpireRequest,
    LeaseGrantRequest,
    LeaseKeepAliveRequest,
    LeasePromoteRequest,
    LeaseRevokeRequest,
    PutRequest,
    RangeRequest,
    SortOrder,
    SortTarget,
    TxnRequest,
    WriteRequest,
)
from synod.kv.txn import TXN_DEPTH_MAX

FORMAT = 1
PAYLOAD_BYTES_MAX = 4 * 1024 * 1024
TXN_LIST_MAX = 4096  # structural bound only; the store enforces etcd's 128

BYTES = "bytes"
INT = "int"
BOOL = "bool"
COMPARES = "compares"
OPS = "ops"
Kind = str | type[enum.IntEnum]

_SCHEMAS: dict[type, tuple[int, tuple[tuple[str, Kind], ...]]] = {
    PutRequest: (
        1,
        (
            ("key", BYTES),
            ("value", BYTES),
            ("lease", INT),
            ("prev_kv", BOOL),
            ("ignore_value", BOOL),
            ("ignore_lease", BOOL),
        ),
    ),
    DeleteRangeRequest: (2, (("key", BYTES), ("range_end", BYTES), ("prev_kv", BOOL))),
    TxnRequest: (3, (("compare", COMPARES), ("success", OPS), ("failure", OPS))),
    RangeRequest: (
        4,
        (
            ("key", BYTES),
            ("range_end", BYTES),
            ("limit", INT),
            ("revision", INT),
            ("sort_order", SortOrder),
            ("sort_target", SortTarget),
            ("serializable", BOOL),
            ("keys_only", BOOL),
            ("count_only", BOOL),
            ("min_mod_revision", INT),
            ("max_mod_revision", INT),
            ("min_create_revision", INT),
            ("max_create_revision", INT),
        ),
    ),
    CompactionRequest: (5, (("revision", INT), ("physical", BOOL))),
    LeaseGrantRequest: (6, (("TTL", INT), ("ID", INT))),
    LeaseRevokeRequest: (7, (("ID", INT),)),
    LeaseKeepAliveRequest: (8, (("ID", INT),)),
    LeaseExpireRequest: (9, (("ID", INT),)),
    LeasePromoteRequest: (10, (("extend_ms", INT),)),
    Compare: (
        0,
        (
            ("result", CompareResult),
            ("target", CompareTarget),
            ("key", BYTES),
            ("range_end", BYTES),
            ("version", INT),
            ("create_revision", INT),
            ("mod_revision", INT),
            ("value", BYTES),
            ("lease", INT),
        ),
    ),
}
_BY_TAG = {tag: cls for cls, (tag, _) in _SCHEMAS.items() if cls is not Compare}
_PUT_TAG = _SCHEMAS[PutRequest][0]
# PutRequest's field defaults by position (the key is required: its slot is never used);
# the fast paths below rely on this order, checked here.
_PUT_DEFAULTS: tuple[Any, ...] = (b"", b"", 0, False, False, False)
assert tuple(name for name, _ in _SCHEMAS[PutRequest][1]) == (
    "key",
    "value",
    "lease",
    "prev_kv",
    "ignore_value",
    "ignore_lease",
)
_OP_TYPES = (RangeRequest, PutRequest, DeleteRangeRequest, TxnRequest)
_DEFAULTS: dict[type, tuple[Any, ...]] = {}


def _defaults(cls: type) -> tuple[Any, ...]:
    """The default of each schema field (a sentinel for required ones)."""
    found = _DEFAULTS.get(cls)
    if found is None:
        fields = cls.__dataclass_fields__  # type: ignore[attr-defined]
        found = tuple(fields[name].default for name, _ in _SCHEMAS[cls][1])
        _DEFAULTS[cls] = found
    return found


# --- encoding ---------------------------------------------------------------------------


def encode_command(command: Command) -> bytes:
    request = command.request
    fields = _encode_put(request) if type(request) is PutRequest else _encode_message(request)
    payload: bytes = msgpack.packb([FORMAT, command.now_ms, *fields], use_bin_type=True)
    return payload


def _encode_put(request: PutRequest) -> list[Any]:
    """The put's tag and fields, as `_encode_message` makes them, without its generic walk
    (puts are most of the log). Every optional field's default is falsy, and every falsy
    value of a field equals its default, so trailing falsy fields are the ones left out."""
    values = [
        _PUT_TAG,
        request.key,
        request.value,
        request.lease,
        request.prev_kv,
        request.ignore_value,
        request.ignore_lease,
    ]
    while len(values) > 2 and not values[-1]:
        values.pop()
    return values


def _encode_message(message: Any) -> list[Any]:
    tag, schema = _SCHEMAS[type(message)]
    values = [_encode_value(getattr(message, name), kind) for name, kind in schema]
    defaults = _defaults(type(message))
    while values and values[-1] == _encode_default(defaults[len(values) - 1]):
        values.pop()
    return values if type(message) is Compare else [tag, *values]


def _encode_default(default: Any) -> Any:
    if isinstance(default, enum.IntEnum):
        return int(default)
    if isinstance(default, tuple):
        return []
    return default


def _encode_value(value: Any, kind: Kind) -> Any:
    if kind in (COMPARES, OPS):
        return [_encode_message(item) for item in value]
    if isinstance(kind, type):
        return int(value)
    return value


# --- decoding ---------------------------------------------------------------------------


def decode_command(payload: bytes) -> Command:
    """The command in `payload`, or `MalformedCommand` naming what is wrong."""
    if len(payload) > PAYLOAD_BYTES_MAX:
        raise MalformedCommand(f"payload of {len(payload)} bytes exceeds the maximum")
    try:
        raw = msgpack.unpackb(payload, use_list=True, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as error:
        raise MalformedCommand(f"not msgpack: {error}") from error
    if not isinstance(raw, list) or len(raw) < 3:
        raise MalformedCommand("a command is [format, now_ms, tag, fields...]")
    if raw[0] != FORMAT or type(raw[0]) is not int:
        raise MalformedCommand(f"unknown command format {raw[0]!r}")
    now_ms = _int(raw[1], "now_ms")
    put = _decode_put(raw) if raw[2] == _PUT_TAG and type(raw[2]) is int else None
    request = put or _decode_request(raw[2:], depth=0, allowed=tuple(_BY_TAG.values()))
    if isinstance(request, LeasePromoteRequest) and request.extend_ms < 0:
        raise MalformedCommand("LeasePromoteRequest.extend_ms must not be negative")
    return fast.command(request, now_ms)


def _decode_put(raw: list[Any]) -> PutRequest | None:
    """A well-formed put from `[FORMAT, now_ms, tag, fields...]` in one pass, or None to
    let the generic decoder judge it (and name what is wrong)."""
    count = len(raw) - 3
    if not 1 <= count <= 6:
        return None
    key, value, lease, prev_kv, ignore_value, ignore_lease = (*raw[3:], *_PUT_DEFAULTS[count:])
    if type(key) is not bytes or type(value) is not bytes or type(lease) is not int:
        return None
    if type(prev_kv) is not bool or type(ignore_value) is not bool:
        return None
    if type(ignore_lease) is not bool or not INT64_MIN <= lease <= INT64_MAX:
        return None
    return fast.put_request(key, value, lease, prev_kv, ignore_value, ignore_lease)


def _decode_request(raw: Any, depth: int, allowed: tuple[type, ...]) -> WriteRequest:
    if depth > TXN_DEPTH_MAX:
        raise MalformedCommand("transactions nested too deeply")
    if not isinstance(raw, list) or not raw:
        raise MalformedCommand("a request is [tag, fields...]")
    cls = _BY_TAG.get(raw[0]) if type(raw[0]) is int else None
    if cls is None or cls not in allowed:
        raise MalformedCommand(f"unknown or misplaced request tag {raw[0]!r}")
    request: WriteRequest = _decode_fields(cls, raw[1:], depth)
    return request


def _decode_fields(cls: type, values: list[Any], depth: int) -> Any:
    _, schema = _SCHEMAS[cls]
    if len(values) > len(schema):
        raise MalformedCommand(f"{cls.__name__}: too many fields")
    defaults = _defaults(cls)
    kwargs: dict[str, Any] = {}
    for index, (name, kind) in enumerate(schema):
        if index < len(values):
            kwargs[name] = _decode_value(values[index], kind, f"{cls.__name__}.{name}", depth)
        elif defaults[index] is MISSING:
            raise MalformedCommand(f"{cls.__name__}.{name} is required")
    return cls(**kwargs)


def _decode_value(value: Any, kind: Kind, where: str, depth: int) -> Any:
    if kind == BYTES:
        if not isinstance(value, bytes):
            raise MalformedCommand(f"{where} must be bytes")
        return value
    if kind == INT:
        return _int(value, where)
    if kind == BOOL:
        if not isinstance(value, bool):
            raise MalformedCommand(f"{where} must be a bool")
        return value
    if kind == COMPARES:
        return tuple(_decode_compare(item, where) for item in _list(value, where))
    if kind == OPS:
        return tuple(_decode_request(item, depth + 1, _OP_TYPES) for item in _list(value, where))
    assert isinstance(kind, type)
    return _enum(kind, value, where)


def _decode_compare(value: Any, where: str) -> Compare:
    if not isinstance(value, list):
        raise MalformedCommand(f"{where}: a compare is an array")
    compare: Compare = _decode_fields(Compare, value, 0)
    return compare


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list) or len(value) > TXN_LIST_MAX:
        raise MalformedCommand(f"{where} must be an array of at most {TXN_LIST_MAX}")
    return value


def _int(value: Any, where: str) -> int:
    if type(value) is not int or not INT64_MIN <= value <= INT64_MAX:
        raise MalformedCommand(f"{where} must be an int64")
    return value


def _enum(kind: type[enum.IntEnum], value: Any, where: str) -> enum.IntEnum:
    make: Callable[[int], enum.IntEnum] = kind
    try:
        return make(_int(value, where))
    except ValueError as error:
        raise MalformedCommand(f"{where}: {value!r} is not a {kind.__name__}") from error
