"""Requests and responses of the key-value state machine, shaped like etcd v3's protobufs.

Field names are the proto field names (`range_end`, `prev_kv`, `TTL`, `ID`, ...) so the gRPC
and JSON layers map them one to one; enum values are the proto numbers. A proto `oneof` is a
Python union: a `RequestOp` *is* a RangeRequest, PutRequest, DeleteRangeRequest or
TxnRequest, and the mapper picks the oneof field from the type.

Two commands exist only in Synod, because time is decided by the leader and written into
the log: `LeaseExpireRequest` (the leader saw the lease's deadline pass) and
`LeasePromoteRequest` (a new leader restarts every lease's countdown on its own clock).
`Command` is the log payload: a request plus the proposing leader's logical time.

Values are frozen and slotted so a response handed to a waiting client cannot change under
it; collections are tuples.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NewType

Revision = NewType("Revision", int)
LeaseId = NewType("LeaseId", int)

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


class SortOrder(enum.IntEnum):
    NONE = 0
    ASCEND = 1
    DESCEND = 2


class SortTarget(enum.IntEnum):
    KEY = 0
    VERSION = 1
    CREATE = 2
    MOD = 3
    VALUE = 4


class CompareResult(enum.IntEnum):
    EQUAL = 0
    GREATER = 1
    LESS = 2
    NOT_EQUAL = 3


class CompareTarget(enum.IntEnum):
    VERSION = 0
    CREATE = 1
    MOD = 2
    VALUE = 3
    LEASE = 4


class EventType(enum.IntEnum):
    PUT = 0
    DELETE = 1


class WatchFilter(enum.IntEnum):
    NOPUT = 0
    NODELETE = 1


# --- data -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResponseHeader:
    """Only `revision` is the store's; the server fills in the other three."""

    cluster_id: int = 0
    member_id: int = 0
    revision: int = 0
    raft_term: int = 0


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: bytes
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    value: bytes = b""
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Event:
    """One change at `kv.mod_revision`. A DELETE's kv holds only key and mod_revision."""

    type: EventType
    kv: KeyValue
    prev_kv: KeyValue | None = None


# --- KV ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RangeRequest:
    key: bytes
    range_end: bytes = b""
    limit: int = 0
    revision: int = 0
    sort_order: SortOrder = SortOrder.NONE
    sort_target: SortTarget = SortTarget.KEY
    serializable: bool = False
    keys_only: bool = False
    count_only: bool = False
    min_mod_revision: int = 0
    max_mod_revision: int = 0
    min_create_revision: int = 0
    max_create_revision: int = 0


@dataclass(frozen=True, slots=True)
class RangeResponse:
    header: ResponseHeader
    kvs: tuple[KeyValue, ...] = ()
    more: bool = False
    count: int = 0


@dataclass(frozen=True, slots=True)
class PutRequest:
    key: bytes
    value: bytes = b""
    lease: int = 0
    prev_kv: bool = False
    ignore_value: bool = False
    ignore_lease: bool = False


@dataclass(frozen=True, slots=True)
class PutResponse:
    header: ResponseHeader
    prev_kv: KeyValue | None = None


@dataclass(frozen=True, slots=True)
class DeleteRangeRequest:
    key: bytes
    range_end: bytes = b""
    prev_kv: bool = False


@dataclass(frozen=True, slots=True)
class DeleteRangeResponse:
    header: ResponseHeader
    deleted: int = 0
    prev_kvs: tuple[KeyValue, ...] = ()


@dataclass(frozen=True, slots=True)
class Compare:
    """`key`'s (or every key in [key, range_end)'s) `target` compared with the matching field.

    Only the field named by `target` is read (the proto's `target_union` oneof).
    """

    result: CompareResult
    target: CompareTarget
    key: bytes
    range_end: bytes = b""
    version: int = 0
    create_revision: int = 0
    mod_revision: int = 0
    value: bytes = b""
    lease: int = 0


@dataclass(frozen=True, slots=True)
class TxnRequest:
    compare: tuple[Compare, ...] = ()
    success: tuple[RequestOp, ...] = ()
    failure: tuple[RequestOp, ...] = ()


@dataclass(frozen=True, slots=True)
class TxnResponse:
    header: ResponseHeader
    succeeded: bool = False
    responses: tuple[ResponseOp, ...] = ()


RequestOp = RangeRequest | PutRequest | DeleteRangeRequest | TxnRequest
ResponseOp = RangeResponse | PutResponse | DeleteRangeResponse | TxnResponse


@dataclass(frozen=True, slots=True)
class CompactionRequest:
    revision: int
    physical: bool = False


@dataclass(frozen=True, slots=True)
class CompactionResponse:
    header: ResponseHeader


@dataclass(frozen=True, slots=True)
class HashKVResponse:
    """crc32 of the history in [compact_revision, revision]; see `KVStore.hash_kv`."""

    header: ResponseHeader
    hash: int = 0
    compact_revision: int = 0


# --- leases -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LeaseGrantRequest:
    """`ID` 0 asks the store to choose one (deterministically, from a counter)."""

    TTL: int
    ID: int = 0


@dataclass(frozen=True, slots=True)
class LeaseGrantResponse:
    header: ResponseHeader
    ID: int = 0
    TTL: int = 0
    error: str = ""


@dataclass(frozen=True, slots=True)
class LeaseRevokeRequest:
    ID: int


@dataclass(frozen=True, slots=True)
class LeaseRevokeResponse:
    header: ResponseHeader


@dataclass(frozen=True, slots=True)
class LeaseKeepAliveRequest:
    ID: int


@dataclass(frozen=True, slots=True)
class LeaseKeepAliveResponse:
    header: ResponseHeader
    ID: int = 0
    TTL: int = 0


@dataclass(frozen=True, slots=True)
class LeaseTimeToLiveRequest:
    ID: int
    keys: bool = False


@dataclass(frozen=True, slots=True)
class LeaseTimeToLiveResponse:
    """etcd answers an unknown lease with TTL -1 (etcdctl: "already expired"), no error."""

    header: ResponseHeader
    ID: int = 0
    TTL: int = 0
    grantedTTL: int = 0
    keys: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class LeaseStatus:
    ID: int


@dataclass(frozen=True, slots=True)
class LeaseLeasesResponse:
    header: ResponseHeader
    leases: tuple[LeaseStatus, ...] = ()


@dataclass(frozen=True, slots=True)
class LeaseExpireRequest:
    """Synod only: the leader saw `ID`'s deadline pass. A no-op if it was refreshed since."""

    ID: int


@dataclass(frozen=True, slots=True)
class LeaseExpireResponse:
    header: ResponseHeader
    expired: bool = False


@dataclass(frozen=True, slots=True)
class LeasePromoteRequest:
    """Synod only: a new leader restarts every lease: deadline = now + extend + TTL."""

    extend_ms: int = 0


@dataclass(frozen=True, slots=True)
class LeasePromoteResponse:
    header: ResponseHeader


# --- watch ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WatchCreateRequest:
    key: bytes
    range_end: bytes = b""
    start_revision: int = 0
    progress_notify: bool = False
    filters: tuple[WatchFilter, ...] = ()
    prev_kv: bool = False
    watch_id: int = 0
    fragment: bool = False


@dataclass(frozen=True, slots=True)
class WatchResponse:
    header: ResponseHeader
    watch_id: int = 0
    created: bool = False
    canceled: bool = False
    compact_revision: int = 0
    cancel_reason: str = ""
    fragment: bool = False
    events: tuple[Event, ...] = ()


# --- the log payload --------------------------------------------------------------------

WriteRequest = (
    RangeRequest
    | PutRequest
    | DeleteRangeRequest
    | TxnRequest
    | CompactionRequest
    | LeaseGrantRequest
    | LeaseRevokeRequest
    | LeaseKeepAliveRequest
    | LeaseExpireRequest
    | LeasePromoteRequest
)
WriteResponse = (
    RangeResponse
    | PutResponse
    | DeleteRangeResponse
    | TxnResponse
    | CompactionResponse
    | LeaseGrantResponse
    | LeaseRevokeResponse
    | LeaseKeepAliveResponse
    | LeaseExpireResponse
    | LeasePromoteResponse
)


@dataclass(frozen=True, slots=True)
class Command:
    """One log entry payload: a request and the proposing leader's logical time.

    `now_ms` is read only by lease commands (grant, keep-alive, expire, promote): deadlines
    are kept on the clock of the leader that wrote them, and `LeasePromoteRequest` moves
    them to a new leader's clock. A range in the log is a linearizable read.
    """

    request: WriteRequest
    now_ms: int = 0
