"""Checks of requests that need no state, and the compare rule of transactions.

`check_txn` is etcd's request validation (empty key, sort options, ignore_value with a
value, too many operations, duplicate keys), run on a whole request tree before the store
looks at its state. The duplicate-key rule is etcd's `checkIntervals`: within one
transaction level (checked for `success` and `failure` separately) no key may be put twice
or put and deleted, recursively through nested transactions, except that the two branches of
one nested transaction may put the same key (only one of them runs). Unlike etcd 3.4, a put
in an earlier nested transaction is also checked against the deletes of a later one, so a
key changes at most once per revision.
"""

from __future__ import annotations

from collections.abc import Sequence

from synod.kv import errors
from synod.kv.keyspace import KeyInterval
from synod.kv.messages import (
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    KeyValue,
    PutRequest,
    RangeRequest,
    RequestOp,
    SortOrder,
    SortTarget,
    TxnRequest,
)

TXN_OPS_MAX = 128
TXN_DEPTH_MAX = 32

_SORT_ORDERS = frozenset(int(order) for order in SortOrder)
_SORT_TARGETS = frozenset(int(target) for target in SortTarget)


def check_range(request: RangeRequest) -> None:
    if not request.key:
        raise errors.EmptyKey()
    if int(request.sort_order) not in _SORT_ORDERS:
        raise errors.InvalidSortOption()
    if int(request.sort_target) not in _SORT_TARGETS:
        raise errors.InvalidSortOption()


def check_put(request: PutRequest) -> None:
    if not request.key:
        raise errors.EmptyKey()
    if request.ignore_value and request.value:
        raise errors.ValueProvided()
    if request.ignore_lease and request.lease != 0:
        raise errors.LeaseProvided()


def check_delete(request: DeleteRangeRequest) -> None:
    if not request.key:
        raise errors.EmptyKey()


def check_request(request: RequestOp, ops_max: int = TXN_OPS_MAX, depth: int = 0) -> None:
    """Raise etcd's error for a request that is invalid whatever the store holds."""
    assert depth <= TXN_DEPTH_MAX, "the decoder bounds nesting"
    if isinstance(request, RangeRequest):
        check_range(request)
    elif isinstance(request, PutRequest):
        check_put(request)
    elif isinstance(request, DeleteRangeRequest):
        check_delete(request)
    else:
        _check_txn_shape(request, ops_max, depth)


def check_txn(request: TxnRequest) -> None:
    """etcd's Txn checks: sizes and keys through every level, then duplicate keys."""
    _check_txn_shape(request, TXN_OPS_MAX, 0)
    _writes(request.success)
    _writes(request.failure)


def _check_txn_shape(request: TxnRequest, ops_max: int, depth: int) -> None:
    """etcd's checkTxnRequest: the longest of the three lists counts against `ops_max`,
    and a nested txn gets only what its parent left (verified: 99 puts and a nested txn
    of 29 is refused, of 27 accepted). Compares need a key."""
    ops = max(len(request.compare), len(request.success), len(request.failure))
    if ops > ops_max:
        raise errors.TooManyOps()
    for compare in request.compare:
        if not compare.key:
            raise errors.EmptyKey()
    for op in (*request.success, *request.failure):
        check_request(op, ops_max - ops, depth + 1)


def _hits(intervals: Sequence[KeyInterval], key: bytes) -> bool:
    return any(interval.contains(key) for interval in intervals)


def _writes(ops: Sequence[RequestOp]) -> tuple[set[bytes], list[KeyInterval]]:
    """The keys put and the intervals deleted by one level of ops; raise on a duplicate."""
    deletes = [
        KeyInterval.of(op.key, op.range_end) for op in ops if isinstance(op, DeleteRangeRequest)
    ]
    puts: set[bytes] = set()
    nested: list[tuple[set[bytes], list[KeyInterval]]] = []
    for op in ops:
        if not isinstance(op, TxnRequest):
            continue
        puts_then, deletes_then = _writes(op.success)
        puts_else, deletes_else = _writes(op.failure)
        for key in puts_then:
            if key in puts or _hits(deletes, key):
                raise errors.DuplicateKey()
        for key in puts_else:
            if (key in puts and key not in puts_then) or _hits(deletes, key):
                raise errors.DuplicateKey()
        for earlier_puts, _ in nested:
            for key in earlier_puts:
                if _hits(deletes_then, key) or _hits(deletes_else, key):
                    raise errors.DuplicateKey()
        puts |= puts_then | puts_else
        deletes += deletes_then + deletes_else
        nested.append((puts_then | puts_else, deletes_then + deletes_else))
    for op in ops:
        if not isinstance(op, PutRequest):
            continue
        if op.key in puts or _hits(deletes, op.key):
            raise errors.DuplicateKey()
        puts.add(op.key)
    return puts, deletes


_ZERO = KeyValue(key=b"")


def compare_holds(compare: Compare, kvs: Sequence[KeyValue]) -> bool:
    """etcd's rule: true when every key in the compare's range satisfies it.

    With no key present, a VALUE compare is false (a missing value is not the empty
    value) and the other targets compare against zero (create_revision 0 = "absent").
    """
    if not kvs:
        if compare.target == CompareTarget.VALUE:
            return False
        return _compare_one(compare, _ZERO)
    return all(_compare_one(compare, kv) for kv in kvs)


def _compare_one(compare: Compare, kv: KeyValue) -> bool:
    target = compare.target
    if target == CompareTarget.VALUE:
        ordering = _order(kv.value, compare.value)
    elif target == CompareTarget.VERSION:
        ordering = _order(kv.version, compare.version)
    elif target == CompareTarget.CREATE:
        ordering = _order(kv.create_revision, compare.create_revision)
    elif target == CompareTarget.MOD:
        ordering = _order(kv.mod_revision, compare.mod_revision)
    else:
        assert target == CompareTarget.LEASE
        ordering = _order(kv.lease, compare.lease)
    result = compare.result
    if result == CompareResult.EQUAL:
        return ordering == 0
    if result == CompareResult.NOT_EQUAL:
        return ordering != 0
    if result == CompareResult.GREATER:
        return ordering > 0
    assert result == CompareResult.LESS
    return ordering < 0


def _order(left: bytes | int, right: bytes | int) -> int:
    assert type(left) is type(right)
    if left == right:
        return 0
    return 1 if left > right else -1  # type: ignore[operator]
