"""A store driven the way the server will drive it: every request goes through the log codec.

`Store.do(request)` encodes a `Command`, decodes it back and applies it, so every test also
checks that the payload survives the log. Shorthands build the common requests.
"""

from __future__ import annotations

from typing import Any

from synod.kv import codec
from synod.kv.messages import (
    Command,
    DeleteRangeRequest,
    DeleteRangeResponse,
    Event,
    KeyValue,
    LeaseGrantRequest,
    LeaseGrantResponse,
    PutRequest,
    PutResponse,
    RangeRequest,
    TxnRequest,
    TxnResponse,
    WriteRequest,
    WriteResponse,
)
from synod.kv.store import KVStore


class Store:
    """A KVStore plus the events of the last command, fed through encode/decode."""

    def __init__(self, store: KVStore | None = None) -> None:
        self.kv = store if store is not None else KVStore()
        self.events: tuple[Event, ...] = ()
        self.log: list[bytes] = []

    def do(self, request: WriteRequest, now_ms: int = 0) -> WriteResponse:
        payload = codec.encode_command(Command(request, now_ms))
        command = codec.decode_command(payload)
        assert command == Command(request, now_ms)
        applied = self.kv.apply(command)
        self.log.append(payload)
        self.events = applied.events
        self.kv.check_invariants()
        return applied.response

    def put(self, key: bytes, value: bytes = b"", **options: Any) -> PutResponse:
        response = self.do(PutRequest(key, value, **options))
        assert isinstance(response, PutResponse)
        return response

    def delete(
        self, key: bytes, range_end: bytes = b"", prev_kv: bool = False
    ) -> DeleteRangeResponse:
        response = self.do(DeleteRangeRequest(key, range_end, prev_kv))
        assert isinstance(response, DeleteRangeResponse)
        return response

    def txn(self, request: TxnRequest) -> TxnResponse:
        response = self.do(request)
        assert isinstance(response, TxnResponse)
        return response

    def grant(self, ttl_s: int, lease_id: int = 0, now_ms: int = 0) -> int:
        response = self.do(LeaseGrantRequest(ttl_s, lease_id), now_ms)
        assert isinstance(response, LeaseGrantResponse)
        return response.ID

    def get(self, key: bytes, revision: int = 0) -> KeyValue | None:
        kvs = self.kv.range(RangeRequest(key, revision=revision)).kvs
        assert len(kvs) <= 1
        return kvs[0] if kvs else None

    def keys(self, key: bytes, range_end: bytes, **options: Any) -> list[bytes]:
        request = RangeRequest(key, range_end, **options)
        return [kv.key for kv in self.kv.range(request).kvs]
