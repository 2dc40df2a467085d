"""Compaction and HashKV: history below the compact revision goes, the present stays.

Protects DESIGN.md "compaction" of the MVCC store; error rules checked on etcd 3.4.23
(compacting at or below the last compaction: compacted; above current: future; reads at the
compact revision still work).
"""

from __future__ import annotations

import pytest

from synod.kv import errors
from synod.kv.messages import CompactionRequest, RangeRequest
from tests.unit.kv.helpers import Store


def _history() -> Store:
    """k: v1@2 v2@3, gone@4, v3@5; keep: @6; gone: @7 deleted @8."""
    store = Store()
    store.put(b"k", b"v1")
    store.put(b"k", b"v2")
    store.delete(b"k")
    store.put(b"k", b"v3")
    store.put(b"keep", b"x")
    store.put(b"gone", b"y")
    store.delete(b"gone")
    return store


def test_compaction_keeps_the_latest_version_of_every_live_key() -> None:
    """Goal: compact(C) keeps the current state and every read at >= C. Method: compact at
    the current revision; current reads and reads at C answer as before."""
    store = _history()
    before = store.kv.range(RangeRequest(b"\0", b"\0"))
    store.do(CompactionRequest(8))
    after = store.kv.range(RangeRequest(b"\0", b"\0"))
    assert after.kvs == before.kvs
    assert store.keys(b"\0", b"\0", revision=8) == [b"k", b"keep"]


def test_reads_below_the_compact_revision_fail_and_at_it_succeed() -> None:
    """Goal: the compacted error exactly below C. Method: compact at 5, read 4 and 5."""
    store = _history()
    store.do(CompactionRequest(5))
    with pytest.raises(errors.Compacted):
        store.kv.range(RangeRequest(b"k", revision=4))
    kv = store.get(b"k", revision=5)
    assert kv is not None
    assert kv.value == b"v3"
    assert store.get(b"gone", revision=7) is not None
    assert store.get(b"k", revision=4 + 2) is not None


def test_compacting_at_or_below_the_last_compaction_or_in_the_future_fails() -> None:
    """Goal: etcd's two compaction errors, and that a refused compaction changes nothing."""
    store = _history()
    with pytest.raises(errors.FutureRevision):
        store.do(CompactionRequest(9))
    store.do(CompactionRequest(5))
    snapshot = store.kv.snapshot()
    for revision in (5, 4, 0):
        with pytest.raises(errors.Compacted):
            store.do(CompactionRequest(revision))
    assert store.kv.snapshot() == snapshot
    assert store.kv.compact_revision == 5


def test_compaction_does_not_change_the_revision() -> None:
    """Goal: compaction writes no key (etcd keeps the revision)."""
    store = _history()
    store.do(CompactionRequest(8))
    assert store.kv.revision == 8


def test_deleted_keys_disappear_from_history_after_compaction() -> None:
    """Goal: a key whose last record below C is a tombstone leaves no trace, while a
    tombstone at exactly C stays (a watch from C replays it). Method: compact at 8 (the
    delete of `gone`), then write once more and compact at 9."""
    store = _history()
    store.do(CompactionRequest(8))
    assert b"gone" in store.kv.snapshot()
    store.put(b"other")
    store.do(CompactionRequest(9))
    assert b"gone" not in store.kv.snapshot()


def test_hash_kv_agrees_between_equal_histories_and_sees_any_difference() -> None:
    """Goal: HashKV detects divergence: same commands, same hash; one different value,
    different hash; hashing an older revision ignores later writes."""
    first, second = _history(), _history()
    assert first.kv.hash_kv().hash == second.kv.hash_kv().hash
    at_8 = first.kv.hash_kv(8).hash
    first.put(b"k", b"v4")
    second.put(b"k", b"other")
    assert first.kv.hash_kv().hash != second.kv.hash_kv().hash
    assert first.kv.hash_kv(8).hash == at_8 == second.kv.hash_kv(8).hash


def test_hash_kv_is_stable_across_compaction_of_the_same_range() -> None:
    """Goal: members that compact identically agree. Method: compact both at 5 and hash;
    also, hashing below the compact revision or above current is refused."""
    first, second = _history(), _history()
    for store in (first, second):
        store.do(CompactionRequest(5))
    response = first.kv.hash_kv()
    assert response.hash == second.kv.hash_kv().hash
    assert response.compact_revision == 5
    with pytest.raises(errors.Compacted):
        first.kv.hash_kv(4)
    with pytest.raises(errors.FutureRevision):
        first.kv.hash_kv(9)
