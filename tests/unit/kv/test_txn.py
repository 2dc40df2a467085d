"""Transactions: compares, branches, nesting, one revision per txn, and etcd's txn errors.

Protects DESIGN.md "transactions (compare-and-swap)" and ETCD_COMPAT.md's Patroni txns
(`CREATE create_revision 0`, `VALUE` = own name, `MOD mod_revision`, a nested txn in the
failure branch). Behaviours marked "etcd" were checked on etcd 3.4.23's JSON gateway.
"""

from __future__ import annotations

import pytest

from synod.kv import errors
from synod.kv.messages import (
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    DeleteRangeResponse,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    RequestOp,
    ResponseHeader,
    TxnRequest,
    TxnResponse,
)
from tests.unit.kv.helpers import Store

EQ, NE, GT, LT = (
    CompareResult.EQUAL,
    CompareResult.NOT_EQUAL,
    CompareResult.GREATER,
    CompareResult.LESS,
)


def _created(key: bytes, revision: int = 0, result: CompareResult = EQ) -> Compare:
    return Compare(result, CompareTarget.CREATE, key, create_revision=revision)


def test_create_revision_zero_compare_is_a_create_if_absent() -> None:
    """Goal: Patroni's bootstrap/leader race: `CREATE == 0` then put, else get. Method: run
    the same txn twice; the first wins, the second takes the failure branch."""
    store = Store()
    race = TxnRequest(
        compare=(_created(b"leader"),),
        success=(PutRequest(b"leader", b"node1"),),
        failure=(RangeRequest(b"leader"),),
    )
    first = store.txn(race)
    assert first.succeeded
    assert first.header.revision == 2
    second = store.txn(race)
    assert not second.succeeded
    assert second.header.revision == 2
    range_response = second.responses[0]
    assert isinstance(range_response, RangeResponse)
    assert range_response.kvs[0].value == b"node1"


@pytest.mark.parametrize(
    ("compare", "holds"),
    [
        (Compare(EQ, CompareTarget.VALUE, b"k", value=b"v2"), True),
        (Compare(LT, CompareTarget.VALUE, b"k", value=b"v3"), True),
        (Compare(GT, CompareTarget.VALUE, b"k", value=b"v2"), False),
        (Compare(EQ, CompareTarget.VERSION, b"k", version=2), True),
        (Compare(GT, CompareTarget.VERSION, b"k", version=2), False),
        (Compare(EQ, CompareTarget.CREATE, b"k", create_revision=2), True),
        (Compare(EQ, CompareTarget.MOD, b"k", mod_revision=3), True),
        (Compare(LT, CompareTarget.MOD, b"k", mod_revision=3), False),
        (Compare(NE, CompareTarget.MOD, b"k", mod_revision=2), True),
        (Compare(EQ, CompareTarget.LEASE, b"k", lease=0), True),
        (Compare(GT, CompareTarget.LEASE, b"k", lease=0), False),
        # A missing key: VALUE compares are always false (etcd), others compare with zero.
        (Compare(NE, CompareTarget.VALUE, b"zz", value=b"a"), False),
        (Compare(EQ, CompareTarget.VERSION, b"zz", version=0), True),
        (Compare(EQ, CompareTarget.MOD, b"zz", mod_revision=0), True),
    ],
)
def test_compare_targets_and_results_follow_etcd(compare: Compare, holds: bool) -> None:
    """Goal: every target and result of Compare. Method: k written twice (create 2, mod 3,
    version 2, value v2); the txn's `succeeded` is the compare's truth."""
    store = Store()
    store.put(b"k", b"v1")
    store.put(b"k", b"v2")
    assert store.txn(TxnRequest(compare=(compare,))).succeeded is holds


def test_compare_with_range_end_must_hold_for_every_key_in_range() -> None:
    """Goal: a ranged compare holds only if all keys satisfy it (etcd). Method: versions
    1 and 2 under a prefix; `VERSION > 0` holds, `VERSION == 1` does not."""
    store = Store()
    store.put(b"p/a")
    store.put(b"p/b")
    store.put(b"p/b")
    above = Compare(GT, CompareTarget.VERSION, b"p/", b"p0", version=0)
    one = Compare(EQ, CompareTarget.VERSION, b"p/", b"p0", version=1)
    assert store.txn(TxnRequest(compare=(above,))).succeeded
    assert not store.txn(TxnRequest(compare=(one,))).succeeded


def test_all_writes_of_a_txn_share_one_revision_and_reads_see_earlier_writes() -> None:
    """Goal: one revision per txn; a range after a put in the same txn sees it, with the
    pending revision in its header; a delete of nothing reports it too (all as etcd)."""
    store = Store()
    response = store.txn(
        TxnRequest(
            success=(
                PutRequest(b"t1", b"x"),
                PutRequest(b"t2", b"y"),
                RangeRequest(b"t", b"u"),
                DeleteRangeRequest(b"nothing"),
            )
        )
    )
    assert response.header.revision == 2
    put, _, seen, deleted = response.responses
    assert isinstance(put, PutResponse)
    assert isinstance(seen, RangeResponse)
    assert isinstance(deleted, DeleteRangeResponse)
    assert put.header.revision == 2
    assert [kv.key for kv in seen.kvs] == [b"t1", b"t2"]
    assert seen.header.revision == 2
    assert deleted.header.revision == 2
    assert [event.kv.mod_revision for event in store.events] == [2, 2]
    assert store.kv.revision == 2


def test_read_only_or_empty_txn_does_not_bump_the_revision() -> None:
    """Goal: "a txn that writes nothing does not bump the revision". Method: a txn with a
    range and a delete of a missing key, and an empty txn."""
    store = Store()
    store.put(b"a")
    response = store.txn(TxnRequest(success=(RangeRequest(b"a"), DeleteRangeRequest(b"zz"))))
    assert response.header.revision == 2
    assert store.txn(TxnRequest()).header.revision == 2
    assert store.kv.revision == 2


def test_nested_txn_in_failure_branch_moves_leader_as_patroni_does() -> None:
    """Goal: Patroni's "move leader to a new lease": VALUE == own name else nested CREATE
    == 0 -> put. Method: run with the key absent; the outer compare fails (missing value),
    the nested one succeeds and puts. Nested txn headers are empty, as on etcd."""
    store = Store()
    lease = store.grant(30)
    nested = TxnRequest(
        compare=(_created(b"leader"),),
        success=(PutRequest(b"leader", b"me", lease=lease),),
    )
    response = store.txn(
        TxnRequest(
            compare=(Compare(EQ, CompareTarget.VALUE, b"leader", value=b"me"),),
            success=(PutRequest(b"leader", b"me", lease=lease),),
            failure=(nested,),
        )
    )
    assert not response.succeeded
    inner = response.responses[0]
    assert isinstance(inner, TxnResponse)
    assert inner.succeeded
    assert inner.header == ResponseHeader()
    kv = store.get(b"leader")
    assert kv is not None
    assert (kv.value, kv.lease, kv.mod_revision) == (b"me", lease, response.header.revision)


def test_nested_compares_are_decided_on_the_state_before_the_txn() -> None:
    """Goal: etcd evaluates every compare of the chosen path before writing. Method: put
    k then a nested txn comparing `CREATE k == 0`: still true, since k was absent before."""
    store = Store()
    response = store.txn(
        TxnRequest(
            success=(
                PutRequest(b"k"),
                TxnRequest(compare=(_created(b"k"),), success=(PutRequest(b"other"),)),
            )
        )
    )
    inner = response.responses[1]
    assert isinstance(inner, TxnResponse)
    assert inner.succeeded
    assert store.get(b"other") is not None


def _puts(*keys: bytes) -> tuple[RequestOp, ...]:
    return tuple(PutRequest(key) for key in keys)


@pytest.mark.parametrize(
    "request_",
    [
        TxnRequest(success=_puts(b"a", b"a")),
        TxnRequest(failure=_puts(b"a", b"a")),
        TxnRequest(success=(DeleteRangeRequest(b"t", b"u"), PutRequest(b"t1"))),
        TxnRequest(success=(PutRequest(b"t1"), DeleteRangeRequest(b"t1"))),
        TxnRequest(success=(PutRequest(b"x"), DeleteRangeRequest(b"a", b"\0"))),
        TxnRequest(success=(PutRequest(b"k"), TxnRequest(success=_puts(b"k")))),
        TxnRequest(success=(DeleteRangeRequest(b"k"), TxnRequest(failure=_puts(b"k")))),
        TxnRequest(
            success=(
                TxnRequest(success=(DeleteRangeRequest(b"n"),)),
                TxnRequest(success=_puts(b"n")),
            )
        ),
        # etcd 3.4 lets this one through (and writes k twice in one revision); Synod
        # refuses it so that a key changes at most once per revision.
        TxnRequest(
            success=(
                TxnRequest(success=_puts(b"n")),
                TxnRequest(success=(DeleteRangeRequest(b"n"),)),
            )
        ),
    ],
)
def test_overlapping_writes_in_one_txn_are_duplicate_keys(request_: TxnRequest) -> None:
    """Goal: "etcdserver: duplicate key given in txn request" (cases checked on etcd), and
    nothing changes. Method: apply each; the store's snapshot bytes are unchanged."""
    store = Store()
    store.put(b"k")
    before = store.kv.snapshot()
    with pytest.raises(errors.DuplicateKey):
        store.txn(request_)
    assert store.kv.snapshot() == before


@pytest.mark.parametrize(
    "request_",
    [
        TxnRequest(success=(DeleteRangeRequest(b"t", b"u"), DeleteRangeRequest(b"t1"))),
        TxnRequest(success=(TxnRequest(success=_puts(b"n"), failure=_puts(b"n")),)),
        TxnRequest(success=_puts(b"n"), failure=_puts(b"n")),
    ],
)
def test_overlapping_deletes_and_exclusive_branches_are_allowed(request_: TxnRequest) -> None:
    """Goal: what etcd accepts: overlapping deletes; the same put in both branches of one
    txn (only one runs). Method: each applies without error."""
    store = Store()
    store.put(b"t1")
    assert store.txn(request_).header.revision >= 2


def test_more_than_128_operations_in_a_list_is_refused() -> None:
    """Goal: "etcdserver: too many operations in txn request" for any list above 128 (ops
    or compares, as on etcd); exactly 128 is fine."""
    store = Store()
    keys = [b"m%03d" % index for index in range(129)]
    with pytest.raises(errors.TooManyOps):
        store.txn(TxnRequest(success=_puts(*keys)))
    with pytest.raises(errors.TooManyOps):
        store.txn(TxnRequest(compare=(_created(b"z"),) * 129))
    with pytest.raises(errors.TooManyOps):
        store.txn(TxnRequest(failure=(TxnRequest(success=_puts(*keys)),)))
    assert store.kv.revision == 1
    assert store.txn(TxnRequest(success=_puts(*keys[:128]))).header.revision == 2


def test_error_in_the_chosen_branch_rejects_the_whole_txn() -> None:
    """Goal: validate before mutate: a future-revision range after a put (etcd refuses the
    txn and the put does not happen), and a put with an unknown lease in a nested txn."""
    store = Store()
    with pytest.raises(errors.FutureRevision):
        store.txn(TxnRequest(success=(PutRequest(b"q"), RangeRequest(b"a", revision=100))))
    with pytest.raises(errors.LeaseNotFound):
        store.txn(
            TxnRequest(
                success=(
                    PutRequest(b"q"),
                    TxnRequest(success=(*_puts(b"r"), PutRequest(b"s", lease=77))),
                )
            )
        )
    assert store.get(b"q") is None
    assert store.kv.revision == 1


def test_error_in_the_branch_not_taken_is_ignored() -> None:
    """Goal: state checks (lease exists, revision) apply only to the path that runs, like
    etcd's checkRequests. Method: an unknown lease in the failure branch of a true txn."""
    store = Store()
    response = store.txn(TxnRequest(success=_puts(b"a"), failure=(PutRequest(b"b", lease=77),)))
    assert response.succeeded


def test_empty_key_inside_a_txn_is_refused_in_either_branch() -> None:
    """Goal: static checks cover both branches (etcd's checkTxnRequest)."""
    with pytest.raises(errors.EmptyKey):
        Store().txn(TxnRequest(failure=(PutRequest(b""),)))


def test_a_nested_txn_gets_only_the_operations_its_parent_left() -> None:
    """Goal: etcd's budget: a nested txn may use 128 minus the longest list of its parent
    (on etcd 3.4.23: 99 puts + a nested txn of 29 puts is refused, of 27 accepted; 100
    puts in success and a nested txn of 29 in failure is refused)."""
    store = Store()
    outer = _puts(*(b"o%02d" % index for index in range(99)))
    too_many = TxnRequest(success=_puts(*(b"n%02d" % index for index in range(29))))
    fits = TxnRequest(success=_puts(*(b"n%02d" % index for index in range(27))))
    with pytest.raises(errors.TooManyOps):
        store.txn(TxnRequest(success=(*outer, too_many)))
    hundred = (*outer, PutRequest(b"o99"))
    with pytest.raises(errors.TooManyOps):
        store.txn(TxnRequest(success=hundred, failure=(too_many,)))
    assert store.txn(TxnRequest(success=(*outer, fits))).succeeded


def test_a_compare_without_a_key_is_refused() -> None:
    """Goal: etcd answers "key is not provided" for a compare with an empty key."""
    with pytest.raises(errors.EmptyKey):
        Store().txn(TxnRequest(compare=(Compare(EQ, CompareTarget.VERSION, b""),)))
