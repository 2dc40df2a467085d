"""Builders for transaction compares and operations (the etcd v3 `Txn` vocabulary).

    client.txn(
        compare=[create_revision(key) == 0],
        success=[put(key, b"v", lease=lease.id)],
        failure=[get(key)],
    )

`Target(key)` objects compare with ==, !=, < and > and give a `Compare` message.
"""

from __future__ import annotations

from synod.api.proto.etcdserverpb import rpc_pb2

Compare = rpc_pb2.Compare
RequestOp = rpc_pb2.RequestOp


def prefix_end(prefix: bytes) -> bytes:
    """The range_end that selects every key starting with `prefix` (etcd's rule)."""
    data = bytearray(prefix)
    while data:
        if data[-1] < 0xFF:
            data[-1] += 1
            return bytes(data)
        data.pop()
    return b"\0"


def to_bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


class Target:
    """One side of a compare: a key's create/mod revision, version, value or lease."""

    def __init__(
        self, key: bytes | str, target: rpc_pb2.Compare.CompareTarget, range_end: bytes = b""
    ) -> None:
        self.key = to_bytes(key)
        self.target = target
        self.range_end = range_end

    def _compare(
        self, result: rpc_pb2.Compare.CompareResult, other: int | bytes | str
    ) -> rpc_pb2.Compare:
        compare = rpc_pb2.Compare(
            key=self.key, range_end=self.range_end, target=self.target, result=result
        )
        if self.target == rpc_pb2.Compare.VALUE:
            compare.value = to_bytes(other) if not isinstance(other, int) else str(other).encode()
        elif isinstance(other, int):
            field = {
                rpc_pb2.Compare.VERSION: "version",
                rpc_pb2.Compare.CREATE: "create_revision",
                rpc_pb2.Compare.MOD: "mod_revision",
                rpc_pb2.Compare.LEASE: "lease",
            }[self.target]
            setattr(compare, field, other)
        else:
            raise TypeError(f"compare of a revision, version or lease with {other!r}")
        return compare

    def __eq__(self, other: object) -> rpc_pb2.Compare:
        assert isinstance(other, int | bytes | str)
        return self._compare(rpc_pb2.Compare.EQUAL, other)

    def __ne__(self, other: object) -> rpc_pb2.Compare:
        assert isinstance(other, int | bytes | str)
        return self._compare(rpc_pb2.Compare.NOT_EQUAL, other)

    def __lt__(self, other: int | bytes | str) -> rpc_pb2.Compare:
        return self._compare(rpc_pb2.Compare.LESS, other)

    def __gt__(self, other: int | bytes | str) -> rpc_pb2.Compare:
        return self._compare(rpc_pb2.Compare.GREATER, other)

    __hash__ = None  # type: ignore[assignment]


def create_revision(key: bytes | str) -> Target:
    """The revision that created the key (0 if the key does not exist)."""
    return Target(key, rpc_pb2.Compare.CREATE)


def mod_revision(key: bytes | str) -> Target:
    return Target(key, rpc_pb2.Compare.MOD)


def version(key: bytes | str) -> Target:
    return Target(key, rpc_pb2.Compare.VERSION)


def value(key: bytes | str) -> Target:
    return Target(key, rpc_pb2.Compare.VALUE)


def lease(key: bytes | str) -> Target:
    return Target(key, rpc_pb2.Compare.LEASE)


def put(
    key: bytes | str, value: bytes | str, *, lease: int = 0, prev_kv: bool = False
) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(
        request_put=rpc_pb2.PutRequest(
            key=to_bytes(key), value=to_bytes(value), lease=lease, prev_kv=prev_kv
        )
    )


def get(
    key: bytes | str,
    *,
    prefix: bool = False,
    limit: int = 0,
    sort_target: rpc_pb2.RangeRequest.SortTarget = rpc_pb2.RangeRequest.KEY,
    sort_order: rpc_pb2.RangeRequest.SortOrder = rpc_pb2.RangeRequest.NONE,
    max_create_revision: int = 0,
    count_only: bool = False,
    keys_only: bool = False,
) -> rpc_pb2.RequestOp:
    raw = to_bytes(key)
    return rpc_pb2.RequestOp(
        request_range=rpc_pb2.RangeRequest(
            key=raw,
            range_end=prefix_end(raw) if prefix else b"",
            limit=limit,
            sort_target=sort_target,
            sort_order=sort_order,
            max_create_revision=max_create_revision,
            count_only=count_only,
            keys_only=keys_only,
        )
    )


def delete(key: bytes | str, *, prefix: bool = False, prev_kv: bool = False) -> rpc_pb2.RequestOp:
    raw = to_bytes(key)
    return rpc_pb2.RequestOp(
        request_delete_range=rpc_pb2.DeleteRangeRequest(
            key=raw, range_end=prefix_end(raw) if prefix else b"", prev_kv=prev_kv
        )
    )


def is_retry_safe(request: rpc_pb2.TxnRequest) -> bool:
    """True when the client may resend the txn after an unknown outcome: it only reads, or
    it has compares and its failure branch only reads. The caller's side of the contract:
    the success branch's writes must make the compare false (`create_revision == 0`,
    `mod_revision == m`), so a second run after a first success takes the failure branch."""
    if not request.compare:
        return all(_read_only(op) for op in request.success)
    return all(_read_only(op) for op in request.failure)


def _read_only(op: rpc_pb2.RequestOp) -> bool:
    kind = op.WhichOneof("request")
    if kind == "request_range":
        return True
    if kind == "request_txn":
        nested = op.request_txn
        return all(_read_only(o) for o in (*nested.success, *nested.failure))
    return False
