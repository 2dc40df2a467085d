"""The log payload codec: every command round-trips, and bad payloads are refused.

Protects DESIGN.md "Nothing that was rejected is ever applied": a payload that does not
decode to a well-formed command raises `MalformedCommand` instead of reaching the store.
"""

from __future__ import annotations

import itertools

import msgpack
import pytest

from synod.kv import codec
from synod.kv.codec import decode_command, encode_command
from synod.kv.errors import MalformedCommand
from synod.kv.messages import (
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
from synod.kv.store import KVStore

EVERY_COMMAND: list[WriteRequest] = [
    PutRequest(b"k", b"v", lease=-3, prev_kv=True, ignore_value=False, ignore_lease=False),
    PutRequest(b"\x00\xff", b""),
    DeleteRangeRequest(b"a", b"\0", prev_kv=True),
    RangeRequest(
        b"a",
        b"b",
        limit=3,
        revision=7,
        sort_order=SortOrder.DESCEND,
        sort_target=SortTarget.VALUE,
        keys_only=True,
        max_create_revision=2**63 - 1,
    ),
    TxnRequest(
        compare=(
            Compare(CompareResult.NOT_EQUAL, CompareTarget.VALUE, b"k", value=b"me"),
            Compare(CompareResult.LESS, CompareTarget.MOD, b"k", b"l", mod_revision=-(2**63)),
        ),
        success=(PutRequest(b"k"), RangeRequest(b"k")),
        failure=(TxnRequest(success=(DeleteRangeRequest(b"x"),)),),
    ),
    CompactionRequest(5, physical=True),
    LeaseGrantRequest(10),
    LeaseGrantRequest(10, ID=77),
    LeaseRevokeRequest(77),
    LeaseKeepAliveRequest(77),
    LeaseExpireRequest(77),
    LeasePromoteRequest(1_500),
]


@pytest.mark.parametrize("request_", EVERY_COMMAND)
def test_every_command_round_trips_through_the_payload(request_: WriteRequest) -> None:
    """Goal: encode/decode is the identity on commands. Method: each request kind."""
    command = Command(request_, now_ms=123_456)
    assert decode_command(encode_command(command)) == command


def test_default_fields_are_left_out_of_the_payload() -> None:
    """Goal: a compact log: a plain put is [format, now, tag, key, value]."""
    payload = encode_command(Command(PutRequest(b"key", b"value")))
    assert msgpack.unpackb(payload) == [1, 0, 1, b"key", b"value"]
    assert len(payload) == 16


PUT_FIELD_CHOICES = (
    (b"k", b"\x00"),
    (b"", b"v" * 300),
    (0, 7, -(2**63), 2**63 - 1),
    (False, True),
    (False, True),
    (False, True),
)


@pytest.mark.parametrize("fields", list(itertools.product(*PUT_FIELD_CHOICES)))
def test_puts_take_a_fast_path_that_matches_the_generic_codec(fields: tuple[object, ...]) -> None:
    """Goal: the put fast paths (most of the log) change no byte of the log and no decoded
    command. Method: every combination of put fields: the payload equals the generic schema
    walk's, and decodes through the fast path to the same command as the generic decoder."""
    request = PutRequest(*fields)  # type: ignore[arg-type]
    generic = msgpack.packb([1, 9, *codec._encode_message(request)], use_bin_type=True)
    payload = encode_command(Command(request, now_ms=9))
    assert payload == generic
    raw = msgpack.unpackb(payload)
    assert codec._decode_put(raw) == request
    assert codec._decode_request(raw[2:], 0, (PutRequest,)) == request
    assert decode_command(payload) == Command(request, now_ms=9)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xc1",
        msgpack.packb({"a": 1}),
        msgpack.packb([2, 0, 1, b"k"]),  # unknown format
        msgpack.packb([1, 0, 99, b"k"]),  # unknown tag
        msgpack.packb([1, 0, 1]),  # put without its key
        msgpack.packb([1, 0, 1, "k"]),  # key as str, not bytes
        msgpack.packb([1, 0, 1, b"k", b"v", 2**63]),  # lease beyond int64
        msgpack.packb([1, 0, 1, b"k", b"v", 0, 1]),  # bool field as int
        msgpack.packb([1, 0, 1, b"k", b"v", 0, False, False, False, True]),  # too many fields
        msgpack.packb([1, 0, 1, b"k", "v"]),  # value as str
        msgpack.packb([1, 0, 1, b"k", b"v", 1.5]),  # lease as a float
        msgpack.packb([1, 0, 1, b"k", b"v", 0, False, False, 1]),  # last bool as int
        msgpack.packb([1, 0, True, b"k"]),  # the put tag as a bool
        msgpack.packb([1, 0, 4, b"k", b"", 0, 0, 7]),  # sort order 7
        msgpack.packb([1, 0, 3, [[0, 9, b"k"]]]),  # compare target 9
        msgpack.packb([1, 0, 3, [], [[5, 3]]]),  # a compaction inside a txn
        msgpack.packb([1, True, 1, b"k"]),  # now_ms as a bool
        msgpack.packb([1, 0, 1, b"k"]) + b"\x00",  # trailing bytes
        msgpack.packb([1, 0, 10, -1]),  # a negative lease extension
    ],
)
def test_malformed_payloads_are_refused(raw: bytes) -> None:
    """Goal: the decoder validates shape, types, int64 range, enums and op placement."""
    with pytest.raises(MalformedCommand):
        decode_command(raw)


def test_deeply_nested_transactions_are_refused() -> None:
    """Goal: nesting is bounded, so a payload cannot exhaust the stack."""
    request = TxnRequest()
    for _ in range(40):
        request = TxnRequest(success=(request,))
    with pytest.raises(MalformedCommand):
        decode_command(encode_command(Command(request)))


def test_store_applies_a_payload_straight_from_the_log() -> None:
    """Goal: `apply_payload` = decode + apply, refusing a malformed payload untouched."""
    store = KVStore()
    applied = store.apply_payload(encode_command(Command(PutRequest(b"k", b"v"))))
    assert applied.response.header.revision == 2
    with pytest.raises(MalformedCommand):
        store.apply_payload(b"\x93\x01\x00\x63")
    assert store.revision == 2
