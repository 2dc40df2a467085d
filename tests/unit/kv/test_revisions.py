"""Revisions and versions: etcd's MVCC bookkeeping across put, delete and re-create.

Protects DESIGN.md "MVCC key-value store with etcd semantics: global revision, per-key
create/mod revision and version" and ETCD_COMPAT.md "After a put or txn, header.revision must
equal the written key's mod_revision". Expected numbers were checked against etcd 3.4.23
(an empty store is at revision 1; the first put gets revision 2).
"""

from __future__ import annotations

import pytest

from synod.kv import errors
from synod.kv.messages import KeyValue, PutRequest, RangeRequest
from tests.unit.kv.helpers import Store


def test_empty_store_is_at_revision_one_and_first_put_gets_revision_two() -> None:
    """Goal: revision numbering matches etcd. Method: one put on a fresh store."""
    store = Store()
    assert store.kv.revision == 1
    response = store.put(b"a", b"1")
    assert response.header.revision == 2
    assert store.get(b"a") == KeyValue(b"a", 2, 2, 1, b"1", 0)


def test_put_header_revision_equals_the_written_keys_mod_revision() -> None:
    """Goal: the ETCD_COMPAT header rule. Method: several puts, compare header and kv."""
    store = Store()
    for value in (b"x", b"y", b"z"):
        response = store.put(b"k", value)
        kv = store.get(b"k")
        assert kv is not None
        assert response.header.revision == kv.mod_revision == store.kv.revision


def test_version_counts_puts_and_create_revision_stays_until_delete() -> None:
    """Goal: per-key version and create_revision. Method: put twice, check both fields."""
    store = Store()
    store.put(b"k", b"1")
    store.put(b"k", b"2")
    kv = store.get(b"k")
    assert kv == KeyValue(b"k", create_revision=2, mod_revision=3, version=2, value=b"2")


def test_recreated_key_starts_a_new_generation() -> None:
    """Goal: delete resets version and create_revision. Method: put, delete, put again."""
    store = Store()
    store.put(b"k", b"1")
    store.delete(b"k")
    assert store.get(b"k") is None
    store.put(b"k", b"2")
    assert store.get(b"k") == KeyValue(
        b"k", create_revision=4, mod_revision=4, version=1, value=b"2"
    )


def test_delete_of_a_missing_key_does_not_bump_the_revision() -> None:
    """Goal: "a delete that writes nothing does not bump the revision" (verified on etcd).
    Method: delete a missing key and a missing range; revision and header unchanged."""
    store = Store()
    store.put(b"a")
    response = store.delete(b"zzz")
    assert response.header.revision == 2
    assert response.deleted == 0
    assert store.delete(b"x", b"y").header.revision == 2
    assert store.kv.revision == 2
    assert store.events == ()


def test_delete_range_deletes_all_keys_in_one_revision_with_prev_kvs() -> None:
    """Goal: one revision for a multi-key delete, `deleted` count, prev_kvs on request.
    Method: three keys under a prefix, delete the prefix with prev_kv."""
    store = Store()
    for key in (b"p/a", b"p/b", b"q"):
        store.put(key, key)
    response = store.delete(b"p/", b"p0", prev_kv=True)
    assert response.deleted == 2
    assert response.header.revision == 5
    assert [kv.key for kv in response.prev_kvs] == [b"p/a", b"p/b"]
    assert [event.kv.mod_revision for event in store.events] == [5, 5]
    assert store.keys(b"\0", b"\0") == [b"q"]


def test_put_prev_kv_returns_the_replaced_value_only_when_asked() -> None:
    """Goal: PutRequest.prev_kv. Method: put twice with and without the flag."""
    store = Store()
    assert store.put(b"k", b"1", prev_kv=True).prev_kv is None
    assert store.put(b"k", b"2").prev_kv is None
    prev = store.put(b"k", b"3", prev_kv=True).prev_kv
    assert prev is not None
    assert prev.value == b"2"


def test_ignore_value_keeps_the_value_and_bumps_version() -> None:
    """Goal: put with ignore_value. Method: put, then put ignore_value with a new lease-free
    request; the value stays, version and mod_revision advance."""
    store = Store()
    store.put(b"k", b"keep")
    store.do(PutRequest(b"k", ignore_value=True))
    kv = store.get(b"k")
    assert kv is not None
    assert (kv.value, kv.version, kv.mod_revision) == (b"keep", 2, 3)


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        (PutRequest(b"", b"v"), errors.EmptyKey),
        (PutRequest(b"missing", ignore_value=True), errors.KeyNotFound),
        (PutRequest(b"missing", ignore_lease=True), errors.KeyNotFound),
        (PutRequest(b"k", b"v", ignore_value=True), errors.ValueProvided),
        (PutRequest(b"k", lease=5, ignore_lease=True), errors.LeaseProvided),
        (PutRequest(b"k", b"v", lease=12345), errors.LeaseNotFound),
    ],
)
def test_rejected_put_raises_etcds_error_and_changes_nothing(
    request_: PutRequest, error: type[errors.KVError]
) -> None:
    """Goal: etcd's put errors (strings verified on etcd 3.4), and validate-before-mutate.
    Method: apply a bad put to a store with one key; snapshot bytes are unchanged."""
    store = Store()
    store.put(b"k", b"1")
    before = store.kv.snapshot()
    with pytest.raises(error) as raised:
        store.do(request_)
    assert str(raised.value) == error.message
    assert store.kv.snapshot() == before


def test_error_codes_and_messages_are_etcds_wire_values() -> None:
    """Goal: the exact strings and gRPC codes clients match (observed on etcd 3.4.23's JSON
    gateway). Method: compare a few classes with the recorded wire values."""
    assert errors.LeaseNotFound.message == "etcdserver: requested lease not found"
    assert errors.LeaseNotFound.code == errors.GrpcCode.NOT_FOUND
    assert int(errors.GrpcCode.NOT_FOUND) == 5
    assert errors.Compacted.message == "etcdserver: mvcc: required revision has been compacted"
    assert errors.FutureRevision.message.endswith("mvcc: required revision is a future revision")
    assert errors.Compacted.code == errors.GrpcCode.OUT_OF_RANGE
    assert int(errors.GrpcCode.OUT_OF_RANGE) == 11
    assert errors.DuplicateKey.message == "etcdserver: duplicate key given in txn request"
    assert errors.TooManyOps.message == "etcdserver: too many operations in txn request"
    assert errors.LeaseExists.code == errors.GrpcCode.FAILED_PRECONDITION


def test_range_in_the_log_is_a_read_that_changes_nothing() -> None:
    """Goal: a RangeRequest command (linearizable read through the log) is allowed and pure.
    Method: apply one; the revision stays and no events come out."""
    store = Store()
    store.put(b"a", b"1")
    response = store.do(RangeRequest(b"a"))
    assert response.count == 1  # type: ignore[union-attr]
    assert store.kv.revision == 2
    assert store.events == ()
